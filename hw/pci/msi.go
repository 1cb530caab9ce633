package pci

import (
	"encoding/binary"
	"fmt"
)

// MSI is a function's MSI capability (ID 0x05): 64-bit message address, 1..32
// vectors, optional per-vector masking with pending bits.
//
// Layout from the capability's offset: +2 message control (bit 0 enable, bits 3:1
// vectors capable, bits 6:4 vectors enabled, bit 7 64-bit, bit 8 per-vector masking),
// +4 address low, +8 address high, +0xc data; with per-vector masking +0x10 mask bits
// and +0x14 pending bits.
type MSI struct {
	c       *ConfigSpace
	off     uint32
	vectors int
	pvm     bool

	// OnChange, if set, is called (with no pci lock held) with a vector whose message
	// or mask may have changed: after the guest writes the capability, and at reset.
	// A fast path that delivers the vector without Notify (a KVM irqfd route) re-reads
	// Vector then. Set it before the guest runs.
	OnChange func(vector int)
}

const (
	msiEnable  = 1 << 0
	msi64      = 1 << 7
	msiPVM     = 1 << 8
	msiCtlWMsk = 0x0071 // enable and multiple message enable
)

// AddMSI adds an MSI capability with the given number of vectors (a power of two,
// 1..32) and, if perVectorMask, mask and pending bits.
func (c *ConfigSpace) AddMSI(vectors int, perVectorMask bool) (*MSI, error) {
	if vectors < 1 || vectors > 32 || vectors&(vectors-1) != 0 {
		return nil, fmt.Errorf("pci: %d MSI vectors", vectors)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.setup(); err != nil {
		return nil, err
	}
	if c.msi != nil {
		return nil, fmt.Errorf("pci: second MSI capability")
	}
	m := &MSI{c: c, vectors: vectors, pvm: perVectorMask}
	log2 := 0
	for 1<<log2 < vectors {
		log2++
	}
	ctl := uint16(msi64 | log2<<1)
	if perVectorMask {
		ctl |= msiPVM
	}
	body := make([]byte, m.len()-2)
	binary.LittleEndian.PutUint16(body, ctl)
	off, err := c.addCapLocked(CapMSI, body)
	if err != nil {
		return nil, err
	}
	m.off = off
	le := binary.LittleEndian
	le.PutUint16(c.wmask[off+2:], msiCtlWMsk)
	le.PutUint32(c.wmask[off+4:], 0xfffffffc)
	le.PutUint32(c.wmask[off+8:], 0xffffffff)
	le.PutUint16(c.wmask[off+0xc:], 0xffff)
	if perVectorMask {
		le.PutUint32(c.wmask[off+0x10:], uint32(uint64(1)<<vectors-1))
	}
	c.msi = m
	return m, nil
}

func (m *MSI) len() uint32 {
	if m.pvm {
		return 0x18
	}
	return 0x0e
}

// Offset is the capability's offset in configuration space.
func (m *MSI) Offset() uint32 { return m.off }

func (m *MSI) ctlLocked() uint16 { return binary.LittleEndian.Uint16(m.c.data[m.off+2:]) }

// enabledLocked is the number of vectors the guest enabled, 0 when MSI is off.
func (m *MSI) enabledLocked() int {
	ctl := m.ctlLocked()
	if ctl&msiEnable == 0 {
		return 0
	}
	return 1 << ((ctl >> 4) & 7)
}

func (m *MSI) maskLocked() uint32 {
	if !m.pvm {
		return 0
	}
	return binary.LittleEndian.Uint32(m.c.data[m.off+0x10:])
}

func (m *MSI) pendingLocked() uint32 {
	if !m.pvm {
		return 0
	}
	return binary.LittleEndian.Uint32(m.c.data[m.off+0x14:])
}

func (m *MSI) setPendingLocked(p uint32) {
	binary.LittleEndian.PutUint32(m.c.data[m.off+0x14:], p)
}

// messageLocked is vector v's (address, data): the low bits of the data are the
// vector number within the enabled block.
func (m *MSI) messageLocked(v int) (uint64, uint32) {
	d := m.c.data[m.off:]
	le := binary.LittleEndian
	addr := uint64(le.Uint32(d[4:])) | uint64(le.Uint32(d[8:]))<<32
	n := m.enabledLocked()
	if n == 0 {
		n = 1
	}
	data := uint32(le.Uint16(d[0xc:]))&^uint32(n-1) | uint32(v)
	return addr, data
}

// Enabled reports whether the guest enabled MSI (the device then signals with Notify
// rather than INTx).
func (m *MSI) Enabled() bool {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	return m.enabledLocked() != 0
}

// Vectors returns the number of vectors the guest enabled (0 when MSI is off).
func (m *MSI) Vectors() int {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	return m.enabledLocked()
}

// Vector returns vector v's current message and whether it is masked (MSI off, v
// beyond the enabled vectors, its mask bit set, or bus mastering off).
func (m *MSI) Vector(v int) (addr uint64, data uint32, masked bool) {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	if v < 0 || v >= m.vectors {
		return 0, 0, true
	}
	addr, data = m.messageLocked(v)
	return addr, data, v >= m.enabledLocked() || m.maskLocked()&(1<<v) != 0 || m.c.cmdLocked()&CmdBusMaster == 0
}

// Pending reports vector v's pending bit.
func (m *MSI) Pending(v int) bool {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	return v >= 0 && v < 32 && m.pendingLocked()&(1<<v) != 0
}

// Notify raises vector v: the message goes to the bus's MSISink, or, if the vector
// is masked, its pending bit is set and the message goes when the guest unmasks it.
// It does nothing when MSI is off or v is not enabled, or (as the function cannot
// write memory) bus mastering is disabled.
func (m *MSI) Notify(v int) {
	c := m.c
	c.mu.Lock()
	if v < 0 || v >= m.enabledLocked() || c.cmdLocked()&CmdBusMaster == 0 {
		c.mu.Unlock()
		return
	}
	if m.maskLocked()&(1<<v) != 0 {
		m.setPendingLocked(m.pendingLocked() | 1<<v)
		c.mu.Unlock()
		return
	}
	addr, data := m.messageLocked(v)
	sink := c.sinkLocked()
	c.mu.Unlock()
	if sink != nil {
		sink.SendMSI(addr, data)
	}
}

func (c *ConfigSpace) sinkLocked() MSISink {
	if c.bus == nil {
		return nil
	}
	return c.bus.cfg.MSI
}

// configWrittenLocked runs after a guest write to the capability: the enabled count
// is clamped to what the function offers, pending vectors the write unmasked are
// sent, and OnChange hears about every vector.
func (m *MSI) configWrittenLocked() {
	c := m.c
	ctl := m.ctlLocked()
	if mme := (ctl >> 4) & 7; 1<<mme > m.vectors {
		log2 := uint16(0)
		for 1<<log2 < m.vectors {
			log2++
		}
		binary.LittleEndian.PutUint16(c.data[m.off+2:], ctl&^0x70|log2<<4)
	}
	if p := m.pendingLocked(); p != 0 && c.cmdLocked()&CmdBusMaster != 0 {
		n := m.enabledLocked()
		send := p &^ m.maskLocked()
		if n < 32 {
			send &= 1<<n - 1
		}
		if send != 0 {
			m.setPendingLocked(p &^ send)
			sink := c.sinkLocked()
			for v := 0; v < 32; v++ {
				if send&(1<<v) != 0 && sink != nil {
					addr, data := m.messageLocked(v)
					c.fx = append(c.fx, func() { sink.SendMSI(addr, data) })
				}
			}
		}
	}
	m.changedLocked()
}

func (m *MSI) changedLocked() {
	if f := m.OnChange; f != nil {
		for v := 0; v < m.vectors; v++ {
			c := v
			m.c.fx = append(m.c.fx, func() { f(c) })
		}
	}
}

func (m *MSI) resetLocked() { m.changedLocked() }

package pci

import (
	"encoding/binary"
	"fmt"
)

// MSIX is a function's MSI-X capability (ID 0x11) with its vector table and pending
// bit array (PBA), which live in memory BARs of the function.
//
// Capability layout: +2 message control (bits 10:0 table size - 1, bit 14 function
// mask, bit 15 enable), +4 table offset | BAR index, +8 PBA offset | BAR index. A
// table entry is 16 bytes: address low, address high, data, vector control (bit 0
// mask, set at power-on). A vector raised while masked (vector mask, function mask,
// or MSI-X off) sets its pending bit and is sent when it becomes unmasked.
type MSIX struct {
	c        *ConfigSpace
	off      uint32
	n        int
	tableBAR int
	tableOff uint64
	pbaBAR   int
	pbaOff   uint64
	table    []byte   // n entries of 16 bytes
	pba      []uint64 // one bit per vector

	// OnChange, if set, is called (with no pci lock held) with a vector whose message
	// or masking may have changed: a table write, a write of the capability's control
	// (enable, function mask), a change of bus mastering, reset. A fast path that
	// delivers the vector without Notify (a KVM irqfd route) re-reads Vector then; while
	// Vector reports it masked, the fast path must go through Notify so the pending bit
	// is kept. Set it before the guest runs.
	OnChange func(vector int)
}

const (
	msixEnable   = 1 << 15
	msixFuncMask = 1 << 14
	msixEntry    = 16
	msixCtlMask  = 1 // vector control: masked
)

// AddMSIX adds an MSI-X capability with n vectors (1..2048), its table at tableOff in
// memory BAR tableBAR and its PBA at pbaOff in memory BAR pbaBAR (both 8-byte aligned;
// declare the BARs first). Accesses to the table and PBA are served here; the rest of
// those BARs goes to their devices.
func (c *ConfigSpace) AddMSIX(n int, tableBAR int, tableOff uint64, pbaBAR int, pbaOff uint64) (*MSIX, error) {
	if n < 1 || n > 2048 {
		return nil, fmt.Errorf("pci: %d MSI-X vectors", n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.setup(); err != nil {
		return nil, err
	}
	if c.msix != nil {
		return nil, fmt.Errorf("pci: second MSI-X capability")
	}
	m := &MSIX{c: c, n: n, tableBAR: tableBAR, tableOff: tableOff, pbaBAR: pbaBAR, pbaOff: pbaOff,
		table: make([]byte, n*msixEntry), pba: make([]uint64, (n+63)/64)}
	for _, r := range []struct {
		bar      int
		off, len uint64
		what     string
	}{{tableBAR, tableOff, uint64(n * msixEntry), "table"}, {pbaBAR, pbaOff, uint64(len(m.pba) * 8), "PBA"}} {
		if r.bar < 0 || r.bar > 5 || !c.bars[r.bar].used || c.bars[r.bar].upper || c.bars[r.bar].kind == BARIO {
			return nil, fmt.Errorf("pci: MSI-X %s in BAR %d, not a memory BAR", r.what, r.bar)
		}
		if r.off%8 != 0 || r.off+r.len > c.bars[r.bar].size || r.off >= 1<<32 {
			return nil, fmt.Errorf("pci: MSI-X %s [%#x,+%#x) does not fit BAR %d", r.what, r.off, r.len, r.bar)
		}
	}
	if tableBAR == pbaBAR && tableOff < pbaOff+uint64(len(m.pba)*8) && pbaOff < tableOff+uint64(n*msixEntry) {
		return nil, fmt.Errorf("pci: MSI-X table and PBA overlap")
	}
	body := make([]byte, 10)
	le := binary.LittleEndian
	le.PutUint16(body, uint16(n-1))
	le.PutUint32(body[2:], uint32(tableOff)|uint32(tableBAR))
	le.PutUint32(body[6:], uint32(pbaOff)|uint32(pbaBAR))
	off, err := c.addCapLocked(CapMSIX, body)
	if err != nil {
		return nil, err
	}
	m.off = off
	c.wmask[off+3] = (msixEnable | msixFuncMask) >> 8
	m.resetTableLocked()
	c.msix = m
	return m, nil
}

// Offset is the capability's offset in configuration space.
func (m *MSIX) Offset() uint32 { return m.off }

// Len is the number of vectors.
func (m *MSIX) Len() int { return m.n }

func (m *MSIX) ctlLocked() uint16 { return binary.LittleEndian.Uint16(m.c.data[m.off+2:]) }

// funcMaskedLocked: every vector is masked (MSI-X off, function mask, or no bus
// mastering, under which the function's message write would go nowhere).
func (m *MSIX) funcMaskedLocked() bool {
	ctl := m.ctlLocked()
	return ctl&msixEnable == 0 || ctl&msixFuncMask != 0 || m.c.cmdLocked()&CmdBusMaster == 0
}

func (m *MSIX) vecMaskedLocked(v int) bool {
	return binary.LittleEndian.Uint32(m.table[v*msixEntry+12:])&msixCtlMask != 0
}

func (m *MSIX) messageLocked(v int) (uint64, uint32) {
	e := m.table[v*msixEntry:]
	le := binary.LittleEndian
	return le.Uint64(e), le.Uint32(e[8:])
}

// Enabled reports whether the guest enabled MSI-X (the device then signals with
// Notify rather than INTx).
func (m *MSIX) Enabled() bool {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	return m.ctlLocked()&msixEnable != 0
}

// Vector returns vector v's message and whether it is masked (per-vector mask,
// function mask, MSI-X disabled, or bus mastering off). Out of range: masked.
func (m *MSIX) Vector(v int) (addr uint64, data uint32, masked bool) {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	if v < 0 || v >= m.n {
		return 0, 0, true
	}
	addr, data = m.messageLocked(v)
	return addr, data, m.funcMaskedLocked() || m.vecMaskedLocked(v)
}

// Pending reports vector v's pending bit.
func (m *MSIX) Pending(v int) bool {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	return v >= 0 && v < m.n && m.pba[v/64]&(1<<(v%64)) != 0
}

// Notify raises vector v: its message goes to the bus's MSISink, or, while the vector
// is masked, its pending bit is set and the message goes when it is unmasked. v out of
// range is ignored (virtio's "no vector" 0xffff, for one).
func (m *MSIX) Notify(v int) {
	c := m.c
	c.mu.Lock()
	if v < 0 || v >= m.n {
		c.mu.Unlock()
		return
	}
	if m.funcMaskedLocked() || m.vecMaskedLocked(v) {
		m.pba[v/64] |= 1 << (v % 64)
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

// deliverLocked sends vector v if it is pending and no longer masked.
func (m *MSIX) deliverLocked(v int) {
	if m.pba[v/64]&(1<<(v%64)) == 0 || m.funcMaskedLocked() || m.vecMaskedLocked(v) {
		return
	}
	m.pba[v/64] &^= 1 << (v % 64)
	if sink := m.c.sinkLocked(); sink != nil {
		addr, data := m.messageLocked(v)
		m.c.fx = append(m.c.fx, func() { sink.SendMSI(addr, data) })
	}
}

func (m *MSIX) changedLocked(v int) {
	if f := m.OnChange; f != nil {
		m.c.fx = append(m.c.fx, func() { f(v) })
	}
}

// controlWrittenLocked runs after a guest write to the message control word, and
// after a change of bus mastering.
func (m *MSIX) controlWrittenLocked() {
	for v := 0; v < m.n; v++ {
		m.deliverLocked(v)
		m.changedLocked(v)
	}
}

func (m *MSIX) resetTableLocked() {
	clear(m.table)
	for v := 0; v < m.n; v++ {
		m.table[v*msixEntry+12] = msixCtlMask
	}
	clear(m.pba)
}

func (m *MSIX) resetLocked() {
	m.resetTableLocked()
	for v := 0; v < m.n; v++ {
		m.changedLocked(v)
	}
}

func (m *MSIX) claims(bar int, off uint64) bool {
	if bar == m.tableBAR && off >= m.tableOff && off < m.tableOff+uint64(len(m.table)) {
		return true
	}
	return bar == m.pbaBAR && off >= m.pbaOff && off < m.pbaOff+uint64(len(m.pba)*8)
}

// mmioRead serves a read of the table or PBA. The spec allows aligned dword and
// qword accesses; other widths are served byte by byte, bytes past the end read 0.
func (m *MSIX) mmioRead(bar int, off uint64, data []byte) {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	if bar == m.tableBAR && off >= m.tableOff && off < m.tableOff+uint64(len(m.table)) {
		t := off - m.tableOff
		for i := range data {
			if o := t + uint64(i); o < uint64(len(m.table)) {
				data[i] = m.table[o]
			} else {
				data[i] = 0
			}
		}
		return
	}
	p := off - m.pbaOff
	for i := range data {
		if o := p + uint64(i); o < uint64(len(m.pba)*8) {
			data[i] = byte(m.pba[o/8] >> (8 * (o % 8)))
		} else {
			data[i] = 0
		}
	}
}

// mmioWrite serves a write of the table (the PBA is read-only). Only bit 0 of an
// entry's vector control is writable; unmasking a pending vector sends it.
func (m *MSIX) mmioWrite(bar int, off uint64, data []byte) {
	c := m.c
	c.mu.Lock()
	if !(bar == m.tableBAR && off >= m.tableOff && off < m.tableOff+uint64(len(m.table))) {
		c.mu.Unlock()
		return
	}
	t := off - m.tableOff
	first, last := -1, -1
	for i, v := range data {
		o := t + uint64(i)
		if o >= uint64(len(m.table)) {
			break
		}
		switch o % msixEntry {
		case 12:
			v &= msixCtlMask
		case 13, 14, 15:
			v = 0
		}
		m.table[o] = v
		e := int(o / msixEntry)
		if first < 0 {
			first = e
		}
		last = e
	}
	for v := first; v >= 0 && v <= last; v++ {
		m.deliverLocked(v)
		m.changedLocked(v)
	}
	c.unlock()
}

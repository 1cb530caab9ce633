package pci

import (
	"encoding/binary"
	"fmt"

	"gemu/hw/bus"
)

// BARKind is the type of a base address register, in the BAR's own low bits: memory
// (32- or 64-bit, optionally prefetchable) or I/O.
type BARKind uint8

// BAR kinds. BARPrefetch is or'ed into a memory kind.
const (
	BARMem32    BARKind = 0x0
	BARIO       BARKind = 0x1
	BARMem64    BARKind = 0x4
	BARPrefetch BARKind = 0x8
)

type bar struct {
	used  bool
	upper bool // the high dword of the 64-bit BAR below
	kind  BARKind
	size  uint64
	dev   bus.Device
	rgn   *barRegion

	mapped bool
	base   uint64
	on     *bus.Bus
	err    error  // why the BAR, enabled and programmed, is not mapped
	failAt uint64 // the address err is about (log once per address)
}

// AddBAR declares BAR index (0..5; a 64-bit BAR also takes index+1) of the given kind
// and size (a power of two: at least 16 bytes for memory, 4 for I/O, at most 2 GiB for
// a 32-bit memory BAR and 64 KiB for I/O). dev serves accesses to the BAR at offsets
// from its base once the guest has programmed and enabled it; it may be nil for a BAR
// that only holds an MSI-X table and PBA.
func (c *ConfigSpace) AddBAR(index int, kind BARKind, size uint64, dev bus.Device) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.setup(); err != nil {
		return err
	}
	if index < 0 || index > 5 {
		return fmt.Errorf("pci: BAR index %d", index)
	}
	if size == 0 || size&(size-1) != 0 {
		return fmt.Errorf("pci: BAR %d size %#x is not a power of two", index, size)
	}
	is64 := false
	switch kind {
	case BARIO:
		if size < 4 || size > 1<<16 {
			return fmt.Errorf("pci: I/O BAR %d size %#x", index, size)
		}
	case BARMem32, BARMem32 | BARPrefetch:
		if size < 16 || size > 1<<31 {
			return fmt.Errorf("pci: 32-bit memory BAR %d size %#x", index, size)
		}
	case BARMem64, BARMem64 | BARPrefetch:
		if size < 16 || size > 1<<63 {
			return fmt.Errorf("pci: 64-bit memory BAR %d size %#x", index, size)
		}
		if index == 5 {
			return fmt.Errorf("pci: 64-bit BAR at index 5")
		}
		is64 = true
	default:
		return fmt.Errorf("pci: BAR %d kind %#x", index, kind)
	}
	if c.bars[index].used || is64 && c.bars[index+1].used {
		return fmt.Errorf("pci: BAR %d declared twice", index)
	}
	b := &c.bars[index]
	*b = bar{used: true, kind: kind, size: size, dev: dev}
	b.rgn = &barRegion{c: c, i: index}
	off := uint32(RegBAR0 + 4*index)
	low := uint32(0xfffffff0)
	if kind == BARIO {
		low = 0xfffffffc
	}
	binary.LittleEndian.PutUint32(c.wmask[off:], low&^uint32(size-1))
	c.init32(off, uint32(kind))
	if is64 {
		c.bars[index+1] = bar{used: true, upper: true}
		binary.LittleEndian.PutUint32(c.wmask[off+4:], ^uint32((size-1)>>32))
	}
	return nil
}

// BAR reports where BAR index is mapped: its base on the MMIO or PIO bus, and whether
// it is mapped at all (programmed, decoding enabled and not overlapping anything).
func (c *ConfigSpace) BAR(index int) (base uint64, mapped bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if index < 0 || index > 5 {
		return 0, false
	}
	b := &c.bars[index]
	return b.base, b.mapped
}

// BARError returns why BAR index, programmed and enabled by the guest, is not mapped
// (it overlaps another device), or nil.
func (c *ConfigSpace) BARError(index int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if index < 0 || index > 5 {
		return nil
	}
	return c.bars[index].err
}

// barAddrLocked is where BAR i decodes, by its register and the command register; ok
// is false when it does not decode at all. Addresses that no real assignment uses are
// treated as unmapped as QEMU does: 0, and ranges reaching the top of the 32-bit (or
// 64-bit) space, which is where a BAR sits while the guest sizes it; I/O must end
// below 64 KiB.
func (c *ConfigSpace) barAddrLocked(i int) (uint64, bool) {
	b := &c.bars[i]
	off := RegBAR0 + 4*i
	cmd := c.cmdLocked()
	lo := uint64(binary.LittleEndian.Uint32(c.data[off:]))
	if b.kind == BARIO {
		if cmd&CmdIO == 0 {
			return 0, false
		}
		a := lo &^ (b.size - 1) & 0xfffffffc
		if a == 0 || a+b.size > 1<<16 {
			return 0, false
		}
		return a, true
	}
	if cmd&CmdMemory == 0 {
		return 0, false
	}
	a := lo &^ 0xf &^ (b.size - 1)
	if b.kind&BARMem64 != 0 {
		a |= uint64(binary.LittleEndian.Uint32(c.data[off+4:])) << 32
		a &^= b.size - 1
		last := a + b.size - 1
		if a == 0 || last < a || last == ^uint64(0) {
			return 0, false
		}
		return a, true
	}
	if a == 0 || a+b.size-1 >= 0xffffffff {
		return 0, false
	}
	return a, true
}

// remapLocked brings every BAR's mapping in line with its register and the command
// register: a BAR that moved or stopped decoding leaves its bus, one that decodes is
// inserted at its address. A BAR that would overlap something stays unmapped (noted
// in err and the bus's log) and is tried again at the next remap; when a BAR leaves
// an address, the bus's other functions retry theirs.
func (c *ConfigSpace) remapLocked() {
	removed := c.remapPassLocked()
	if removed {
		// A BAR of this function that collided with one that just moved gets its
		// second chance now.
		c.remapPassLocked()
	}
	if removed && c.bus != nil {
		pb := c.bus
		c.fx = append(c.fx, func() { pb.retryBARs(c) })
	}
}

func (c *ConfigSpace) remapPassLocked() (removed bool) {
	for i := range c.bars {
		b := &c.bars[i]
		if !b.used || b.upper {
			continue
		}
		addr, ok := c.barAddrLocked(i)
		var target *bus.Bus
		if c.bus != nil {
			if b.kind == BARIO {
				target = c.bus.cfg.PIO
			} else {
				target = c.bus.cfg.MMIO
			}
		}
		if b.mapped && (!ok || addr != b.base || target != b.on) {
			b.on.Remove(b.base)
			b.mapped, b.on = false, nil
			removed = true
			c.barChangedLocked(i, b.base, false)
		}
		if !ok || target == nil {
			b.err = nil
			continue
		}
		if b.mapped {
			continue
		}
		name := fmt.Sprintf("pci-%02x:%02x.%d-bar%d", 0, c.slot, c.fn, i)
		if err := target.Insert(b.rgn, name, addr, b.size); err != nil {
			if b.err == nil || b.failAt != addr {
				pb := c.bus
				c.fx = append(c.fx, func() { pb.logf("pci: %s left unmapped: %v", name, err) })
			}
			b.err, b.failAt = err, addr
			continue
		}
		b.mapped, b.base, b.on, b.err = true, addr, target, nil
		c.barChangedLocked(i, addr, true)
	}
	return removed
}

func (c *ConfigSpace) barChangedLocked(i int, base uint64, mapped bool) {
	if f := c.onBAR; f != nil {
		c.fx = append(c.fx, func() { f(i, base, mapped) })
	}
}

// OnBARChange has f called (with no pci lock held) each time a BAR is mapped at base
// (mapped true) or unmapped from base (mapped false), in that order for a move, so a
// device can follow its BARs with state kept outside the bus (a KVM ioeventfd on a
// doorbell, for one).
func (c *ConfigSpace) OnBARChange(f func(index int, base uint64, mapped bool)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onBAR = f
}

func (c *ConfigSpace) retryBARs() {
	c.mu.Lock()
	pending := false
	for i := range c.bars {
		pending = pending || c.bars[i].err != nil
	}
	if pending {
		c.remapLocked()
	}
	c.unlock()
}

// barRegion is what a BAR maps on the bus: the MSI-X table and PBA where the function
// placed them, the device's own registers everywhere else.
type barRegion struct {
	c *ConfigSpace
	i int
}

func (r *barRegion) Read(a bus.Access, off uint64, data []byte) {
	if m := r.c.msix; m != nil && m.claims(r.i, off) {
		m.mmioRead(r.i, off, data)
		return
	}
	if d := r.c.bars[r.i].dev; d != nil {
		d.Read(a, off, data)
		return
	}
	clear(data)
}

func (r *barRegion) Write(a bus.Access, off uint64, data []byte) {
	if m := r.c.msix; m != nil && m.claims(r.i, off) {
		m.mmioWrite(r.i, off, data)
		return
	}
	if d := r.c.bars[r.i].dev; d != nil {
		d.Write(a, off, data)
	}
}

// NewIOWindow returns a bus.Device that forwards accesses at offset o to port o of
// pio: the PCI I/O window of a board without port I/O (arm virt maps 64 KiB of it
// in MMIO), so I/O BARs mapped on pio are reachable from the CPU.
func NewIOWindow(pio *bus.Bus) bus.Device { return ioWindow{pio} }

type ioWindow struct{ pio *bus.Bus }

func (w ioWindow) Read(a bus.Access, off uint64, data []byte)  { w.pio.Read(a, off, data) }
func (w ioWindow) Write(a bus.Access, off uint64, data []byte) { w.pio.Write(a, off, data) }

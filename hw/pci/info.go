package pci

// BARDesc describes one declared BAR, for monitors (QEMU's query-pci regions).
type BARDesc struct {
	Index  int
	Kind   BARKind
	Size   uint64
	Base   uint64 // valid when Mapped
	Mapped bool
}

// BARs lists the BARs the device declared, in index order (the upper half of a 64-bit
// BAR is not listed on its own).
func (c *ConfigSpace) BARs() []BARDesc {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []BARDesc
	for i := range c.bars {
		b := &c.bars[i]
		if !b.used || b.upper {
			continue
		}
		out = append(out, BARDesc{Index: i, Kind: b.kind, Size: b.size, Base: b.base, Mapped: b.mapped})
	}
	return out
}

// Slot is one occupied device/function address of a Bus.
type Slot struct {
	Dev, Fn uint8
	F       Function
}

// Slots lists the bus's functions in device/function order.
func (b *Bus) Slots() []Slot {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out []Slot
	for df := 0; df < 256; df++ {
		if f, ok := b.fns[uint8(df)]; ok {
			out = append(out, Slot{Dev: uint8(df >> 3), Fn: uint8(df & 7), F: f})
		}
	}
	return out
}

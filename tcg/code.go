package tcg

import (
	"sync/atomic"

	"gemu/hw/memory"
)

// Code pages. Whether a guest physical page holds translated code is hw/memory's
// PageCode flag, not tcg's: the block cache sets it when it inserts a block and clears
// it when the page's last block goes, and memory calls the cache back (OnCodeWrite,
// registered by NewCache) when a device or host write touches such a page, so DMA
// invalidates translated code exactly like a vCPU store. vCPU stores see the flag
// through the pointer the softmmu TLB entry keeps to the page's flag word
// (TLBEntry.Code): the fast paths test CodeBit, and when it is set take the slow path,
// which calls InvalidateRange. Keeping the flag per page rather than clearing write
// permission in every vCPU's TLB avoids touching other vCPUs' TLBs from the
// translating thread.

// CodeBit are the bits of a page flag word (TLBEntry.Code) that send stores to the slow
// path: PageCode, and the dirty log's PageTrack (memory.StoreSlow: a clean page while
// a migration logs dirty pages; the target's slow path calls memory.MarkDirty). Other
// bits of the word (memory.PageDirty) must not.
const CodeBit = memory.StoreSlow

// CodeFlag returns the flag word of the RAM page holding phys, for TLBEntry.Code, or
// nil when phys is not RAM.
func (c *Cache[Op]) CodeFlag(phys uint64) *uint32 {
	if c.ram == nil {
		return nil
	}
	return c.ram.PageFlags(phys)
}

// IsCode reports whether the page holding phys has translated code.
func (c *Cache[Op]) IsCode(phys uint64) bool {
	f := c.CodeFlag(phys)
	return f != nil && atomic.LoadUint32(f)&memory.PageCode != 0
}

func (c *Cache[Op]) setCode(page uint64) {
	if c.ram != nil {
		c.ram.SetCode(page)
	}
}

func (c *Cache[Op]) clearCode(page uint64) {
	if c.ram != nil {
		c.ram.ClearCode(page)
	}
}

package tcg

import (
	"sync/atomic"

	"gemu/hw/memory"
)

// CodePages holds one flag per guest physical RAM page saying whether translated code
// exists for it. Softmmu store fast paths test the flag through the pointer kept in the
// TLB entry (TLBEntry.Code) and take the slow path, which invalidates, when it is set.
// Keeping the flag per page rather than clearing write permission in every vCPU's TLB
// avoids touching other vCPUs' TLBs from the translating thread.
type CodePages struct {
	slots []codeSlot
}

type codeSlot struct {
	gpa, end uint64
	flags    []uint32
}

// NewCodePages returns flags (all clear) for every page of ram's slots as they are now.
func NewCodePages(ram *memory.RAM) *CodePages {
	cp := &CodePages{}
	if ram == nil {
		return cp
	}
	for _, s := range ram.Slots() {
		cp.slots = append(cp.slots, codeSlot{gpa: s.GPA, end: s.End(), flags: make([]uint32, (s.End()-s.GPA+PageSize-1)>>PageBits)})
	}
	return cp
}

// Flag returns the code flag of the RAM page holding phys, or nil when phys is not RAM.
// A non-zero *Flag means stores must go through the invalidating slow path.
func (cp *CodePages) Flag(phys uint64) *uint32 {
	for i := range cp.slots {
		s := &cp.slots[i]
		if phys >= s.gpa && phys < s.end {
			return &s.flags[(phys-s.gpa)>>PageBits]
		}
	}
	return nil
}

func (cp *CodePages) set(page uint64) {
	if f := cp.Flag(page); f != nil {
		atomic.StoreUint32(f, 1)
	}
}

func (cp *CodePages) clear(page uint64) {
	if f := cp.Flag(page); f != nil {
		atomic.StoreUint32(f, 0)
	}
}

// IsCode reports whether the page holding phys has translated code.
func (cp *CodePages) IsCode(phys uint64) bool {
	f := cp.Flag(phys)
	return f != nil && atomic.LoadUint32(f) != 0
}

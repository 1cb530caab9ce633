package tcg

import "unsafe"

// TLBBits is log2 of the number of entries of one softmmu TLB (per vCPU, per MMU index).
const TLBBits = 10

// TLBInvalid is a tag no access ever matches: access tags keep bits 63..12 of the
// address and its low alignment bits (2..0), so bits 11..3 of a real tag are always zero.
const TLBInvalid = ^uint64(0)

// TLBEntry caches one virtual page's translation for one MMU index. Each of Read, Write
// and Exec is the page-aligned virtual address when that access is allowed through the
// fast path, or TLBInvalid. MMIO pages never get a fast-path tag.
type TLBEntry struct {
	Read, Write, Exec uint64
	// Host points at the first byte of the guest page in host memory.
	Host unsafe.Pointer
	// Code is the physical page's flag word in hw/memory (see code.go); stores take
	// the slow path when its CodeBit is set.
	Code *uint32
	// Phys is the guest physical page address.
	Phys uint64
	// Attr is free for the target (for example memory-type bits).
	Attr uint64
	// The padding makes an entry 64 bytes: one cache line when the TLB is 64-byte
	// aligned (target-arm's are), and the native fast path indexes with a shift
	// instead of a multiply.
	_ uint64
}

// TLB is one direct-mapped softmmu TLB.
type TLB struct {
	E [1 << TLBBits]TLBEntry
}

// Index returns the entry slot for virtual address va.
func Index(va uint64) uint64 { return (va >> PageBits) & (1<<TLBBits - 1) }

// Tag returns what an access of size bytes (a power of two) at va is compared with: the
// page bits plus the misalignment bits, so misaligned accesses always miss and take the
// slow path.
func Tag(va uint64, size uint64) uint64 { return va & (PageMask | (size - 1)) }

// Entry returns the entry slot for va.
func (t *TLB) Entry(va uint64) *TLBEntry { return &t.E[Index(va)] }

// Flush invalidates every entry.
func (t *TLB) Flush() {
	for i := range t.E {
		t.E[i] = TLBEntry{Read: TLBInvalid, Write: TLBInvalid, Exec: TLBInvalid}
	}
}

// FlushPage invalidates the entry for the virtual page holding va, if present.
func (t *TLB) FlushPage(va uint64) {
	e := t.Entry(va)
	p := va & PageMask
	if e.Read == p || e.Write == p || e.Exec == p {
		*e = TLBEntry{Read: TLBInvalid, Write: TLBInvalid, Exec: TLBInvalid}
	}
}

// Fill installs a translation for the page holding va; read, write and exec say which
// accesses the fast path may perform. host must point at the start of the page.
func (t *TLB) Fill(va, phys uint64, host unsafe.Pointer, code *uint32, read, write, exec bool, attr uint64) {
	p := va & PageMask
	e := t.Entry(va)
	*e = TLBEntry{Read: TLBInvalid, Write: TLBInvalid, Exec: TLBInvalid, Host: host, Code: code, Phys: phys & PageMask, Attr: attr}
	if host == nil {
		return
	}
	if read {
		e.Read = p
	}
	if write {
		e.Write = p
	}
	if exec {
		e.Exec = p
	}
}

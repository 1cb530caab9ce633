// Package memory owns guest physical RAM: one anonymous mmap'ed host region per slot,
// the guest-physical view of it (translation of a guest physical address to host
// bytes, DMA-style reads and writes for devices), and per-page flags (pageflags.go):
// "holds translated code" (PageCode) and "written since the dirty log was last taken"
// (PageDirty), with the code-write notification a translator registers.
//
// It is shared by every accelerator (KVM registers the same host regions as memory
// slots; TCG's softmmu TLB points straight into them and at the page flag words) and by
// every target. It must not know about devices, MMIO or which accelerator runs the
// guest: it calls the code-write handler it was given and nothing else.
package memory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Slot is one contiguous range of guest RAM backed by one host mapping.
type Slot struct {
	Index int    // slot number, stable for the life of the guest (KVM memory slot id)
	GPA   uint64 // guest physical base
	Mem   []byte // host mapping; len(Mem) is the slot size
	Name  string

	mapping []byte   // the whole host mapping Mem lies in (see hugeAlign)
	flags   []uint32 // one word of Page* bits per PageSize page of Mem, accessed atomically
}

// End is the first guest physical address past the slot.
func (s *Slot) End() uint64 { return s.GPA + uint64(len(s.Mem)) }

// RAM is the set of RAM slots of one guest, sorted by GPA.
type RAM struct {
	slots []*Slot
	// onCode is the code-write handler (see OnCodeWrite), nil when none.
	onCode atomic.Pointer[codeHandler]
}

// ErrOverlap is returned when a new slot overlaps an existing one.
var ErrOverlap = errors.New("memory: slot overlaps an existing slot")

// New returns an empty RAM.
func New() *RAM { return &RAM{} }

// hugeAlign is the x86-64 transparent huge page size. A slot of at least this size
// starts at a host address with the same offset within a huge page as its guest
// physical base (2 MiB-aligned in practice), and is advised MADV_HUGEPAGE, as QEMU
// does with its RAM blocks: the host kernel then backs it with 2 MiB pages and KVM
// maps them with 2 MiB nested page-table entries. A guest then takes one nested page
// fault per 2 MiB it touches instead of 512; under nested virtualization, where each
// such fault is an exit to the outer hypervisor, this halved a Linux boot's
// decompression and memory setup time.
const hugeAlign = 2 << 20

// Add maps size bytes of anonymous, zeroed host memory at guest physical address gpa.
// gpa must be PageSize-aligned (page flags are per guest page) and size a multiple of
// the host page size. The mapping is MAP_NORESERVE so an
// untouched guest costs no host memory.
func (r *RAM) Add(name string, gpa, size uint64) (*Slot, error) {
	if size == 0 || size%uint64(unix.Getpagesize()) != 0 {
		return nil, fmt.Errorf("memory: slot %q size %#x is not a positive multiple of the page size", name, size)
	}
	if gpa%PageSize != 0 {
		return nil, fmt.Errorf("memory: slot %q base %#x is not %d KiB aligned", name, gpa, PageSize>>10)
	}
	if gpa+size < gpa {
		return nil, fmt.Errorf("memory: slot %q wraps the address space", name)
	}
	for _, s := range r.slots {
		if gpa < s.End() && s.GPA < gpa+size {
			return nil, fmt.Errorf("%w: %q [%#x,%#x) and %q", ErrOverlap, name, gpa, gpa+size, s.Name)
		}
	}
	// Huge-page alignment over-reserves one huge page of address space (never touched,
	// so never resident) and slices the slot out of it at the right offset.
	pad := uint64(0)
	if size >= hugeAlign {
		pad = hugeAlign
	}
	if size+pad < size {
		return nil, fmt.Errorf("memory: slot %q size %#x is too large", name, size)
	}
	mapping, err := unix.Mmap(-1, 0, int(size+pad), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("memory: cannot map %d MiB of guest RAM for %q: %w", size>>20, name, err)
	}
	mem := mapping[:size:size]
	if pad != 0 {
		base := uint64(uintptr(unsafe.Pointer(&mapping[0])))
		off := (gpa - base) % hugeAlign
		mem = mapping[off : off+size : off+size]
		// Advice only: a host without transparent huge pages refuses it and the slot
		// works the same with small pages.
		_ = unix.Madvise(mem, unix.MADV_HUGEPAGE)
	}
	s := &Slot{Index: len(r.slots), GPA: gpa, Mem: mem, Name: name, mapping: mapping,
		flags: make([]uint32, (size+PageSize-1)>>PageBits)}
	r.slots = append(r.slots, s)
	sort.Slice(r.slots, func(i, j int) bool { return r.slots[i].GPA < r.slots[j].GPA })
	return s, nil
}

// Slots returns the slots sorted by guest physical address. The slice must not be modified.
func (r *RAM) Slots() []*Slot { return r.slots }

// Close unmaps every slot. The RAM must not be used afterwards.
func (r *RAM) Close() error {
	var first error
	for _, s := range r.slots {
		if err := unix.Munmap(s.mapping); err != nil && first == nil {
			first = err
		}
		s.Mem, s.mapping, s.flags = nil, nil, nil
	}
	r.slots = nil
	return first
}

// Find returns the slot holding gpa, or nil.
func (r *RAM) Find(gpa uint64) *Slot {
	i := sort.Search(len(r.slots), func(i int) bool { return r.slots[i].End() > gpa })
	if i < len(r.slots) && r.slots[i].GPA <= gpa {
		return r.slots[i]
	}
	return nil
}

// Slice returns the host bytes for [gpa, gpa+n) if the whole range lies in one slot.
// The returned slice aliases guest memory. A device that writes guest memory through
// it must call Written for the range afterwards (dirty log, translated code).
func (r *RAM) Slice(gpa, n uint64) ([]byte, bool) {
	s := r.Find(gpa)
	if s == nil {
		return nil, false
	}
	off := gpa - s.GPA
	if n > uint64(len(s.Mem))-off {
		return nil, false
	}
	return s.Mem[off : off+n : off+n], true
}

// ErrNotRAM is returned by ReadAt/WriteAt when part of the range is not guest RAM.
var ErrNotRAM = errors.New("memory: guest physical range is not RAM")

// ReadAt copies guest RAM at gpa into p; the range may span adjacent slots.
func (r *RAM) ReadAt(p []byte, gpa uint64) error {
	for len(p) > 0 {
		s := r.Find(gpa)
		if s == nil {
			return fmt.Errorf("%w: %#x", ErrNotRAM, gpa)
		}
		n := copy(p, s.Mem[gpa-s.GPA:])
		p = p[n:]
		gpa += uint64(n)
	}
	return nil
}

// WriteAt copies p into guest RAM at gpa; the range may span adjacent slots. Like any
// DMA write it marks the pages dirty and invalidates translated code on them (Written).
func (r *RAM) WriteAt(p []byte, gpa uint64) error {
	for len(p) > 0 {
		s := r.Find(gpa)
		if s == nil {
			return fmt.Errorf("%w: %#x", ErrNotRAM, gpa)
		}
		n := copy(s.Mem[gpa-s.GPA:], p)
		s.written(gpa, uint64(n), r.onCode.Load())
		p = p[n:]
		gpa += uint64(n)
	}
	return nil
}

// Little-endian helpers for loaders and device DMA.

func (r *RAM) Read16(gpa uint64) (uint16, error) {
	var b [2]byte
	err := r.ReadAt(b[:], gpa)
	return binary.LittleEndian.Uint16(b[:]), err
}

func (r *RAM) Read32(gpa uint64) (uint32, error) {
	var b [4]byte
	err := r.ReadAt(b[:], gpa)
	return binary.LittleEndian.Uint32(b[:]), err
}

func (r *RAM) Read64(gpa uint64) (uint64, error) {
	var b [8]byte
	err := r.ReadAt(b[:], gpa)
	return binary.LittleEndian.Uint64(b[:]), err
}

func (r *RAM) Write16(gpa uint64, v uint16) error {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	return r.WriteAt(b[:], gpa)
}

func (r *RAM) Write32(gpa uint64, v uint32) error {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	return r.WriteAt(b[:], gpa)
}

func (r *RAM) Write64(gpa uint64, v uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return r.WriteAt(b[:], gpa)
}

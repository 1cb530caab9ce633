package tcg

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Direct chaining between native blocks (QEMU's goto_tb). A native block's exit to a
// constant guest PC does not return to the run loop when it is linked: after checking
// the exit-request word and the jitcall budget it jumps through its LinkRec's Target
// word, which holds either the exit's own leave path (unlinked) or the entry of the
// block that starts at ExitPC. The run loop links an exit the first time it sees it
// taken (Cache.Link) and invalidation unlinks every exit into a dropped block, so
// generated code never reaches dead code through a link.
//
// A link joins blocks of the same guest virtual and physical page with the same mode
// flags, as the Go-level chain (TB.Next) does: while code of that page runs, the page's
// mapping is the one both blocks were translated under (a TLB change on this vCPU
// happens in Go, which links only whole-native blocks never call; one from another
// vCPU raises the exit request checked before every linked jump). Records live outside
// the Go heap, in read-write pages the generated code reads but never executes, so
// linking is an atomic store and no code is ever patched (the code arena stays W^X).

// LinkRec is the record of one chainable exit.
type LinkRec struct {
	// Target is where the exit jumps (read by generated code): Out, or a linked
	// block's entry. Updated atomically.
	Target uintptr
	// Out is the exit's own path back to the run loop.
	Out uintptr
	// ExitPC is the guest PC the exit goes to.
	ExitPC uint64
	// The block holding the exit, filled in when the block enters the cache.
	SrcPC, SrcPhys, SrcFlags uint64
	// nextIn chains the records linked to the same block (TB.in), under the cache's
	// mutex.
	nextIn *LinkRec
}

// Linkage is what the native backend reports about a compiled block for chaining: its
// entry (the start of its code, when the whole block is one native segment) and its
// chainable exits. The zero Linkage means the block takes no part in chaining.
type Linkage struct {
	Entry uintptr
	Exits []*LinkRec
}

// linkRecs allocates LinkRecs from anonymous read-write mappings (never freed, like
// code in the arena).
var linkRecs struct {
	mu   sync.Mutex
	free []LinkRec
}

const linkChunk = 1 << 16 // bytes per mapping

func newLinkRec() *LinkRec {
	linkRecs.mu.Lock()
	defer linkRecs.mu.Unlock()
	if len(linkRecs.free) == 0 {
		b, err := unix.Mmap(-1, 0, linkChunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return nil
		}
		linkRecs.free = unsafe.Slice((*LinkRec)(unsafe.Pointer(&b[0])), linkChunk/unsafe.Sizeof(LinkRec{}))
	}
	r := &linkRecs.free[0]
	linkRecs.free = linkRecs.free[1:]
	return r
}

// unlink points the exit back at its own leave path.
func (r *LinkRec) unlink() { atomic.StoreUintptr(&r.Target, r.Out) }

// Exits to a PC that is not a constant, or in another page, cannot be linked. In a
// linkable block they probe the vCPU's JumpTable instead (QEMU's lookup_and_goto_ptr):
// an entry for the PC whose block header (a LinkRec: Target = the block's entry, 0
// once dropped; Src* = its key) matches the current mode flags and the physical page
// the instruction TLB maps the PC to is jumped to directly; anything else returns to
// the run loop. The run loop records every native block it finds (JumpTable.Set).

// JumpTableBits is log2 of the number of entries of a vCPU's JumpTable.
const JumpTableBits = 12

// JumpTable is a per-vCPU direct-mapped table from guest virtual PC to block header,
// read by generated code. Only its vCPU's goroutine touches it.
type JumpTable struct {
	E [1 << JumpTableBits]struct {
		PC  uint64
		Hdr *LinkRec
	}
}

// Set records the block whose header is hdr as the one at pc.
func (j *JumpTable) Set(pc uint64, hdr *LinkRec) {
	e := &j.E[(pc>>2)&(1<<JumpTableBits-1)]
	e.PC, e.Hdr = pc, hdr
}

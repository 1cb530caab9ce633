package memory

import "sync/atomic"

// Per-page flags. Every PageSize page of every slot has one uint32 flag word, read and
// written atomically, holding these bits:
//
//   - PageCode: a translator holds code translated from the page. The translator sets
//     and clears it (SetCode, ClearCode); a write through this package to a page with
//     PageCode set calls the RAM's code-write handler (OnCodeWrite), which drops the
//     stale translations. The softmmu TLB keeps a pointer to the word (PageFlags) and
//     the vCPU store fast path tests this bit only, so it is bit 0: generated code tests
//     it with one `test byte [flags], 1`.
//   - PageDirty: the page was written since the dirty log was last taken (DirtyPages,
//     TakeDirty, ClearDirty, SyncDirtyLog). Set by every write through this package
//     (WriteAt, the Write* helpers, and Written after a write through a Slice) and by a
//     translator's store slow path (MarkDirty).
//   - PageTrack: the dirty log runs (StartDirtyLog) and the page is clean since it was
//     last synced. vCPU stores see it through the TLB's pointer to the flag word exactly
//     like PageCode (StoreSlow is both): the fast path leaves the store to the slow path,
//     which stores and calls MarkDirty (PageDirty on, PageTrack off), so the page's next
//     stores are fast again. This is QEMU's TLB_NOTDIRTY kept in the page's flag word
//     instead of in every vCPU's TLB entries: re-arming a page after a sync is one
//     atomic operation on the word, with no TLB flush of other vCPUs.
const (
	PageCode  uint32 = 1 << 0
	PageDirty uint32 = 1 << 1
	PageTrack uint32 = 1 << 2
)

// StoreSlow are the flag bits that send a vCPU store to the slow path. The native
// fast path tests them with one byte test, so they lie in the low byte.
const StoreSlow = PageCode | PageTrack

// PageBits is log2 of the granule page flags are kept in: 4 KiB, whatever the guest's or
// the host's page size.
const PageBits = 12

// PageSize is the granule page flags are kept in.
const PageSize = 1 << PageBits

type codeHandler struct{ fn func(gpa, n uint64) }

// flag returns the flag word of the page holding gpa; gpa must lie in s.
func (s *Slot) flag(gpa uint64) *uint32 { return &s.flags[(gpa-s.GPA)>>PageBits] }

// PageFlags returns the flag word of the page holding gpa, or nil when gpa is not RAM.
// The word stays valid until Close; access it atomically.
func (r *RAM) PageFlags(gpa uint64) *uint32 {
	s := r.Find(gpa)
	if s == nil {
		return nil
	}
	return s.flag(gpa)
}

// SetCode marks the page holding gpa as holding translated code (no-op for non-RAM).
func (r *RAM) SetCode(gpa uint64) {
	if f := r.PageFlags(gpa); f != nil && atomic.LoadUint32(f)&PageCode == 0 {
		atomic.OrUint32(f, PageCode)
	}
}

// ClearCode clears the page's PageCode bit (no-op for non-RAM).
func (r *RAM) ClearCode(gpa uint64) {
	if f := r.PageFlags(gpa); f != nil && atomic.LoadUint32(f)&PageCode != 0 {
		atomic.AndUint32(f, ^PageCode)
	}
}

// IsCode reports whether the page holding gpa has PageCode set.
func (r *RAM) IsCode(gpa uint64) bool {
	f := r.PageFlags(gpa)
	return f != nil && atomic.LoadUint32(f)&PageCode != 0
}

// OnCodeWrite makes fn the RAM's code-write handler: a write through this package
// (WriteAt, Write*, Written) that touches a page with PageCode set calls fn(gpa, n)
// once per such page, with [gpa, gpa+n) the part of the write inside that page, after
// the bytes are in memory. fn runs on the writer's goroutine with no lock of this
// package held, so it may call SetCode/ClearCode. A RAM has one handler (the guest's
// one translation cache: PageCode is not counted per translator); registering replaces
// the previous one. remove unregisters fn if it is still the handler.
func (r *RAM) OnCodeWrite(fn func(gpa, n uint64)) (remove func()) {
	h := &codeHandler{fn: fn}
	r.onCode.Store(h)
	return func() { r.onCode.CompareAndSwap(h, nil) }
}

// Written records that [gpa, gpa+n) of guest RAM was just written by a device or the
// host (typically through a Slice): it sets PageDirty on every page of the range and
// calls the code-write handler for the pages with PageCode set, exactly as a vCPU store
// to them invalidates translated code. Parts of the range that are not RAM are ignored.
func (r *RAM) Written(gpa, n uint64) {
	h := r.onCode.Load()
	end := gpa + n
	if end < gpa {
		end = ^uint64(0)
	}
	for _, s := range r.slots {
		if lo, hi := max(gpa, s.GPA), min(end, s.End()); lo < hi {
			s.written(lo, hi-lo, h)
		}
	}
}

// written is Written for a range inside s.
func (s *Slot) written(gpa, n uint64, h *codeHandler) {
	for n > 0 {
		m := min(n, PageSize-gpa&(PageSize-1))
		v := MarkDirty(s.flag(gpa))
		if v&PageCode != 0 && h != nil {
			h.fn(gpa, m)
		}
		gpa += m
		n -= m
	}
}

// MarkDirty records a write to the page whose flag word is f (PageDirty on, PageTrack
// off) and returns the word as it was. A translator's store slow path calls it after
// storing to RAM; f may be nil (no RAM).
func MarkDirty(f *uint32) uint32 {
	if f == nil {
		return 0
	}
	for {
		v := atomic.LoadUint32(f)
		// Load first: a page written again and again (a ring, a buffer) stays one
		// shared cache line instead of one atomic read-modify-write per write.
		if v&(PageDirty|PageTrack) == PageDirty || atomic.CompareAndSwapUint32(f, v, (v|PageDirty)&^PageTrack) {
			return v
		}
	}
}

// DirtyPages returns the page-aligned guest physical addresses of the pages in
// [gpa, gpa+n) whose PageDirty bit is set, in ascending order. See PageDirty for what
// is tracked (vCPU stores only while the dirty log runs: PageTrack).
func (r *RAM) DirtyPages(gpa, n uint64) []uint64 {
	return r.dirty(gpa, n, false)
}

// TakeDirty is DirtyPages that also clears the bits it reports, each atomically, so a
// write racing with it is either reported now or stays dirty for the next call.
func (r *RAM) TakeDirty(gpa, n uint64) []uint64 {
	return r.dirty(gpa, n, true)
}

// ClearDirty clears PageDirty on every page in [gpa, gpa+n).
func (r *RAM) ClearDirty(gpa, n uint64) { r.dirty(gpa, n, true) }

func (r *RAM) dirty(gpa, n uint64, clear bool) []uint64 {
	var pages []uint64
	end := gpa + n
	if end < gpa {
		end = ^uint64(0)
	}
	for _, s := range r.slots {
		lo, hi := max(gpa, s.GPA), min(end, s.End())
		if lo >= hi {
			continue
		}
		for p := lo &^ (PageSize - 1); p < hi; p += PageSize {
			f := s.flag(p)
			if atomic.LoadUint32(f)&PageDirty == 0 {
				continue
			}
			if clear && atomic.AndUint32(f, ^PageDirty)&PageDirty == 0 {
				continue
			}
			pages = append(pages, p)
		}
	}
	return pages
}

// The dirty log of a migration (QEMU's DIRTY_MEMORY_MIGRATION client): StartDirtyLog
// arms every page (PageTrack), writes of any kind then set PageDirty, SyncDirtyLog
// takes the pages written since the previous sync and re-arms them, StopDirtyLog
// disarms. One consumer at a time: TakeDirty and ClearDirty would take pages from it.
//
// A vCPU store that tested the flag word just before a sync re-armed the page may land
// a moment after it; the caller makes every vCPU pass a block boundary after a sync
// before it reads the pages it took (machine/virt does), so no store is lost.

// StartDirtyLog arms the dirty log on every page and clears PageDirty: from now on
// every write to guest RAM, vCPU stores included, sets PageDirty.
func (r *RAM) StartDirtyLog() {
	for _, s := range r.slots {
		for i := range s.flags {
			for {
				v := atomic.LoadUint32(&s.flags[i])
				if atomic.CompareAndSwapUint32(&s.flags[i], v, (v|PageTrack)&^PageDirty) {
					break
				}
			}
		}
	}
}

// StopDirtyLog disarms every page: vCPU stores take the fast path again.
func (r *RAM) StopDirtyLog() {
	for _, s := range r.slots {
		for i := range s.flags {
			if atomic.LoadUint32(&s.flags[i])&PageTrack != 0 {
				atomic.AndUint32(&s.flags[i], ^PageTrack)
			}
		}
	}
}

// SyncDirtyLog ORs into bm (one bit per page of s, LSB first; at least
// (len(s.Mem)/PageSize+63)/64 words) the pages of s written since the last sync or
// StartDirtyLog, re-arms them, and returns how many it took.
func (s *Slot) SyncDirtyLog(bm []uint64) int {
	n := 0
	for i := range s.flags {
		f := &s.flags[i]
		for {
			v := atomic.LoadUint32(f)
			if v&PageDirty == 0 {
				break
			}
			if atomic.CompareAndSwapUint32(f, v, (v&^PageDirty)|PageTrack) {
				bm[i/64] |= 1 << (i % 64)
				n++
				break
			}
		}
	}
	return n
}

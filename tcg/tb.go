package tcg

import (
	"sync"
	"sync/atomic"

	"gemu/hw/memory"
)

// PageBits is the log2 of the guest page size tcg tracks code and TLB entries in.
const PageBits = 12

// PageSize is the guest page size tcg works with (targets with larger pages still see
// 4 KiB granularity here).
const PageSize = 1 << PageBits

// PageMask selects the page number bits of an address.
const PageMask = ^uint64(PageSize - 1)

// Key identifies a translation: guest virtual PC (PC-relative ops bake it in), guest
// physical PC (what code invalidation works on), and the target's mode flags that change
// what the code means (exception level, MMU regime bits...).
type Key struct {
	PC    uint64
	Phys  uint64
	Flags uint64
}

// TB is one translation block: straight-line guest code from Key.PC up to and including
// the first control transfer, within one guest page or, for a spanning block
// (InsertSpanning), extending into the next virtual page. Code is the backend's code
// type (for the closure backend, the func returned by Compile).
type TB[Code any] struct {
	Key
	// Code is the compiled block.
	Code Code
	// End is the guest virtual PC just past the block's last instruction.
	End uint64
	// spans: the block's code extends into the virtual page after Key.PC's, which
	// mapped to the physical page page2 when it was translated. Spanning blocks are
	// never chained to nor jumped to by generated code: only the run loop enters them,
	// after checking that the second page still maps to page2.
	spans bool
	page2 uint64
	// next caches the successor reached by falling through or branching to End (slot 0)
	// and by a taken branch elsewhere (slot 1), for direct chaining within a page.
	next [2]atomic.Pointer[TB[Code]]
	dead atomic.Bool
	// hdr is the block's header for links and jump tables (link.go: Target is its
	// native entry, zeroed when it is dropped), nil if it cannot be jumped to; in lists
	// the exits linked to it (through LinkRec.nextIn), unlinked when the block is
	// dropped. in is guarded by the cache's mutex.
	hdr *LinkRec
	in  *LinkRec
}

// JumpHdr returns the block's header for JumpTable.Set, or nil when generated code
// cannot jump to it.
func (tb *TB[Code]) JumpHdr() *LinkRec { return tb.hdr }

// Page2 returns the physical page the block's code extends into, and whether it spans
// two pages at all.
func (tb *TB[Code]) Page2() (uint64, bool) { return tb.page2, tb.spans }

// page2VA is the virtual address of the page after the block's first.
func (tb *TB[Code]) page2VA() uint64 { return tb.PC&PageMask + PageSize }

// extent returns the physical range [start, end) of page (a page address) the block's
// code occupies, ok false if none.
func (tb *TB[Code]) extent(page uint64) (start, end uint64, ok bool) {
	if first := tb.Phys & PageMask; page == first {
		if tb.spans {
			return tb.Phys, first + PageSize, true
		}
		return tb.Phys, tb.Phys + (tb.End - tb.PC), true
	}
	if tb.spans && page == tb.page2 {
		return page, page + (tb.End - tb.page2VA()), true
	}
	return 0, 0, false
}

func (tb *TB[Code]) chainSlot(pc uint64) int {
	if pc == tb.End {
		return 0
	}
	return 1
}

// Next returns the chained successor of tb for the block now starting at pc with mode
// flags, or nil. The caller must know that the guest's virtual-to-physical mapping of
// tb's page has not changed since it looked tb up (no TLB flush in between): links
// only join blocks of the same virtual and physical page, so that is all the
// validation a link needs besides the successor still being valid.
func (tb *TB[Code]) Next(pc, flags uint64) *TB[Code] {
	n := tb.next[tb.chainSlot(pc)].Load()
	if n != nil && n.PC == pc && n.Flags == flags && !n.dead.Load() {
		return n
	}
	return nil
}

// Chain records n as tb's successor when both come from the same virtual and physical
// page (one page invalidation or remapping then covers the link) and n does not span
// into another page (Next could not check that page's mapping).
func (tb *TB[Code]) Chain(n *TB[Code]) {
	if n.PC&PageMask == tb.PC&PageMask && n.Phys&PageMask == tb.Phys&PageMask && !n.spans {
		tb.next[tb.chainSlot(n.PC)].Store(n)
	}
}

// Valid reports whether the TB has not been invalidated.
func (tb *TB[Op]) Valid() bool { return !tb.dead.Load() }

// Cache is the block cache shared by all vCPUs of one guest; Op is the backend's code
// type.
type Cache[Op any] struct {
	mu sync.Mutex
	m  map[Key]*TB[Op]
	// span holds the spanning blocks by key: several second pages may be seen for one.
	span  map[Key][]*TB[Op]
	nspan int
	pages map[uint64][]*TB[Op] // physical page → blocks translated from it (both pages of a spanning one)
	ram   *memory.RAM          // owns the pages' code flags (code.go); nil in some tests
	unreg func()               // removes the code-write handler
}

// NewCache returns an empty cache for a guest whose RAM is ram (nil: no RAM, for tests)
// and registers it as ram's code-write handler, so device and host writes to pages
// holding translated code invalidate it. A RAM has one cache at a time (memory keeps
// one code flag per page, not one per cache); Close the cache before making another.
func NewCache[Op any](ram *memory.RAM) *Cache[Op] {
	c := &Cache[Op]{m: make(map[Key]*TB[Op]), span: make(map[Key][]*TB[Op]), pages: make(map[uint64][]*TB[Op]), ram: ram}
	if ram != nil {
		c.unreg = ram.OnCodeWrite(c.codeWritten)
	}
	return c
}

// codeWritten is the code-write handler: [phys, phys+n) lies in one page.
func (c *Cache[Op]) codeWritten(phys, n uint64) { c.InvalidateRange(phys, n) }

// Close drops every block and unregisters the cache from its RAM. The cache must not
// be used afterwards.
func (c *Cache[Op]) Close() {
	c.InvalidateAll()
	if c.unreg != nil {
		c.unreg()
	}
}

// Lookup returns the valid TB for k that lies in one page, or nil.
func (c *Cache[Op]) Lookup(k Key) *TB[Op] {
	c.mu.Lock()
	tb := c.m[k]
	c.mu.Unlock()
	return tb
}

// Insert records a new TB translated from guest physical memory at k.Phys, marks its page
// as holding code (so stores to it take the slow path and invalidate) and returns the TB
// now in the cache for k (an earlier one if another vCPU won the race).
func (c *Cache[Op]) Insert(k Key, code Op, end uint64) *TB[Op] {
	return c.InsertLinked(k, code, end, Linkage{})
}

// InsertLinked is Insert for a block the native backend can chain (see link.go).
func (c *Cache[Op]) InsertLinked(k Key, code Op, end uint64, lk Linkage) *TB[Op] {
	c.mu.Lock()
	defer c.mu.Unlock()
	if tb := c.m[k]; tb != nil {
		return tb
	}
	tb := c.newTB(k, code, end, lk)
	c.m[k] = tb
	return tb
}

// InsertSpanning is InsertLinked for a block whose code extends past the end of its
// first page into the next virtual page, which maps to the physical page page2: both
// pages are marked as holding code and a write to either drops it. Generated code
// never enters it (lk.Entry is ignored; its exits may be linked). It returns the block
// now in the cache for k and page2.
func (c *Cache[Op]) InsertSpanning(k Key, code Op, end uint64, lk Linkage, page2 uint64) *TB[Op] {
	page2 &= PageMask
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tb := range c.span[k] {
		if tb.page2 == page2 {
			return tb
		}
	}
	lk.Entry = 0
	tb := c.newTB(k, code, end, lk)
	tb.spans, tb.page2 = true, page2
	if page2 != k.Phys&PageMask {
		c.pages[page2] = append(c.pages[page2], tb)
		c.setCode(page2)
	}
	c.span[k] = append(c.span[k], tb)
	c.nspan++
	return tb
}

// lookupSpanning returns a valid spanning block for k whose second page is the one
// page2 reports now (called only when there is a candidate; ok=false: not mapped).
func (c *Cache[Op]) lookupSpanning(k Key, page2 func() (uint64, bool)) *TB[Op] {
	c.mu.Lock()
	cands := append([]*TB[Op](nil), c.span[k]...)
	c.mu.Unlock()
	if len(cands) == 0 {
		return nil
	}
	p2, ok := page2()
	if !ok {
		return nil
	}
	for _, tb := range cands {
		if tb.page2 == p2&PageMask && !tb.dead.Load() {
			return tb
		}
	}
	return nil
}

// newTB makes the block for k and records it on its first page. c.mu is held.
func (c *Cache[Op]) newTB(k Key, code Op, end uint64, lk Linkage) *TB[Op] {
	page := k.Phys & PageMask
	for _, r := range lk.Exits {
		r.SrcPC, r.SrcPhys, r.SrcFlags = k.PC, k.Phys, k.Flags
	}
	tb := &TB[Op]{Key: k, Code: code, End: end}
	if lk.Entry != 0 {
		if h := newLinkRec(); h != nil {
			h.Target, h.SrcPC, h.SrcPhys, h.SrcFlags = lk.Entry, k.PC, k.Phys, k.Flags
			tb.hdr = h
		}
	}
	c.pages[page] = append(c.pages[page], tb)
	c.setCode(page)
	return tb
}

// drop kills tb, removes it from the key maps and, for a spanning block, from the
// block list of its page other than page (the caller updates page's list). c.mu is
// held.
func (c *Cache[Op]) drop(tb *TB[Op], page uint64) {
	c.kill(tb)
	if !tb.spans {
		if c.m[tb.Key] == tb {
			delete(c.m, tb.Key)
		}
		return
	}
	l := c.span[tb.Key]
	for i, o := range l {
		if o == tb {
			l = append(l[:i], l[i+1:]...)
			c.nspan--
			break
		}
	}
	if len(l) == 0 {
		delete(c.span, tb.Key)
	} else {
		c.span[tb.Key] = l
	}
	other := tb.Phys & PageMask
	if page == other {
		other = tb.page2
	}
	if other == page {
		return
	}
	ol := c.pages[other]
	for i, o := range ol {
		if o == tb {
			ol = append(ol[:i], ol[i+1:]...)
			break
		}
	}
	if len(ol) == 0 {
		delete(c.pages, other)
		c.clearCode(other)
	} else {
		c.pages[other] = ol
	}
}

// kill marks tb dead and unlinks the exits chained to it. c.mu is held.
func (c *Cache[Op]) kill(tb *TB[Op]) {
	tb.dead.Store(true)
	if tb.hdr != nil {
		atomic.StoreUintptr(&tb.hdr.Target, 0) // jump tables no longer reach it
	}
	for r := tb.in; r != nil; r = r.nextIn {
		r.unlink()
	}
	tb.in = nil
}

// Link chains the exit r, just taken by a block of this cache, to tb when tb is a
// whole native block starting at the exit's target with the same mode flags in the
// same virtual and physical page, and still valid. It reports whether it linked.
func (c *Cache[Op]) Link(r *LinkRec, tb *TB[Op]) bool {
	if r == nil || tb.hdr == nil || r.ExitPC != tb.PC || r.SrcFlags != tb.Flags ||
		r.SrcPC&PageMask != tb.PC&PageMask || r.SrcPhys&PageMask != tb.Phys&PageMask {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if tb.dead.Load() || atomic.LoadUintptr(&r.Target) != r.Out {
		return false
	}
	atomic.StoreUintptr(&r.Target, tb.hdr.Target)
	r.nextIn, tb.in = tb.in, r
	return true
}

// InvalidatePage drops every TB translated from the guest physical page holding phys
// and clears the page's code flag. It reports whether any TB was dropped. Safe to call
// from any vCPU; vCPUs executing a dropped TB finish it (the write that caused the
// invalidation becomes visible to the next block).
func (c *Cache[Op]) InvalidatePage(phys uint64) bool {
	page := phys & PageMask
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearCode(page)
	tbs := c.pages[page]
	if len(tbs) == 0 {
		return false
	}
	delete(c.pages, page)
	for _, tb := range tbs {
		c.drop(tb, page)
	}
	return true
}

// InvalidateRange drops the TBs whose guest code overlaps the physical range
// [phys, phys+n) (a store of n bytes, not crossing a page), keeping the page's other
// blocks; the page's code flag is cleared when no block is left on it. It reports
// whether any TB was dropped.
func (c *Cache[Op]) InvalidateRange(phys, n uint64) bool {
	page := phys & PageMask
	c.mu.Lock()
	defer c.mu.Unlock()
	tbs := c.pages[page]
	kept := tbs[:0]
	dropped := false
	var drop []*TB[Op]
	for _, tb := range tbs {
		if start, end, _ := tb.extent(page); phys < end && start < phys+n {
			drop = append(drop, tb)
			dropped = true
			continue
		}
		kept = append(kept, tb)
	}
	clear(tbs[len(kept):])
	if len(kept) == 0 {
		delete(c.pages, page)
		c.clearCode(page)
	} else {
		c.pages[page] = kept
	}
	for _, tb := range drop {
		c.drop(tb, page)
	}
	return dropped
}

// InvalidateAll drops every TB (guest-wide instruction cache invalidation).
func (c *Cache[Op]) InvalidateAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for page, tbs := range c.pages {
		for _, tb := range tbs {
			c.kill(tb)
		}
		c.clearCode(page)
	}
	c.m = make(map[Key]*TB[Op])
	c.span = make(map[Key][]*TB[Op])
	c.nspan = 0
	c.pages = make(map[uint64][]*TB[Op])
}

// Len returns the number of cached TBs.
func (c *Cache[Op]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m) + c.nspan
}

// JumpCacheBits is log2 of the number of jump-cache entries per vCPU.
const JumpCacheBits = 14

// JumpCache is a per-vCPU direct-mapped cache from guest virtual PC to TB, consulted
// before the shared Cache. The owner must Flush it whenever its virtual→physical mapping
// may have changed (any TLB flush), since entries are keyed by virtual PC only.
type JumpCache[Op any] struct {
	e [1 << JumpCacheBits]*TB[Op]
}

func jcIndex(pc uint64) uint64 { return (pc >> 2) & (1<<JumpCacheBits - 1) }

// Lookup returns a valid TB for virtual pc and flags, or nil.
func (j *JumpCache[Op]) Lookup(pc, flags uint64) *TB[Op] {
	tb := j.e[jcIndex(pc)]
	if tb != nil && tb.PC == pc && tb.Flags == flags && !tb.dead.Load() {
		return tb
	}
	return nil
}

// Set records tb for its virtual PC.
func (j *JumpCache[Op]) Set(tb *TB[Op]) { j.e[jcIndex(tb.PC)] = tb }

// Flush empties the jump cache.
func (j *JumpCache[Op]) Flush() { clear(j.e[:]) }

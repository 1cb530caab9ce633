package tcg

import (
	"testing"
	"unsafe"

	"gemu/hw/memory"
)

func newRAM(t *testing.T) *memory.RAM {
	t.Helper()
	ram := memory.New()
	if _, err := ram.Add("ram", 0x40000000, 1<<20); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ram.Close() })
	return ram
}

func TestCacheInsertLookup(t *testing.T) {
	c := NewCache[int](newRAM(t))
	k := Key{PC: 0xffff000000001000, Phys: 0x40001000, Flags: 1}
	if c.Lookup(k) != nil {
		t.Fatal("empty cache returned a block")
	}
	tb := c.Insert(k, 0, k.PC+12)
	if got := c.Lookup(k); got != tb {
		t.Fatalf("Lookup = %p, want %p", got, tb)
	}
	if again := c.Insert(k, 0, k.PC+4); again != tb {
		t.Fatal("second Insert for the same key did not return the first block")
	}
	k2 := k
	k2.Flags = 0
	if c.Lookup(k2) != nil {
		t.Fatal("lookup with other mode flags hit")
	}
	if !c.IsCode(0x40001abc) || c.IsCode(0x40002000) {
		t.Fatal("code flag not set exactly on the block's page")
	}
	if c.CodeFlag(0x1000) != nil {
		t.Fatal("code flag for non-RAM address")
	}
}

func TestInvalidatePage(t *testing.T) {
	c := NewCache[int](newRAM(t))
	a := c.Insert(Key{PC: 0x1000, Phys: 0x40001000}, 0, 0x1004)
	b := c.Insert(Key{PC: 0x1800, Phys: 0x40001800}, 0, 0x1804)
	o := c.Insert(Key{PC: 0x2000, Phys: 0x40002000}, 0, 0x2004)
	if !c.InvalidatePage(0x40001ffc) {
		t.Fatal("InvalidatePage reported nothing dropped")
	}
	if a.Valid() || b.Valid() || !o.Valid() {
		t.Fatalf("valid after page invalidation: a=%v b=%v other=%v", a.Valid(), b.Valid(), o.Valid())
	}
	if c.Lookup(a.Key) != nil || c.IsCode(0x40001000) || !c.IsCode(0x40002000) {
		t.Fatal("invalidated page still cached or flagged")
	}
	if c.InvalidatePage(0x40001000) {
		t.Fatal("second invalidation of an empty page reported a drop")
	}
}

func TestInvalidateRange(t *testing.T) {
	c := NewCache[int](newRAM(t))
	a := c.Insert(Key{PC: 0x1000, Phys: 0x40001000}, 0, 0x1010) // [0x000,0x010)
	b := c.Insert(Key{PC: 0x1100, Phys: 0x40001100}, 0, 0x1108) // [0x100,0x108)
	// A store just past a and before b drops neither.
	if c.InvalidateRange(0x40001010, 8) || !a.Valid() || !b.Valid() {
		t.Fatal("store outside every block invalidated something")
	}
	// A store overlapping b's last bytes drops b only; the page stays a code page.
	if !c.InvalidateRange(0x40001104, 8) || !a.Valid() || b.Valid() {
		t.Fatalf("after overlapping store: a=%v b=%v", a.Valid(), b.Valid())
	}
	if !c.IsCode(0x40001000) {
		t.Fatal("page with a live block lost its code flag")
	}
	if !c.InvalidateRange(0x4000100c, 1) || a.Valid() || c.IsCode(0x40001000) {
		t.Fatal("last block not dropped or code flag not cleared")
	}
	if c.Len() != 0 {
		t.Fatalf("Len = %d after dropping everything", c.Len())
	}
}

// A block spanning two pages is found only for the second page it was translated
// with, is dropped by a write to the part of either page it occupies, and leaves
// neither page marked as code once dropped.
func TestSpanningBlock(t *testing.T) {
	c := NewCache[int](newRAM(t))
	k := Key{PC: 0x1ff8, Phys: 0x40001ff8}
	const page2 = 0x40003000 // the next virtual page maps to a non-adjacent physical page
	insert := func() *TB[int] {
		tb := c.InsertSpanning(k, 0, 0x2008, Linkage{}, page2) // [ff8,1000) and [3000,3008)
		if c.InsertSpanning(k, 0, 0x2008, Linkage{}, page2) != tb {
			t.Fatal("a second insert for the same key and second page made another block")
		}
		return tb
	}
	a := insert()
	if c.Len() != 1 || c.Lookup(k) != nil || !c.IsCode(0x40001000) || !c.IsCode(page2) {
		t.Fatalf("Len %d, one-page Lookup %v, code flags %v %v", c.Len(), c.Lookup(k), c.IsCode(0x40001000), c.IsCode(page2))
	}
	at := func(p uint64) func() (uint64, bool) { return func() (uint64, bool) { return p, true } }
	if c.lookupSpanning(k, at(page2+0x123)) != a || c.lookupSpanning(k, at(0x40004000)) != nil {
		t.Fatal("spanning lookup does not check the second page")
	}
	b := c.InsertSpanning(k, 1, 0x2008, Linkage{}, 0x40004000)
	if b == a || c.Len() != 2 || c.lookupSpanning(k, at(0x40004000)) != b {
		t.Fatal("a second mapping of the second page did not get its own block")
	}
	if c.InvalidateRange(page2+8, 8) || c.InvalidateRange(0x40001000-16, 8) || !a.Valid() {
		t.Fatal("a write outside the block's bytes dropped it")
	}
	if !c.InvalidateRange(page2+4, 8) || a.Valid() || !b.Valid() || c.IsCode(page2) || c.Len() != 1 {
		t.Fatal("a write to the block's bytes in its second page did not drop it alone")
	}
	if !c.InvalidatePage(0x40001000) || b.Valid() || c.Len() != 0 || c.IsCode(0x40004000) || len(c.pages) != 0 {
		t.Fatal("invalidating the first page did not drop the block from both pages")
	}
	a = insert()
	if !c.InvalidateRange(0x40001ffc, 1) || a.Valid() || c.IsCode(page2) || len(c.pages) != 0 {
		t.Fatal("a write to the first page did not drop the block from both pages")
	}
}

func TestInvalidateAll(t *testing.T) {
	c := NewCache[int](newRAM(t))
	a := c.Insert(Key{PC: 0x1000, Phys: 0x40001000}, 0, 0x1004)
	c.InvalidateAll()
	if a.Valid() || c.Len() != 0 || c.IsCode(0x40001000) {
		t.Fatal("InvalidateAll left state behind")
	}
}

func TestJumpCache(t *testing.T) {
	c := NewCache[int](newRAM(t))
	var j JumpCache[int]
	tb := c.Insert(Key{PC: 0x1000, Phys: 0x40001000, Flags: 3}, 0, 0x1004)
	j.Set(tb)
	if j.Lookup(0x1000, 3) != tb {
		t.Fatal("jump cache miss after Set")
	}
	if j.Lookup(0x1000, 1) != nil {
		t.Fatal("jump cache hit with other flags")
	}
	if j.Lookup(0x1000+4<<JumpCacheBits, 3) != nil {
		t.Fatal("jump cache hit for an aliasing PC")
	}
	c.InvalidatePage(0x40001000)
	if j.Lookup(0x1000, 3) != nil {
		t.Fatal("jump cache returned an invalidated block")
	}
	j.Set(tb)
	j.Flush()
	if j.Lookup(0x1000, 3) != nil {
		t.Fatal("hit after Flush")
	}
}

func TestTLB(t *testing.T) {
	var tlb TLB
	tlb.Flush()
	page := make([]byte, PageSize)
	host := unsafe.Pointer(&page[0])
	var code uint32
	va := uint64(0xffff800012345000)
	if e := tlb.Entry(va); e.Read == Tag(va, 8) {
		t.Fatal("flushed TLB hit")
	}
	tlb.Fill(va+0x10, 0x40345000, host, &code, true, false, true, 7)
	e := tlb.Entry(va + 0x800)
	if e.Read != Tag(va+0x800, 8) || e.Exec != Tag(va+0x800, 4) {
		t.Fatal("aligned read/exec access missed")
	}
	if e.Write == Tag(va+0x800, 8) {
		t.Fatal("write hit on a read-only page")
	}
	if e.Read == Tag(va+0x801, 2) || e.Read == Tag(va+0x804, 8) {
		t.Fatal("misaligned access hit the fast path")
	}
	if e.Read != Tag(va+0x801, 1) {
		t.Fatal("byte access missed")
	}
	if e.Phys != 0x40345000 || e.Host != host || e.Code != &code || e.Attr != 7 {
		t.Fatal("entry fields not filled")
	}
	if tlb.Entry(va+PageSize<<TLBBits) != e {
		t.Fatal("aliasing page does not share the slot")
	}
	if e.Read == Tag(va+PageSize<<TLBBits, 8) {
		t.Fatal("aliasing page hit")
	}
	tlb.FlushPage(va + PageSize<<TLBBits) // another page in the same slot: no effect
	if e.Read != Tag(va, 8) {
		t.Fatal("FlushPage of another page dropped the entry")
	}
	tlb.FlushPage(va + 0xfff)
	if e.Read == Tag(va, 8) || e.Exec == Tag(va, 4) {
		t.Fatal("FlushPage kept the entry")
	}
	tlb.Fill(va, 0x9000000, nil, nil, true, true, true, 0)
	if e.Read == Tag(va, 1) || e.Write == Tag(va, 1) {
		t.Fatal("MMIO page (no host memory) got a fast-path tag")
	}
}

func TestChaining(t *testing.T) {
	c := NewCache[int](newRAM(t))
	a := c.Insert(Key{PC: 0x1000, Phys: 0x40001000, Flags: 1}, 0, 0x1010)
	fall := c.Insert(Key{PC: 0x1010, Phys: 0x40001010, Flags: 1}, 0, 0x1020)
	taken := c.Insert(Key{PC: 0x1800, Phys: 0x40001800, Flags: 1}, 0, 0x1804)
	far := c.Insert(Key{PC: 0x2000, Phys: 0x40002000, Flags: 1}, 0, 0x2004)
	a.Chain(fall)
	a.Chain(taken)
	a.Chain(far) // other page: not linked
	if a.Next(0x1010, 1) != fall || a.Next(0x1800, 1) != taken {
		t.Fatal("chained successors not returned")
	}
	if a.Next(0x2000, 1) != nil {
		t.Fatal("link across pages")
	}
	if a.Next(0x1800, 0) != nil {
		t.Fatal("link followed with other mode flags")
	}
	if a.Next(0x1900, 1) != nil {
		t.Fatal("taken-branch link followed for another target")
	}
	c.InvalidateRange(0x40001800, 4)
	if a.Next(0x1800, 1) != nil {
		t.Fatal("link to an invalidated block followed")
	}
	if a.Next(0x1010, 1) != fall {
		t.Fatal("unrelated link lost")
	}
}

// Device and host writes through hw/memory reach the cache registered for that RAM:
// they drop the overlapped blocks and clear the page's code flag like a vCPU store.
func TestMemoryWriteInvalidates(t *testing.T) {
	ram := newRAM(t)
	c := NewCache[int](ram)
	a := c.Insert(Key{PC: 0x1000, Phys: 0x40001000}, 0, 0x1010) // [0x000,0x010)
	b := c.Insert(Key{PC: 0x1100, Phys: 0x40001100}, 0, 0x1108) // [0x100,0x108)
	if !ram.IsCode(0x40001000) {
		t.Fatal("Insert did not set memory's code flag")
	}
	if err := ram.Write32(0x40001104, 0); err != nil {
		t.Fatal(err)
	}
	if !a.Valid() || b.Valid() {
		t.Fatalf("after WriteAt over b: a=%v b=%v", a.Valid(), b.Valid())
	}
	s, _ := ram.Slice(0x40001008, 4)
	s[0] = 0
	ram.Written(0x40001008, 4)
	if a.Valid() || ram.IsCode(0x40001000) || c.Len() != 0 {
		t.Fatalf("after Written over a: a=%v IsCode=%v Len=%d", a.Valid(), ram.IsCode(0x40001000), c.Len())
	}
	// A closed cache no longer receives the notification; its successor does.
	c.Close()
	d := NewCache[int](ram)
	e := d.Insert(Key{PC: 0x2000, Phys: 0x40002000}, 0, 0x2004)
	c.Close() // a second Close of the old cache must not unregister the new one
	if err := ram.Write32(0x40002000, 0); err != nil {
		t.Fatal(err)
	}
	if e.Valid() {
		t.Fatal("the new cache's block survived a write to its code")
	}
}

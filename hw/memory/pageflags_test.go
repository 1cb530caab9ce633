package memory

import (
	"slices"
	"sync/atomic"
	"testing"
)

func newTestRAM(t *testing.T) *RAM {
	t.Helper()
	r := New()
	t.Cleanup(func() { r.Close() })
	if _, err := r.Add("low", 0, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Add("high", 1<<30, 1<<20); err != nil {
		t.Fatal(err)
	}
	return r
}

type call struct{ gpa, n uint64 }

func TestPageFlagsAndCodeNotify(t *testing.T) {
	r := newTestRAM(t)
	if r.PageFlags(2<<20) != nil {
		t.Fatal("flag word for an address that is not RAM")
	}
	if f := r.PageFlags(0x1fff); f == nil || f != r.PageFlags(0x1000) || f == r.PageFlags(0x2000) {
		t.Fatal("flag words are not one per 4 KiB page")
	}
	var calls []call
	r.OnCodeWrite(func(gpa, n uint64) { calls = append(calls, call{gpa, n}) })

	// No code page: no call, whatever is written.
	if err := r.WriteAt(make([]byte, 0x3000), 0x800); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 0 {
		t.Fatalf("code-write handler called for pages without code: %v", calls)
	}
	r.SetCode(0x2abc)
	r.SetCode(1<<30 + 0x5000)
	if !r.IsCode(0x2000) || r.IsCode(0x1000) || r.IsCode(0x3000) {
		t.Fatal("SetCode did not mark exactly its page")
	}
	// A write spanning pages 1..3 calls the handler once, for the part in page 2.
	if err := r.WriteAt(make([]byte, 0x1800), 0x1c00); err != nil {
		t.Fatal(err)
	}
	if want := []call{{0x2000, 0x1000}}; !slices.Equal(calls, want) {
		t.Fatalf("WriteAt over a code page: calls %#x, want %#x", calls, want)
	}
	calls = nil
	if err := r.Write32(1<<30+0x5ffe, 7); err != nil { // crosses into page 6
		t.Fatal(err)
	}
	if want := []call{{1<<30 + 0x5ffe, 2}}; !slices.Equal(calls, want) {
		t.Fatalf("Write32 straddling a code page: calls %#x, want %#x", calls, want)
	}
	// Written after a Slice write; the range may run past RAM, which is ignored.
	calls = nil
	b, ok := r.Slice(0x2ff0, 0x10)
	if !ok {
		t.Fatal("Slice failed")
	}
	b[0] = 1
	r.Written(0x2ff0, 1<<21)
	if want := []call{{0x2ff0, 0x10}}; !slices.Equal(calls, want) {
		t.Fatalf("Written: calls %#x, want %#x", calls, want)
	}
	// ClearCode stops the calls; Dirty set on the word does not count as code.
	r.ClearCode(0x2000)
	calls = nil
	if err := r.Write64(0x2000, 1); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 0 || r.IsCode(0x2000) {
		t.Fatalf("after ClearCode: calls %v, IsCode %v", calls, r.IsCode(0x2000))
	}
	if v := atomic.LoadUint32(r.PageFlags(0x2000)); v != PageDirty {
		t.Fatalf("flag word %#x after a write to a cleared code page, want PageDirty only", v)
	}
}

func TestDirtyLog(t *testing.T) {
	r := newTestRAM(t)
	if got := r.DirtyPages(0, ^uint64(0)); len(got) != 0 {
		t.Fatalf("fresh RAM has dirty pages %#x", got)
	}
	if err := r.WriteAt([]byte{1, 2}, 0x1fff); err != nil { // pages 1 and 2
		t.Fatal(err)
	}
	r.Written(1<<30+0x10, 1)
	r.SetCode(0x7000) // code is not dirt
	want := []uint64{0x1000, 0x2000, 1<<30 + 0}
	if got := r.DirtyPages(0, ^uint64(0)); !slices.Equal(got, want) {
		t.Fatalf("DirtyPages = %#x, want %#x", got, want)
	}
	if got := r.DirtyPages(0x2000, 1); !slices.Equal(got, []uint64{0x2000}) {
		t.Fatalf("DirtyPages of one page = %#x", got)
	}
	r.ClearDirty(0x1000, 1) // clears the whole page holding 0x1000
	if got := r.TakeDirty(0, ^uint64(0)); !slices.Equal(got, want[1:]) {
		t.Fatalf("TakeDirty after ClearDirty = %#x, want %#x", got, want[1:])
	}
	if got := r.DirtyPages(0, ^uint64(0)); len(got) != 0 {
		t.Fatalf("dirty pages left after TakeDirty: %#x", got)
	}
	if !r.IsCode(0x7000) {
		t.Fatal("clearing the dirty log cleared a code flag")
	}
}

// Two guests in one process: each RAM calls only its own handler.
func TestCodeNotifyPerRAM(t *testing.T) {
	a, b := newTestRAM(t), newTestRAM(t)
	var na, nb int
	removeA := a.OnCodeWrite(func(gpa, n uint64) { na++ })
	b.OnCodeWrite(func(gpa, n uint64) { nb++ })
	a.SetCode(0x1000)
	b.SetCode(0x1000)
	a.Write16(0x1000, 1)
	if na != 1 || nb != 0 {
		t.Fatalf("write to RAM a: a's handler %d calls, b's %d", na, nb)
	}
	b.Write16(0x1000, 1)
	if na != 1 || nb != 1 {
		t.Fatalf("write to RAM b: a's handler %d calls, b's %d", na, nb)
	}
	removeA()
	a.Write16(0x1000, 1)
	if na != 1 {
		t.Fatal("removed handler still called")
	}
	// A stale remove does not unregister a newer handler.
	var nc int
	removeC := a.OnCodeWrite(func(gpa, n uint64) { nc++ })
	removeA()
	a.Write16(0x1000, 1)
	if nc != 1 {
		t.Fatal("an old handler's remove unregistered the new one")
	}
	removeC()
}

func TestAddRejectsUnalignedBase(t *testing.T) {
	r := New()
	defer r.Close()
	if _, err := r.Add("odd", 0x800, 1<<20); err == nil {
		t.Fatal("slot base not 4 KiB aligned accepted")
	}
}

// TestMigrationDirtyLog: StartDirtyLog arms every page (PageTrack, which sends vCPU stores to
// the slow path) and forgets earlier dirt; a DMA write and MarkDirty set PageDirty and
// disarm the page; SyncDirtyLog takes exactly those pages and re-arms them, so the
// next sync is empty; StopDirtyLog disarms every page.
func TestMigrationDirtyLog(t *testing.T) {
	r := newTestRAM(t)
	low := r.Slots()[0]
	if err := r.Write32(0x3000, 1); err != nil { // dirt from before the log
		t.Fatal(err)
	}
	r.StartDirtyLog()
	for _, gpa := range []uint64{0, 0x3000, 0xff000} {
		if v := atomic.LoadUint32(r.PageFlags(gpa)); v&StoreSlow == 0 || v&PageDirty != 0 {
			t.Fatalf("page %#x after StartDirtyLog: flags %#x", gpa, v)
		}
	}
	if err := r.WriteAt(make([]byte, 0x1001), 0x5fff); err != nil { // pages 5 and 6
		t.Fatal(err)
	}
	MarkDirty(r.PageFlags(0x9000)) // a vCPU store's slow path
	if v := atomic.LoadUint32(r.PageFlags(0x9000)); v&StoreSlow != 0 || v&PageDirty == 0 {
		t.Fatalf("page after MarkDirty: flags %#x", v)
	}
	sync := func() []uint64 {
		bm := make([]uint64, len(low.Mem)/PageSize/64)
		n := low.SyncDirtyLog(bm)
		var out []uint64
		for i := range len(low.Mem) / PageSize {
			if bm[i/64]>>(i%64)&1 != 0 {
				out = append(out, uint64(i)*PageSize)
			}
		}
		if n != len(out) {
			t.Fatalf("SyncDirtyLog counted %d pages, set %d bits", n, len(out))
		}
		return out
	}
	if got, want := sync(), []uint64{0x5000, 0x6000, 0x9000}; !slices.Equal(got, want) {
		t.Fatalf("first sync: %#x, want %#x", got, want)
	}
	if v := atomic.LoadUint32(r.PageFlags(0x9000)); v&PageTrack == 0 || v&PageDirty != 0 {
		t.Fatalf("page after sync: flags %#x, want re-armed", v)
	}
	if got := sync(); len(got) != 0 {
		t.Fatalf("second sync with no writes: %#x", got)
	}
	r.StopDirtyLog()
	if v := atomic.LoadUint32(r.PageFlags(0x9000)); v&StoreSlow != 0 {
		t.Fatalf("page after StopDirtyLog: flags %#x", v)
	}
}

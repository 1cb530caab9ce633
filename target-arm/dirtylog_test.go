package arm

import (
	"slices"
	"sync"
	"testing"
	"time"

	"gemu/hw/memory"
	"gemu/tcg"
)

// TestDirtyLogStores runs a loop storing (STR, STRB, STP) to one page after another
// with the migration dirty log on. At each HVC the handler takes the log
// (SyncDirtyLog) and starts the next round: the pages the round stored to, and only
// they, must be dirty. The second round rewrites pages the first dirtied: after the
// sync re-armed them, the TLB entries the first round's slow paths installed must not
// let a store bypass the log (memory.PageTrack in the flag word sends it to the slow
// path again). The third round runs with the log stopped and must log nothing.
func TestDirtyLogStores(t *testing.T) {
	const base, data = 0x4000_0000, 0x4001_0000
	ram := memory.New()
	defer ram.Close()
	if _, err := ram.Add("ram", base, 1<<20); err != nil {
		t.Fatal(err)
	}
	prog := []uint32{
		0xf9000041, // str x1, [x2]
		0x39002041, // strb w1, [x2, #8]
		0xa9010441, // stp x1, x1, [x2, #16]
		0x91400442, // add x2, x2, #1, lsl #12
		0xf1000463, // subs x3, x3, #1
		0x54ffff61, // b.ne base
		0xd4000002, // hvc #0
		0x17fffff9, // b base
	}
	for i, w := range prog {
		if err := ram.Write32(base+4*uint64(i), w); err != nil {
			t.Fatal(err)
		}
	}
	slot := ram.Slots()[0]
	pages := func() []uint64 {
		bm := make([]uint64, len(slot.Mem)/memory.PageSize/64)
		n := slot.SyncDirtyLog(bm)
		var out []uint64
		for i := range len(slot.Mem) / memory.PageSize {
			if bm[i/64]&(1<<(i%64)) != 0 {
				out = append(out, base+uint64(i)*memory.PageSize)
			}
		}
		if n != len(out) {
			t.Errorf("SyncDirtyLog returned %d, its bitmap holds %d pages", n, len(out))
		}
		return out
	}
	span := func(first, n int) []uint64 {
		var out []uint64
		for i := range n {
			out = append(out, data+uint64(first+i)*memory.PageSize)
		}
		return out
	}
	rounds := []struct{ first, n int }{{0, 16}, {8, 4}, {0, 16}}
	var got [][]uint64
	stop := make(chan struct{})
	var once sync.Once
	hvc := func(c *CPU) {
		if len(got) == len(rounds) {
			return
		}
		got = append(got, pages())
		if len(got) == len(rounds)-1 {
			ram.StopDirtyLog()
		}
		if len(got) == len(rounds) {
			once.Do(func() { close(stop) })
			return
		}
		r := rounds[len(got)]
		c.SetX(2, data+uint64(r.first)*memory.PageSize)
		c.SetX(3, uint64(r.n))
	}
	cpu := New(Config{ID: 0, RAM: ram, HVC: hvc})
	defer cpu.Close()
	cpu.Reset(base, 0) // Start would reset the registers when Run begins
	cpu.SetX(1, 0x1234)
	cpu.SetX(2, data)
	cpu.SetX(3, uint64(rounds[0].n))
	ram.StartDirtyLog()
	done := make(chan error, 1)
	go func() { done <- cpu.Run(stop) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		once.Do(func() { close(stop) })
		<-done
		t.Fatalf("the guest did not finish its rounds; logs so far: %#x", got)
	}
	want := [][]uint64{span(0, 16), span(8, 4), nil}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("round %d (%s backend): dirty pages %#x, want %#x", i+1, tcg.SelectedBackend(), got[i], want[i])
		}
	}
	if v, _ := ram.Read64(data + 15*memory.PageSize + 16); v != 0x1234 {
		t.Errorf("the stores did not land: %#x", v)
	}
}

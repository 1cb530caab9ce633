package virt

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gemu/hw/vmstate"
)

// TestSaveLiveLoadFile: a counting guest migrates live into a file (the count page is
// dirtied all along, so the passes run while it counts; Stop pauses it), and boards
// built for -incoming (nothing loaded) restore it from the file, mapped lazily and
// copied, and count on from the saved value.
func TestSaveLiveLoadFile(t *testing.T) {
	cfg := Config{RAMSize: 64 << 20, SMP: 1, GICVersion: 3, Kernel: counterKernel(t)}
	a := start(t, cfg, false)
	a.waitAbove(t, 100000)
	p := filepath.Join(t.TempDir(), "vm.state")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	var progress []vmstate.Progress
	stopped := false
	st, down, err := a.m.SaveLive(f, vmstate.LiveParams{DowntimeLimit: 50 * time.Millisecond, ThrottleTrigger: 50,
		Stop: func() error { stopped = true; return a.m.Pause() }, Progress: func(p vmstate.Progress) { progress = append(progress, p) }})
	f.Close()
	if err != nil || !stopped || len(progress) < 3 || progress[len(progress)-1].Syncs < 2 || st.Pages == 0 {
		t.Fatalf("SaveLive: %v, stopped %v, stats %+v, progress %+v", err, stopped, st, progress)
	}
	saved := a.count(t)
	entry := a.m.entry
	a.stop(t)
	t.Logf("live save: %d syncs, %d pages, downtime %v", progress[len(progress)-1].Syncs, st.Pages, down)

	in := cfg
	in.Incoming = true
	for _, lazy := range []bool{true, false} {
		b := start(t, in, true)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		ls, err := b.m.LoadFile(f, lazy)
		f.Close()
		if err != nil || (ls.Mapped > 0) != lazy {
			t.Fatalf("LoadFile(lazy %v): %v, stats %+v", lazy, err, ls)
		}
		read := func() uint64 {
			var c [8]byte
			if err := b.m.ReadPhys(entry+0x1000, c[:]); err != nil {
				t.Fatal(err)
			}
			return binary.LittleEndian.Uint64(c[:])
		}
		if n := read(); n != saved {
			t.Fatalf("lazy %v: restored count %d, saved %d", lazy, n, saved)
		}
		b.m.Resume()
		deadline := time.Now().Add(time.Minute)
		for read() <= saved+10000 {
			if time.Now().After(deadline) {
				t.Fatalf("lazy %v: the restored guest does not count on", lazy)
			}
			time.Sleep(time.Millisecond)
		}
		b.stop(t)
	}
	// A board of another configuration refuses the file naming the difference.
	other := in
	other.SMP = 2
	c := start(t, other, true)
	defer c.stop(t)
	f, _ = os.Open(p)
	defer f.Close()
	if _, err := c.m.LoadFile(f, true); err == nil || !strings.Contains(err.Error(), "smp=1, this one smp=2") {
		t.Fatalf("restore into -smp 2: %v", err)
	}
}

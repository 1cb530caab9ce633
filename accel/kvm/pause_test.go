package kvm

import (
	"encoding/binary"
	"testing"
	"time"

	"gemu/accel"
)

// TestPauseResume: a vCPU counting in guest memory without ever exiting stops counting
// while paused and counts again after Resume; Pause before Run keeps the guest from
// executing its first instruction (QEMU's -S); the second vCPU, waiting for SIPI inside
// KVM_RUN, is kicked out and parked too; Stop ends a paused run.
func TestPauseResume(t *testing.T) {
	g := newGuest(t, 2)
	a := newAsm().
		label("loop").
		op(0x66, 0xff, 0x06, 0x00, 0x20). // inc dword [0x2000]
		jcc(0xeb, "loop")
	g.realMode(a.bytes())
	counter := func() uint32 {
		var b [4]byte
		g.ram.ReadAt(b[:], 0x2000)
		return binary.LittleEndian.Uint32(b[:])
	}
	if err := g.vm.Pause(); err != nil {
		t.Fatal(err)
	}
	type result struct {
		r   accel.ExitReason
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := g.vm.Run(g.mmio, g.pio)
		ch <- result{r, err}
	}()
	time.Sleep(200 * time.Millisecond)
	if n := counter(); n != 0 {
		t.Fatalf("paused before Run, the guest counted to %d", n)
	}
	g.vm.Resume()
	waitCount := func(above uint32) uint32 {
		deadline := time.Now().Add(time.Minute)
		for {
			if n := counter(); n > above {
				return n
			}
			if time.Now().After(deadline) {
				t.Fatalf("guest did not count past %d", above)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitCount(1000)
	for range 3 {
		if err := g.vm.Pause(); err != nil {
			t.Fatal(err)
		}
		c1 := counter()
		time.Sleep(100 * time.Millisecond)
		if c2 := counter(); c2 != c1 {
			t.Fatalf("guest counted from %d to %d while paused", c1, c2)
		}
		if tids := g.vm.VCPUThreads(); tids[0] == 0 || tids[1] == 0 {
			t.Errorf("paused vCPU threads %v: want both alive", tids)
		}
		g.vm.Resume()
		waitCount(c1 + 1000)
	}
	if err := g.vm.Pause(); err != nil {
		t.Fatal(err)
	}
	g.vm.Stop(accel.Stopped)
	select {
	case res := <-ch:
		if res.r != accel.Stopped || res.err != nil {
			t.Fatalf("Run = %v, %v; want stopped", res.r, res.err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Stop did not end a paused Run")
	}
}

package arm

import (
	"encoding/binary"
	"testing"
	"time"

	"gemu/hw/memory"
)

// TestParkUnpark: a vCPU storing a counter in a tight loop stops at a block boundary
// when parked (the counter holds still), runs on after Unpark, parks before its first
// instruction when parked before Run, and a parked vCPU's Run returns when stop
// closes. PauseClock freezes the generic-timer counter.
func TestParkUnpark(t *testing.T) {
	ram := memory.New()
	defer ram.Close()
	const base = 0x4000_0000
	if _, err := ram.Add("ram", base, 1<<20); err != nil {
		t.Fatal(err)
	}
	code := make([]byte, 0, 12)
	for _, w := range []uint32{0x91000421, 0xf9000041, 0x17fffffe} { // add x1,x1,#1; str x1,[x2]; b .-8
		code = binary.LittleEndian.AppendUint32(code, w)
	}
	if err := ram.WriteAt(code, base); err != nil {
		t.Fatal(err)
	}
	c := New(Config{ID: 0, RAM: ram})
	defer c.Close()
	c.Reset(base, 0)
	c.SetX(2, base+0x1000)
	count := func() uint64 {
		var b [8]byte
		ram.ReadAt(b[:], base+0x1000)
		return binary.LittleEndian.Uint64(b[:])
	}
	c.Park() // before Run: QEMU's -S
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- c.Run(stop) }()
	if !c.WaitParked(10 * time.Second) {
		t.Fatal("vCPU did not park")
	}
	time.Sleep(50 * time.Millisecond)
	if n := count(); n != 0 {
		t.Fatalf("parked before Run, the vCPU counted to %d", n)
	}
	wait := func(above uint64) {
		deadline := time.Now().Add(time.Minute)
		for count() <= above {
			if time.Now().After(deadline) {
				t.Fatalf("vCPU did not count past %d", above)
			}
			time.Sleep(time.Millisecond)
		}
	}
	c.Unpark()
	wait(1000)
	for range 3 {
		c.Park()
		if !c.WaitParked(10 * time.Second) {
			t.Fatal("running vCPU did not park")
		}
		n1 := count()
		c.PauseClock()
		t1 := c.counter()
		time.Sleep(50 * time.Millisecond)
		if n2 := count(); n2 != n1 {
			t.Fatalf("vCPU counted %d → %d while parked", n1, n2)
		}
		if t2 := c.counter(); t2 != t1 {
			t.Fatalf("generic timer ran %d ticks while paused", t2-t1)
		}
		c.ResumeClock()
		c.Unpark()
		wait(n1 + 1000)
	}
	c.Park()
	c.WaitParked(10 * time.Second)
	close(stop)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a parked vCPU's Run did not return on stop")
	}
}

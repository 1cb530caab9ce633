package pcirq

import (
	"encoding/binary"
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/timer"
)

type rig struct {
	clk        *timer.Fake
	c          *Chipset
	pit        *timer.PIT
	hpet       *timer.HPET
	mmio, pio  *bus.Bus
	stateful   []bus.Stateful
	irq0Rising int
}

func newRig(t *testing.T, advance time.Duration) *rig {
	r := &rig{clk: timer.NewFake()}
	r.clk.Advance(advance) // clocks of two processes disagree
	r.c = New(2, 0, r.clk)
	r.mmio, r.pio = bus.New(), bus.New()
	if err := r.c.Map(r.mmio, r.pio); err != nil {
		t.Fatal(err)
	}
	r.hpet = timer.NewHPET(r.clk, func(g int) bus.IRQ { return r.c.IRQ(uint32(g)) })
	r.pit = timer.NewPIT(r.clk, r.hpet.PITInput())
	r.pio.Insert(r.pit, "pit", timer.PITPort, 4)
	r.mmio.Insert(r.hpet, "hpet", timer.HPETBase, timer.HPETSize)
	r.stateful = []bus.Stateful{r.c.APIC, r.c.IOAPIC, r.c.PIC, r.pit, r.hpet}
	return r
}

func (r *rig) w32(cpu int, a uint64, v uint32) {
	r.mmio.Write(bus.CPUAccess(cpu), a, binary.LittleEndian.AppendUint32(nil, v))
}

func (r *rig) r32(cpu int, a uint64) uint32 {
	b := make([]byte, 4)
	r.mmio.Read(bus.CPUAccess(cpu), a, b)
	return binary.LittleEndian.Uint32(b)
}

func (r *rig) outb(p uint64, v byte) { r.pio.Write(bus.CPUAccess(0), p, []byte{v}) }
func (r *rig) inb(p uint64) byte {
	b := []byte{0}
	r.pio.Read(bus.CPUAccess(0), p, b)
	return b[0]
}

// snapshot reads back registers a guest can see (without side effects that matter).
func (r *rig) snapshot() []uint32 {
	var v []uint32
	for cpu := 0; cpu < 2; cpu++ {
		for off := uint64(0x20); off <= 0x3e0; off += 0x10 {
			v = append(v, r.r32(cpu, 0xfee00000+off))
		}
	}
	for i := uint32(0); i < 0x40; i++ {
		r.w32(0, 0xfec00000, i)
		v = append(v, r.r32(0, 0xfec00010))
	}
	for _, off := range []uint64{0, 0x10, 0x20, 0xf0, 0x100, 0x108, 0x120, 0x128, 0x140, 0x148} {
		v = append(v, r.r32(0, timer.HPETBase+off))
	}
	r.outb(0x20, 0x0a)
	v = append(v, uint32(r.inb(0x20)), uint32(r.inb(0x21)), uint32(r.inb(0xa1)), uint32(r.inb(0x4d0)), uint32(r.inb(0x4d1)))
	r.outb(0x43, 0xc2) // latch ch0 count and status
	v = append(v, uint32(r.inb(0x40)), uint32(r.inb(0x40)), uint32(r.inb(0x40)))
	return v
}

// TestStateRoundTrip programs the chipset and timers, saves them, loads them into a
// second machine whose clock reads a different time, and checks that the guest sees
// the same registers and that the timers expire after the same remaining time.
func TestStateRoundTrip(t *testing.T) {
	a := newRig(t, 0)
	for cpu := 0; cpu < 2; cpu++ {
		a.w32(cpu, 0xfee000f0, 0x1ff)
	}
	a.w32(1, 0xfee00080, 0x20)
	a.w32(0, 0xfee003e0, 0x3)
	a.w32(0, 0xfee00320, 0xe1)
	a.w32(0, 0xfee00380, 100000) // one-shot: 1.6 ms at divide 16
	a.w32(1, 0xfee00300, 1<<18|0x77)
	a.w32(0, 0xfec00000, 0x10+2*2)
	a.w32(0, 0xfec00010, 0x42)
	a.w32(0, 0xfec00000, 0x10+2*7)
	a.w32(0, 0xfec00010, 1<<15|0x47)
	a.c.SetGSI(7, true)
	a.outb(0x20, 0x11)
	a.outb(0x21, 0x20)
	a.outb(0x21, 0x04)
	a.outb(0x21, 0x01)
	a.outb(0x21, 0xfa)
	a.outb(0x4d1, 0x02)
	a.outb(0x43, 0x34)
	a.outb(0x40, 0x9b)
	a.outb(0x40, 0x2e) // 11931: 10 ms period
	a.w32(0, timer.HPETBase+0x140, 2<<9|1<<2|1<<1)
	a.w32(0, timer.HPETBase+0x148, 300000) // 3 ms from counter 0
	a.w32(0, timer.HPETBase+0x14c, 0)
	a.w32(0, timer.HPETBase+0x10, 1)
	a.clk.Advance(700 * time.Microsecond)

	var states []bus.State
	for _, s := range a.stateful {
		st, err := s.SaveState()
		if err != nil {
			t.Fatal(err)
		}
		states = append(states, st)
	}
	before := a.snapshot()

	b := newRig(t, 5*time.Second)
	for i, s := range b.stateful {
		if err := s.LoadState(states[i]); err != nil {
			t.Fatal(err)
		}
	}
	after := b.snapshot()
	if len(before) != len(after) {
		t.Fatal("snapshot lengths")
	}
	for i := range before {
		if before[i] != after[i] {
			t.Errorf("register %d: %#x before save, %#x after load", i, before[i], after[i])
		}
	}
	// The APIC timer had 1.6 ms - 0.7 ms left; the HPET 3 ms - 0.7 ms.
	b.clk.Advance(900*time.Microsecond - time.Microsecond)
	if b.c.APIC.CPU(0).HighestPending() == 0xe1 {
		t.Fatal("APIC timer fired early after restore")
	}
	b.clk.Advance(time.Microsecond)
	if b.c.APIC.CPU(0).HighestPending() != 0xe1 {
		t.Fatal("APIC timer did not fire at its remaining time after restore")
	}
	if b.r32(0, timer.HPETBase+0x20)&4 != 0 {
		t.Fatal("HPET fired early")
	}
	b.clk.Advance(1400 * time.Microsecond)
	if b.r32(0, timer.HPETBase+0x20)&4 == 0 {
		t.Fatal("HPET timer 2 did not fire at its remaining time after restore")
	}
	a.pit.Stop()
	b.pit.Stop()

	// Hostile records: every truncation and a wrong name fail cleanly.
	for i, st := range states {
		for n := 0; n < len(st.Data); n++ {
			bad := st
			bad.Data = st.Data[:n]
			if err := b.stateful[i].LoadState(bad); err == nil {
				t.Fatalf("%s: a %d-byte record of %d loaded", st.Name, n, len(st.Data))
			}
		}
		bad := st
		bad.Name = "x"
		if b.stateful[i].LoadState(bad) == nil {
			t.Fatalf("%s: wrong name accepted", st.Name)
		}
	}
	b.pit.Stop()
}

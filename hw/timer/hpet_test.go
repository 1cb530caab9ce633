package timer

import (
	"encoding/binary"
	"testing"
	"time"

	"gemu/hw/bus"
)

type hpetRig struct {
	t     *testing.T
	clk   *Fake
	h     *HPET
	lines map[int]*edges
}

func newHPET(t *testing.T) *hpetRig {
	r := &hpetRig{t: t, clk: NewFake(), lines: map[int]*edges{}}
	r.h = NewHPET(r.clk, func(gsi int) bus.IRQ {
		if r.lines[gsi] == nil {
			r.lines[gsi] = &edges{clk: r.clk}
		}
		return r.lines[gsi]
	})
	return r
}

func (r *hpetRig) line(gsi int) *edges {
	r.h.irq(gsi)
	return r.lines[gsi]
}

func (r *hpetRig) readl(off uint64) uint32 {
	b := make([]byte, 4)
	r.h.Read(bus.CPUAccess(0), off, b)
	return binary.LittleEndian.Uint32(b)
}

func (r *hpetRig) readq(off uint64) uint64 {
	b := make([]byte, 8)
	r.h.Read(bus.CPUAccess(0), off, b)
	return binary.LittleEndian.Uint64(b)
}

func (r *hpetRig) writel(off uint64, v uint32) {
	r.h.Write(bus.CPUAccess(0), off, binary.LittleEndian.AppendUint32(nil, v))
}

func (r *hpetRig) writeq(off uint64, v uint64) {
	r.h.Write(bus.CPUAccess(0), off, binary.LittleEndian.AppendUint64(nil, v))
}

func TestHPETIdentification(t *testing.T) {
	r := newHPET(t)
	// QEMU pc: vendor 0x8086, legacy-capable, 64-bit, 3 timers, 10 ns.
	if v := r.readl(0); v != 0x8086a201 {
		t.Errorf("GCAP_ID low %#x", v)
	}
	if v := r.readl(4); v != 10_000_000 {
		t.Errorf("period %d fs", v)
	}
	for n := uint64(0); n < 3; n++ {
		if v := r.readq(0x100 + 0x20*n); v != 0x4_00000030 {
			t.Errorf("timer %d config %#x, want 0x400000030", n, v)
		}
		if v := r.readq(0x108 + 0x20*n); v != ^uint64(0) {
			t.Errorf("timer %d comparator %#x", n, v)
		}
	}
}

func TestHPETCounter(t *testing.T) {
	r := newHPET(t)
	r.clk.Advance(time.Millisecond)
	if r.readq(0xf0) != 0 {
		t.Fatal("counter runs while halted")
	}
	r.writeq(0xf0, 5000)
	r.writel(0x10, 1)
	r.clk.Advance(time.Microsecond)
	if v := r.readq(0xf0); v != 5100 {
		t.Fatalf("counter %d after 1 µs from 5000, want 5100", v)
	}
	r.writel(0xf0, 0) // ignored while running
	r.writel(0x10, 0)
	r.clk.Advance(time.Millisecond)
	if v := r.readl(0xf0); v != 5100 {
		t.Fatalf("halted counter %d", v)
	}
}

func TestHPETOneShotAndLevel(t *testing.T) {
	r := newHPET(t)
	l2 := r.line(2)
	r.writel(0x140, 2<<9|tnIntEn) // timer 2, GSI 2, edge
	r.writeq(0x148, 1000)
	r.writel(0x10, 1)
	r.clk.Advance(10*time.Microsecond - 1)
	if len(l2.rises) != 0 {
		t.Fatal("fired early")
	}
	r.clk.Advance(1)
	if len(l2.rises) != 1 || l2.rises[0] != 10*time.Microsecond || l2.level {
		t.Fatalf("edge pulse: rises %v level %v", l2.rises, l2.level)
	}
	if r.readl(0x20) != 0 {
		t.Fatal("edge mode set ISR")
	}
	// Level: ISR and the line stay until the guest writes 1 to the ISR bit.
	r.writel(0x140, 2<<9|tnIntEn|tnLevel)
	r.writeq(0x148, 2000)
	r.clk.Advance(10 * time.Microsecond)
	if r.readl(0x20) != 4 || !l2.level {
		t.Fatalf("level: ISR %#x line %v", r.readl(0x20), l2.level)
	}
	r.writel(0x20, 1) // another bit: no effect
	if !l2.level {
		t.Fatal("ISR write of another bit lowered the line")
	}
	r.writel(0x20, 4)
	if r.readl(0x20) != 0 || l2.level {
		t.Fatal("ISR write-1-to-clear")
	}
}

// TestHPETLegacyPeriodic is Linux's hpet_set_periodic on timer 0 with legacy
// replacement: the interrupt goes to IRQ 0 and the PIT's output is cut off.
func TestHPETLegacyPeriodic(t *testing.T) {
	r := newHPET(t)
	l0, l2 := r.line(0), r.line(2)
	pit := r.h.PITInput()
	pit.Set(true)
	if !l0.level {
		t.Fatal("PIT output not forwarded outside legacy mode")
	}
	pit.Set(false)
	r.writel(0x10, 3) // enable + legacy
	l0.rises = nil
	pit.Set(true)
	if l0.level {
		t.Fatal("PIT output reached IRQ0 in legacy mode")
	}
	const period = 100_000 // 1 ms
	now := r.readl(0xf0)
	r.writel(0x100, tnIntEn|tnPeriodic|tnSetVal|tn32Bit)
	r.writel(0x108, now+period)
	r.writel(0x108, period)
	r.clk.Advance(10*time.Millisecond + time.Microsecond)
	if len(l0.rises) != 10 {
		t.Fatalf("%d IRQ0 edges in 10 ms", len(l0.rises))
	}
	for i, at := range l0.rises {
		if want := time.Duration(i+1) * time.Millisecond; at != want {
			t.Errorf("edge %d at %v, want %v", i, at, want)
		}
	}
	if len(l2.rises) != 0 {
		t.Fatal("legacy timer 0 also raised its route GSI 2")
	}
	if c := r.readl(0x108); c != now+11*period {
		t.Errorf("comparator %d, want %d (advanced by the period)", c, now+11*period)
	}
	r.writel(0x10, 1) // legacy off: the PIT is back
	if !l0.level {
		t.Fatal("leaving legacy mode did not restore the PIT's level")
	}
}

// TestHPETShortPeriodCoalesces: a 1-tick (10 ns) periodic timer fires once per
// MinPeriod, and its comparator still advances by whole periods past the counter.
func TestHPETShortPeriodCoalesces(t *testing.T) {
	r := newHPET(t)
	l2 := r.line(2)
	r.writel(0x100, 2<<9|tnIntEn|tnPeriodic|tnSetVal)
	r.writel(0x108, 1)
	r.writel(0x108, 1)
	r.writel(0x10, 1)
	r.clk.Advance(10 * time.Millisecond)
	if n := len(l2.rises); n < 49 || n > 51 {
		t.Fatalf("%d interrupts in 10 ms for a 10 ns period, want about 50", n)
	}
	if cmp, cnt := r.readq(0x108), r.readq(0xf0); cmp <= cnt-uint64(MinPeriod/hpetTick) || cmp > cnt+1 {
		t.Fatalf("comparator %d not just past the counter %d", cmp, cnt)
	}
}

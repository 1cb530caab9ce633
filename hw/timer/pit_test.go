package timer

import (
	"testing"
	"time"

	"gemu/hw/bus"
)

type edges struct {
	level bool
	rises []time.Duration
	clk   Clock
}

func (e *edges) Set(l bool) {
	if l && !e.level {
		e.rises = append(e.rises, e.clk.Now())
	}
	e.level = l
}

type pitRig struct {
	t   *testing.T
	clk *Fake
	p   *PIT
	irq *edges
	pio *bus.Bus
}

func newPIT(t *testing.T) *pitRig {
	clk := NewFake()
	irq := &edges{clk: clk}
	p := NewPIT(clk, irq)
	pio := bus.New()
	pio.Insert(p, "pit", PITPort, 4)
	pio.Insert(p.Speaker(), "speaker", SpeakerPort, 1)
	return &pitRig{t, clk, p, irq, pio}
}

func (r *pitRig) out(port uint64, v uint8) { r.pio.Write(bus.CPUAccess(0), port, []byte{v}) }
func (r *pitRig) in(port uint64) uint8 {
	b := []byte{0}
	r.pio.Read(bus.CPUAccess(0), port, b)
	return b[0]
}

func (r *pitRig) read16(ch uint64) uint16 {
	lo := r.in(PITPort + ch)
	return uint16(lo) | uint16(r.in(PITPort+ch))<<8
}

func TestPITMode2Periodic(t *testing.T) {
	r := newPIT(t)
	// Linux's setup_pit_timer: channel 0, lobyte/hibyte, mode 2, LATCH = 1193 (1 kHz... HZ=1000).
	r.out(0x43, 0x34)
	r.out(0x40, 1193&0xff)
	r.out(0x40, 1193>>8)
	r.irq.rises = nil
	r.clk.Advance(10*time.Millisecond + 100*time.Microsecond)
	if n := len(r.irq.rises); n != 10 {
		t.Fatalf("%d IRQ0 edges in 10.1 ms at 1193 counts, want 10", n)
	}
	for i, at := range r.irq.rises {
		want := ticksToTime(uint64(1193 * (i + 1)))
		if d := at - want; d < 0 || d > time.Microsecond {
			t.Errorf("edge %d at %v, want %v (µs accuracy)", i, at, want)
		}
	}
}

func TestPITLatchAndCount(t *testing.T) {
	r := newPIT(t)
	r.out(0x43, 0x34)
	r.out(0x40, 0x00)
	r.out(0x40, 0x10)               // 0x1000
	r.clk.Advance(time.Millisecond) // 1193 ticks
	r.out(0x43, 0x00)               // latch channel 0
	r.clk.Advance(time.Millisecond)
	if v := r.read16(0); v != 0x1000-1193 {
		t.Fatalf("latched count %d, want %d", v, 0x1000-1193)
	}
	// Unlatched read follows the clock: 2386 ticks since load.
	if v := r.read16(0); v != 0x1000-2386 {
		t.Fatalf("live count %d, want %d", v, 0x1000-2386)
	}
	// LSB-only access mode on channel 1.
	r.out(0x43, 0x54) // ch1, LSB, mode 2
	r.out(0x41, 200)
	r.clk.Advance(ticksToTime(50))
	if v := r.in(0x41); v != 150 {
		t.Fatalf("LSB-only count %d, want 150", v)
	}
	// Mode 3 counts down by two.
	r.out(0x43, 0xb6) // ch2, word, mode 3
	r.out(0x42, 100)
	r.out(0x42, 0)
	r.out(0x61, 1) // gate high: restart
	r.clk.Advance(ticksToTime(10))
	if v := r.read16(2); v != 80 {
		t.Fatalf("mode 3 count %d after 10 ticks, want 80", v)
	}
}

func TestPITReadBack(t *testing.T) {
	r := newPIT(t)
	r.out(0x43, 0x30) // ch0 word mode 0
	r.out(0x40, 100)
	r.out(0x40, 0)
	r.irq.rises = nil
	if r.irq.level {
		t.Fatal("mode 0 OUT high after the count load")
	}
	r.out(0x43, 0xe2) // read-back: status only (count bit 5 set = don't latch count), ch0
	if s := r.in(0x40); s != 0x30 {
		t.Fatalf("status %#x, want out=0 rw=3 mode=0 (0x30)", s)
	}
	r.clk.Advance(ticksToTime(100))
	r.out(0x43, 0xc2) // latch count and status
	if s := r.in(0x40); s != 0xb0 {
		t.Fatalf("status after terminal count %#x, want 0xb0", s)
	}
	if v := r.read16(0); v != 0 {
		t.Fatalf("latched count %#x", v)
	}
	if len(r.irq.rises) != 1 {
		t.Fatalf("mode 0 raised IRQ0 %d times", len(r.irq.rises))
	}
	r.clk.Advance(time.Second)
	if len(r.irq.rises) != 1 || r.clk.Pending() != 0 {
		t.Fatal("mode 0 must fire once and arm nothing afterwards")
	}
}

func TestPITBCD(t *testing.T) {
	r := newPIT(t)
	r.out(0x43, 0x35) // ch0 word mode 2 BCD
	r.out(0x40, 0x00)
	r.out(0x40, 0x10) // 1000 decimal
	r.clk.Advance(ticksToTime(100))
	if v := r.read16(0); v != 0x0900 {
		t.Fatalf("BCD count %#x, want 0x0900", v)
	}
	r.irq.rises = nil
	r.clk.Advance(ticksToTime(900 + 1000*2))
	if len(r.irq.rises) != 3 {
		t.Fatalf("BCD 1000 period: %d edges over 3000 ticks", len(r.irq.rises))
	}
}

// TestSpeakerPortCalibration is Linux's pit_calibrate_tsc / PIT hpet check pattern:
// gate channel 2 through port 0x61, mode 0, wait for bit 5.
func TestSpeakerPortCalibration(t *testing.T) {
	r := newPIT(t)
	if v := r.in(0x61); v&1 != 0 {
		t.Fatalf("port 0x61 = %#x: channel 2 gate must start low", v)
	}
	a, b := r.in(0x61), r.in(0x61)
	if (a^b)&0x10 == 0 {
		t.Error("refresh bit 4 does not toggle")
	}
	r.out(0x61, (r.in(0x61)&^0x02)|0x01)
	r.out(0x43, 0xb0) // ch2, word, mode 0
	r.out(0x42, 0x2e)
	r.out(0x42, 0x9b) // 0x9b2e = 39726 ticks ≈ 33.3 ms
	if r.in(0x61)&0x20 != 0 {
		t.Fatal("OUT2 high right after the count load")
	}
	r.clk.Advance(ticksToTime(39725))
	if r.in(0x61)&0x20 != 0 {
		t.Fatal("OUT2 high before terminal count")
	}
	r.clk.Advance(ticksToTime(1))
	if v := r.in(0x61); v&0x20 == 0 || v&1 == 0 {
		t.Fatalf("port 0x61 = %#x at terminal count", v)
	}
	r.out(0x61, 0x03)
	if r.in(0x61)&0x03 != 0x03 {
		t.Fatal("speaker data bit")
	}
}

// TestPITShortPeriodCoalesces: a guest-chosen count of 2 (600k interrupts a second)
// costs one callback per MinPeriod, each pulsing IRQ0 once.
func TestPITShortPeriodCoalesces(t *testing.T) {
	r := newPIT(t)
	r.out(0x43, 0x34)
	r.out(0x40, 2)
	r.out(0x40, 0)
	r.irq.rises = nil
	r.clk.Advance(10 * time.Millisecond)
	if n := len(r.irq.rises); n < 49 || n > 51 {
		t.Fatalf("%d IRQ0 edges in 10 ms with count 2, want about 50 (one per %v)", n, MinPeriod)
	}
	// Back to a normal period: exact edges again.
	r.out(0x40, 1193&0xff)
	r.out(0x40, 1193>>8)
	r.irq.rises = nil
	r.clk.Advance(10*time.Millisecond + time.Microsecond)
	if n := len(r.irq.rises); n != 10 {
		t.Fatalf("%d edges at 1 kHz after a short period", n)
	}
}

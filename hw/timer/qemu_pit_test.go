package timer

import (
	"fmt"
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/internal/pcoracle"
)

// TestQEMUDifferentialPIT compares the 8254 and port 0x61 with QEMU's pc (userspace
// on TCG). Counts move with real time in QEMU, so only bits that cannot change while
// the script runs are compared (the high byte of a fresh count), and OUT only where
// this model and QEMU agree: QEMU draws OUT inverted in modes 1, 2, 4 and 5 (and
// relies on clock rounding for mode 2's pulse); this model follows the data sheet.
func TestQEMUDifferentialPIT(t *testing.T) {
	var s pcoracle.Script
	s.Outb(0x61, 0x01) // gate 2 high, speaker off
	for _, ch := range []uint8{1, 2} {
		for mode := uint8(0); mode < 8; mode++ {
			for _, rw := range []uint8{1, 2, 3} {
				bcd := mode & 1 // BCD on odd modes
				s.Outb(0x43, ch<<6|rw<<4|mode<<1|bcd)
				port := uint16(0x40 + ch)
				switch rw {
				case 1:
					s.Outb(port, 0x40)
				case 2:
					s.Outb(port, 0x98)
				case 3:
					s.Outb(port, 0x40).Outb(port, 0x98)
				}
				outMask := uint32(0x7f)
				if mode == 0 || mode == 3 || mode == 7 {
					outMask = 0xff
				}
				if mode >= 6 {
					outMask = 0x7f // QEMU runs modes 6 and 7 as mode 0; the 8254 as 2 and 3
				}
				if rw == 1 {
					outMask = 0x7f // count 0x40 is 54 µs: OUT may change while QEMU runs
				}
				note := fmt.Sprintf("ch%d mode %d rw %d status", ch, mode, rw)
				s.Outb(0x43, 0xe0|2<<ch).InbMask(port, outMask, note)
				// Latch count and status together: status first, then the count.
				s.Outb(0x43, 0xc0|2<<ch).InbMask(port, outMask, note+" (with count)")
				switch rw {
				case 1:
					s.InbIgnore(port) // 0x40 minus the ticks QEMU's real time ran
				case 2:
					s.InbMask(port, 0xf0, "latched MSB-only count")
				case 3:
					s.InbIgnore(port).InbMask(port, 0xf0, "latched count high")
				}
			}
		}
	}
	// A second latch command before the first is read is ignored.
	s.Outb(0x43, 0x70).Outb(0x41, 0x80).Outb(0x41, 0xc0)
	s.Outb(0x43, 0x40).Outb(0x43, 0x40)
	s.InbIgnore(0x41).InbMask(0x41, 0xff, "high of the first latch").InbIgnore(0x41).InbMask(0x41, 0xff, "high live")
	s.Inb(0x43, "control port read")
	// Port 0x61 and OUT2 at terminal count in mode 0.
	s.Outb(0x61, 0x00).InbMask(0x61, 0x03, "0x61 gate low")
	s.Outb(0x61, 0x03).InbMask(0x61, 0x03, "0x61 gate and speaker")
	s.Outb(0x43, 0xb0).Outb(0x42, 0x00).Outb(0x42, 0x00).InbMask(0x61, 0x23, "OUT2 low after load (55 ms count)")
	s.Outb(0x43, 0xb0).Outb(0x42, 0x02).Outb(0x42, 0x00)
	s.WaitB(0x61, 0x20, 0x20, 0, 0).InbMask(0x61, 0x23, "OUT2 at terminal count")
	s.Outb(0x61, 0x00)

	clk := NewFake()
	p := NewPIT(clk, nil)
	pio := bus.New()
	pio.Insert(p, "pit", PITPort, 4)
	pio.Insert(p.Speaker(), "speaker", SpeakerPort, 1)
	pcoracle.CompareTicksTimed(t, s, bus.New(), pio, func() { clk.Advance(time.Microsecond) })
}

// TestQEMUDifferentialHPET compares the HPET's registers with QEMU's pc HPET while
// the counter is halted (deterministic), then checks that it counts once enabled.
func TestQEMUDifferentialHPET(t *testing.T) {
	const b = HPETBase
	var s pcoracle.Script
	s.Readl(b, "GCAP_ID low").Readl(b+4, "period")
	s.Writel(b+0x10, 0).Readl(b+0x10, "config")
	s.Writel(b+0x10, 0xfffffffc).Readl(b+0x10, "config reserved bits")
	s.Writel(b+0x10, 0)
	s.Writel(b+0xf0, 0x12345678).Writel(b+0xf4, 0x9).Readl(b+0xf0, "halted counter low").Readl(b+0xf4, "halted counter high")
	s.Writel(b+0xf0, 0).Writel(b+0xf4, 0)
	s.Readl(b+0x20, "ISR")
	for n := uint32(0); n < HPETTimers; n++ {
		tb := b + 0x100 + 0x20*n
		s.Readl(tb+4, "timer int route cap")
		s.Writel(tb, 0xffffffff).Readl(tb, "timer config all ones")
		s.Writel(tb, 0).Readl(tb, "timer config cleared")
		s.Writel(tb, 1<<8).Readl(tb, "timer 32-bit mode")
		s.Writel(tb+8, 0xdeadbeef).Readl(tb+8, "32-bit comparator").Readl(tb+12, "32-bit comparator high")
		s.Writel(tb, 0).Writel(tb+8, 0x11111111).Writel(tb+12, 0x2).Readl(tb+8, "comparator").Readl(tb+12, "comparator high")
		s.Writel(tb, tnPeriodic|tnSetVal).Writel(tb+8, 0x1000).Readl(tb+8, "periodic comparator via SETVAL")
		s.Writel(tb+8, 0x2000).Readl(tb+8, "periodic comparator without SETVAL (period only)")
		s.Readl(tb, "config after comparator writes")
		s.Writel(tb, 0)
	}
	s.Writel(b+0x20, 0xffffffff).Readl(b+0x20, "ISR after clearing")

	clk := NewFake()
	h := NewHPET(clk, func(int) bus.IRQ { return bus.NoIRQ })
	mmio := bus.New()
	mmio.Insert(h, "hpet", HPETBase, HPETSize)
	pcoracle.Compare(t, s, mmio, bus.New())
}

// TestQEMUDifferentialHPETFire lets timers expire in QEMU and here: a level-triggered
// one-shot (waited for in the ISR), its ISR clearing, and a periodic timer whose
// comparator advances.
func TestQEMUDifferentialHPETFire(t *testing.T) {
	const b = HPETBase
	var s pcoracle.Script
	t2 := uint32(b + 0x100 + 0x20*2)
	t0 := uint32(b + 0x100)
	s.Writel(b+0x10, 0).Writel(b+0xf0, 0).Writel(b+0xf4, 0)
	s.Writel(t2, 2<<9|tnIntEn|tnLevel).Writel(t2+8, 20000).Writel(t2+12, 0)
	s.Writel(b+0x10, 1)
	s.WaitL(b+0x20, 4, 4)
	s.Readl(b+0x20, "ISR after level one-shot").Readl(t2, "timer 2 config").Readl(t2+8, "one-shot comparator unchanged")
	s.Writel(b+0x20, 4).Readl(b+0x20, "ISR cleared")
	s.Writel(t2, 0)
	// Halted: comparator high half 0 through SETVAL, then low 5000 (SETVAL again),
	// then the period (writes without SETVAL go to the period in periodic mode).
	s.Writel(b+0x10, 0).Writel(b+0xf0, 0).Writel(b+0xf4, 0)
	cfg := uint32(2<<9 | tnIntEn | tnLevel | tnPeriodic)
	s.Writel(t0, cfg|tnSetVal).Writel(t0+12, 0)
	s.Writel(t0, cfg|tnSetVal).Writel(t0+8, 5000)
	s.Writel(t0+12, 0).Writel(t0+8, 10000)
	s.Readl(t0+8, "comparator").Readl(t0+12, "comparator high")
	s.Writel(b+0x10, 1)
	s.WaitL(b+0x20, 1, 1).Readl(b+0x20, "ISR periodic")
	s.ReadlIgnore(t0 + 8) // 5000 + k*10000, k depending on QEMU's real time
	s.Writel(b+0x10, 0).Writel(t0, 0).Writel(b+0x20, 7).Readl(b+0x20, "ISR")

	clk := NewFake()
	h := NewHPET(clk, func(int) bus.IRQ { return bus.NoIRQ })
	mmio := bus.New()
	mmio.Insert(h, "hpet", HPETBase, HPETSize)
	pcoracle.CompareTicks(t, s, mmio, bus.New(), func() { clk.Advance(time.Microsecond) })
}

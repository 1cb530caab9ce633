package pcirq

import (
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/internal/pcoracle"
	"gemu/hw/timer"
)

// TestQEMUInterruptDelivery takes real interrupts in QEMU's pc (the guest enables
// interrupts until one handler runs and reports its vector) and through this
// chipset's vCPU interface (HighestPending/Acknowledge of APIC 0): the PIT through
// the 8259 and LINT0 in ExtINT mode, through IOAPIC pin 2, the HPET in legacy mode,
// the local APIC timer, priority order and TPR masking of self-IPIs, and nothing
// delivered while masked.
func TestQEMUInterruptDelivery(t *testing.T) {
	const lapic, ioapic = 0xfee00000, 0xfec00000
	var s pcoracle.Script
	pitOneShot := func() { s.Outb(0x43, 0x30).Outb(0x40, 2).Outb(0x40, 0) }
	redir := func(pin, lo uint32) {
		s.Writel(ioapic, 0x10+2*pin+1).Writel(ioapic+0x10, 0)
		s.Writel(ioapic, 0x10+2*pin).Writel(ioapic+0x10, lo)
	}
	// Quiet start: PIT mode 0 past terminal count, HPET off, every IOAPIC pin masked.
	pitOneShot()
	s.WaitB(0x40, 0x80, 0x80, 0x43, 0xe2)
	s.Writel(0xfed00010, 0)
	for pin := uint32(0); pin < 24; pin++ {
		redir(pin, 0x10000)
	}
	s.Writel(lapic+0xf0, 0x1ff).Writel(lapic+0x80, 0).Writel(lapic+0x320, 0x10000)
	s.Writel(lapic+0x350, 0x700).Writel(lapic+0x360, 0x10400)
	// 8259: vectors 0x20/0x28, only IRQ0 unmasked.
	s.Outb(0x20, 0x11).Outb(0x21, 0x20).Outb(0x21, 0x04).Outb(0x21, 0x01)
	s.Outb(0xa0, 0x11).Outb(0xa1, 0x28).Outb(0xa1, 0x02).Outb(0xa1, 0x01)
	s.Outb(0x21, 0xfe).Outb(0xa1, 0xff)

	pitOneShot()
	s.Intr("PIT through the 8259 (ExtINT on LINT0)")
	s.Outb(0x20, 0x20)
	s.Intr("nothing more pending")

	// IOAPIC path: 8259 masked, pin 2 → vector 0x42. An edge while pin 2 is masked
	// is dropped (seen arriving in the 8259's IRR, which latches masked requests).
	s.Outb(0x21, 0xff)
	pitOneShot()
	s.WaitB(0x20, 0x01, 0x01, 0x20, 0x0a)
	redir(2, 0x42)
	s.Intr("edge at masked IOAPIC pin 2 dropped")
	pitOneShot()
	s.Intr("PIT through IOAPIC pin 2")
	s.Writel(lapic+0xb0, 0)

	// HPET legacy replacement: timer 0 → IRQ0 → pin 2.
	s.Writel(0xfed000f0, 0).Writel(0xfed000f4, 0)
	s.Writel(0xfed00100, 1<<2).Writel(0xfed00108, 5000).Writel(0xfed0010c, 0)
	s.Writel(0xfed00010, 3)
	s.Intr("HPET timer 0 in legacy mode through pin 2")
	s.Writel(lapic+0xb0, 0)
	s.Writel(0xfed00010, 0).Writel(0xfed00100, 0)
	s.Intr("PIT's high OUT0 reasserted on IRQ0 when legacy mode ends")
	s.Writel(lapic+0xb0, 0)
	redir(2, 0x10000)

	// Local APIC timer, one-shot.
	s.Writel(lapic+0x3e0, 0xb).Writel(lapic+0x320, 0xe3).Writel(lapic+0x380, 20000)
	s.Intr("APIC timer")
	s.Writel(lapic+0xb0, 0).Writel(lapic+0x320, 0x10000)

	// Self-IPIs: higher class first; the lower waits for the EOI.
	s.Writel(lapic+0x300, 1<<18|0x51).Writel(lapic+0x300, 1<<18|0x92)
	s.Intr("highest of 0x51 and 0x92")
	s.Intr("0x51 blocked while 0x92 is in service")
	s.Writel(lapic+0xb0, 0)
	s.Intr("0x51 after the EOI")
	s.Writel(lapic+0xb0, 0)
	// TPR masks a class.
	s.Writel(lapic+0x80, 0x60).Writel(lapic+0x300, 1<<18|0x55)
	s.Intr("0x55 masked by TPR 0x60")
	s.Writel(lapic+0x80, 0)
	s.Intr("0x55 once TPR drops")
	s.Writel(lapic+0xb0, 0)

	clk := timer.NewFake()
	c := New(1, 0, clk)
	mmio, pio := bus.New(), bus.New()
	if err := c.Map(mmio, pio); err != nil {
		t.Fatal(err)
	}
	hpet := timer.NewHPET(clk, func(gsi int) bus.IRQ { return c.IRQ(uint32(gsi)) })
	pit := timer.NewPIT(clk, hpet.PITInput())
	pio.Insert(pit, "pit", timer.PITPort, 4)
	mmio.Insert(hpet, "hpet", timer.HPETBase, timer.HPETSize)
	pcoracle.CompareCPU(t, s, mmio, pio, func() { clk.Advance(time.Microsecond) }, c.APIC.CPU(0))
}

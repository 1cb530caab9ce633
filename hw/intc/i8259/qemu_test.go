package i8259

import (
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/internal/pcoracle"
	"gemu/hw/timer"
)

// TestQEMUDifferential compares the pair with QEMU's pc 8259s (userspace on TCG):
// initialization, masks, ELCR masks, IRR/ISR reads, and requests made by the PIT's
// channel 0 (IRQ 0) taken with the poll command (the guest runs with interrupts off),
// in normal and auto-EOI modes.
func TestQEMUDifferential(t *testing.T) {
	var s pcoracle.Script
	pitOneShot := func(count uint8) {
		s.Outb(0x43, 0x30).Outb(0x40, count).Outb(0x40, 0)
	}
	// Wait for the request in the master's IRR (OCW3 read-IRR before each read): QEMU
	// raises the PIT's edge from a timer callback on its main loop, which may lag the
	// OUT bit the read-back status computes from the clock.
	waitIRQ0 := func() { s.WaitB(0x20, 0x01, 0x01, 0x20, 0x0a) }
	// Quiet IRQ0 whatever the timing: mode 0 past terminal count keeps OUT high, so
	// the only edges are those each pitOneShot(2) makes (ICW1 drops this one).
	pitOneShot(2)
	waitIRQ0()
	initMaster := func(icw4 uint8) {
		s.Outb(0x20, 0x11).Outb(0x21, 0x20).Outb(0x21, 0x04).Outb(0x21, icw4)
	}
	initMaster(0x01)
	s.Outb(0xa0, 0x11).Outb(0xa1, 0x28).Outb(0xa1, 0x02).Outb(0xa1, 0x01)
	s.Outb(0x4d0, 0xff).Outb(0x4d1, 0xff).Inb(0x4d0, "ELCR master mask").Inb(0x4d1, "ELCR slave mask")
	s.Outb(0x4d0, 0x00).Outb(0x4d1, 0x0e).Inb(0x4d0, "ELCR master").Inb(0x4d1, "ELCR slave")
	s.Outb(0x21, 0xa5).Outb(0xa1, 0x5a).Inb(0x21, "IMR master").Inb(0xa1, "IMR slave")
	s.Outb(0x20, 0x0a).Inb(0x20, "IRR master after init").Outb(0x20, 0x0b).Inb(0x20, "ISR master")
	s.Outb(0xa0, 0x0a).Inb(0xa0, "IRR slave").Outb(0xa0, 0x0b).Inb(0xa0, "ISR slave")
	s.Outb(0x20, 0x0c).Inb(0x20, "poll with nothing pending")

	// One IRQ 0 request, polled, in service, EOI.
	s.Outb(0x21, 0xfe).Outb(0xa1, 0xff)
	pitOneShot(2)
	waitIRQ0()
	s.Outb(0x20, 0x0a).Inb(0x20, "IRR with IRQ0 requested")
	s.Outb(0x20, 0x0c).Inb(0x20, "poll takes IRQ0")
	s.Outb(0x20, 0x0a).Inb(0x20, "IRR after poll (edge cleared)")
	s.Outb(0x20, 0x0b).Inb(0x20, "ISR IRQ0 in service")
	s.Inb(0x20, "ISR again (read select sticky)")
	s.Outb(0x20, 0x20).Inb(0x20, "ISR after non-specific EOI")

	// Masked request: latched in IRR, not polled; unmasked, it is.
	s.Outb(0x21, 0xff)
	pitOneShot(2)
	waitIRQ0()
	s.Outb(0x20, 0x0c).Inb(0x20, "poll of a masked request")
	s.Outb(0x20, 0x0a).Inb(0x20, "IRR keeps the masked request")
	s.Outb(0x21, 0xfe).Outb(0x20, 0x0c).Inb(0x20, "poll after unmask")
	s.Outb(0x20, 0x0b).Inb(0x20, "ISR")
	s.Outb(0x20, 0x60).Inb(0x20, "ISR after specific EOI 0")

	// Rotation commands with IRQ0 in service.
	pitOneShot(2)
	waitIRQ0()
	s.Outb(0x20, 0xc3) // set priority: IRQ3 lowest
	s.Outb(0x20, 0x0c).Inb(0x20, "poll after priority rotation")
	s.Outb(0x20, 0x0b).Outb(0x20, 0xa0).Inb(0x20, "ISR after rotate-on-EOI")
	s.Outb(0x20, 0xc7) // back to IRQ7 lowest

	// Auto-EOI: ISR stays clear. ICW1 resets IMR to 0.
	initMaster(0x03)
	s.Inb(0x21, "IMR after re-init")
	s.Outb(0x21, 0xfe)
	pitOneShot(2)
	waitIRQ0()
	s.Outb(0x20, 0x0c).Inb(0x20, "poll in auto-EOI mode")
	s.Outb(0x20, 0x0b).Inb(0x20, "ISR in auto-EOI mode")
	// Special mask mode set and cleared (OCW3), read back through ISR/IRR selection.
	s.Outb(0x20, 0x68).Outb(0x20, 0x0a).Inb(0x20, "IRR in special mask mode")
	s.Outb(0x20, 0x48).Outb(0x20, 0x0b).Inb(0x20, "ISR after special mask off")

	clk := timer.NewFake()
	p := New(nil)
	pit := timer.NewPIT(clk, bus.IRQFunc(func(l bool) { p.SetIRQ(0, l) }))
	pio := bus.New()
	pio.Insert(p.Master(), "pic1", MasterPort, 2)
	pio.Insert(p.Slave(), "pic2", SlavePort, 2)
	pio.Insert(p.ELCR(), "elcr", ELCRPort, 2)
	pio.Insert(pit, "pit", timer.PITPort, 4)
	pcoracle.CompareTicks(t, s, bus.New(), pio, func() { clk.Advance(time.Microsecond) })
}

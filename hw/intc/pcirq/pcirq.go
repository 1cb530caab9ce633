// Package pcirq owns the PC's interrupt wiring for a userspace chipset: the local
// APICs (hw/intc/apic), the IOAPIC (hw/intc/ioapic) and the 8259 pair (hw/intc/i8259)
// as QEMU's pc board connects them: ISA IRQ n (0..15) reaches 8259 input n and IOAPIC
// pin n, except IRQ0 which reaches pin 2 (the MADT's interrupt source override);
// GSIs 16..23 reach the IOAPIC only; the 8259's INTR drives LINT0 of every local APIC
// (delivered when the guest programs LINT0 as ExtINT, or with the APIC disabled); the
// local APICs' EOI of a level-triggered vector goes back to the IOAPIC; MSIs go to the
// local APICs.
//
// It must not know about accelerators or CPUs: a vCPU reaches its APIC with
// Chipset.APIC.CPU(i).
package pcirq

import (
	"fmt"

	"gemu/hw/bus"
	"gemu/hw/intc/apic"
	"gemu/hw/intc/i8259"
	"gemu/hw/intc/ioapic"
	"gemu/hw/timer"
)

// NumGSI is the number of global system interrupts (the IOAPIC's pins).
const NumGSI = ioapic.NumPins

// Chipset is the wired set of interrupt controllers.
type Chipset struct {
	APIC   *apic.System
	IOAPIC *ioapic.IOAPIC
	PIC    *i8259.PIC
}

// New builds the chipset for cpus vCPUs; ioapicID is the IOAPIC's id (the MADT's).
func New(cpus int, ioapicID uint8, clk timer.Clock) *Chipset {
	c := &Chipset{APIC: apic.New(cpus, clk)}
	c.IOAPIC = ioapic.New(ioapicID, c.APIC)
	c.APIC.SetEOIBroadcast(c.IOAPIC.EOI)
	c.PIC = i8259.New(bus.IRQFunc(func(level bool) {
		for i := 0; i < cpus; i++ {
			c.APIC.CPU(i).SetLINT0(level)
		}
	}))
	for i := 0; i < cpus; i++ {
		c.APIC.CPU(i).SetExtINT(c.PIC)
	}
	return c
}

// SetGSI drives global system interrupt gsi (0..23); out-of-range numbers are ignored.
func (c *Chipset) SetGSI(gsi uint32, level bool) {
	if gsi >= NumGSI {
		return
	}
	pin := int(gsi)
	if gsi < 16 {
		c.PIC.SetIRQ(int(gsi), level)
		if gsi == 0 {
			pin = 2
		}
	}
	c.IOAPIC.SetPin(pin, level)
}

// IRQ returns GSI gsi as a line (what accel.VM.IRQ returns under TCG).
func (c *Chipset) IRQ(gsi uint32) bus.IRQ {
	return bus.IRQFunc(func(level bool) { c.SetGSI(gsi, level) })
}

// SignalMSI delivers an MSI to the local APICs.
func (c *Chipset) SignalMSI(addr uint64, data uint32) error { return c.APIC.SignalMSI(addr, data) }

// SendMSI is hw/pci's MSISink.
func (c *Chipset) SendMSI(addr uint64, data uint32) { c.APIC.SendMSI(addr, data) }

// Map inserts the controllers' registers at the PC's addresses: the local APIC page
// at 0xfee00000 and the IOAPIC at 0xfec00000 on mmio, the 8259 ports and the ELCR on
// pio.
func (c *Chipset) Map(mmio, pio *bus.Bus) error {
	for _, r := range []struct {
		b          *bus.Bus
		dev        bus.Device
		name       string
		base, size uint64
	}{
		{mmio, c.APIC, "lapic", apic.DefaultBase, apic.PageSize},
		{mmio, c.IOAPIC, "ioapic", ioapic.DefaultBase, ioapic.Size},
		{pio, c.PIC.Master(), "pic1", i8259.MasterPort, 2},
		{pio, c.PIC.Slave(), "pic2", i8259.SlavePort, 2},
		{pio, c.PIC.ELCR(), "elcr", i8259.ELCRPort, 2},
	} {
		if err := r.b.Insert(r.dev, r.name, r.base, r.size); err != nil {
			return fmt.Errorf("pcirq: %s: %w", r.name, err)
		}
	}
	return nil
}

// Reset resets every controller (machine reset).
func (c *Chipset) Reset() {
	c.APIC.Reset()
	c.IOAPIC.Reset()
	c.PIC.Reset()
}

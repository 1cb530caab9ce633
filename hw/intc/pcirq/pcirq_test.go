package pcirq

import (
	"encoding/binary"
	"testing"

	"gemu/hw/bus"
	"gemu/hw/intc/apic"
	"gemu/hw/timer"
)

func TestPCWiring(t *testing.T) {
	c := New(2, 0, timer.NewFake())
	mmio, pio := bus.New(), bus.New()
	if err := c.Map(mmio, pio); err != nil {
		t.Fatal(err)
	}
	w32 := func(cpu int, addr uint64, v uint32) {
		mmio.Write(bus.CPUAccess(cpu), addr, binary.LittleEndian.AppendUint32(nil, v))
	}
	outb := func(port uint64, v uint8) { pio.Write(bus.CPUAccess(0), port, []byte{v}) }
	w32(0, 0xfee000f0, 0x1ff)
	w32(1, 0xfee000f0, 0x1ff)
	// IOAPIC pin 2 (ISA IRQ0 per the ISO) → vector 0x30 on APIC 1, edge.
	w32(0, 0xfec00000, 0x10+2*2+1)
	w32(0, 0xfec00010, 1<<24)
	w32(0, 0xfec00000, 0x10+2*2)
	w32(0, 0xfec00010, 0x30)
	// The PIC masks everything, so only the IOAPIC path fires.
	outb(0x20, 0x11)
	outb(0x21, 0x20)
	outb(0x21, 0x04)
	outb(0x21, 0x01)
	outb(0x21, 0xff)
	c.SetGSI(0, true)
	if c.APIC.CPU(1).HighestPending() != 0x30 {
		t.Fatal("GSI 0 did not reach IOAPIC pin 2")
	}
	c.SetGSI(0, false)
	// Unmask IRQ0 at the PIC with LINT0 in ExtINT on the BSP: the PIC path.
	outb(0x21, 0xfe)
	w32(0, 0xfee00350, 0x700)
	c.SetGSI(0, true)
	if c.APIC.CPU(0).HighestPending() != apic.PendingExtINT {
		t.Fatal("PIC INTR did not reach LINT0")
	}
	if v := c.APIC.CPU(0).Acknowledge(); v != 0x20 {
		t.Fatalf("ExtINT vector %#x", v)
	}
	// GSI 19 (a PCI INTx) level → IOAPIC only.
	w32(0, 0xfec00000, 0x10+2*19)
	w32(0, 0xfec00010, 1<<15|0x61)
	c.IRQ(19).Set(true)
	if c.APIC.CPU(0).HighestPending() != 0x61 {
		t.Fatal("GSI 19")
	}
	c.APIC.CPU(0).Acknowledge()
	c.IRQ(19).Set(false)
	w32(0, 0xfee000b0, 0) // EOI → broadcast clears remote IRR
	w32(0, 0xfec00000, 0x10+2*19)
	b := make([]byte, 4)
	mmio.Read(bus.CPUAccess(0), 0xfec00010, b)
	if binary.LittleEndian.Uint32(b)&(1<<14) != 0 {
		t.Fatal("remote IRR not cleared by the LAPIC EOI")
	}
	if err := c.SignalMSI(0xfee01000, 0x77); err != nil || c.APIC.CPU(1).HighestPending() != 0x77 {
		t.Fatal("MSI")
	}
}

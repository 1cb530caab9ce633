package ioapic

import (
	"encoding/binary"
	"testing"

	"gemu/hw/bus"
	"gemu/hw/intc/apic"
	"gemu/hw/timer"
)

type rec struct{ msgs []apic.Message }

func (r *rec) Deliver(m apic.Message) { r.msgs = append(r.msgs, m) }

func reg(io *IOAPIC, index uint32) uint32 {
	io.Write(bus.Host, RegSel, binary.LittleEndian.AppendUint32(nil, index))
	b := make([]byte, 4)
	io.Read(bus.Host, RegWin, b)
	return binary.LittleEndian.Uint32(b)
}

func setReg(io *IOAPIC, index, v uint32) {
	io.Write(bus.Host, RegSel, binary.LittleEndian.AppendUint32(nil, index))
	io.Write(bus.Host, RegWin, binary.LittleEndian.AppendUint32(nil, v))
}

func TestIdentificationAndReset(t *testing.T) {
	io := New(0, &rec{})
	if v := reg(io, 1); v != 0x170020 {
		t.Fatalf("version %#x", v)
	}
	setReg(io, 0, 0x0a000000)
	if v := reg(io, 0); v != 0x0a000000 {
		t.Fatalf("id %#x", v)
	}
	for n := uint32(0); n < NumPins; n++ {
		if lo, hi := reg(io, 0x10+2*n), reg(io, 0x11+2*n); lo != 0x10000 || hi != 0 {
			t.Fatalf("pin %d reset entry %#x:%#x", n, hi, lo)
		}
	}
	b := make([]byte, 4)
	io.Read(bus.Host, RegSel, b)
	if b[0] != 0x11+2*23 {
		t.Errorf("IOREGSEL reads %#x", b[0])
	}
}

func TestEdgeDeliveryAndMask(t *testing.T) {
	r := &rec{}
	io := New(0, r)
	setReg(io, 0x10+2*4+1, 3<<24)
	setReg(io, 0x10+2*4, 0x10000|1<<11|1<<8|0x34) // masked, logical, lowest priority
	io.SetPin(4, true)
	if len(r.msgs) != 0 {
		t.Fatal("masked pin delivered")
	}
	// An edge while masked is dropped, not held (82093AA datasheet; QEMU).
	setReg(io, 0x10+2*4, 1<<11|1<<8|0x34)
	if len(r.msgs) != 0 {
		t.Fatalf("%d messages after unmask: a masked edge was kept", len(r.msgs))
	}
	io.SetPin(4, false)
	io.SetPin(4, true)
	if len(r.msgs) != 1 {
		t.Fatalf("%d messages after an unmasked edge", len(r.msgs))
	}
	m := r.msgs[0]
	if m.Dest != 3 || !m.Logical || m.Mode != apic.ModeLowest || m.Vector != 0x34 || m.LevelTrig {
		t.Fatalf("message %+v", m)
	}
	io.SetPin(4, true) // no new edge
	io.SetPin(4, false)
	io.SetPin(4, true)
	if len(r.msgs) != 2 {
		t.Fatalf("edges delivered %d, want 2", len(r.msgs))
	}
}

func TestLevelRemoteIRRAndEOI(t *testing.T) {
	r := &rec{}
	io := New(0, r)
	setReg(io, 0x10+2*10, 1<<15|0x45)
	io.SetPin(10, true)
	io.SetPin(10, true)
	if len(r.msgs) != 1 || !r.msgs[0].LevelTrig {
		t.Fatalf("messages %+v", r.msgs)
	}
	if reg(io, 0x10+2*10)&entRemoteIRR == 0 {
		t.Fatal("remote IRR not set")
	}
	// The guest cannot write remote IRR.
	setReg(io, 0x10+2*10, 1<<15|0x45)
	if reg(io, 0x10+2*10)&entRemoteIRR == 0 {
		t.Fatal("entry write cleared remote IRR")
	}
	io.EOI(0x46) // another vector
	if len(r.msgs) != 1 {
		t.Fatal("EOI of another vector redelivered")
	}
	io.EOI(0x45) // still high: delivered again
	if len(r.msgs) != 2 {
		t.Fatalf("level still high after EOI: %d messages", len(r.msgs))
	}
	io.SetPin(10, false)
	io.Write(bus.Host, RegEOI, binary.LittleEndian.AppendUint32(nil, 0x45)) // EOI register
	if len(r.msgs) != 2 || reg(io, 0x10+2*10)&entRemoteIRR != 0 {
		t.Fatal("EOI register with the line low")
	}
}

// TestThroughLAPIC wires the IOAPIC to real local APICs: a level interrupt, its EOI
// broadcast back, and MSI-format physical destinations.
func TestThroughLAPIC(t *testing.T) {
	sys := apic.New(2, timer.NewFake())
	for i := 0; i < 2; i++ {
		sys.CPU(i).WriteReg(apic.RegSVR, 0x1ff)
	}
	io := New(0, sys)
	sys.SetEOIBroadcast(io.EOI)
	setReg(io, 0x10+2*11+1, 1<<24)
	setReg(io, 0x10+2*11, 1<<15|0x55)
	io.SetPin(11, true)
	c1 := sys.CPU(1)
	if c1.HighestPending() != 0x55 || sys.CPU(0).HighestPending() != -1 {
		t.Fatal("level interrupt not at APIC 1")
	}
	c1.Acknowledge()
	io.SetPin(11, false)
	c1.WriteReg(apic.RegEOI, 0)
	if io.Entry(11)&entRemoteIRR != 0 {
		t.Fatal("LAPIC EOI did not clear remote IRR")
	}
	io.SetPin(11, true)
	if c1.HighestPending() != 0x55 {
		t.Fatal("no redelivery after EOI")
	}
}

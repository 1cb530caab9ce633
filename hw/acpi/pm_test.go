package acpi

import (
	"encoding/binary"
	"gemu/hw/bus"
	"testing"
	"time"
)

type lvl struct{ level bool }

func (l *lvl) Set(v bool) { l.level = v }

func TestPMPowerOff(t *testing.T) {
	off := 0
	p := NewPM(nil, func() { off++ })
	var b [2]byte
	p.Read(bus.Host, pm1CntOff, b[:])
	if binary.LittleEndian.Uint16(b[:])&1 == 0 {
		t.Fatal("SCI_EN clear: Linux would look for an SMI command port")
	}
	// ACPICA writes SLP_TYP first, then SLP_TYP|SLP_EN.
	typ := uint16(SleepTypeS5) << 10
	p.Write(bus.Host, pm1CntOff, binary.LittleEndian.AppendUint16(nil, typ|1))
	if off != 0 {
		t.Fatal("powered off without SLP_EN")
	}
	p.Write(bus.Host, pm1CntOff, binary.LittleEndian.AppendUint16(nil, typ|1<<13|1))
	if off != 1 {
		t.Fatal("SLP_TYP=S5|SLP_EN did not power off")
	}
	p.Read(bus.Host, pm1CntOff, b[:])
	if binary.LittleEndian.Uint16(b[:])&(1<<13) != 0 {
		t.Fatal("SLP_EN reads back set")
	}
	// Another sleep type (S3, unsupported) does nothing.
	p.Write(bus.Host, pm1CntOff, binary.LittleEndian.AppendUint16(nil, 1<<10|1<<13))
	if off != 1 {
		t.Fatal("S1 powered off")
	}
	// Byte-wise access to the high byte (SLP_TYP/SLP_EN live there) works too.
	p.Write(bus.Host, pm1CntOff+1, []byte{byte((typ | 1<<13) >> 8)})
	if off != 2 {
		t.Fatal("byte write of SLP_EN did not power off")
	}
}

func TestPMStatusEnableAndTimer(t *testing.T) {
	sci := &lvl{}
	p := NewPM(sci, nil)
	p.Write(bus.Host, gpe0Off+2, []byte{0xff, 0xff})
	p.mu.Lock()
	p.gpeSts = 1 << 3 // an event source raises GPE bit 3
	p.updateSCILocked()
	p.mu.Unlock()
	if !sci.level {
		t.Fatal("enabled GPE status did not raise the SCI")
	}
	var b [2]byte
	p.Read(bus.Host, gpe0Off, b[:])
	if b[0] != 1<<3 {
		t.Fatalf("GPE0_STS %#x", b[0])
	}
	p.Write(bus.Host, gpe0Off, []byte{1 << 2, 0}) // clearing another bit changes nothing
	if !sci.level {
		t.Fatal("write-one-to-clear cleared the wrong bit")
	}
	p.Write(bus.Host, gpe0Off, []byte{1 << 3, 0})
	if sci.level {
		t.Fatal("SCI still asserted after clearing the status")
	}
	var t1, t2 [4]byte
	p.Read(bus.Host, pmTmrOff, t1[:])
	time.Sleep(2 * time.Millisecond)
	p.Read(bus.Host, pmTmrOff, t2[:])
	d := binary.LittleEndian.Uint32(t2[:]) - binary.LittleEndian.Uint32(t1[:])
	// 2 ms at 3.58 MHz is ~7160 ticks; only monotonic progress of at least that is
	// asserted, never an upper bound.
	if d < 7000 {
		t.Fatalf("PM timer advanced %d ticks in >= 2 ms", d)
	}
}

package acpi

import (
	"encoding/binary"
	"testing"

	"gemu/hw/bus"
)

// TestPowerButton presses the fixed power button as Linux's ACPI core sees it: the
// status bit is set whether or not the event is enabled, the SCI rises only once the
// guest set PWRBTN_EN, and writing the bit back clears status and SCI. The FADT must
// announce a fixed power button (PWR_BUTTON clear) for Linux to enable the event.
func TestPowerButton(t *testing.T) {
	sci := &lvl{}
	p := NewPM(sci, nil)
	if p.PowerButton() {
		t.Fatal("PowerButton reports the event enabled before the guest enabled it")
	}
	var b [2]byte
	p.Read(bus.Host, pm1EvtOff, b[:])
	if binary.LittleEndian.Uint16(b[:])&(1<<8) == 0 || sci.level {
		t.Fatalf("PM1_STS %#x, SCI %v: want PWRBTN_STS set, SCI low (not enabled)", b, sci.level)
	}
	p.Write(bus.Host, pm1EvtOff+2, binary.LittleEndian.AppendUint16(nil, 1<<8)) // PWRBTN_EN
	if !sci.level {
		t.Fatal("enabling PWRBTN_EN with the status set did not raise the SCI")
	}
	p.Write(bus.Host, pm1EvtOff, binary.LittleEndian.AppendUint16(nil, 1<<8))
	if sci.level {
		t.Fatal("SCI still high after clearing PWRBTN_STS")
	}
	if !p.PowerButton() || !sci.level {
		t.Fatal("second press with the event enabled: no SCI")
	}
	tb, err := Build(0xe0000, Config{CPUs: 1, LAPICAddr: 0xfee00000, IOAPICAddr: 0xfec00000, SCI: 9, PM: PMPorts{Base: 0x600}})
	if err != nil {
		t.Fatal(err)
	}
	off, ok := tb.Offsets["FACP"]
	if !ok {
		t.Fatal("no FADT")
	}
	f := tb.Blob[off:]
	if flags := binary.LittleEndian.Uint32(f[112:]); flags&fadtPwrButton != 0 {
		t.Fatalf("FADT flags %#x: PWR_BUTTON set (no fixed power button)", flags)
	}
}

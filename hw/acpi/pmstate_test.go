package acpi

import (
	"encoding/binary"
	"testing"
	"time"

	"gemu/hw/bus"
)

// TestPMStateRoundTrip: PM1 enable/control, a pending power-button status with its
// SCI, and the PM timer (going on from the saved value, not from zero) survive
// SaveState → LoadState into a fresh block; bad state is refused.
func TestPMStateRoundTrip(t *testing.T) {
	sci := &lvl{}
	p := NewPM(sci, nil)
	p.Write(bus.Host, 2, []byte{0x00, 0x01}) // PM1_EN: PWRBTN_EN
	p.PowerButton()
	if !sci.level {
		t.Fatal("no SCI for the power button")
	}
	p.mu.Lock()
	p.start = p.start.Add(-10 * time.Minute) // ten minutes of PM timer
	p.mu.Unlock()
	st, err := p.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	sci2 := &lvl{}
	q := NewPM(sci2, nil)
	if err := q.LoadState(st); err != nil {
		t.Fatal(err)
	}
	if !sci2.level {
		t.Error("restored block does not raise the SCI")
	}
	rd := func(p *PM, off uint64, n int) uint32 {
		b := make([]byte, 4)
		p.Read(bus.Host, off, b[:n])
		return binary.LittleEndian.Uint32(b)
	}
	for _, off := range []uint64{0, 2, 4} {
		if a, b := rd(p, off, 2), rd(q, off, 2); a != b {
			t.Errorf("PM1 register %d: %#x, restored %#x", off, a, b)
		}
	}
	// Ten minutes at 3.579545 MHz are 0x80039a98 ticks: far from 0.
	if tm := rd(q, 8, 4); tm < 1<<30 {
		t.Errorf("restored PM timer %#x started again from zero", tm)
	}
	for name, bad := range map[string]bus.State{
		"version": {Name: "acpi-pm", Version: 2, Data: st.Data},
		"short":   {Name: "acpi-pm", Version: pmStateVersion, Data: st.Data[:10]},
		"range":   {Name: "acpi-pm", Version: pmStateVersion, Data: append([]byte{0, 0, 1, 0}, st.Data[4:]...)},
	} {
		if err := q.LoadState(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

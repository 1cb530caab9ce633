package rtc

import (
	"testing"
	"time"

	"gemu/hw/bus"
)

// TestStateRoundTrip: a guest-set time (kept as an offset from the host clock), the
// CMOS bytes, the index register and pending flags survive SaveState → LoadState into
// a fresh RTC on the same host clock, which raises IRQ 8 for the pending enabled flag;
// bad state is refused.
func TestStateRoundTrip(t *testing.T) {
	c := &clock{time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	r := newRTC(c.now)
	wr(r, RegB, regBSet|regB24h)
	wr(r, RegYear, 0x99)
	wr(r, RegCentury, 0x19)
	wr(r, RegB, regB24h)
	wr(r, 0x40, 0x77) // NVRAM
	r.mu.Lock()
	r.flags = regCAF
	r.mu.Unlock()
	wr(r, RegB, regB24h|regBAIE) // raises IRQ 8 for the pending alarm flag
	st, err := r.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(3 * time.Second) // the host clock moves on while the machine is away
	line := &irqLine{}
	v := newRTC(c.now)
	v.irq = line
	defer v.Close()
	if err := v.LoadState(st); err != nil {
		t.Fatal(err)
	}
	if lvl, _ := line.get(); !lvl {
		t.Error("restored RTC does not raise IRQ 8")
	}
	if rd(v, RegYear) != 0x99 || rd(v, RegCentury) != 0x19 || rd(v, RegSeconds) != 0x03 || rd(v, 0x40) != 0x77 {
		t.Errorf("restored clock %02x%02x :%02x, NVRAM %#x", rd(v, RegCentury), rd(v, RegYear), rd(v, RegSeconds), rd(v, 0x40))
	}
	for name, bad := range map[string]bus.State{
		"version": {Name: "mc146818", Version: 2, Data: st.Data},
		"short":   {Name: "mc146818", Version: stateVersion, Data: st.Data[:100]},
	} {
		if err := v.LoadState(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

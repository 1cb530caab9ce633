package i8042

import (
	"testing"

	"gemu/hw/bus"
)

// TestStateRoundTrip: the configuration byte, a command awaiting its data byte and
// queued keyboard replies survive SaveState → LoadState into a fresh controller, which
// raises IRQ 1, answers the pending command and reads the same bytes; bad state is
// refused.
func TestStateRoundTrip(t *testing.T) {
	irq := &line{}
	c := New(nil, irq)
	c.Write(bus.Host, 0, []byte{0xf2}) // identify: fa ab 83 queued, IRQ 1 raised
	c.Write(bus.Host, 4, []byte{0xd1}) // write output port: awaits its data byte
	if !irq.level {
		t.Fatal("no IRQ 1 before the save")
	}
	st, err := c.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	irq2 := &line{}
	v := New(nil, irq2)
	if err := v.LoadState(st); err != nil {
		t.Fatal(err)
	}
	if !irq2.level {
		t.Error("restored controller does not raise IRQ 1")
	}
	if a, b := rd(c, 4), rd(v, 4); a != b {
		t.Errorf("status %#x, restored %#x", a, b)
	}
	v.Write(bus.Host, 0, []byte{0xdf}) // the output port's data byte: A20 on, reset high
	if a, b, d := rd(v, 0), rd(v, 0), rd(v, 0); a != 0xfa || b != 0xab || d != 0x83 {
		t.Errorf("restored queue reads %#x %#x %#x", a, b, d)
	}
	if irq2.level {
		t.Error("IRQ 1 still high with the queue drained")
	}
	v.Write(bus.Host, 4, []byte{0xd0}) // read output port
	if got := rd(v, 0); got != 0xdf {
		t.Errorf("output port %#x: the pending command did not take its byte", got)
	}
	for name, bad := range map[string]bus.State{
		"version": {Name: "i8042", Version: 9, Data: st.Data},
		"short":   {Name: "i8042", Version: stateVersion, Data: st.Data[:4]},
		"long":    {Name: "i8042", Version: stateVersion, Data: append(append([]byte{}, st.Data[:5]...), 0xff, 0xff, 0, 0)},
	} {
		if err := v.LoadState(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

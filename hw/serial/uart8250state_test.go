package serial

import (
	"testing"

	"gemu/hw/bus"
)

// TestUART8250StateRoundTrip: divisor, line/modem control, scratch, FIFO control,
// the receive FIFO with bytes held behind it and the pending interrupt survive
// SaveState → LoadState into a fresh UART, which then reads the same bytes in order
// and drives its line; bad state is refused and leaves the UART unchanged.
func TestUART8250StateRoundTrip(t *testing.T) {
	u, s, _ := newUART()
	out(u, uartLCR, lcrDLAB)
	out(u, uartRBR, 0x01) // DLL: 115200 baud
	out(u, uartIER, 0x00)
	out(u, uartLCR, 0x03) // 8N1
	out(u, uartIIR, fcrEnable|0x80)
	out(u, uartMCR, mcrDTR|mcrRTS|mcrOUT2)
	out(u, uartSCR, 0x5a)
	out(u, uartIER, ierRDI)
	msg := []byte("0123456789abcdefGHIJ") // 20 bytes: 16 in the FIFO, 4 held
	for _, b := range msg {
		s.recv(b)
	}
	st, err := u.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	v, _, l2 := newUART()
	if err := v.LoadState(st); err != nil {
		t.Fatal(err)
	}
	if !l2.level {
		t.Error("restored UART does not raise its receive interrupt")
	}
	for _, reg := range []uint64{uartIER, uartIIR, uartLCR, uartMCR, uartLSR, uartMSR, uartSCR} {
		if a, b := in(u, reg), in(v, reg); a != b {
			t.Errorf("register %d: %#x, restored %#x", reg, a, b)
		}
	}
	out(v, uartLCR, 0x83)
	if dll := in(v, uartRBR); dll != 1 {
		t.Errorf("restored DLL %#x", dll)
	}
	out(v, uartLCR, 0x03)
	var got []byte
	for in(v, uartLSR)&lsrDR != 0 && len(got) < 64 {
		got = append(got, in(v, uartRBR))
	}
	if string(got) != string(msg) {
		t.Errorf("restored UART reads %q, want %q", got, msg)
	}
	if l2.level {
		t.Error("line still high with the FIFO drained")
	}

	good := st.Data
	before, _ := v.SaveState()
	for name, bad := range map[string]bus.State{
		"version":  {Name: "uart8250", Version: 2, Data: good},
		"short":    {Name: "uart8250", Version: 1, Data: good[:8]},
		"trailing": {Name: "uart8250", Version: 1, Data: append(append([]byte{}, good...), 0)},
		"fifo":     {Name: "uart8250", Version: 1, Data: append(append([]byte{}, good[:10]...), 17, 0, 0, 0)},
	} {
		if err := v.LoadState(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if now, _ := v.SaveState(); string(now.Data) != string(before.Data) {
			t.Errorf("%s: the UART changed", name)
		}
	}
}

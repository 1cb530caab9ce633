package serial

import (
	"testing"

	"gemu/hw/bus"
)

// TestPL011StateRoundTrip: registers, the receive FIFO with unread bytes and the
// interrupt line survive SaveState → LoadState into a fresh UART, which then reads
// the same bytes in order; bad state is refused.
func TestPL011StateRoundTrip(t *testing.T) {
	be := &plBackend{}
	var line plLine
	u := NewPL011(be, &line)
	plWr(u, plLCRH, lcrFEN|0x60)
	plWr(u, plIBRD, 13)
	plWr(u, plFBRD, 1)
	plWr(u, plIMSC, intRX|intRT)
	for _, b := range []byte("hello") {
		be.recv(b)
	}
	if !line.level {
		t.Fatal("receive interrupt not raised")
	}
	s, err := u.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	be2 := &plBackend{}
	var line2 plLine
	v := NewPL011(be2, &line2)
	if err := v.LoadState(s); err != nil {
		t.Fatal(err)
	}
	if !line2.level {
		t.Fatal("restored UART does not drive its line")
	}
	for _, off := range []uint64{plLCRH, plIBRD, plFBRD, plIMSC, plRIS, plMIS, plFR, plCR, plIFLS} {
		if a, b := plRd(u, off), plRd(v, off); a != b {
			t.Fatalf("register %#x: restored %#x, saved %#x", off, b, a)
		}
	}
	var got []byte
	for plRd(v, plFR)&frRXFE == 0 {
		got = append(got, byte(plRd(v, plDR)))
	}
	if string(got) != "hello" || line2.level {
		t.Fatalf("restored FIFO read %q, line %v", got, line2.level)
	}
	for _, bad := range []bus.State{{Name: "pl031", Version: 1, Data: s.Data}, {Name: "pl011", Version: 2, Data: s.Data},
		{Name: "pl011", Version: 1, Data: s.Data[:len(s.Data)-1]}, {Name: "pl011", Version: 1, Data: append(append([]byte{}, s.Data...), 0)}} {
		if err := v.LoadState(bad); err == nil {
			t.Fatalf("bad state %q v%d (%d bytes) accepted", bad.Name, bad.Version, len(bad.Data))
		}
	}
}

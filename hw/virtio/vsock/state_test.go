package vsock

import (
	"encoding/binary"
	"testing"
	"time"

	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

// TestStateRoundTrip: the restored device sends TRANSPORT_RESET into the event buffer
// the driver posted before the save; a device of another guest CID refuses the state.
func TestStateRoundTrip(t *testing.T) {
	d := newDevice(t, newPairBackend())
	g := newGuest(t, d)
	if err := g.tr.Quiesce(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := d.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	data, err := g.tr.SaveState()
	g.tr.Thaw()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := g.ev.PopUsed(); ok {
		t.Fatal("event sent before the restore")
	}
	m2 := g.m.Clone()
	defer m2.Close()
	d2 := newDevice(t, newPairBackend())
	tr2 := virtio.NewTransport(d2, m2, &virtiotest.IRQ{})
	if err := tr2.LoadState(data); err != nil {
		t.Fatal(err)
	}
	defer tr2.Reset()
	ev2 := g.ev.On(m2)
	id, n, ok := ev2.WaitUsed(5 * time.Second)
	if !ok || n != 4 || binary.LittleEndian.Uint32(m2.At(g.evGPA[id], 4)) != EventTransportReset {
		t.Fatalf("no TRANSPORT_RESET after the restore (%d %d %v)", id, n, ok)
	}
	other, err := New(Config{GuestCID: guestCID + 1, Backend: newPairBackend()})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.LoadState(st); err == nil {
		t.Fatal("state of guest-cid 3 loaded into guest-cid 4")
	}
}

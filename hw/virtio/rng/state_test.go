package rng

import (
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

// TestStateRoundTrip: the restored device goes on serving requests where the ring
// stopped.
func TestStateRoundTrip(t *testing.T) {
	m := virtiotest.NewMem(0x1000_0000, 1<<20)
	defer m.Close()
	r := virtiotest.NewRing(m, 16, 0x1000_0000, 512<<10)
	tr := virtiotest.Bringup(New(), m, &virtiotest.IRQ{}, 0, r)
	defer tr.Reset()
	r.Add(virtiotest.Buf{Write: 64})
	tr.Notify(0)
	if _, n, ok := r.WaitUsed(5 * time.Second); !ok || n != 64 {
		t.Fatal("request before the save")
	}
	if err := tr.Quiesce(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	data, err := tr.SaveState()
	tr.Thaw()
	if err != nil {
		t.Fatal(err)
	}
	m2 := m.Clone()
	defer m2.Close()
	r2 := r.On(m2)
	tr2 := virtio.NewTransport(New(), m2, &virtiotest.IRQ{})
	if err := tr2.LoadState(data); err != nil {
		t.Fatal(err)
	}
	defer tr2.Reset()
	h, _ := r2.Add(virtiotest.Buf{Write: 32})
	tr2.Notify(0)
	if id, n, ok := r2.WaitUsed(5 * time.Second); !ok || id != uint32(h) || n != 32 || r2.UsedIdx() != 2 {
		t.Fatalf("request after restore: %d %d %v", id, n, ok)
	}
	if err := New().LoadState(bus.State{Name: "virtio-rng", Version: 1, Data: []byte{1}}); err == nil {
		t.Fatal("a non-empty section loaded")
	}
}

package console

import (
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

// TestStateRoundTrip: host input the guest has not taken yet and the console's open
// state survive a save and a load into a new device over a copy of the guest memory.
func TestStateRoundTrip(t *testing.T) {
	con := &fakeChar{}
	d, err := New(Config{Ports: []Port{{Console: true, Backend: con}}})
	if err != nil {
		t.Fatal(err)
	}
	dr := newDriver(t, d, false)
	con.send("typed ahead")
	waitFor(t, "input held", func() bool { d.mu.Lock(); defer d.mu.Unlock(); return len(d.ports[0].input) == 11 })
	if err := dr.tr.Quiesce(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := d.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	data, err := dr.tr.SaveState()
	dr.tr.Thaw()
	if err != nil {
		t.Fatal(err)
	}

	con2 := &fakeChar{}
	d2, err := New(Config{Ports: []Port{{Console: true, Backend: con2}}})
	if err != nil {
		t.Fatal(err)
	}
	m2 := dr.mem.Clone()
	defer m2.Close()
	dr2 := &driver{t: t, mem: m2, bufs: map[[2]int]uint64{}}
	for _, r := range dr.rings {
		dr2.rings = append(dr2.rings, r.On(m2))
	}
	dr2.tr = virtio.NewTransport(d2, m2, &virtiotest.IRQ{})
	if err := dr2.tr.LoadState(data); err != nil {
		t.Fatal(err)
	}
	defer dr2.tr.Reset()
	dr2.post(0, 64)
	if got := string(dr2.recv(0)); got != "typed ahead" {
		t.Fatalf("input after restore %q", got)
	}
	dr2.send(1, []byte("$ "))
	waitFor(t, "output", func() bool { return con2.output() == "$ " })
	multi, _ := New(Config{Multiport: true, Ports: []Port{{Console: true}, {Name: "x"}}})
	for _, bad := range []bus.State{{Name: "virtio-console", Version: 2, Data: st.Data}, {Name: "virtio-console", Version: 1, Data: st.Data[:5]}} {
		if err := d2.LoadState(bad); err == nil {
			t.Errorf("bad section (v%d, %d bytes) loaded", bad.Version, len(bad.Data))
		}
	}
	if err := multi.LoadState(st); err == nil {
		t.Error("state of a one-port device loaded into a two-port one")
	}
}

package pci

import (
	"bytes"
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/virtio/rng"
	"gemu/hw/virtio/virtiotest"
)

// bringup programs the BARs, MSI-X (vector 0 config, 1 the queue) and one queue on
// ring, as Linux does, and returns the common config and notify addresses.
func bringup(t *testing.T, g *guest, ring *virtiotest.Ring) (common, notify uint64) {
	t.Helper()
	g.setCfg32(0x20, barBase)
	g.setCfg32(0x24, 0)
	g.setCfg32(0x14, msixBase)
	g.setCfg16(0x04, 0x0006)
	caps := g.caps()
	common = barBase + uint64(caps[capCommon][1])
	notify = barBase + uint64(caps[capNotify][1])
	for v := uint64(0); v < 2; v++ {
		e := msixBase + 16*v
		g.wr(e, 4, 0xfee00000)
		g.wr(e+4, 4, 0)
		g.wr(e+8, 4, 0x40+v)
		g.wr(e+12, 4, 0)
	}
	g.setCfg16(msixCap(g)+2, 0x8000)
	g.wr(common+ccStatus, 1, 1|2)
	g.wr(common+ccDriverFeatureSel, 4, 1)
	g.wr(common+ccDriverFeature, 4, 1)
	g.wr(common+ccStatus, 1, 1|2|8)
	g.wr(common+ccConfigMSIX, 2, 0)
	g.wr(common+ccQueueSelect, 2, 0)
	g.wr(common+ccQueueMSIX, 2, 1)
	qc := ring.Config()
	g.wr(common+ccQueueSize, 2, uint64(qc.Size))
	g.wr(common+ccQueueDesc, 8, qc.Desc)
	g.wr(common+ccQueueDriver, 8, qc.Driver)
	g.wr(common+ccQueueDevice, 8, qc.Device)
	g.wr(common+ccQueueEnable, 2, 1)
	g.wr(common+ccStatus, 1, 1|2|8|4)
	return common, notify
}

func msixCap(g *guest) uint32 {
	for p, n := uint32(g.cfg8(0x34)), 0; p != 0 && n < 48; p, n = uint32(g.cfg8(p+1)), n+1 {
		if g.cfg8(p) == 0x11 {
			return p
		}
	}
	return 0
}

func (g *guest) lastMSI() (uint32, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.msis) == 0 {
		return 0, 0
	}
	return g.msis[len(g.msis)-1], len(g.msis)
}

// TestStateRoundTrip: a running virtio-pci function comes back on a new bus over a
// copy of guest memory with its BARs, MSI-X table and enable, vectors, selectors and
// queue; the next request completes and interrupts through the restored MSI-X vector.
func TestStateRoundTrip(t *testing.T) {
	mem := virtiotest.NewMem(0x4000_0000, 16<<20)
	defer mem.Close()
	g, d := newGuest(t, rng.New(), mem, Hooks{})
	defer d.Reset()
	ring := virtiotest.NewRing(mem, 16, 0x4000_0000, 1<<20)
	common, notify := bringup(t, g, ring)
	ring.Add(virtiotest.Buf{Write: 64})
	g.wr(notify, 2, 0)
	if _, _, ok := ring.WaitUsed(5 * time.Second); !ok {
		t.Fatal("request before the save")
	}
	waitFor(t, func() bool { _, n := g.lastMSI(); return n == 1 })
	g.wr(common+ccDeviceFeatureSel, 4, 1)
	if err := d.Transport().Quiesce(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	s, err := d.SaveState()
	d.Transport().Thaw()
	if err != nil {
		t.Fatal(err)
	}

	mem2 := mem.Clone()
	defer mem2.Close()
	g2, d2 := newGuest(t, rng.New(), mem2, Hooks{})
	if err := d2.LoadState(s); err != nil {
		t.Fatal(err)
	}
	defer d2.Reset()
	for _, r := range []struct {
		off uint64
		n   int
	}{{ccStatus, 1}, {ccDeviceFeatureSel, 4}, {ccDeviceFeature, 4}, {ccConfigMSIX, 2}, {ccQueueMSIX, 2}, {ccQueueEnable, 2},
		{ccQueueSize, 2}, {ccQueueDesc, 8}, {ccQueueDriver, 8}, {ccQueueDevice, 8}, {ccConfigGen, 1}} {
		if a, b := g.rd(common+r.off, r.n), g2.rd(common+r.off, r.n); a != b {
			t.Errorf("common config %#x: %#x restored, %#x saved", r.off, b, a)
		}
	}
	if a, b := g.cfg32(0x20), g2.cfg32(0x20); a != b {
		t.Errorf("BAR4 %#x restored, %#x saved", b, a)
	}
	ring2 := ring.On(mem2)
	ring2.Add(virtiotest.Buf{Write: 32})
	g2.wr(notify, 2, 0)
	if _, n, ok := ring2.WaitUsed(5 * time.Second); !ok || n != 32 || ring2.UsedIdx() != 2 {
		t.Fatal("request after restore")
	}
	waitFor(t, func() bool { _, n := g2.lastMSI(); return n == 1 })
	if v, _ := g2.lastMSI(); v != 0x41 {
		t.Fatalf("MSI data %#x after restore, want the queue vector's 0x41", v)
	}
	for _, bad := range []bus.State{{Name: "virtio-mmio", Version: 1, Data: s.Data}, {Name: "virtio-pci", Version: 1, Data: s.Data[:10]},
		{Name: "virtio-pci", Version: 1, Data: bytes.Repeat([]byte{0xff}, 64)}} {
		_, d3 := newGuest(t, rng.New(), mem2, Hooks{})
		if err := d3.LoadState(bad); err == nil {
			t.Errorf("section %q (%d bytes) loaded", bad.Name, len(bad.Data))
		}
	}
}

package mmio

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

// stEcho is echoDev with a state section: its configuration bytes.
type stEcho struct{ *echoDev }

func (e stEcho) SaveState() (bus.State, error) {
	return bus.State{Name: "echo", Version: 1, Data: append([]byte(nil), e.cfg[:]...)}, nil
}
func (e stEcho) LoadState(s bus.State) error {
	if s.Name != "echo" || s.Version != 1 || len(s.Data) != len(e.cfg) {
		return fmt.Errorf("echo: cannot load %q", s.Name)
	}
	copy(e.cfg[:], s.Data)
	return nil
}

// TestStateRoundTrip: a running slot saved with an interrupt pending comes back on new
// memory with its registers, its pending interrupt and line, the device's section, and
// a queue that goes on where it stopped.
func TestStateRoundTrip(t *testing.T) {
	m := virtiotest.NewMem(base, 1<<20)
	defer m.Close()
	r := virtiotest.NewRing(m, 16, base, 256<<10)
	ln := &line{}
	dev := stEcho{&echoDev{cfg: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}}}
	d := New(dev, m, ln)
	if _, err := (&Device{}).SaveState(); err == nil {
		t.Fatal("an empty slot saved")
	}
	setup(t, d, r, 1<<virtio.FVersion1|1<<virtio.FEventIdx)
	h, _ := r.Add(virtiotest.Buf{Write: 8})
	wr(d, RegQueueNotify, 0)
	if id, _, ok := r.WaitUsed(10 * time.Second); !ok || id != uint32(h) {
		t.Fatalf("first request: %d %v", id, ok)
	}
	for d.InterruptStatus() == 0 {
		time.Sleep(time.Millisecond)
	}
	wr(d, RegDriverFeaturesSel, 1)
	if err := d.Transport().Quiesce(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	s, err := d.SaveState()
	d.Transport().Thaw()
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "virtio-mmio" || s.Version != StateVersion {
		t.Fatalf("section %q v%d", s.Name, s.Version)
	}

	m2 := m.Clone()
	defer m2.Close()
	r2 := r.On(m2)
	ln2 := &line{}
	dev2 := stEcho{&echoDev{}}
	d2 := New(dev2, m2, ln2)
	if err := d2.LoadState(s); err != nil {
		t.Fatal(err)
	}
	defer d2.Reset()
	defer d.Reset()
	if dev2.cfg != dev.cfg {
		t.Fatalf("device section: %v", dev2.cfg)
	}
	if lv, _ := ln2.get(); !lv || d2.InterruptStatus() != IntUsedBuffer {
		t.Fatalf("interrupt status %#x line %v", d2.InterruptStatus(), lv)
	}
	for _, reg := range []uint64{RegStatus, RegInterruptStatus, RegDriverFeaturesSel, RegDriverFeatures, RegQueueReady,
		RegQueueNum, RegQueueDescLow, RegQueueDriverLow, RegQueueDeviceLow, RegConfigGeneration, RegConfig} {
		if a, b := rd(d, reg), rd(d2, reg); a != b {
			t.Errorf("register %#x: %#x after restore, %#x before", reg, b, a)
		}
	}
	wr(d2, RegInterruptACK, IntUsedBuffer)
	h2, g := r2.Add(virtiotest.Buf{Write: 8})
	wr(d2, RegQueueNotify, 0)
	if id, n, ok := r2.WaitUsed(10 * time.Second); !ok || id != uint32(h2) || n != 4 {
		t.Fatalf("request after restore: %d %d %v", id, n, ok)
	}
	if !bytes.Equal(m2.At(g[0], 4), []byte{8, 0, 0, 0}) || r2.UsedIdx() != 2 {
		t.Fatalf("after restore: used idx %d", r2.UsedIdx())
	}
	// Bad sections are refused.
	for _, bad := range []bus.State{{Name: "virtio-pci", Version: 1, Data: s.Data}, {Name: "virtio-mmio", Version: 2, Data: s.Data},
		{Name: "virtio-mmio", Version: 1, Data: s.Data[:3]}, {Name: "virtio-mmio", Version: 1, Data: append([]byte{0xff}, s.Data[1:]...)}} {
		if err := New(stEcho{&echoDev{}}, m2, nil).LoadState(bad); err == nil {
			t.Errorf("section %q v%d (%d bytes) loaded", bad.Name, bad.Version, len(bad.Data))
		}
	}
}

package net

import (
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

// TestStateRoundTrip: the receive filter (rx modes, MAC tables, the MAC the driver
// set), the link state and a receive buffer the device held come back on a new device
// over a copy of the guest memory.
func TestStateRoundTrip(t *testing.T) {
	r := newRig(t, Config{}, allFeatures)
	other := [6]byte{0x52, 0x54, 0, 0, 0, 9}
	newMAC := [6]byte{0x52, 0x54, 0, 0xab, 0xcd, 0xef}
	if r.ctrl(t, CtrlRx, CtrlRxPromisc, []byte{0}) != CtrlOK ||
		r.ctrl(t, CtrlMAC, CtrlMACTableSet, append(macTableBytes(other), macTableBytes()...)) != CtrlOK ||
		r.ctrl(t, CtrlMAC, CtrlMACAddrSet, newMAC[:]) != CtrlOK {
		t.Fatal("control commands")
	}
	// A frame larger than the one buffer available: the device holds the buffer.
	h, _ := r.rx.Add(virtiotest.Buf{Write: 100})
	big := append(eth(other, hostMAC, 0x0800), make([]byte, 300)...)
	if r.be.deliver(big) {
		t.Fatal("frame taken without room for it")
	}
	r.d.SetLink(false)
	if err := r.tr.Quiesce(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := r.d.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	data, err := r.tr.SaveState()
	r.tr.Thaw()
	if err != nil {
		t.Fatal(err)
	}

	m2 := r.m.Clone()
	defer m2.Close()
	be2 := &fakeBackend{}
	d2, err := New(Config{Backend: be2, MAC: guestMAC})
	if err != nil {
		t.Fatal(err)
	}
	tr2 := virtio.NewTransport(d2, m2, &virtiotest.IRQ{})
	if err := tr2.LoadState(data); err != nil {
		t.Fatal(err)
	}
	defer tr2.Reset()
	if d2.MAC() != newMAC {
		t.Fatalf("MAC %x", d2.MAC())
	}
	var cfg [configSize]byte
	d2.ReadConfig(0, cfg[:])
	if cfg[6]&StatusLinkUp != 0 || d2.link.Load() {
		t.Fatal("link up after restoring a link that was down")
	}
	d2.SetLink(true)
	rx2 := r.rx.On(m2)
	if be2.deliver(eth([6]byte{0x52, 0x54, 0, 0, 0, 7}, hostMAC, 0x0800)) != true || d2.RxFrames.Load() != 0 {
		t.Fatal("a frame for a MAC outside the restored filter was received")
	}
	h2, _ := rx2.Add(virtiotest.Buf{Write: 2048})
	if !be2.deliver(big) {
		t.Fatal("the restored device did not take the frame")
	}
	// The frame spans the held buffer (popped again) and the new one (MRG_RXBUF).
	if id, n, ok := rx2.PopUsed(); !ok || id != uint32(h) || n != 100 {
		t.Fatalf("first used after restore: head %d len %d %v, want the held head %d", id, n, ok, h)
	}
	if id, n, ok := rx2.PopUsed(); !ok || id != uint32(h2) || n != uint32(HdrLen+len(big)-100) {
		t.Fatalf("second used after restore: head %d len %d %v, want %d", id, n, ok, h2)
	}
	// Sections of another name or version, and bad values, are refused.
	for _, bad := range []bus.State{{Name: "virtio-blk", Version: 1, Data: st.Data}, {Name: "virtio-net", Version: 9, Data: st.Data},
		{Name: "virtio-net", Version: 1, Data: st.Data[:len(st.Data)-3]}} {
		if err := d2.LoadState(bad); err == nil {
			t.Errorf("section %q v%d loaded", bad.Name, bad.Version)
		}
	}
}

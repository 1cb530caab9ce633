package kvm

import (
	"strings"
	"testing"
	"time"

	"gemu/accel"
)

// TestIOEventFD registers a doorbell on port portWide: the guest's three writes to it
// must not exit to the bus (the device log has none of them) and must signal the
// doorbell's function from the accelerator's goroutine. After cancel the same port
// exits to the bus again.
func TestIOEventFD(t *testing.T) {
	g := newGuest(t, 1)
	rang := make(chan struct{}, 16)
	cancel, err := g.vm.IOEventFD(portWide, 1, true, func() { rang <- struct{}{} })
	if err != nil {
		t.Skipf("no ioeventfd here: %v", err)
	}
	a := newAsm().op(0xba).op(a16(portWide)...) // mov dx,portWide
	for _, v := range []byte{1, 2, 3} {
		a.op(0xb0, v, 0xee) // mov al,v; out dx,al
	}
	a.op(0xb0, 4, 0xe6, portOut8) // mov al,4; out portOut8,al
	a.op(0xe6, portDone)          // out portDone,al
	a.op(0xf4)                    // hlt
	g.realMode(a.bytes())
	g.expect(accel.PowerOff)
	select {
	case <-rang:
	case <-time.After(5 * time.Second):
		t.Fatal("doorbell function not called within 5 s of the guest's writes")
	}
	if log := g.dev.tail(); strings.Contains(log, "pio 0x1e0") {
		t.Errorf("doorbell writes reached the bus: %s", log)
	}
	cancel()
	cancel() // idempotent
}

// TestIRQFDMSI delivers vector 0x42 through an irqfd bound to an MSI route (as
// virtio-pci's MSI-X vectors are on KVM), after re-targeting the route from vector
// 0x41 with Update; the guest's handler for 0x42 reports it.
func TestIRQFDMSI(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("no usable KVM on this host: %v", err)
	}
	var route accel.MSIRoute
	msiGuest(t, 0x42, func(g *guest) error {
		r, err := g.vm.NewMSIRoute(0xfee00000, 0x41)
		if err != nil {
			return err
		}
		route = r
		if err := r.Update(0xfee00000, 0x42); err != nil {
			return err
		}
		return r.Fire()
	})
	if route != nil {
		route.Close()
	}
}

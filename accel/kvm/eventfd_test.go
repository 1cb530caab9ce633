package kvm

import (
	"bytes"
	"encoding/binary"
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
	g := newGuest(t, 1)
	r, err := g.vm.NewMSIRoute(0xfee00000, 0x41)
	if err != nil {
		t.Skipf("no irqfd MSI routing here: %v", err)
	}
	defer r.Close()
	if err := r.Update(0xfee00000, 0x42); err != nil {
		t.Fatal(err)
	}
	mov32 := func(addr, v uint32) []byte {
		return cat([]byte{0xc7, 0x05}, binary.LittleEndian.AppendUint32(nil, addr), binary.LittleEndian.AppendUint32(nil, v))
	}
	const handler = 0x100
	main := newAsm().
		op(0xfa).
		op(0xb0, 0xff, 0xe6, 0x21, 0xe6, 0xa1).
		op(mov32(0xfee000f0, 0x1ff)...).
		op(0xe6, portReady).
		op(0xfb).
		label("wait").op(0xf4).jcc(0xeb, "wait")
	code := main.bytes()
	code = append(code, make([]byte, handler-len(code))...)
	code = append(code, newAsm().
		op(0xb0, 0x42, 0xe6, portOut8).
		op(mov32(0xfee000b0, 0)...).
		op(0xe6, portDone, 0xf4).
		bytes()...)
	off := uint32(0x10000 + handler)
	g.load(0x700+0x42*8, cat(a16(uint16(off)), a16(0x08), []byte{0, 0x8e}, a16(uint16(off>>16))))
	g.protectedMode(code, 0x43*8-1)
	errc := make(chan error, 1)
	go func() {
		<-g.dev.ready
		errc <- r.Fire()
	}()
	g.expect(accel.PowerOff)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := g.dev.bytes[portOut8]; !bytes.Equal(got, []byte{0x42}) {
		t.Errorf("guest reported % x, want 42", got)
	}
}

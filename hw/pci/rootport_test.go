package pci

import (
	"testing"

	"gemu/hw/bus"
)

// ecamBus reads/writes bus n's configuration space through the rig's ECAM window.
func (r *rig) ecamBusRead(n, dev, fn, reg uint32, size int) uint32 {
	return r.ecamRead(n<<5|dev, fn, reg, size)
}

func (r *rig) ecamBusWrite(n, dev, fn, reg uint32, size int, v uint32) {
	r.ecamWrite(n<<5|dev, fn, reg, size, v)
}

// TestRootPortHotplugAsPciehp plays Linux's pciehp against a root port at 00:03.0, step
// by step as drivers/pci/hotplug/pciehp_hpc.c programs it: bus numbers, slot interrupts
// on INTx, a hot-added device (presence detect changed + attention button, as QEMU's
// pcie_cap_slot_plug_cb), power on (the link comes up, the device answers on bus 1),
// then the unplug request (attention button), power and indicator off, and the device
// gone with presence-detect-changed raised. Every slot control write completes its
// command at once.
func TestRootPortHotplugAsPciehp(t *testing.T) {
	r := newRig(t)
	rp, err := NewRootPort(r.pci, RootPortConfig{Chassis: 1, Slot: 5})
	must(t, err)
	must(t, r.pci.Add(3, 0, rp))
	exp := rp.ExpressOffset()
	if v := r.ecamRead(3, 0, 0, 4); v != 0x000c1b36 {
		t.Fatalf("ids %#x", v)
	}
	if ht := r.ecamRead(3, 0, RegHeaderType, 1); ht != 1 {
		t.Fatalf("header type %#x, want 1 (bridge)", ht)
	}
	if cl := r.ecamRead(3, 0, RegRevision, 4) >> 16; cl != 0x0604 {
		t.Fatalf("class %#x", cl)
	}
	capSlot := r.ecamRead(3, 0, exp+expSltCap, 4)
	if capSlot&(SltCapHPC|SltCapABP|SltCapPCP|SltCapPIP|SltCapAIP) != SltCapHPC|SltCapABP|SltCapPCP|SltCapPIP|SltCapAIP || capSlot>>19 != 5 {
		t.Fatalf("slot capabilities %#x", capSlot)
	}
	if f := r.ecamRead(3, 0, exp+expFlags, 2); f&0x100 == 0 || (f>>4)&0xf != ExpressRootPort {
		t.Fatalf("PCIe flags %#x", f)
	}
	// Bus numbers, as the kernel assigns them.
	r.ecamBusWrite(0, 3, 0, RegPrimaryBus, 4, 0x00010100) // primary 0, secondary 1, subordinate 1
	if v := r.ecamBusRead(1, 0, 0, 0, 4); v != 0xffffffff {
		t.Fatalf("empty slot answers %#x", v)
	}
	sta := func() uint16 { return uint16(r.ecamRead(3, 0, exp+expSltSta, 2)) }
	ctl := func() uint16 { return uint16(r.ecamRead(3, 0, exp+expSltCtl, 2)) }
	wctl := func(v uint16) { r.ecamWrite(3, 0, exp+expSltCtl, 2, uint32(v)) }
	wsta := func(v uint16) { r.ecamWrite(3, 0, exp+expSltSta, 2, uint32(v)) }
	if ctl()&SltCtlPCC == 0 || ctl()&SltCtlPIC != SltCtlPICOff {
		t.Fatalf("empty slot control %#x: want power and indicator off", ctl())
	}
	// pciehp probe: clear stale events, enable the interrupts.
	wsta(0x1f)
	if sta()&SltStaPDS != 0 {
		t.Fatal("presence with nothing plugged")
	}
	line := 3 % 4 // INTA of slot 3 under the rotating swizzle
	r.ecamWrite(3, 0, RegCommand, 2, CmdMemory|CmdBusMaster)
	wctl(ctl() | SltCtlHPIE | SltCtlCCIE | SltCtlPDCE | SltCtlABPE)
	if sta()&SltStaCC == 0 || !r.line(line) {
		t.Fatalf("slot control write: status %#x line %v, want command completed and INTx", sta(), r.line(line))
	}
	wsta(SltStaCC)
	if r.line(line) {
		t.Fatal("INTx still asserted after the guest cleared command completed")
	}

	// Hot add.
	dev, _, _ := newDev(t, 0x100)
	must(t, rp.Secondary().Add(0, 0, dev))
	must(t, rp.Plug(true))
	if s := sta(); s&(SltStaPDS|SltStaPDC|SltStaABP) != SltStaPDS|SltStaPDC|SltStaABP || !r.line(line) {
		t.Fatalf("after hot add: status %#x line %v", s, r.line(line))
	}
	wsta(SltStaPDC | SltStaABP)
	if r.line(line) {
		t.Fatal("INTx asserted after the events were cleared")
	}
	if r.ecamRead(3, 0, exp+expLnkSta, 2)&lnkStaDLLLA != 0 {
		t.Fatal("link active before the slot has power")
	}
	// Power on with the indicator on (pciehp_power_on_slot, then pciehp_set_indicators).
	wctl(ctl()&^SltCtlPCC | SltCtlPIC)
	wsta(SltStaCC)
	wctl(ctl()&^SltCtlPIC | SltCtlPICOn)
	wsta(SltStaCC)
	if r.ecamRead(3, 0, exp+expLnkSta, 2)&lnkStaDLLLA == 0 {
		t.Fatal("link not active after power on")
	}
	if v := r.ecamBusRead(1, 0, 0, 0, 4); v != 0x10411af4 {
		t.Fatalf("device behind the port reads %#x", v)
	}
	if v := r.ecamBusRead(1, 1, 0, 0, 4); v != 0xffffffff {
		t.Fatalf("device 1 behind a root port answers %#x", v)
	}
	if v := r.ecamBusRead(2, 0, 0, 0, 4); v != 0xffffffff {
		t.Fatalf("bus 2 answers %#x", v)
	}

	// Unplug request: the attention button; nothing leaves until the guest powers off.
	gone := make(chan struct{})
	must(t, rp.RequestUnplug(func() { close(gone) }))
	if sta()&SltStaABP == 0 || !r.line(line) {
		t.Fatalf("attention button not signalled: status %#x", sta())
	}
	wsta(SltStaABP)
	wctl(ctl()&^SltCtlPIC | 2<<8) // blink
	wsta(SltStaCC)
	wctl(ctl() | SltCtlPCC) // power off, indicator still blinking
	wsta(SltStaCC)
	select {
	case <-gone:
		t.Fatal("device left before the power indicator went off")
	default:
	}
	wctl(ctl() | SltCtlPICOff)
	select {
	case <-gone:
	default:
		t.Fatal("device still there with power and indicator off")
	}
	if s := sta(); s&SltStaPDS != 0 || s&SltStaPDC == 0 {
		t.Fatalf("after unplug: status %#x, want presence clear and changed", s)
	}
	if _, err := rp.Secondary().Remove(0, 0); err != nil {
		t.Fatal(err)
	}
	if v := r.ecamBusRead(1, 0, 0, 0, 4); v != 0xffffffff {
		t.Fatalf("removed device still answers %#x", v)
	}
}

// TestRootPortMSIX: with MSI-X enabled the hotplug interrupt is vector 0's message
// (the PCIe capability's interrupt message number), not INTx.
func TestRootPortMSIX(t *testing.T) {
	r := newRig(t)
	rp, err := NewRootPort(r.pci, RootPortConfig{Slot: 1})
	must(t, err)
	must(t, r.pci.Add(1, 0, rp))
	exp := rp.ExpressOffset()
	r.ecamWrite(1, 0, RegBAR0, 4, 0x1000_0000)
	r.ecamWrite(1, 0, RegCommand, 2, CmdMemory|CmdBusMaster)
	// Vector 0: address 0xfee0_1000, data 0x44, unmasked; then MSI-X on.
	for i, v := range []uint32{0xfee0_1000, 0, 0x44, 0} {
		r.mmio.Write(bus.Host, 0x1000_0000+uint64(4*i), []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)})
	}
	m := rp.msix.Offset()
	r.ecamWrite(1, 0, m+2, 2, 0x8000)
	r.ecamWrite(1, 0, exp+expSltCtl, 2, uint32(SltCtlPCC|SltCtlPICOff|SltCtlHPIE|SltCtlPDCE|SltCtlABPE))
	r.takeMSIs() // command completed is not enabled: nothing, but be safe
	dev, _, _ := newDev(t, 0x200)
	must(t, rp.Secondary().Add(0, 0, dev))
	must(t, rp.Plug(true))
	got := r.takeMSIs()
	if len(got) != 1 || got[0] != (msg{0xfee0_1000, 0x44}) {
		t.Fatalf("MSI-X messages %v", got)
	}
	if r.line(1) {
		t.Fatal("INTx asserted with MSI-X on")
	}
	// Unplug of an unpowered slot completes at once (the guest never powered it).
	done := false
	must(t, rp.RequestUnplug(func() { done = true }))
	if !done || rp.Present() {
		t.Fatalf("unplug of an unpowered slot: done %v present %v", done, rp.Present())
	}
}

// TestBridgeINTxSwizzle: a device behind a bridge at slot 2 raising INTA lands on the
// bridge's INTA line ((slot 0 + pin 0) % 4 swizzled to slot 2), and shares it wired-OR
// with the bridge's own INTA.
func TestBridgeINTxSwizzle(t *testing.T) {
	r := newRig(t)
	rp, err := NewRootPort(r.pci, RootPortConfig{})
	must(t, err)
	must(t, r.pci.Add(2, 0, rp))
	dev, _, _ := newDev(t, 0x300)
	must(t, rp.Secondary().Add(0, 0, dev))
	dev.SetIRQ(true)
	if !r.line(2) {
		t.Fatal("device INTA behind the bridge did not raise line 2")
	}
	rp.ConfigSpace.SetIRQ(true)
	dev.SetIRQ(false)
	if !r.line(2) {
		t.Fatal("line dropped while the bridge still asserts it")
	}
	rp.ConfigSpace.SetIRQ(false)
	if r.line(2) {
		t.Fatal("line still up")
	}
}

package qdev

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"gemu/block/backend"
	"gemu/hw/bus"
	"gemu/hw/netdev"
	"gemu/hw/pci"
	"gemu/hw/virtio/virtiotest"
)

// expressBoard is a fakeBoard whose bus is a PCI Express root (as virt's).
type expressBoard struct{ fakeBoard }

func (*expressBoard) PCIeRoot() bool { return true }

func cfg16(f pci.Function, off uint32) uint16 {
	var b [2]byte
	f.ConfigRead(off, b[:])
	return binary.LittleEndian.Uint16(b[:])
}

func cfgw16(f pci.Function, off uint32, v uint16) {
	f.ConfigWrite(off, binary.LittleEndian.AppendUint16(nil, v))
}

// TestHotplugRootPort: -device pcie-root-port takes a root-bus slot; device_add puts a
// NIC behind the named port (and, without bus=, behind the first free one), refuses
// the root bus, an occupied port, an unknown bus and a duplicate id with QEMU's texts;
// device_del of a powered slot waits for the guest, then frees the netdev for another
// NIC; device_del of an unknown id is ErrDeviceNotFound.
func TestHotplugRootPort(t *testing.T) {
	mem := virtiotest.NewMem(0x4000_0000, 1<<20)
	defer mem.Close()
	b := &expressBoard{fakeBoard{mem: mem, bus: pci.NewBus(pci.BusConfig{MMIO: bus.New()})}}
	e := NewEnv(b, map[string]*backend.Backend{}, nil)
	e.Netdevs = map[string]netdev.Backend{"n0": fakeNet{}, "n1": fakeNet{}}
	for _, s := range []string{"driver=pcie-root-port,id=rp1,chassis=1,slot=1", "driver=pcie-root-port,id=rp2,chassis=2,slot=2"} {
		if err := e.Add(p(s)); err != nil {
			t.Fatal(err)
		}
	}
	rp1, ok := b.bus.Function(2, 0).(*pci.RootPort)
	if !ok {
		t.Fatalf("slot 2 holds %T, want the root port", b.bus.Function(2, 0))
	}
	if err := e.Add(p("driver=pcie-root-port,id=rp1")); err == nil || !strings.Contains(err.Error(), "Duplicate device ID 'rp1'") {
		t.Fatalf("duplicate port id: %v", err)
	}
	for spec, want := range map[string]string{
		"driver=virtio-net-pci,netdev=n0,bus=pcie.0,id=x": "Bus 'pcie.0' does not support hotplugging",
		"driver=virtio-net-pci,netdev=n0,bus=nosuch,id=x": "Bus 'nosuch' not found",
		"driver=virtio-rng-pci":                           "expects a pluggable device type",
		"driver=virtio-net-device,netdev=n0":              "Bus 'virtio-mmio-bus' does not support hotplugging",
		"driver=nosuch":                                   "'nosuch' is not a valid device model name",
		"driver=virtio-net-pci,netdev=nonet,bus=rp1":      "Property 'virtio-net-device.netdev' can't find value 'nonet'",
	} {
		if err := e.Hotplug(p(spec)); err == nil || !strings.Contains(err.Error(), want) || strings.HasPrefix(err.Error(), "-device") {
			t.Errorf("%s: %v, want %q", spec, err, want)
		}
	}
	if e.NetdevUsed("n0") {
		t.Fatal("a failed device_add left netdev n0 taken")
	}
	if err := e.Hotplug(p("driver=virtio-net-pci,netdev=n0,bus=rp1,id=nic1")); err != nil {
		t.Fatal(err)
	}
	if rp1.Secondary().Function(0, 0) == nil || !rp1.Present() {
		t.Fatal("nothing behind rp1")
	}
	exp := rp1.ExpressOffset()
	if st := cfg16(rp1, exp+0x1a); st&(pci.SltStaPDS|pci.SltStaPDC|pci.SltStaABP) != pci.SltStaPDS|pci.SltStaPDC|pci.SltStaABP {
		t.Fatalf("slot status after device_add %#x", st)
	}
	for spec, want := range map[string]string{
		"driver=virtio-net-pci,netdev=n1,bus=rp1,id=nic2": "PCI: no slot/function available for virtio-net-pci, all in use or reserved",
		"driver=virtio-net-pci,netdev=n1,bus=rp2,id=nic1": "Duplicate device ID 'nic1'",
		"driver=virtio-net-pci,netdev=n0,bus=rp2,id=nic3": "can't take value 'n0', it's in use",
	} {
		if err := e.Hotplug(p(spec)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", spec, err, want)
		}
	}
	// No bus=: the first free port.
	if err := e.Hotplug(p("driver=virtio-net-pci,netdev=n1,id=nic4")); err != nil {
		t.Fatal(err)
	}
	rp2 := b.bus.Function(3, 0).(*pci.RootPort)
	if !rp2.Present() {
		t.Fatal("device_add without bus= did not land behind rp2")
	}
	if err := e.Hotplug(p("driver=virtio-net-pci,id=nic5")); err == nil || !strings.Contains(err.Error(), "Bus 'pcie.0' does not support hotplugging") {
		t.Fatalf("no free port: %v", err)
	}
	if err := e.Unplug("nosuch", nil); !errors.Is(err, ErrDeviceNotFound) {
		t.Fatalf("unplug nosuch: %v", err)
	}
	if err := e.Unplug("rp1", nil); err == nil || !strings.Contains(err.Error(), "does not support hotplugging") {
		t.Fatalf("unplug of a root port: %v", err)
	}
	// Power the slot on as the guest does, then unplug: the button first.
	cfgw16(rp1, exp+0x1a, 0xffff)
	cfgw16(rp1, exp+0x18, pci.SltCtlPICOn|pci.SltCtlAICOff|pci.SltCtlHPIE|pci.SltCtlABPE|pci.SltCtlPDCE)
	deleted := 0
	if err := e.Unplug("nic1", func() { deleted++ }); err != nil {
		t.Fatal(err)
	}
	if err := e.Unplug("nic1", func() { deleted++ }); err == nil || err.Error() != "Device nic1 is already in the process of unplug" {
		t.Fatalf("second unplug: %v", err)
	}
	if deleted != 0 || cfg16(rp1, exp+0x1a)&pci.SltStaABP == 0 {
		t.Fatal("unplug did not wait for the guest / press the button")
	}
	cfgw16(rp1, exp+0x18, pci.SltCtlPICOff|pci.SltCtlPCC|pci.SltCtlAICOff|pci.SltCtlHPIE)
	if deleted != 1 || rp1.Secondary().Function(0, 0) != nil || rp1.Present() {
		t.Fatalf("after power off: deleted %d, function %v", deleted, rp1.Secondary().Function(0, 0))
	}
	if e.NetdevUsed("n0") {
		t.Fatal("netdev n0 still taken after its NIC left")
	}
	if err := e.Hotplug(p("driver=virtio-net-pci,netdev=n0,bus=rp1,id=nic1")); err != nil {
		t.Fatalf("re-adding nic1 on n0: %v", err)
	}
	// A slot the guest never powered (rp2: nic4) lets go at once.
	if err := e.Unplug("nic4", func() { deleted++ }); err != nil || deleted != 2 {
		t.Fatalf("unplug of an unpowered slot: %v, deleted %d", err, deleted)
	}
}

// TestFailedDeviceAddLeavesNoNIC: a NIC device_add that fails to plug neither shows in
// info network nor takes a default MAC (QEMU 7.2 gives the next NIC 52:54:00:12:34:56).
func TestFailedDeviceAddLeavesNoNIC(t *testing.T) {
	mem := virtiotest.NewMem(0x4000_0000, 1<<20)
	defer mem.Close()
	b := &expressBoard{fakeBoard{mem: mem, bus: pci.NewBus(pci.BusConfig{MMIO: bus.New()})}}
	e := NewEnv(b, map[string]*backend.Backend{}, nil)
	e.Netdevs = map[string]netdev.Backend{"n0": fakeNet{}}
	if err := e.Add(p("driver=pcie-root-port,id=rp1")); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"driver=virtio-net-pci,bus=pcie.0,id=x", "driver=virtio-net-pci,netdev=n0,bus=nosuch"} {
		if err := e.Hotplug(p(s)); err == nil {
			t.Fatalf("%s plugged", s)
		}
	}
	if err := e.Hotplug(p("driver=virtio-net-pci,netdev=n0,bus=rp1,id=nic1")); err != nil {
		t.Fatal(err)
	}
	if n := e.NICs(); len(n) != 1 || n[0] != (NICInfo{"nic1", "virtio-net-pci", "52:54:00:12:34:56", "n0"}) {
		t.Fatalf("NICs %+v", n)
	}
}

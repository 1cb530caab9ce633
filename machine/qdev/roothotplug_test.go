package qdev

import (
	"encoding/binary"
	"strings"
	"testing"

	"gemu/block/backend"
	"gemu/hw/acpi"
	"gemu/hw/bus"
	"gemu/hw/netdev"
	"gemu/hw/pci"
	"gemu/hw/virtio/virtiotest"
)

// acpiHPBoard is a fakeBoard whose root bus hotplugs through the ACPI PCI hotplug
// block, as the pc board's.
type acpiHPBoard struct {
	fakeBoard
	hp      *acpi.PCIHotplug
	pending map[int]func()
}

func (b *acpiHPBoard) RootHotplugSlot(s int) bool { return s >= 2 && s < 32 }
func (b *acpiHPBoard) PlugRootSlot(s int)         { b.hp.Plug(s) }
func (b *acpiHPBoard) RequestRootUnplug(s int, done func()) error {
	b.pending[s] = done
	b.hp.RequestUnplug(s)
	return nil
}

func reg32(d bus.Device, off uint64) uint32 {
	var v [4]byte
	d.Read(bus.Host, off, v[:])
	return binary.LittleEndian.Uint32(v[:])
}

// TestRootBusACPIHotplug: on a board with ACPI PCI hotplug, device_add without bus=
// takes the first free root-bus slot and sets its PCIU bit; device_del sets PCID and
// the device stays until the guest's _EJ0 writes B0EJ, after which the slot, the
// netdev and the id are free again. A cold-plugged NIC is ejectable too.
func TestRootBusACPIHotplug(t *testing.T) {
	mem := virtiotest.NewMem(0x4000_0000, 1<<20)
	defer mem.Close()
	b := &acpiHPBoard{fakeBoard: fakeBoard{mem: mem, bus: pci.NewBus(pci.BusConfig{MMIO: bus.New()})}, pending: map[int]func(){}}
	b.hp = acpi.NewPCIHotplug(nil, 0xfffffffc, func(s int) {
		if f := b.pending[s]; f != nil {
			delete(b.pending, s)
			f()
		}
	})
	e := NewEnv(b, map[string]*backend.Backend{}, nil)
	e.Netdevs = map[string]netdev.Backend{"n0": fakeNet{}, "n1": fakeNet{}, "n2": fakeNet{}}
	if err := e.Add(p("driver=virtio-net-pci,netdev=n0,id=cold")); err != nil {
		t.Fatal(err)
	}
	if up, _ := b.hp.Pending(); up != 0 {
		t.Fatalf("a cold-plugged device raised PCIU %#x", up)
	}
	for spec, want := range map[string]string{
		"driver=virtio-net-pci,netdev=n1,bus=pci.1,id=x": "Bus 'pci.1' not found",
		"driver=virtio-net-pci,netdev=n1,addr=1,id=x":    "slot 1 of bus 'pci.0' has no hotplug",
		"driver=virtio-net-pci,netdev=n1,addr=5.2,id=x":  "hotplug of function 2 is not supported",
		"driver=virtio-net-pci,netdev=n1,id=cold":        "Duplicate device ID 'cold'",
	} {
		if err := e.Hotplug(p(spec)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", spec, err, want)
		}
	}
	if err := e.Hotplug(p("driver=virtio-net-pci,netdev=n1,id=nic1")); err != nil {
		t.Fatal(err)
	}
	if b.bus.Function(3, 0) == nil {
		t.Fatal("device_add without bus= did not take slot 3 (2 holds the cold NIC)")
	}
	if up, _ := b.hp.Pending(); up != 1<<3 {
		t.Fatalf("PCIU %#x after device_add into slot 3", up)
	}
	if err := e.Hotplug(p("driver=virtio-net-pci,netdev=n2,bus=pci.0,addr=7,id=nic2")); err != nil {
		t.Fatalf("bus=pci.0,addr=7: %v", err)
	}
	deleted := 0
	if err := e.Unplug("nic1", func() { deleted++ }); err != nil {
		t.Fatal(err)
	}
	if _, down := b.hp.Pending(); down != 1<<3 || deleted != 0 || b.bus.Function(3, 0) == nil {
		t.Fatalf("after device_del: PCID %#x, deleted %d, slot 3 %v", down, deleted, b.bus.Function(3, 0))
	}
	if err := e.Unplug("nic1", nil); err == nil || !strings.Contains(err.Error(), "already in the process of unplug") {
		t.Fatalf("second device_del: %v", err)
	}
	b.hp.Write(bus.Host, 0x08, binary.LittleEndian.AppendUint32(nil, 1<<3)) // _EJ0 of S18
	if deleted != 1 || b.bus.Function(3, 0) != nil || e.NetdevUsed("n1") {
		t.Fatalf("after _EJ0: deleted %d, slot 3 %v, n1 used %v", deleted, b.bus.Function(3, 0), e.NetdevUsed("n1"))
	}
	if reg32(b.hp, 0x04) != 0 {
		t.Fatal("PCID still set after the eject")
	}
	if _, ok := e.DeviceIDs()["nic1"]; ok {
		t.Fatal("nic1 still listed after the eject")
	}
	// The freed slot is taken again by the next device_add.
	if err := e.Hotplug(p("driver=virtio-net-pci,netdev=n1,id=nic3")); err != nil || b.bus.Function(3, 0) == nil {
		t.Fatalf("re-plug into slot 3: %v", err)
	}
	// The cold-plugged NIC leaves the same way.
	if err := e.Unplug("cold", func() { deleted++ }); err != nil {
		t.Fatal(err)
	}
	b.hp.Write(bus.Host, 0x08, binary.LittleEndian.AppendUint32(nil, 1<<2))
	if deleted != 2 || b.bus.Function(2, 0) != nil {
		t.Fatalf("cold NIC: deleted %d, slot 2 %v", deleted, b.bus.Function(2, 0))
	}
}

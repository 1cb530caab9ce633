package sysdev

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gemu/hw/bus"
	"gemu/hw/chardev"
	"gemu/hw/pci"
	"gemu/hw/virtio"
	virtiopci "gemu/hw/virtio/pci"
	"gemu/hw/virtio/virtiotest"
	"gemu/machine/monitor"
)

// board is a PCI Express board with nothing but its bus (as virt's, for qdev).
type board struct {
	mem *virtiotest.Mem
	bus *pci.Bus
}

func newBoard(t *testing.T) *board {
	m := virtiotest.NewMem(0x4000_0000, 1<<20)
	t.Cleanup(func() { m.Close() })
	return &board{mem: m, bus: pci.NewBus(pci.BusConfig{MMIO: bus.New()})}
}

func (b *board) Memory() virtio.Memory            { return b.mem }
func (b *board) PCI() *pci.Bus                    { return b.bus }
func (b *board) Express() bool                    { return false }
func (b *board) FirstPCISlot() int                { return 1 }
func (b *board) PCIHooks() virtiopci.Hooks        { return virtiopci.Hooks{} }
func (b *board) VirtioMMIO(d virtio.Device) error { return errors.New("no virtio-mmio") }
func (b *board) PCIeRoot() bool                   { return true }

// TestHotplugOutlivesReboot: a netdev_add'ed netdev and the NIC device_add'ed on it
// are there, cold-plugged behind the same root port with the slot powered, in the
// machine a reboot builds; device_del reaches the new machine; blockdev-add/-del keep
// QEMU's refusals.
func TestHotplugOutlivesReboot(t *testing.T) {
	w, err := Open(common(t, "-device", "pcie-root-port,id=rp1,chassis=1,slot=1"), "virtio", chardev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	warn := func(string) {}
	b1 := newBoard(t)
	if _, err := w.Plug(b1, warn); err != nil {
		t.Fatal(err)
	}
	if err := w.NetdevAdd(`{"type":"user","id":"n1"}`); err != nil {
		t.Fatal(err)
	}
	if err := w.NetdevAdd("user,id=n1"); err == nil || err.Error() != "Duplicate ID 'n1'" {
		t.Fatalf("duplicate netdev: %v", err)
	}
	if err := w.DeviceAdd(`{"driver":"virtio-net-pci","netdev":"n1","bus":"rp1","id":"nic1"}`); err != nil {
		t.Fatal(err)
	}
	if !b1.bus.Function(1, 0).(*pci.RootPort).Present() {
		t.Fatal("nothing behind rp1")
	}
	b2 := newBoard(t)
	if _, err := w.Plug(b2, warn); err != nil {
		t.Fatal(err)
	}
	rp := b2.bus.Function(1, 0).(*pci.RootPort)
	if !rp.Present() || rp.SlotControl()&pci.SltCtlPCC != 0 || rp.SlotStatus()&pci.SltStaPDS == 0 {
		t.Fatalf("after reboot: present %v, slot control %#x status %#x", rp.Present(), rp.SlotControl(), rp.SlotStatus())
	}
	if n := w.Network(); len(n) != 1 || n[0].Name != "nic1" || n[0].Netdev != "n1" || n[0].Type != "user" {
		t.Fatalf("info network after reboot: %+v", n)
	}
	if err := w.DeviceDel("nic1", func() {}); err != nil || rp.SlotStatus()&pci.SltStaABP == 0 {
		t.Fatalf("device_del after reboot: %v, status %#x", err, rp.SlotStatus())
	}
	if err := w.DeviceDel("nic9", func() {}); !errors.Is(err, monitor.ErrNotFound) {
		t.Fatalf("device_del nic9: %v", err)
	}
	if err := w.NetdevDel("n9"); !errors.Is(err, monitor.ErrNotFound) {
		t.Fatalf("netdev_del n9: %v", err)
	}
	img := filepath.Join(t.TempDir(), "d.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := w.BlockdevAdd(`{"driver":"raw","node-name":"b1","file":{"driver":"file","filename":"` + img + `"}}`); err != nil {
		t.Fatal(err)
	}
	for spec, want := range map[string]string{
		`{"driver":"raw","node-name":"b1","file":{"driver":"file","filename":"` + img + `"}}`: "Duplicate nodes with node-name='b1'",
		`{"driver":"file","node-name":"b2","filename":"/nonexistent/x"}`:                      "Could not open '/nonexistent/x': No such file or directory",
	} {
		if err := w.BlockdevAdd(spec); err == nil || err.Error() != want {
			t.Errorf("blockdev-add %s: %v, want %q", spec, err, want)
		}
	}
	if err := w.DeviceAdd("virtio-blk-pci,drive=b1,id=blk1"); err == nil || !strings.Contains(err.Error(), "does not support hotplugging") {
		t.Fatalf("device_add with the only port taken: %v", err)
	}
	if err := w.BlockdevDel("b1"); err != nil {
		t.Fatal(err)
	}
	if err := w.BlockdevDel("b1"); err == nil || err.Error() != "Failed to find node with node-name='b1'" {
		t.Fatalf("second blockdev-del: %v", err)
	}
}

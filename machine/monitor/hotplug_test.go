package monitor

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"gemu/hw/pci"
)

// fakeHot is a Machine with a Hotplugger whose slots the test controls.
type fakeHot struct {
	fake
	hmu     sync.Mutex
	specs   []string
	pending map[string]func() // device_del waiting for the "guest"
	now     bool              // complete device_del before it returns
}

func (f *fakeHot) DeviceAdd(spec string) error {
	f.hmu.Lock()
	defer f.hmu.Unlock()
	f.specs = append(f.specs, spec)
	return nil
}

func (f *fakeHot) DeviceDel(id string, deleted func()) error {
	if id != "nic1" {
		return fmt.Errorf("Device '%s' not found: %w", id, ErrNotFound)
	}
	if f.now {
		deleted()
		return nil
	}
	f.hmu.Lock()
	f.pending[id] = deleted
	f.hmu.Unlock()
	return nil
}

func (f *fakeHot) NetdevAdd(spec string) error { f.specs = append(f.specs, spec); return nil }
func (f *fakeHot) NetdevDel(id string) error {
	return fmt.Errorf("Device '%s' not found: %w", id, ErrNotFound)
}
func (f *fakeHot) BlockdevAdd(spec string) error { f.specs = append(f.specs, spec); return nil }
func (f *fakeHot) BlockdevDel(node string) error {
	return fmt.Errorf("Failed to find node with node-name='%s'", node)
}
func (f *fakeHot) Network() []NIC {
	return []NIC{{Name: "nic1", Model: "virtio-net-pci", MAC: "52:54:00:12:34:56", Netdev: "n1", Type: "user", Info: "net=10.0.2.0,restrict=off"},
		{Netdev: "n2", Type: "user", Info: "net=10.0.2.0,restrict=off"}}
}
func (f *fakeHot) Devices() map[string]string { return map[string]string{"rp1": "pcie-root-port"} }

func startHot(t *testing.T) (*fakeHot, *client) {
	f := &fakeHot{fake: fake{status: Running}, pending: map[string]func(){}}
	s := NewServer(f, Options{})
	f.srv = s
	t.Cleanup(s.Close)
	return f, qmpClient(t, s)
}

// TestDeviceAddDel: device_add passes its properties through (QMP lets any), the
// reply to device_del comes before DEVICE_DELETED, which comes when the guest lets the
// device go: first for the virtio-backend child, then for the device (QEMU 7.2's pair,
// recorded from qemu-system-aarch64 -M virt with a pcie-root-port); an unknown id is
// DeviceNotFound.
func TestDeviceAddDel(t *testing.T) {
	f, c := startHot(t)
	if r := c.do(`{"execute":"device_add","arguments":{"driver":"virtio-net-pci","netdev":"n1","bus":"rp1","id":"nic1","mq":true}}`); r["error"] != nil {
		t.Fatalf("device_add: %v", r)
	}
	var got map[string]any
	json.Unmarshal([]byte(f.specs[0]), &got)
	if got["netdev"] != "n1" || got["mq"] != true || got["driver"] != "virtio-net-pci" {
		t.Fatalf("spec handed on: %s", f.specs[0])
	}
	if r := c.do(`{"execute":"device_add","arguments":{"bus":"rp1"}}`); !strings.Contains(fmt.Sprint(r), "Parameter 'driver' is missing") {
		t.Fatalf("device_add without driver: %v", r)
	}
	if cl, d := errOf(c.do(`{"execute":"device_del","arguments":{"id":"nosuch"}}`)); cl != DeviceNotFound || d != "Device 'nosuch' not found" {
		t.Fatalf("device_del nosuch: %s %q", cl, d)
	}
	if r := c.do(`{"execute":"device_del","arguments":{"id":"nic1"}}`); r["error"] != nil || len(c.ev) != 0 {
		t.Fatalf("device_del: %v, events %v", r, c.ev)
	}
	f.hmu.Lock()
	done := f.pending["nic1"]
	f.hmu.Unlock()
	done() // the guest powered the slot off
	e1, e2 := c.read(), c.read()
	if e1["event"] != "DEVICE_DELETED" || fmt.Sprint(e1["data"]) != "map[path:/machine/peripheral/nic1/virtio-backend]" ||
		fmt.Sprint(e2["data"]) != "map[device:nic1 path:/machine/peripheral/nic1]" {
		t.Fatalf("events %v then %v", e1, e2)
	}
	// A slot the guest never powered lets go at once: still reply first.
	f.now = true
	c.c.Write([]byte(`{"execute":"device_del","arguments":{"id":"nic1"}}`))
	if r := c.read(); r["return"] == nil {
		t.Fatalf("first message after device_del %v, want the reply", r)
	}
	if e := c.read(); e["event"] != "DEVICE_DELETED" {
		t.Fatalf("then %v", e)
	}
	c.read()
	if cl, d := errOf(c.do(`{"execute":"netdev_del","arguments":{"id":"n9"}}`)); cl != DeviceNotFound || d != "Device 'n9' not found" {
		t.Fatalf("netdev_del: %s %q", cl, d)
	}
	if cl, d := errOf(c.do(`{"execute":"blockdev-del","arguments":{"node-name":"x"}}`)); cl != GenericError || d != "Failed to find node with node-name='x'" {
		t.Fatalf("blockdev-del: %s %q", cl, d)
	}
	want := "nic1: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\r\n \\ n1: index=0,type=user,net=10.0.2.0,restrict=off\r\nn2: index=0,type=user,net=10.0.2.0,restrict=off\r\n"
	if s := hmpOut(c, "info network"); s != want {
		t.Fatalf("info network %q", s)
	}
	if s := hmpOut(c, "device_del nosuch"); s != "Error: Device 'nosuch' not found\r\n" {
		t.Fatalf("HMP device_del: %q", s)
	}
	if s := hmpOut(c, "device_add virtio-blk-pci,drive=d1,bus=rp1"); s != "" || f.specs[len(f.specs)-1] != "virtio-blk-pci,drive=d1,bus=rp1" {
		t.Fatalf("HMP device_add: %q, spec %q", s, f.specs[len(f.specs)-1])
	}
}

// TestHotpluggableCPUsVirt: a machine type without hotpluggable CPUs refuses
// query-hotpluggable-cpus with QEMU 7.2's virt text.
func TestHotpluggableCPUsVirt(t *testing.T) {
	_, c := startHot(t)
	if cl, d := errOf(c.do(`{"execute":"query-hotpluggable-cpus"}`)); cl != GenericError || d != "The feature 'query-hotpluggable-cpus' is not enabled" {
		t.Fatalf("%s %q", cl, d)
	}
}

// TestQueryPCIBridge: a root port shows as QEMU 7.2's query-pci shows a pcie-root-port
// (recorded from qemu-system-aarch64 -M virt -device pcie-root-port,id=rp1,chassis=1,slot=1
// in prelaunch: no subsystem ids, the windows closed as base above limit, bus numbers
// 0), and once the guest numbers its bus, the function behind it is listed in it.
func TestQueryPCIBridge(t *testing.T) {
	b := pci.NewBus(pci.BusConfig{})
	rp, err := pci.NewRootPort(b, pci.RootPortConfig{Chassis: 1, Slot: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Add(1, 0, rp); err != nil {
		t.Fatal(err)
	}
	js := func() string { out, _ := json.Marshal(pciInfo(PCIFromBus(b))); return string(out) }
	want := `"pci_bridge":{"bus":{"prefetchable_range":{"limit":1048575,"base":4293918720},"memory_range":{"limit":1048575,"base":4293918720},"secondary":0,"io_range":{"limit":4095,"base":61440},"number":0,"subordinate":0}},"qdev_id":"","irq":0,"slot":1,"class_info":{"class":1540,"desc":"PCI bridge"},"id":{"device":12,"vendor":6966}`
	if s := js(); !strings.Contains(s, want) {
		t.Fatalf("query-pci %s\nwant it to hold %s", s, want)
	}
	rp.ConfigWrite(0x18, []byte{0, 1, 1})
	ep := pci.NewConfigSpace(0x1af4, 0x1041, 0x020000, 1)
	if err := rp.Secondary().Add(0, 0, ep); err != nil {
		t.Fatal(err)
	}
	if s := js(); !strings.Contains(s, `"secondary":1,`) || !strings.Contains(s, `"devices":[{"irq_pin":0,"bus":1,`) {
		t.Fatalf("query-pci with a device behind the port: %s", s)
	}
}

type fakePC struct{ fakeHot }

func (f *fakePC) Info() Info {
	return Info{Target: "x86_64", Machines: []MachineType{{Name: "pc-i440fx-7.2", IsDefault: true, HotpluggableCPUs: true, DefaultCPUType: "qemu64-x86_64-cpu"}}}
}
func (f *fakePC) CPUs() []CPU {
	return []CPU{{Index: 0, QOMPath: "/machine/unattached/device[0]", Props: map[string]int{"core-id": 0, "thread-id": 0, "socket-id": 0, "die-id": 0}},
		{Index: 1, QOMPath: "/machine/unattached/device[1]", Props: map[string]int{"core-id": 1, "thread-id": 0, "socket-id": 0, "die-id": 0}}}
}

// TestHotpluggableCPUsPC: the PC lists its vCPUs, highest first, as QEMU 7.2's pc does
// for -smp 2 (recorded: props core-id/thread-id/socket-id, vcpus-count 1, the CPU type).
func TestHotpluggableCPUsPC(t *testing.T) {
	f := &fakePC{fakeHot{fake: fake{status: Running}}}
	s := NewServer(f, Options{})
	f.srv = s
	t.Cleanup(s.Close)
	c := qmpClient(t, s)
	out, _ := json.Marshal(c.do(`{"execute":"query-hotpluggable-cpus"}`)["return"])
	want := `[{"props":{"core-id":1,"socket-id":0,"thread-id":0},"qom-path":"/machine/unattached/device[1]","type":"qemu64-x86_64-cpu","vcpus-count":1},{"props":{"core-id":0,"socket-id":0,"thread-id":0},"qom-path":"/machine/unattached/device[0]","type":"qemu64-x86_64-cpu","vcpus-count":1}]`
	if string(out) != want {
		t.Fatalf("query-hotpluggable-cpus %s\nwant %s", out, want)
	}
}

package qdev

import (
	"strings"
	"testing"

	"gemu/block/backend"
	"gemu/hw/bus"
	"gemu/hw/netdev"
	"gemu/hw/pci"
	vnet "gemu/hw/virtio/net"
	"gemu/hw/virtio/virtiotest"
)

type fakeNet struct{ off netdev.Offloads }

func (fakeNet) Send([]byte) error             { return nil }
func (fakeNet) SetReceiver(func([]byte) bool) {}
func (fakeNet) RxReady()                      {}
func (fakeNet) Close() error                  { return nil }
func (f fakeNet) Offloads() netdev.Offloads   { return f.off }

func TestNIC(t *testing.T) {
	mem := virtiotest.NewMem(0x4000_0000, 1<<20)
	defer mem.Close()
	b := &fakeBoard{mem: mem, bus: pci.NewBus(pci.BusConfig{MMIO: bus.New()})}
	e := NewEnv(b, map[string]*backend.Backend{}, nil)
	var warns []string
	e.Warn = func(s string) { warns = append(warns, s) }
	e.Netdevs = map[string]netdev.Backend{"n0": fakeNet{}, "n1": fakeNet{}, "n2": fakeNet{netdev.Offloads{NoChecksum: true, MaxFrame: 65549}}, "n3": fakeNet{}}
	for _, spec := range []string{
		"driver=virtio-net-pci,netdev=n0",
		"driver=virtio-net-device,netdev=n1",
		"driver=virtio-net-device,netdev=n2,mac=52:54:00:ab:cd:ef,mq=on,host_mtu=9000,csum=off,mrg_rxbuf=off",
	} {
		if err := e.Add(p(spec)); err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
	}
	if b.bus.Function(2, 0) == nil {
		t.Fatal("virtio-net-pci not plugged")
	}
	mac := func(i int) string {
		d := b.mmio[i].(*vnet.Device)
		var m [6]byte
		d.ReadConfig(0, m[:])
		return vnet.MACString(m)
	}
	// QEMU's default MACs: the first NIC without mac= gets ...:56, the next ...:57.
	if got := mac(0); got != "52:54:00:12:34:57" {
		t.Errorf("second NIC's default MAC %s", got)
	}
	d := b.mmio[1].(*vnet.Device)
	f := d.Features()
	if got := mac(1); got != "52:54:00:ab:cd:ef" || len(d.QueueMax()) != 2*DefaultMQPairs+1 ||
		f&(1<<vnet.FMTU) == 0 || f&(1<<vnet.FCsum|1<<vnet.FHostTSO4|1<<vnet.FMrgRxbuf) != 0 || f&(1<<vnet.FGuestCsum) == 0 {
		t.Fatalf("NIC 2: mac %s, %d queues, features %#x", got, len(d.QueueMax()), f)
	}
	if !e.NetdevUsed("n0") || e.NetdevUsed("n3") {
		t.Fatal("netdev use not recorded")
	}
	for spec, want := range map[string]string{
		"driver=virtio-net-pci,netdev=n0":                       "it's in use",
		"driver=virtio-net-pci,netdev=nope":                     "can't find value 'nope'",
		"driver=virtio-net-pci,netdev=n3,mac=01:00:00:00:00:01": "multicast",
		"driver=virtio-net-pci,netdev=n3,mac=52:54:00:12:34":    "doesn't take value",
		"driver=virtio-net-pci,netdev=n3,mac=52:54:00:12:34:5g": "doesn't take value",
		"driver=virtio-net-pci,netdev=n3,mq=maybe":              "expects 'on' or 'off'",
		"driver=virtio-net-pci,netdev=n3,host_mtu=10":           "host_mtu",
		"driver=virtio-net-pci,netdev=n3,rx_queue_size=100":     "power of 2",
		"driver=virtio-net-pci,netdev=n3,colour=red":            "Property 'virtio-net-pci.colour' not found",
	} {
		if err := e.Add(p(spec)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", spec, err, want)
		}
	}
	// A NIC without netdev= works, unconnected, with QEMU's warning.
	b.mmio = nil
	if err := e.Add(p("driver=virtio-net-device")); err != nil || len(warns) != 1 || !strings.Contains(warns[0], "no peer") {
		t.Fatalf("peerless NIC: %v %v", err, warns)
	}
	if h := Help(); !strings.Contains(h, `name "virtio-net-pci", bus PCI, alias "virtio-net"`) || !strings.Contains(h, `name "virtio-net-device", bus virtio-bus`) {
		t.Errorf("-device help:\n%s", h)
	}
	if m, err := ParseMAC("52-54-00-12-34-56"); err != nil || m != DefaultMAC(0) {
		t.Errorf("ParseMAC: %v %v", m, err)
	}
}

package qdev

import (
	"net"
	"path/filepath"
	"strings"
	"testing"

	"gemu/hw/bus"
	"gemu/hw/pci"
	"gemu/hw/virtio/virtiotest"
	"gemu/hw/virtio/vsock"
)

func TestVsock(t *testing.T) {
	mem := virtiotest.NewMem(0x4000_0000, 1<<20)
	defer mem.Close()
	b := &fakeBoard{mem: mem, bus: pci.NewBus(pci.BusConfig{MMIO: bus.New()})}
	hosts := NewVsockHosts()
	defer hosts.Close()
	e := NewEnv(b, nil, nil)
	e.Vsock = hosts
	dir := t.TempDir()
	a, c := filepath.Join(dir, "a.sock"), filepath.Join(dir, "c.sock")
	for _, spec := range []string{
		"driver=vhost-vsock-pci,guest-cid=3,uds-path=" + a,
		"driver=vhost-vsock-device,guest-cid=0x10,uds-path=" + c,
	} {
		if err := e.Add(p(spec)); err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
	}
	if b.bus.Function(2, 0) == nil || len(b.mmio) != 1 || b.mmio[0].DeviceID() != vsock.IDVsock || b.mmio[0].(*vsock.Device).GuestCID() != 16 {
		t.Fatal("vsock devices not plugged")
	}
	if conn, err := net.Dial("unix", a); err != nil {
		t.Fatalf("uds-path not listening: %v", err)
	} else {
		conn.Close()
	}
	for spec, want := range map[string]string{
		"driver=vhost-vsock-pci,uds-path=/x":                              "guest-cid property must be greater than 2",
		"driver=vhost-vsock-pci,guest-cid=2,uds-path=/x":                  "must be greater than 2",
		"driver=vhost-vsock-pci,guest-cid=4294967295,uds-path=/x":         "32-bit",
		"driver=vhost-vsock-pci,guest-cid=x,uds-path=/x":                  "expects uint64",
		"driver=vhost-vsock-pci,guest-cid=5":                              "uds-path property not set",
		"driver=vhost-vsock-pci,guest-cid=5,vhostfd=3":                    "vhostfd is not supported",
		"driver=vhost-vsock-pci,guest-cid=5,uds-path=/x,seqpacket=on":     "seqpacket=on is not supported",
		"driver=vhost-vsock-pci,guest-cid=5,uds-path=" + a:                "already used",
		"driver=vhost-vsock-pci,guest-cid=3,uds-path=" + a + "x":          "guest-cid 3 is already used",
		"driver=vhost-vsock-pci,guest-cid=5,uds-path=" + dir + "/no/such": "uds-path " + dir + "/no/such",
		"driver=vhost-vsock-pci,guest-cid=5,uds-path=/x,colour=red":       "Property 'vhost-vsock-pci.colour' not found",
	} {
		if err := e.Add(p(spec)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", spec, err, want)
		}
	}
	// The next machine's Env takes the same socket over.
	e2 := NewEnv(b, nil, nil)
	e2.Vsock = hosts
	if err := e2.Add(p("driver=vhost-vsock-pci,guest-cid=3,uds-path=" + a + ",addr=0x5")); err != nil {
		t.Fatalf("rebuilt machine: %v", err)
	}
	if h := Help(); !strings.Contains(h, `name "vhost-vsock-pci", bus PCI`) || !strings.Contains(h, `name "vhost-vsock-device", bus virtio-bus`) {
		t.Errorf("-device help:\n%s", h)
	}
	if h, err := PropHelp("vhost-vsock-pci"); err != nil || !strings.Contains(h, "  guest-cid\n") || !strings.Contains(h, "  uds-path\n") {
		t.Errorf("-device vhost-vsock-pci,help: %q %v", h, err)
	}
}

package sysdev

import (
	"strings"
	"testing"

	"gemu/cmd/internal/qemuopts"
	"gemu/hw/chardev"
)

func parse(t *testing.T, args ...string) *qemuopts.Common {
	t.Helper()
	var c qemuopts.Common
	if err := c.Parse(args, nil, nil); err != nil {
		t.Fatal(err)
	}
	return &c
}

// TestNetdevs opens -netdev and -nic backends (user and a loopback stream server)
// and refuses what QEMU refuses, with its messages.
func TestNetdevs(t *testing.T) {
	c := parse(t, "-netdev", "user,id=n0,restrict=on", "-nic", "user,model=virtio-net-device,mac=52:54:00:00:00:07",
		"-netdev", "stream,id=s0,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=0", "-nic", "none")
	w, err := Open(c, "virtio", chardev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Netdevs["n0"] == nil || w.Netdevs["s0"] == nil || w.Netdevs["__org.qemu.nic0"] == nil || len(w.Netdevs) != 3 {
		t.Fatalf("netdevs %v", w.Netdevs)
	}
	if len(w.nics) != 1 || w.nics[0].model != "virtio-net-device" || w.nics[0].mac != "52:54:00:00:00:07" {
		t.Fatalf("nics %+v", w.nics)
	}
	if len(c.Unwired()) != 0 {
		t.Fatalf("still unwired: %v", c.Unwired())
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"-netdev", "user"}, "Parameter 'id' is missing"},
		{[]string{"-netdev", "user,id=a,frob=1"}, "Invalid parameter 'frob'"},
		{[]string{"-netdev", "vde,id=a"}, "expects a netdev backend type"},
		{[]string{"-netdev", "user,id=a", "-netdev", "user,id=a"}, "Duplicate ID 'a'"},
		{[]string{"-nic", "user,model=e1000"}, "unsupported NIC model 'e1000'"},
		{[]string{"-nic", "none,mac=52:54:00:00:00:01"}, "Invalid parameter 'mac'"},
		{[]string{"-netdev", "user,id=a,net=10.0.2.0/33"}, "net"},
	} {
		_, err := Open(parse(t, bad.args...), "virtio", chardev.Options{})
		if err == nil || !strings.Contains(err.Error(), bad.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %v, want %q", bad.args, err, bad.want)
		}
	}
	for args, want := range map[string]string{"-netdev help": "Available netdev backend types:\nsocket\n", "-nic model=help": "Available NIC models:\nvirtio-net-pci\n"} {
		h, ok, err := Help(parse(t, strings.Fields(args)...))
		if !ok || err != nil || !strings.Contains(h, want) || !strings.Contains(h, "user") && !strings.Contains(h, "virtio-net-device") {
			t.Errorf("%s: %q %v %v", args, h, ok, err)
		}
	}
}

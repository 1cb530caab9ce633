package hotplug

import (
	"context"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gemu/tests/assets"
	"gemu/tests/testbin"
)

// The pc board's hotplug is ACPI PCI hotplug on pci.0 (QEMU's PIIX4 pcihp): Debian's
// amd64 kernel has acpiphp built in, which registers a slot per DSDT slot device and
// handles the Device Check and Eject Request notifications of the GPE 1 handler.

// pcGuestScript waits for a hot-added eth0, takes a lease, fetches the blob and waits
// for eth0 to go; it reports the acpiphp slots first.
const pcGuestScript = `loadmods virtio_pci virtio_net
echo SLOTS $(ls /sys/bus/pci/slots | sort -n | tr '\n' ' ')
echo HP-READY
wa(){ i=0;while [ ! -e $1 ]&&[ $i -lt 3000 ];do sleep .1;i=$((i+1));done; }
wg(){ i=0;while [ -e $1 ]&&[ $i -lt 3000 ];do sleep .1;i=$((i+1));done; }
wa /sys/class/net/eth0
echo ETH0-UP
ip link set lo up;ip link set eth0 up
printf '#!/bin/sh\n[ "$1" = bound ]&&{ ip addr add $ip/${mask:-24} dev $interface;ip route add default via $router;echo DHCP-OK $ip $router;}\nexit 0\n'>/tmp/dh;chmod +x /tmp/dh
udhcpc -i eth0 -s /tmp/dh -q -n -t 10 -T 2 2>/dev/null
echo FETCH $(wget -q -O - http://10.0.2.2:PORT/blob|sha256sum)
wg /sys/class/net/eth0
echo ETH0-GONE
sleep 600
`

type pcResult struct {
	slots, lease, fetch string
	events              []map[string]any
	errors              []string
}

// runPC boots emu's pc under TCG and hotplugs a NIC into pci.0 with no bus=, then
// unplugs it.
func runPC(t *testing.T, emu string, e *env) pcResult {
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initrd.gz")
	if err := assets.InitrdWith("amd64", initrd, "virtio_pci", "virtio_net"); err != nil {
		t.Fatal(err)
	}
	sock, sock2 := filepath.Join(dir, "qmp.sock"), filepath.Join(dir, "qmp2.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, emu, "-M", "pc", "-accel", "tcg", "-m", "512", "-nographic", "-nic", "none", "-vga", "none",
		"-kernel", assets.Kernel("amd64"), "-initrd", initrd,
		"-append", "console=ttyS0 "+assets.CmdArg(strings.ReplaceAll(pcGuestScript, "PORT", e.port)),
		"-qmp", "unix:"+sock+",server=on,wait=off", "-qmp", "unix:"+sock2+",server=on,wait=off")
	g := startQMP(t, ctx, cmd, sock, sock2)
	defer g.stop()
	con, mon, deleted, rq, r := g.con, g.mon, g.deleted, g.rq, g.r
	var res pcResult
	expect := func(marker string, d time.Duration) string {
		t.Helper()
		l := con.waitFor(marker, d)
		if l == "" {
			t.Fatalf("%s: no %s from the guest; console:\n%s", emu, marker, con.tail())
		}
		return l
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %s: %v", emu, what, err)
		}
	}
	res.slots = expect("SLOTS", 20*time.Minute)
	expect("HP-READY", 2*time.Minute)
	for _, c := range []string{
		`{"execute":"device_add","arguments":{"driver":"virtio-net-pci","bus":"pci.1","id":"x"}}`,
		`{"execute":"device_del","arguments":{"id":"nosuch"}}`,
	} {
		res.errors = append(res.errors, c+" -> "+rq.do(t, c))
	}
	must("netdev_add", r.NetdevAdd("user", "n1"))
	must("device_add nic1", func() error {
		_, err := mon.Run([]byte(`{"execute":"device_add","arguments":{"driver":"virtio-net-pci","netdev":"n1","id":"nic1"}}`))
		return err
	}())
	expect("ETH0-UP", 5*time.Minute)
	res.lease = expect("DHCP-OK", 5*time.Minute)
	res.fetch = strings.Fields(expect("FETCH", 5*time.Minute) + " -")[1]
	must("device_del nic1", r.DeviceDel("nic1"))
	expect("ETH0-GONE", 5*time.Minute)
	for i := 0; i < 2; i++ {
		select {
		case d := <-deleted:
			res.events = append(res.events, d)
		case <-time.After(5 * time.Minute):
			t.Fatalf("%s: no DEVICE_DELETED (%d of 2); console:\n%s", emu, i, con.tail())
		}
	}
	must("netdev_del", r.NetdevDel("n1"))
	return res
}

// TestPCHotplugNIC: device_add virtio-net-pci with no bus= on the pc board gives the
// guest an eth0 (acpiphp's Device Check), which gets a lease and fetches from the
// loopback HTTP server; device_del ends with eth0 gone and the DEVICE_DELETED pair.
// QEMU 7.2's qemu-system-x86_64 -M pc, when installed, is the oracle.
func TestPCHotplugNIC(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a Linux guest under the x86 translator (minutes): skipped under -short")
	}
	if why := assets.Missing("amd64"); why != "" {
		t.Skip(why)
	}
	e := newEnv(t)
	g := runPC(t, testbin.Command(t, "gemu-system-x86_64"), e)
	if !strings.Contains(g.slots, " 2 ") || !strings.Contains(g.slots, " 31") {
		t.Errorf("acpiphp slots %q, want 2..31", g.slots)
	}
	if !strings.HasPrefix(g.lease, "DHCP-OK 10.0.2.15 10.0.2.2") {
		t.Errorf("lease %q, want 10.0.2.15 via 10.0.2.2", g.lease)
	}
	if g.fetch != e.blobSum {
		t.Errorf("guest fetched blob with sha256 %s, served %s", g.fetch, e.blobSum)
	}
	wantEvents := []map[string]any{
		{"path": "/machine/peripheral/nic1/virtio-backend"}, {"device": "nic1", "path": "/machine/peripheral/nic1"}}
	if !reflect.DeepEqual(g.events, wantEvents) {
		t.Errorf("DEVICE_DELETED data %v, want %v", g.events, wantEvents)
	}
	for _, l := range g.errors {
		t.Logf("gemu: %s", l)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Log("qemu-system-x86_64 not installed: gemu's half checked, no comparison with QEMU 7.2")
		return
	}
	q := runPC(t, "qemu-system-x86_64", e)
	if q.fetch != e.blobSum {
		t.Errorf("QEMU's guest fetched %s (the oracle run itself failed)", q.fetch)
	}
	t.Logf("QEMU: %s; %s", q.slots, q.lease)
	if g.slots != q.slots {
		t.Errorf("acpiphp slots: gemu %q, QEMU %q", g.slots, q.slots)
	}
	if !reflect.DeepEqual(g.events, q.events) {
		t.Errorf("DEVICE_DELETED: gemu %v, QEMU %v", g.events, q.events)
	}
	for i := range g.errors {
		if g.errors[i] != q.errors[i] {
			t.Errorf("reply differs:\n gemu: %s\n QEMU: %s", g.errors[i], q.errors[i])
		}
	}
}

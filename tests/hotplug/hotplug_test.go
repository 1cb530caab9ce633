// Package hotplug holds the whole-system test of PCI Express hotplug on the virt
// board: Debian's arm64 kernel (its built-in pciehp driver) under TCG with two
// pcie-root-ports, driven over QMP by digitalocean/go-qemu as a management tool does.
// A netdev_add'ed user network and a device_add'ed virtio-net-pci behind rp1 must give
// the guest an eth0 that gets its lease by DHCP and fetches a blob from an HTTP server
// the test runs on the loopback (through 10.0.2.2); device_del must remove eth0 from
// the guest and end with QEMU's two DEVICE_DELETED events; the same for a
// blockdev-add'ed raw image behind a virtio-blk-pci on rp2, which the guest reads.
// The same script runs against qemu-system-aarch64 7.2, the oracle for the error
// texts and classes, the events and the guest-visible outcome.
package hotplug

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/raw"

	"gemu/tests/assets"
	"gemu/tests/testbin"
)

func gemuBinary(t *testing.T) string {
	t.Helper()
	return testbin.Command(t, "gemu-system-aarch64")
}

// guestScript waits for eth0 (a hot-added NIC), takes a lease, fetches the blob,
// waits for eth0 to go, then waits for vda, hashes its first MiB and waits for it to
// go. It then idles: the host ends the run.
const guestScript = `loadmods virtio_pci virtio_net virtio_blk
echo HP-READY
wa(){ i=0;while [ ! -e $1 ]&&[ $i -lt 1800 ];do sleep .1;i=$((i+1));done; }
wg(){ i=0;while [ -e $1 ]&&[ $i -lt 1800 ];do sleep .1;i=$((i+1));done; }
wa /sys/class/net/eth0
echo ETH0-UP
ip link set lo up;ip link set eth0 up
printf '#!/bin/sh\n[ "$1" = bound ]&&{ ip addr add $ip/${mask:-24} dev $interface;ip route add default via $router;echo DHCP-OK $ip $router;}\nexit 0\n'>/tmp/dh;chmod +x /tmp/dh
udhcpc -i eth0 -s /tmp/dh -q -n -t 10 -T 2 2>/dev/null
echo FETCH $(wget -q -O - http://10.0.2.2:PORT/blob|sha256sum)
wg /sys/class/net/eth0
echo ETH0-GONE
wa /sys/block/vda
echo DISK-SHA $(head -c 1048576 /dev/vda|sha256sum)
wg /sys/block/vda
echo VDA-GONE
sleep 600
`

// console collects the guest's lines.
type console struct {
	mu    sync.Mutex
	lines []string
	next  int
	ch    chan struct{}
}

func newConsole(r io.Reader) *console {
	c := &console{ch: make(chan struct{}, 1)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			c.mu.Lock()
			c.lines = append(c.lines, strings.TrimRight(sc.Text(), "\r"))
			c.mu.Unlock()
			select {
			case c.ch <- struct{}{}:
			default:
			}
		}
		close(c.ch)
	}()
	return c
}

// waitFor returns the next line (after the previous match) starting with marker, or
// "" when the console ends or d passes.
func (c *console) waitFor(marker string, d time.Duration) string {
	deadline := time.After(d)
	for {
		c.mu.Lock()
		for ; c.next < len(c.lines); c.next++ {
			if l := c.lines[c.next]; strings.HasPrefix(l, marker) {
				c.next++
				c.mu.Unlock()
				return l
			}
		}
		c.mu.Unlock()
		select {
		case _, open := <-c.ch:
			if !open {
				return ""
			}
		case <-deadline:
			return ""
		}
	}
}

func (c *console) tail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.lines
	if len(s) > 40 {
		s = s[len(s)-40:]
	}
	return strings.Join(s, "\n")
}

// rawQMP is a second monitor read without a client library, for the error classes
// go-qemu folds into plain errors.
type rawQMP struct {
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, path string) *rawQMP {
	t.Helper()
	var c net.Conn
	var err error
	for i := 0; i < 300; i++ {
		if c, err = net.Dial("unix", path); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	q := &rawQMP{c: c, r: bufio.NewReader(c)}
	q.r.ReadString('\n')
	q.do(t, `{"execute":"qmp_capabilities"}`)
	return q
}

// do sends cmd and returns "ok" or "CLASS: desc" (events on this socket are skipped).
func (q *rawQMP) do(t *testing.T, cmd string) string {
	t.Helper()
	q.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(q.c, cmd+"\n"); err != nil {
		t.Fatal(err)
	}
	for {
		l, err := q.r.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		var m struct {
			Event  string           `json:"event"`
			Return *json.RawMessage `json:"return"`
			Error  *struct{ Class, Desc string }
		}
		if json.Unmarshal([]byte(l), &m) != nil || m.Event != "" {
			continue
		}
		if m.Error != nil {
			return m.Error.Class + ": " + m.Error.Desc
		}
		return "ok"
	}
}

// result is what one emulator did with the script.
type result struct {
	errors  []string         // the error cases' replies, in order
	events  []map[string]any // DEVICE_DELETED data, in order
	fetch   string           // the guest's sha256 of the blob
	disk    string           // the guest's sha256 of the disk's first MiB
	lease   string
	network string // info network with the NIC plugged
}

type env struct {
	blobSum, diskSum string
	port             string
	disk             string
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func newEnv(t *testing.T) *env {
	blob := make([]byte, 200<<10)
	rand.Read(blob)
	disk := make([]byte, 1<<20)
	rand.Read(disk)
	e := &env{blobSum: sum(blob), diskSum: sum(disk), disk: filepath.Join(t.TempDir(), "disk.raw")}
	if err := os.WriteFile(e.disk, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(blob) })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	_, e.port, _ = net.SplitHostPort(l.Addr().String())
	return e
}

// qmpGuest is a started emulator with its console, a go-qemu monitor whose
// DEVICE_DELETED events arrive on deleted, and a raw QMP connection for error replies.
type qmpGuest struct {
	con     *console
	mon     *qmp.SocketMonitor
	r       *raw.Monitor
	rq      *rawQMP
	deleted chan map[string]any
	stop    func() // disconnects and kills the emulator (also at the test's end)
}

// startQMP starts cmd, whose two -qmp servers listen on sock and sock2, and connects.
func startQMP(t *testing.T, ctx context.Context, cmd *exec.Cmd, sock, sock2 string) *qmpGuest {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &qmpGuest{con: newConsole(out), deleted: make(chan map[string]any, 16)}
	var once sync.Once
	g.stop = func() {
		once.Do(func() {
			if g.mon != nil {
				g.mon.Disconnect()
			}
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
	t.Cleanup(g.stop)
	var mon *qmp.SocketMonitor
	for i := 0; ; i++ {
		if mon, err = qmp.NewSocketMonitor("unix", sock, 5*time.Second); err == nil {
			break
		}
		if i > 300 {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	g.mon = mon
	evs, err := mon.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for ev := range evs {
			if ev.Event == "DEVICE_DELETED" {
				g.deleted <- ev.Data
			}
		}
	}()
	g.rq = dialRaw(t, sock2)
	g.r = raw.NewMonitor(mon)
	return g
}

// run boots emu with two root ports and plays the hotplug script through go-qemu.
// machine is the -M value.
func run(t *testing.T, emu, machine string, e *env) result {
	dir := t.TempDir()
	sock, sock2 := filepath.Join(dir, "qmp.sock"), filepath.Join(dir, "qmp2.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, emu, "-M", machine, "-cpu", "cortex-a57", "-m", "512", "-nographic", "-nic", "none",
		"-kernel", assets.Kernel("arm64"), "-initrd", assets.Initrd("arm64"),
		"-append", "console=ttyAMA0 "+assets.CmdArg(strings.ReplaceAll(guestScript, "PORT", e.port)),
		"-qmp", "unix:"+sock+",server=on,wait=off", "-qmp", "unix:"+sock2+",server=on,wait=off",
		"-device", "pcie-root-port,id=rp1,chassis=1,slot=1", "-device", "pcie-root-port,id=rp2,chassis=2,slot=2")
	g := startQMP(t, ctx, cmd, sock, sock2)
	defer g.stop()
	con, mon, deleted, rq, r := g.con, g.mon, g.deleted, g.rq, g.r
	var res result
	expect := func(marker string, d time.Duration) string {
		t.Helper()
		l := con.waitFor(marker, d)
		if l == "" {
			t.Fatalf("%s: no %s from the guest; console:\n%s", emu, marker, con.tail())
		}
		return l
	}
	try := func(cmds ...string) {
		for _, c := range cmds {
			res.errors = append(res.errors, c+" -> "+rq.do(t, c))
		}
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %s: %v", emu, what, err)
		}
	}
	run := func(js string) error { _, err := mon.Run([]byte(js)); return err }
	waitDeleted := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			select {
			case d := <-deleted:
				res.events = append(res.events, d)
			case <-time.After(2 * time.Minute):
				t.Fatalf("%s: no DEVICE_DELETED (%d of %d); console:\n%s", emu, i, n, con.tail())
			}
		}
	}

	expect("HP-READY", 5*time.Minute)
	try(`{"execute":"device_add","arguments":{"driver":"nosuchdev","id":"x"}}`,
		`{"execute":"device_add","arguments":{}}`,
		`{"execute":"device_add","arguments":{"driver":"virtio-net-pci","netdev":"nonet","bus":"rp1","id":"x"}}`,
		`{"execute":"device_add","arguments":{"driver":"virtio-net-pci","bus":"pcie.0","id":"x"}}`,
		`{"execute":"device_add","arguments":{"driver":"virtio-net-pci","bus":"nosuch","id":"x"}}`,
		`{"execute":"device_add","arguments":{"driver":"virtio-net-pci","bus":"rp1","id":"x","bogusprop":"1"}}`,
		`{"execute":"device_del","arguments":{"id":"nosuch"}}`,
		`{"execute":"device_del","arguments":{"id":"rp2"}}`,
		`{"execute":"netdev_del","arguments":{"id":"nosuch"}}`,
		`{"execute":"netdev_add","arguments":{"type":"bogus","id":"x"}}`,
		`{"execute":"blockdev-del","arguments":{"node-name":"nosuch"}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"x","filename":"/nonexistent/disk"}}`,
		`{"execute":"query-hotpluggable-cpus"}`)

	// The NIC.
	must("netdev_add", r.NetdevAdd("user", "n1"))
	try(`{"execute":"netdev_add","arguments":{"type":"user","id":"n1"}}`)
	must("device_add nic1", run(`{"execute":"device_add","arguments":{"driver":"virtio-net-pci","netdev":"n1","bus":"rp1","id":"nic1"}}`))
	try(`{"execute":"device_add","arguments":{"driver":"virtio-net-pci","bus":"rp2","id":"nic1"}}`,
		`{"execute":"device_add","arguments":{"driver":"virtio-net-pci","netdev":"n1","bus":"rp2","id":"nic7"}}`)
	expect("ETH0-UP", 3*time.Minute)
	res.lease = expect("DHCP-OK", 2*time.Minute)
	res.fetch = strings.Fields(expect("FETCH", 2*time.Minute) + " -")[1]
	var err2 error
	res.network, err2 = r.HumanMonitorCommand("info network", nil)
	must("info network", err2)
	must("device_del nic1", r.DeviceDel("nic1"))
	try(`{"execute":"device_del","arguments":{"id":"nic1"}}`)
	expect("ETH0-GONE", 2*time.Minute)
	waitDeleted(2)

	// The disk.
	must("blockdev-add", run(fmt.Sprintf(`{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"b1","file":{"driver":"file","filename":%q}}}`, e.disk)))
	try(fmt.Sprintf(`{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"b1","file":{"driver":"file","filename":%q}}}`, e.disk),
		`{"execute":"device_add","arguments":{"driver":"virtio-blk-pci","drive":"nod","bus":"rp2","id":"blk2"}}`)
	must("device_add blk1", run(`{"execute":"device_add","arguments":{"driver":"virtio-blk-pci","drive":"b1","bus":"rp2","id":"blk1"}}`))
	try(`{"execute":"blockdev-del","arguments":{"node-name":"b1"}}`)
	res.disk = strings.Fields(expect("DISK-SHA", 3*time.Minute) + " -")[1]
	if _, err := r.QueryBlockstats(nil); err != nil {
		t.Errorf("%s: query-blockstats does not decode as go-qemu's BlockStats: %v", emu, err)
	}
	must("device_del blk1", r.DeviceDel("blk1"))
	expect("VDA-GONE", 2*time.Minute)
	waitDeleted(2)
	must("blockdev-del", r.BlockdevDel("b1"))
	must("netdev_del", r.NetdevDel("n1"))
	return res
}

func TestHotplugNICAndDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a Linux guest under TCG twice: skipped under -short")
	}
	if why := assets.Missing("arm64"); why != "" {
		t.Skip(why)
	}
	e := newEnv(t)
	g := run(t, gemuBinary(t), "virt", e)
	if !strings.HasPrefix(g.lease, "DHCP-OK 10.0.2.15 10.0.2.2") {
		t.Errorf("lease %q, want 10.0.2.15 via 10.0.2.2", g.lease)
	}
	if g.fetch != e.blobSum {
		t.Errorf("guest fetched blob with sha256 %s, served %s", g.fetch, e.blobSum)
	}
	if g.disk != e.diskSum {
		t.Errorf("guest read disk with sha256 %s, image has %s", g.disk, e.diskSum)
	}
	wantEvents := []map[string]any{
		{"path": "/machine/peripheral/nic1/virtio-backend"}, {"device": "nic1", "path": "/machine/peripheral/nic1"},
		{"path": "/machine/peripheral/blk1/virtio-backend"}, {"device": "blk1", "path": "/machine/peripheral/blk1"}}
	if !reflect.DeepEqual(g.events, wantEvents) {
		t.Errorf("DEVICE_DELETED data %v, want %v", g.events, wantEvents)
	}
	if !strings.Contains(g.network, "nic1: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\r\n \\ n1: index=0,type=user") {
		t.Errorf("info network: %q", g.network)
	}
	for _, l := range g.errors {
		t.Logf("gemu: %s", l)
	}
	if _, err := exec.LookPath("qemu-system-aarch64"); err != nil {
		t.Skip("qemu-system-aarch64 not installed: no comparison with QEMU 7.2")
	}
	q := run(t, "qemu-system-aarch64", "virt", e)
	if q.fetch != e.blobSum || q.disk != e.diskSum {
		t.Errorf("QEMU's guest: fetch %s disk %s (the oracle run itself failed)", q.fetch, q.disk)
	}
	if !reflect.DeepEqual(g.events, q.events) {
		t.Errorf("DEVICE_DELETED: gemu %v, QEMU %v", g.events, q.events)
	}
	if len(g.errors) != len(q.errors) {
		t.Fatalf("%d error cases for gemu, %d for QEMU", len(g.errors), len(q.errors))
	}
	for i := range g.errors {
		if g.errors[i] != q.errors[i] {
			t.Errorf("reply differs:\n gemu: %s\n QEMU: %s", g.errors[i], q.errors[i])
		}
	}
	if g.network != q.network {
		t.Errorf("info network: gemu %q, QEMU %q", g.network, q.network)
	}
}

// TestRootPortNeedsMSI: on a GICv3 virt gemu has no ITS, hence no MSI, and
// -device pcie-root-port is refused as QEMU 7.2 refuses it with gic-version=3,its=off
// (its hotplug interrupt is MSI-X only there).
func TestRootPortNeedsMSI(t *testing.T) {
	if why := assets.Missing("arm64"); why != "" {
		t.Skip(why)
	}
	try := func(emu, machine string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, emu, "-M", machine, "-cpu", "cortex-a57", "-m", "256", "-nographic", "-S",
			"-kernel", assets.Kernel("arm64"), "-device", "pcie-root-port,id=rp1,chassis=1,slot=1").CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Fatalf("%s -M %s: %v (want exit status 1); output %q", emu, machine, err, out)
		}
		return string(out)
	}
	const want = "MSI-X is not supported by interrupt controller"
	if out := try(gemuBinary(t), "virt,gic-version=3"); !strings.Contains(out, want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("gemu: %q, want one line with %q", out, want)
	}
	if _, err := exec.LookPath("qemu-system-aarch64"); err != nil {
		t.Skip("qemu-system-aarch64 not installed")
	}
	if out := try("qemu-system-aarch64", "virt,gic-version=3,its=off"); !strings.Contains(out, want) {
		t.Errorf("QEMU 7.2 (the oracle): %q", out)
	}
}

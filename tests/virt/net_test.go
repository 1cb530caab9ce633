package virt

// Whole-system tests of virtio-net on the virt board: Debian's arm64 kernel (its
// virtio_net module from the test initramfs) on gemu's TCG, behind the user backend
// (DHCP, a 64 MiB HTTP download from a server the test runs on the host's loopback,
// DNS through 10.0.2.3 against a resolver the test runs, ping of the gateway, hostfwd
// into busybox httpd in the guest, restrict=on), over virtio-pci (-netdev + -device)
// and virtio-mmio (the -nic shorthand), and two guests on one wire through
// -netdev socket,listen= / connect=. Everything the tests open listens on 127.0.0.1;
// the guests reach only their emulated networks.

import (
	"bytes"
	"context"
	"crypto/sha256"
	be "encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gemu/tests/assets"
)

// netLib is guest shell the network scripts share (short: the script travels on the
// kernel command line, 2 KiB on arm64):
//
//	up MODS...  loads the modules and waits (at most 10 s) for eth0, then brings it up
//	dh          runs udhcpc with a script that configures eth0 from the lease
const netLib = `up(){ loadmods "$@";i=0;while [ ! -e /sys/class/net/eth0 ]&&[ $i -lt 100 ];do sleep .1;i=$((i+1));done;ip link set lo up;ip link set eth0 up;}
printf '#!/bin/sh\n[ "$1" = bound ]&&{ ip addr add $ip/${mask:-24} dev $interface;ip route add default via $router;echo DHCP-OK $ip $router $dns;}\nexit 0\n'>/tmp/dh;chmod +x /tmp/dh
dh(){ udhcpc -i eth0 -s /tmp/dh -q -n -t 10 -T 2;}
`

// netVM is a running guest.
type netVM struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	con    *console
	in     io.WriteCloser
	stderr *bytes.Buffer
	done   chan error
}

// netStart boots a guest running script with the emulator arguments extra, under
// -no-reboot unless the first extra argument is "reboot" (which is dropped).
func netStart(t *testing.T, name, bin, script string, env []string, extra ...string) *netVM {
	t.Helper()
	arg := assets.CmdArg(netLib + script)
	if len(arg) > 1900 {
		t.Fatalf("script too long for the kernel command line (%d bytes encoded)", len(arg))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	args := []string{"-M", "virt", "-cpu", "cortex-a57", "-m", "512",
		"-kernel", assets.Kernel("arm64"), "-initrd", assets.Initrd("arm64"),
		"-append", "console=ttyAMA0 quiet panic=-1 " + arg, "-nographic"}
	if len(extra) > 0 && extra[0] == "reboot" {
		extra = extra[1:]
	} else {
		args = append(args, "-no-reboot")
	}
	args = append(args, extra...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	vm := &netVM{t: t, name: name, cmd: cmd, in: in, stderr: new(bytes.Buffer), done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = pw, vm.stderr
	t.Logf("%s: %s %s", name, filepath.Base(bin), strings.Join(extra, " "))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	vm.con = newConsole(pr)
	go func() {
		err := cmd.Wait()
		pw.Close()
		vm.done <- err
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		in.Close()
	})
	return vm
}

// expect waits for a console line containing want and returns it.
func (vm *netVM) expect(want string) string {
	vm.t.Helper()
	l := vm.con.waitFor(want)
	if l == "" {
		vm.t.Fatalf("%s: no %q on the console; console:\n%s\nstderr:\n%s", vm.name, want, vm.con, vm.stderr)
	}
	return l
}

// finish waits for the script's exit line and the emulator's exit.
func (vm *netVM) finish() {
	vm.t.Helper()
	if l := vm.expect("GEMU-CMD-EXIT"); l != "GEMU-CMD-EXIT 0" {
		vm.t.Errorf("%s: script status %q; console:\n%s", vm.name, l, vm.con)
	}
	select {
	case err := <-vm.done:
		if err != nil {
			vm.t.Errorf("%s: emulator exit: %v\nstderr:\n%s", vm.name, err, vm.stderr)
		}
	case <-time.After(time.Minute):
		vm.t.Errorf("%s: emulator did not exit after poweroff", vm.name)
	}
}

// lineField returns the n-th space-separated field of line (after the tag).
func lineField(line string, n int) string {
	f := strings.Fields(line)
	if n < len(f) {
		return f[n]
	}
	return ""
}

// blobServer serves size deterministic bytes at /blob on the loopback and counts
// requests by path.
type blobServer struct {
	addr string
	sum  string
	hits sync.Map // path → *atomic.Int32
}

func newBlobServer(t *testing.T, size int) *blobServer {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i+8 <= len(data); i += 8 {
		be.LittleEndian.PutUint64(data[i:], r.Uint64())
	}
	s := sha256.Sum256(data)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bs := &blobServer{addr: l.Addr().String(), sum: hex.EncodeToString(s[:])}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		c, _ := bs.hits.LoadOrStore(req.URL.Path, new(atomic.Int32))
		c.(*atomic.Int32).Add(1)
		switch req.URL.Path {
		case "/blob":
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.Write(data)
		case "/small":
			io.WriteString(w, "small\n")
		default:
			http.NotFound(w, req)
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return bs
}

func (bs *blobServer) count(path string) int32 {
	if c, ok := bs.hits.Load(path); ok {
		return c.(*atomic.Int32).Load()
	}
	return 0
}

func (bs *blobServer) port() string { _, p, _ := net.SplitHostPort(bs.addr); return p }

// dnsServer answers A queries for name with addr (NXDOMAIN for other names, an empty
// answer for other types) on the loopback, and counts queries for name.
type dnsServer struct {
	addr    string
	queries atomic.Int32
}

func newDNSServer(t *testing.T, name string, addr [4]byte) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &dnsServer{addr: pc.LocalAddr().String()}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := d.answer(buf[:n], name, addr); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	return d
}

// answer builds the reply to one query (RFC 1035 4.1), or nil for a malformed one.
func (d *dnsServer) answer(q []byte, name string, addr [4]byte) []byte {
	if len(q) < 12 || be.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	var labels []string
	o := 12
	for {
		if o >= len(q) {
			return nil
		}
		l := int(q[o])
		if l == 0 {
			o++
			break
		}
		if l > 63 || o+1+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[o+1:o+1+l]))
		o += 1 + l
	}
	if o+4 > len(q) {
		return nil
	}
	qtype := be.BigEndian.Uint16(q[o:])
	o += 4
	r := append([]byte{}, q[:o]...)
	be.BigEndian.PutUint16(r[2:], 0x8180) // response, recursion desired and available
	be.BigEndian.PutUint16(r[6:], 0)
	be.BigEndian.PutUint16(r[8:], 0)
	be.BigEndian.PutUint16(r[10:], 0)
	if !strings.EqualFold(strings.Join(labels, "."), name) {
		r[3] |= 3 // NXDOMAIN
		return r
	}
	d.queries.Add(1)
	if qtype == 1 {
		be.BigEndian.PutUint16(r[6:], 1)
		r = append(r, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
		r = append(r, addr[:]...)
	}
	return r
}

// onQEMU reports that GEMU_VIRT_EMULATOR runs the tests on another emulator.
func onQEMU() bool { return os.Getenv("GEMU_VIRT_EMULATOR") != "" }

// freePort returns a loopback TCP port nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

// httpGet fetches url from the host, retrying for a few seconds (the forward is up
// once the guest's httpd listens).
func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	var last error
	for i := 0; i < 10; i++ {
		resp, err := c.Get(url)
		if err == nil {
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				return string(b)
			}
		}
		last = err
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("GET %s: %v", url, last)
	return ""
}

// guestHTTPD is guest shell that serves one page on port 80 and waits for the host.
const guestHTTPD = "mkdir -p /www;echo hello-from-$(cat /sys/class/net/eth0/address)>/www/index.html;httpd -p 80 -h /www;echo HTTPD-UP;read -t 120 x;echo GOT-$x\n"

// TestNetUser: DHCP, a 64 MiB download, DNS, ping and hostfwd through -netdev user on
// virtio-net-pci.
func TestNetUser(t *testing.T) {
	needAssets(t)
	blob := newBlobServer(t, 64<<20)
	dns := newDNSServer(t, "gemu-test.example", [4]byte{10, 11, 12, 13})
	hp := freePort(t)
	script := "up virtio_pci virtio_net\ndh\necho MAC $(cat /sys/class/net/eth0/address)\n" +
		"echo SHA $(wget -q -O - http://10.0.2.2:" + blob.port() + "/blob|sha256sum)\n" +
		"echo DNS $(nslookup gemu-test.example 10.0.2.3|grep -c 10.11.12.13)\n" +
		"ping -c 2 -W 5 10.0.2.2 >/dev/null&&echo PING-OK\n" + guestHTTPD
	vm := netStart(t, "guest", emulator(t), script, []string{"GEMU_NETDEV_DNS_UPSTREAM=" + dns.addr},
		"-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:"+hp+"-:80", "-device", "virtio-net-pci,netdev=n0")
	if l := vm.expect("DHCP-OK"); lineField(l, 1) != "10.0.2.15" || lineField(l, 2) != "10.0.2.2" || lineField(l, 3) != "10.0.2.3" {
		t.Fatalf("lease %q, want 10.0.2.15 via 10.0.2.2 with DNS 10.0.2.3", l)
	}
	if l := vm.expect("MAC "); lineField(l, 1) != "52:54:00:12:34:56" {
		t.Errorf("guest MAC %q, want QEMU's default 52:54:00:12:34:56", l)
	}
	if l := vm.expect("SHA "); lineField(l, 1) != blob.sum {
		t.Fatalf("download: sha256 %q, want %s (requests %d)", l, blob.sum, blob.count("/blob"))
	}
	if l := vm.expect("DNS "); onQEMU() {
		t.Logf("on QEMU (its slirp asks the host's resolver, not the test's): %s", l)
	} else if lineField(l, 1) != "1" || dns.queries.Load() == 0 {
		t.Errorf("nslookup through 10.0.2.3: %q, %d queries reached the test's resolver", l, dns.queries.Load())
	}
	vm.expect("PING-OK")
	vm.expect("HTTPD-UP")
	if got := httpGet(t, "http://127.0.0.1:"+hp+"/"); got != "hello-from-52:54:00:12:34:56\n" {
		t.Errorf("hostfwd: got %q", got)
	}
	io.WriteString(vm.in, "done\n")
	vm.expect("GOT-done")
	vm.finish()
}

// TestNetNICRestrict: the -nic shorthand with model=virtio-net-device (virtio-mmio)
// and restrict=on: DHCP and hostfwd still work, the download from the host is
// blocked (connection refused, as QEMU's slirp) and never reaches the server.
// (busybox wget's -T segfaults in this guest on QEMU too, so the script does not
// use it.)
func TestNetNICRestrict(t *testing.T) {
	needAssets(t)
	if onQEMU() {
		t.Skip("QEMU's virt board creates only PCI NICs from -nic")
	}
	blob := newBlobServer(t, 1<<10)
	hp := freePort(t)
	script := "up virtio_mmio virtio_net\ndh\necho BUS $(readlink -f /sys/class/net/eth0/device)\n" +
		"wget -q -O /dev/null http://10.0.2.2:" + blob.port() + "/small&&echo FETCH-OK||echo FETCH-BLOCKED\n" + guestHTTPD
	vm := netStart(t, "guest", emulator(t), script, nil,
		"-nic", "user,model=virtio-net-device,mac=52:54:00:aa:bb:cc,restrict=on,hostfwd=tcp:127.0.0.1:"+hp+"-:80")
	if l := vm.expect("DHCP-OK"); lineField(l, 1) != "10.0.2.15" {
		t.Fatalf("lease %q", l)
	}
	if l := vm.expect("BUS "); !strings.Contains(l, "virtio_mmio") {
		t.Errorf("eth0 is not on virtio-mmio: %q", l)
	}
	if l := vm.expect("FETCH-"); l != "FETCH-BLOCKED" || blob.count("/small") != 0 {
		t.Errorf("restrict=on: %q, %d requests reached the host", l, blob.count("/small"))
	}
	vm.expect("HTTPD-UP")
	if got := httpGet(t, "http://127.0.0.1:"+hp+"/"); got != "hello-from-52:54:00:aa:bb:cc\n" {
		t.Errorf("hostfwd under restrict=on: got %q", got)
	}
	io.WriteString(vm.in, "done\n")
	vm.expect("GOT-done")
	vm.finish()
}

// TestNetSocket: two guests on one wire through -netdev socket (QEMU's length-framed
// TCP stream): B pings A and downloads 8 MiB from A's httpd, so A's TSO frames are
// segmented by its device for a backend without offloads; B runs mq=on on two CPUs.
// GEMU_NET_PEER names
// another emulator (qemu-system-aarch64) to run guest B, to check the wire against
// QEMU.
func TestNetSocket(t *testing.T) {
	needAssets(t)
	port := freePort(t)
	bin := emulator(t)
	peer := bin
	if p := os.Getenv("GEMU_NET_PEER"); p != "" {
		var err error
		if peer, err = exec.LookPath(p); err != nil {
			t.Fatalf("GEMU_NET_PEER: %v", err)
		}
	}
	scriptA := "up virtio_pci virtio_net\nip addr add 192.168.76.1/24 dev eth0\n" +
		"mkdir /www;head -c 8388608 /dev/urandom >/www/f;echo ASHA $(sha256sum </www/f)\n" +
		"httpd -p 80 -h /www;echo A-READY;read -t 200 x;echo GOT-$x\n"
	a := netStart(t, "A", bin, scriptA, nil, "-netdev", "socket,id=s0,listen=127.0.0.1:"+port,
		"-device", "virtio-net-pci,netdev=s0,mac=52:54:00:00:00:0a")
	a.expect(assets.Marker) // A listens once its emulator runs the guest
	scriptB := "up virtio_pci virtio_net\nip addr add 192.168.76.2/24 dev eth0\n" +
		"i=0;until ping -c 1 -W 1 192.168.76.1 >/dev/null;do i=$((i+1));[ $i -gt 60 ]&&break;done;echo PINGS $i\n" +
		"echo BSHA $(wget -q -O - http://192.168.76.1/f|sha256sum)\necho QUEUES $(ls /sys/class/net/eth0/queues)\n"
	// B has two CPUs and mq=on, so Linux spreads its transmits over both tx queues.
	b := netStart(t, "B", peer, scriptB, nil, "-smp", "2", "-netdev", "socket,id=s0,connect=127.0.0.1:"+port,
		"-device", "virtio-net-pci,netdev=s0,mac=52:54:00:00:00:0b,mq=on")
	asha := lineField(a.expect("ASHA "), 1)
	a.expect("A-READY")
	if l := b.expect("PINGS "); lineField(l, 1) == "61" {
		t.Fatalf("B never reached A: %q", l)
	}
	if l := b.expect("BSHA "); lineField(l, 1) != asha || len(asha) != 64 {
		t.Errorf("B downloaded sha256 %q, A served %s", l, asha)
	}
	if l := b.expect("QUEUES "); peer == bin && l != "QUEUES rx-0 rx-1 tx-0 tx-1" {
		t.Errorf("mq=on with two CPUs: %q, want two queue pairs in use", l)
	}
	b.finish()
	io.WriteString(a.in, "done\n")
	a.expect("GOT-done")
	a.finish()
}

// TestNetReboot: the netdev outlives a guest reset (PSCI SYSTEM_RESET), as in QEMU; the
// NIC of the rebuilt machine finds the user backend's vnet header already on and
// still gets a lease and a download through it.
func TestNetReboot(t *testing.T) {
	needAssets(t)
	blob := newBlobServer(t, 1<<20)
	script := "up virtio_pci virtio_net\ndh\necho FETCH $(wget -q -O - http://10.0.2.2:" + blob.port() + "/blob|sha256sum)\nreboot -f\n"
	vm := netStart(t, "guest", emulator(t), script, nil, "reboot", "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0")
	for i := 1; i <= 2; i++ {
		if l := vm.expect("DHCP-OK"); lineField(l, 1) != "10.0.2.15" {
			t.Fatalf("boot %d: lease %q", i, l)
		}
		if l := vm.expect("FETCH "); lineField(l, 1) != blob.sum {
			t.Fatalf("boot %d: download %q, want %s", i, l, blob.sum)
		}
	}
	if n := blob.count("/blob"); n != 2 {
		t.Errorf("%d downloads reached the server, want 2", n)
	}
	vm.cmd.Process.Kill()
}

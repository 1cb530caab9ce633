package netdev

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

const netnsEnv = "GEMU_NETDEV_NETNS_CHILD"

// inNetns re-runs the named test in a new network namespace (unshare -n); it
// returns true in the child, false in the parent after the child passed. Without
// permission for a namespace it skips with the reason.
func inNetns(t *testing.T) bool {
	if os.Getenv(netnsEnv) == "1" {
		return true
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare(1) not installed: no network namespace for the tap test")
	}
	if out, err := exec.Command(unshare, "-n", "true").CombinedOutput(); err != nil {
		t.Skipf("no network namespace here (unshare -n: %v %s)", err, strings.TrimSpace(string(out)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, unshare, "-n", os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in a new network namespace:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if strings.Contains(string(out), "--- SKIP") {
		t.Skip("skipped in the namespace")
	}
	return false
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v %s", strings.Join(args, " "), err, out)
	}
}

// TestTap creates tap0 in a fresh network namespace, gives the host end
// 192.168.77.1/24, and puts a gVisor "guest" at 192.168.77.2 behind the tap
// backend: the host kernel's TCP connection to the guest crosses the tap both ways.
func TestTap(t *testing.T) {
	if !inNetns(t) {
		return
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip(8) not installed")
	}
	be, err := Open("tap", getter("ifname", "tap0", "script", "no", "downscript", "no", "vhost", "off"))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	if n := be.(*Tap).Name(); n != "tap0" {
		t.Fatalf("interface %q", n)
	}
	run(t, "ip", "link", "set", "lo", "up")
	run(t, "ip", "addr", "add", "192.168.77.1/24", "dev", "tap0")
	run(t, "ip", "link", "set", "tap0", "up")
	g := newTestGuest(t, be, 1500, 0)
	g.configure(netip.MustParseAddr("192.168.77.2"), 24, netip.MustParseAddr("192.168.77.1"))
	ln, err := gonet.ListenTCP(g.st, fullAddr("192.168.77.2:8080"), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c)
		c.Close()
	}()
	c, err := net.DialTimeout("tcp4", "192.168.77.2:8080", 10*time.Second)
	if err != nil {
		t.Fatalf("host → guest over tap0: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	msg := pattern(1<<20, 5)
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
		t.Fatalf("echo over tap0: %v", err)
	}
	// The guest dials the host too.
	hl, err := net.Listen("tcp4", "192.168.77.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Close()
	go func() {
		if c, err := hl.Accept(); err == nil {
			c.Write([]byte("from host"))
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gc, err := g.dial(ctx, hl.Addr().String())
	if err != nil {
		t.Fatalf("guest → host over tap0: %v", err)
	}
	b, _ := io.ReadAll(gc)
	gc.Close()
	if string(b) != "from host" {
		t.Errorf("read %q", b)
	}
}

// TestTapVnetHdr opens the tap with vnet_hdr=on: frames carry the 12-byte
// virtio-net header both ways.
func TestTapVnetHdr(t *testing.T) {
	if !inNetns(t) {
		return
	}
	be, err := Open("tap", getter("ifname", "tap1", "vnet_hdr", "on", "script", "no"))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	tap := be.(*Tap)
	if o := tap.Offloads(); !o.VnetHdr {
		t.Fatalf("offloads %+v", o)
	}
	if err := tap.SetOffload(true, true, false, false, false); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "addr", "add", "192.168.78.1/24", "dev", "tap1")
	run(t, "ip", "link", "set", "tap1", "up")
	sink := make(frameSink, 64)
	be.SetReceiver(sink.recv)
	// An ARP request for the host end, after an all-zero vnet header (no offload).
	arpReq := make([]byte, VnetHdrLen)
	arpReq = append(arpReq, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	arpReq = append(arpReq, guestMAC[:]...)
	arpReq = append(arpReq, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1)
	arpReq = append(arpReq, guestMAC[:]...)
	arpReq = append(arpReq, 192, 168, 78, 2, 0, 0, 0, 0, 0, 0, 192, 168, 78, 1)
	deadline := time.After(10 * time.Second)
	for {
		be.Send(arpReq)
		select {
		case f := <-sink:
			if len(f) >= VnetHdrLen+42 && f[VnetHdrLen+12] == 0x08 && f[VnetHdrLen+13] == 0x06 && f[VnetHdrLen+21] == 2 {
				return // the ARP reply, behind its vnet header
			}
			continue
		case <-time.After(200 * time.Millisecond):
			continue
		case <-deadline:
			t.Fatal("no ARP reply over the vnet_hdr tap")
		}
	}
}

// TestTapNoPermission: without CAP_NET_ADMIN the error is one clear line.
func TestTapNoPermission(t *testing.T) {
	if os.Getenv(netnsEnv) == "1" {
		t.Skip("parent-only")
	}
	if os.Geteuid() == 0 {
		// Drop to an unprivileged user namespace child? Use setpriv when present.
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Skip("running as root and setpriv(1) missing: cannot test the unprivileged error")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
			os.Args[0], "-test.run", "^TestTapNoPermission$", "-test.v")
		out, err := cmd.CombinedOutput()
		t.Logf("as nobody:\n%s", out)
		if err != nil {
			t.Fatalf("unprivileged child: %v", err)
		}
		if !strings.Contains(string(out), "--- PASS") {
			t.Fatal("unprivileged child did not pass")
		}
		return
	}
	_, err := Open("tap", getter("ifname", "gemutap9"))
	if err == nil {
		t.Skip("this user may create taps")
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.Contains(msg, "CAP_NET_ADMIN") {
		t.Errorf("error %q", msg)
	}
	t.Logf("error: %s", msg)
}

// TestUserPingExternal: in a fresh network namespace whose loopback also holds
// 192.0.2.1 and ping sockets allowed for every group, the guest's echo to 192.0.2.1
// leaves through an unprivileged ICMP socket and the reply comes back with the
// guest's id and sequence; with ping sockets forbidden it is dropped.
func TestUserPingExternal(t *testing.T) {
	if !inNetns(t) {
		return
	}
	run(t, "ip", "link", "set", "lo", "up")
	run(t, "ip", "addr", "add", "192.0.2.1/32", "dev", "lo")
	setRange := func(r string) {
		if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte(r), 0); err != nil {
			t.Skipf("cannot set ping_group_range in the namespace: %v", err)
		}
	}
	ping := func() ([]byte, bool) {
		u := openUserT(t, Options{})
		g := newTestGuest(t, u, 1500, 0)
		g.configure(guestIP, 24, gwAddr)
		replies := make(chan []byte, 4)
		g.setHook(func(f []byte) bool {
			ip, ok := ipv4Of(f)
			if ok && ip.proto == 1 && f[ip.off+ip.ihl] == 0 {
				replies <- append([]byte(nil), f[ip.off:ip.off+ip.total]...)
				return true
			}
			return false
		})
		u.Send(echoFrame(netip.MustParseAddr("192.0.2.1"), 0x4321, 9, []byte("outside")))
		select {
		case r := <-replies:
			return r, true
		case <-time.After(2 * time.Second):
			return nil, false
		}
	}
	setRange("1 0")
	if r, ok := ping(); ok {
		t.Errorf("ping sockets forbidden, yet a reply came: %x", r)
	}
	setRange("0 2147483647")
	r, ok := ping()
	if !ok {
		t.Fatal("no echo reply from 192.0.2.1 through the ICMP socket")
	}
	if netip.AddrFrom4([4]byte(r[12:16])).String() != "192.0.2.1" || netip.AddrFrom4([4]byte(r[16:20])) != guestIP ||
		r[20+4] != 0x43 || r[20+5] != 0x21 || r[20+7] != 9 || string(r[28:]) != "outside" {
		t.Errorf("bad reply %x", r)
	}
	if c := csumFold(csumAdd(0, r[20:])); c != 0 {
		t.Errorf("reply ICMP checksum does not verify")
	}
}

// TestTapVnetTSO: the kernel as the oracle for the vnet header encoding. A guest
// with TSO both ways sits behind a tap whose NIC enabled the header: the kernel
// must accept the guest's 64 KiB GSO frames (it segments and checks them) and hand
// the guest GSO frames of its own; data crosses intact both ways.
func TestTapVnetTSO(t *testing.T) {
	if !inNetns(t) {
		return
	}
	be, err := Open("tap", getter("ifname", "tap2", "script", "no", "downscript", "no"))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	run(t, "ip", "link", "set", "lo", "up")
	run(t, "ip", "addr", "add", "192.168.79.1/24", "dev", "tap2")
	run(t, "ip", "link", "set", "tap2", "up")
	g := newTestGuest(t, be, 1500, vnetGuest)
	var gsoIn, gsoOut atomic.Int32
	g.mu.Lock()
	g.wire = func(f []byte) {
		if len(f) > VnetHdrLen && f[1] != 0 {
			gsoIn.Add(1)
		}
	}
	g.mu.Unlock()
	out := g.link.out
	g.link.out = func(f []byte) {
		if len(f) > VnetHdrLen && f[1] == 1 {
			gsoOut.Add(1)
		}
		out(f)
	}
	g.configure(netip.MustParseAddr("192.168.79.2"), 24, netip.MustParseAddr("192.168.79.1"))
	ln, err := gonet.ListenTCP(g.st, fullAddr("192.168.79.2:8080"), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c)
		c.Close()
	}()
	c, err := net.DialTimeout("tcp4", "192.168.79.2:8080", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	msg := pattern(8<<20, 6)
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
		t.Fatalf("echo over the TSO tap: %v", err)
	}
	if gsoIn.Load() == 0 || gsoOut.Load() == 0 {
		t.Errorf("GSO frames: %d from the kernel, %d to it; want both > 0", gsoIn.Load(), gsoOut.Load())
	}
	t.Logf("GSO frames: %d from the kernel, %d to it", gsoIn.Load(), gsoOut.Load())
}

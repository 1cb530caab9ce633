package netdev

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
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

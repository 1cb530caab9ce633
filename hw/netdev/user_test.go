package netdev

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

var (
	gwAddr   = netip.MustParseAddr("10.0.2.2")
	dnsAddr  = netip.MustParseAddr("10.0.2.3")
	guestIP  = netip.MustParseAddr("10.0.2.15")
	testWait = 20 * time.Second
)

func TestUserDHCP(t *testing.T) {
	u := openUserT(t, Options{}, "hostname", "vm1", "domainname", "example.test")
	g := newTestGuest(t, u, 1500, 0)
	l := g.dhcp()
	if l.yiaddr != guestIP || l.router != gwAddr || l.dns != dnsAddr || l.server != gwAddr {
		t.Errorf("lease %v router %v dns %v server %v; want 10.0.2.15, 10.0.2.2, 10.0.2.3, 10.0.2.2", l.yiaddr, l.router, l.dns, l.server)
	}
	if l.mask != [4]byte{255, 255, 255, 0} {
		t.Errorf("mask %v, want 255.255.255.0", l.mask)
	}
	if l.lease != 86400 {
		t.Errorf("lease time %d, want slirp's 86400", l.lease)
	}
	if l.hostname != "vm1" || l.domain != "example.test" {
		t.Errorf("hostname %q domain %q", l.hostname, l.domain)
	}
	// A REQUEST for an address that is not the client's is refused.
	nak, ok := g.dhcpExchange(dhcpRequest, 7, []byte{50, 4, 10, 0, 2, 99})
	if !ok || nak.typ != dhcpNak {
		t.Errorf("REQUEST for 10.0.2.99: got type %d, want NAK", nak.typ)
	}
}

func TestUserDHCPOptions(t *testing.T) {
	u := openUserT(t, Options{}, "net", "192.168.76.0/255.255.255.0", "dhcpstart", "192.168.76.9", "host", "192.168.76.1", "dns", "192.168.76.53")
	g := newTestGuest(t, u, 1500, 0)
	l := g.dhcp()
	if l.yiaddr.String() != "192.168.76.9" || l.router.String() != "192.168.76.1" || l.dns.String() != "192.168.76.53" {
		t.Errorf("lease %v router %v dns %v", l.yiaddr, l.router, l.dns)
	}
	// The gateway answers on its configured address.
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := g.dial(ctx, "192.168.76.1:"+portOf(ln.Addr()))
	if err != nil {
		t.Fatalf("dial the configured host address: %v", err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "hi" {
		t.Errorf("read %q", b)
	}
}

func portOf(a net.Addr) string { return strconv.Itoa(a.(*net.TCPAddr).Port) }

// pattern returns n bytes of seeded pseudo-random data.
func pattern(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func TestUserTCPDownload(t *testing.T) {
	const size = 64 << 20
	data := pattern(size, 1)
	want := sha256.Sum256(data)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Write(data)
	})}
	go srv.Serve(ln)
	defer srv.Close()

	u := openUserT(t, Options{})
	g := newTestGuest(t, u, 1500, 0)
	g.dhcp()
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return g.dial(ctx, addr) },
	}}
	start := time.Now()
	resp, err := client.Get("http://10.0.2.2:" + portOf(ln.Addr()) + "/big")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || n != size {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Fatalf("sha256 %x, want %x", got, want)
	}
	t.Logf("64 MiB host→guest through the user backend in %v (%.0f MB/s)", time.Since(start), size/1e6/time.Since(start).Seconds())
}

// dnsServer answers every A query with 192.0.2.7 over UDP and TCP on one port.
func dnsServer(t *testing.T) string {
	for try := 0; try < 20; try++ {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		ln, err := net.Listen("tcp4", addr)
		if err != nil {
			pc.Close()
			continue
		}
		t.Cleanup(func() { pc.Close(); ln.Close() })
		go func() {
			buf := make([]byte, 512)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(dnsAnswer(buf[:n]), from)
			}
		}()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err == nil {
					q := make([]byte, binary.BigEndian.Uint16(l[:]))
					if _, err := io.ReadFull(c, q); err == nil {
						a := dnsAnswer(q)
						c.Write(append([]byte{byte(len(a) >> 8), byte(len(a))}, a...))
					}
				}
				c.Close()
			}
		}()
		return addr
	}
	t.Fatal("no port free for UDP and TCP")
	return ""
}

func dnsQuery(id uint16, name string) []byte {
	q := []byte{byte(id >> 8), byte(id), 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range bytes.Split([]byte(name), []byte(".")) {
		q = append(q, byte(len(l)))
		q = append(q, l...)
	}
	return append(q, 0, 0, 1, 0, 1)
}

func dnsAnswer(q []byte) []byte {
	if len(q) < 12 {
		return nil
	}
	a := append([]byte(nil), q...)
	a[2], a[3] = 0x81, 0x80
	a[7] = 1 // ANCOUNT
	return append(a, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7)
}

func TestUserDNS(t *testing.T) {
	up := dnsServer(t)
	u := openUserT(t, Options{DNSUpstream: up})
	g := newTestGuest(t, u, 1500, 0)
	g.dhcp()
	dns := fullAddr("10.0.2.3:53")
	c, err := gonet.DialUDP(g.st, nil, &dns, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q := dnsQuery(0xbeef, "gemu.test")
	c.SetDeadline(time.Now().Add(testWait))
	if _, err := c.Write(q); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no DNS answer over UDP: %v", err)
	}
	if !bytes.Equal(buf[:n], dnsAnswer(q)) {
		t.Errorf("UDP answer %x", buf[:n])
	}
	// DNS over TCP reaches the same resolver.
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	tc, err := g.dial(ctx, "10.0.2.3:53")
	if err != nil {
		t.Fatalf("TCP DNS: %v", err)
	}
	defer tc.Close()
	q = dnsQuery(0x1111, "tcp.gemu.test")
	tc.Write(append([]byte{0, byte(len(q))}, q...))
	tc.SetReadDeadline(time.Now().Add(testWait))
	b, _ := io.ReadAll(tc)
	if want := dnsAnswer(q); len(b) < 2 || !bytes.Equal(b[2:], want) {
		t.Errorf("TCP answer %x", b)
	}
}

// echoFrame builds an ICMP echo request from the guest to dst.
func echoFrame(dst netip.Addr, id, seq uint16, payload []byte) []byte {
	msg := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq)}
	msg = append(msg, payload...)
	c := csumFold(csumAdd(0, msg))
	msg[2], msg[3] = byte(c>>8), byte(c)
	return ipv4Frame(nil, gatewayMAC(gwAddr), guestMAC, guestIP.As4(), dst.As4(), 1, msg)
}

func TestUserPing(t *testing.T) {
	u := openUserT(t, Options{})
	g := newTestGuest(t, u, 1500, 0)
	g.configure(guestIP, 24, gwAddr)
	replies := make(chan []byte, 8)
	g.setHook(func(f []byte) bool {
		ip, ok := ipv4Of(f)
		if ok && ip.proto == 1 && f[ip.off+ip.ihl] == 0 {
			replies <- append([]byte(nil), f[ip.off:ip.off+ip.total]...)
			return true
		}
		return false
	})
	for _, dst := range []netip.Addr{gwAddr, dnsAddr} {
		u.Send(echoFrame(dst, 0x77, 3, []byte("gemu ping")))
		select {
		case r := <-replies:
			if netip.AddrFrom4([4]byte(r[12:16])) != dst || !bytes.Equal(r[20+8:], []byte("gemu ping")) ||
				binary.BigEndian.Uint16(r[24:26]) != 0x77 || binary.BigEndian.Uint16(r[26:28]) != 3 {
				t.Errorf("bad echo reply from %v: %x", dst, r)
			}
		case <-time.After(testWait):
			t.Fatalf("no echo reply from %v", dst)
		}
	}
	// An echo to another address of the virtual network is not answered by anyone
	// (the netstack is promiscuous and must not pretend to be every host).
	u.Send(echoFrame(netip.MustParseAddr("10.0.2.77"), 0x77, 4, nil))
	select {
	case r := <-replies:
		t.Errorf("echo to 10.0.2.77 answered: %x", r)
	case <-time.After(300 * time.Millisecond):
	}
}

func freePort(t *testing.T, network string) int {
	if network == "udp" {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return pc.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestUserHostFwd(t *testing.T) {
	hp, up := freePort(t, "tcp"), freePort(t, "udp")
	u := openUserT(t, Options{},
		"hostfwd.0.str", fmt.Sprintf("tcp:127.0.0.1:%d-:2222", hp),
		"hostfwd.1.str", fmt.Sprintf("udp:127.0.0.1:%d-10.0.2.15:5353", up))
	g := newTestGuest(t, u, 1500, 0)
	g.dhcp()
	gl, err := gonet.ListenTCP(g.st, fullAddr("10.0.2.15:2222"), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	peer := make(chan string, 1)
	go func() {
		c, err := gl.Accept()
		if err != nil {
			return
		}
		peer <- c.RemoteAddr().String()
		io.Copy(c, c)
		c.Close()
	}()
	c, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", hp), testWait)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testWait))
	msg := pattern(300000, 2)
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through hostfwd: %v", err)
	}
	if p := <-peer; netip.MustParseAddrPort(p).Addr() != gwAddr {
		t.Errorf("guest sees the connection from %s, want 10.0.2.2 (slirp's host address)", p)
	}

	// UDP forwarding: a datagram to the host port reaches the guest, the reply comes back.
	gu, err := gonet.DialUDP(g.st, &tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(guestIP.As4()), Port: 5353}, nil, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer gu.Close()
	go func() {
		buf := make([]byte, 100)
		gu.SetDeadline(time.Now().Add(testWait))
		n, from, err := gu.ReadFrom(buf)
		if err == nil {
			gu.WriteTo(append([]byte("re:"), buf[:n]...), from)
		}
	}()
	uc, err := net.Dial("udp4", fmt.Sprintf("127.0.0.1:%d", up))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.SetDeadline(time.Now().Add(testWait))
	uc.Write([]byte("ping"))
	buf := make([]byte, 100)
	n, err := uc.Read(buf)
	if err != nil || string(buf[:n]) != "re:ping" {
		t.Errorf("UDP hostfwd: %q %v", buf[:n], err)
	}
}

func TestUserRestrict(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	up := dnsServer(t)
	hp := freePort(t, "tcp")
	u := openUserT(t, Options{DNSUpstream: up}, "restrict", "on", "hostfwd", fmt.Sprintf("tcp:127.0.0.1:%d-:22", hp))
	g := newTestGuest(t, u, 1500, 0)
	g.dhcp() // DHCP still works
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	if c, err := g.dial(ctx, "10.0.2.2:"+portOf(ln.Addr())); err == nil {
		c.Close()
		t.Fatal("restrict=on: the guest's outbound connection succeeded")
	}
	dns := fullAddr("10.0.2.3:53")
	c, err := gonet.DialUDP(g.st, nil, &dns, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(dnsQuery(1, "x.test"))
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Read(make([]byte, 512)); err == nil {
		t.Error("restrict=on: a UDP datagram left the guest")
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the host server saw %d connections", n)
	}
	// Inbound forwarding still works under restrict=on.
	gl, err := gonet.ListenTCP(g.st, fullAddr("10.0.2.15:22"), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	go func() {
		if c, err := gl.Accept(); err == nil {
			c.Write([]byte("SSH-2.0-guest\r\n"))
			c.Close()
		}
	}()
	hc, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", hp), testWait)
	if err != nil {
		t.Fatal(err)
	}
	hc.SetDeadline(time.Now().Add(testWait))
	b, _ := io.ReadAll(hc)
	hc.Close()
	if string(b) != "SSH-2.0-guest\r\n" {
		t.Errorf("hostfwd under restrict=on read %q", b)
	}
}

// TestUserFlood opens 2000 connections from the guest (64 at a time), half to a
// host server that accepts and closes, half to a closed port, then checks that the
// backend still works and its goroutines and heap came back down.
func TestUserFlood(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	closed := freePort(t, "tcp")
	u := openUserT(t, Options{})
	g := newTestGuest(t, u, 1500, 0)
	g.dhcp()
	runtime.GC()
	base := runtime.NumGoroutine()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap := ms.HeapAlloc

	const total, par = 2000, 64
	var wg sync.WaitGroup
	var ok, refused atomic.Int32
	sem := make(chan struct{}, par)
	deadline := time.Now().Add(120 * time.Second)
	var peak atomic.Int32
	for i := 0; i < total && time.Now().Before(deadline); i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			port := portOf(ln.Addr())
			if i%2 == 1 {
				port = strconv.Itoa(closed)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := g.dial(ctx, "10.0.2.2:"+port)
			if err != nil {
				if i%2 == 0 {
					t.Logf("conn %d to the open port: %v", i, err)
				}
				refused.Add(1)
				return
			}
			ok.Add(1)
			io.Copy(io.Discard, c)
			c.Close()
			if n := int32(u.tcpConns.Load()); n > peak.Load() {
				peak.Store(n)
			}
		}(i)
	}
	wg.Wait()
	// Every attempt at the closed port is refused; the open port may lose a very
	// few to port reuse against TIME_WAIT on the host's loopback under load.
	if ok.Load() < total/2*995/1000 || ok.Load() > total/2 || refused.Load() != total-ok.Load() {
		t.Errorf("%d connected, %d refused; want %d each", ok.Load(), refused.Load(), total/2)
	}
	if p := peak.Load(); p > maxTCPConns {
		t.Errorf("peak NAT connections %d > %d", p, maxTCPConns)
	}
	// The goroutines of finished connections go away (bounded wait).
	var n int
	for i := 0; i < 100; i++ {
		runtime.GC()
		n = runtime.NumGoroutine()
		if n <= base+10 && u.tcpConns.Load() == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n > base+10 || u.tcpConns.Load() != 0 {
		t.Errorf("after the flood: %d goroutines (before %d), %d NAT connections", n, base, u.tcpConns.Load())
	}
	runtime.ReadMemStats(&ms)
	if grow := int64(ms.HeapAlloc) - int64(baseHeap); grow > 64<<20 {
		t.Errorf("heap grew by %d MiB over the flood", grow>>20)
	}
	t.Logf("flood: %d goroutines before, %d after; heap %+d KiB; peak NAT connections %d", base, n, (int64(ms.HeapAlloc)-int64(baseHeap))>>10, peak.Load())
	// Still up.
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	c, err := g.dial(ctx, "10.0.2.2:"+portOf(ln.Addr()))
	if err != nil {
		t.Fatalf("backend down after the flood: %v", err)
	}
	c.Close()
}

// TestUserConnLimit holds connections open past the limit: the ones beyond are
// refused, and the backend keeps serving once they close.
func TestUserConnLimit(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held sync.WaitGroup
	release := make(chan struct{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held.Add(1)
			go func() { <-release; c.Close(); held.Done() }()
		}
	}()
	u := openUserT(t, Options{})
	g := newTestGuest(t, u, 1500, 0)
	g.configure(guestIP, 24, gwAddr)
	var conns []net.Conn
	refused := 0
	for i := 0; i < maxTCPConns+20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := g.dial(ctx, "10.0.2.2:"+portOf(ln.Addr()))
		cancel()
		if err != nil {
			refused++
			continue
		}
		conns = append(conns, c)
	}
	if len(conns) != maxTCPConns || refused != 20 {
		t.Errorf("%d connections held, %d refused; want %d and 20", len(conns), refused, maxTCPConns)
	}
	close(release)
	for _, c := range conns {
		c.Close()
	}
	for i := 0; i < 100 && u.tcpConns.Load() != 0; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	if c, err := g.dial(ctx, "10.0.2.2:"+portOf(ln.Addr())); err != nil {
		t.Errorf("no connection after the limit cleared: %v", err)
	} else {
		c.Close()
	}
}

func TestUserOptionErrors(t *testing.T) {
	for _, c := range []struct {
		kv   []string
		want string
	}{
		{[]string{"net", "10.0.2"}, "Parameter 'net'"},
		{[]string{"host", "10.9.9.9"}, "Parameter 'host'"},
		{[]string{"dhcpstart", "x"}, "Parameter 'dhcpstart'"},
		{[]string{"restrict", "maybe"}, "Parameter 'restrict' expects 'on' or 'off'"},
		{[]string{"hostfwd", "tcp::22"}, "Parameter 'hostfwd'"},
		{[]string{"hostfwd", "sctp::1-:2"}, "Parameter 'hostfwd'"},
		{[]string{"hostfwd", "tcp::70000-:22"}, "Parameter 'hostfwd'"},
		{[]string{"dns", "10.0.2.2"}, "Parameter 'dns'"},
	} {
		m := map[string]string{c.kv[0]: c.kv[1]}
		_, err := Open("user", func(k string) (string, bool) { v, ok := m[k]; return v, ok })
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(c.want)) || bytes.ContainsRune([]byte(err.Error()), '\n') {
			t.Errorf("%v: error %v, want one line with %q", c.kv, err, c.want)
		}
	}
	// A busy host port is a clear error.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	m := map[string]string{"hostfwd": "tcp:127.0.0.1:" + portOf(ln.Addr()) + "-:22"}
	if _, err := Open("user", func(k string) (string, bool) { v, ok := m[k]; return v, ok }); err == nil ||
		!bytes.Contains([]byte(err.Error()), []byte("could not set up host forwarding rule")) {
		t.Errorf("busy hostfwd port: %v", err)
	}
}

func TestHostResolver(t *testing.T) {
	p := t.TempDir() + "/resolv.conf"
	if err := writeFile(p, "# c\nsearch x\nnameserver fe80::1\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n"); err != nil {
		t.Fatal(err)
	}
	if got := hostResolver(p); got != "192.0.2.53:53" {
		t.Errorf("hostResolver = %s", got)
	}
	if got := hostResolver(p + ".missing"); got != "127.0.0.1:53" {
		t.Errorf("no resolv.conf: %s", got)
	}
}

// TestUserVnetHdr moves 16 MiB each way with a guest using the vnet header both
// ways: frames to the guest carry NEEDS_CSUM and TCPV4 GSO (checked on the wire),
// the data arrives intact.
func TestUserVnetHdr(t *testing.T) {
	const size = 16 << 20
	data := pattern(size, 3)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write(data) // download
		c.(*net.TCPConn).CloseWrite()
		h := sha256.New()
		io.Copy(h, c) // upload
		var s [32]byte
		copy(s[:], h.Sum(nil))
		got <- s
		c.Close()
	}()
	u := openUserT(t, Options{})
	g := newTestGuest(t, u, 1500, vnetGuest)
	var gsoFrames, big atomic.Int32
	g.mu.Lock()
	g.wire = func(f []byte) {
		if len(f) > VnetHdrLen && f[1] == 1 && f[0]&1 != 0 {
			gsoFrames.Add(1)
		}
		if len(f) > 1514+VnetHdrLen {
			big.Add(1)
		}
	}
	g.mu.Unlock()
	g.dhcp()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := g.dial(ctx, "10.0.2.2:"+portOf(ln.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	h := sha256.New()
	if n, err := io.Copy(h, c); err != nil || n != size {
		t.Fatalf("download %d bytes: %v", n, err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("download corrupted")
	}
	up := pattern(size, 4)
	if _, err := c.Write(up); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	if s := <-got; s != sha256.Sum256(up) {
		t.Fatal("upload corrupted")
	}
	c.Close()
	if gsoFrames.Load() == 0 || big.Load() == 0 {
		t.Errorf("no TSO frames reached the guest (%d GSO headers, %d frames over the MTU)", gsoFrames.Load(), big.Load())
	}
	t.Logf("%d GSO frames to the guest", gsoFrames.Load())
}

package netdev

import (
	"context"
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// testGuest is a "guest": a second gVisor netstack whose NIC is a FrameLink wired to
// a Backend, with a hook that sees every frame for the guest first.
type testGuest struct {
	t    testing.TB
	be   Backend
	st   *stack.Stack
	link *FrameLink
	mac  [6]byte

	mu   sync.Mutex
	hook func(frame []byte) bool // sees frames without vnet header; true when it consumed the frame
	wire func(frame []byte)      // sees every frame as it came, vnet header included
}

// send gives the backend a hand-made frame (with a zero vnet header when the
// guest uses one).
func (g *testGuest) send(f []byte) {
	if g.link.vnet.Load() {
		f = append(make([]byte, VnetHdrLen), f...)
	}
	g.be.Send(f)
}

var guestMAC = [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

// vnetGuest asks newTestGuest for a guest with virtio-net offloads: a vnet header
// on every frame, TSO both ways.
const vnetGuest = ^uint32(0)

func newTestGuest(t testing.TB, be Backend, mtu uint32, gso uint32) *testGuest {
	t.Helper()
	g := &testGuest{t: t, be: be, mac: guestMAC}
	g.link = NewFrameLink(mtu, g.mac, gso != 0, func(f []byte) { be.Send(f) })
	if gso == vnetGuest {
		vb, ok := be.(VnetHdrBackend)
		if !ok {
			t.Fatalf("%T has no vnet header mode", be)
		}
		if err := vb.EnableVnetHdr(true); err != nil {
			t.Fatal(err)
		}
		g.link.EnableGSO(65000)
		g.link.EnableVnetHdr()
	} else if gso != 0 {
		g.link.EnableGSO(gso)
	}
	g.st = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	sack := tcpip.TCPSACKEnabled(true)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: 1 << 20, Max: 8 << 20}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4096, Default: 1 << 20, Max: 8 << 20}
	for _, o := range []tcpip.SettableTransportProtocolOption{&sack, &rcv, &snd} {
		g.st.SetTransportProtocolOption(tcp.ProtocolNumber, o)
	}
	if err := g.st.CreateNIC(1, g.link); err != nil {
		t.Fatal(err)
	}
	be.SetReceiver(func(f []byte) bool {
		g.mu.Lock()
		h, w := g.hook, g.wire
		g.mu.Unlock()
		if w != nil {
			w(f)
		}
		body := f
		if g.link.vnet.Load() && len(f) >= VnetHdrLen {
			body = f[VnetHdrLen:]
		}
		if h != nil && h(body) {
			return true
		}
		g.link.Inject(f)
		return true
	})
	t.Cleanup(func() { g.st.Close(); g.st.Wait() })
	return g
}

func (g *testGuest) setHook(h func([]byte) bool) {
	g.mu.Lock()
	g.hook = h
	g.mu.Unlock()
}

// configure gives the guest its address and the default route via router.
func (g *testGuest) configure(addr netip.Addr, bits int, router netip.Addr) {
	pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{
		Address: tcpip.AddrFrom4(addr.As4()), PrefixLen: bits}}
	if err := g.st.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
		g.t.Fatal(err)
	}
	sub := netip.PrefixFrom(addr, bits).Masked()
	subnet, _ := tcpip.NewSubnet(tcpip.AddrFrom4(sub.Addr().As4()), tcpip.MaskFromBytes(net4Mask(bits)))
	g.st.SetRouteTable([]tcpip.Route{
		{Destination: subnet, NIC: 1},
		{Destination: header.IPv4EmptySubnet, Gateway: tcpip.AddrFrom4(router.As4()), NIC: 1},
	})
}

func net4Mask(bits int) []byte {
	m := netipMask(bits)
	return m[:]
}

func fullAddr(s string) tcpip.FullAddress {
	ap := netip.MustParseAddrPort(s)
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}
}

func (g *testGuest) dial(ctx context.Context, addr string) (*gonet.TCPConn, error) {
	return gonet.DialContextTCP(ctx, g.st, fullAddr(addr), ipv4.ProtocolNumber)
}

// dhcpLease is what the test's DHCP client learned.
type dhcpLease struct {
	yiaddr, server, router, dns netip.Addr
	mask                        [4]byte
	lease                       uint32
	hostname, domain            string
	typ                         byte
}

// dhcpExchange sends one DHCP message and waits for the server's answer.
func (g *testGuest) dhcpExchange(typ byte, xid uint32, extra []byte) (dhcpLease, bool) {
	got := make(chan []byte, 4)
	g.setHook(func(f []byte) bool {
		ip, ok := ipv4Of(f)
		if !ok || ip.proto != 17 || len(f) < ip.off+ip.ihl+8 {
			return false
		}
		u := f[ip.off+ip.ihl:]
		if binary.BigEndian.Uint16(u[2:4]) != 68 {
			return false
		}
		if len(u) >= 8+8 && binary.BigEndian.Uint32(u[8+4:8+8]) != xid {
			return true // a late answer to an earlier exchange
		}
		select {
		case got <- append([]byte(nil), f...):
		default:
		}
		return true
	})
	defer g.setHook(nil)
	m := make([]byte, dhcpMinLen)
	m[0], m[1], m[2] = 1, 1, 6
	binary.BigEndian.PutUint32(m[4:8], xid)
	m[10] = 0x80 // broadcast
	copy(m[28:], g.mac[:])
	binary.BigEndian.PutUint32(m[236:240], 0x63825363)
	m = append(m, 53, 1, typ)
	m = append(m, extra...)
	m = append(m, 255)
	bcast := [6]byte{255, 255, 255, 255, 255, 255}
	f := udpFrame(nil, bcast, g.mac, [4]byte{}, [4]byte{255, 255, 255, 255}, 68, 67, m)
	g.send(f)
	select {
	case r := <-got:
		return parseDHCPReply(g.t, r, xid)
	case <-time.After(3 * time.Second):
		return dhcpLease{}, false
	}
}

func parseDHCPReply(t testing.TB, f []byte, xid uint32) (dhcpLease, bool) {
	ip, _ := ipv4Of(f)
	u := f[ip.off+ip.ihl : ip.off+ip.total]
	// The UDP checksum must verify (the guest's kernel checks it).
	sum := csumAdd(0, ip.src[:])
	sum = csumAdd(sum, ip.dst[:])
	sum += 17 + uint32(len(u))
	if c := csumFold(csumAdd(sum, u)); c != 0 {
		t.Errorf("DHCP reply UDP checksum does not verify (%#x)", c)
	}
	if c := csumFold(csumAdd(0, f[ip.off:ip.off+ip.ihl])); c != 0 {
		t.Errorf("DHCP reply IP header checksum does not verify")
	}
	m := u[8:]
	var l dhcpLease
	if len(m) < dhcpMinLen || m[0] != 2 || binary.BigEndian.Uint32(m[4:8]) != xid {
		t.Errorf("bad DHCP reply header")
		return l, false
	}
	l.yiaddr = netip.AddrFrom4([4]byte(m[16:20]))
	opts := m[240:]
	if v := dhcpOption(opts, 53); len(v) == 1 {
		l.typ = v[0]
	}
	if v := dhcpOption(opts, 54); len(v) == 4 {
		l.server = netip.AddrFrom4([4]byte(v))
	}
	if v := dhcpOption(opts, 3); len(v) >= 4 {
		l.router = netip.AddrFrom4([4]byte(v[:4]))
	}
	if v := dhcpOption(opts, 6); len(v) >= 4 {
		l.dns = netip.AddrFrom4([4]byte(v[:4]))
	}
	if v := dhcpOption(opts, 1); len(v) == 4 {
		l.mask = [4]byte(v)
	}
	if v := dhcpOption(opts, 51); len(v) == 4 {
		l.lease = binary.BigEndian.Uint32(v)
	}
	l.hostname = string(dhcpOption(opts, 12))
	l.domain = string(dhcpOption(opts, 15))
	return l, true
}

// dhcp runs DISCOVER/OFFER/REQUEST/ACK and configures the guest with the lease.
func (g *testGuest) dhcp() dhcpLease {
	g.t.Helper()
	offer, ok := g.dhcpExchange(dhcpDiscover, 0x1234, nil)
	if !ok || offer.typ != dhcpOffer {
		g.t.Fatalf("no DHCPOFFER (got type %d)", offer.typ)
	}
	req := []byte{50, 4}
	a := offer.yiaddr.As4()
	req = append(req, a[:]...)
	s := offer.server.As4()
	req = append(req, 54, 4)
	req = append(req, s[:]...)
	ack, ok := g.dhcpExchange(dhcpRequest, 0x1235, req)
	if !ok || ack.typ != dhcpAck {
		g.t.Fatalf("no DHCPACK (got type %d)", ack.typ)
	}
	ones := 0
	for _, b := range ack.mask {
		for ; b != 0; b <<= 1 {
			ones++
		}
	}
	g.configure(ack.yiaddr, ones, ack.router)
	return ack
}

// openUserT opens a user backend from option pairs.
func openUserT(t testing.TB, o Options, kv ...string) *User {
	t.Helper()
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	be, err := OpenWith("user", func(k string) (string, bool) { v, ok := m[k]; return v, ok }, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return be.(*User)
}

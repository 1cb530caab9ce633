package netdev

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// User limits: every resource a guest can make the backend hold is bounded.
const (
	userMTU         = 1500
	maxTCPConns     = 512 // established NAT connections
	maxTCPInFlight  = 128 // handshakes being dialled on the host
	maxUDPFlows     = 256 // UDP NAT flows (DNS included)
	udpIdle         = 60 * time.Second
	dnsIdle         = 10 * time.Second
	tcpDialTimeout  = 10 * time.Second
	tcpRcvWnd       = 1 << 20 // forwarder's initial receive window
	tcpBufDefault   = 1 << 20
	tcpBufMax       = 4 << 20
	spliceBufSize   = 64 << 10
	maxFrameFromNIC = 65535 + header.EthernetMinimumSize
	maxGuestGSO     = 65535 - 60 // TCP segment bytes in one frame to a TSO guest (IP and TCP headers fit)
)

// gatewayMAC is slirp's: 52:55 followed by the gateway's IPv4 address.
func gatewayMAC(host netip.Addr) [6]byte {
	a := host.As4()
	return [6]byte{0x52, 0x55, a[0], a[1], a[2], a[3]}
}

type hostFwd struct {
	udp       bool
	hostAddr  string // host listen address ("" = any)
	hostPort  int
	guestAddr netip.Addr
	guestPort int
}

type userConfig struct {
	net        netip.Prefix
	host       netip.Addr
	dhcpStart  netip.Addr
	dns        netip.Addr
	hostname   string
	domainname string
	restrict   bool
	fwds       []hostFwd
	upstream   string // host resolver "ip:port"
}

// parseUser reads the user backend's keys with QEMU's defaults.
func parseUser(a *args, o Options) (*userConfig, error) {
	c := &userConfig{net: netip.MustParsePrefix("10.0.2.0/24")}
	if !a.bool("ipv4", true) {
		a.fail("Parameter 'ipv4': the user backend needs IPv4 (ipv4=off is not supported)")
	}
	a.bool("ipv6", true) // accepted; the user backend serves IPv4 only.
	for _, k := range []string{"dnssearch", "ipv6-net", "ipv6-host", "ipv6-dns"} {
		a.str(k) // accepted and ignored (IPv6 and DHCP search lists are not served)
	}
	if v, ok := a.str("net"); ok {
		p, err := parseNet(v)
		if err != nil {
			a.fail("Parameter 'net': %v", err)
		} else {
			c.net = p
		}
	}
	base := c.net.Masked().Addr().As4()
	at := func(last byte) netip.Addr {
		b := base
		b[3] |= last
		return netip.AddrFrom4(b)
	}
	c.host, c.dns, c.dhcpStart = at(2), at(3), at(15)
	inNet := func(key string, def netip.Addr) netip.Addr {
		v, ok := a.str(key)
		if !ok {
			return def
		}
		ip, err := netip.ParseAddr(v)
		if err != nil || !ip.Is4() {
			a.fail("Parameter '%s' expects an IPv4 address", key)
			return def
		}
		if !c.net.Contains(ip) {
			a.fail("Parameter '%s': %s is not in the virtual network %s", key, ip, c.net.Masked())
		}
		return ip
	}
	c.host = inNet("host", c.host)
	c.dns = inNet("dns", c.dns)
	c.dhcpStart = inNet("dhcpstart", c.dhcpStart)
	if c.host == c.dns {
		a.fail("Parameter 'dns': the DNS address must differ from the host address %s", c.host)
	}
	if v, ok := a.str("hostname"); ok {
		if len(v) > 255 {
			a.fail("Parameter 'hostname' is longer than 255 bytes")
		}
		c.hostname = v
	}
	if v, ok := a.str("domainname"); ok {
		if len(v) > 255 {
			a.fail("Parameter 'domainname' is longer than 255 bytes")
		}
		c.domainname = v
	}
	c.restrict = a.bool("restrict", false)
	var rules []string
	if v, ok := a.str("hostfwd"); ok {
		rules = append(rules, v)
	}
	// Several rules arrive flattened from a JSON list (hostfwd.0.str) or numbered.
	for i := 0; i < 64; i++ {
		for _, k := range []string{fmt.Sprintf("hostfwd.%d.str", i), fmt.Sprintf("hostfwd.%d", i)} {
			if v, ok := a.str(k); ok {
				rules = append(rules, v)
			}
		}
	}
	for _, r := range rules {
		f, err := parseHostFwd(r, c.dhcpStart)
		if err != nil {
			a.fail("Parameter 'hostfwd': invalid rule '%s': %v", r, err)
			continue
		}
		c.fwds = append(c.fwds, f)
	}
	if a.err != nil {
		return nil, a.err
	}
	c.upstream = o.DNSUpstream
	if c.upstream == "" {
		path := o.ResolvConf
		if path == "" {
			path = "/etc/resolv.conf"
		}
		c.upstream = hostResolver(path)
	}
	return c, nil
}

// parseNet takes QEMU's net=ADDR[/MASK] with MASK a prefix length or a dotted mask.
func parseNet(v string) (netip.Prefix, error) {
	addr, mask, hasMask := strings.Cut(v, "/")
	ip, err := netip.ParseAddr(addr)
	if err != nil || !ip.Is4() {
		return netip.Prefix{}, fmt.Errorf("'%s' is not an IPv4 address", addr)
	}
	bits := 24
	if hasMask {
		if m, err := netip.ParseAddr(mask); err == nil && m.Is4() {
			b := m.As4()
			ones := net.IPMask(b[:])
			n, total := ones.Size()
			if total == 0 {
				return netip.Prefix{}, fmt.Errorf("'%s' is not a contiguous netmask", mask)
			}
			bits = n
		} else if _, err := fmt.Sscanf(mask, "%d", &bits); err != nil {
			return netip.Prefix{}, fmt.Errorf("'%s' is not a netmask", mask)
		}
	}
	if bits < 8 || bits > 28 {
		return netip.Prefix{}, fmt.Errorf("prefix /%d out of range (8-28)", bits)
	}
	return netip.PrefixFrom(ip, bits).Masked(), nil
}

// parseHostFwd parses tcp|udp:[hostaddr]:hostport-[guestaddr]:guestport.
func parseHostFwd(r string, defGuest netip.Addr) (hostFwd, error) {
	var f hostFwd
	proto, rest, ok := strings.Cut(r, ":")
	if !ok {
		return f, errors.New("want tcp|udp:[hostaddr]:hostport-[guestaddr]:guestport")
	}
	switch proto {
	case "", "tcp":
	case "udp":
		f.udp = true
	default:
		return f, fmt.Errorf("protocol '%s' is not tcp or udp", proto)
	}
	host, guest, ok := strings.Cut(rest, "-")
	if !ok {
		return f, errors.New("missing '-' between host and guest parts")
	}
	ha, hp, ok := strings.Cut(host, ":")
	if !ok {
		return f, errors.New("want hostaddr:hostport")
	}
	if ha != "" {
		if _, err := netip.ParseAddr(ha); err != nil {
			return f, fmt.Errorf("bad host address '%s'", ha)
		}
	}
	f.hostAddr = ha
	if _, err := fmt.Sscanf(hp, "%d", &f.hostPort); err != nil || f.hostPort < 0 || f.hostPort > 65535 || fmt.Sprint(f.hostPort) != hp {
		return f, fmt.Errorf("bad host port '%s'", hp)
	}
	ga, gp, ok := strings.Cut(guest, ":")
	if !ok {
		return f, errors.New("want guestaddr:guestport")
	}
	f.guestAddr = defGuest
	if ga != "" {
		ip, err := netip.ParseAddr(ga)
		if err != nil || !ip.Is4() {
			return f, fmt.Errorf("bad guest address '%s'", ga)
		}
		f.guestAddr = ip
	}
	if _, err := fmt.Sscanf(gp, "%d", &f.guestPort); err != nil || f.guestPort < 1 || f.guestPort > 65535 || fmt.Sprint(f.guestPort) != gp {
		return f, fmt.Errorf("bad guest port '%s'", gp)
	}
	return f, nil
}

// hostResolver returns the first nameserver of a resolv.conf as ip:53, or
// 127.0.0.1:53 when there is none (as slirp falls back to the loopback).
func hostResolver(path string) string {
	fh, err := os.Open(path)
	if err == nil {
		defer fh.Close()
		sc := bufio.NewScanner(fh)
		for n := 0; sc.Scan() && n < 1000; n++ {
			f := strings.Fields(sc.Text())
			if len(f) >= 2 && f[0] == "nameserver" {
				if ip, err := netip.ParseAddr(f[1]); err == nil && ip.Is4() {
					return netip.AddrPortFrom(ip, 53).String()
				}
			}
		}
	}
	return "127.0.0.1:53"
}

// User is the user-mode network backend: a gVisor netstack playing the gateway,
// DNS server and NAT of QEMU's slirp.
type User struct {
	cfg  *userConfig
	rx   *rxQueue
	link *FrameLink
	st   *stack.Stack
	mac  [6]byte

	closed   atomic.Bool
	tcpConns atomic.Int32
	udpFlows atomic.Int32
	dhcp     dhcpServer
	ping     *pinger

	mu        sync.Mutex
	listeners []interface{ Close() error }
	wg        sync.WaitGroup
	stop      chan struct{}

	vnet atomic.Bool

	// dropped counts guest frames refused by the slirp layer (restrict, bad ICMP).
	dropped atomic.Uint64
}

func openUser(a *args, o Options) (Backend, error) {
	cfg, err := parseUser(a, o)
	if err != nil {
		return nil, err
	}
	return newUser(cfg)
}

const nicID = 1

func newUser(cfg *userConfig) (*User, error) {
	u := &User{cfg: cfg, mac: gatewayMAC(cfg.host), stop: make(chan struct{})}
	u.rx = newRxQueue(userMTU + header.EthernetMinimumSize)
	u.dhcp.init(cfg)
	u.link = NewFrameLink(userMTU, u.mac, true, u.toGuest)
	u.link.buf = u.rx.buf
	u.link.enableBatching()
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	u.st = s
	sack := tcpip.TCPSACKEnabled(true)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: tcpBufDefault, Max: tcpBufMax}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4096, Default: tcpBufDefault, Max: tcpBufMax}
	mod := tcpip.TCPModerateReceiveBufferOption(true)
	cc := tcpip.CongestionControlOption("cubic")
	// The NAT closes first when the host does; a guest reusing its port soon after
	// must not meet a 60 s TIME_WAIT (and closed connections must not pile up).
	tw := tcpip.TCPTimeWaitTimeoutOption(time.Second)
	for _, opt := range []tcpip.SettableTransportProtocolOption{&sack, &rcv, &snd, &mod, &cc, &tw} {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			s.Close()
			return nil, fmt.Errorf("netdev user: netstack option %T: %v", opt, err)
		}
	}
	if err := s.CreateNICWithOptions(nicID, u.link, stack.NICOptions{Name: "slirp"}); err != nil {
		s.Close()
		return nil, fmt.Errorf("netdev user: create NIC: %v", err)
	}
	for _, ip := range []netip.Addr{cfg.host, cfg.dns} {
		pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{
			Address: tcpip.AddrFrom4(ip.As4()), PrefixLen: cfg.net.Bits()}}
		if err := s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			s.Close()
			return nil, fmt.Errorf("netdev user: address %s: %v", ip, err)
		}
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nicID}})
	// Promiscuous: the stack takes packets for any address (the NAT); spoofing: it
	// answers from them.
	s.SetPromiscuousMode(nicID, true)
	s.SetSpoofing(nicID, true)
	tf := tcp.NewForwarder(s, tcpRcvWnd, maxTCPInFlight, u.tcpForward)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tf.HandlePacket)
	uf := udp.NewForwarder(s, u.udpForward)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, uf.HandlePacket)
	if !cfg.restrict {
		u.ping = newPinger(u)
	}
	for _, f := range cfg.fwds {
		if err := u.startHostFwd(f); err != nil {
			u.Close()
			return nil, err
		}
	}
	return u, nil
}

// toGuest is the stack's output: queue the frame for the NIC. A full queue is
// waited on briefly (back-pressure on the stack's sender), then the frame dropped.
func (u *User) toGuest(f []byte) { u.rx.put(f, 2*time.Millisecond) }

// Send implements Backend: the slirp layer takes DHCP and off-gateway ICMP echo,
// the netstack everything else.
func (u *User) Send(frame []byte) error {
	if u.closed.Load() {
		return ErrClosed
	}
	wire := frame
	if u.vnet.Load() {
		// The header's offload requests need no work here: checksums are not
		// verified and TSO frames are taken whole. The link strips it.
		if len(frame) < VnetHdrLen {
			return nil
		}
		frame = frame[VnetHdrLen:]
	}
	if len(frame) > maxFrameFromNIC || len(frame) < header.EthernetMinimumSize {
		u.dropped.Add(1)
		return nil
	}
	if ip, ok := ipv4Of(frame); ok {
		switch ip.proto {
		case 17:
			if ip.dstPort == 67 {
				u.dhcp.handle(u, frame, ip)
				return nil
			}
		case 1:
			if !u.handleICMP(frame, ip) {
				return nil
			}
		}
	}
	u.link.Inject(wire)
	return nil
}

// SetReceiver implements Backend.
func (u *User) SetReceiver(f func([]byte) bool) { u.rx.setReceiver(f) }

// RxReady implements Backend.
func (u *User) RxReady() { u.rx.kick() }

// EnableVnetHdr implements VnetHdrBackend.
func (u *User) EnableVnetHdr(guestTSO bool) error {
	if u.vnet.Swap(true) {
		return errors.New("netdev user: vnet header already enabled")
	}
	if guestTSO {
		u.rx.setMaxLen(VnetHdrLen + maxFrameFromNIC)
		u.link.enableHostGSO(maxGuestGSO)
	}
	u.link.vnet.Store(true)
	return nil
}

// frameBuf returns a buffer for one frame to the guest, with its (zero) vnet
// header when enabled.
func (u *User) frameBuf() []byte {
	b := u.rx.buf()
	if u.vnet.Load() {
		b = append(b, make([]byte, VnetHdrLen)...)
	}
	return b
}

// Offloads implements Offloader: checksums are not verified and TSO frames of up to
// 64 KiB are taken whole.
func (u *User) Offloads() Offloads {
	return Offloads{NoChecksum: true, MaxFrame: maxFrameFromNIC, VnetHdr: u.vnet.Load()}
}

// Close implements Backend.
func (u *User) Close() error {
	u.mu.Lock()
	if u.closed.Load() {
		u.mu.Unlock()
		return nil
	}
	u.closed.Store(true)
	close(u.stop)
	ls := u.listeners
	u.listeners = nil
	u.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	if u.ping != nil {
		u.ping.close()
	}
	u.st.Close()
	u.st.Wait()
	u.rx.close()
	u.wg.Wait()
	return nil
}

// ipHdr is what the slirp layer reads of an IPv4 frame.
type ipHdr struct {
	off     int // IP header offset in the frame
	ihl     int
	total   int // IP total length
	proto   byte
	src     [4]byte
	dst     [4]byte
	dstPort uint16 // UDP/TCP destination port when present
}

// ipv4Of parses the Ethernet and IPv4 headers of frame; ok is false for anything
// else or any inconsistent length (the netstack then drops it too).
func ipv4Of(f []byte) (h ipHdr, ok bool) {
	if len(f) < 14+20 || f[12] != 0x08 || f[13] != 0x00 {
		return h, false
	}
	ip := f[14:]
	if ip[0]>>4 != 4 {
		return h, false
	}
	h.off, h.ihl = 14, int(ip[0]&15)*4
	h.total = int(ip[2])<<8 | int(ip[3])
	if h.ihl < 20 || h.total < h.ihl || h.total > len(ip) {
		return h, false
	}
	h.proto = ip[9]
	copy(h.src[:], ip[12:16])
	copy(h.dst[:], ip[16:20])
	if (h.proto == 6 || h.proto == 17) && h.total >= h.ihl+4 && ip[6]&0x1f == 0 && ip[7] == 0 {
		h.dstPort = uint16(ip[h.ihl+2])<<8 | uint16(ip[h.ihl+3])
	}
	return h, true
}

func csumAdd(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func csumFold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// ipv4Frame appends an Ethernet+IPv4 frame around payload to buf (whose transport
// checksum, if any, the caller fills in with udpFrame or its own).
func ipv4Frame(buf []byte, dstMAC, srcMAC [6]byte, src, dst [4]byte, proto byte, payload []byte) []byte {
	at := len(buf)
	f := append(buf, dstMAC[:]...)
	f = append(f, srcMAC[:]...)
	f = append(f, 0x08, 0x00)
	tot := 20 + len(payload)
	f = append(f, 0x45, 0, byte(tot>>8), byte(tot), 0, 0, 0x40, 0, 64, proto, 0, 0)
	f = append(f, src[:]...)
	f = append(f, dst[:]...)
	c := csumFold(csumAdd(0, f[at+14:at+34]))
	f[at+24], f[at+25] = byte(c>>8), byte(c)
	return append(f, payload...)
}

// udpFrame builds a checksummed UDP datagram frame.
func udpFrame(buf []byte, dstMAC, srcMAC [6]byte, src, dst [4]byte, sport, dport uint16, data []byte) []byte {
	n := 8 + len(data)
	udp := make([]byte, 8, n)
	udp[0], udp[1], udp[2], udp[3] = byte(sport>>8), byte(sport), byte(dport>>8), byte(dport)
	udp[4], udp[5] = byte(n>>8), byte(n)
	udp = append(udp, data...)
	sum := csumAdd(0, src[:])
	sum = csumAdd(sum, dst[:])
	sum += 17 + uint32(n)
	c := csumFold(csumAdd(sum, udp))
	if c == 0 {
		c = 0xffff
	}
	udp[6], udp[7] = byte(c>>8), byte(c)
	return ipv4Frame(buf, dstMAC, srcMAC, src, dst, 17, udp)
}

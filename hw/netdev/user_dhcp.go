package netdev

import (
	"encoding/binary"
	"net/netip"
	"sync"
)

// The slirp layer's DHCP server (RFC 2131 subset, as slirp's bootp.c): up to 16
// clients, each MAC keeping its address from dhcpstart upwards; DISCOVER → OFFER,
// REQUEST → ACK (or NAK for an address that is not the client's), RELEASE frees.

const (
	dhcpClients   = 16
	dhcpLeaseSecs = 24 * 3600
	dhcpMinLen    = 240 // BOOTP fixed part with the magic cookie

	dhcpDiscover = 1
	dhcpOffer    = 2
	dhcpRequest  = 3
	dhcpDecline  = 4
	dhcpAck      = 5
	dhcpNak      = 6
	dhcpRelease  = 7
	dhcpInform   = 8
)

type dhcpServer struct {
	mu     sync.Mutex
	cfg    *userConfig
	leases [dhcpClients]struct {
		used bool
		mac  [6]byte
	}
}

func (d *dhcpServer) init(cfg *userConfig) { d.cfg = cfg }

// addrAt returns the i-th pool address, or false past the network.
func (d *dhcpServer) addrAt(i int) (netip.Addr, bool) {
	b := d.cfg.dhcpStart.As4()
	v := binary.BigEndian.Uint32(b[:]) + uint32(i)
	binary.BigEndian.PutUint32(b[:], v)
	a := netip.AddrFrom4(b)
	bcast := d.cfg.net.Masked().Addr().As4()
	hostBits := 32 - d.cfg.net.Bits()
	binary.BigEndian.PutUint32(bcast[:], binary.BigEndian.Uint32(bcast[:])|(1<<hostBits-1))
	if !d.cfg.net.Contains(a) || a == netip.AddrFrom4(bcast) {
		return netip.Addr{}, false
	}
	return a, true
}

// lookup returns the client's lease index, allocating one when alloc is set.
func (d *dhcpServer) lookup(mac [6]byte, alloc bool) int {
	for i := range d.leases {
		if d.leases[i].used && d.leases[i].mac == mac {
			return i
		}
	}
	if !alloc {
		return -1
	}
	for i := range d.leases {
		a, ok := d.addrAt(i)
		if !d.leases[i].used && ok && a != d.cfg.host && a != d.cfg.dns {
			d.leases[i].used, d.leases[i].mac = true, mac
			return i
		}
	}
	return -1
}

// dhcpOption returns option code's value from opts (nil if absent or malformed).
func dhcpOption(opts []byte, code byte) []byte {
	for i := 0; i < len(opts); {
		c := opts[i]
		if c == 255 {
			break
		}
		if c == 0 {
			i++
			continue
		}
		if i+1 >= len(opts) {
			break
		}
		n := int(opts[i+1])
		if i+2+n > len(opts) {
			break
		}
		if c == code {
			return opts[i+2 : i+2+n]
		}
		i += 2 + n
	}
	return nil
}

// handle answers one BOOTP request frame.
func (d *dhcpServer) handle(u *User, frame []byte, ip ipHdr) {
	udpOff := ip.off + ip.ihl
	end := ip.off + ip.total
	if end-udpOff < 8+dhcpMinLen {
		return
	}
	m := frame[udpOff+8 : end]
	if m[0] != 1 || m[1] != 1 || m[2] != 6 || binary.BigEndian.Uint32(m[236:240]) != 0x63825363 {
		return
	}
	var mac [6]byte
	copy(mac[:], m[28:34])
	opts := m[240:]
	t := dhcpOption(opts, 53)
	if len(t) != 1 {
		return // plain BOOTP is not served
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	reply := byte(0)
	idx := -1
	switch t[0] {
	case dhcpDiscover:
		idx = d.lookup(mac, true)
		reply = dhcpOffer
	case dhcpRequest:
		want := dhcpOption(opts, 50)
		if len(want) != 4 {
			want = m[12:16] // ciaddr (renewing)
		}
		if sid := dhcpOption(opts, 54); len(sid) == 4 && netip.AddrFrom4([4]byte(sid)) != d.cfg.host {
			return // the client chose another server
		}
		idx = d.lookup(mac, true)
		reply = dhcpAck
		if a, ok := d.addrAt(idx); idx < 0 || !ok || a != netip.AddrFrom4([4]byte(want)) {
			reply, idx = dhcpNak, -1
		}
	case dhcpInform:
		reply = dhcpAck
	case dhcpRelease, dhcpDecline:
		if i := d.lookup(mac, false); i >= 0 {
			d.leases[i].used = false
		}
		return
	default:
		return
	}
	var yi [4]byte
	if idx >= 0 {
		a, _ := d.addrAt(idx)
		yi = a.As4()
	} else if reply != dhcpNak {
		if t[0] != dhcpInform {
			return // pool exhausted: stay silent, as slirp
		}
	}
	out := make([]byte, dhcpMinLen, 400)
	out[0], out[1], out[2] = 2, 1, 6
	copy(out[4:8], m[4:8])     // xid
	copy(out[10:12], m[10:12]) // flags
	if t[0] == dhcpInform {
		copy(out[12:16], m[12:16])
	}
	copy(out[16:20], yi[:])
	host := d.cfg.host.As4()
	copy(out[20:24], host[:]) // siaddr
	copy(out[28:44], m[28:44])
	binary.BigEndian.PutUint32(out[236:240], 0x63825363)
	opt := func(code byte, v []byte) { out = append(out, code, byte(len(v))); out = append(out, v...) }
	opt(53, []byte{reply})
	opt(54, host[:])
	if reply != dhcpNak {
		if t[0] != dhcpInform {
			var lease [4]byte
			binary.BigEndian.PutUint32(lease[:], dhcpLeaseSecs)
			opt(51, lease[:])
		}
		mask := netipMask(d.cfg.net.Bits())
		opt(1, mask[:])
		opt(3, host[:])
		dns := d.cfg.dns.As4()
		opt(6, dns[:])
		if d.cfg.hostname != "" {
			opt(12, []byte(d.cfg.hostname))
		}
		if d.cfg.domainname != "" {
			opt(15, []byte(d.cfg.domainname))
		}
	}
	out = append(out, 255)
	dstIP, dstMAC := [4]byte{255, 255, 255, 255}, [6]byte{255, 255, 255, 255, 255, 255}
	if m[10]&0x80 == 0 && reply != dhcpNak {
		dstMAC = mac
		if t[0] == dhcpInform {
			copy(dstIP[:], m[12:16])
		} else {
			dstIP = yi
		}
	}
	f := udpFrame(u.frameBuf(), dstMAC, u.mac, host, dstIP, 67, 68, out)
	u.rx.put(f, 0)
}

func netipMask(bits int) [4]byte {
	var m [4]byte
	binary.BigEndian.PutUint32(m[:], ^uint32(0)<<(32-bits))
	return m
}

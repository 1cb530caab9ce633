package netdev

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

// fuzzSeeds are hostile guest frames: truncated and lying IP headers, bad lengths,
// oversized frames, DHCP with broken options, ICMP cut short, TCP with a bad offset.
func fuzzSeeds() [][]byte {
	gw := gatewayMAC(gwAddr)
	tcpSyn := []byte{0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0}
	seeds := [][]byte{
		nil,
		make([]byte, 13),
		ipv4Frame(nil, gw, guestMAC, guestIP.As4(), gwAddr.As4(), 6, tcpSyn),
		ipv4Frame(nil, gw, guestMAC, guestIP.As4(), gwAddr.As4(), 6, tcpSyn[:11]),
		echoFrame(gwAddr, 1, 1, nil),
		echoFrame(netip.MustParseAddr("10.0.2.99"), 1, 1, make([]byte, 3)),
	}
	// DHCP discover with a truncated option and with a huge option length.
	m := make([]byte, dhcpMinLen)
	m[0], m[1], m[2] = 1, 1, 6
	binary.BigEndian.PutUint32(m[236:240], 0x63825363)
	bc := [6]byte{255, 255, 255, 255, 255, 255}
	seeds = append(seeds,
		udpFrame(nil, bc, guestMAC, [4]byte{}, [4]byte{255, 255, 255, 255}, 68, 67, append(append([]byte(nil), m...), 53, 1, 1, 255)),
		udpFrame(nil, bc, guestMAC, [4]byte{}, [4]byte{255, 255, 255, 255}, 68, 67, append(append([]byte(nil), m...), 53, 200, 1)),
		udpFrame(nil, bc, guestMAC, [4]byte{}, [4]byte{255, 255, 255, 255}, 68, 67, append(append([]byte(nil), m...), 53, 1, 3, 50, 2, 1)),
		udpFrame(nil, gw, guestMAC, guestIP.As4(), dnsAddr.As4(), 999, 53, []byte{1, 2, 3}))
	// Lying lengths: IP total length beyond the frame, IHL 15 on a short packet,
	// IHL below 5, fragment offsets, an oversized frame.
	for _, mut := range []func([]byte){
		func(f []byte) { f[16], f[17] = 0xff, 0xff },
		func(f []byte) { f[14] = 0x4f },
		func(f []byte) { f[14] = 0x43 },
		func(f []byte) { f[20], f[21] = 0x20, 0x10 },
		func(f []byte) { f[16], f[17] = 0, 10 },
	} {
		f := ipv4Frame(nil, gw, guestMAC, guestIP.As4(), gwAddr.As4(), 6, tcpSyn)
		mut(f)
		seeds = append(seeds, f)
	}
	seeds = append(seeds, make([]byte, maxFrameFromNIC+1))
	big := ipv4Frame(nil, gw, guestMAC, guestIP.As4(), gwAddr.As4(), 17, make([]byte, 65000))
	seeds = append(seeds, big)
	arp := append(append(append([]byte(nil), bc[:]...), guestMAC[:]...), 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1)
	seeds = append(seeds, arp)
	return seeds
}

// FuzzUserSend feeds arbitrary frames to a user backend: nothing may panic, and
// the backend must still answer DHCP afterwards.
func FuzzUserSend(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	u := openUserT(f, Options{DNSUpstream: "127.0.0.1:9"})
	frames := make(chan []byte, 1024)
	u.SetReceiver(func(b []byte) bool {
		select {
		case frames <- append([]byte(nil), b...):
		default:
		}
		return true
	})
	f.Fuzz(func(t *testing.T, frame []byte) {
		if err := u.Send(frame); err != nil {
			t.Fatal(err)
		}
	})
}

func TestUserMalformedFrames(t *testing.T) {
	u := openUserT(t, Options{DNSUpstream: "127.0.0.1:9"})
	g := newTestGuest(t, u, 1500, 0)
	for _, s := range fuzzSeeds() {
		u.Send(s)
	}
	// Still serving.
	done := make(chan struct{})
	go func() { g.dhcp(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("backend stopped serving after malformed frames")
	}
}

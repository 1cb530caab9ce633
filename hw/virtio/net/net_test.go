package net

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

const ramBase = 0x4000_0000

// fakeBackend records sent frames and delivers frames to the device's receiver.
type fakeBackend struct {
	mu      sync.Mutex
	sent    [][]byte
	recv    func([]byte) bool
	ready   int
	offload []bool
}

func (b *fakeBackend) Send(f []byte) error {
	b.mu.Lock()
	b.sent = append(b.sent, append([]byte(nil), f...))
	b.mu.Unlock()
	return nil
}
func (b *fakeBackend) SetReceiver(f func([]byte) bool) { b.mu.Lock(); b.recv = f; b.mu.Unlock() }
func (b *fakeBackend) RxReady()                        { b.mu.Lock(); b.ready++; b.mu.Unlock() }
func (b *fakeBackend) deliver(f []byte) bool {
	b.mu.Lock()
	r := b.recv
	b.mu.Unlock()
	return r(f)
}
func (b *fakeBackend) readies() int { b.mu.Lock(); defer b.mu.Unlock(); return b.ready }

// waitSent waits for n frames in total.
func (b *fakeBackend) waitSent(t *testing.T, n int) [][]byte {
	t.Helper()
	for i := 0; i < 2000; i++ {
		b.mu.Lock()
		if len(b.sent) >= n {
			s := b.sent
			b.mu.Unlock()
			return s
		}
		b.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	t.Fatalf("backend got %d frames, want %d", len(b.sent), n)
	return nil
}

func (b *fakeBackend) count() int { b.mu.Lock(); defer b.mu.Unlock(); return len(b.sent) }

var (
	guestMAC = [6]byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	hostMAC  = [6]byte{0x52, 0x55, 10, 0, 2, 2}
	srcIP    = [4]byte{10, 0, 2, 15}
	dstIP    = [4]byte{10, 0, 2, 2}
	srcIP6   = [16]byte{0xfe, 0x80, 15: 1}
	dstIP6   = [16]byte{0xfe, 0x80, 15: 2}
)

// rig is a device brought up over a fake RAM with rx, tx and ctrl rings.
type rig struct {
	m           *virtiotest.Mem
	be          *fakeBackend
	d           *Device
	rx, tx, ctl *virtiotest.Ring
	tr          *virtio.Transport
	irq         *virtiotest.IRQ
}

func newRig(t *testing.T, c Config, want uint64) *rig {
	t.Helper()
	m := virtiotest.NewMem(ramBase, 8<<20)
	be := &fakeBackend{}
	c.Backend = be
	if c.MAC == ([6]byte{}) {
		c.MAC = guestMAC
	}
	d, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{m: m, be: be, d: d, irq: &virtiotest.IRQ{}}
	r.rx = virtiotest.NewRing(m, 64, ramBase, 2<<20)
	r.tx = virtiotest.NewRing(m, 64, ramBase+3<<20, 2<<20)
	r.ctl = virtiotest.NewRing(m, 16, ramBase+6<<20, 1<<20)
	rings := make([]*virtiotest.Ring, 2*d.c.QueuePairs+1)
	rings[0], rings[1], rings[len(rings)-1] = r.rx, r.tx, r.ctl
	r.tr = virtiotest.Bringup(d, m, r.irq, want, rings...)
	if !r.tr.Active() {
		t.Fatalf("not active: %v", r.tr.Err())
	}
	t.Cleanup(func() { r.tr.SetStatus(0); m.Close() })
	return r
}

const allFeatures = ^uint64(0)

func (r *rig) needsReset() bool { return r.tr.Status()&virtio.StatusNeedsReset != 0 }

// send puts header+frame on the tx ring split into up to parts descriptors.
func (r *rig) send(h hdr, frame []byte, parts int) {
	b := append(encodeHdr(h), frame...)
	var bufs []virtiotest.Buf
	for i := 0; i < parts && len(b) > 0; i++ {
		k := (len(b) + parts - 1 - i) / (parts - i)
		bufs = append(bufs, virtiotest.Buf{Data: b[:k]})
		b = b[k:]
	}
	r.tx.Add(bufs...)
	r.tr.Notify(1)
}

func encodeHdr(h hdr) []byte {
	b := make([]byte, HdrLen)
	b[0], b[1] = h.flags, h.gsoType
	le := binary.LittleEndian
	le.PutUint16(b[2:], h.hdrLen)
	le.PutUint16(b[4:], h.gsoSize)
	le.PutUint16(b[6:], h.csumStart)
	le.PutUint16(b[8:], h.csumOffset)
	return b
}

func eth(dst, src [6]byte, typ uint16) []byte {
	b := make([]byte, 14)
	copy(b, dst[:])
	copy(b[6:], src[:])
	binary.BigEndian.PutUint16(b[12:], typ)
	return b
}

// tcp4 builds an IPv4 TCP frame with a partial checksum (pseudo-header only), as a
// guest with checksum offload writes it.
func tcp4(payload []byte, seq uint32, flags byte) []byte {
	f := eth(hostMAC, guestMAC, 0x0800)
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(ip[2:], uint16(20+20+len(payload)))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	copy(ip[12:], srcIP[:])
	copy(ip[16:], dstIP[:])
	binary.BigEndian.PutUint16(ip[10:], ^checksum.Checksum(ip, 0))
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], 777)
	tcp[12], tcp[13] = 5<<4, flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	binary.BigEndian.PutUint16(tcp[16:], header.PseudoHeaderChecksum(header.TCPProtocolNumber,
		tcpip.AddrFrom4(srcIP), tcpip.AddrFrom4(dstIP), uint16(20+len(payload))))
	f = append(append(append(f, ip...), tcp...), payload...)
	return f
}

func tcp6(payload []byte, seq uint32, flags byte) []byte {
	f := eth(hostMAC, guestMAC, 0x86dd)
	ip := make([]byte, 40)
	ip[0], ip[6], ip[7] = 0x60, 6, 64
	binary.BigEndian.PutUint16(ip[4:], uint16(20+len(payload)))
	copy(ip[8:], srcIP6[:])
	copy(ip[24:], dstIP6[:])
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12], tcp[13] = 5<<4, flags
	binary.BigEndian.PutUint16(tcp[16:], header.PseudoHeaderChecksum(header.TCPProtocolNumber,
		tcpip.AddrFrom16(srcIP6), tcpip.AddrFrom16(dstIP6), uint16(20+len(payload))))
	return append(append(append(f, ip...), tcp...), payload...)
}

func udp4(payload []byte) []byte {
	f := eth(hostMAC, guestMAC, 0x0800)
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	copy(ip[12:], srcIP[:])
	copy(ip[16:], dstIP[:])
	binary.BigEndian.PutUint16(ip[10:], ^checksum.Checksum(ip, 0))
	u := make([]byte, 8)
	binary.BigEndian.PutUint16(u[0:], 5353)
	binary.BigEndian.PutUint16(u[2:], 53)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	binary.BigEndian.PutUint16(u[6:], header.PseudoHeaderChecksum(header.UDPProtocolNumber,
		tcpip.AddrFrom4(srcIP), tcpip.AddrFrom4(dstIP), uint16(8+len(payload))))
	return append(append(append(f, ip...), u...), payload...)
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// checkTCP4 verifies a segment's IPv4 and TCP checksums with gVisor's code and returns
// its TCP header and payload.
func checkTCP4(t *testing.T, f []byte) (header.TCP, []byte) {
	t.Helper()
	ip := header.IPv4(f[14:])
	if !ip.IsValid(len(f)-14) || !ip.IsChecksumValid() || int(ip.TotalLength()) != len(f)-14 {
		t.Fatalf("bad IPv4 header % x", f[14:34])
	}
	seg := f[34:]
	ph := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(seg)))
	if checksum.Checksum(seg, ph) != 0xffff {
		t.Fatalf("bad TCP checksum %#x", binary.BigEndian.Uint16(seg[16:]))
	}
	return header.TCP(seg), seg[20:]
}

func TestConfigAndFeatures(t *testing.T) {
	be := &fakeBackend{}
	d, err := New(Config{Backend: be, MAC: guestMAC, MTU: 9000, QueuePairs: 4})
	if err != nil {
		t.Fatal(err)
	}
	cfg := make([]byte, 16)
	d.ReadConfig(0, cfg)
	if !bytes.Equal(cfg[:6], guestMAC[:]) || binary.LittleEndian.Uint16(cfg[6:]) != StatusLinkUp ||
		binary.LittleEndian.Uint16(cfg[8:]) != 4 || binary.LittleEndian.Uint16(cfg[10:]) != 9000 || cfg[12] != 0 {
		t.Fatalf("config % x", cfg)
	}
	f := d.Features()
	for _, b := range []uint{FCsum, FGuestCsum, FMAC, FMTU, FMQ, FStatus, FMrgRxbuf, FCtrlVQ, FCtrlRx, FCtrlMACAddr, FHostTSO4, FHostTSO6, FGuestAnnounce} {
		if f&(1<<b) == 0 {
			t.Errorf("feature %d not offered", b)
		}
	}
	// Without a vnet-header backend the guest must not be sent GSO frames.
	if f&(1<<FGuestTSO4|1<<FGuestTSO6) != 0 {
		t.Error("GUEST_TSO offered for a backend without vnet headers")
	}
	if len(d.QueueMax()) != 9 {
		t.Errorf("queues %d", len(d.QueueMax()))
	}
	d2, _ := New(Config{Backend: be, MAC: guestMAC, Offloads: Offloads{VnetHdr: true, NoChecksum: true, MaxFrame: 65561}})
	if d2.Features()&(1<<FGuestTSO4|1<<FGuestTSO6) == 0 || d2.Features()&(1<<FMTU|1<<FMQ) != 0 {
		t.Errorf("vnet features %#x", d2.Features())
	}
	if err := d.CheckFeatures(1<<FHostTSO4 | 1<<FCtrlVQ); err == nil {
		t.Error("HOST_TSO4 without CSUM accepted")
	}
	if err := d.CheckFeatures(1 << FCtrlRx); err == nil {
		t.Error("CTRL_RX without CTRL_VQ accepted")
	}
	for _, bad := range []Config{{}, {Backend: be, QueuePairs: 65}, {Backend: be, QueueSize: 3}, {Backend: be, MTU: 20}, {Backend: be, MAC: [6]byte{1}}} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
	// Link down is reported in the status and with a config interrupt.
	r := newRig(t, Config{}, allFeatures)
	r.d.SetLink(false)
	r.d.ReadConfig(6, cfg[:2])
	if _, c := r.irq.Counts(); cfg[0]&StatusLinkUp != 0 || c != 1 {
		t.Fatalf("link down: status %#x, config irqs %d", cfg[0], c)
	}
	if r.be.deliver(eth(guestMAC, hostMAC, 0x0800)) != true || r.d.RxDropped.Load() != 1 {
		t.Fatal("frame with the link down not dropped")
	}
	r.d.SetLink(true)
}

func TestTxPlain(t *testing.T) {
	r := newRig(t, Config{}, allFeatures)
	f := udp4(pattern(100))
	binary.BigEndian.PutUint16(f[40:], 0x1111) // a complete (here arbitrary) checksum passes untouched
	for parts := 1; parts <= 4; parts++ {
		r.send(hdr{}, f, parts)
	}
	sent := r.be.waitSent(t, 4)
	for i, s := range sent {
		if !bytes.Equal(s, f) {
			t.Fatalf("frame %d changed", i)
		}
	}
	for i := 0; i < 4; i++ {
		if _, ln, ok := r.tx.WaitUsed(time.Second); !ok || ln != 0 {
			t.Fatalf("used %d %v", ln, ok)
		}
	}
	if used, _ := r.irq.Counts(); used == 0 {
		t.Fatal("no tx interrupt")
	}
}

func TestTxChecksum(t *testing.T) {
	payload := pattern(333) // odd length
	for _, nocsum := range []bool{false, true} {
		r := newRig(t, Config{Offloads: Offloads{NoChecksum: nocsum}}, allFeatures)
		f := udp4(payload)
		r.send(hdr{flags: HdrFNeedsCsum, csumStart: 34, csumOffset: 6}, f, 2)
		tf := tcp4(payload, 1, 0x18)
		r.send(hdr{flags: HdrFNeedsCsum, csumStart: 34, csumOffset: 16}, tf, 1)
		sent := r.be.waitSent(t, 2)
		if nocsum {
			if !bytes.Equal(sent[0], f) || !bytes.Equal(sent[1], tf) {
				t.Fatal("NoChecksum backend: partial checksum changed")
			}
			continue
		}
		u := sent[0][34:]
		ph := header.PseudoHeaderChecksum(header.UDPProtocolNumber, tcpip.AddrFrom4(srcIP), tcpip.AddrFrom4(dstIP), uint16(len(u)))
		if checksum.Checksum(u, ph) != 0xffff || !bytes.Equal(u[8:], payload) {
			t.Fatalf("UDP checksum %#x not finished", binary.BigEndian.Uint16(u[6:]))
		}
		checkTCP4(t, sent[1])
	}
	// Without CSUM negotiated a NEEDS_CSUM frame is dropped.
	r := newRig(t, Config{}, allFeatures&^(1<<FCsum|1<<FHostTSO4|1<<FHostTSO6|1<<FHostECN))
	r.send(hdr{flags: HdrFNeedsCsum, csumStart: 34, csumOffset: 6}, udp4(payload), 1)
	r.send(hdr{}, udp4(payload), 1)
	r.be.waitSent(t, 1)
	if r.d.TxDropped.Load() != 1 {
		t.Fatalf("dropped %d", r.d.TxDropped.Load())
	}
}

func TestTxTSO(t *testing.T) {
	payload := pattern(10000)
	const mss = 1448
	t.Run("v4 segmented", func(t *testing.T) {
		r := newRig(t, Config{}, allFeatures)
		f := tcp4(payload, 1000, 0x19|0x80) // FIN|PSH|ACK|CWR
		r.send(hdr{flags: HdrFNeedsCsum, gsoType: GSOTCPv4 | GSOECN, hdrLen: 54, gsoSize: mss, csumStart: 34, csumOffset: 16}, f, 3)
		n := (len(payload) + mss - 1) / mss
		sent := r.be.waitSent(t, n)
		var got []byte
		ids := map[uint16]bool{}
		for i, s := range sent {
			if len(s) > 1514 {
				t.Fatalf("segment %d is %d bytes", i, len(s))
			}
			tcp, pl := checkTCP4(t, s)
			if tcp.SequenceNumber() != 1000+uint32(len(got)) {
				t.Fatalf("segment %d seq %d", i, tcp.SequenceNumber())
			}
			fl := tcp.Flags()
			last := i == n-1
			if fl.Contains(header.TCPFlagFin) != last || fl.Contains(header.TCPFlagPsh) != last || fl.Contains(header.TCPFlagCwr) != (i == 0) || !fl.Contains(header.TCPFlagAck) {
				t.Fatalf("segment %d flags %v", i, fl)
			}
			ids[header.IPv4(s[14:]).ID()] = true
			got = append(got, pl...)
		}
		if !bytes.Equal(got, payload) || len(ids) != n {
			t.Fatalf("payload %d bytes (want %d), %d distinct IP ids", len(got), len(payload), len(ids))
		}
	})
	t.Run("v6 segmented", func(t *testing.T) {
		r := newRig(t, Config{}, allFeatures)
		f := tcp6(payload, 5, 0x10)
		r.send(hdr{flags: HdrFNeedsCsum, gsoType: GSOTCPv6, gsoSize: mss, csumStart: 54, csumOffset: 16}, f, 2)
		n := (len(payload) + mss - 1) / mss
		sent := r.be.waitSent(t, n)
		var got []byte
		for i, s := range sent {
			ip := header.IPv6(s[14:])
			if int(ip.PayloadLength()) != len(s)-54 {
				t.Fatalf("segment %d payload length %d", i, ip.PayloadLength())
			}
			seg := s[54:]
			ph := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(seg)))
			if checksum.Checksum(seg, ph) != 0xffff {
				t.Fatalf("segment %d: bad checksum", i)
			}
			got = append(got, seg[20:]...)
		}
		if !bytes.Equal(got, payload) {
			t.Fatal("v6 payload differs")
		}
	})
	t.Run("whole to a host stack", func(t *testing.T) {
		r := newRig(t, Config{Offloads: Offloads{NoChecksum: true, MaxFrame: 65549}}, allFeatures)
		f := tcp4(payload, 1, 0x10)
		r.send(hdr{flags: HdrFNeedsCsum, gsoType: GSOTCPv4, gsoSize: mss, csumStart: 34, csumOffset: 16}, f, 1)
		sent := r.be.waitSent(t, 1)
		time.Sleep(20 * time.Millisecond)
		if r.be.count() != 1 || !bytes.Equal(sent[0], f) {
			t.Fatalf("%d frames; first %d bytes", r.be.count(), len(sent[0]))
		}
	})
	t.Run("vnet header passed through", func(t *testing.T) {
		r := newRig(t, Config{Offloads: Offloads{NoChecksum: true, MaxFrame: 65561, VnetHdr: true}}, allFeatures)
		f := tcp4(payload, 1, 0x10)
		h := hdr{flags: HdrFNeedsCsum, gsoType: GSOTCPv4, hdrLen: 54, gsoSize: mss, csumStart: 34, csumOffset: 16}
		r.send(h, f, 1)
		sent := r.be.waitSent(t, 1)
		if !bytes.Equal(sent[0], append(encodeHdr(h), f...)) {
			t.Fatal("vnet header frame changed")
		}
	})
}

// TestTxHostile: frames the device cannot make sense of are dropped and the queue
// keeps working; chains framed wrongly break the queue (NEEDS_RESET).
func TestTxHostile(t *testing.T) {
	tf := tcp4(pattern(3000), 1, 0x10)
	good := udp4(pattern(10))
	drops := []struct {
		name  string
		h     hdr
		frame []byte
	}{
		{"gso_size 0", hdr{flags: HdrFNeedsCsum, gsoType: GSOTCPv4, csumStart: 34, csumOffset: 16}, tf},
		{"csum_start beyond the frame", hdr{flags: HdrFNeedsCsum, csumStart: 4000, csumOffset: 16}, tf},
		{"csum_offset beyond the frame", hdr{flags: HdrFNeedsCsum, csumStart: 34, csumOffset: 3000}, tf},
		{"GSO on UDP", hdr{flags: HdrFNeedsCsum, gsoType: GSOTCPv4, gsoSize: 100, csumStart: 34, csumOffset: 6}, udp4(pattern(3000))},
		{"TCPV6 on IPv4", hdr{gsoType: GSOTCPv6, gsoSize: 100}, tf},
		{"UFO", hdr{gsoType: GSOUDP, gsoSize: 100}, udp4(pattern(3000))},
		{"unknown GSO type", hdr{gsoType: 9, gsoSize: 100}, tf},
		{"ECN alone", hdr{gsoType: GSOECN}, good},
		{"truncated TCP header", hdr{gsoType: GSOTCPv4, gsoSize: 100}, tf[:40]},
		{"IP header length past the frame", hdr{gsoType: GSOTCPv4, gsoSize: 100}, func() []byte { b := append([]byte{}, tf[:60]...); b[14] = 0x4f; return b }()},
		{"TCP data offset past the frame", hdr{gsoType: GSOTCPv4, gsoSize: 100}, func() []byte { b := append([]byte{}, tf[:60]...); b[46] = 0xf0; return b }()},
		{"runt", hdr{}, good[:10]},
		{"over the backend's frame size", hdr{}, append(eth(hostMAC, guestMAC, 0x0800), make([]byte, 3000)...)},
	}
	r := newRig(t, Config{}, allFeatures)
	for _, c := range drops {
		r.send(c.h, c.frame, 2)
		r.send(hdr{}, good, 1)
	}
	sent := r.be.waitSent(t, len(drops))
	time.Sleep(20 * time.Millisecond)
	if r.be.count() != len(drops) || r.d.TxDropped.Load() != uint64(len(drops)) || r.needsReset() {
		t.Fatalf("sent %d dropped %d (want %d each), needs reset %v", r.be.count(), r.d.TxDropped.Load(), len(drops), r.needsReset())
	}
	for _, s := range sent {
		if !bytes.Equal(s, good) {
			t.Fatal("unexpected frame reached the backend")
		}
	}

	// A chain with a writable buffer, or shorter than the header, breaks the queue.
	for _, bufs := range [][]virtiotest.Buf{
		{{Data: append(encodeHdr(hdr{}), good...)}, {Write: 16}},
		{{Data: make([]byte, 11)}},
	} {
		r := newRig(t, Config{}, allFeatures)
		r.tx.Add(bufs...)
		r.tr.Notify(1)
		for i := 0; i < 1000 && !r.needsReset(); i++ {
			time.Sleep(time.Millisecond)
		}
		if !r.needsReset() || r.be.count() != 0 {
			t.Fatalf("bad chain: needs reset %v, sent %d", r.needsReset(), r.be.count())
		}
	}

	// A chain longer than any frame is dropped without being copied.
	r = newRig(t, Config{}, allFeatures)
	big := make([]byte, 40<<10)
	r.tx.Add(virtiotest.Buf{Data: big}, virtiotest.Buf{Data: big})
	r.send(hdr{}, good, 1)
	r.be.waitSent(t, 1)
	if r.d.TxDropped.Load() != 1 || r.needsReset() {
		t.Fatalf("oversized chain: dropped %d", r.d.TxDropped.Load())
	}
}

// rxFrame reads the used element's buffers back.
func readUsed(m *virtiotest.Mem, gpas []uint64, sizes []uint32, ln uint32) []byte {
	var out []byte
	for i, g := range gpas {
		k := min(ln, sizes[i])
		out = append(out, m.At(g, uint64(k))...)
		ln -= k
	}
	return out
}

func TestRxSingle(t *testing.T) {
	r := newRig(t, Config{}, allFeatures&^(1<<FMrgRxbuf))
	f := append(eth(guestMAC, hostMAC, 0x0800), pattern(1000)...)
	if r.be.deliver(f) {
		t.Fatal("frame taken with no rx buffers")
	}
	// Two descriptors: the header and the data, as Linux's small buffers.
	_, g := r.rx.Add(virtiotest.Buf{Write: HdrLen}, virtiotest.Buf{Write: 1518})
	r.tr.Notify(0)
	for i := 0; i < 1000 && r.be.readies() < 2; i++ { // one at activation, one for the kick
		time.Sleep(time.Millisecond)
	}
	if r.be.readies() < 2 {
		t.Fatal("RxReady not called after the driver posted buffers")
	}
	if !r.be.deliver(f) {
		t.Fatal("frame refused")
	}
	_, ln, ok := r.rx.PopUsed()
	if !ok || ln != uint32(HdrLen+len(f)) {
		t.Fatalf("used %d %v", ln, ok)
	}
	got := readUsed(r.m, g, []uint32{HdrLen, 1518}, ln)
	if binary.LittleEndian.Uint16(got[10:]) != 1 || !bytes.Equal(got[:10], make([]byte, 10)) || !bytes.Equal(got[HdrLen:], f) {
		t.Fatalf("rx header % x", got[:HdrLen])
	}
	if !r.m.WasWritten(g[1], uint64(len(f))) {
		t.Fatal("rx data not reported written")
	}
	// A frame larger than the posted buffer is dropped; the buffer serves the next one.
	r.rx.Add(virtiotest.Buf{Write: 200})
	if !r.be.deliver(append(eth(guestMAC, hostMAC, 0x0800), pattern(500)...)) || r.d.RxDropped.Load() != 1 {
		t.Fatal("oversized frame not dropped")
	}
	small := append(eth(guestMAC, hostMAC, 0x0800), 1, 2, 3)
	if !r.be.deliver(small) {
		t.Fatal("small frame refused")
	}
	if _, ln, ok := r.rx.PopUsed(); !ok || ln != uint32(HdrLen+len(small)) {
		t.Fatalf("small frame used %d %v", ln, ok)
	}
}

func TestRxMergeable(t *testing.T) {
	r := newRig(t, Config{}, allFeatures)
	var gs []uint64
	for i := 0; i < 4; i++ {
		_, g := r.rx.Add(virtiotest.Buf{Write: 1536})
		gs = append(gs, g[0])
	}
	f := append(eth(guestMAC, hostMAC, 0x0800), pattern(4000)...)
	if !r.be.deliver(f) {
		t.Fatal("frame refused")
	}
	var got []byte
	var lens []uint32
	for i := 0; i < 3; i++ {
		id, ln, ok := r.rx.PopUsed()
		if !ok {
			t.Fatalf("used element %d missing", i)
		}
		lens = append(lens, ln)
		got = append(got, r.m.At(gs[id], uint64(ln))...)
	}
	if _, _, ok := r.rx.PopUsed(); ok {
		t.Fatal("a fourth buffer was used")
	}
	if binary.LittleEndian.Uint16(got[10:]) != 3 || !bytes.Equal(got[HdrLen:], f) || lens[0] != 1536 || lens[2] != uint32(HdrLen+len(f)-2*1536) {
		t.Fatalf("num_buffers %d, lens %v", binary.LittleEndian.Uint16(got[10:]), lens)
	}
	// The remaining buffer is too small for another big frame: refused, and the
	// buffer is kept (not used) until more arrive.
	if r.be.deliver(f) {
		t.Fatal("frame taken with too few buffers")
	}
	if _, _, ok := r.rx.PopUsed(); ok {
		t.Fatal("partial frame published")
	}
	for i := 0; i < 2; i++ {
		r.rx.Add(virtiotest.Buf{Write: 1536})
	}
	if !r.be.deliver(f) {
		t.Fatal("frame refused after more buffers")
	}
	for i := 0; i < 3; i++ {
		if _, _, ok := r.rx.PopUsed(); !ok {
			t.Fatal("second frame's buffers not used")
		}
	}
	// A first mergeable buffer shorter than the header breaks the queue.
	r.rx.Add(virtiotest.Buf{Write: 4})
	r.be.deliver(f)
	if !r.needsReset() {
		t.Fatal("4-byte mergeable buffer accepted")
	}
}

// ctrl sends one control command and returns the ack.
func (r *rig) ctrl(t *testing.T, class, cmd byte, data []byte) byte {
	t.Helper()
	_, g := r.ctl.Add(virtiotest.Buf{Data: append([]byte{class, cmd}, data...)}, virtiotest.Buf{Write: 1})
	r.tr.Notify(uint32(2 * r.d.c.QueuePairs))
	if _, ln, ok := r.ctl.WaitUsed(2 * time.Second); !ok || ln != 1 {
		t.Fatalf("ctrl %d/%d: used %d %v", class, cmd, ln, ok)
	}
	return r.m.At(g[1], 1)[0]
}

func macTableBytes(macs ...[6]byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(macs)))
	for _, m := range macs {
		b = append(b, m[:]...)
	}
	return b
}

func TestCtrl(t *testing.T) {
	r := newRig(t, Config{}, allFeatures)
	other := [6]byte{0x52, 0x54, 0, 0, 0, 9}
	mcast := [6]byte{0x01, 0x00, 0x5e, 0, 0, 1}
	// At reset the device is promiscuous (QEMU): a frame for another MAC arrives.
	accepted := func(dst [6]byte) bool {
		r.rx.Add(virtiotest.Buf{Write: 2048})
		before := r.d.RxFrames.Load()
		r.be.deliver(append(eth(dst, hostMAC, 0x0800), 1, 2, 3))
		ok := r.d.RxFrames.Load() > before
		for {
			if _, _, ok := r.rx.PopUsed(); !ok {
				break
			}
		}
		return ok
	}
	if !accepted(other) {
		t.Fatal("not promiscuous at reset")
	}
	if a := r.ctrl(t, CtrlRx, CtrlRxPromisc, []byte{0}); a != CtrlOK {
		t.Fatalf("promisc off: ack %d", a)
	}
	if accepted(other) || !accepted(guestMAC) || !accepted([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) || accepted(mcast) {
		t.Fatal("filter after promisc off")
	}
	if r.ctrl(t, CtrlRx, CtrlRxAllmulti, []byte{1}) != CtrlOK || !accepted(mcast) {
		t.Fatal("allmulti")
	}
	r.ctrl(t, CtrlRx, CtrlRxAllmulti, []byte{0})
	mcast2 := [6]byte{0x33, 0x33, 0, 0, 0, 1}
	if r.ctrl(t, CtrlMAC, CtrlMACTableSet, append(macTableBytes(other), macTableBytes(mcast2)...)) != CtrlOK {
		t.Fatal("MAC table set")
	}
	if !accepted(other) || !accepted(mcast2) || accepted(mcast) {
		t.Fatal("MAC table filter")
	}
	// An overflowing table accepts that class of traffic.
	many := make([][6]byte, MACTableEntries+1)
	for i := range many {
		many[i] = [6]byte{0x52, 0, 0, 0, 1, byte(i)}
	}
	if r.ctrl(t, CtrlMAC, CtrlMACTableSet, append(macTableBytes(many...), macTableBytes()...)) != CtrlOK || !accepted([6]byte{0x52, 1, 2, 3, 4, 5}) || accepted(mcast2) {
		t.Fatal("MAC table overflow")
	}
	newMAC := [6]byte{0x52, 0x54, 0, 0xab, 0xcd, 0xef}
	if r.ctrl(t, CtrlMAC, CtrlMACAddrSet, newMAC[:]) != CtrlOK || r.d.MAC() != newMAC {
		t.Fatal("MAC addr set")
	}
	// Malformed commands are refused with VIRTIO_NET_ERR.
	for _, c := range []struct {
		class, cmd byte
		data       []byte
	}{
		{CtrlRx, CtrlRxPromisc, nil}, {CtrlRx, 9, []byte{1}}, {CtrlMAC, CtrlMACAddrSet, []byte{1, 2}},
		{CtrlMAC, CtrlMACTableSet, binary.LittleEndian.AppendUint32(nil, 0xffffffff)},
		{CtrlMAC, CtrlMACTableSet, append(macTableBytes(other), 0, 0)}, {CtrlVLAN, 0, []byte{1, 0}},
		{CtrlMQ, CtrlMQVQPairsSet, []byte{1, 0}}, // MQ not offered with one pair
		{CtrlAnnounce, 7, nil}, {CtrlGuestOffloads, 0, make([]byte, 8)}, {99, 0, nil},
	} {
		if a := r.ctrl(t, c.class, c.cmd, c.data); a != CtrlErr {
			t.Errorf("ctrl %d/%d % x: ack %d", c.class, c.cmd, c.data, a)
		}
	}
	// Announce: status bit and config interrupt, cleared by the ack.
	if !r.d.Announce() {
		t.Fatal("announce refused")
	}
	st := make([]byte, 2)
	r.d.ReadConfig(6, st)
	if st[0] != StatusLinkUp|StatusAnnounce {
		t.Fatalf("status %#x", st[0])
	}
	if r.ctrl(t, CtrlAnnounce, CtrlAnnounceAck, nil) != CtrlOK {
		t.Fatal("announce ack")
	}
	r.d.ReadConfig(6, st)
	if st[0] != StatusLinkUp {
		t.Fatalf("status after ack %#x", st[0])
	}
	// A command without its ack byte breaks the queue.
	r.ctl.Add(virtiotest.Buf{Data: []byte{CtrlRx, CtrlRxPromisc, 1}})
	r.tr.Notify(2)
	for i := 0; i < 1000 && !r.needsReset(); i++ {
		time.Sleep(time.Millisecond)
	}
	if !r.needsReset() {
		t.Fatal("ctrl command without ack byte accepted")
	}
	// Reset restores the configured MAC and promiscuous mode.
	r.tr.SetStatus(0)
	if r.d.MAC() != guestMAC {
		t.Fatal("MAC not restored by reset")
	}
}

func TestMultiqueue(t *testing.T) {
	m := virtiotest.NewMem(ramBase, 16<<20)
	defer m.Close()
	be := &fakeBackend{}
	d, err := New(Config{Backend: be, MAC: guestMAC, QueuePairs: 2})
	if err != nil {
		t.Fatal(err)
	}
	rx0 := virtiotest.NewRing(m, 16, ramBase, 1<<20)
	tx0 := virtiotest.NewRing(m, 16, ramBase+2<<20, 1<<20)
	rx1 := virtiotest.NewRing(m, 16, ramBase+4<<20, 1<<20)
	tx1 := virtiotest.NewRing(m, 16, ramBase+6<<20, 1<<20)
	ctl := virtiotest.NewRing(m, 16, ramBase+8<<20, 1<<20)
	tr := virtiotest.Bringup(d, m, &virtiotest.IRQ{}, allFeatures, rx0, tx0, rx1, tx1, ctl)
	defer tr.SetStatus(0)
	r := &rig{m: m, be: be, d: d, ctl: ctl, tr: tr}
	if r.ctrl(t, CtrlMQ, CtrlMQVQPairsSet, []byte{2, 0}) != CtrlOK || r.ctrl(t, CtrlMQ, CtrlMQVQPairsSet, []byte{3, 0}) != CtrlErr {
		t.Fatal("VQ_PAIRS_SET")
	}
	f := udp4(pattern(20))
	tx1.Add(virtiotest.Buf{Data: append(encodeHdr(hdr{}), f...)})
	tr.Notify(3)
	if s := be.waitSent(t, 1); !bytes.Equal(s[0], f) {
		t.Fatal("tx1 frame")
	}
}

func (d *Device) broken(tr interface{ Status() uint8 }) bool {
	return tr.Status()&virtio.StatusNeedsReset != 0
}

// vnetBackend is a backend with a switchable vnet header (as hw/netdev's user and tap).
type vnetBackend struct {
	fakeBackend
	on, tso bool
	enables int
}

func (b *vnetBackend) EnableVnetHdr(tso bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.enables++
	if b.on {
		return errors.New("already enabled")
	}
	b.on, b.tso = true, tso
	return nil
}

func (b *vnetBackend) offloads() Offloads {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Offloads{NoChecksum: true, MaxFrame: 65549, VnetHdr: b.on}
}

func TestVnetHdrBackend(t *testing.T) {
	for _, tso := range []bool{true, false} {
		m := virtiotest.NewMem(ramBase, 8<<20)
		be := &vnetBackend{}
		d, err := New(Config{Backend: be, MAC: guestMAC, OffloadsNow: be.offloads})
		if err != nil {
			t.Fatal(err)
		}
		if d.Features()&(1<<FGuestTSO4|1<<FGuestTSO6) == 0 {
			t.Fatal("GUEST_TSO not offered for a vnet-header backend")
		}
		rx := virtiotest.NewRing(m, 64, ramBase, 2<<20)
		tx := virtiotest.NewRing(m, 64, ramBase+3<<20, 2<<20)
		want := allFeatures
		if !tso {
			want &^= 1<<FGuestCsum | 1<<FGuestTSO4 | 1<<FGuestTSO6
		}
		tr := virtiotest.Bringup(d, m, &virtiotest.IRQ{}, want, rx, tx, nil)
		if !be.on || be.tso != tso {
			t.Fatalf("EnableVnetHdr: on %v tso %v", be.on, be.tso)
		}
		// tx: the guest's header goes to the backend (num_buffers zeroed), unsegmented.
		f := tcp4(pattern(5000), 1, 0x10)
		h := hdr{flags: HdrFNeedsCsum, gsoType: GSOTCPv4, gsoSize: 1448, csumStart: 34, csumOffset: 16}
		tx.Add(virtiotest.Buf{Data: append(encodeHdr(h), f...)})
		tr.Notify(1)
		if s := be.waitSent(t, 1); !bytes.Equal(s[0], append(encodeHdr(h), f...)) {
			t.Fatal("tx header not passed through")
		}
		// rx: a GSO frame with a partial checksum.
		bufAt := map[uint32]uint64{}
		for i := 0; i < 8; i++ {
			head, g := rx.Add(virtiotest.Buf{Write: 4096})
			bufAt[uint32(head)] = g[0]
		}
		in := append(encodeHdr(h), f...)
		if !be.deliver(in) {
			t.Fatal("rx refused")
		}
		if tso {
			id, ln, ok := rx.PopUsed()
			if !ok || ln != 4096 {
				t.Fatalf("rx used %d %v", ln, ok)
			}
			rx.PopUsed()
			got := m.At(bufAt[id], HdrLen)
			if got[0] != HdrFNeedsCsum || got[1] != GSOTCPv4 || binary.LittleEndian.Uint16(got[4:]) != 1448 || binary.LittleEndian.Uint16(got[10:]) != 2 {
				t.Fatalf("rx header % x", got)
			}
		} else if _, _, ok := rx.PopUsed(); ok || d.RxDropped.Load() != 1 {
			t.Fatal("GSO frame given to a guest without GUEST_TSO")
		}
		// A partial checksum to a guest without GUEST_CSUM is finished by the device.
		u := udp4(pattern(99))
		in = append(encodeHdr(hdr{flags: HdrFNeedsCsum, csumStart: 34, csumOffset: 6}), u...)
		if !be.deliver(in) {
			t.Fatal("rx refused")
		}
		if !tso {
			id, ln, ok := rx.PopUsed()
			if !ok || ln != uint32(len(in)) {
				t.Fatalf("used %d %v", ln, ok)
			}
			got := m.At(bufAt[id], uint64(ln))
			seg := got[HdrLen+34:]
			ph := header.PseudoHeaderChecksum(header.UDPProtocolNumber, tcpip.AddrFrom4(srcIP), tcpip.AddrFrom4(dstIP), uint16(len(seg)))
			if got[0] != 0 || checksum.Checksum(seg, ph) != 0xffff {
				t.Fatalf("checksum not finished: flags %#x", got[0])
			}
		}
		// A second activation (driver reload) keeps the header the backend still has.
		tr.SetStatus(0)
		tr = virtiotest.Bringup(d, m, &virtiotest.IRQ{}, want, virtiotest.NewRing(m, 16, ramBase+6<<20, 1<<20))
		if be.enables != 2 || !d.rx.vnet {
			t.Fatalf("re-activation: enables %d vnet %v", be.enables, d.rx.vnet)
		}
		tr.SetStatus(0)
		m.Close()
	}
}

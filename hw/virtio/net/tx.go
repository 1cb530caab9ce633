package net

import (
	"encoding/binary"
	"errors"
	"fmt"

	"gemu/hw/virtio"
)

// txBatch bounds the chains a tx worker handles before it signals and looks at stop.
const txBatch = 256

// txWorker transmits one tx queue's frames. Its buffers are sized once.
type txWorker struct {
	d        *Device
	q        *virtio.Queue
	features uint64
	vnet     bool   // frames to the backend carry the virtio-net header
	buf      []byte // header + frame as the guest wrote it
	seg      []byte // one segment (or a finished frame for a vnet-header backend)
}

func newTxWorker(d *Device, q *virtio.Queue, features uint64, vnet bool) *txWorker {
	return &txWorker{d: d, q: q, features: features, vnet: vnet, buf: make([]byte, HdrLen+maxFrame), seg: make([]byte, HdrLen+maxFrame)}
}

func (t *txWorker) run(stop <-chan struct{}) {
	defer t.d.wg.Done()
	for {
		for n := 0; ; n++ {
			if n == txBatch {
				t.q.Signal()
				n = 0
				select {
				case <-stop:
					return
				default:
				}
			}
			c, err := t.q.Pop()
			if err != nil || c == nil {
				break // a broken queue waits for the reset
			}
			if err := t.chain(c); err != nil {
				t.q.Fail(err)
				break
			}
			t.q.Push(c, 0)
		}
		t.q.Signal()
		select {
		case <-t.q.Kicked():
		case <-stop:
			return
		}
	}
}

// chain transmits one tx chain. A chain framed wrongly is an error (the queue breaks,
// as QEMU's virtio_error); a frame the device cannot make sense of is dropped.
func (t *txWorker) chain(c *virtio.Chain) error {
	if len(c.In) != 0 {
		return errors.New("virtio-net: tx chain has device-writable buffers")
	}
	n := c.Out.Len()
	if n < HdrLen {
		return fmt.Errorf("virtio-net: tx chain of %d bytes is shorter than the %d-byte header", n, HdrLen)
	}
	if n > uint64(len(t.buf)) {
		t.d.drop(&t.d.TxDropped, "tx frame of %d bytes is over %d", n-HdrLen, maxFrame)
		return nil
	}
	b := t.buf[:n]
	c.Out.ReadAt(b, 0)
	t.transmit(b)
	return nil
}

func (d *Device) drop(ctr interface{ Add(uint64) uint64 }, format string, args ...any) {
	ctr.Add(1)
	d.logf("virtio-net: dropped: "+format, args...)
}

// hdr is a decoded virtio_net_hdr_v1.
type hdr struct {
	flags, gsoType                         uint8
	hdrLen, gsoSize, csumStart, csumOffset uint16
}

func parseHdr(b []byte) hdr {
	le := binary.LittleEndian
	return hdr{b[0], b[1], le.Uint16(b[2:]), le.Uint16(b[4:]), le.Uint16(b[6:]), le.Uint16(b[8:])}
}

// transmit sends one header+frame b (b is the worker's buffer and may be changed).
func (t *txWorker) transmit(b []byte) {
	d := t.d
	h := parseHdr(b)
	frame := b[HdrLen:]
	if len(frame) < 14 {
		d.drop(&d.TxDropped, "runt tx frame of %d bytes", len(frame))
		return
	}
	off := d.offloads()
	if h.flags&HdrFNeedsCsum != 0 {
		if t.features&(1<<FCsum) == 0 {
			d.drop(&d.TxDropped, "NEEDS_CSUM without VIRTIO_NET_F_CSUM")
			return
		}
		if int(h.csumStart)+int(h.csumOffset)+2 > len(frame) {
			d.drop(&d.TxDropped, "checksum at %d+%d outside the %d-byte frame", h.csumStart, h.csumOffset, len(frame))
			return
		}
	}
	gso := h.gsoType &^ GSOECN
	switch gso {
	case GSONone:
		if h.gsoType&GSOECN != 0 {
			d.drop(&d.TxDropped, "ECN flag without a GSO type")
			return
		}
		if !t.vnet && len(frame) > off.MaxFrame {
			d.drop(&d.TxDropped, "tx frame of %d bytes is over the backend's %d", len(frame), off.MaxFrame)
			return
		}
		if t.vnet {
			binary.LittleEndian.PutUint16(b[10:], 0)
			t.send(b)
			return
		}
		if h.flags&HdrFNeedsCsum != 0 && !off.NoChecksum {
			finishCsum(frame, int(h.csumStart), int(h.csumOffset))
		}
		t.send(frame)
	case GSOTCPv4, GSOTCPv6:
		feat := uint(FHostTSO4)
		if gso == GSOTCPv6 {
			feat = FHostTSO6
		}
		if t.features&(1<<feat) == 0 || (h.gsoType&GSOECN != 0 && t.features&(1<<FHostECN) == 0) {
			d.drop(&d.TxDropped, "GSO type %#x not negotiated", h.gsoType)
			return
		}
		if h.gsoSize == 0 {
			d.drop(&d.TxDropped, "GSO frame with gso_size 0")
			return
		}
		p, err := parseTCP(frame, gso == GSOTCPv6)
		if err != nil {
			d.drop(&d.TxDropped, "GSO frame: %v", err)
			return
		}
		if t.vnet {
			binary.LittleEndian.PutUint16(b[10:], 0)
			t.send(b)
			return
		}
		if p.payload() <= int(h.gsoSize) || (off.NoChecksum && len(frame) <= off.MaxFrame) {
			// One segment, or a host stack that takes the whole frame: fix the
			// lengths the frame states and finish the checksum if needed.
			p.setLengths(frame, len(frame))
			if !off.NoChecksum {
				p.tcpChecksum(frame, len(frame))
			}
			t.send(frame)
			return
		}
		t.segment(frame, p, int(h.gsoSize))
	default:
		d.drop(&d.TxDropped, "unsupported GSO type %#x", h.gsoType)
	}
}

func (t *txWorker) send(f []byte) {
	if err := t.d.c.Backend.Send(f); err != nil {
		t.d.TxDropped.Add(1)
		return
	}
	t.d.TxFrames.Add(1)
}

// segment cuts a TSO frame into segments of at most mss payload bytes, each with its
// own IP length, IPv4 id and header checksum, TCP sequence number, flags (FIN and
// PSH on the last only, CWR on the first only) and full TCP checksum.
func (t *txWorker) segment(frame []byte, p tcpFrame, mss int) {
	hl := p.tcpOff + p.tcpLen
	payload := frame[hl:]
	seq := binary.BigEndian.Uint32(frame[p.tcpOff+4:])
	flags := frame[p.tcpOff+13]
	var id uint16
	if !p.v6 {
		id = binary.BigEndian.Uint16(frame[p.ipOff+4:])
	}
	for i, o := 0, 0; o < len(payload); i, o = i+1, o+mss {
		k := min(mss, len(payload)-o)
		s := t.seg[:hl+k]
		copy(s, frame[:hl])
		copy(s[hl:], payload[o:o+k])
		p.setLengths(s, len(s))
		if !p.v6 {
			binary.BigEndian.PutUint16(s[p.ipOff+4:], id+uint16(i))
			ipv4Checksum(s[p.ipOff : p.ipOff+p.ipLen])
		}
		binary.BigEndian.PutUint32(s[p.tcpOff+4:], seq+uint32(o))
		f := flags
		if o+k < len(payload) {
			f &^= tcpFIN | tcpPSH
		}
		if i > 0 {
			f &^= tcpCWR
		}
		s[p.tcpOff+13] = f
		p.tcpChecksum(s, len(s))
		t.send(s)
	}
}

const (
	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpCWR = 0x80
)

// tcpFrame locates the headers of an Ethernet frame carrying TCP over IPv4 or IPv6.
type tcpFrame struct {
	v6                   bool
	ipOff, ipLen         int // IP header (IPv6: fixed header plus extension headers)
	tcpOff, tcpLen, size int
}

func (p tcpFrame) payload() int { return p.size - p.tcpOff - p.tcpLen }

// parseTCP checks frame's Ethernet (one optional VLAN tag), IP and TCP headers.
func parseTCP(frame []byte, v6 bool) (tcpFrame, error) {
	p := tcpFrame{v6: v6, size: len(frame), ipOff: 14}
	et := binary.BigEndian.Uint16(frame[12:])
	if et == 0x8100 {
		if len(frame) < 18 {
			return p, errors.New("truncated VLAN tag")
		}
		et = binary.BigEndian.Uint16(frame[16:])
		p.ipOff = 18
	}
	ip := frame[p.ipOff:]
	if !v6 {
		if et != 0x0800 || len(ip) < 20 || ip[0]>>4 != 4 {
			return p, errors.New("TCPV4 GSO on a frame that is not IPv4")
		}
		p.ipLen = int(ip[0]&15) * 4
		if p.ipLen < 20 || p.ipLen > len(ip) || ip[9] != 6 {
			return p, errors.New("bad IPv4 header or not TCP")
		}
		if binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
			return p, errors.New("fragmented IPv4 in a GSO frame")
		}
	} else {
		if et != 0x86dd || len(ip) < 40 || ip[0]>>4 != 6 {
			return p, errors.New("TCPV6 GSO on a frame that is not IPv6")
		}
		next, o := ip[6], 40
		// Walk the extension headers that may precede TCP (bounded by the frame).
		for next != 6 {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if o+8 > len(ip) {
					return p, errors.New("truncated IPv6 extension header")
				}
				next, o = ip[o], o+8*(int(ip[o+1])+1)
			default:
				return p, fmt.Errorf("IPv6 next header %d is not TCP", next)
			}
			if o > len(ip) {
				return p, errors.New("truncated IPv6 extension header")
			}
		}
		p.ipLen = o
	}
	p.tcpOff = p.ipOff + p.ipLen
	if p.tcpOff+20 > len(frame) {
		return p, errors.New("truncated TCP header")
	}
	p.tcpLen = int(frame[p.tcpOff+12]>>4) * 4
	if p.tcpLen < 20 || p.tcpOff+p.tcpLen > len(frame) {
		return p, errors.New("bad TCP header length")
	}
	if len(frame)-p.ipOff > MaxPacket {
		return p, errors.New("IP packet over 64 KiB")
	}
	return p, nil
}

// setLengths writes the IP length fields of a frame of n bytes (and the IPv4 header
// checksum).
func (p tcpFrame) setLengths(f []byte, n int) {
	ip := f[p.ipOff:]
	if p.v6 {
		binary.BigEndian.PutUint16(ip[4:], uint16(n-p.ipOff-40))
		return
	}
	binary.BigEndian.PutUint16(ip[2:], uint16(n-p.ipOff))
	ipv4Checksum(ip[:p.ipLen])
}

// tcpChecksum computes the TCP checksum of a frame of n bytes from scratch.
func (p tcpFrame) tcpChecksum(f []byte, n int) {
	ip := f[p.ipOff:]
	seg := f[p.tcpOff:n]
	var sum uint32
	if p.v6 {
		sum = sumBytes(ip[8:40], 0)
	} else {
		sum = sumBytes(ip[12:20], 0)
	}
	sum += 6 + uint32(len(seg))
	seg[16], seg[17] = 0, 0
	c := fold(sumBytes(seg, sum))
	binary.BigEndian.PutUint16(seg[16:], ^c)
}

func ipv4Checksum(h []byte) {
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:], ^fold(sumBytes(h, 0)))
}

// finishCsum completes a partial checksum (NEEDS_CSUM): the ones' complement sum of
// frame[start:], whose field at start+off holds the pseudo-header sum, is stored
// complemented at start+off (0 becomes 0xffff, as Linux's skb_checksum_help).
func finishCsum(frame []byte, start, off int) {
	c := ^fold(sumBytes(frame[start:], 0))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(frame[start+off:], c)
}

func sumBytes(b []byte, sum uint32) uint32 {
	s := uint64(sum)
	for len(b) >= 8 {
		v := binary.BigEndian.Uint64(b)
		s += v >> 48 & 0xffff
		s += v >> 32 & 0xffff
		s += v >> 16 & 0xffff
		s += v & 0xffff
		b = b[8:]
	}
	for len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	for s>>32 != 0 {
		s = s&0xffffffff + s>>32
	}
	return uint32(s)
}

func fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

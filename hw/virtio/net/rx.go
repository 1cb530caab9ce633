package net

import (
	"encoding/binary"

	"gemu/hw/virtio"
)

// rxState is the receive side of an active device; guarded by Device.rxMu.
type rxState struct {
	features  uint64
	q         *virtio.Queue
	mergeable bool
	vnet      bool // frames from the backend start with a virtio-net header
	// held are chains popped from the rx queue but not yet used: a frame that needs
	// more buffers than the driver has posted keeps them for the next attempt. At
	// most the queue size.
	held []*virtio.Chain
}

// filter is the receive filter the control queue programs (QEMU's defaults: all
// traffic at reset until the driver sets a mode).
type filter struct {
	mac                        [6]byte
	promisc, allmulti, alluni  bool
	nomulti, nouni, nobcast    bool
	uni, multi                 [][6]byte
	uniOverflow, multiOverflow bool
}

// reset returns the filter to QEMU's reset state with the configured MAC.
func (f *filter) reset(mac [6]byte) {
	*f = filter{mac: mac, promisc: true}
}

// accept is QEMU's receive_filter.
func (f *filter) accept(frame []byte) bool {
	if f.promisc {
		return true
	}
	var dst [6]byte
	copy(dst[:], frame)
	if dst[0]&1 != 0 {
		if dst == [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} {
			return !f.nobcast
		}
		if f.nomulti {
			return false
		}
		if f.allmulti || f.multiOverflow {
			return true
		}
		for _, m := range f.multi {
			if m == dst {
				return true
			}
		}
		return false
	}
	if f.nouni {
		return false
	}
	if f.alluni || f.uniOverflow || dst == f.mac {
		return true
	}
	for _, m := range f.uni {
		if m == dst {
			return true
		}
	}
	return false
}

// receive is the backend's receiver: it copies frame (with a vnet-header backend,
// header first) into rx buffers. It returns false when the driver has not posted
// enough buffers; a frame the device drops (device not running, link down, filtered
// out, larger than any buffers could hold) counts as taken.
func (d *Device) receive(frame []byte) bool {
	d.rxMu.Lock()
	defer d.rxMu.Unlock()
	rx := d.rx
	if rx == nil || rx.q == nil || !d.link.Load() {
		d.RxDropped.Add(1)
		return true
	}
	var h [HdrLen]byte
	if rx.vnet {
		if len(frame) < HdrLen+14 {
			d.RxDropped.Add(1)
			return true
		}
		vh := frame[:HdrLen]
		frame = frame[HdrLen:]
		if !rx.offloadsOK(vh, frame) {
			d.RxDropped.Add(1)
			return true
		}
		copy(h[:10], vh)
	}
	if len(frame) < 14 || len(frame) > maxFrame || !d.filt.accept(frame) {
		d.RxDropped.Add(1)
		return true
	}
	need := uint64(HdrLen + len(frame))
	// Gather chains until they hold the frame (one chain without MRG_RXBUF).
	var have uint64
	n := 0
	for {
		if n == len(rx.held) {
			if len(rx.held) >= int(rx.q.Size()) {
				// Every buffer the ring can hold is too small: drop the frame.
				d.RxDropped.Add(1)
				return true
			}
			c, err := rx.q.Pop()
			if err != nil {
				d.RxDropped.Add(1)
				return true
			}
			if c == nil {
				return false
			}
			if len(c.Out) != 0 || c.In.Len() == 0 {
				rx.q.Fail(errRxChain)
				d.RxDropped.Add(1)
				return true
			}
			rx.held = append(rx.held, c)
		}
		l := rx.held[n].In.Len()
		if !rx.mergeable {
			if l < need {
				// Too small for this frame (QEMU drops it and the buffer); keep the
				// buffer, which a smaller frame may fit, and drop the frame.
				d.RxDropped.Add(1)
				return true
			}
			n, have = 1, l
			break
		}
		if n == 0 && l < HdrLen {
			rx.q.Fail(errRxHeader)
			d.RxDropped.Add(1)
			return true
		}
		n++
		have += l
		if have >= need {
			break
		}
	}
	binary.LittleEndian.PutUint16(h[10:], uint16(n))
	// Copy: header then frame, chain by chain.
	src := [2][]byte{h[:], frame}
	si, so := 0, 0
	for i := 0; i < n; i++ {
		c := rx.held[i]
		var w uint64
		for _, s := range c.In {
			b := s.B
			for len(b) > 0 && si < 2 {
				k := copy(b, src[si][so:])
				b, so, w = b[k:], so+k, w+uint64(k)
				if so == len(src[si]) {
					si, so = si+1, 0
				}
			}
		}
		rx.q.Push(c, uint32(w))
	}
	rx.held = append(rx.held[:0], rx.held[n:]...)
	rx.q.Signal()
	d.RxFrames.Add(1)
	return true
}

// offloadsOK checks the backend's header h against what the driver negotiated: a
// partial checksum the driver did not accept (GUEST_CSUM) is finished here; a GSO
// frame it did not accept, or offsets outside the frame, drop the frame. The
// finished checksum and cleared flag are written back into h and frame, so a frame
// the backend offers again (no rx buffers yet) is not finished twice.
func (rx *rxState) offloadsOK(h, frame []byte) bool {
	hd := parseHdr(h)
	if hd.flags&HdrFNeedsCsum != 0 {
		if int(hd.csumStart)+int(hd.csumOffset)+2 > len(frame) {
			return false
		}
		if rx.features&(1<<FGuestCsum) == 0 {
			finishCsum(frame, int(hd.csumStart), int(hd.csumOffset))
			h[0] &^= HdrFNeedsCsum
		}
	}
	var need uint
	switch hd.gsoType &^ GSOECN {
	case GSONone:
		return hd.gsoType == GSONone
	case GSOTCPv4:
		need = FGuestTSO4
	case GSOTCPv6:
		need = FGuestTSO6
	default:
		return false
	}
	if rx.features&(1<<need) == 0 || (hd.gsoType&GSOECN != 0 && rx.features&(1<<FGuestECN) == 0) || hd.gsoSize == 0 {
		return false
	}
	return true
}

type rxError string

func (e rxError) Error() string { return string(e) }

const (
	errRxChain  = rxError("virtio-net: rx chain without device-writable buffers, or with readable ones")
	errRxHeader = rxError("virtio-net: first mergeable rx buffer is shorter than the header")
)

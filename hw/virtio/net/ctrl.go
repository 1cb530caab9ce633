package net

import (
	"encoding/binary"
	"errors"

	"gemu/hw/virtio"
)

// Control classes and commands (spec 5.1.6.5).
const (
	CtrlRx         = 0
	CtrlRxPromisc  = 0
	CtrlRxAllmulti = 1
	CtrlRxAlluni   = 2
	CtrlRxNomulti  = 3
	CtrlRxNouni    = 4
	CtrlRxNobcast  = 5

	CtrlMAC           = 1
	CtrlMACTableSet   = 0
	CtrlMACAddrSet    = 1
	CtrlVLAN          = 2
	CtrlAnnounce      = 3
	CtrlAnnounceAck   = 0
	CtrlMQ            = 4
	CtrlMQVQPairsSet  = 0
	CtrlGuestOffloads = 5

	CtrlOK  = 0
	CtrlErr = 1
)

// maxCtrl bounds a control command's bytes (two full MAC tables plus headers).
const maxCtrl = 2 + 2*(4+6*1024)

// ctrl runs the control queue.
func (d *Device) ctrl(q *virtio.Queue, features uint64, stop <-chan struct{}) {
	defer d.wg.Done()
	buf := make([]byte, maxCtrl)
	for {
		for {
			c, err := q.Pop()
			if err != nil || c == nil {
				break
			}
			in := c.In.Len()
			if c.Out.Len() < 2 || in < 1 {
				q.Fail(errors.New("virtio-net: control command without its header or ack byte"))
				break
			}
			n := min(c.Out.Len(), uint64(len(buf)))
			b := buf[:n]
			c.Out.ReadAt(b, 0)
			ack := byte(CtrlErr)
			if c.Out.Len() <= maxCtrl {
				ack = d.command(features, b[0], b[1], b[2:])
			}
			c.In.WriteAt([]byte{ack}, in-1)
			q.Push(c, uint32(in))
			q.Signal()
		}
		select {
		case <-q.Kicked():
		case <-stop:
			return
		}
	}
}

// command runs one control command and returns the ack.
func (d *Device) command(features uint64, class, cmd byte, data []byte) byte {
	has := func(b uint) bool { return features&(1<<b) != 0 }
	d.rxMu.Lock()
	defer d.rxMu.Unlock()
	f := &d.filt
	switch class {
	case CtrlRx:
		if !has(FCtrlRx) || len(data) != 1 {
			return CtrlErr
		}
		on := data[0] != 0
		switch cmd {
		case CtrlRxPromisc:
			f.promisc = on
		case CtrlRxAllmulti:
			f.allmulti = on
		case CtrlRxAlluni:
			f.alluni = on
		case CtrlRxNomulti:
			f.nomulti = on
		case CtrlRxNouni:
			f.nouni = on
		case CtrlRxNobcast:
			f.nobcast = on
		default:
			return CtrlErr
		}
		return CtrlOK
	case CtrlMAC:
		switch cmd {
		case CtrlMACAddrSet:
			if !has(FCtrlMACAddr) || len(data) != 6 {
				return CtrlErr
			}
			copy(f.mac[:], data)
			return CtrlOK
		case CtrlMACTableSet:
			if !has(FCtrlRx) {
				return CtrlErr
			}
			uni, rest, ok := macTable(data)
			if !ok {
				return CtrlErr
			}
			multi, rest, ok := macTable(rest)
			if !ok || len(rest) != 0 {
				return CtrlErr
			}
			f.uni, f.uniOverflow = clip(f.uni[:0], uni)
			f.multi, f.multiOverflow = clip(f.multi[:0], multi)
			return CtrlOK
		}
		return CtrlErr
	case CtrlAnnounce:
		if !has(FGuestAnnounce) || cmd != CtrlAnnounceAck {
			return CtrlErr
		}
		d.setStatus(StatusAnnounce, false)
		return CtrlOK
	case CtrlMQ:
		if !has(FMQ) || cmd != CtrlMQVQPairsSet || len(data) != 2 {
			return CtrlErr
		}
		// Every tx queue is served whatever the count; frames for the guest go to rx0.
		if n := binary.LittleEndian.Uint16(data); n < 1 || int(n) > d.c.QueuePairs {
			return CtrlErr
		}
		return CtrlOK
	}
	return CtrlErr
}

// macTable reads one virtio_net_ctrl_mac (le32 entries, then entries MACs).
func macTable(b []byte) ([][6]byte, []byte, bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := uint64(binary.LittleEndian.Uint32(b))
	b = b[4:]
	if n*6 > uint64(len(b)) {
		return nil, nil, false
	}
	t := make([][6]byte, n)
	for i := range t {
		copy(t[i][:], b[6*i:])
	}
	return t, b[6*n:], true
}

// clip keeps at most MACTableEntries addresses; more set the overflow flag (QEMU's
// uni_overflow / multi_overflow: that class of traffic is then accepted).
func clip(dst, src [][6]byte) ([][6]byte, bool) {
	if len(src) > MACTableEntries {
		return dst[:0], true
	}
	return append(dst, src...), false
}

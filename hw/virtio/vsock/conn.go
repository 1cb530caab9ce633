package vsock

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"gemu/hw/virtio"
)

// Connection states.
const (
	stDialing    = iota // guest-initiated: the backend is dialing the host port
	stConnecting        // host-initiated: REQUEST sent (or due), the guest's answer awaited
	stOpen
	stClosed
)

// conn is one connection. Its fields are under Device.mu; the host socket is read by
// its reader goroutine and written by its writer goroutine, each into or out of its
// own ring without the lock (the ring's indices, under the lock, say which bytes are
// whose).
type conn struct {
	key   key
	host  Conn
	state int
	cond  *sync.Cond // on Device.mu: the reader and writer wait on it
	timer *time.Timer

	queued                        bool // on Device.ready
	sendReq, sendResp, sendCredit bool
	shutSent                      bool
	creditReqSent                 bool
	greeting, preamble            []byte // host-initiated: written to the host before the stream

	// guest → host
	g2h                 ring
	rxCnt, fwdCnt       uint32 // bytes received from the guest; written to the host
	lastFwdSent         uint32 // fwd_cnt in the last packet to the guest
	guestShut           uint32 // SHUTDOWN flags the guest sent
	peerBufAlloc        uint32
	peerFwdCnt, txCount uint32 // the guest's fwd_cnt; bytes sent to the guest

	// host → guest
	h2g     ring
	hostEOF bool
}

func (d *Device) newConnLocked(k key, state int) *conn {
	c := &conn{key: k, state: state, cond: sync.NewCond(&d.mu)}
	c.g2h.size, c.h2g.size = BufAlloc, hostBuffer
	d.conns[k] = c
	return c
}

// startIOLocked starts the host socket's reader and writer.
func (d *Device) startIOLocked(c *conn) {
	go d.reader(c)
	go d.writer(c)
}

// credit is how many bytes the guest can take now.
func (c *conn) credit() uint32 {
	inflight := c.txCount - c.peerFwdCnt
	if inflight >= c.peerBufAlloc {
		return 0
	}
	return c.peerBufAlloc - inflight
}

func (c *conn) dataWaiting() bool {
	return c.state == stOpen && c.h2g.n > 0 && c.guestShut&ShutRcv == 0
}

func (c *conn) shutdownDue() bool {
	return c.state == stOpen && c.hostEOF && !c.shutSent && (c.h2g.n == 0 || c.guestShut&ShutRcv != 0)
}

func (c *conn) hasWork() bool {
	return c.sendReq || c.sendResp || c.sendCredit || c.shutdownDue() ||
		(c.dataWaiting() && (c.credit() > 0 || !c.creditReqSent))
}

// next builds c's next packet for the guest (data copied into in after the header).
func (c *conn) next(d *Device, in virtio.Buffers) (Header, bool) {
	h := d.reply(c.key, 0)
	room := uint32(min(in.Len()-hdrSize, maxRWPayload))
	switch {
	case c.sendReq:
		c.sendReq = false
		h.Op = OpRequest
	case c.sendResp:
		c.sendResp = false
		h.Op = OpResponse
	case c.dataWaiting() && c.credit() > 0 && room > 0:
		n := min(uint32(c.h2g.n), c.credit(), room)
		for done := uint32(0); done < n; {
			b := c.h2g.data()
			k := min(n-done, uint32(len(b)))
			in.WriteAt(b[:k], uint64(hdrSize+done))
			c.h2g.consume(int(k))
			done += k
		}
		c.txCount += n
		h.Op, h.Len = OpRW, n
		c.cond.Broadcast() // the reader has room again
	case c.shutdownDue():
		c.shutSent = true
		h.Op, h.Flags = OpShutdown, ShutSend
	case c.sendCredit:
		h.Op = OpCreditUpdate
	case c.dataWaiting() && c.credit() == 0 && !c.creditReqSent:
		c.creditReqSent = true
		h.Op = OpCreditRequest
	default:
		return h, false
	}
	h.FwdCnt = c.fwdCnt
	c.lastFwdSent = c.fwdCnt
	c.sendCredit = false
	return h, true
}

// appendFromGuest copies n payload bytes (within credit: checked) into g2h.
func (c *conn) appendFromGuest(p virtio.Buffers, n uint32) {
	var off uint64
	for off < uint64(n) {
		sp := c.g2h.space()
		k := min(uint64(len(sp)), uint64(n)-off)
		got := p.Slice(off, k).ReadAt(sp[:k], 0)
		c.g2h.commit(got)
		off += k
		if got < int(k) || k == 0 {
			break
		}
	}
	c.rxCnt += n
}

// creditLow: the guest's view of the device's free buffer is under half of it, and
// the device has forwarded bytes it has not told the guest about.
func (c *conn) creditLow() bool {
	view := BufAlloc - (c.rxCnt - c.lastFwdSent)
	return c.fwdCnt != c.lastFwdSent && view < BufAlloc/2
}

type closeWriter interface{ CloseWrite() error }

// writer forwards the guest's bytes to the host socket.
func (d *Device) writer(c *conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		for c.state == stOpen && len(c.preamble) == 0 && c.g2h.n == 0 && c.guestShut&ShutSend == 0 {
			c.cond.Wait()
		}
		if c.state != stOpen {
			return
		}
		if p := c.preamble; len(p) > 0 {
			c.preamble = nil
			d.mu.Unlock()
			_, err := c.host.Write(p)
			d.mu.Lock()
			if err != nil && c.state == stOpen {
				d.resetLocked(c, fmt.Sprintf("host write: %v", err))
			}
			continue
		}
		if c.g2h.n == 0 { // the guest sends no more
			if c.guestShut&ShutRcv == 0 {
				if cw, ok := c.host.(closeWriter); ok {
					d.mu.Unlock()
					cw.CloseWrite()
					d.mu.Lock()
				}
				for c.state == stOpen && c.guestShut&ShutRcv == 0 {
					c.cond.Wait()
				}
			}
			if c.state == stOpen {
				// Both directions shut: the guest waits for the RST that ends it.
				d.closeLocked(c, true)
			}
			return
		}
		b := c.g2h.data()
		d.mu.Unlock()
		n, err := c.host.Write(b)
		d.mu.Lock()
		if c.state != stOpen {
			return
		}
		c.g2h.consume(n)
		c.fwdCnt += uint32(n)
		if err != nil {
			d.resetLocked(c, fmt.Sprintf("host write: %v", err))
			return
		}
		if c.creditLow() {
			c.sendCredit = true
			d.scheduleLocked(c)
		}
	}
}

// reader takes the host socket's bytes for the guest.
func (d *Device) reader(c *conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		for c.state == stOpen && c.h2g.n == c.h2g.size && c.guestShut&ShutRcv == 0 {
			c.cond.Wait()
		}
		if c.state != stOpen || c.guestShut&ShutRcv != 0 {
			return
		}
		sp := c.h2g.space()
		d.mu.Unlock()
		n, err := c.host.Read(sp)
		d.mu.Lock()
		if c.state != stOpen {
			return
		}
		c.h2g.commit(n)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				d.resetLocked(c, fmt.Sprintf("host read: %v", err))
				return
			}
			c.hostEOF = true
		}
		d.scheduleLocked(c)
		if err != nil {
			return
		}
	}
}

// ring is a byte FIFO of a fixed size, allocated at first use. The producer fills
// space() and commits; the consumer reads data() and consumes; r only moves by consume,
// so the region a producer got stays free while the consumer advances.
type ring struct {
	b       []byte
	size    int
	r, n    int
	alloced bool
}

// space is the contiguous free region after the data.
func (q *ring) space() []byte {
	if !q.alloced {
		q.b, q.alloced = make([]byte, q.size), true
	}
	if q.n == q.size {
		return nil
	}
	w := (q.r + q.n) % q.size
	if w >= q.r { // not full: w == r only when empty
		return q.b[w:q.size]
	}
	return q.b[w:q.r]
}

func (q *ring) commit(k int) { q.n += k }

// data is the contiguous region of the oldest bytes.
func (q *ring) data() []byte {
	if q.n == 0 {
		return nil
	}
	end := q.r + q.n
	if end > q.size {
		end = q.size
	}
	return q.b[q.r:end]
}

func (q *ring) consume(k int) {
	q.r = (q.r + k) % q.size
	q.n -= k
}

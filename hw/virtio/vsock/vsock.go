// Package vsock owns the virtio socket device (virtio 1.2 section 5.10) as Firecracker's
// "hybrid" vsock models it: the guest's AF_VSOCK stream connections to the host (CID 2)
// end on host stream sockets a Backend supplies, and host processes reach the guest's
// listeners through the same Backend. The Unix-socket backend (unix.go) is
// Firecracker's: a guest connection to port P dials the Unix socket "PATH_P"; a host
// process connects to "PATH", writes "CONNECT <port>\n" and, once the guest accepts,
// reads "OK <hostport>\n" followed by the stream.
//
// The device has three queues (rx, tx, event) and a configuration of one le64, the
// guest's CID. Only stream sockets are offered (no VIRTIO_VSOCK_F_SEQPACKET). Every
// packet carries the sender's receive buffer size and forwarded count (buf_alloc,
// fwd_cnt): the device never sends the guest more than the guest's credit allows, and
// resets a connection whose guest overruns the device's. Everything is bounded: at most
// MaxConns connections, BufAlloc bytes held per connection from the guest and
// hostBuffer bytes read ahead from the host, a fixed-size queue of replies to packets
// on no connection. A chain too short for its header sets DEVICE_NEEDS_RESET.
//
// TransportReset drops every connection and sends VIRTIO_VSOCK_EVENT_TRANSPORT_RESET,
// which makes the guest reset its sockets and re-read its CID: a rebooted machine's
// device that takes over a backend sends it to the first driver that starts it.
//
// It must not know the transport that carries it, nor what the host sockets connect to.
package vsock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"gemu/hw/virtio"
)

// IDVsock is the virtio device type (spec 5).
const IDVsock = 19

// HostCID is the host's context id (VMADDR_CID_HOST).
const HostCID = 2

// Packet header (struct virtio_vsock_hdr, 44 bytes, little-endian, packed).
const hdrSize = 44

// Socket types and operations (spec 5.10.6).
const (
	TypeStream    = 1
	TypeSeqpacket = 2

	OpInvalid       = 0
	OpRequest       = 1
	OpResponse      = 2
	OpRst           = 3
	OpShutdown      = 4
	OpRW            = 5
	OpCreditUpdate  = 6
	OpCreditRequest = 7
)

// Shutdown flags.
const (
	ShutRcv  = 1 // the sender will receive no more data
	ShutSend = 2 // the sender will send no more data
)

// EventTransportReset is the only event (struct virtio_vsock_event.id).
const EventTransportReset = 0

// Bounds.
const (
	// MaxConns is the most connections (in any state) the device holds; requests past
	// it are refused with RST.
	MaxConns = 256
	// BufAlloc is the receive buffer the device announces per connection: the guest may
	// have at most this many bytes in flight towards the host.
	BufAlloc = 256 << 10
	// hostBuffer bounds what is read ahead from a host socket per connection.
	hostBuffer = 64 << 10
	// maxRWPayload bounds the payload of one packet the device sends.
	maxRWPayload = 64 << 10
	// maxStray bounds queued replies for packets on no connection (further ones are dropped).
	maxStray = 1024
	// requestTimeout is how long a host-initiated connection waits for the guest's answer.
	requestTimeout = 2 * time.Second
	// firstHostPort is the first local port given to host-initiated connections (Firecracker's choice).
	firstHostPort = 1 << 30
	queueSize     = 256
)

// Header is a virtio_vsock_hdr.
type Header struct {
	SrcCID, DstCID   uint64
	SrcPort, DstPort uint32
	Len              uint32
	Type, Op         uint16
	Flags            uint32
	BufAlloc, FwdCnt uint32
}

// Encode writes h into b (at least hdrSize bytes).
func (h *Header) Encode(b []byte) {
	le := binary.LittleEndian
	le.PutUint64(b[0:], h.SrcCID)
	le.PutUint64(b[8:], h.DstCID)
	le.PutUint32(b[16:], h.SrcPort)
	le.PutUint32(b[20:], h.DstPort)
	le.PutUint32(b[24:], h.Len)
	le.PutUint16(b[28:], h.Type)
	le.PutUint16(b[30:], h.Op)
	le.PutUint32(b[32:], h.Flags)
	le.PutUint32(b[36:], h.BufAlloc)
	le.PutUint32(b[40:], h.FwdCnt)
}

// DecodeHeader reads a header from b (at least hdrSize bytes).
func DecodeHeader(b []byte) Header {
	le := binary.LittleEndian
	return Header{SrcCID: le.Uint64(b[0:]), DstCID: le.Uint64(b[8:]), SrcPort: le.Uint32(b[16:]), DstPort: le.Uint32(b[20:]),
		Len: le.Uint32(b[24:]), Type: le.Uint16(b[28:]), Op: le.Uint16(b[30:]), Flags: le.Uint32(b[32:]),
		BufAlloc: le.Uint32(b[36:]), FwdCnt: le.Uint32(b[40:])}
}

// Conn is a host end of a connection. A Conn that also has CloseWrite (*net.UnixConn,
// *net.TCPConn) gets the guest's half-close.
type Conn interface {
	io.ReadWriteCloser
}

// Backend is the host side: it supplies a stream for a guest connection to host port
// port. Dial may block; the device calls it on a goroutine of its own.
type Backend interface {
	Dial(port uint32) (Conn, error)
}

// Config configures the device.
type Config struct {
	GuestCID uint64 // 3 .. 2^32-2
	Backend  Backend
	// Logf, if set, receives one line per refused or reset connection (debugging).
	Logf func(format string, args ...any)
}

// Device is a virtio-vsock device (virtio.Device).
type Device struct {
	cid     uint64
	backend Backend
	logf    func(string, ...any)

	life sync.Mutex // Activate/Reset
	stop chan struct{}
	wg   sync.WaitGroup

	mu         sync.Mutex
	active     bool
	rxq, evq   *virtio.Queue
	conns      map[key]*conn
	ready      []*conn  // connections with a packet to send, each at most once
	stray      []Header // replies to packets on no connection
	nextPort   uint32
	resetEvent bool // TRANSPORT_RESET to send
}

// key identifies a connection: the host's port and the guest's.
type key struct{ host, guest uint32 }

// New checks c and returns the device.
func New(c Config) (*Device, error) {
	if c.GuestCID < 3 || c.GuestCID >= math.MaxUint32 {
		return nil, fmt.Errorf("guest-cid %d out of range 3..%d", c.GuestCID, uint64(math.MaxUint32-1))
	}
	if c.Backend == nil {
		return nil, errors.New("vsock: no backend")
	}
	logf := c.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Device{cid: c.GuestCID, backend: c.Backend, logf: logf, conns: map[key]*conn{}, nextPort: firstHostPort}, nil
}

// GuestCID is the guest's context id.
func (d *Device) GuestCID() uint64 { return d.cid }

func (d *Device) DeviceID() uint16   { return IDVsock }
func (d *Device) Features() uint64   { return 0 } // stream only
func (d *Device) QueueMax() []uint16 { return []uint16{queueSize, queueSize, 16} }

// ReadConfig: le64 guest_cid.
func (d *Device) ReadConfig(off uint64, data []byte) {
	clear(data)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], d.cid)
	if off < uint64(len(b)) {
		copy(data, b[off:])
	}
}

// WriteConfig: the configuration is read-only.
func (d *Device) WriteConfig(uint64, []byte) {}

// Activate starts the rx, tx and event workers.
func (d *Device) Activate(a virtio.Activation) error {
	d.life.Lock()
	defer d.life.Unlock()
	if d.stop != nil {
		return errors.New("vsock: already active")
	}
	q := func(i int) *virtio.Queue {
		if i < len(a.Queues) {
			return a.Queues[i]
		}
		return nil
	}
	stop := make(chan struct{})
	d.stop = stop
	d.mu.Lock()
	d.active = true
	d.rxq, d.evq = q(0), q(2)
	d.mu.Unlock()
	for i, f := range []func(*virtio.Queue, chan struct{}){d.rxLoop, d.txLoop, d.eventLoop} {
		if qq := q(i); qq != nil {
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				f(qq, stop)
			}()
		}
	}
	return nil
}

// Reset stops the workers and closes every connection's host end.
func (d *Device) Reset() {
	d.life.Lock()
	defer d.life.Unlock()
	if d.stop != nil {
		close(d.stop)
		d.wg.Wait()
		d.stop = nil
	}
	d.mu.Lock()
	d.active = false
	d.rxq, d.evq = nil, nil
	d.dropAllLocked() // a TRANSPORT_RESET still due waits for the next driver
	d.mu.Unlock()
}

// TransportReset closes every connection and sends the guest
// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (as soon as its event queue has a buffer).
func (d *Device) TransportReset() {
	d.mu.Lock()
	d.dropAllLocked()
	d.resetEvent = true
	if d.evq != nil {
		d.evq.Kick()
	}
	d.mu.Unlock()
}

// Conns is the number of connections the device holds (tests).
func (d *Device) Conns() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}

func (d *Device) dropAllLocked() {
	for _, c := range d.conns {
		d.closeLocked(c, false)
	}
	d.ready, d.stray = nil, nil
}

// waitStop parks a worker whose queue broke until the device is reset.
func waitStop(stop chan struct{}) { <-stop }

// txLoop handles the packets the guest sends.
func (d *Device) txLoop(q *virtio.Queue, stop chan struct{}) {
	var hb [hdrSize]byte
	for {
		for {
			ch, err := q.Pop()
			if err != nil {
				waitStop(stop)
				return
			}
			if ch == nil {
				break
			}
			if ch.Out.Len() < hdrSize {
				q.Fail(fmt.Errorf("vsock: tx chain of %d readable bytes is shorter than the %d-byte header", ch.Out.Len(), hdrSize))
				waitStop(stop)
				return
			}
			ch.Out.ReadAt(hb[:], 0)
			h := DecodeHeader(hb[:])
			if uint64(h.Len) > ch.Out.Len()-hdrSize {
				q.Fail(fmt.Errorf("vsock: tx packet len %d exceeds the chain's %d payload bytes", h.Len, ch.Out.Len()-hdrSize))
				waitStop(stop)
				return
			}
			d.handle(h, ch.Out.Slice(hdrSize, uint64(h.Len)))
			q.Push(ch, 0)
			select {
			case <-stop:
				q.Signal()
				return
			default:
			}
		}
		q.Signal()
		select {
		case <-q.Kicked():
		case <-stop:
			return
		}
	}
}

// rxLoop gives the guest the device's packets: replies, data, credit.
func (d *Device) rxLoop(q *virtio.Queue, stop chan struct{}) {
	var spare *virtio.Chain
	for {
		pushed := false
		for {
			if spare == nil {
				if !d.rxPending() {
					break
				}
				ch, err := q.Pop()
				if err != nil {
					waitStop(stop)
					return
				}
				if ch == nil {
					break
				}
				if ch.In.Len() < hdrSize {
					q.Fail(fmt.Errorf("vsock: rx chain of %d writable bytes is shorter than the %d-byte header", ch.In.Len(), hdrSize))
					waitStop(stop)
					return
				}
				spare = ch
			}
			n, ok := d.fillRx(spare.In)
			if !ok {
				break
			}
			q.Push(spare, n)
			spare, pushed = nil, true
		}
		if pushed {
			q.Signal()
		}
		select {
		case <-q.Kicked():
		case <-stop:
			return
		}
	}
}

// eventLoop sends TRANSPORT_RESET when asked.
func (d *Device) eventLoop(q *virtio.Queue, stop chan struct{}) {
	for {
		d.mu.Lock()
		want := d.resetEvent
		d.mu.Unlock()
		if want {
			ch, err := q.Pop()
			if err != nil {
				waitStop(stop)
				return
			}
			if ch != nil {
				if ch.In.Len() < 4 {
					q.Fail(fmt.Errorf("vsock: event chain of %d writable bytes is shorter than an event", ch.In.Len()))
					waitStop(stop)
					return
				}
				var ev [4]byte
				binary.LittleEndian.PutUint32(ev[:], EventTransportReset)
				ch.In.WriteAt(ev[:], 0)
				d.mu.Lock()
				d.resetEvent = false
				d.mu.Unlock()
				q.Push(ch, 4)
				q.Signal()
			}
		}
		select {
		case <-q.Kicked():
		case <-stop:
			return
		}
	}
}

// reply is a header from the host to the guest for connection k.
func (d *Device) reply(k key, op uint16) Header {
	return Header{SrcCID: HostCID, DstCID: d.cid, SrcPort: k.host, DstPort: k.guest, Type: TypeStream, Op: op, BufAlloc: BufAlloc}
}

// strayLocked queues a reply outside any connection (bounded: dropped when full).
func (d *Device) strayLocked(h Header) {
	if len(d.stray) >= maxStray {
		return
	}
	d.stray = append(d.stray, h)
	d.kickRxLocked()
}

func (d *Device) kickRxLocked() {
	if d.rxq != nil {
		d.rxq.Kick()
	}
}

// handle is one packet from the guest.
func (d *Device) handle(h Header, payload virtio.Buffers) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if h.SrcCID != d.cid || h.DstCID != HostCID {
		d.logf("vsock: dropped packet from cid %d to cid %d", h.SrcCID, h.DstCID)
		return
	}
	k := key{host: h.DstPort, guest: h.SrcPort}
	c := d.conns[k]
	if h.Type != TypeStream {
		if h.Op != OpRst {
			d.strayLocked(d.reply(k, OpRst))
		}
		return
	}
	if c == nil {
		switch h.Op {
		case OpRequest:
			d.requestLocked(k, h)
		case OpRst:
		default:
			d.strayLocked(d.reply(k, OpRst))
		}
		return
	}
	c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	c.creditReqSent = false
	switch h.Op {
	case OpRst:
		d.closeLocked(c, false)
		return
	case OpResponse:
		if c.state != stConnecting {
			d.resetLocked(c, "unexpected RESPONSE")
			return
		}
		c.timer.Stop()
		c.state = stOpen
		c.preamble = c.greeting
		d.startIOLocked(c)
	case OpRequest:
		d.resetLocked(c, "REQUEST on an existing connection")
		return
	case OpShutdown:
		if c.state != stOpen {
			d.resetLocked(c, "SHUTDOWN before the connection opened")
			return
		}
		c.guestShut |= h.Flags & (ShutRcv | ShutSend)
		c.cond.Broadcast()
	case OpRW:
		if c.state != stOpen || c.guestShut&ShutSend != 0 {
			d.resetLocked(c, "data on a connection not open for it")
			return
		}
		if uint64(c.rxCnt-c.fwdCnt)+uint64(h.Len) > BufAlloc {
			d.resetLocked(c, "guest overran its credit")
			return
		}
		c.appendFromGuest(payload, h.Len)
		c.cond.Broadcast()
	case OpCreditUpdate:
	case OpCreditRequest:
		c.sendCredit = true
	default:
		d.resetLocked(c, fmt.Sprintf("unknown op %d", h.Op))
		return
	}
	d.scheduleLocked(c)
}

// requestLocked is a guest connecting to host port k.host: the backend dials it.
func (d *Device) requestLocked(k key, h Header) {
	if len(d.conns) >= MaxConns {
		d.logf("vsock: refused connection to host port %d: %d connections open", k.host, len(d.conns))
		d.strayLocked(d.reply(k, OpRst))
		return
	}
	c := d.newConnLocked(k, stDialing)
	c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	go func() {
		hc, err := d.backend.Dial(k.host)
		d.mu.Lock()
		defer d.mu.Unlock()
		if c.state != stDialing {
			if hc != nil {
				hc.Close()
			}
			return
		}
		if err != nil {
			d.logf("vsock: guest connection to host port %d refused: %v", k.host, err)
			d.closeLocked(c, true)
			return
		}
		c.host = hc
		c.state = stOpen
		c.sendResp = true
		d.startIOLocked(c)
		d.scheduleLocked(c)
	}()
}

// Connect starts a host-initiated connection on hc to the guest's port: the device
// sends the guest a REQUEST; when the guest accepts, greeting(hostPort) is written to
// hc ahead of the stream; when it refuses (or does not answer in time), hc is closed.
// It fails (leaving hc open) when the device is not running or holds MaxConns
// connections.
func (d *Device) Connect(hc Conn, port uint32, greeting func(hostPort uint32) []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.active || d.rxq == nil {
		return errors.New("vsock: the guest's driver is not running")
	}
	if len(d.conns) >= MaxConns {
		return fmt.Errorf("vsock: %d connections open", len(d.conns))
	}
	var k key
	for {
		k = key{host: d.nextPort, guest: port}
		d.nextPort++
		if d.nextPort == 0 {
			d.nextPort = firstHostPort
		}
		if d.conns[k] == nil {
			break
		}
	}
	c := d.newConnLocked(k, stConnecting)
	c.host = hc
	if greeting != nil {
		c.greeting = greeting(k.host)
	}
	c.sendReq = true
	c.timer = time.AfterFunc(requestTimeout, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if c.state == stConnecting {
			d.logf("vsock: guest did not answer a connection to port %d", port)
			d.closeLocked(c, true)
		}
	})
	d.scheduleLocked(c)
	return nil
}

// resetLocked closes c with an RST to the guest for a protocol violation.
func (d *Device) resetLocked(c *conn, why string) {
	d.logf("vsock: reset connection host port %d guest port %d: %s", c.key.host, c.key.guest, why)
	d.closeLocked(c, true)
}

// closeLocked forgets c, closes its host end and, with rst, tells the guest.
func (d *Device) closeLocked(c *conn, rst bool) {
	if c.state == stClosed {
		return
	}
	c.state = stClosed
	delete(d.conns, c.key)
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.host != nil {
		c.host.Close()
	}
	c.cond.Broadcast()
	if rst {
		d.strayLocked(d.reply(c.key, OpRst))
	}
}

// rxPending reports whether there is anything to send to the guest.
func (d *Device) rxPending() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.stray) > 0 {
		return true
	}
	for _, c := range d.ready {
		if c.state != stClosed && c.hasWork() {
			return true
		}
	}
	return false
}

// fillRx writes the next packet for the guest into in and returns its length, or
// false when there is nothing to send.
func (d *Device) fillRx(in virtio.Buffers) (uint32, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var hb [hdrSize]byte
	if len(d.stray) > 0 {
		h := d.stray[0]
		d.stray = d.stray[1:]
		if len(d.stray) == 0 {
			d.stray = nil
		}
		h.Encode(hb[:])
		in.WriteAt(hb[:], 0)
		return hdrSize, true
	}
	for len(d.ready) > 0 {
		c := d.ready[0]
		d.ready = d.ready[1:]
		c.queued = false
		if c.state == stClosed {
			continue
		}
		h, ok := c.next(d, in)
		if !ok {
			continue
		}
		h.Encode(hb[:])
		in.WriteAt(hb[:], 0)
		d.scheduleLocked(c)
		return hdrSize + h.Len, true
	}
	d.ready = nil
	return 0, false
}

// scheduleLocked puts c on the ready list if it has a packet to send.
func (d *Device) scheduleLocked(c *conn) {
	if c.queued || c.state == stClosed || !c.hasWork() {
		return
	}
	c.queued = true
	d.ready = append(d.ready, c)
	d.kickRxLocked()
}

package netdev

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Stream and datagram backends: the guest's Ethernet frames over a host socket.
// On a stream (TCP or Unix) each frame is preceded by its length as 4 bytes big
// endian, as QEMU's net/stream.c and net/socket.c write them, so gemu and QEMU (or
// two gemus) share a wire; on a datagram socket each datagram is one frame.

const (
	maxWireFrame = 69632 // QEMU's NET_BUFSIZE: longer lengths on the wire end the connection
	txQueueLen   = 512
)

// Stream is a socket/stream backend on a TCP or Unix stream.
type Stream struct {
	rx     *rxQueue
	tx     chan []byte
	closed atomic.Bool
	done   chan struct{}
	wg     sync.WaitGroup

	mu       sync.Mutex
	conn     net.Conn
	listener net.Listener
	network  string
	addr     string
	redial   time.Duration // 0: no reconnect (client)
	notify   func(string)

	// Dropped counts guest frames dropped while no peer was connected or the
	// transmit queue was full.
	Dropped atomic.Uint64
}

func newStream(network, addr string, server bool, redial time.Duration, notify func(string)) (*Stream, error) {
	s := &Stream{rx: newRxQueue(maxWireFrame), tx: make(chan []byte, txQueueLen), done: make(chan struct{}),
		network: network, addr: addr, redial: redial, notify: notify}
	if server {
		if network == "unix" {
			os.Remove(addr) // QEMU unlinks a stale socket file too
		}
		l, err := net.Listen(network, addr)
		if err != nil {
			return nil, fmt.Errorf("netdev: can't listen on %s: %v", addr, unwrapOp(err))
		}
		s.listener = l
		if notify != nil {
			notify("info: QEMU waiting for connection on: " + l.Addr().String() + ",server=on")
		}
		s.wg.Add(1)
		go s.acceptLoop()
	} else {
		c, err := net.Dial(network, addr)
		if err != nil {
			return nil, fmt.Errorf("netdev: can't connect to %s: %v", addr, unwrapOp(err))
		}
		s.attach(c)
		if redial > 0 {
			s.wg.Add(1)
			go s.redialLoop()
		}
	}
	s.wg.Add(1)
	go s.writeLoop()
	return s, nil
}

func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// Addr returns the listening address of a server ("" for a client).
func (s *Stream) Addr() net.Addr {
	if s.listener == nil {
		return nil
	}
	return s.listener.Addr()
}

// attach makes c the connection and starts its reader; any previous one is closed.
func (s *Stream) attach(c net.Conn) {
	s.mu.Lock()
	old := s.conn
	s.conn = c
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
	s.wg.Add(1)
	go s.readLoop(c)
}

func (s *Stream) current() net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

func (s *Stream) detach(c net.Conn) {
	s.mu.Lock()
	if s.conn == c {
		s.conn = nil
	}
	s.mu.Unlock()
	c.Close()
}

func (s *Stream) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.listener.Accept()
		if err != nil {
			if s.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if s.current() != nil { // one peer at a time, as QEMU
			c.Close()
			continue
		}
		s.attach(c)
	}
}

func (s *Stream) redialLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.redial)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		if s.current() != nil {
			continue
		}
		if c, err := net.DialTimeout(s.network, s.addr, s.redial); err == nil {
			s.attach(c)
		}
	}
}

// readLoop reads length-framed frames into the receive queue, waiting (the
// peer's back-pressure) while the queue is full.
func (s *Stream) readLoop(c net.Conn) {
	defer s.wg.Done()
	defer s.detach(c)
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > maxWireFrame {
			return // QEMU: oversized packet, the connection is dropped
		}
		f := s.rx.buf()[:n]
		if _, err := io.ReadFull(c, f); err != nil {
			s.rx.recycle(f)
			return
		}
		if n == 0 {
			s.rx.recycle(f)
			continue
		}
		for !s.rx.putKeep(f, 100*time.Millisecond) {
			if s.closed.Load() {
				s.rx.recycle(f)
				return
			}
		}
	}
}

func (s *Stream) writeLoop() {
	defer s.wg.Done()
	for {
		var f []byte
		select {
		case f = <-s.tx:
		case <-s.done:
			return
		}
		c := s.current()
		if c == nil {
			s.Dropped.Add(1)
			continue
		}
		if _, err := c.Write(f); err != nil {
			s.detach(c)
		}
	}
}

// Send implements Backend: queue the frame with its length prefix.
func (s *Stream) Send(frame []byte) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if len(frame) == 0 || len(frame) > maxWireFrame {
		return nil
	}
	if s.current() == nil {
		s.Dropped.Add(1)
		return nil
	}
	b := make([]byte, 4+len(frame))
	binary.BigEndian.PutUint32(b, uint32(len(frame)))
	copy(b[4:], frame)
	select {
	case s.tx <- b:
	default:
		s.Dropped.Add(1)
	}
	return nil
}

func (s *Stream) SetReceiver(f func([]byte) bool) { s.rx.setReceiver(f) }
func (s *Stream) RxReady()                        { s.rx.kick() }

// Offloads implements Offloader: frames up to QEMU's buffer size pass whole.
func (s *Stream) Offloads() Offloads { return Offloads{MaxFrame: maxWireFrame} }

func (s *Stream) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.done)
	if s.listener != nil {
		s.listener.Close()
	}
	if c := s.current(); c != nil {
		c.Close()
	}
	s.rx.close()
	s.wg.Wait()
	if s.listener != nil && s.network == "unix" {
		os.Remove(s.addr)
	}
	return nil
}

// fileConn turns an inherited descriptor into a connection.
func fileConn(a *args, key, v string) net.Conn {
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 0 {
		a.fail("Parameter '%s' expects a file descriptor number", key)
		return nil
	}
	// The backend owns the descriptor, as QEMU's fd=: FileConn dups it, and the
	// original is closed here rather than by a finalizer at an unknown time.
	f := os.NewFile(uintptr(fd), "netdev-fd")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		a.fail("Parameter '%s': descriptor %d is not a socket: %v", key, fd, err)
		return nil
	}
	return c
}

func hostPort(a *args, key, v string) string {
	h, p, err := net.SplitHostPort(v)
	if err != nil {
		a.fail("Parameter '%s' expects host:port, not '%s'", key, v)
		return ""
	}
	if _, err := strconv.ParseUint(p, 10, 16); err != nil {
		a.fail("Parameter '%s': port '%s' is not a number", key, p)
	}
	return net.JoinHostPort(h, p)
}

// openSocket handles the legacy -netdev socket: listen=, connect=, fd=, udp=.
func openSocket(a *args, o Options) (Backend, error) {
	listen, hasL := a.str("listen")
	connect, hasC := a.str("connect")
	fd, hasF := a.str("fd")
	udpAddr, hasU := a.str("udp")
	local, hasLocal := a.str("localaddr")
	if _, ok := a.str("mcast"); ok {
		a.fail("Parameter 'mcast': multicast sockets are not supported (use udp= with localaddr=)")
	}
	n := 0
	for _, b := range []bool{hasL, hasC, hasF, hasU} {
		if b {
			n++
		}
	}
	if a.err == nil && n != 1 {
		a.fail("exactly one of listen=, connect=, mcast= or udp= is required")
	}
	if hasU && !hasLocal && a.err == nil {
		a.fail("localaddr= is mandatory with udp=")
	}
	if a.err != nil {
		return nil, a.err
	}
	switch {
	case hasL:
		addr := hostPort(a, "listen", listen)
		if a.err != nil {
			return nil, a.err
		}
		return newStream("tcp", addr, true, 0, o.Notify)
	case hasC:
		addr := hostPort(a, "connect", connect)
		if a.err != nil {
			return nil, a.err
		}
		return newStream("tcp", addr, false, 0, o.Notify)
	case hasF:
		c := fileConn(a, "fd", fd)
		if a.err != nil {
			return nil, a.err
		}
		return streamOnConn(c), nil
	}
	ra := hostPort(a, "udp", udpAddr)
	la := hostPort(a, "localaddr", local)
	if a.err != nil {
		return nil, a.err
	}
	return newDgram("udp", la, ra)
}

// streamOnConn wraps an already connected stream (fd=).
func streamOnConn(c net.Conn) *Stream {
	s := &Stream{rx: newRxQueue(maxWireFrame), tx: make(chan []byte, txQueueLen), done: make(chan struct{})}
	s.attach(c)
	s.wg.Add(1)
	go s.writeLoop()
	return s
}

// sockAddr reads a QAPI SocketAddress flattened under prefix ("addr.", "local.").
func sockAddr(a *args, prefix string, need bool) (network, addr string, conn net.Conn, given bool) {
	typ, ok := a.str(prefix + "type")
	if !ok {
		if need {
			a.fail("Parameter '%stype' is missing", prefix)
		}
		return "", "", nil, false
	}
	switch typ {
	case "inet":
		h, _ := a.str(prefix + "host")
		p, ok := a.str(prefix + "port")
		if !ok {
			a.fail("Parameter '%sport' is missing", prefix)
			return
		}
		return "tcp", hostPort(a, prefix+"port", net.JoinHostPort(h, p)), nil, true
	case "unix":
		p, ok := a.str(prefix + "path")
		if !ok || p == "" {
			a.fail("Parameter '%spath' is missing", prefix)
			return
		}
		if a.bool(prefix+"abstract", false) {
			p = "@" + p
		}
		return "unix", p, nil, true
	case "fd":
		v, ok := a.str(prefix + "str")
		if !ok {
			a.fail("Parameter '%sstr' is missing", prefix)
			return
		}
		return "fd", "", fileConn(a, prefix+"str", v), true
	}
	a.fail("Parameter '%stype' expects inet, unix or fd, not '%s'", prefix, typ)
	return
}

// openStream handles -netdev stream,addr.type=inet|unix|fd,...,server=on|off.
func openStream(a *args, o Options) (Backend, error) {
	network, addr, conn, _ := sockAddr(a, "addr.", true)
	for _, k := range []string{"addr.numeric", "addr.to", "addr.ipv4", "addr.ipv6", "addr.keep-alive", "addr.mptcp", "addr.tight"} {
		a.str(k)
	}
	server := a.bool("server", false)
	var redial time.Duration
	if v, ok := a.str("reconnect-ms"); ok {
		ms, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			a.fail("Parameter 'reconnect-ms' expects a number")
		}
		redial = time.Duration(ms) * time.Millisecond
	} else {
		redial = time.Duration(a.uint("reconnect", 0, 1<<31)) * time.Second
	}
	if a.err != nil {
		return nil, a.err
	}
	if network == "fd" {
		return streamOnConn(conn), nil
	}
	if network == "unix" {
		network = "unix"
	}
	return newStream(network, addr, server, redial, o.Notify)
}

// Dgram is a backend sending each frame as one datagram to a fixed peer.
type Dgram struct {
	rx     *rxQueue
	c      *net.UDPConn
	uc     *net.UnixConn
	remote net.Addr
	path   string // a Unix socket file to remove on Close
	closed atomic.Bool
	wg     sync.WaitGroup
}

func newDgram(network, local, remote string) (*Dgram, error) {
	d := &Dgram{rx: newRxQueue(maxWireFrame)}
	switch network {
	case "udp":
		la, err := net.ResolveUDPAddr("udp", local)
		if err != nil {
			return nil, fmt.Errorf("netdev dgram: local address %s: %v", local, err)
		}
		ra, err := net.ResolveUDPAddr("udp", remote)
		if err != nil {
			return nil, fmt.Errorf("netdev dgram: remote address %s: %v", remote, err)
		}
		c, err := net.ListenUDP("udp", la)
		if err != nil {
			return nil, fmt.Errorf("netdev dgram: can't bind %s: %v", local, unwrapOp(err))
		}
		d.c, d.remote = c, ra
	case "unixgram":
		os.Remove(local)
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: local, Net: "unixgram"})
		if err != nil {
			return nil, fmt.Errorf("netdev dgram: can't bind %s: %v", local, unwrapOp(err))
		}
		d.uc, d.remote, d.path = c, &net.UnixAddr{Name: remote, Net: "unixgram"}, local
	}
	d.wg.Add(1)
	go d.readLoop()
	return d, nil
}

// LocalAddr returns the bound address.
func (d *Dgram) LocalAddr() net.Addr {
	if d.c != nil {
		return d.c.LocalAddr()
	}
	return d.uc.LocalAddr()
}

func (d *Dgram) readLoop() {
	defer d.wg.Done()
	for {
		f := d.rx.buf()[:maxWireFrame]
		var n int
		var err error
		if d.c != nil {
			n, err = d.c.Read(f)
		} else {
			n, err = d.uc.Read(f)
		}
		if err != nil {
			if d.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n > 0 {
			d.rx.put(f[:n], 10*time.Millisecond)
		}
	}
}

func (d *Dgram) Send(frame []byte) error {
	if d.closed.Load() {
		return ErrClosed
	}
	if len(frame) == 0 || len(frame) > maxWireFrame {
		return nil
	}
	if d.c != nil {
		d.c.WriteTo(frame, d.remote)
	} else {
		d.uc.WriteTo(frame, d.remote)
	}
	return nil
}

func (d *Dgram) SetReceiver(f func([]byte) bool) { d.rx.setReceiver(f) }
func (d *Dgram) RxReady()                        { d.rx.kick() }

func (d *Dgram) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	if d.c != nil {
		d.c.Close()
	} else {
		d.uc.Close()
	}
	d.rx.close()
	d.wg.Wait()
	if d.path != "" {
		os.Remove(d.path)
	}
	return nil
}

// openDgram handles -netdev dgram,local.type=inet|unix,...,remote.type=...
func openDgram(a *args, o Options) (Backend, error) {
	ln, la, _, _ := sockAddr(a, "local.", true)
	rn, ra, _, hasR := sockAddr(a, "remote.", false)
	if a.err != nil {
		return nil, a.err
	}
	if ln == "fd" || rn == "fd" {
		return nil, errors.New("Parameter 'local.type': fd is not supported for dgram")
	}
	if !hasR {
		return nil, errors.New("Parameter 'remote.type' is missing (a dgram netdev needs its peer)")
	}
	if ln != rn {
		return nil, errors.New("Parameter 'remote.type': local and remote must be the same type")
	}
	if ln == "tcp" {
		return newDgram("udp", la, ra)
	}
	return newDgram("unixgram", la, ra)
}

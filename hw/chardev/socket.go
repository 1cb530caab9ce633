package chardev

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// writeTimeout bounds how long a guest write waits for a peer that does not read
// (a stuck socket client, a full FIFO): after it the output is dropped, so a device
// writing from a vCPU is never held for long. QEMU instead stops the frontend until
// the peer drains; gemu's UARTs have no such back-pressure path.
const writeTimeout = 100 * time.Millisecond

// SocketConfig configures a socket backend, as QEMU's -chardev socket options.
type SocketConfig struct {
	Path       string // a Unix socket path; when empty, Host and Port give TCP
	Host, Port string // TCP; an empty Host means all addresses as a server, localhost as a client
	Network    string // "tcp", "tcp4" or "tcp6" (ipv4=on, ipv6=on); "" is "tcp"
	Server     bool   // listen and serve one client at a time
	Wait       bool   // as a server, NewSocket returns only once the first client connected
	NoDelay    bool   // TCP_NODELAY
	Reconnect  time.Duration
	// Notify, if set, receives QEMU's "waiting for connection" line before a waiting
	// server blocks.
	Notify func(msg string)
}

// Socket is a stream socket as a serial line. As a server it accepts one client at a
// time; when that client goes, the next connection is accepted (clients that connect
// meanwhile wait in the listen backlog). As a client it connects at creation and, with
// Reconnect, dials again that long after the connection is lost. Output while no peer
// is connected is discarded, as QEMU does.
type Socket struct {
	cfg SocketConfig
	ln  net.Listener

	mu        sync.Mutex
	conn      net.Conn
	recv      func(byte)
	closed    bool
	done      chan struct{}
	connected chan struct{} // closed at the first connection (Wait)
	connOnce  sync.Once
}

// NewSocket creates the socket backend: it listens (server) or connects (client).
func NewSocket(c SocketConfig) (*Socket, error) {
	s := &Socket{cfg: c, done: make(chan struct{}), connected: make(chan struct{})}
	network, addr := s.address()
	if c.Server {
		if c.Path != "" {
			// QEMU unlinks a stale socket before binding; only sockets are removed here.
			if st, err := os.Lstat(c.Path); err == nil && st.Mode()&os.ModeSocket != 0 {
				os.Remove(c.Path)
			}
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			return nil, fmt.Errorf("chardev socket: %w", err)
		}
		s.ln = ln
		go s.acceptLoop()
		if c.Wait {
			if c.Notify != nil {
				c.Notify(fmt.Sprintf("waiting for connection on: %s", s.describe()))
			}
			<-s.connected
		}
		return s, nil
	}
	conn, err := s.dial()
	if err != nil {
		if c.Reconnect <= 0 {
			return nil, fmt.Errorf("chardev socket: %w", err)
		}
		go s.redial()
		return s, nil
	}
	s.attach(conn)
	return s, nil
}

func (s *Socket) address() (network, addr string) {
	if s.cfg.Path != "" {
		return "unix", s.cfg.Path
	}
	network = s.cfg.Network
	if network == "" {
		network = "tcp"
	}
	host := s.cfg.Host
	if host == "" && !s.cfg.Server {
		host = "localhost"
	}
	return network, net.JoinHostPort(host, s.cfg.Port)
}

func (s *Socket) describe() string {
	if s.cfg.Path != "" {
		return "unix:" + s.cfg.Path + ",server=on"
	}
	return "tcp:" + s.ln.Addr().String() + ",server=on"
}

// Addr returns the listening address of a server (with the port the kernel chose for
// port=0), or nil for a client.
func (s *Socket) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Connected reports whether a peer is connected now.
func (s *Socket) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn != nil
}

func (s *Socket) dial() (net.Conn, error) {
	network, addr := s.address()
	return net.DialTimeout(network, addr, 10*time.Second)
}

func (s *Socket) acceptLoop() {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if s.isClosed() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: try again
			continue
		}
		if !s.attach(conn) {
			return
		}
		s.serve(conn) // one client at a time
	}
}

// attach makes conn the current peer; false if the backend was closed meanwhile.
func (s *Socket) attach(conn net.Conn) bool {
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(s.cfg.NoDelay)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return false
	}
	s.conn = conn
	s.mu.Unlock()
	s.connOnce.Do(func() { close(s.connected) })
	if s.ln == nil {
		go func() {
			s.serve(conn)
			if s.cfg.Reconnect > 0 {
				s.redial()
			}
		}()
	}
	return true
}

// serve feeds the peer's bytes to the receiver until it disconnects.
func (s *Socket) serve(conn net.Conn) {
	defer func() {
		s.mu.Lock()
		if s.conn == conn {
			s.conn = nil
		}
		s.mu.Unlock()
		conn.Close()
	}()
	// Read even before a receiver is registered (that input is dropped): a peer that
	// leaves must be noticed, or a server would never take the next client.
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		s.mu.Lock()
		recv := s.recv
		s.mu.Unlock()
		if recv != nil {
			for _, b := range buf[:n] {
				recv(b)
			}
		}
		if err != nil {
			return
		}
	}
}

// redial connects again every Reconnect interval until it succeeds or the backend closes.
func (s *Socket) redial() {
	for {
		select {
		case <-s.done:
			return
		case <-time.After(s.cfg.Reconnect):
		}
		if conn, err := s.dial(); err == nil {
			s.attach(conn)
			return
		}
	}
}

func (s *Socket) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Write sends guest output to the connected peer; without one it is discarded. A peer
// that does not read within writeTimeout loses the rest of p.
func (s *Socket) Write(p []byte) (int, error) {
	s.mu.Lock()
	conn, closed := s.conn, s.closed
	s.mu.Unlock()
	if closed {
		return 0, os.ErrClosed
	}
	if conn == nil {
		return len(p), nil
	}
	conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	n, err := conn.Write(p)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		conn.Close() // the serve loop sees the error and accepts or redials
	}
	return n, err
}

// SetReceiver registers the input consumer. Input that arrives before is dropped.
func (s *Socket) SetReceiver(f func(byte)) {
	s.mu.Lock()
	s.recv = f
	s.mu.Unlock()
}

// Close stops listening (a Unix socket path is removed), drops the peer and ends the
// backend's goroutines.
func (s *Socket) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conn := s.conn
	s.conn = nil
	close(s.done)
	s.mu.Unlock()
	var err error
	if s.ln != nil {
		err = s.ln.Close()
	}
	if conn != nil {
		conn.Close()
	}
	s.connOnce.Do(func() { close(s.connected) }) // a waiting NewSocket cannot be closed, but keep it tidy
	return err
}

var _ io.Writer = (*Socket)(nil)

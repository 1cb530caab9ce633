package vsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Unix-socket backend bounds.
const (
	maxHandshakes    = 64               // host connections still sending their CONNECT line
	handshakeTimeout = 10 * time.Second // for the CONNECT line
	maxConnectLine   = 32               // "CONNECT 4294967295\n" is 19 bytes
	dialTimeout      = 2 * time.Second
)

// Unix is Firecracker's hybrid-vsock host side: guest connections to host port P dial
// the Unix socket PATH_P; host processes connect to PATH, send "CONNECT <port>\n" and
// are connected to the guest's listener on that port, which they learn from the
// "OK <hostport>\n" line that precedes the stream (the connection is closed when the
// guest refuses). It outlives the machines that use it: a device takes it over with
// Attach (a guest reboot), and the socket stays listening meanwhile.
type Unix struct {
	path string
	ln   *net.UnixListener
	sem  chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	dev      *Device
	attached bool // a device has used it before the current one
}

// ListenUnix listens on path. A stale socket nobody accepts on (a killed emulator's)
// is replaced; a live one is an error.
func ListenUnix(path string) (*Unix, error) {
	addr := &net.UnixAddr{Name: path, Net: "unix"}
	ln, err := net.ListenUnix("unix", addr)
	if err != nil && errors.Is(err, syscall.EADDRINUSE) {
		if fi, e := os.Lstat(path); e == nil && fi.Mode()&os.ModeSocket != 0 {
			if c, e := net.DialTimeout("unix", path, time.Second); e == nil {
				c.Close()
				return nil, fmt.Errorf("uds-path %s: another process listens on it", path)
			}
			os.Remove(path)
			ln, err = net.ListenUnix("unix", addr)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("uds-path %s: %v", path, unwrapOp(err))
	}
	ln.SetUnlinkOnClose(true)
	u := &Unix{path: path, ln: ln, sem: make(chan struct{}, maxHandshakes)}
	u.wg.Add(1)
	go u.accept()
	return u, nil
}

func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// Path is the listening socket's path.
func (u *Unix) Path() string { return u.path }

// Dial connects to PATH_port (Backend).
func (u *Unix) Dial(port uint32) (Conn, error) {
	c, err := net.DialTimeout("unix", u.path+"_"+strconv.FormatUint(uint64(port), 10), dialTimeout)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}

// Attach makes d the device host connections go to. A device taking over from an
// earlier one (the machine was rebuilt) gets a transport reset for its guest.
func (u *Unix) Attach(d *Device) {
	u.mu.Lock()
	again := u.attached
	u.dev, u.attached = d, true
	u.mu.Unlock()
	if again {
		d.TransportReset()
	}
}

// Close stops listening and removes the socket.
func (u *Unix) Close() error {
	err := u.ln.Close()
	u.wg.Wait()
	return err
}

func (u *Unix) accept() {
	defer u.wg.Done()
	for {
		c, err := u.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: do not spin
			continue
		}
		select {
		case u.sem <- struct{}{}:
		default:
			c.Close() // too many connections still handshaking
			continue
		}
		go func() {
			defer func() { <-u.sem }()
			u.handshake(c)
		}()
	}
}

// handshake reads "CONNECT <port>\n" (byte by byte: what follows it is the stream's)
// and hands the connection to the device.
func (u *Unix) handshake(c *net.UnixConn) {
	c.SetReadDeadline(time.Now().Add(handshakeTimeout))
	var line []byte
	var b [1]byte
	for {
		n, err := c.Read(b[:])
		if err != nil || n == 0 {
			c.Close()
			return
		}
		if b[0] == '\n' {
			break
		}
		if line = append(line, b[0]); len(line) > maxConnectLine {
			c.Close()
			return
		}
	}
	port, ok := parseConnect(string(line))
	if !ok {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	u.mu.Lock()
	d := u.dev
	u.mu.Unlock()
	if d == nil {
		c.Close()
		return
	}
	if err := d.Connect(c, port, func(hp uint32) []byte { return fmt.Appendf(nil, "OK %d\n", hp) }); err != nil {
		d.logf("vsock: host connection to guest port %d refused: %v", port, err)
		c.Close()
	}
}

// parseConnect reads "CONNECT <decimal port>" (a trailing CR tolerated).
func parseConnect(s string) (uint32, bool) {
	s = strings.TrimSuffix(s, "\r")
	p, ok := strings.CutPrefix(s, "CONNECT ")
	if !ok || p == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(p, 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(n), true
}

package netdev

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// frameSink collects the frames a backend delivers.
type frameSink chan []byte

func (s frameSink) recv(f []byte) bool {
	select {
	case s <- append([]byte(nil), f...):
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}

func (s frameSink) wait(t *testing.T) []byte {
	t.Helper()
	select {
	case f := <-s:
		return f
	case <-time.After(10 * time.Second):
		t.Fatal("no frame arrived")
		return nil
	}
}

// testFrames are Ethernet frames of varied sizes, up to a 64 KiB TSO frame.
func testFrames() [][]byte {
	var fs [][]byte
	for i, n := range []int{60, 61, 1514, 9014, 65535 + 14} {
		fs = append(fs, pattern(n, int64(100+i)))
	}
	return fs
}

// exchange passes frames both ways between two connected backends, checking each
// arrives whole and in order.
func exchange(t *testing.T, a, b Backend) {
	t.Helper()
	sa, sb := make(frameSink, 16), make(frameSink, 16)
	a.SetReceiver(sa.recv)
	b.SetReceiver(sb.recv)
	for _, f := range testFrames() {
		if err := a.Send(f); err != nil {
			t.Fatal(err)
		}
		if got := sb.wait(t); !bytes.Equal(got, f) {
			t.Fatalf("a→b: frame of %d bytes arrived as %d bytes", len(f), len(got))
		}
		if err := b.Send(f); err != nil {
			t.Fatal(err)
		}
		if got := sa.wait(t); !bytes.Equal(got, f) {
			t.Fatalf("b→a: frame of %d bytes arrived as %d bytes", len(f), len(got))
		}
	}
	// A burst keeps order and boundaries.
	for i := 0; i < 200; i++ {
		a.Send(pattern(64+i, int64(i)))
	}
	for i := 0; i < 200; i++ {
		if got := sb.wait(t); !bytes.Equal(got, pattern(64+i, int64(i))) {
			t.Fatalf("burst frame %d: %d bytes, want %d", i, len(got), 64+i)
		}
	}
}

// waitPeer waits until a server backend has its peer (Send drops frames before).
func waitPeer(t *testing.T, b Backend) {
	s := b.(*Stream)
	for i := 0; i < 500 && s.current() == nil; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if s.current() == nil {
		t.Fatal("server never got its peer")
	}
}

func TestSocketListenConnect(t *testing.T) {
	port := freePort(t, "tcp")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var notes []string
	srv, err := OpenWith("socket", getter("listen", addr), Options{Notify: func(m string) { notes = append(notes, m) }})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := Open("socket", getter("connect", addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	waitPeer(t, srv)
	exchange(t, srv, cli)
	if len(notes) != 1 || !strings.Contains(notes[0], addr) {
		t.Errorf("server notices %q", notes)
	}
}

func TestStreamUnix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "net.sock")
	srv, err := Open("stream", getter("addr.type", "unix", "addr.path", path, "server", "on"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := Open("stream", getter("addr.type", "unix", "addr.path", path, "server", "off"))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	waitPeer(t, srv)
	exchange(t, srv, cli)
}

func TestStreamInetReconnect(t *testing.T) {
	port := freePort(t, "tcp")
	p := fmt.Sprint(port)
	srv, err := Open("stream", getter("addr.type", "inet", "addr.host", "127.0.0.1", "addr.port", p, "server", "on"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := Open("stream", getter("addr.type", "inet", "addr.host", "127.0.0.1", "addr.port", p, "reconnect-ms", "50"))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	waitPeer(t, srv)
	exchange(t, srv, cli)
	// The server drops its peer; the client dials again and frames flow.
	srv.(*Stream).current().Close()
	for i := 0; i < 200; i++ {
		time.Sleep(20 * time.Millisecond)
		if c := srv.(*Stream).current(); c != nil && cli.(*Stream).current() != nil {
			break
		}
	}
	exchange(t, srv, cli)
}

// TestStreamWire checks the wire format against QEMU's: a 4-byte big-endian length,
// then the frame; a length over QEMU's 69632-byte buffer ends the connection.
func TestStreamWire(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	be, err := Open("socket", getter("connect", ln.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	sink := make(frameSink, 4)
	be.SetReceiver(sink.recv)
	f := pattern(1514, 9)
	be.Send(f)
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil || binary.BigEndian.Uint32(hdr[:]) != 1514 {
		t.Fatalf("length prefix %x: %v", hdr, err)
	}
	got := make([]byte, 1514)
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, f) {
		t.Fatalf("frame on the wire: %v", err)
	}
	// Two frames in one write, split at odd places, arrive as two frames.
	var w []byte
	for _, n := range []int{100, 200} {
		w = binary.BigEndian.AppendUint32(w, uint32(n))
		w = append(w, pattern(n, int64(n))...)
	}
	c.Write(w[:3])
	time.Sleep(10 * time.Millisecond)
	c.Write(w[3:150])
	time.Sleep(10 * time.Millisecond)
	c.Write(w[150:])
	for _, n := range []int{100, 200} {
		if got := sink.wait(t); !bytes.Equal(got, pattern(n, int64(n))) {
			t.Fatalf("frame of %d bytes arrived as %d", n, len(got))
		}
	}
	// An oversized length drops the connection.
	c.Write(binary.BigEndian.AppendUint32(nil, 1<<20))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after an oversized length: read %v, want EOF", err)
	}
}

func TestDgramUDP(t *testing.T) {
	pa, pb := freePort(t, "udp"), freePort(t, "udp")
	la, lb := fmt.Sprintf("127.0.0.1:%d", pa), fmt.Sprintf("127.0.0.1:%d", pb)
	a, err := Open("socket", getter("udp", lb, "localaddr", la))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open("dgram", getter("local.type", "inet", "local.host", "127.0.0.1", "local.port", fmt.Sprint(pb),
		"remote.type", "inet", "remote.host", "127.0.0.1", "remote.port", fmt.Sprint(pa)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sa, sb := make(frameSink, 4), make(frameSink, 4)
	a.SetReceiver(sa.recv)
	b.SetReceiver(sb.recv)
	for _, n := range []int{60, 1514, 9014} {
		f := pattern(n, int64(n))
		a.Send(f)
		if got := sb.wait(t); !bytes.Equal(got, f) {
			t.Fatalf("a→b %d bytes: got %d", n, len(got))
		}
		b.Send(f)
		if got := sa.wait(t); !bytes.Equal(got, f) {
			t.Fatalf("b→a %d bytes: got %d", n, len(got))
		}
	}
}

// TestStreamHeldFrames: a receiver that refuses frames gets them again after
// RxReady, in order, none lost.
func TestStreamHeldFrames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.sock")
	srv, err := Open("stream", getter("addr.type", "unix", "addr.path", path, "server", "on"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := Open("stream", getter("addr.type", "unix", "addr.path", path))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	waitPeer(t, srv)
	var room = make(chan struct{}, 1)
	got := make(chan []byte, 100)
	cli.SetReceiver(func(f []byte) bool {
		select {
		case <-room:
			got <- append([]byte(nil), f...)
			return true
		default:
			return false
		}
	})
	for i := 0; i < 50; i++ {
		srv.Send(pattern(100, int64(i)))
	}
	for i := 0; i < 50; i++ {
		room <- struct{}{}
		cli.RxReady()
		select {
		case f := <-got:
			if !bytes.Equal(f, pattern(100, int64(i))) {
				t.Fatalf("frame %d out of order", i)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("frame %d never delivered", i)
		}
	}
}

// TestSocketFD: fd= takes an inherited connected stream socket.
func TestSocketFD(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	other := os.NewFile(uintptr(fds[1]), "peer")
	defer other.Close()
	be, err := Open("socket", getter("fd", fmt.Sprint(fds[0])))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	sink := make(frameSink, 2)
	be.SetReceiver(sink.recv)
	f := pattern(1000, 11)
	other.Write(append(binary.BigEndian.AppendUint32(nil, 1000), f...))
	if got := sink.wait(t); !bytes.Equal(got, f) {
		t.Fatalf("frame over fd= arrived as %d bytes", len(got))
	}
	be.Send(f)
	other.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1004)
	if _, err := io.ReadFull(other, buf); err != nil || binary.BigEndian.Uint32(buf) != 1000 || !bytes.Equal(buf[4:], f) {
		t.Fatalf("frame out over fd=: %v", err)
	}
	if _, err := Open("socket", getter("fd", "987654")); err == nil || !strings.Contains(err.Error(), "Parameter 'fd'") {
		t.Errorf("bad fd: %v", err)
	}
}

func TestDgramUnix(t *testing.T) {
	dir := t.TempDir()
	pa, pb := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	a, err := Open("dgram", getter("local.type", "unix", "local.path", pa, "remote.type", "unix", "remote.path", pb))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open("dgram", getter("local.type", "unix", "local.path", pb, "remote.type", "unix", "remote.path", pa))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sa, sb := make(frameSink, 4), make(frameSink, 4)
	a.SetReceiver(sa.recv)
	b.SetReceiver(sb.recv)
	for _, n := range []int{60, 1514, 9014} {
		f := pattern(n, int64(n))
		a.Send(f)
		if got := sb.wait(t); !bytes.Equal(got, f) {
			t.Fatalf("a→b %d bytes: got %d", n, len(got))
		}
		b.Send(f)
		if got := sa.wait(t); !bytes.Equal(got, f) {
			t.Fatalf("b→a %d bytes: got %d", n, len(got))
		}
	}
}

package chardev

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// opts turns a map into OpenOpts' getter.
func opts(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// readN reads exactly n bytes from c, failing the test after a few seconds.
func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading %d bytes: %v (got %q)", n, err, b)
	}
	return string(b)
}

// writeUntilSeen writes msg from the guest side until the peer has it: the backend
// attaches an accepted client asynchronously, and output before that is discarded.
func writeUntilSeen(t *testing.T, be Backend, c net.Conn, msg string) {
	t.Helper()
	for i := 0; i < 500; i++ {
		be.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		b := make([]byte, len(msg))
		n, _ := io.ReadFull(c, b)
		if n > 0 {
			if string(b[:n]) != msg[:n] {
				t.Fatalf("peer read %q, want %q", b[:n], msg)
			}
			if n < len(msg) {
				readN(t, c, len(msg)-n)
			}
			return
		}
	}
	t.Fatalf("peer never saw %q", msg)
}

func TestSocketUnixServer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.sock")
	be, err := OpenOpts("socket", opts(map[string]string{"path": path, "server": "on", "wait": "off"}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	var got collector
	be.SetReceiver(got.add)
	if n, err := be.Write([]byte("nobody listens")); n != 14 || err != nil {
		t.Fatalf("write without a client: %d, %v (want it discarded)", n, err)
	}

	c1, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	writeUntilSeen(t, be, c1, "hello 1\n")
	c1.Write([]byte("in1"))
	waitFor(t, "input from client 1", func() bool { return string(got.bytes()) == "in1" })

	// A second client waits while the first is served, then takes over.
	c2, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	be.Write([]byte("only 1"))
	if s := readN(t, c1, 6); s != "only 1" {
		t.Fatalf("client 1 read %q", s)
	}
	c2.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, _ := c2.Read(make([]byte, 16)); n != 0 {
		t.Fatal("second client served while the first is connected")
	}
	c1.Close()
	writeUntilSeen(t, be, c2, "hello 2\n")
	c2.Write([]byte("in2"))
	waitFor(t, "input from client 2", func() bool { return string(got.bytes()) == "in1in2" })
	c2.Close()

	if err := be.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket path left behind after Close: %v", err)
	}
	if _, err := be.Write([]byte("late")); err == nil {
		t.Error("write after Close succeeded")
	}
}

func TestSocketWaitAndStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wait.sock")
	// A stale socket file from an earlier run is replaced, as QEMU does.
	fd, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	notes := make(chan string, 1)
	opened := make(chan Backend, 1)
	go func() {
		be, err := OpenOpts("socket", opts(map[string]string{"path": path, "server": "on"}), Options{Notify: func(s string) { notes <- s }})
		if err != nil {
			t.Error(err)
		}
		opened <- be
	}()
	select {
	case n := <-notes:
		if n != "waiting for connection on: unix:"+path+",server=on" {
			t.Errorf("notice %q", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no waiting notice")
	}
	select {
	case <-opened:
		t.Fatal("wait=on returned before a client connected")
	case <-time.After(50 * time.Millisecond):
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var be Backend
	select {
	case be = <-opened:
	case <-time.After(5 * time.Second):
		t.Fatal("wait=on did not return after the client connected")
	}
	defer be.Close()
	be.Write([]byte("first")) // connected before OpenOpts returned: nothing is lost
	if s := readN(t, c, 5); s != "first" {
		t.Fatalf("read %q", s)
	}
}

func TestSocketTCPServerAndStuckClient(t *testing.T) {
	be, err := OpenOpts("socket", opts(map[string]string{"host": "127.0.0.1", "port": "0", "server": "on", "wait": "off", "nodelay": "on"}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	addr := be.(*Socket).Addr().String()
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("listening on %s", addr)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	writeUntilSeen(t, be, c, "tcp ok")
	// The client stops reading: the guest's writes must still return promptly.
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	deadline := time.Now().Add(20 * time.Second)
	for {
		start := time.Now()
		_, err := be.Write(chunk)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("a write to a stuck client took %v", d)
		}
		if err != nil {
			break // the socket buffers filled and the write timed out: output dropped
		}
		if time.Now().After(deadline) {
			t.Fatal("socket buffers never filled")
		}
	}
	if !be.(*Socket).Connected() {
		t.Error("a slow client was dropped; only its output should be")
	}
}

func TestSocketTCPClientReconnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	be, err := OpenOpts("socket", opts(map[string]string{"host": "127.0.0.1", "port": port, "reconnect": "1"}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	var got collector
	be.SetReceiver(got.add)
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	be.Write([]byte("to server"))
	if s := readN(t, c, 9); s != "to server" {
		t.Fatalf("server read %q", s)
	}
	c.Write([]byte("ab"))
	waitFor(t, "input from the server", func() bool { return string(got.bytes()) == "ab" })
	c.Close()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c2, err := ln.Accept()
	if err != nil {
		t.Fatalf("client did not reconnect: %v", err)
	}
	defer c2.Close()
	writeUntilSeen(t, be, c2, "again")

	// Without reconnect, a refused connection is an error at open.
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := strconv.Itoa(ln2.Addr().(*net.TCPAddr).Port)
	ln2.Close()
	if _, err := OpenOpts("socket", opts(map[string]string{"host": "127.0.0.1", "port": dead}), Options{}); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("connect to a closed port: %v", err)
	}
}

func TestPipe(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "guest")
	for _, s := range []string{".in", ".out"} {
		if err := unix.Mkfifo(base+s, 0o600); err != nil {
			t.Skipf("mkfifo: %v", err)
		}
	}
	be, err := OpenOpts("pipe", opts(map[string]string{"path": base}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	var got collector
	be.SetReceiver(got.add)
	out, err := os.OpenFile(base+".out", os.O_RDONLY, 0) // does not block: the backend holds the FIFO open
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := be.Write([]byte("from guest")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 10)
	out.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(out, b); err != nil || string(b) != "from guest" {
		t.Fatalf("out pipe: %q %v", b, err)
	}
	in, err := os.OpenFile(base+".in", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	in.Write([]byte("to guest"))
	in.Close() // the writer going away is not the end of input
	waitFor(t, "pipe input", func() bool { return string(got.bytes()) == "to guest" })
	in, _ = os.OpenFile(base+".in", os.O_WRONLY, 0)
	in.Write([]byte("!"))
	in.Close()
	waitFor(t, "input from a second writer", func() bool { return string(got.bytes()) == "to guest!" })

	// A full pipe nobody drains loses output instead of blocking the guest.
	out.Close()
	for i := 0; ; i++ {
		start := time.Now()
		_, err := be.Write(bytes.Repeat([]byte("y"), 16<<10))
		if time.Since(start) > 2*time.Second {
			t.Fatal("write to a full pipe blocked")
		}
		if err != nil {
			break
		}
		if i > 1000 {
			t.Fatal("pipe never filled")
		}
	}

	// Without PATH.in/PATH.out, PATH itself serves both ways.
	single := filepath.Join(dir, "single")
	os.WriteFile(single, []byte("typed"), 0o644)
	be2, err := OpenOpts("pipe", opts(map[string]string{"path": single}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got2 collector
	be2.SetReceiver(got2.add)
	waitFor(t, "input from the single file", func() bool { return string(got2.bytes()) == "typed" })
	be2.Close()
	if _, err := OpenOpts("pipe", opts(map[string]string{"path": filepath.Join(dir, "none")}), Options{}); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing pipe: %v", err)
	}
}

func TestOpenOpts(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	os.WriteFile(log, []byte("old\n"), 0o644)
	be, err := OpenOpts("file", opts(map[string]string{"path": log, "append": "on"}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	be.Write([]byte("new\n"))
	be.Close()
	if b, _ := os.ReadFile(log); string(b) != "old\nnew\n" {
		t.Errorf("append=on: %q", b)
	}
	be, _ = OpenOpts("file", opts(map[string]string{"path": log}), Options{})
	be.Write([]byte("x"))
	be.Close()
	if b, _ := os.ReadFile(log); string(b) != "x" {
		t.Errorf("append=off: %q", b)
	}
	if be, err := OpenOpts("null", opts(nil), Options{}); err != nil || be == nil {
		t.Errorf("null: %v", err)
	}
	for _, c := range []struct {
		typ  string
		keys map[string]string
		want string
	}{
		{"file", nil, "Parameter 'path' is missing"},
		{"file", map[string]string{"path": log, "append": "perhaps"}, "Parameter 'append' expects 'on' or 'off'"},
		{"pipe", map[string]string{"path": ""}, "Parameter 'path' is missing"},
		{"socket", nil, "Parameter 'path' or 'port' is missing"},
		{"socket", map[string]string{"path": "/x", "port": "1"}, "exclude each other"},
		{"socket", map[string]string{"port": "http"}, "invalid port 'http'"},
		{"socket", map[string]string{"port": "99999"}, "invalid port '99999'"},
		{"socket", map[string]string{"path": "/x", "telnet": "on"}, "telnet=on is not supported"},
		{"socket", map[string]string{"path": "/x", "server": "on", "reconnect": "1"}, "reconnect= is for clients"},
		{"socket", map[string]string{"path": "/x", "reconnect": "-1"}, "Parameter 'reconnect'"},
		{"socket", map[string]string{"path": filepath.Join(dir, "nobody.sock")}, "no such file"},
		{"stdio", map[string]string{"signal": "on"}, "signal=on is not supported"},
		{"pty", nil, "backend 'pty' is not supported"},
	} {
		_, err := OpenOpts(c.typ, opts(c.keys), Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "chardev") || strings.Contains(err.Error(), "\n") {
			t.Errorf("OpenOpts(%s, %v) = %v; want %q", c.typ, c.keys, err, c.want)
		}
	}
	if k, err := Keys("socket"); err != nil || len(k) == 0 || k[0] != "path" {
		t.Errorf("Keys(socket) = %v, %v", k, err)
	}
	if _, err := Keys("vc"); err == nil {
		t.Error("Keys(vc) accepted")
	}
}

// TestSocketServerOutputOnly: a device that never registers a receiver still gets the
// next client after the first one leaves.
func TestSocketServerOutputOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.sock")
	be, err := NewSocket(SocketConfig{Path: path, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	for i := range 3 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("ignored input"))
		writeUntilSeen(t, be, c, "client "+strconv.Itoa(i))
		c.Close()
	}
}

package chardev

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY returns a pseudo-terminal pair: the master (the "user's keyboard and screen")
// and the slave (what gemu sees as its stdin/stdout).
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

type collector struct {
	mu  sync.Mutex
	got []byte
}

func (c *collector) add(b byte) { c.mu.Lock(); c.got = append(c.got, b); c.mu.Unlock() }
func (c *collector) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.got...)
}

// waitFor polls until cond holds; a stuck backend fails the test instead of hanging it.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestStdioRawModeEscapesAndRestore(t *testing.T) {
	master, slave := openPTY(t)
	before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if before.Lflag&unix.ECHO == 0 || before.Lflag&unix.ICANON == 0 {
		t.Fatalf("fresh pty is not cooked: lflag %#x", before.Lflag)
	}
	quit := make(chan struct{})
	s, err := NewStdio(slave, slave, func() { close(quit) })
	if err != nil {
		t.Fatal(err)
	}
	if !s.IsTTY() {
		t.Fatal("pty not detected as a terminal")
	}
	raw, _ := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if raw.Lflag&(unix.ECHO|unix.ICANON|unix.ISIG) != 0 || raw.Iflag&(unix.ICRNL|unix.IXON) != 0 {
		t.Fatalf("terminal not raw: lflag %#x iflag %#x", raw.Lflag, raw.Iflag)
	}
	var c collector
	s.SetReceiver(c.add)

	// Ctrl-C must reach the guest (no SIGINT), Ctrl-A Ctrl-A sends one Ctrl-A,
	// Ctrl-A h prints help and is not forwarded, CR is not translated.
	if _, err := master.Write([]byte("a\x03\r\x01\x01b\x01hz")); err != nil {
		t.Fatal(err)
	}
	want := []byte("a\x03\r\x01bz")
	waitFor(t, "input bytes", func() bool { return len(c.bytes()) >= len(want) })
	if got := c.bytes(); !bytes.Equal(got, want) {
		t.Fatalf("guest received %q, want %q", got, want)
	}
	var screen []byte
	buf := make([]byte, 1024)
	waitFor(t, "help text", func() bool {
		master.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		n, _ := master.Read(buf)
		screen = append(screen, buf[:n]...)
		return bytes.Contains(screen, []byte("C-a x    exit emulator"))
	})
	if bytes.Contains(screen, []byte("a\x03")) {
		t.Fatalf("input was echoed in raw mode: %q", screen)
	}

	if _, err := master.Write([]byte("\x01x")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-quit:
	case <-time.After(5 * time.Second):
		t.Fatal("Ctrl-A x did not call OnQuit")
	}
	waitFor(t, "terminated message", func() bool {
		master.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		n, _ := master.Read(buf)
		screen = append(screen, buf[:n]...)
		return bytes.Contains(screen, []byte("gemu: terminated"))
	})
	if got := c.bytes(); bytes.IndexByte(got, 'x') >= 0 {
		t.Fatalf("escape key leaked to the guest: %q", got)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	after, _ := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if after.Lflag != before.Lflag || after.Iflag != before.Iflag || after.Oflag != before.Oflag || after.Cflag != before.Cflag {
		t.Fatalf("terminal not restored: before %+v after %+v", before, after)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestStdioNotATerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStdio(r, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.IsTTY() {
		t.Fatal("pipe reported as a TTY")
	}
	var c collector
	s.SetReceiver(c.add)
	w.Write([]byte("hi\x01\x01"))
	w.Close()
	waitFor(t, "piped input", func() bool { return len(c.bytes()) == 3 })
	if got := string(c.bytes()); got != "hi\x01" {
		t.Fatalf("got %q", got)
	}
	s.Write([]byte("guest says\n"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(out.Name())
	if string(data) != "guest says\n" {
		t.Fatalf("output %q", data)
	}
}

func TestOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	os.WriteFile(path, []byte("old contents that must be truncated"), 0o644)
	be, err := Open("file:"+path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	be.SetReceiver(func(byte) { t.Error("file backend produced input") })
	be.Write([]byte("boot\r\n"))
	if err := be.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := be.Write([]byte("late")); err == nil {
		t.Fatal("write after close succeeded")
	}
	if data, _ := os.ReadFile(path); string(data) != "boot\r\n" {
		t.Fatalf("file holds %q", data)
	}
	if be, err := Open("null", Options{}); err != nil {
		t.Fatal(err)
	} else if n, err := be.Write([]byte("xyz")); n != 3 || err != nil {
		t.Fatalf("null write: %d %v", n, err)
	}
	for _, bad := range []string{"tcp:localhost:4444", "file:", "pty", ""} {
		if _, err := Open(bad, Options{}); err == nil || !strings.Contains(err.Error(), "chardev") {
			t.Errorf("Open(%q) = %v, want a chardev error", bad, err)
		}
	}
	if _, err := Open("file:/nonexistent-dir/x", Options{}); err == nil {
		t.Error("file in a missing directory accepted")
	}
}

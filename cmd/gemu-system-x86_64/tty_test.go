package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTerminalRestored runs gemu on a pseudo-terminal: the terminal is raw while the
// guest runs (Ctrl-C reaches the guest instead of killing gemu) and cooked again after
// Ctrl-A x ends it.
func TestTerminalRestored(t *testing.T) {
	needKVM(t)
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	defer m.Close()
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
	defer s.Close()
	before, _ := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)

	img := filepath.Join(t.TempDir(), "g")
	os.WriteFile(img, guestImage(cat(comOut, putc('W'), haltLoop)), 0o644)
	cmd := exec.Command(binPath, "-m", "64", "-nographic", "-kernel", img)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s, s, s
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var screen []byte
	buf := make([]byte, 256)
	deadline := time.Now().Add(30 * time.Second)
	for !bytes.Contains(screen, []byte("W")) && time.Now().Before(deadline) {
		m.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		k, _ := m.Read(buf)
		screen = append(screen, buf[:k]...)
	}
	raw, _ := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if raw.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 {
		t.Errorf("terminal not raw while the guest runs: lflag %#x", raw.Lflag)
	}
	m.Write([]byte{0x03, 0x01, 'x'}) // Ctrl-C (to the guest), then Ctrl-A x
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("gemu exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("Ctrl-A x did not end gemu")
	}
	after, _ := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if after.Lflag != before.Lflag || after.Iflag != before.Iflag {
		t.Errorf("terminal not restored: lflag %#x → %#x, iflag %#x → %#x", before.Lflag, after.Lflag, before.Iflag, after.Iflag)
	}
}

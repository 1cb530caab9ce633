package chardev

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// EscapeChar is the QEMU escape prefix on a stdio console: Ctrl-A.
const EscapeChar = 0x01

// escapeHelp lists the escapes this backend implements (QEMU's wording, gemu's subset).
const escapeHelp = "\r\n" +
	"C-a h    print this help\r\n" +
	"C-a x    exit emulator\r\n" +
	"C-a C-a  sends C-a\r\n"

// Stdio is the host terminal as a serial line. When its input is a TTY the terminal is
// put in raw mode (no echo, no line editing, no signals from Ctrl-C/Ctrl-Z, so those
// keys reach the guest) and restored by Close. Ctrl-A starts a QEMU-style escape.
type Stdio struct {
	in, out *os.File
	onQuit  func()

	mu      sync.Mutex
	saved   *unix.Termios // terminal state to restore; nil when input is not a TTY
	recv    func(byte)
	started bool
	escape  bool
}

// NewStdio wraps in and out. If in is a terminal it is switched to raw mode now, so a
// caller must Close the backend on every exit path.
func NewStdio(in, out *os.File, onQuit func()) (*Stdio, error) {
	s := &Stdio{in: in, out: out, onQuit: onQuit}
	if t, err := unix.IoctlGetTermios(int(in.Fd()), unix.TCGETS); err == nil {
		saved := *t
		raw := *t
		// The same flags QEMU's stdio backend changes: keep output processing
		// (the guest's "\n" still returns the carriage), drop everything that
		// interprets input.
		raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		raw.Oflag |= unix.OPOST
		raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.IEXTEN | unix.ISIG
		raw.Cflag &^= unix.CSIZE | unix.PARENB
		raw.Cflag |= unix.CS8
		raw.Cc[unix.VMIN] = 1
		raw.Cc[unix.VTIME] = 0
		if err := unix.IoctlSetTermios(int(in.Fd()), unix.TCSETS, &raw); err != nil {
			return nil, fmt.Errorf("chardev stdio: cannot set raw mode: %w", err)
		}
		s.saved = &saved
	}
	return s, nil
}

// IsTTY reports whether the input is a terminal (and so was put in raw mode).
func (s *Stdio) IsTTY() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saved != nil
}

func (s *Stdio) Write(p []byte) (int, error) { return s.out.Write(p) }

// SetReceiver registers the input consumer and starts the goroutine reading the host
// input; it is started only once, by the first call.
func (s *Stdio) SetReceiver(f func(byte)) {
	s.mu.Lock()
	s.recv = f
	start := !s.started
	s.started = true
	s.mu.Unlock()
	if start {
		go s.readLoop()
	}
}

func (s *Stdio) readLoop() {
	buf := make([]byte, 256)
	for {
		n, err := s.in.Read(buf)
		for _, b := range buf[:n] {
			s.input(b)
		}
		if err != nil {
			// EOF (stdin closed or redirected from a finished file) or a closed
			// descriptor: no more input, the guest keeps running.
			return
		}
	}
}

// input runs one host byte through the escape state machine.
func (s *Stdio) input(b byte) {
	s.mu.Lock()
	recv := s.recv
	if s.escape {
		s.escape = false
		s.mu.Unlock()
		switch b {
		case 'x', 'X':
			s.out.Write([]byte("\r\ngemu: terminated\r\n"))
			if s.onQuit != nil {
				s.onQuit()
			}
		case 'h', 'H', '?':
			s.out.Write([]byte(escapeHelp))
		case EscapeChar:
			if recv != nil {
				recv(b)
			}
		}
		// Any other key after Ctrl-A is swallowed, as in QEMU.
		return
	}
	if b == EscapeChar {
		s.escape = true
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	if recv != nil {
		recv(b)
	}
}

// Close restores the terminal state saved by NewStdio. It is safe to call more than
// once and from a signal-handling goroutine. The host's stdin and stdout stay open.
func (s *Stdio) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saved == nil {
		return nil
	}
	err := unix.IoctlSetTermios(int(s.in.Fd()), unix.TCSETS, s.saved)
	s.saved = nil
	if err != nil {
		return fmt.Errorf("chardev stdio: cannot restore terminal: %w", err)
	}
	return nil
}

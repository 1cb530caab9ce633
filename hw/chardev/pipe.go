package chardev

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Pipe is QEMU's pipe backend: input from PATH.in and output to PATH.out (named
// pipes, usually), or both through PATH when those two do not exist. The files are
// opened read-write, so opening a FIFO never waits for the other end (Linux
// semantics) and the peer may come and go.
type Pipe struct {
	in, out *os.File

	mu      sync.Mutex
	recv    func(byte)
	started bool
	closed  bool
}

// NewPipe opens path.in and path.out, or path for both.
func NewPipe(path string) (*Pipe, error) {
	if path == "" {
		return nil, errors.New("chardev pipe: empty path")
	}
	in, errIn := os.OpenFile(path+".in", os.O_RDWR, 0)
	out, errOut := os.OpenFile(path+".out", os.O_RDWR, 0)
	if errIn == nil && errOut == nil {
		return &Pipe{in: in, out: out}, nil
	}
	if in != nil {
		in.Close()
	}
	if out != nil {
		out.Close()
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("chardev pipe: %s.in and %s.out: %v; %s: %w", path, path, firstErr(errIn, errOut), path, errors.Unwrap(err))
	}
	return &Pipe{in: f, out: f}, nil
}

func firstErr(a, b error) error {
	if a != nil {
		var pe *os.PathError
		if errors.As(a, &pe) {
			return pe.Err
		}
		return a
	}
	var pe *os.PathError
	if errors.As(b, &pe) {
		return pe.Err
	}
	return b
}

// Write sends guest output to the out pipe; a pipe nobody drains loses output after
// writeTimeout instead of holding the guest.
func (p *Pipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return 0, os.ErrClosed
	}
	p.out.SetWriteDeadline(time.Now().Add(writeTimeout)) // no deadline on a regular file: it never blocks
	return p.out.Write(b)
}

// SetReceiver registers the input consumer and starts reading the in pipe.
func (p *Pipe) SetReceiver(f func(byte)) {
	p.mu.Lock()
	p.recv = f
	start := !p.started && f != nil
	if start {
		p.started = true
	}
	p.mu.Unlock()
	if start {
		go p.readLoop()
	}
}

func (p *Pipe) readLoop() {
	buf := make([]byte, 4096)
	for {
		n, err := p.in.Read(buf)
		p.mu.Lock()
		recv := p.recv
		p.mu.Unlock()
		if recv != nil {
			for _, b := range buf[:n] {
				recv(b)
			}
		}
		if err != nil {
			// A regular file at EOF, or the backend closed. (A FIFO we hold open
			// read-write never reports EOF: writers may come later.)
			return
		}
	}
}

// Close closes the pipes; the read goroutine ends.
func (p *Pipe) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	err := p.in.Close()
	if p.out != p.in {
		if e := p.out.Close(); err == nil {
			err = e
		}
	}
	return err
}

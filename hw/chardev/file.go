package chardev

import (
	"fmt"
	"os"
	"sync"
)

// File writes guest output to a host file (created or truncated, as QEMU's file:
// backend does) and never produces input.
type File struct {
	mu sync.Mutex
	f  *os.File
}

// NewFile creates or truncates path.
func NewFile(path string) (*File, error) { return openFile(path, os.O_TRUNC) }

// NewFileAppend creates path or appends to it (QEMU's file backend with append=on).
func NewFileAppend(path string) (*File, error) { return openFile(path, os.O_APPEND) }

func openFile(path string, mode int) (*File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|mode, 0o644)
	if err != nil {
		return nil, fmt.Errorf("chardev file: %w", err)
	}
	return &File{f: f}, nil
}

func (f *File) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return 0, os.ErrClosed
	}
	return f.f.Write(p)
}

// SetReceiver does nothing: a file backend has no input.
func (f *File) SetReceiver(func(byte)) {}

func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return nil
	}
	err := f.f.Close()
	f.f = nil
	return err
}

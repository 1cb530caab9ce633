package chardev

import (
	"fmt"
	"os"
	"strings"
)

// Options configures backends created by Open.
type Options struct {
	// OnQuit is called (from the stdio input goroutine) when the user types the Ctrl-A x
	// escape. The caller stops the guest and exits; nil disables the escape's effect.
	OnQuit func()
	// Stdin and Stdout default to os.Stdin and os.Stdout; tests substitute a pty.
	Stdin, Stdout *os.File
}

// Open creates the backend named by a QEMU -serial style spec: "stdio", "file:PATH"
// or "null". The error names the spec and is fit for a one-line message.
func Open(spec string, o Options) (Backend, error) {
	switch {
	case spec == "null" || spec == "none":
		return Null{}, nil
	case spec == "stdio":
		in, out := o.Stdin, o.Stdout
		if in == nil {
			in = os.Stdin
		}
		if out == nil {
			out = os.Stdout
		}
		return NewStdio(in, out, o.OnQuit)
	case strings.HasPrefix(spec, "file:"):
		path := strings.TrimPrefix(spec, "file:")
		if path == "" {
			return nil, fmt.Errorf("chardev %q: empty file name", spec)
		}
		return NewFile(path)
	}
	return nil, fmt.Errorf("chardev %q: unsupported backend (want stdio, file:PATH or null)", spec)
}

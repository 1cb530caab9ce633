// Package chardev owns host-side character backends for emulated serial ports and
// consoles: stdio (raw terminal, QEMU's Ctrl-A escape keys), file, pipe (PATH.in and
// PATH.out FIFOs), socket (Unix or TCP, server or client), null; Open takes a -serial
// style spec, OpenOpts the keys of a parsed -chardev option. A device
// (8250, PL011, virtio-console) writes guest output to a Backend and receives host input
// through the callback it registers.
//
// It must not know about any device model or accelerator.
package chardev

// Backend is the host end of a serial line.
type Backend interface {
	// Write sends guest output to the host. It must not block for long.
	Write(p []byte) (int, error)
	// SetReceiver registers the function that receives host input bytes, one at a time,
	// from the backend's own goroutine. The device buffers and raises its interrupt.
	SetReceiver(func(b byte))
	Close() error
}

// Null discards output and never produces input.
type Null struct{}

func (Null) Write(p []byte) (int, error) { return len(p), nil }
func (Null) SetReceiver(func(byte))      {}
func (Null) Close() error                { return nil }

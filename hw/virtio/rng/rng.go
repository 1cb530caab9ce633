// Package rng owns the virtio entropy device (virtio 1.2 section 5.4): one request
// queue whose device-writable buffers it fills from the host's random source
// (crypto/rand: getrandom(2) on Linux).
//
// It must not know the transport that carries it.
package rng

import (
	"crypto/rand"
	"io"
	"sync"

	"gemu/hw/virtio"
)

// maxChunk bounds the bytes produced per request (the driver asks again for more), so
// a guest offering a huge buffer cannot make the worker spend unbounded time.
const maxChunk = 64 << 10

// Device is a virtio-rng device (virtio.Device).
type Device struct {
	src io.Reader

	mu   sync.Mutex
	stop chan struct{}
	wg   sync.WaitGroup
}

// New returns an entropy device reading the host's cryptographic random source.
func New() *Device { return &Device{src: rand.Reader} }

// NewWithSource returns an entropy device reading src (tests; rng-builtin variants).
func NewWithSource(src io.Reader) *Device { return &Device{src: src} }

func (d *Device) DeviceID() uint16              { return virtio.IDEntropy }
func (d *Device) Features() uint64              { return 0 }
func (d *Device) QueueMax() []uint16            { return []uint16{256} }
func (d *Device) ReadConfig(_ uint64, b []byte) { clear(b) }
func (d *Device) WriteConfig(uint64, []byte)    {}

// Activate starts the worker.
func (d *Device) Activate(a virtio.Activation) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	q := a.Queues[0]
	if q == nil {
		return nil
	}
	stop := make(chan struct{})
	d.stop = stop
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		for {
			for {
				c, err := q.Pop()
				if err != nil || c == nil {
					break
				}
				q.Push(c, d.fill(c.In))
				q.Signal()
				select {
				case <-stop:
					return
				default:
				}
			}
			select {
			case <-q.Kicked():
			case <-stop:
				return
			}
		}
	}()
	return nil
}

// fill writes random bytes into the buffers, at most maxChunk, and returns the count.
func (d *Device) fill(in virtio.Buffers) uint32 {
	var n uint32
	for _, s := range in {
		b := s.B
		if rem := maxChunk - int(n); len(b) > rem {
			b = b[:rem]
		}
		k, _ := io.ReadFull(d.src, b)
		n += uint32(k)
		if k < len(s.B) {
			break
		}
	}
	return n
}

// Reset stops the worker and waits for it.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stop != nil {
		close(d.stop)
		d.wg.Wait()
		d.stop = nil
	}
}

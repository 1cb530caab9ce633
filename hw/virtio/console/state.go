package console

import (
	"encoding/binary"
	"errors"
	"fmt"

	"gemu/hw/bus"
)

// StateVersion is the "virtio-console" section: u32 port-number count, then per port
// number u8 present, u8 guest-open, u32 length and the host input not yet delivered;
// u32 count of control messages queued for the driver, each u32 length and bytes.
// The backends (chardevs) are the destination's own.
const StateVersion = 1

// restoredState is what LoadState read, applied by the next Activate.
type restoredState struct {
	open    []bool
	ctrlOut [][]byte
}

// SaveState implements bus.Stateful; the transport has quiesced the queues.
func (d *Device) SaveState() (bus.State, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	le := binary.LittleEndian
	b := le.AppendUint32(nil, uint32(len(d.ports)))
	for _, p := range d.ports {
		if p == nil {
			b = append(b, 0, 0)
			b = le.AppendUint32(b, 0)
			continue
		}
		open := byte(0)
		if p.guestOpen {
			open = 1
		}
		b = append(b, 1, open)
		b = le.AppendUint32(b, uint32(len(p.input)))
		b = append(b, p.input...)
	}
	b = le.AppendUint32(b, uint32(len(d.ctrlOut)))
	for _, m := range d.ctrlOut {
		b = le.AppendUint32(b, uint32(len(m)))
		b = append(b, m...)
	}
	return bus.State{Name: "virtio-console", Version: StateVersion, Data: b}, nil
}

var errTruncated = errors.New("virtio-console: state truncated")

func take(b []byte, n uint64) ([]byte, []byte, error) {
	if uint64(len(b)) < n {
		return nil, nil, errTruncated
	}
	return b[:n], b[n:], nil
}

// LoadState implements bus.Stateful, on a reset device with the same ports.
func (d *Device) LoadState(s bus.State) error {
	if s.Name != "virtio-console" || s.Version != StateVersion {
		return fmt.Errorf("virtio-console: cannot load state %q version %d", s.Name, s.Version)
	}
	le := binary.LittleEndian
	b := s.Data
	h, b, err := take(b, 4)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if int64(le.Uint32(h)) != int64(len(d.ports)) {
		return fmt.Errorf("virtio-console: the state has %d port numbers, the device %d", le.Uint32(h), len(d.ports))
	}
	r := &restoredState{open: make([]bool, len(d.ports))}
	inputs := make([][]byte, len(d.ports))
	for i, p := range d.ports {
		if h, b, err = take(b, 6); err != nil {
			return err
		}
		if (h[0] != 0) != (p != nil) || h[0] > 1 || h[1] > 1 {
			return fmt.Errorf("virtio-console: port %d differs from the saved device", i)
		}
		n := uint64(le.Uint32(h[2:]))
		if n > inputLimit || p == nil && n != 0 {
			return fmt.Errorf("virtio-console: port %d: %d bytes of input out of range", i, n)
		}
		if inputs[i], b, err = take(b, n); err != nil {
			return err
		}
		r.open[i] = h[1] != 0
	}
	if h, b, err = take(b, 4); err != nil {
		return err
	}
	nc := uint64(le.Uint32(h))
	if nc > ctrlBacklog {
		return fmt.Errorf("virtio-console: %d control messages out of range", nc)
	}
	for range nc {
		if h, b, err = take(b, 4); err != nil {
			return err
		}
		var m []byte
		if m, b, err = take(b, uint64(le.Uint32(h))); err != nil {
			return err
		}
		r.ctrlOut = append(r.ctrlOut, append([]byte(nil), m...))
	}
	if len(b) != 0 {
		return errors.New("virtio-console: state has trailing bytes")
	}
	for i, p := range d.ports {
		if p != nil {
			p.input = append([]byte(nil), inputs[i]...)
			if len(p.input) == 0 {
				p.input = nil
			}
		}
	}
	d.restored = r
	return nil
}

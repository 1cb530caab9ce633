package blk

import (
	"encoding/binary"
	"fmt"

	"gemu/hw/bus"
)

// StateVersion is the "virtio-blk" section: the disk's size in bytes (u64), so a
// destination with another image refuses the state. Requests in flight are not saved:
// the transport drains them (virtio.Transport.Quiesce) before the save, and SaveState
// flushes the backend so the image file holds every completed write when another
// process opens it by the same path (the destination's -drive). Two processes sharing
// one image at the same time (live migration over a socket with the destination
// started first) is not supported for formats with cached metadata.
const StateVersion = 1

// SaveState implements bus.Stateful: it flushes the backend.
func (d *Device) SaveState() (bus.State, error) {
	if !d.c.Backend.ReadOnly() {
		if err := d.c.Backend.Flush(); err != nil {
			return bus.State{}, fmt.Errorf("virtio-blk: flush before the save: %v", err)
		}
	}
	return bus.State{Name: "virtio-blk", Version: StateVersion,
		Data: binary.LittleEndian.AppendUint64(nil, uint64(d.c.Backend.Size()))}, nil
}

// LoadState implements bus.Stateful.
func (d *Device) LoadState(s bus.State) error {
	if s.Name != "virtio-blk" || s.Version != StateVersion || len(s.Data) != 8 {
		return fmt.Errorf("virtio-blk: cannot load state %q version %d", s.Name, s.Version)
	}
	if n := binary.LittleEndian.Uint64(s.Data); n != uint64(d.c.Backend.Size()) {
		return fmt.Errorf("virtio-blk: the saved disk has %d bytes, this one %d", n, d.c.Backend.Size())
	}
	return nil
}

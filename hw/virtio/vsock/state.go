package vsock

import (
	"encoding/binary"
	"fmt"

	"gemu/hw/bus"
)

// StateVersion is the "virtio-vsock" section: the guest CID (u64). Connections are
// not migrated (their host ends are this process's sockets): a restored device drops
// none of its own, and sends the guest VIRTIO_VSOCK_EVENT_TRANSPORT_RESET once the
// driver's event queue has a buffer, so the guest resets its sockets, as QEMU's
// vhost-vsock does after a migration.
const StateVersion = 1

// HoldsBuffers implements virtio.BufferHolder: the receive queue keeps one buffer
// for the next packet.
func (d *Device) HoldsBuffers(queue int) bool { return queue == 0 }

// SaveState implements bus.Stateful.
func (d *Device) SaveState() (bus.State, error) {
	return bus.State{Name: "virtio-vsock", Version: StateVersion, Data: binary.LittleEndian.AppendUint64(nil, d.cid)}, nil
}

// LoadState implements bus.Stateful, on a reset device.
func (d *Device) LoadState(s bus.State) error {
	if s.Name != "virtio-vsock" || s.Version != StateVersion || len(s.Data) != 8 {
		return fmt.Errorf("virtio-vsock: cannot load state %q version %d", s.Name, s.Version)
	}
	if cid := binary.LittleEndian.Uint64(s.Data); cid != d.cid {
		return fmt.Errorf("virtio-vsock: the saved device has guest-cid %d, this one %d", cid, d.cid)
	}
	d.mu.Lock()
	d.dropAllLocked()
	d.resetEvent = true
	d.mu.Unlock()
	return nil
}

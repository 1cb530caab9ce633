package pc

import "time"

// What internal snapshots (savevm/loadvm: the VM state kept in a qcow2 image) need
// from the board beyond Save and Load; as machine/virt's.

// GuestTime is the guest clock under accel/tcg (QEMU's QEMU_CLOCK_VIRTUAL): a
// snapshot records it as its VM CLOCK. Zero under KVM, whose state is not saved.
func (m *Machine) GuestTime() time.Duration {
	if m.tcg == nil {
		return 0
	}
	return m.tcg.eng.GuestTime()
}

// QuiesceDevices drains every virtio device's requests in flight and holds their
// queues until the returned function (or a Save or Load) lets them go: loadvm reverts
// the disks while nothing the old guest asked for can still reach them.
func (m *Machine) QuiesceDevices() (func(), error) { return m.quiesceVirtio() }

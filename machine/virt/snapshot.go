package virt

import "time"

// What internal snapshots (savevm/loadvm: the VM state kept in a qcow2 image) need
// from the board beyond Save and Load.

// GuestTime is the guest clock (QEMU's QEMU_CLOCK_VIRTUAL): a snapshot records it
// as its VM CLOCK.
func (m *Machine) GuestTime() time.Duration { return m.engine.GuestTime() }

// QuiesceDevices drains every virtio device's requests in flight and keeps their
// queues from taking new ones until the returned function (or a Save or Load, which
// quiesce and thaw themselves) lets them go: loadvm reverts the disks while nothing
// the old guest asked for can still reach them.
func (m *Machine) QuiesceDevices() (func(), error) { return m.quiesceVirtio() }

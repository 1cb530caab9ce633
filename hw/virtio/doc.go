// Package virtio owns the transport-independent half of virtio 1.2 devices: split
// virtqueues (descriptor table, available and used rings, with VIRTIO_F_INDIRECT_DESC and
// VIRTIO_F_EVENT_IDX), feature negotiation (VIRTIO_F_VERSION_1 only: no legacy devices),
// the device status state machine, the configuration generation counter, and the Device
// interface every virtio device model implements.
//
// The Transport type holds the state every transport shares (feature select windows,
// device status, queue select, per-queue size/ready/addresses, notifications); the
// transports in hw/virtio/mmio (and hw/virtio/pci, later) only map their registers onto
// it and implement Interrupt. Device models live in their own packages (hw/virtio/blk,
// rng, console, net, vsock) and see only Device, Activation, Queue and Chain.
//
// Packed virtqueues (VIRTIO_F_RING_PACKED) are not implemented: the feature is never
// offered, so drivers use split rings.
//
// Every value the guest controls is checked before use: queue sizes (a power of two, at
// most the device's maximum), ring addresses (aligned, inside one RAM slot), head and
// next indices, descriptor chains (no loops, no longer than the queue size, readable
// before writable, at most one indirect table, not nested, a multiple of 16 bytes long,
// of at most max(queue size, MaxIndirect) entries), buffers (inside one RAM slot,
// address + length not wrapping), the available index (never more than the queue size
// ahead of the device). A queue that breaks one of these rules is broken: the device
// stops using it and the transport sets DEVICE_NEEDS_RESET and sends a configuration
// change notification, as the spec asks (2.1.2) and QEMU's virtio_error does. No guest
// value panics, hangs or sizes an allocation beyond those bounds.
//
// Guest memory is reached zero-copy through Memory (hw/memory's *RAM satisfies it);
// after writing guest memory the device calls Memory.Written so the memory layer marks
// the pages dirty and drops translated code.
//
// It must not know which transport (MMIO or PCI) carries a device, nor about block
// formats, host character devices or accelerators.
package virtio

// Package mmio owns the virtio-mmio transport, version 2 (the virtio 1.x register
// layout, spec 4.2.2) as QEMU's virt board exposes it: a 0x200-byte register window per
// slot, magic "virt", vendor "QEMU", device ID 0 for an empty slot, one interrupt line
// that is asserted while InterruptStatus is non-zero (QEMU's virtio_mmio_update_irq;
// the device tree QEMU generates declares it edge rising, which a level that rises on
// the first pending bit also satisfies). The legacy (version 1) layout is not provided.
//
// It maps registers onto virtio.Transport and implements virtio.Interrupt; it must not
// know what the device behind it does.
package mmio

import (
	"encoding/binary"
	"sync"

	"gemu/hw/bus"
	"gemu/hw/virtio"
)

// Size is the size of one virtio-mmio register window.
const Size = 0x200

// Register offsets (spec 4.2.2).
const (
	RegMagic             = 0x000
	RegVersion           = 0x004
	RegDeviceID          = 0x008
	RegVendorID          = 0x00c
	RegDeviceFeatures    = 0x010
	RegDeviceFeaturesSel = 0x014
	RegDriverFeatures    = 0x020
	RegDriverFeaturesSel = 0x024
	RegQueueSel          = 0x030
	RegQueueNumMax       = 0x034
	RegQueueNum          = 0x038
	RegQueueReady        = 0x044
	RegQueueNotify       = 0x050
	RegInterruptStatus   = 0x060
	RegInterruptACK      = 0x064
	RegStatus            = 0x070
	RegQueueDescLow      = 0x080
	RegQueueDescHigh     = 0x084
	RegQueueDriverLow    = 0x090
	RegQueueDriverHigh   = 0x094
	RegQueueDeviceLow    = 0x0a0
	RegQueueDeviceHigh   = 0x0a4
	RegSHMSel            = 0x0ac
	RegSHMLenLow         = 0x0b0
	RegSHMLenHigh        = 0x0b4
	RegSHMBaseLow        = 0x0b8
	RegSHMBaseHigh       = 0x0bc
	RegQueueReset        = 0x0c0
	RegConfigGeneration  = 0x0fc
	RegConfig            = 0x100
)

const (
	Magic  = 0x74726976 // "virt"
	Vendor = 0x554d4551 // "QEMU", as QEMU reports
)

// InterruptStatus bits.
const (
	IntUsedBuffer = 1
	IntConfig     = 2
)

// Device is one virtio-mmio slot, a bus.Device. The zero value is not usable; use New.
type Device struct {
	t   *virtio.Transport // nil for an empty slot
	irq bus.IRQ

	mu  sync.Mutex // InterruptStatus and the line
	isr uint32
}

// New returns a transport for dev over guest memory mem raising irq. dev nil makes an
// empty slot (device ID 0) that a driver probes and skips.
func New(dev virtio.Device, mem virtio.Memory, irq bus.IRQ) *Device {
	if irq == nil {
		irq = bus.NoIRQ
	}
	d := &Device{irq: irq}
	if dev != nil {
		d.t = virtio.NewTransport(dev, mem, d)
	}
	return d
}

// Transport is the common virtio state behind the registers (nil for an empty slot).
func (d *Device) Transport() *virtio.Transport { return d.t }

// Used implements virtio.Interrupt.
func (d *Device) Used(int) { d.raise(IntUsedBuffer) }

// ConfigChanged implements virtio.Interrupt.
func (d *Device) ConfigChanged() { d.raise(IntConfig) }

func (d *Device) raise(bit uint32) {
	d.mu.Lock()
	d.isr |= bit
	d.irq.Set(true)
	d.mu.Unlock()
}

func (d *Device) ack(bits uint32) {
	d.mu.Lock()
	d.isr &^= bits
	d.irq.Set(d.isr != 0)
	d.mu.Unlock()
}

// InterruptStatus is the pending interrupt bits.
func (d *Device) InterruptStatus() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.isr
}

// Reset is a machine reset (bus.Resetter): the device stops and the line drops.
func (d *Device) Reset() {
	if d.t != nil {
		d.t.Reset()
	}
	d.ack(^uint32(0))
}

// Read implements bus.Device.
func (d *Device) Read(_ bus.Access, off uint64, data []byte) {
	clear(data)
	if off >= RegConfig {
		if d.t != nil {
			d.t.ReadConfig(off-RegConfig, data)
		}
		return
	}
	if len(data) != 4 || off%4 != 0 {
		return // registers are 32-bit only (spec 4.2.2.2)
	}
	binary.LittleEndian.PutUint32(data, d.reg(off))
}

func (d *Device) reg(off uint64) uint32 {
	switch off {
	case RegMagic:
		return Magic
	case RegVersion:
		return 2
	case RegVendorID:
		return Vendor
	case RegSHMLenLow, RegSHMLenHigh:
		return 0xffffffff // no shared memory regions: length -1
	}
	t := d.t
	if t == nil {
		return 0
	}
	switch off {
	case RegDeviceID:
		return uint32(t.Device().DeviceID())
	case RegDeviceFeatures:
		return t.DeviceFeatureWindow()
	case RegQueueNumMax:
		return uint32(t.QueueMax())
	case RegQueueReady:
		if t.Queue().Ready {
			return 1
		}
	case RegInterruptStatus:
		return d.InterruptStatus()
	case RegStatus:
		return uint32(t.Status())
	case RegConfigGeneration:
		return t.ConfigGeneration()
	}
	// Write-only, reserved and unimplemented registers read as zero; so do the queue
	// addresses and QueueNum (write-only in the spec).
	return 0
}

// Write implements bus.Device.
func (d *Device) Write(_ bus.Access, off uint64, data []byte) {
	t := d.t
	if t == nil {
		return
	}
	if off >= RegConfig {
		t.WriteConfig(off-RegConfig, data)
		return
	}
	if len(data) != 4 || off%4 != 0 {
		return
	}
	v := binary.LittleEndian.Uint32(data)
	lo := func(a *uint64) { *a = *a&^0xffffffff | uint64(v) }
	hi := func(a *uint64) { *a = *a&0xffffffff | uint64(v)<<32 }
	switch off {
	case RegDeviceFeaturesSel:
		t.SetDeviceFeatureSel(v)
	case RegDriverFeatures:
		t.SetDriverFeatureWindow(v)
	case RegDriverFeaturesSel:
		t.SetDriverFeatureSel(v)
	case RegQueueSel:
		t.SetQueueSel(v)
	case RegQueueNum:
		t.UpdateQueue(func(q *virtio.QueueConfig) {
			if v <= 0xffff {
				q.Size = uint16(v)
			} else {
				q.Size = 0 // refused at activation
			}
		})
	case RegQueueReady:
		t.UpdateQueue(func(q *virtio.QueueConfig) { q.Ready = v&1 != 0 })
	case RegQueueNotify:
		t.Notify(v & 0xffff) // the upper half is notification data (not offered)
	case RegInterruptACK:
		d.ack(v)
	case RegStatus:
		t.SetStatus(uint8(v))
		if v == 0 {
			d.ack(^uint32(0))
		}
	case RegQueueDescLow:
		t.UpdateQueue(func(q *virtio.QueueConfig) { lo(&q.Desc) })
	case RegQueueDescHigh:
		t.UpdateQueue(func(q *virtio.QueueConfig) { hi(&q.Desc) })
	case RegQueueDriverLow:
		t.UpdateQueue(func(q *virtio.QueueConfig) { lo(&q.Driver) })
	case RegQueueDriverHigh:
		t.UpdateQueue(func(q *virtio.QueueConfig) { hi(&q.Driver) })
	case RegQueueDeviceLow:
		t.UpdateQueue(func(q *virtio.QueueConfig) { lo(&q.Device) })
	case RegQueueDeviceHigh:
		t.UpdateQueue(func(q *virtio.QueueConfig) { hi(&q.Device) })
	}
}

package mmio

import (
	"encoding/binary"
	"errors"
	"fmt"

	"gemu/hw/bus"
)

// StateVersion is the "virtio-mmio" section: u32 InterruptStatus, then the
// transport's core state with the device's section nested (virtio.Transport.SaveState).
const StateVersion = 1

// SaveState implements bus.Stateful for a slot with a device; the device must be
// quiesced (virtio.Transport.Quiesce).
func (d *Device) SaveState() (bus.State, error) {
	if d.t == nil {
		return bus.State{}, errors.New("virtio-mmio: empty slot has no state")
	}
	ts, err := d.t.SaveState()
	if err != nil {
		return bus.State{}, err
	}
	d.mu.Lock()
	b := binary.LittleEndian.AppendUint32(nil, d.isr)
	d.mu.Unlock()
	return bus.State{Name: "virtio-mmio", Version: StateVersion, Data: append(b, ts...)}, nil
}

// LoadState implements bus.Stateful.
func (d *Device) LoadState(s bus.State) error {
	if s.Name != "virtio-mmio" || s.Version != StateVersion {
		return fmt.Errorf("virtio-mmio: cannot load state %q version %d", s.Name, s.Version)
	}
	if d.t == nil {
		return errors.New("virtio-mmio: empty slot has no state")
	}
	if len(s.Data) < 4 {
		return errors.New("virtio-mmio: state truncated")
	}
	isr := binary.LittleEndian.Uint32(s.Data)
	if isr&^(IntUsedBuffer|IntConfig) != 0 {
		return fmt.Errorf("virtio-mmio: interrupt status %#x has undefined bits", isr)
	}
	if err := d.t.LoadState(s.Data[4:]); err != nil {
		return err
	}
	d.mu.Lock()
	d.isr = isr
	d.irq.Set(isr != 0)
	d.mu.Unlock()
	return nil
}

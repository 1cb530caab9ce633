package rng

import (
	"fmt"

	"gemu/hw/bus"
)

// StateVersion is the "virtio-rng" section, empty: the device keeps no state between
// requests (the transport drains those in flight before a save).
const StateVersion = 1

// SaveState implements bus.Stateful.
func (d *Device) SaveState() (bus.State, error) {
	return bus.State{Name: "virtio-rng", Version: StateVersion}, nil
}

// LoadState implements bus.Stateful.
func (d *Device) LoadState(s bus.State) error {
	if s.Name != "virtio-rng" || s.Version != StateVersion || len(s.Data) != 0 {
		return fmt.Errorf("virtio-rng: cannot load state %q version %d", s.Name, s.Version)
	}
	return nil
}

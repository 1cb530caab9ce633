package ioapic

import (
	"fmt"

	"gemu/hw/bus"
	"gemu/hw/internal/statecodec"
)

const stateName, stateVersion = "ioapic", 1

var _ bus.Stateful = (*IOAPIC)(nil)

// SaveState implements bus.Stateful: id, IOREGSEL, the 24 entries, request and
// input-level bitmaps.
func (io *IOAPIC) SaveState() (bus.State, error) {
	io.mu.Lock()
	defer io.mu.Unlock()
	var e statecodec.Enc
	e.U8(io.id)
	e.U32(io.sel)
	for _, r := range io.redir {
		e.U64(r)
	}
	e.U32(io.irr)
	e.U32(io.level)
	return bus.State{Name: stateName, Version: stateVersion, Data: e.B}, nil
}

// LoadState implements bus.Stateful.
func (io *IOAPIC) LoadState(s bus.State) error {
	if s.Name != stateName || s.Version != stateVersion {
		return fmt.Errorf("ioapic: cannot load state %q version %d", s.Name, s.Version)
	}
	d := statecodec.Dec{B: s.Data}
	var n IOAPIC
	n.id, n.sel = d.U8(), d.U32()
	for i := range n.redir {
		n.redir[i] = d.U64()
	}
	n.irr, n.level = d.U32(), d.U32()
	if err := d.Err(); err != nil {
		return fmt.Errorf("ioapic: %w", err)
	}
	io.mu.Lock()
	defer io.mu.Unlock()
	io.id, io.sel, io.redir, io.irr, io.level = n.id, n.sel, n.redir, n.irr, n.level
	return nil
}

package i8042

import (
	"fmt"

	"gemu/hw/bus"
	"gemu/hw/internal/statecodec"
)

var _ bus.Stateful = (*I8042)(nil)

// stateVersion is the version of the controller's saved state: the configuration
// byte, status, the command awaiting its data byte, the output port, the keyboard
// command awaiting its argument, then the output queue (a statecodec byte queue). The
// IRQ 1 level is not saved: LoadState drives it.
const stateVersion = 1

// maxOut bounds a restored output queue (the guest fills it a few bytes per command).
const maxOut = 4096

// SaveState implements bus.Stateful.
func (c *I8042) SaveState() (bus.State, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var e statecodec.Enc
	for _, v := range []byte{c.ctr, c.status, c.pending, c.outPort, c.kbdCmd} {
		e.U8(v)
	}
	e.Bytes(c.out)
	return bus.State{Name: "i8042", Version: stateVersion, Data: e.B}, nil
}

// LoadState implements bus.Stateful; on error the controller is unchanged.
func (c *I8042) LoadState(s bus.State) error {
	if s.Name != "i8042" || s.Version != stateVersion {
		return fmt.Errorf("i8042: cannot load state %q version %d", s.Name, s.Version)
	}
	d := statecodec.Dec{B: s.Data}
	var r [5]byte
	for i := range r {
		r[i] = d.U8()
	}
	out := d.Bytes(maxOut)
	if err := d.Err(); err != nil {
		return fmt.Errorf("i8042: %v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ctr, c.status, c.pending, c.outPort, c.kbdCmd = r[0], r[1], r[2], r[3], r[4]
	c.out = out
	c.updateIRQLocked()
	return nil
}

package i8259

import (
	"fmt"

	"gemu/hw/bus"
	"gemu/hw/internal/statecodec"
)

const stateName, stateVersion = "i8259", 1

// SaveState saves both chips and the INTR level (the pair's state; the board saves it
// once, through the master's Chip or the PIC).
func (p *PIC) SaveState() (bus.State, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var e statecodec.Enc
	for _, c := range p.c {
		for _, v := range []uint8{c.lastIRR, c.irr, c.imr, c.isr, c.priorityAdd, c.irqBase, uint8(c.initState), c.elcr} {
			e.U8(v)
		}
		for _, b := range []bool{c.readISR, c.poll, c.specialMask, c.autoEOI, c.rotateAEOI, c.sfnm, c.init4, c.single} {
			e.Bool(b)
		}
	}
	e.Bool(p.intr)
	return bus.State{Name: stateName, Version: stateVersion, Data: e.B}, nil
}

// LoadState restores what SaveState saved; INTR is driven to the saved level.
func (p *PIC) LoadState(s bus.State) error {
	if s.Name != stateName || s.Version != stateVersion {
		return fmt.Errorf("i8259: cannot load state %q version %d", s.Name, s.Version)
	}
	d := statecodec.Dec{B: s.Data}
	var cs [2]chip
	for i := range cs {
		c := &cs[i]
		c.lastIRR, c.irr, c.imr, c.isr = d.U8(), d.U8(), d.U8(), d.U8()
		c.priorityAdd, c.irqBase, c.initState, c.elcr = d.U8(), d.U8(), int(d.U8()), d.U8()
		c.readISR, c.poll, c.specialMask, c.autoEOI = d.Bool(), d.Bool(), d.Bool(), d.Bool()
		c.rotateAEOI, c.sfnm, c.init4, c.single = d.Bool(), d.Bool(), d.Bool(), d.Bool()
		if c.initState > 3 {
			return fmt.Errorf("i8259: bad initialization state %d", c.initState)
		}
	}
	intr := d.Bool()
	if err := d.Err(); err != nil {
		return fmt.Errorf("i8259: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cs[0].master, cs[0].elcrMask, cs[1].elcrMask = true, 0xf8, 0xde
	cs[0].elcr &= 0xf8
	cs[1].elcr &= 0xde
	p.c = cs
	p.intr = intr
	p.out.Set(intr)
	return nil
}

// SaveState of the master's window saves the pair; the slave's saves nothing (so a
// walk of the bus saves the pair once).
func (c *Chip) SaveState() (bus.State, error) {
	if c.i != 0 {
		return bus.State{Name: stateName + "-slave", Version: stateVersion}, nil
	}
	return c.p.SaveState()
}

// LoadState is SaveState's counterpart.
func (c *Chip) LoadState(s bus.State) error {
	if c.i != 0 {
		if s.Name != stateName+"-slave" || len(s.Data) != 0 {
			return fmt.Errorf("i8259: cannot load state %q into the slave's window", s.Name)
		}
		return nil
	}
	return c.p.LoadState(s)
}

package intc

import (
	"fmt"

	"gemu/hw/bus"
	"gemu/hw/internal/statecodec"
)

// gicStateVersion is the version of the GIC's saved state: version flag and CPU
// count, GICD_CTLR, every interrupt (SPIs, then each CPU's SGIs and PPIs) as enabled,
// latched, level, edge, active, group, priority, targets, route, SGI sources, then each
// CPU interface's control, priority mask, binary points, group enables, active
// priority stack and ProcessorSleep. The CPU output lines are not saved: LoadState
// drives them from the restored state.
const gicStateVersion = 1

func (q *irq) save(e *statecodec.Enc) {
	e.Bool(q.enabled)
	e.Bool(q.latched)
	e.Bool(q.level)
	e.Bool(q.edge)
	e.Bool(q.active)
	e.U8(q.group)
	e.U8(q.prio)
	e.U8(q.targets)
	e.U64(q.route)
	e.U8(q.sgiSrc)
}

func (q *irq) load(d *statecodec.Dec) {
	q.enabled = d.Bool()
	q.latched = d.Bool()
	q.level = d.Bool()
	q.edge = d.Bool()
	q.active = d.Bool()
	q.group = d.U8() & 1
	q.prio = d.U8() & priMask
	q.targets = d.U8()
	q.route = d.U64()
	q.sgiSrc = d.U8()
}

// SaveState implements bus.Stateful (GICv2 and GICv3 alike; the v2m frame has no
// state of its own).
func (g *GIC) SaveState() (bus.State, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var e statecodec.Enc
	e.Bool(g.v3)
	e.U32(uint32(g.ncpu))
	e.U32(g.ctlr)
	for i := range g.spi {
		g.spi[i].save(&e)
	}
	for c := range g.priv {
		for i := range g.priv[c] {
			g.priv[c][i].save(&e)
		}
	}
	for c := range g.cpu {
		ci := &g.cpu[c]
		e.U32(ci.ctlr)
		e.U8(ci.pmr)
		e.U8(ci.bpr0)
		e.U8(ci.bpr1)
		e.Bool(ci.grpen[0])
		e.Bool(ci.grpen[1])
		e.Bool(ci.sleeping)
		e.U32(uint32(len(ci.active)))
		for _, p := range ci.active {
			e.U8(p)
		}
	}
	return bus.State{Name: "gic", Version: gicStateVersion, Data: e.B}, nil
}

// LoadState implements bus.Stateful. State from a GIC of another version or CPU count
// is refused; on any error the GIC is unchanged.
func (g *GIC) LoadState(s bus.State) error {
	if s.Name != "gic" || s.Version != gicStateVersion {
		return fmt.Errorf("gic: cannot load state %q version %d", s.Name, s.Version)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	d := statecodec.Dec{B: s.Data}
	v3, n := d.Bool(), int(d.U32())
	if d.Err() == statecodec.ErrShort || v3 != g.v3 || n != g.ncpu {
		return fmt.Errorf("gic: saved state is of a GICv%d with %d CPUs, this is a GICv%d with %d", 2+b2i(v3), n, 2+b2i(g.v3), g.ncpu)
	}
	ctlr := d.U32()
	spi := g.spi
	for i := range spi {
		spi[i].load(&d)
	}
	priv := make([][NumPriv]irq, g.ncpu)
	for c := range priv {
		for i := range priv[c] {
			priv[c][i].load(&d)
		}
	}
	cpu := make([]cpuIface, g.ncpu)
	for c := range cpu {
		ci := &cpu[c]
		ci.ctlr = d.U32()
		ci.pmr = d.U8()
		ci.bpr0 = d.U8()
		ci.bpr1 = d.U8()
		ci.grpen[0] = d.Bool()
		ci.grpen[1] = d.Bool()
		ci.sleeping = d.Bool()
		na := d.U32()
		if na > 256 || d.Err() == statecodec.ErrShort {
			return fmt.Errorf("gic: saved state malformed (CPU %d active list of %d)", c, na)
		}
		for range na {
			ci.active = append(ci.active, d.U8())
		}
	}
	if err := d.Err(); err != nil {
		return fmt.Errorf("gic: %v", err)
	}
	g.ctlr, g.spi, g.priv = ctlr, spi, priv
	for c := range cpu {
		g.cpu[c] = cpu[c]
		// Drive the outputs from scratch: the vCPUs' inputs follow whatever update
		// computes, whatever they were before.
		if o := g.out[c]; o != nil {
			o.SetIRQ(false)
			o.SetFIQ(false)
		}
	}
	g.update()
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

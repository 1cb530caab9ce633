package timer

import (
	"fmt"
	"time"

	"gemu/hw/bus"
	"gemu/hw/internal/statecodec"
)

var (
	_ bus.Stateful = (*PIT)(nil)
	_ bus.Stateful = (*HPET)(nil)
)

// SaveState implements bus.Stateful: the three channels (load times relative to the
// clock's now) and port 0x61.
func (p *PIT) SaveState() (bus.State, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clk.Now()
	var e statecodec.Enc
	for _, c := range p.ch {
		e.U32(c.count)
		e.I64(int64(now - c.loadTime))
		for _, v := range []uint8{c.mode, c.ctrlMode, c.rwMode, c.readState, c.writeState, c.writeLatch, c.status, c.countLatched} {
			e.U8(v)
		}
		e.Bool(c.bcd)
		e.Bool(c.gate)
		e.Bool(c.statusLatched)
		e.U32(uint32(c.latched))
	}
	e.Bool(p.speaker)
	e.U8(p.refresh)
	e.U64(p.edges)
	return bus.State{Name: "i8254", Version: 1, Data: e.B}, nil
}

// LoadState implements bus.Stateful and re-arms channel 0's output.
func (p *PIT) LoadState(s bus.State) error {
	if s.Name != "i8254" || s.Version != 1 {
		return fmt.Errorf("pit: cannot load state %q version %d", s.Name, s.Version)
	}
	d := statecodec.Dec{B: s.Data}
	var ch [3]pitChannel
	var ages [3]time.Duration
	for i := range ch {
		c := &ch[i]
		c.count = d.U32()
		ages[i] = time.Duration(d.I64())
		c.mode, c.ctrlMode, c.rwMode, c.readState = d.U8(), d.U8(), d.U8(), d.U8()
		c.writeState, c.writeLatch, c.status, c.countLatched = d.U8(), d.U8(), d.U8(), d.U8()
		c.bcd, c.gate, c.statusLatched = d.Bool(), d.Bool(), d.Bool()
		c.latched = uint16(d.U32())
		// 0 is the never-programmed access state of a channel after reset.
		if c.count < 1 || c.count > 0x10000 || c.mode > 5 || c.ctrlMode > 7 || c.rwMode > rwWord0 ||
			c.readState > rwWord1 || c.writeState > rwWord1 || c.countLatched > rwWord0 {
			return fmt.Errorf("pit: channel %d state out of range", i)
		}
	}
	speaker, refresh, edges := d.Bool(), d.U8(), d.U64()
	if err := d.Err(); err != nil {
		return fmt.Errorf("pit: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clk.Now()
	for i := range ch {
		ch[i].loadTime = now - ages[i]
	}
	p.ch, p.speaker, p.refresh, p.edges = ch, speaker, refresh&0x10, edges
	p.updateIRQLocked(now)
	return nil
}

// SaveState implements bus.Stateful: configuration, ISR, the main counter's value
// now, and the timers.
func (h *HPET) SaveState() (bus.State, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var e statecodec.Enc
	e.U64(h.config)
	e.U64(h.isr)
	e.U64(h.ticksLocked())
	for _, t := range h.t {
		e.U64(t.config)
		e.U64(t.cmp)
		e.U64(t.period)
		e.Bool(t.raised)
	}
	e.Bool(h.pitLevel)
	e.Bool(h.rtcLevel)
	return bus.State{Name: "hpet", Version: 1, Data: e.B}, nil
}

// LoadState implements bus.Stateful; a running counter continues from the saved
// value and the timers are re-armed.
func (h *HPET) LoadState(s bus.State) error {
	if s.Name != "hpet" || s.Version != 1 {
		return fmt.Errorf("hpet: cannot load state %q version %d", s.Name, s.Version)
	}
	d := statecodec.Dec{B: s.Data}
	config, isr, counter := d.U64(), d.U64(), d.U64()
	var ts [HPETTimers]hpetTimer
	for i := range ts {
		ts[i].config, ts[i].cmp, ts[i].period, ts[i].raised = d.U64(), d.U64(), d.U64(), d.Bool()
	}
	pitLevel, rtcLevel := d.Bool(), d.Bool()
	if err := d.Err(); err != nil {
		return fmt.Errorf("hpet: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range h.t {
		h.delTimerLocked(&h.t[i])
		ts[i].gen = h.t[i].gen
		ts[i].config = ts[i].config&tnCfgWrite | tnPerCap | tnSizeCap | uint64(HPETIntCap)<<32
	}
	h.config, h.isr = config&(hpetCfgEnable|hpetCfgLegacy), isr&(1<<HPETTimers-1)
	h.counter, h.enabledAt = counter, h.clk.Now()
	h.t = ts
	h.pitLevel, h.rtcLevel = pitLevel, rtcLevel
	if h.enabledLocked() {
		for i := range h.t {
			if h.t[i].cmp != ^uint64(0) {
				h.setTimerLocked(i)
			}
		}
	}
	return nil
}

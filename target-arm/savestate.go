package arm

import (
	"fmt"

	"gemu/hw/bus"
	"gemu/hw/vmstate"
)

// cpuStateVersion is the version of the vCPU's saved state. The data is
// vmstate.EncodeFields of cpuSave: every field of State and of sysRegs by name (a
// system register added to sysRegs is saved with no change here; a stream without it
// leaves it at its reset value), PSTATE's EL, SPSel, DAIF, PAN and UAO, the generic timers'
// control and compare values and output levels, and the PSCI power state.
const cpuStateVersion = 1

type timerSave struct {
	ctl, cval uint64
	level     bool
}

type cpuSave struct {
	Regs             State
	Sys              sysRegs
	EL, SPSel, DAIF  uint64
	PAN, UAO         uint64
	Timers           [2]timerSave
	On, Starting     bool
	StartPC, StartX0 uint64
}

// SaveState implements bus.Stateful: the vCPU's complete architectural state. Call it
// only while the vCPU is parked or not running. The exclusive monitor is not saved
// (a restored vCPU starts with it clear, as after an exception return), nor the guest
// clock, which is the engine's (the board saves it once for every vCPU).
func (c *CPU) SaveState() (bus.State, error) {
	s := cpuSave{Regs: c.State, Sys: c.sr, EL: c.el, SPSel: c.spsel, DAIF: c.daif, PAN: c.pan, UAO: c.uao, On: c.on.Load()}
	for i := range c.timers {
		s.Timers[i] = timerSave{c.timers[i].ctl, c.timers[i].cval, c.timers[i].level}
	}
	c.startMu.Lock()
	s.Starting, s.StartPC, s.StartX0 = c.starting, c.startPC, c.startX0
	c.startMu.Unlock()
	d, err := vmstate.EncodeFields(nil, &s)
	if err != nil {
		return bus.State{}, err
	}
	return bus.State{Name: "cpu", Version: cpuStateVersion, Data: d}, nil
}

// LoadState implements bus.Stateful: the vCPU takes the saved state, with its TLBs
// flushed and its timers re-evaluated against the engine's clock at its next block
// boundary. Call it only while the vCPU is parked or not running; on error the vCPU
// is unchanged.
func (c *CPU) LoadState(st bus.State) error {
	if st.Name != "cpu" || st.Version != cpuStateVersion {
		return fmt.Errorf("cpu %d: cannot load state %q version %d", c.cfg.ID, st.Name, st.Version)
	}
	s := cpuSave{Regs: State{}, Sys: sysRegs{sctlr: sctlrRES1}, EL: 1, SPSel: 1, DAIF: pstateDAIF}
	if err := vmstate.DecodeFields(st.Data, &s); err != nil {
		return fmt.Errorf("cpu %d: %v", c.cfg.ID, err)
	}
	if s.EL > 1 || s.SPSel > 1 || s.DAIF&^pstateDAIF != 0 || s.PAN > 1 || s.UAO > 1 ||
		s.PAN != 0 && !c.model.hasPAN() || s.UAO != 0 && !c.model.hasUAO() {
		return fmt.Errorf("cpu %d: saved PSTATE (EL%d, SPSel %d, DAIF %#x, PAN %d, UAO %d) is not one this vCPU models", c.cfg.ID, s.EL, s.SPSel, s.DAIF, s.PAN, s.UAO)
	}
	c.State, c.sr = s.Regs, s.Sys
	c.el, c.spsel, c.daif, c.pan, c.uao = s.EL, s.SPSel, s.DAIF, s.PAN, s.UAO
	c.excl = monitor{}
	for i := range c.timers {
		c.timers[i].ctl, c.timers[i].cval, c.timers[i].level = s.Timers[i].ctl, s.Timers[i].cval, s.Timers[i].level
	}
	c.startMu.Lock()
	c.starting, c.startPC, c.startX0 = s.Starting, s.StartPC, s.StartX0
	c.startMu.Unlock()
	c.on.Store(s.On)
	c.modeChanged()
	c.flushTLB()
	c.v.Request(reqTimer | reqPower | reqIRQ)
	c.kick()
	return nil
}

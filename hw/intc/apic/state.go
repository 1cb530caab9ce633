package apic

import (
	"fmt"
	"time"

	"gemu/hw/bus"
	"gemu/hw/internal/statecodec"
)

const stateName, stateVersion = "lapic", 1

var _ bus.Stateful = (*System)(nil)

// SaveState implements bus.Stateful for every local APIC. Timer times are saved
// relative to the clock's now, so a restore on another clock (another process)
// continues with the same remaining time.
func (s *System) SaveState() (bus.State, error) {
	var e statecodec.Enc
	e.U32(uint32(len(s.apics)))
	for _, a := range s.apics {
		a.mu.Lock()
		now := s.clock.Now()
		e.U64(a.base)
		e.Bool(a.x2)
		e.U8(a.id)
		for _, v := range []uint32{a.tpr, a.ldr, a.dfr, a.svr, a.esr, a.errAcc, a.icr[0], a.icr[1], a.initial, a.divide, a.events} {
			e.U32(v)
		}
		for _, bm := range []*[8]uint32{&a.isr, &a.tmr, &a.irr} {
			for _, w := range bm {
				e.U32(w)
			}
		}
		for _, l := range a.lvt {
			e.U32(l)
		}
		e.Bool(a.lint0)
		e.Bool(a.lint1)
		e.Bool(a.extMsg)
		e.U8(a.sipi)
		e.I64(int64(now - a.loadTime))
		e.U64(a.deadline)
		armed := a.tmrStop != nil && a.timerModeLocked() == timerDeadline
		e.Bool(armed)
		e.I64(int64(a.deadlineAt - now))
		a.mu.Unlock()
	}
	return bus.State{Name: stateName, Version: stateVersion, Data: e.B}, nil
}

// LoadState implements bus.Stateful; the APIC count must match.
func (s *System) LoadState(st bus.State) error {
	if st.Name != stateName || st.Version != stateVersion {
		return fmt.Errorf("apic: cannot load state %q version %d", st.Name, st.Version)
	}
	d := statecodec.Dec{B: st.Data}
	if n := d.U32(); int(n) != len(s.apics) {
		return fmt.Errorf("apic: state has %d APICs, the machine %d", n, len(s.apics))
	}
	type rec struct {
		a                   APIC
		loadAge, deadlineIn time.Duration
		deadlineArmed       bool
	}
	recs := make([]rec, len(s.apics))
	for i := range recs {
		r := &recs[i].a
		r.base, r.x2, r.id = d.U64(), d.Bool(), d.U8()
		for _, p := range []*uint32{&r.tpr, &r.ldr, &r.dfr, &r.svr, &r.esr, &r.errAcc, &r.icr[0], &r.icr[1], &r.initial, &r.divide, &r.events} {
			*p = d.U32()
		}
		for _, bm := range []*[8]uint32{&r.isr, &r.tmr, &r.irr} {
			for j := range bm {
				bm[j] = d.U32()
			}
		}
		for j := range r.lvt {
			r.lvt[j] = d.U32()
		}
		r.lint0, r.lint1, r.extMsg, r.sipi = d.Bool(), d.Bool(), d.Bool(), d.U8()
		recs[i].loadAge = time.Duration(d.I64())
		r.deadline = d.U64()
		recs[i].deadlineArmed = d.Bool()
		recs[i].deadlineIn = time.Duration(d.I64())
	}
	if err := d.Err(); err != nil {
		return fmt.Errorf("apic: %w", err)
	}
	for i, a := range s.apics {
		r := &recs[i]
		a.mu.Lock()
		a.stopTimerLocked()
		now := s.clock.Now()
		a.base, a.x2, a.id = r.a.base, r.a.x2, r.a.id
		a.tpr, a.ldr, a.dfr, a.svr, a.esr, a.errAcc = r.a.tpr, r.a.ldr, r.a.dfr, r.a.svr, r.a.esr, r.a.errAcc
		a.icr, a.initial, a.events = r.a.icr, r.a.initial, r.a.events
		a.divide = r.a.divide & 0xb
		dv := (a.divide & 3) | ((a.divide >> 1) & 4)
		a.shift = uint((dv + 1) & 7)
		a.isr, a.tmr, a.irr, a.lvt = r.a.isr, r.a.tmr, r.a.irr, r.a.lvt
		a.lint0, a.lint1, a.extMsg, a.sipi = r.a.lint0, r.a.lint1, r.a.extMsg, r.a.sipi
		a.loadTime = now - r.loadAge
		a.deadline = r.a.deadline
		if a.timerModeLocked() == timerDeadline {
			if r.deadlineArmed {
				a.deadlineAt = now + max(r.deadlineIn, 0)
				a.scheduleLocked(max(r.deadlineIn, 0))
			}
		} else {
			a.armTimerLocked()
		}
		a.kick()
		a.mu.Unlock()
	}
	return nil
}

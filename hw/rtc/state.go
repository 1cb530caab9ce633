package rtc

import (
	"fmt"
	"time"

	"gemu/hw/bus"
	"gemu/hw/internal/statecodec"
)

var _ bus.Stateful = (*RTC)(nil)

// stateVersion is the version of the RTC's saved state: the guest clock's offset from
// the host's wall clock (ns; the guest's time keeps following the host's, as a
// battery-backed clock does while the machine is away), the index register, the 128
// CMOS bytes, the second of the last update-ended read and the pending PF/AF/UF flags.
// The IRQ 8 level and the tick timers are not saved: LoadState drives the line and
// starts the timers registers A and B select.
const stateVersion = 1

// SaveState implements bus.Stateful.
func (r *RTC) SaveState() (bus.State, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var e statecodec.Enc
	e.I64(int64(r.offset))
	e.U8(r.index)
	e.B = append(e.B, r.cmos[:]...)
	e.I64(r.lastUF)
	e.U8(r.flags)
	return bus.State{Name: "mc146818", Version: stateVersion, Data: e.B}, nil
}

// LoadState implements bus.Stateful; on error the RTC is unchanged.
func (r *RTC) LoadState(s bus.State) error {
	if s.Name != "mc146818" || s.Version != stateVersion {
		return fmt.Errorf("rtc: cannot load state %q version %d", s.Name, s.Version)
	}
	d := statecodec.Dec{B: s.Data}
	off, index := time.Duration(d.I64()), d.U8()
	var cmos [128]byte
	for i := range cmos {
		cmos[i] = d.U8()
	}
	lastUF, flags := d.I64(), d.U8()
	if err := d.Err(); err != nil {
		return fmt.Errorf("rtc: %v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopTimersLocked()
	r.offset, r.index, r.cmos, r.lastUF, r.flags = off, index&0x7f, cmos, lastUF, flags
	r.irqHigh = !(r.flags&r.cmos[RegB]&(regBPIE|regBAIE|regBUIE) != 0) // force the update
	r.updateIRQLocked()
	r.scheduleLocked()
	return nil
}

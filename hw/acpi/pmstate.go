package acpi

import (
	"fmt"
	"time"

	"gemu/hw/bus"
	"gemu/hw/internal/statecodec"
)

var _ bus.Stateful = (*PM)(nil)

// pmStateVersion is the version of the PM block's saved state: PM1 status, enable and
// control, GPE0 status and enable (u32 each), and the PM timer's age (ns since its
// zero), so the 3.58 MHz counter goes on from the saved value. The SCI level is not
// saved: LoadState drives it.
const pmStateVersion = 1

// SaveState implements bus.Stateful.
func (p *PM) SaveState() (bus.State, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var e statecodec.Enc
	for _, v := range []uint16{p.pm1Sts, p.pm1En, p.pm1Cnt, p.gpeSts, p.gpeEn} {
		e.U32(uint32(v))
	}
	e.I64(int64(time.Since(p.start)))
	return bus.State{Name: "acpi-pm", Version: pmStateVersion, Data: e.B}, nil
}

// LoadState implements bus.Stateful; on error the block is unchanged.
func (p *PM) LoadState(s bus.State) error {
	if s.Name != "acpi-pm" || s.Version != pmStateVersion {
		return fmt.Errorf("acpi-pm: cannot load state %q version %d", s.Name, s.Version)
	}
	d := statecodec.Dec{B: s.Data}
	var r [5]uint32
	for i := range r {
		if r[i] = d.U32(); r[i] > 0xffff {
			return fmt.Errorf("acpi-pm: register %d value %#x out of range", i, r[i])
		}
	}
	age := time.Duration(d.I64())
	if err := d.Err(); err != nil {
		return fmt.Errorf("acpi-pm: %v", err)
	}
	if age < 0 {
		return fmt.Errorf("acpi-pm: negative timer age")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pm1Sts, p.pm1En, p.pm1Cnt, p.gpeSts, p.gpeEn = uint16(r[0]), uint16(r[1]), uint16(r[2]), uint16(r[3]), uint16(r[4])
	p.start = time.Now().Add(-age)
	p.sciHigh = !(p.pm1Sts&p.pm1En != 0 || p.gpeSts&p.gpeEn != 0)
	p.updateSCILocked()
	return nil
}

package pc

import (
	"errors"
	"fmt"

	"gemu/accel"
)

// Pause takes every vCPU out of the guest through the accelerator (accel.Pauser) and
// returns once none executes guest code; before Run, the vCPUs wait before their first
// instruction (QEMU's -S). Under accel/tcg the guest clock (the TSC's time base) stops
// with them, as QEMU's virtual clock. Resume undoes it; pausing a paused machine does
// nothing.
func (m *Machine) Pause() error {
	p, ok := m.VM.(accel.Pauser)
	if !ok {
		return errors.New("the accelerator cannot pause the guest")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.paused {
		return nil
	}
	if err := p.Pause(); err != nil {
		return err
	}
	m.paused = true
	if m.tcg != nil {
		m.tcg.eng.PauseClock()
	}
	return nil
}

// Resume lets the vCPUs run again after Pause.
func (m *Machine) Resume() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.paused {
		return
	}
	m.paused = false
	if m.tcg != nil {
		m.tcg.eng.ResumeClock()
	}
	if p, ok := m.VM.(accel.Pauser); ok {
		p.Resume()
	}
}

// Paused reports whether the machine is paused.
func (m *Machine) Paused() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.paused
}

// Reset makes Run return accel.Reset as a guest reset does, for the host's
// system_reset: the caller builds the board afresh.
func (m *Machine) Reset() { m.VM.Stop(accel.Reset) }

// PowerDown presses the ACPI power button (PWRBTN_STS and the SCI, as QEMU's
// system_powerdown on a PC); what happens next is the guest's choice.
func (m *Machine) PowerDown() error {
	if m.pm == nil {
		return errors.New("the board has no ACPI power button")
	}
	m.pm.PowerButton()
	return nil
}

// ReadPhys copies guest-physical memory at addr into p (the monitor's xp).
func (m *Machine) ReadPhys(addr uint64, p []byte) error {
	if err := m.RAM.ReadAt(p, addr); err != nil {
		return fmt.Errorf("cannot access memory at %#x: %v", addr, err)
	}
	return nil
}

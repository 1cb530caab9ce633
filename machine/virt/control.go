package virt

import (
	"errors"
	"fmt"
	"time"
)

// parkTimeout bounds how long Pause waits for one vCPU to reach a block boundary; a
// block is at most a page of guest code, so anything near it means a host-side hang.
const parkTimeout = 10 * time.Second

// Pause stops every vCPU at its next block boundary (vCPUs in WFI or powered off park
// at once) and the guest's generic-timer counter with them, and returns once no vCPU
// executes guest code. Devices receive no further guest accesses; their own workers
// finish the requests already queued. A vCPU started later (or the boot CPU, when Pause
// comes before Run: QEMU's -S) parks before its first instruction. Safe from any
// goroutine; Resume undoes it. Pausing a paused machine does nothing.
func (m *Machine) Pause() error {
	m.mu.Lock()
	if m.paused {
		m.mu.Unlock()
		return nil
	}
	m.paused = true
	for _, c := range m.cpus {
		c.Park()
	}
	m.mu.Unlock()
	for i, c := range m.cpus {
		if !c.WaitParked(parkTimeout) {
			return fmt.Errorf("vCPU %d did not stop within %v", i, parkTimeout)
		}
	}
	if len(m.cpus) > 0 {
		m.cpus[0].PauseClock()
	}
	return nil
}

// Resume lets the vCPUs run again after Pause, the counter continuing from where it
// stopped.
func (m *Machine) Resume() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.paused {
		return
	}
	m.paused = false
	if len(m.cpus) > 0 {
		m.cpus[0].ResumeClock()
	}
	for _, c := range m.cpus {
		c.Unpark()
	}
}

// Paused reports whether the machine is paused.
func (m *Machine) Paused() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.paused
}

// Reset makes Run return ExitReset as if the guest had asked (PSCI SYSTEM_RESET), for
// the host's system_reset: the caller builds the board afresh, as for a guest reset.
func (m *Machine) Reset() { m.finish(ExitReset, nil) }

// PowerDown asks the guest to power off (QEMU's system_powerdown): the gpio-keys power
// button on the PL061 is pressed (platform.go); what happens next is the guest's choice.
func (m *Machine) PowerDown() error {
	m.PowerButton()
	return nil
}

// NumCPUs returns the number of vCPUs.
func (m *Machine) NumCPUs() int { return len(m.cpus) }

// CPUOn reports whether vCPU i is powered on (PSCI), and its PC when it is parked or
// the machine is not running (the PC is only coherent while the vCPU is stopped).
func (m *Machine) CPUOn(i int) bool {
	if i < 0 || i >= len(m.cpus) {
		return false
	}
	return m.cpus[i].PoweredOn()
}

// CPUPC returns vCPU i's program counter and exception level. Call it only while the
// machine is paused: a running vCPU's registers are its own goroutine's.
func (m *Machine) CPUPC(i int) (pc uint64, el int, ok bool) {
	if i < 0 || i >= len(m.cpus) || !m.Paused() {
		return 0, 0, false
	}
	c := m.cpus[i]
	return c.PC, c.EL(), true
}

// ReadPhys copies guest-physical memory at addr into p (the monitor's xp). Addresses
// outside RAM are refused.
func (m *Machine) ReadPhys(addr uint64, p []byte) error {
	m.ramMu.RLock()
	defer m.ramMu.RUnlock()
	if m.ramGone {
		return errors.New("the guest's memory is released")
	}
	if err := m.ram.ReadAt(p, addr); err != nil {
		return fmt.Errorf("cannot access memory at %#x: %v", addr, err)
	}
	return nil
}

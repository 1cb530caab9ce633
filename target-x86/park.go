package x86

import "time"

// Park asks the vCPU to stop at its next block boundary and wait there until Unpark
// (the tcg run loop's park request). See tcg.VCPU.Park.
func (c *CPU) Park() { c.v.Park() }

// Unpark lets a parked vCPU run again.
func (c *CPU) Unpark() { c.v.Unpark() }

// WaitParked waits until the vCPU executes no guest code after Park (parked, or not
// running); false if timeout passed first.
func (c *CPU) WaitParked(timeout time.Duration) bool { return c.v.WaitParked(timeout) }

// PauseClock stops the TSC of every vCPU of the guest (the engine's guest clock), as
// QEMU's virtual clock stops while the VM is stopped; ResumeClock lets it run on from
// where it stopped.
func (c *CPU) PauseClock() { c.eng.PauseClock() }

// ResumeClock undoes PauseClock.
func (c *CPU) ResumeClock() { c.eng.ResumeClock() }

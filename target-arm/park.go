package arm

import (
	"sync"
	"time"
)

// reqPark asks the vCPU to park at its next block boundary (Park).
const reqPark = reqPower << 1

// parking is a vCPU's pause state: Park asks, the vCPU's Run parks at a block
// boundary and waits until Unpark or Run's stop.
type parking struct {
	mu     sync.Mutex
	cond   *sync.Cond
	want   bool // Park was called and Unpark not yet
	parked bool // Run is waiting in park
	out    bool // Run is not executing (not started, or returned, or stopped)
}

func (p *parking) init() {
	p.cond = sync.NewCond(&p.mu)
	p.out = true
}

// Park asks the vCPU to stop executing guest code: its Run parks at the next block
// boundary (a vCPU in WFI or powered off parks at once) and stays parked until Unpark.
// It returns without waiting; WaitParked waits. Timers and interrupt lines keep their
// state and are looked at when the vCPU resumes. Safe from any goroutine. The
// per-block cost is nil: the request is one more bit of the exit-request word.
func (c *CPU) Park() {
	c.park.mu.Lock()
	c.park.want = true
	c.park.mu.Unlock()
	c.exitReq.Or(reqPark)
	c.kick()
}

// Unpark lets a parked vCPU (or one asked to park) run again.
func (c *CPU) Unpark() {
	c.park.mu.Lock()
	c.park.want = false
	c.park.cond.Broadcast()
	c.park.mu.Unlock()
}

// WaitParked waits until the vCPU executes no guest code since Park: it is parked, or
// its Run has not started or has returned. It reports false if timeout passed first.
func (c *CPU) WaitParked(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() {
		c.park.mu.Lock()
		c.park.cond.Broadcast()
		c.park.mu.Unlock()
	})
	defer t.Stop()
	c.park.mu.Lock()
	defer c.park.mu.Unlock()
	for c.park.want && !c.park.parked && !c.park.out {
		if !time.Now().Before(deadline) {
			return false
		}
		c.park.cond.Wait()
	}
	return true
}

// running marks Run as executing (in) or not (out), waking WaitParked.
func (c *CPU) setRunning(in bool) {
	c.park.mu.Lock()
	c.park.out = !in
	c.park.cond.Broadcast()
	c.park.mu.Unlock()
}

// parkNow parks the calling Run while a park is wanted; it returns true if Run must
// return (stop was closed meanwhile).
func (c *CPU) parkNow() (stopped bool) {
	c.park.mu.Lock()
	for c.park.want && !c.park.out {
		c.park.parked = true
		c.park.cond.Broadcast()
		c.park.cond.Wait()
	}
	c.park.parked = false
	out := c.park.out
	c.park.mu.Unlock()
	return out
}

// stopParked ends a park because Run's stop channel closed.
func (c *CPU) stopParked() {
	c.park.mu.Lock()
	c.park.out = true
	c.park.cond.Broadcast()
	c.park.mu.Unlock()
}

// PauseClock stops the guest's generic-timer counter (CNTPCT/CNTVCT) for every vCPU
// sharing this one's RAM, as QEMU's virtual clock stops while the VM is stopped; a
// guest resumed with ResumeClock sees no time pass. Nested calls are not counted: the
// first pause and the next resume count.
func (c *CPU) PauseClock() {
	s := c.sys
	s.clockMu.Lock()
	if s.pausedAt.IsZero() {
		s.pausedAt = time.Now()
		s.frozen.Store(int64(s.pausedAt.Sub(s.start)) - s.clockOff.Load() + 1)
	}
	s.clockMu.Unlock()
}

// ResumeClock lets the counter run again from where PauseClock stopped it.
func (c *CPU) ResumeClock() {
	s := c.sys
	s.clockMu.Lock()
	if !s.pausedAt.IsZero() {
		s.clockOff.Add(int64(time.Since(s.pausedAt)))
		s.pausedAt = time.Time{}
		s.frozen.Store(0)
	}
	s.clockMu.Unlock()
}

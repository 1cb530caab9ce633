package tcg

import (
	"sync"
	"sync/atomic"
	"time"
)

// Pausing a guest (QEMU's vm_stop / pause_all_vcpus): Park asks a vCPU to stop at its
// next block boundary through one more loop-owned exit-request bit (ExitPark), so the
// per-block path does no more work than its existing exit-request check; the vCPU's Run
// then waits in service until Unpark or Stop. The engine's guest clock can be paused
// with it, so a resumed guest sees no time pass (QEMU's virtual clock stops while the
// VM is stopped).

// parking is a vCPU's pause state.
type parking struct {
	mu     sync.Mutex
	cond   *sync.Cond
	want   bool // Park was called and Unpark not yet
	parked bool // Run is waiting in parkNow
	out    bool // Run is not executing (not started, returned, or stopping)
}

func (p *parking) lock() {
	p.mu.Lock()
	if p.cond == nil {
		p.cond = sync.NewCond(&p.mu)
		p.out = true
	}
}

// Park asks the vCPU to stop executing guest code: its Run parks at the next block
// boundary (a sleeping vCPU, in WFI or powered off, at once; one whose Run has not
// started, before its first block) and stays parked until Unpark. It returns without
// waiting; WaitParked waits. Pending requests (timers, interrupt lines) are handled
// when the vCPU resumes. Safe from any goroutine.
func (v *VCPU[E]) Park() {
	v.park.lock()
	v.park.want = true
	v.park.mu.Unlock()
	v.exitReq.Or(ExitPark)
	v.Kick()
}

// Unpark lets a parked vCPU (or one asked to park) run again.
func (v *VCPU[E]) Unpark() {
	v.park.lock()
	v.park.want = false
	v.park.cond.Broadcast()
	v.park.mu.Unlock()
}

// WaitParked waits until the vCPU executes no guest code after Park: it is parked, or
// its Run has not started or has returned. It reports false if timeout passed first.
func (v *VCPU[E]) WaitParked(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() {
		v.park.lock()
		v.park.cond.Broadcast()
		v.park.mu.Unlock()
	})
	defer t.Stop()
	v.park.lock()
	defer v.park.mu.Unlock()
	for v.park.want && !v.park.parked && !v.park.out {
		if !time.Now().Before(deadline) {
			return false
		}
		v.park.cond.Wait()
	}
	return true
}

// setRunning marks Run as executing (in) or not, waking WaitParked.
func (v *VCPU[E]) setRunning(in bool) {
	v.park.lock()
	v.park.out = !in
	v.park.cond.Broadcast()
	v.park.mu.Unlock()
}

// parkNow parks the calling Run while a park is wanted; it reports whether Run must
// return (Stop came meanwhile).
func (v *VCPU[E]) parkNow() (stopped bool) {
	v.park.lock()
	for v.park.want && !v.stopped.Load() {
		v.park.parked = true
		v.park.cond.Broadcast()
		v.park.cond.Wait()
	}
	v.park.parked = false
	v.park.mu.Unlock()
	return v.stopped.Load()
}

// wakeParked ends a park for Stop.
func (v *VCPU[E]) wakeParked() {
	v.park.lock()
	v.park.cond.Broadcast()
	v.park.mu.Unlock()
}

// guestClock is an engine's pausable clock. Reading it costs two atomic loads (the
// A64 counter registers are read often); pausing and resuming take the lock.
type guestClock struct {
	mu       sync.Mutex
	off      atomic.Int64 // nanoseconds spent paused so far
	frozen   atomic.Int64 // while paused: the guest time in nanoseconds + 1; else 0
	pausedAt time.Time
}

// GuestTime returns the guest clock: the time since the engine's start, less the time
// the clock was paused. Targets count their timers from it, so every vCPU sees one
// clock, and it stands still while the guest is paused.
func (e *Engine[E]) GuestTime() time.Duration {
	c := &e.clock
	if f := c.frozen.Load(); f != 0 {
		return time.Duration(f - 1)
	}
	return time.Since(e.start) - time.Duration(c.off.Load())
}

// PauseClock stops the guest clock; ResumeClock lets it run on from where it stopped.
// A second PauseClock before ResumeClock does nothing.
func (e *Engine[E]) PauseClock() {
	c := &e.clock
	c.mu.Lock()
	if c.pausedAt.IsZero() {
		c.pausedAt = time.Now()
		c.frozen.Store(int64(c.pausedAt.Sub(e.start)) - c.off.Load() + 1)
	}
	c.mu.Unlock()
}

// ResumeClock undoes PauseClock.
func (e *Engine[E]) ResumeClock() {
	c := &e.clock
	c.mu.Lock()
	if !c.pausedAt.IsZero() {
		c.off.Add(int64(time.Since(c.pausedAt)))
		c.pausedAt = time.Time{}
		c.frozen.Store(0)
	}
	c.mu.Unlock()
}

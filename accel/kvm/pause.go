package kvm

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// pauseTimeout bounds how long Pause waits for the vCPU threads to leave KVM_RUN.
const pauseTimeout = 10 * time.Second

// pausing is the VM's pause state: Pause asks, every vCPU thread parks at the top of
// its loop (out of KVM_RUN) until Resume or Stop.
type pausing struct {
	once   sync.Once
	mu     sync.Mutex
	cond   *sync.Cond
	want   atomic.Bool // read by the vCPU loops without the lock
	active int         // vCPU threads in loop
	parked int         // of which parked
}

func (p *pausing) lock() {
	p.once.Do(func() { p.cond = sync.NewCond(&p.mu) })
	p.mu.Lock()
}

// Pause takes every vCPU out of the guest and keeps it out until Resume, with the same
// kick as Stop (kvm_run.immediate_exit and a signal to the vCPU's thread, so one in the
// guest, halted, or waiting for SIPI returns from KVM_RUN), and returns once no vCPU
// thread is inside KVM_RUN or a device callback. Before Run it makes the vCPUs park
// before their first entry (QEMU's -S). The in-kernel irqchip, PIT and clocks keep
// running. Safe from any goroutine except a vCPU thread (which would wait for itself).
func (v *VM) Pause() error {
	p := &v.pause
	p.lock()
	p.want.Store(true)
	p.mu.Unlock()
	for _, c := range v.vcpus {
		c.kick()
	}
	deadline := time.Now().Add(pauseTimeout)
	t := time.AfterFunc(pauseTimeout, func() { p.lock(); p.cond.Broadcast(); p.mu.Unlock() })
	defer t.Stop()
	p.lock()
	defer p.mu.Unlock()
	for p.want.Load() && p.parked < p.active && !v.stopping.Load() {
		if !time.Now().Before(deadline) {
			return fmt.Errorf("kvm: %d of %d vCPUs did not leave the guest within %v", p.active-p.parked, p.active, pauseTimeout)
		}
		p.cond.Wait()
	}
	return nil
}

// Resume lets paused vCPUs enter the guest again.
func (v *VM) Resume() {
	p := &v.pause
	p.lock()
	p.want.Store(false)
	p.cond.Broadcast()
	p.mu.Unlock()
}

// wakePaused ends parks for Stop.
func (v *VM) wakePaused() {
	p := &v.pause
	p.lock()
	p.cond.Broadcast()
	p.mu.Unlock()
}

// enterLoop and leaveLoop count the vCPU threads Pause waits for.
func (v *VM) enterLoop() {
	p := &v.pause
	p.lock()
	p.active++
	p.mu.Unlock()
}

func (v *VM) leaveLoop() {
	p := &v.pause
	p.lock()
	p.active--
	p.cond.Broadcast()
	p.mu.Unlock()
}

// parkIfPaused parks the calling vCPU thread while a pause is wanted, then clears
// immediate_exit (which the pause's kick set) so KVM_RUN enters the guest again; the
// caller re-checks stopping and the pause after it returns.
func (c *vcpu) parkIfPaused() {
	v := c.vm
	p := &v.pause
	p.lock()
	if !p.want.Load() {
		p.mu.Unlock()
		return
	}
	p.parked++
	p.cond.Broadcast()
	for p.want.Load() && !v.stopping.Load() {
		p.cond.Wait()
	}
	p.parked--
	p.mu.Unlock()
	c.mu.Lock()
	if c.hdr != nil && !v.stopping.Load() {
		c.hdr.ImmediateExit = 0
	}
	c.mu.Unlock()
}

// VCPUThreads returns the OS thread id running each vCPU (0 for one not running now),
// for monitors (QEMU's query-cpus-fast thread-id).
func (v *VM) VCPUThreads() []int {
	out := make([]int, len(v.vcpus))
	for i, c := range v.vcpus {
		c.mu.Lock()
		out[i] = c.tid
		c.mu.Unlock()
	}
	return out
}

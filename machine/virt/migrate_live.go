package virt

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"gemu/hw/memory"
	"gemu/hw/vmstate"
)

// Live (pre-copy) migration of the board: RAM goes in passes while the guest runs,
// the dirty log (hw/memory: vCPU stores through the TLB's flag-word check, device
// writes through Written) telling each pass which pages the previous one missed; the
// guest stops only for the last pages and the device state. See QEMU's
// migration/ram.c for the model: ram_save_setup sends every page, each iteration
// syncs the dirty bitmap (MIGRATION_PASS) and sends it, migration_iteration_run
// completes once the pending bytes fit bandwidth × downtime-limit, auto-converge
// throttles the vCPUs when dirtying outpaces sending.

// maxPasses bounds a migration that never converges even with throttling.
const maxPasses = 10000

// stuckPasses is how many syncs in a row may find at least 90% of what the pass before
// sent dirty again (the guest dirties about as fast as the link carries), without
// auto-converge, before the migration fails.
const stuckPasses = 5

// minMeasure is the least a pass must send for its bandwidth to replace the estimate.
const minMeasure = 256 << 10

// errCancelled is what a cancelled live migration returns.
var errCancelled = errors.New("migration cancelled")

// SaveLive writes the running machine's state to w as a live migration: passes of
// RAM while the guest runs, then p.Stop, the last dirty pages and every vCPU and
// device (the stream Load reads, as Save's). It returns the stream's stats and how
// long the guest was stopped (from p.Stop to the end). On an error or cancel before
// p.Stop the guest has kept running; after it the guest stays paused (the caller
// resumes it). A paused machine is saved as Save does.
func (m *Machine) SaveLive(w io.Writer, p vmstate.LiveParams) (vmstate.Stats, time.Duration, error) {
	if m.Paused() {
		t := time.Now()
		st, err := m.Save(w)
		return st, time.Since(t), err
	}
	if err := m.migratable(); err != nil {
		return vmstate.Stats{}, 0, err
	}
	m.ramMu.RLock()
	defer m.ramMu.RUnlock()
	if m.ramGone {
		return vmstate.Stats{}, 0, errors.New("the guest's memory is released")
	}
	lw, unlimit := vmstate.RateLimit(cancelWriter{w, p.Cancel}, p.MaxBandwidth)
	sw, err := vmstate.NewWriter(lw, m.StateConfig())
	if err != nil {
		return vmstate.Stats{}, 0, err
	}
	slots := m.ram.Slots()
	bms := make([][]uint64, len(slots))
	for i, sl := range slots {
		bms[i] = make([]uint64, (len(sl.Mem)/memory.PageSize+63)/64)
	}
	m.ram.StartDirtyLog()
	defer m.ram.StopDirtyLog()
	th := &throttle{m: m}
	defer th.set(0)

	prog := vmstate.Progress{Syncs: 1, Remaining: m.cfg.RAMSize}
	report := func() {
		prog.Stats, prog.Throttle = sw.Stats, th.percent()
		prog.Stats.Bytes = sw.Offset()
		if p.Progress != nil {
			p.Progress(prog)
		}
	}
	report()
	passStart, passFrom := time.Now(), sw.Offset()
	for _, sl := range slots {
		if err := sw.RAM(sl.GPA, sl.Mem); err != nil {
			return sw.Stats, 0, err
		}
	}
	if err := sw.Flush(); err != nil {
		return sw.Stats, 0, err
	}
	lastSync := passStart
	bw := 0.0
	high, stuck := 0, 0
	for {
		if cancelled(p.Cancel) {
			return sw.Stats, 0, errCancelled
		}
		dirty := 0
		for i, sl := range slots {
			dirty += sl.SyncDirtyLog(bms[i])
		}
		// A store that tested its page's flag word before the sync re-armed it may
		// not have landed yet: every vCPU passes a block boundary before the pages
		// are read.
		if err := m.storeBarrier(); err != nil {
			return sw.Stats, 0, err
		}
		now := time.Now()
		passBytes := sw.Offset() - passFrom
		if d := now.Sub(passStart).Seconds(); passBytes >= minMeasure && d > 0 {
			bw = float64(passBytes) / d
		}
		dirtyBytes := uint64(dirty) * memory.PageSize
		prog.Syncs++
		prog.Remaining, prog.Bandwidth = dirtyBytes, bw
		if d := now.Sub(lastSync).Seconds(); d > 0 {
			prog.DirtyRate = uint64(float64(dirty) / d)
		}
		lastSync = now
		prog.ExpectedDowntime = 0
		if bw > 0 {
			prog.ExpectedDowntime = time.Duration(float64(dirtyBytes) / bw * float64(time.Second))
		}
		report()
		if prog.ExpectedDowntime <= p.DowntimeLimit || dirty == 0 {
			break
		}
		// Auto-converge (QEMU's mig_throttle_guest_down): dirtying more than the
		// trigger's share of what the period sent, twice in a row, throttles.
		if dirtyBytes*100 > passBytes*uint64(p.ThrottleTrigger) {
			high++
		} else {
			high = 0
		}
		if dirtyBytes*10 >= passBytes*9 {
			stuck++
		} else {
			stuck = 0
		}
		switch {
		case p.AutoConverge && high >= 2:
			high = 0
			if t := th.percent(); t == 0 {
				th.set(min(p.ThrottleInitial, p.MaxThrottle))
			} else {
				th.set(min(t+p.ThrottleIncrement, p.MaxThrottle))
			}
		case !p.AutoConverge && stuck >= stuckPasses:
			return sw.Stats, 0, fmt.Errorf("migration does not converge: the guest dirties %.1f MB/s, the link carries %.1f MB/s "+
				"(turn on auto-converge, or raise downtime-limit or max-bandwidth)", float64(prog.DirtyRate)*memory.PageSize/1e6, bw/1e6)
		case prog.Syncs >= maxPasses:
			return sw.Stats, 0, fmt.Errorf("migration did not converge in %d passes", maxPasses)
		}
		passStart, passFrom = now, sw.Offset()
		for i, sl := range slots {
			if err := sw.RAMPages(sl.GPA, sl.Mem, bms[i]); err != nil {
				return sw.Stats, 0, err
			}
			clear(bms[i])
		}
		if err := sw.Flush(); err != nil {
			return sw.Stats, 0, err
		}
	}
	// Stop and copy: the pages this sync found, plus what the guest and the devices
	// (their requests in flight drain now) write until they stop.
	th.set(0)
	unlimit()
	if err := p.Stop(); err != nil {
		return sw.Stats, 0, err
	}
	stopped := time.Now()
	thaw, err := m.quiesceVirtio()
	if err != nil {
		return sw.Stats, 0, err
	}
	defer thaw()
	for i, sl := range slots {
		sl.SyncDirtyLog(bms[i])
		if err := sw.RAMPages(sl.GPA, sl.Mem, bms[i]); err != nil {
			return sw.Stats, 0, err
		}
	}
	if err := m.saveSections(sw); err != nil {
		return sw.Stats, 0, err
	}
	err = sw.Close()
	prog.Remaining = 0
	report()
	return sw.Stats, time.Since(stopped), err
}

func cancelled(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// cancelWriter fails every write once cancel is closed.
type cancelWriter struct {
	w      io.Writer
	cancel <-chan struct{}
}

func (c cancelWriter) Write(p []byte) (int, error) {
	if cancelled(c.cancel) {
		return 0, errCancelled
	}
	return c.w.Write(p)
}

// holdVCPUs parks every vCPU at its next block boundary, waits until none executes
// guest code when wait is set, keeps them parked for d, and lets them run again
// unless the machine was paused meanwhile (then Resume does). A paused machine is
// left alone.
func (m *Machine) holdVCPUs(d time.Duration, wait bool) error {
	m.hold.Lock()
	defer m.hold.Unlock()
	m.mu.Lock()
	if m.paused {
		m.mu.Unlock()
		return nil
	}
	for _, c := range m.cpus {
		c.Park()
	}
	m.mu.Unlock()
	var err error
	if wait {
		for i, c := range m.cpus {
			if !c.WaitParked(parkTimeout) && err == nil {
				err = fmt.Errorf("vCPU %d did not stop within %v", i, parkTimeout)
			}
		}
	}
	if d > 0 {
		time.Sleep(d)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.paused {
		for _, c := range m.cpus {
			c.Unpark()
		}
	}
	return err
}

// storeBarrier returns once every vCPU has passed a block boundary (so every store
// begun before it has landed), without pausing the guest clock.
func (m *Machine) storeBarrier() error { return m.holdVCPUs(0, true) }

// throttleSlice is how long throttled vCPUs run between holds (QEMU's
// CPU_THROTTLE_TIMESLICE_NS).
const throttleSlice = 10 * time.Millisecond

// throttle holds the vCPUs pct percent of the time (auto-converge).
type throttle struct {
	m    *Machine
	mu   sync.Mutex
	pct  int
	stop chan struct{}
	done chan struct{}
}

func (t *throttle) percent() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pct
}

// set changes the throttle (0: off, waiting for the holding goroutine to end).
func (t *throttle) set(pct int) {
	t.mu.Lock()
	t.pct = max(0, min(pct, 99))
	if t.pct == 0 && t.stop != nil {
		close(t.stop)
		done := t.done
		t.stop, t.done = nil, nil
		t.mu.Unlock()
		<-done
		return
	}
	if t.pct > 0 && t.stop == nil {
		t.stop, t.done = make(chan struct{}), make(chan struct{})
		go t.run(t.stop, t.done)
	}
	t.mu.Unlock()
}

func (t *throttle) run(stop, done chan struct{}) {
	defer close(done)
	for {
		select {
		case <-stop:
			return
		case <-time.After(throttleSlice):
		}
		pct := t.percent()
		if pct == 0 {
			return
		}
		t.m.holdVCPUs(throttleSlice*time.Duration(pct)/time.Duration(100-pct), false)
	}
}

package vmstate

import (
	"io"
	"sync"
	"time"
)

// LiveParams drive a live (pre-copy) migration: the board sends guest RAM in passes
// while the guest runs, each pass the pages the dirty log caught during the previous
// one, until what is left can be sent within DowntimeLimit at the bandwidth measured;
// then Stop pauses the guest and the last pages and the device state go.
type LiveParams struct {
	MaxBandwidth  uint64        // bytes per second the passes may use; 0: no limit
	DowntimeLimit time.Duration // QEMU's downtime-limit
	// AutoConverge throttles the vCPUs when the guest dirties memory faster than the
	// passes send it (QEMU's auto-converge: ThrottleTrigger percent of the bytes sent
	// in a period dirtied, twice in a row, throttles by ThrottleInitial percent, then
	// ThrottleIncrement more each time, up to MaxThrottle). Without it a guest that
	// keeps dirtying faster than the link makes the migration fail, in one line.
	AutoConverge                                                     bool
	ThrottleTrigger, ThrottleInitial, ThrottleIncrement, MaxThrottle int
	// Stop pauses the guest for the final pass (the caller's run state changes with it).
	Stop func() error
	// Progress is called after each dirty-log sync (QEMU's MIGRATION_PASS) and at the
	// end; it must not block.
	Progress func(Progress)
	// Cancel, closed, ends the migration at the next write or pass.
	Cancel <-chan struct{}
}

// Progress is a live migration's state after a dirty-log sync.
type Progress struct {
	Syncs            int     // dirty-log syncs so far (QEMU's dirty-sync-count)
	Remaining        uint64  // bytes of RAM dirty and not yet sent
	DirtyRate        uint64  // pages dirtied per second over the last pass
	Bandwidth        float64 // bytes per second the last pass sent at
	ExpectedDowntime time.Duration
	Throttle         int // percent of time the vCPUs are held, 0 when not throttled
	Stats            Stats
}

// RateLimit returns w limited to bps bytes per second (0: unlimited) and the function
// that lifts the limit (the final pass of a live migration runs at full speed, as
// QEMU's completion). Writes are cut into pieces so the limit holds within a fraction
// of a second.
func RateLimit(w io.Writer, bps uint64) (io.Writer, func()) {
	l := &limited{w: w, bps: bps, start: time.Now()}
	return l, func() {
		l.mu.Lock()
		l.bps = 0
		l.mu.Unlock()
	}
}

type limited struct {
	w     io.Writer
	mu    sync.Mutex
	bps   uint64
	start time.Time
	sent  uint64
}

func (l *limited) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		l.mu.Lock()
		bps := l.bps
		l.mu.Unlock()
		n := len(p)
		if bps != 0 {
			n = min(n, int(max(bps/20, 4096)))
			// The window restarts after an idle second so a pause does not buy a burst.
			if el := time.Since(l.start); el > time.Second && float64(l.sent) < float64(bps)*(el.Seconds()-1) {
				l.start, l.sent = time.Now(), 0
			}
			if ahead := time.Duration(float64(l.sent)/float64(bps)*float64(time.Second)) - time.Since(l.start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		m, err := l.w.Write(p[:n])
		total += m
		l.sent += uint64(m)
		if err != nil {
			return total, err
		}
		p = p[n:]
	}
	return total, nil
}

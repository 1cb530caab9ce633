package tcg

import "time"

// SetGuestTime sets the guest clock to t, for restoring a saved guest (snapshots,
// migration): the engine's clock must be paused (PauseClock), and after ResumeClock it
// runs on from t. It reports false, changing nothing, when the clock is running.
func (e *Engine[E]) SetGuestTime(t time.Duration) bool {
	c := &e.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pausedAt.IsZero() || t < 0 {
		return false
	}
	// GuestTime after ResumeClock is since(start) - off; with off = (pausedAt-start) - t
	// it continues from t.
	c.off.Store(int64(c.pausedAt.Sub(e.start)) - int64(t))
	c.frozen.Store(int64(t) + 1)
	return true
}

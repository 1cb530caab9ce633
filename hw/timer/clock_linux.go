package timer

import (
	"container/heap"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// wheel is the Linux host clock: armed callbacks in a min-heap by deadline, the
// earliest programmed into one CLOCK_MONOTONIC timerfd, one goroutine blocked reading
// it that runs what fell due (in deadline order, outside the lock, so callbacks may
// arm and stop timers) and re-arms the timerfd for the next.
type wheel struct {
	start time.Time
	fd    int

	mu    sync.Mutex
	q     timerHeap
	armed time.Duration // deadline in the timerfd, -1 when disarmed
	seq   uint64
}

type wheelTimer struct {
	w     *wheel
	at    time.Duration
	seq   uint64
	f     func()
	index int // in the heap, -1 when not queued
}

func newHostClock() Clock {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
	if err != nil {
		return &goClock{start: time.Now()}
	}
	w := &wheel{start: time.Now(), fd: fd, armed: -1}
	go w.loop()
	return w
}

func (w *wheel) Now() time.Duration { return time.Since(w.start) }

func (w *wheel) AfterFunc(d time.Duration, f func()) Stopper {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seq++
	t := &wheelTimer{w: w, at: w.Now() + d, seq: w.seq, f: f}
	heap.Push(&w.q, t)
	if w.q[0] == t {
		w.armLocked()
	}
	return t
}

func (t *wheelTimer) Stop() bool {
	w := t.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if t.index < 0 {
		return false
	}
	heap.Remove(&w.q, t.index)
	return true
}

// armLocked programs the timerfd for the heap's earliest deadline (or disarms it).
func (w *wheel) armLocked() {
	var spec unix.ItimerSpec
	if len(w.q) == 0 {
		if w.armed < 0 {
			return
		}
		w.armed = -1
	} else {
		at := w.q[0].at
		if at == w.armed {
			return
		}
		w.armed = at
		d := at - w.Now()
		if d <= 0 {
			d = 1 // a zero it_value would disarm
		}
		spec.Value = unix.NsecToTimespec(int64(d))
	}
	unix.TimerfdSettime(w.fd, 0, &spec, nil)
}

func (w *wheel) loop() {
	buf := make([]byte, 8)
	var due []*wheelTimer
	for {
		if _, err := unix.Read(w.fd, buf); err != nil && err != unix.EINTR && err != unix.EAGAIN {
			panic("timer: reading the host clock's timerfd: " + err.Error())
		}
		w.mu.Lock()
		w.armed = -1 // the expiry was consumed
		now := w.Now()
		for len(w.q) > 0 && w.q[0].at <= now {
			due = append(due, heap.Pop(&w.q).(*wheelTimer))
		}
		w.armLocked()
		w.mu.Unlock()
		for i, t := range due {
			t.f()
			due[i] = nil
		}
		due = due[:0]
	}
}

type timerHeap []*wheelTimer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*wheelTimer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	t.index = -1
	*h = old[:len(old)-1]
	return t
}

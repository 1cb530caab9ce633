package timer

import (
	"math/rand"
	"sync"
	"testing"
	"time"
)

// TestHostWheel arms timers from several goroutines (some stopped, some re-arming
// from their callback) and checks that each live one fires once, never early, and
// stopped ones never.
func TestHostWheel(t *testing.T) {
	clk := Host()
	var (
		mu    sync.Mutex
		fired = map[int]time.Duration{}
		wg    sync.WaitGroup
	)
	type arm struct {
		id   int
		at   time.Duration
		stop bool
	}
	arms := make(chan arm, 400)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(g)))
			for i := 0; i < 50; i++ {
				id := g*1000 + i
				d := time.Duration(r.Intn(5000)) * time.Microsecond
				stop := i%3 == 0
				if stop {
					d += 50 * time.Millisecond // far enough to be stopped before it is due
				}
				at := clk.Now() + d
				s := clk.AfterFunc(d, func() {
					mu.Lock()
					fired[id] = clk.Now()
					mu.Unlock()
					if id%5 == 1 { // re-arm from the callback
						clk.AfterFunc(time.Millisecond, func() {
							mu.Lock()
							fired[-id] = clk.Now()
							mu.Unlock()
						})
					}
				})
				if stop && !s.Stop() {
					t.Errorf("Stop of pending timer %d returned false", id)
				}
				arms <- arm{id, at, stop}
			}
		}()
	}
	wg.Wait()
	close(arms)
	time.Sleep(80 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for a := range arms {
		got, ok := fired[a.id]
		switch {
		case a.stop && ok:
			t.Errorf("stopped timer %d fired", a.id)
		case !a.stop && !ok:
			t.Errorf("timer %d never fired", a.id)
		case !a.stop && got < a.at:
			t.Errorf("timer %d fired %v early", a.id, a.at-got)
		}
		if !a.stop && a.id%5 == 1 {
			if _, ok := fired[-a.id]; !ok {
				t.Errorf("timer re-armed by %d's callback never fired", a.id)
			}
		}
	}
}

package tcg

import (
	"sync"
	"time"

	"gemu/hw/memory"
)

// Engine is what the vCPUs of one guest share in the translator: the block cache
// (registered with the guest RAM's code-write notification), the set of vCPUs TLB
// shootdowns reach, the guest clock's epoch and the lock that serialises guest atomics
// the host cannot do in one instruction. The board (or accelerator) creates one per
// guest, passes it to every vCPU, and closes it when the guest goes away. E is the
// target's per-vCPU environment type.
type Engine[E any] struct {
	cache *Cache[func(*E)]
	start time.Time
	clock guestClock // pausable (park.go)
	mu    sync.Mutex
	cpus  []*VCPU[E]
	// Exclusive serialises multi-word atomic operations across the guest's vCPUs (for
	// example A64's 128-bit exclusive pair stores), QEMU's start_exclusive for the
	// cases where a host lock suffices.
	Exclusive sync.Mutex
}

// NewEngine returns the engine of a guest whose RAM is ram (nil: no RAM, for tests).
// A RAM has one engine at a time (its code flags belong to one block cache); Close the
// engine before making another for the same RAM.
func NewEngine[E any](ram *memory.RAM) *Engine[E] {
	return &Engine[E]{cache: NewCache[func(*E)](ram), start: time.Now()}
}

// Cache returns the engine's block cache (targets invalidate through it: instruction
// cache maintenance, stores to code pages; and read code-page flags for TLB fills).
func (e *Engine[E]) Cache() *Cache[func(*E)] { return e.cache }

// Start returns the engine's creation time, the epoch of the guest clock its targets
// count from (so every vCPU sees one clock).
func (e *Engine[E]) Start() time.Time { return e.start }

// Close drops every translated block and unregisters the cache from the RAM. No vCPU
// may run afterwards.
func (e *Engine[E]) Close() { e.cache.Close() }

// VCPUs returns the number of vCPUs registered with the engine.
func (e *Engine[E]) VCPUs() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.cpus)
}

func (e *Engine[E]) add(v *VCPU[E]) {
	e.mu.Lock()
	e.cpus = append(e.cpus, v)
	e.mu.Unlock()
}

func (e *Engine[E]) remove(v *VCPU[E]) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, o := range e.cpus {
		if o == v {
			e.cpus = append(e.cpus[:i], e.cpus[i+1:]...)
			return
		}
	}
}

// each calls f for every registered vCPU but self, under the engine's lock.
func (e *Engine[E]) each(self *VCPU[E], f func(*VCPU[E])) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, o := range e.cpus {
		if o != self {
			f(o)
		}
	}
}

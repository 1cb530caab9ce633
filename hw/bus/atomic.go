package bus

import "sync/atomic"

type atomicEntries struct{ p atomic.Pointer[[]entry] }

func (a *atomicEntries) load() []entry {
	if p := a.p.Load(); p != nil {
		return *p
	}
	return nil
}

func (a *atomicEntries) store(e []entry) { a.p.Store(&e) }

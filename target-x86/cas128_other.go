//go:build !amd64

package x86

import "sync"

var cas128Mu sync.Mutex

func cas128(p *[2]uint64, oldLo, oldHi, newLo, newHi uint64) (lo, hi uint64, swapped bool) {
	cas128Mu.Lock()
	defer cas128Mu.Unlock()
	lo, hi = p[0], p[1]
	if lo == oldLo && hi == oldHi {
		p[0], p[1] = newLo, newHi
		return lo, hi, true
	}
	return lo, hi, false
}

package vhdx

import "gemu/block"

// View lends convert a read-only mapping of [off, off+n) when its blocks hold data
// and follow each other in the file; otherwise nil (read through ReadAt).
func (m *Image) View(off, n int64) ([]byte, func(), error) {
	if off < 0 || n <= 0 || off+n > m.Size() {
		return nil, nil, nil
	}
	start, got := int64(-1), int64(0)
	m.mu.RLock()
	for got < n {
		h, left := m.hostOff(off + got)
		if h < 0 || start >= 0 && h != start+got {
			break
		}
		if start < 0 {
			start = h
		}
		got += min(n-got, left)
	}
	m.mu.RUnlock()
	if got < n {
		return nil, nil, nil
	}
	return block.MapFile(m.f, start, n)
}

package vdi

import "gemu/block"

// View lends convert a read-only mapping of [off, off+n) when its blocks are
// allocated and follow each other in the file; otherwise nil (read through ReadAt).
func (m *Image) View(off, n int64) ([]byte, func(), error) {
	if off < 0 || n <= 0 || off+n > m.size {
		return nil, nil, nil
	}
	start, got := int64(-1), int64(0)
	m.mu.RLock()
	for got < n {
		b, in := (off+got)/blockSize, (off+got)%blockSize
		h := m.hostOff(b)
		if h < 0 || start >= 0 && h+in != start+got {
			break
		}
		if start < 0 {
			start = h + in
		}
		got += min(n-got, blockSize-in)
	}
	m.mu.RUnlock()
	if got < n {
		return nil, nil, nil
	}
	return block.MapFile(m.f, start, n)
}

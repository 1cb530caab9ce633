package vdi

import "gemu/block"

// View lends convert a read-only mapping of [off, off+n) when its blocks are
// allocated and follow each other in the file; otherwise nil (read through ReadAt).
func (m *Image) View(off, n int64) ([]byte, func(), error) {
	if off < 0 || n <= 0 || off+n > m.size {
		return nil, nil, nil
	}
	m.mu.RLock()
	start, ok := block.ContiguousRun(off, n, func(pos int64) (int64, int64) {
		b, in := pos/blockSize, pos%blockSize
		h := m.hostOff(b)
		if h < 0 {
			return -1, 0
		}
		return h + in, blockSize - in
	})
	m.mu.RUnlock()
	if !ok {
		return nil, nil, nil
	}
	return block.MapFile(m.f, start, n)
}

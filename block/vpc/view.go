package vpc

import "gemu/block"

// View lends convert a read-only mapping of [off, off+n) when its blocks hold data
// and follow each other in the file; otherwise nil (read through ReadAt).
func (m *Image) View(off, n int64) ([]byte, func(), error) {
	if off < 0 || n <= 0 || off+n > m.Size() {
		return nil, nil, nil
	}
	m.mu.RLock()
	start, ok := block.ContiguousRun(off, n, m.hostOff)
	m.mu.RUnlock()
	if !ok {
		return nil, nil, nil
	}
	return block.MapFile(m.f, start, n)
}

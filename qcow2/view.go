package qcow2

import "gemu/block"

// View lends convert a read-only mapping of guest range [off, off+n) when it is one
// run of plain data clusters, contiguous in the (data) file: no copy into a buffer.
// Anything else (zero, compressed, unallocated, past the file's end) returns nil and
// the caller reads through ReadAt.
func (img *Image) View(off, n int64) ([]byte, func(), error) {
	if off < 0 || n <= 0 || off+n > img.Size() {
		return nil, nil, nil
	}
	img.mu.Lock()
	ext, err := img.lookup(off, n)
	img.mu.Unlock()
	if err != nil || ext.kind != kData || ext.length < n {
		return nil, nil, nil
	}
	return block.MapFile(img.data, ext.host, n)
}

package block

import (
	"os"

	"golang.org/x/sys/unix"
)

// Viewer is an optional Driver interface: View lends a read-only view of the guest
// bytes [off, off+n) without copying them (a shared mapping of the image file), or
// nil when it cannot. The caller must call release once done with b. Touching b after
// the file shrank faults: callers run with debug.SetPanicOnFault and recover.
type Viewer interface {
	View(off, n int64) (b []byte, release func(), err error)
}

// View maps a raw image's bytes when they lie inside a regular file opened without
// O_DIRECT; convert then scans and writes them straight from the page cache instead
// of first copying them into a buffer (a third of its system time).
func (d *rawDriver) View(off, n int64) ([]byte, func(), error) {
	if d.dio != nil || n <= 0 || off < 0 {
		return nil, nil, nil
	}
	return MapFile(d.f, off, n)
}

// MapFile maps [off, off+n) of the regular file f read-only, populated up front (one
// fault-in per range instead of one per page), for a driver's View; nil when the
// range is not all inside the file or mmap fails.
func MapFile(f *os.File, off, n int64) ([]byte, func(), error) {
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() || off < 0 || n <= 0 || off+n > st.Size() {
		return nil, nil, nil
	}
	pg := int64(os.Getpagesize())
	start := off &^ (pg - 1)
	m, err := unix.Mmap(int(f.Fd()), start, int(off+n-start), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, nil, nil
	}
	return m[off-start:], func() { unix.Munmap(m) }, nil
}

// ContiguousRun reports where [off, off+n) of a guest disk lies in its image file when it
// is one run of data there: at(pos) gives the file offset of guest byte pos (negative
// when not stored as data) and how many bytes from pos on are stored contiguously after
// it. The format drivers' View methods share it (under their own lock), then MapFile.
func ContiguousRun(off, n int64, at func(pos int64) (host, left int64)) (start int64, ok bool) {
	start, got := int64(-1), int64(0)
	for got < n {
		h, left := at(off + got)
		if h < 0 || left <= 0 || start >= 0 && h != start+got {
			return 0, false
		}
		if start < 0 {
			start = h
		}
		got += min(n-got, left)
	}
	return start, got == n
}

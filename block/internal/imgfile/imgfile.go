// Package imgfile holds the small pieces the simple format drivers (vdi, vpc, vhdx,
// qed, qcow1, parallels) share: opening an image file through the block layer's
// QEMU-compatible locking with qemu-img's error text, bounded reads, and option
// parsing helpers. It must not know any format.
package imgfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"gemu/block"
)

// Open opens an image file with the locks of block.RoleImage and returns it and its
// size. Errors read as qemu-img's ("Could not open 'x': No such file or directory").
func Open(filename string, opts block.OpenOptions) (*os.File, int64, error) {
	f, err := block.OpenImageFile(filename, opts, block.RoleImage)
	if err != nil {
		var le *block.LockError
		if errors.As(err, &le) {
			return nil, 0, err
		}
		return nil, 0, fmt.Errorf("Could not open '%s': %s", filename, ErrText(err))
	}
	if opts.Direct {
		if err := block.BufferedAfterDirect(f); err != nil {
			f.Close()
			return nil, 0, err
		}
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("'%s' is not a regular file", filename)
	}
	return f, st.Size(), nil
}

// ErrText renders an OS error as qemu-img does: the strerror text, capitalised.
func ErrText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	s := err.Error()
	if s != "" {
		s = strings.ToUpper(s[:1]) + s[1:]
	}
	return s
}

// ReadAt reads len(p) bytes at off; reading past the end of the file is an error
// naming what was read (what says, e.g., "block map").
func ReadAt(f io.ReaderAt, p []byte, off int64, what string) error {
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		return fmt.Errorf("%s at offset %d lies past the end of the file", what, off)
	}
	return fmt.Errorf("reading %s: %s", what, ErrText(err))
}

// ReadZeroPast reads len(p) bytes at off, zero-filling what lies past the end of the
// file (data areas of images whose last block was cut short read as zeroes, as in QEMU).
func ReadZeroPast(f io.ReaderAt, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err != nil && err != io.EOF {
		return err
	}
	clear(p[n:])
	return nil
}

// Bool parses a qemu bool option value.
func Bool(key, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "on", "yes", "true":
		return true, nil
	case "off", "no", "false":
		return false, nil
	}
	return false, fmt.Errorf("Parameter '%s' expects 'on' or 'off'", key)
}

// CheckOptions refuses -o keys not in valid, as qemu-img does.
func CheckOptions(format string, opts map[string]string, valid ...string) error {
	for k := range opts {
		ok := false
		for _, v := range valid {
			if k == v {
				ok = true
			}
		}
		if !ok {
			return fmt.Errorf("Invalid parameter '%s'", k)
		}
	}
	return nil
}

// Prealloc validates a preallocation option against the modes a format accepts.
func Prealloc(v string, allowed ...string) (string, error) {
	if v == "" {
		return "off", nil
	}
	for _, a := range allowed {
		if v == a {
			return v, nil
		}
	}
	return "", fmt.Errorf("Parameter 'preallocation' does not accept value '%s'", v)
}

// ZeroFill writes n zero bytes at off in chunks.
func ZeroFill(f io.WriterAt, off, n int64) error {
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := f.WriteAt(buf[:k], off); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// IsZero reports whether p is all zero bytes.
func IsZero(p []byte) bool {
	for len(p) >= 8 {
		if p[0]|p[1]|p[2]|p[3]|p[4]|p[5]|p[6]|p[7] != 0 {
			return false
		}
		p = p[8:]
	}
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// HostExtent reports whether the file range starting at off is a hole (reads as
// zeroes without being allocated) and how far, at most n bytes, that stays so, by
// SEEK_DATA/SEEK_HOLE. Where the file system cannot tell, everything is data.
func HostExtent(f *os.File, off, n int64) (hole bool, length int64) {
	fd := int(f.Fd())
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		return true, n
	case err != nil:
		return false, n
	case data > off:
		return true, min(data-off, n)
	}
	h, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil || h <= off {
		return false, n
	}
	return false, min(h-off, n)
}

// ReadOnly gives a read-only driver its writing methods: embedded in the Image of a
// format gemu only reads (qed, qcow v1, parallels), every write is block.ErrReadOnly
// and Flush has nothing to do.
type ReadOnly struct{}

func (ReadOnly) WriteAt([]byte, int64) (int, error)              { return 0, block.ErrReadOnly }
func (ReadOnly) WriteZeroes(int64, int64, block.ZeroFlags) error { return block.ErrReadOnly }
func (ReadOnly) Discard(int64, int64) error                      { return block.ErrReadOnly }
func (ReadOnly) Flush() error                                    { return nil }
func (ReadOnly) Resize(int64, block.ResizeOptions) error         { return block.ErrReadOnly }

// ReadBacking fills q with the backing image's bytes at off: zeroes past its end, and
// all zeroes when there is no backing file (b nil).
func ReadBacking(b block.Driver, q []byte, off int64) error {
	if b == nil {
		clear(q)
		return nil
	}
	n := max(0, min(int64(len(q)), b.Size()-off))
	if n > 0 {
		if _, err := b.ReadAt(q[:n], off); err != nil {
			return err
		}
	}
	clear(q[n:])
	return nil
}

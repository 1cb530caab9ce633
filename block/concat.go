package block

import (
	"fmt"
	"sort"
	"strings"
)

// Concat presents several images one after another as a single read-only image, as
// qemu-img convert does with several source files. Closing it closes nothing: the
// caller owns the parts.
func Concat(parts []Driver) Driver {
	c := &concat{parts: parts}
	off := int64(0)
	for _, p := range parts {
		c.starts = append(c.starts, off)
		off += p.Size()
	}
	c.size = off
	return c
}

type concat struct {
	parts  []Driver
	starts []int64
	size   int64
}

func (c *concat) Format() string { return c.parts[0].Format() }
func (c *concat) Filename() string {
	var n []string
	for _, p := range c.parts {
		n = append(n, p.Filename())
	}
	return strings.Join(n, "+")
}
func (c *concat) Size() int64 { return c.size }

// part returns the index of the part holding off.
func (c *concat) part(off int64) int {
	return sort.Search(len(c.starts), func(i int) bool { return c.starts[i] > off }) - 1
}

func (c *concat) ReadAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) && off < c.size {
		i := c.part(off)
		local := off - c.starts[i]
		n := min(int64(len(p)-done), c.parts[i].Size()-local)
		if n <= 0 {
			return done, fmt.Errorf("concat: empty part at %d", off)
		}
		if err := readFull(c.parts[i], p[done:done+int(n)], local); err != nil {
			return done, err
		}
		done += int(n)
		off += n
	}
	if done < len(p) {
		return done, fmt.Errorf("read beyond end of image")
	}
	return done, nil
}

func (c *concat) BlockStatus(off, n int64) (Status, error) {
	if off >= c.size {
		return Status{Offset: off, HostOffset: -1}, nil
	}
	i := c.part(off)
	local := off - c.starts[i]
	st, err := c.parts[i].BlockStatus(local, min(n, c.parts[i].Size()-local))
	st.Offset = off
	return st, err
}

func (c *concat) WriteAt([]byte, int64) (int, error)        { return 0, ErrReadOnly }
func (c *concat) WriteZeroes(int64, int64, ZeroFlags) error { return ErrReadOnly }
func (c *concat) Discard(int64, int64) error                { return ErrReadOnly }
func (c *concat) Flush() error                              { return nil }
func (c *concat) Resize(int64, ResizeOptions) error         { return ErrReadOnly }
func (c *concat) Close() error                              { return nil }

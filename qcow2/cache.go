package qcow2

import (
	"fmt"
	"io"
)

// table is one cached metadata cluster (an L2 table or a refcount block), kept as the
// on-disk bytes so writing it back is a single pwrite.
type table struct {
	off   int64
	b     []byte
	dirty bool
	used  uint64
}

// tableCache is a bounded write-back cache of metadata clusters; img.mu guards it.
// Dirty tables are written only by Image.writeBack, which orders data, refcount
// blocks, L2 tables and the L1 table so a crash never leaves a reference to data or
// metadata that is not on disk.
type tableCache struct {
	img  *Image
	size int64
	max  int
	m    map[int64]*table
	tick uint64
	// spare is a recycled buffer from an evicted clean table.
	spare []byte
}

func newTableCache(img *Image, size int64, max int) *tableCache {
	return &tableCache{img: img, size: size, max: max, m: map[int64]*table{}}
}

// get returns the table at off, reading it unless fresh (a newly allocated cluster
// that starts zeroed).
func (c *tableCache) get(off int64, fresh bool) (*table, error) {
	c.tick++
	if t, ok := c.m[off]; ok {
		t.used = c.tick
		if fresh {
			clear(t.b)
		}
		return t, nil
	}
	if err := c.makeRoom(); err != nil {
		return nil, err
	}
	b := c.spare
	c.spare = nil
	if b == nil {
		b = make([]byte, c.size)
	}
	if fresh {
		clear(b)
	} else if err := readFull(c.img.f, b, off); err != nil {
		c.spare = b
		return nil, fmt.Errorf("qcow2: could not read metadata at 0x%x: %v", off, err)
	}
	t := &table{off: off, b: b, used: c.tick}
	c.m[off] = t
	return t, nil
}

func (c *tableCache) makeRoom() error {
	if len(c.m) < c.max {
		return nil
	}
	var victim *table
	for _, t := range c.m {
		if victim == nil || t.used < victim.used {
			victim = t
		}
	}
	if victim.dirty {
		if err := c.img.writeBack(false); err != nil {
			return err
		}
	}
	delete(c.m, victim.off)
	c.spare = victim.b
	return nil
}

// drop forgets a table (its cluster was freed or rewritten elsewhere).
func (c *tableCache) drop(off int64) { delete(c.m, off) }

// readFull reads len(b) bytes at off, treating bytes past the end of the file as
// zeroes (as QEMU's file layer does).
func readFull(f interface {
	ReadAt([]byte, int64) (int, error)
}, b []byte, off int64) error {
	n, err := f.ReadAt(b, off)
	if err == io.EOF || (err == nil && n == len(b)) {
		clear(b[n:])
		return nil
	}
	return err
}

package qcow2

import (
	"errors"
	"fmt"
)

// refcounts is the refcount table (in memory, written through on change) and a cache
// of refcount blocks. img.mu guards it.
type refcounts struct {
	img      *Image
	table    []uint64
	blocks   *tableCache
	bits     uint
	perBlock int64 // entries per refcount block
	maxVal   uint64
	freeHint int64 // first cluster that may be free
	// pending are decrements deferred until the L2/L1 updates dropping the references
	// are on disk, so a crash can leak a cluster but never reuse one still referenced.
	pending []int64 // host offsets of single-cluster decrements (bytes, any offset inside)
	// resStart..resEnd are clusters being allocated, not yet counted.
	resStart, resEnd int64
	// tableDirty: table entries changed in memory; written after the blocks they name.
	tableDirty bool
}

func loadRefcounts(img *Image) (*refcounts, error) {
	h := img.hdr
	n := int64(h.refTableClusters) * img.clusterSize / 8
	buf := make([]byte, n*8)
	if err := readFull(img.f, buf, int64(h.refTableOffset)); err != nil {
		return nil, fmt.Errorf("qcow2: could not read refcount table: %v", err)
	}
	rc := &refcounts{img: img, table: make([]uint64, n), bits: 1 << h.refcountOrder}
	for i := range rc.table {
		rc.table[i] = be.Uint64(buf[i*8:])
	}
	rc.perBlock = img.clusterSize * 8 / int64(rc.bits)
	if rc.bits == 64 {
		rc.maxVal = ^uint64(0)
	} else {
		rc.maxVal = uint64(1)<<rc.bits - 1
	}
	rc.blocks = newTableCache(img, img.clusterSize, cacheBudget(img.clusterSize)/4+4)
	return rc, nil
}

func (rc *refcounts) entry(b []byte, i int64) uint64 {
	switch rc.bits {
	case 1, 2, 4:
		per := 8 / int64(rc.bits)
		return uint64(b[i/per]>>(uint(i%per)*rc.bits)) & rc.maxVal
	case 8:
		return uint64(b[i])
	case 16:
		return uint64(be.Uint16(b[i*2:]))
	case 32:
		return uint64(be.Uint32(b[i*4:]))
	default:
		return be.Uint64(b[i*8:])
	}
}

func (rc *refcounts) setEntry(b []byte, i int64, v uint64) {
	switch rc.bits {
	case 1, 2, 4:
		per := 8 / int64(rc.bits)
		sh := uint(i%per) * rc.bits
		b[i/per] = b[i/per]&^byte(rc.maxVal<<sh) | byte(v<<sh)
	case 8:
		b[i] = byte(v)
	case 16:
		be.PutUint16(b[i*2:], uint16(v))
	case 32:
		be.PutUint32(b[i*4:], uint32(v))
	default:
		be.PutUint64(b[i*8:], v)
	}
}

// blockFor returns the refcount block covering cluster c, or nil if unallocated.
func (rc *refcounts) blockFor(c int64) (*table, error) {
	ti := c / rc.perBlock
	if ti >= int64(len(rc.table)) {
		return nil, nil
	}
	off := int64(rc.table[ti] & refTableMask)
	if off == 0 {
		return nil, nil
	}
	if off&(rc.img.clusterSize-1) != 0 {
		return nil, fmt.Errorf("qcow2: refblock offset 0x%x unaligned (reftable index 0x%x)", off, ti)
	}
	if off < 0 || off >= 1<<56 {
		return nil, fmt.Errorf("qcow2: refblock offset 0x%x invalid (reftable index 0x%x)", uint64(off), ti)
	}
	return rc.blocks.get(off, false)
}

// get returns the refcount of cluster c.
func (rc *refcounts) get(c int64) (uint64, error) {
	t, err := rc.blockFor(c)
	if t == nil || err != nil {
		return 0, err
	}
	return rc.entry(t.b, c%rc.perBlock), nil
}

// add changes the refcount of cluster c by delta, creating refcount blocks (and
// growing the table) as needed.
func (rc *refcounts) add(c int64, delta int64) error {
	t, err := rc.blockFor(c)
	if err != nil {
		return err
	}
	if t == nil {
		if delta < 0 {
			return fmt.Errorf("qcow2: refcount of cluster %d would drop below zero", c)
		}
		if t, err = rc.newBlock(c / rc.perBlock); err != nil {
			return err
		}
	}
	i := c % rc.perBlock
	v := rc.entry(t.b, i)
	nv := uint64(int64(v) + delta)
	if (delta < 0 && uint64(-delta) > v) || (delta > 0 && (nv < v || nv > rc.maxVal)) {
		return fmt.Errorf("qcow2: refcount of cluster %d out of range (%d%+d)", c, v, delta)
	}
	rc.setEntry(t.b, i, nv)
	t.dirty = true
	if nv == 0 {
		rc.freeHint = min(rc.freeHint, c)
		if fb := rc.img.freeByte; fb != 0 && fb>>rc.img.clusterBits == c {
			rc.img.freeByte = 0
		}
	}
	return nil
}

// newBlock creates refcount block ti. It is placed at the first free cluster inside
// the range it describes when possible (so it counts itself), else at the end.
func (rc *refcounts) newBlock(ti int64) (*table, error) {
	if ti >= int64(len(rc.table)) {
		if err := rc.growTable(ti + 1); err != nil {
			return nil, err
		}
		if rc.table[ti] != 0 {
			return rc.blockFor(ti * rc.perBlock)
		}
	}
	// The clusters of a range without a block all have refcount zero; take the first
	// one that no pending allocation has reserved.
	c := ti * rc.perBlock
	for c >= rc.resStart && c < rc.resEnd {
		c++
	}
	off := c << rc.img.clusterBits
	t, err := rc.blocks.get(off, true)
	if err != nil {
		return nil, err
	}
	t.dirty = true
	rc.setEntry(t.b, c%rc.perBlock, 1)
	rc.table[ti] = uint64(off)
	rc.tableDirty = true
	rc.img.extendFile(off + rc.img.clusterSize)
	return t, nil
}

// growTable moves the refcount table to a bigger one at the end of the file, with
// the refcount blocks needed to describe the new area placed just before it.
func (rc *refcounts) growTable(minEntries int64) error {
	img := rc.img
	cs := img.clusterSize
	entries := max(minEntries, int64(len(rc.table))*2)
	tableClusters := (entries*8 + cs - 1) / cs
	if tableClusters*cs > maxRefTableBytes {
		return errors.New("qcow2: refcount table would grow too large")
	}
	entries = tableClusters * cs / 8
	// Past the file and past any run being allocated right now.
	start := max(img.endCluster(), rc.resEnd)
	// Count the new blocks needed so the area (blocks + table) is described.
	var nblocks int64
	for {
		end := start + nblocks + tableClusters
		var need int64
		for ti := start / rc.perBlock; ti <= (end-1)/rc.perBlock; ti++ {
			if ti >= int64(len(rc.table)) || rc.table[ti] == 0 {
				need++
			}
		}
		if need == nblocks {
			break
		}
		nblocks = need
	}
	newTable := make([]uint64, entries)
	copy(newTable, rc.table)
	end := start + nblocks + tableClusters
	bi := start
	for ti := start / rc.perBlock; ti <= (end-1)/rc.perBlock; ti++ {
		if ti < int64(len(rc.table)) && rc.table[ti] != 0 {
			continue
		}
		off := bi << img.clusterBits
		t, err := rc.blocks.get(off, true)
		if err != nil {
			return err
		}
		t.dirty = true
		newTable[ti] = uint64(off)
		bi++
	}
	old := rc.table
	oldOff, oldClusters := int64(img.hdr.refTableOffset), int64(img.hdr.refTableClusters)
	rc.table = newTable
	for c := start; c < end; c++ {
		if err := rc.add(c, 1); err != nil {
			return err
		}
	}
	tableOff := (start + nblocks) << img.clusterBits
	img.extendFile(end << img.clusterBits)
	rc.tableDirty = false
	if err := img.writeBack(false); err != nil {
		return err
	}
	buf := make([]byte, tableClusters*cs)
	for i, v := range newTable {
		be.PutUint64(buf[i*8:], v)
	}
	if _, err := img.f.WriteAt(buf, tableOff); err != nil {
		return err
	}
	if err := img.sync(img.f); err != nil {
		return err
	}
	var hb [12]byte
	be.PutUint64(hb[:], uint64(tableOff))
	be.PutUint32(hb[8:], uint32(tableClusters))
	if _, err := img.f.WriteAt(hb[:], 48); err != nil {
		rc.table = old
		return err
	}
	img.hdr.refTableOffset, img.hdr.refTableClusters = uint64(tableOff), uint32(tableClusters)
	if err := img.sync(img.f); err != nil {
		return err
	}
	for c := oldOff >> img.clusterBits; c < oldOff>>img.clusterBits+oldClusters; c++ {
		if err := rc.add(c, -1); err != nil {
			return err
		}
	}
	return nil
}

// writeTable rewrites the whole table in place (repair, amend).
func (rc *refcounts) writeTable() error {
	buf := make([]byte, int64(rc.img.hdr.refTableClusters)*rc.img.clusterSize)
	for i, v := range rc.table {
		if i*8 >= len(buf) {
			break
		}
		be.PutUint64(buf[i*8:], v)
	}
	_, err := rc.img.f.WriteAt(buf, int64(rc.img.hdr.refTableOffset))
	return err
}

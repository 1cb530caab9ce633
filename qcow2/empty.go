package qcow2

// canEmptyCompletely reports whether MakeEmpty may rebuild the image from scratch
// as QEMU's make_completely_empty does: a v3 image (it relies on the dirty bit) with
// nothing that reserves clusters outside the tree (snapshots, bitmaps, an external
// data file), whose header, refcount table, one refcount block and L1 table fit in
// one refcount block. Caller holds mu.
func (img *Image) canEmptyCompletely() bool {
	l1c := (int64(len(img.l1))*8 + img.clusterSize - 1) / img.clusterSize
	return img.hdr.version >= 3 && len(img.snapshots) == 0 && !img.external &&
		img.hdr.autoclear&autoclearBitmap == 0 && 3+l1c <= img.rc.perBlock
}

// emptyCompletely leaves the image as QEMU's make_completely_empty does (so the
// emptied top of a commit is byte for byte what qemu-img commit leaves): the header
// in cluster 0, the refcount table in cluster 1, its one refcount block in cluster
// 2, the zeroed L1 table from cluster 3, and the file truncated after it.
//
// Crash safety: the dirty bit goes to disk first, so an interrupted run leaves an
// image whose refcounts the next read-write open rebuilds (as QEMU's lazy refcounts);
// the L1 table is zeroed before anything else changes, so every read falls through to
// the backing file, which already holds the committed data. Caller holds wmu and mu,
// with the metadata written back.
func (img *Image) emptyCompletely() error {
	cs := img.clusterSize
	l1c := (int64(len(img.l1))*8 + cs - 1) / cs
	h := img.hdr
	sync := func() error { return img.sync(img.f) }
	var b8 [8]byte
	be.PutUint64(b8[:], h.incompatible|incDirty)
	if _, err := img.f.WriteAt(b8[:], 72); err != nil {
		return err
	}
	if err := sync(); err != nil {
		return err
	}
	h.incompatible |= incDirty
	zero := make([]byte, cs)
	for i := int64(0); i < l1c; i++ {
		if _, err := img.f.WriteAt(zero, int64(h.l1Offset)+i*cs); err != nil {
			return err
		}
	}
	clear(img.l1)
	img.l1Dirty = false
	img.l2 = newTableCache(img, cs, img.l2.max)
	if err := sync(); err != nil {
		return err
	}
	// The new refcount table (cluster 1) and block (cluster 2), then the header.
	rt := make([]byte, cs)
	be.PutUint64(rt, uint64(2*cs))
	rb := make([]byte, cs)
	for k := int64(0); k < 3+l1c; k++ {
		img.rc.setEntry(rb, k, 1)
	}
	if _, err := img.f.WriteAt(rb, 2*cs); err != nil {
		return err
	}
	if _, err := img.f.WriteAt(rt, cs); err != nil {
		return err
	}
	// The L1 table moves to cluster 3 (zeroes there, whatever was in it).
	for i := int64(0); i < l1c; i++ {
		if _, err := img.f.WriteAt(zero, (3+i)*cs); err != nil {
			return err
		}
	}
	if err := sync(); err != nil {
		return err
	}
	var hb [20]byte
	be.PutUint64(hb[0:], uint64(3*cs))
	be.PutUint64(hb[8:], uint64(cs))
	be.PutUint32(hb[16:], 1)
	if _, err := img.f.WriteAt(hb[:], 40); err != nil {
		return err
	}
	if err := sync(); err != nil {
		return err
	}
	h.l1Offset, h.refTableOffset, h.refTableClusters = uint64(3*cs), uint64(cs), 1
	end := (3 + l1c) * cs
	if err := img.f.Truncate(end); err != nil {
		return err
	}
	img.fileSize = end
	rc := img.rc
	rc.table = make([]uint64, cs/8)
	rc.table[0] = uint64(2 * cs)
	rc.blocks = newTableCache(img, cs, rc.blocks.max)
	rc.tableDirty = false
	rc.pending = nil
	rc.resStart, rc.resEnd = 0, 0
	rc.freeHint = 0
	img.freeByte = 0
	img.lastCheck = nil
	img.metaPre = 0
	// Clean again (QEMU's qcow2_mark_clean), unless lazy refcounts keep it dirty.
	if h.compatible&compatLazyRefs == 0 {
		be.PutUint64(b8[:], h.incompatible&^incDirty)
		if _, err := img.f.WriteAt(b8[:], 72); err != nil {
			return err
		}
		if err := sync(); err != nil {
			return err
		}
		h.incompatible &^= incDirty
	}
	return nil
}

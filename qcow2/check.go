package qcow2

import (
	"fmt"

	"gemu/block"
)

// Check recomputes every refcount from the metadata (header, L1/L2 tables of the
// active state and every snapshot, refcount table and blocks, snapshot table) and
// compares with the stored ones, as qemu-img check does. With a repair mode it fixes
// leaks (and, for RepairAll, missing references and copied flags).
//
// After a repair qemu-img checks again without repairing and reports that second
// result with the fixed counts of the first: callers do the same.
func (img *Image) Check(mode block.RepairMode) (*block.CheckResult, error) {
	if mode != block.RepairNone && img.ro {
		return nil, block.ErrReadOnly
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	if mode != block.RepairNone {
		if err := img.writeBack(false); err != nil {
			return nil, err
		}
	}
	return img.checkLocked(mode)
}

func (img *Image) check(mode block.RepairMode) (*block.CheckResult, error) {
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.checkLocked(mode)
}

type checker struct {
	img  *Image
	ref  []uint64 // computed refcounts per host cluster
	res  *block.CheckResult
	next int64 // next contiguous offset for fragmentation
}

func (c *checker) msg(format string, a ...any) {
	c.res.Messages = append(c.res.Messages, fmt.Sprintf(format, a...))
}

// inc counts a reference to every cluster overlapping [off, off+n).
func (c *checker) inc(off, n int64) {
	if n <= 0 {
		return
	}
	if off < 0 {
		c.msg("ERROR: reference to an invalid offset 0x%x", uint64(off))
		c.res.Corruptions++
		return
	}
	img := c.img
	first, last := off>>img.clusterBits, (off+n-1)>>img.clusterBits
	if last >= 1<<(56-img.clusterBits) {
		c.msg("ERROR: reference to cluster past the maximum image size (offset 0x%x)", off)
		c.res.CheckErrors++
		return
	}
	if int(last) >= len(c.ref) {
		if last > 4*(img.endCluster()+1)+(1<<20) {
			c.msg("ERROR: reference far past the end of the image (offset 0x%x)", off)
			c.res.Corruptions++
			return
		}
		nr := make([]uint64, last+1)
		copy(nr, c.ref)
		c.ref = nr
	}
	for k := first; k <= last; k++ {
		c.ref[k]++
	}
}

func (img *Image) checkLocked(mode block.RepairMode) (*block.CheckResult, error) {
	if err := img.loadTables(); err != nil {
		return nil, err
	}
	res := &block.CheckResult{Filename: img.filename, Format: "qcow2"}
	c := &checker{img: img, res: res, ref: make([]uint64, img.endCluster())}
	cs := img.clusterSize
	res.TotalClusters = (img.size + cs - 1) >> img.clusterBits
	c.inc(0, cs)
	if err := c.l1(img.l1, int64(img.hdr.l1Offset), true); err != nil {
		return nil, err
	}
	for _, s := range img.snapshots {
		l1, err := img.readL1(int64(s.l1Offset), int(s.l1Size))
		if err != nil {
			return nil, err
		}
		if err := c.l1(l1, int64(s.l1Offset), false); err != nil {
			return nil, err
		}
	}
	if len(img.snapshots) > 0 {
		c.inc(int64(img.hdr.snapshotsOffset), int64(len(encodeSnapshots(img.snapshots))))
	}
	c.inc(int64(img.hdr.refTableOffset), int64(img.hdr.refTableClusters)*cs)
	rebuild := false
	for i, e := range img.rc.table {
		off := int64(e & refTableMask)
		if off == 0 {
			continue
		}
		if off&(cs-1) != 0 {
			c.msg("ERROR refcount block %d is not cluster aligned; refcount table entry corrupted", i)
			res.Corruptions++
			rebuild = true
			continue
		}
		if off < 0 || off>>img.clusterBits >= img.endCluster() {
			c.msg("ERROR refcount block %d is outside image", i)
			res.Corruptions++
			rebuild = true
			continue
		}
		c.inc(off, cs)
	}
	// Compare.
	n := int64(len(c.ref))
	badBlock := map[int64]bool{}
	stored := func(k int64) uint64 {
		bi := k / img.rc.perBlock
		if badBlock[bi] {
			return 0
		}
		r, err := img.rc.get(k)
		if err != nil {
			// Once per refcount block, as the rest of it cannot be read either.
			badBlock[bi] = true
			c.msg("Can't get refcount for cluster %d: %v", k, err)
			res.CheckErrors++
			return 0
		}
		return r
	}
	var highest int64 = -1
	type fix struct {
		k     int64
		delta int64
	}
	var fixes []fix
	for k := int64(0); k < n; k++ {
		r1, r2 := stored(k), c.ref[k]
		if r1 > 0 || r2 > 0 {
			highest = k
		}
		if r1 == r2 {
			continue
		}
		fixing := false
		if r1 == 0 {
			rebuild = true
		} else if r1 > r2 && mode != block.RepairNone {
			fixing = true
			res.LeaksFixed++
		} else if r1 < r2 && mode == block.RepairAll {
			fixing = true
			res.CorruptionsFixed++
		}
		word := "Leaked"
		switch {
		case fixing:
			word = "Repairing"
		case r1 < r2:
			word = "ERROR"
		}
		c.msg("%s cluster %d refcount=%d reference=%d", word, k, r1, r2)
		if fixing {
			fixes = append(fixes, fix{k, int64(r2) - int64(r1)})
			continue
		}
		if r1 < r2 {
			res.Corruptions++
		} else {
			res.Leaks++
		}
	}
	if mode == block.RepairAll && rebuild {
		c.msg("Rebuilding refcount structure")
		// The old table and blocks are replaced: stop counting them.
		dec := func(off, n int64) {
			for k := off >> img.clusterBits; k <= (off+n-1)>>img.clusterBits && k < int64(len(c.ref)); k++ {
				if c.ref[k] > 0 {
					c.ref[k]--
				}
			}
		}
		dec(int64(img.hdr.refTableOffset), int64(img.hdr.refTableClusters)*cs)
		for _, e := range img.rc.table {
			if off := int64(e & refTableMask); off > 0 && off&(cs-1) == 0 && off>>img.clusterBits < int64(len(c.ref)) {
				dec(off, cs)
			}
		}
		if err := img.rebuildRefcounts(c.ref); err != nil {
			return nil, err
		}
		res.CorruptionsFixed += res.Corruptions
		res.Corruptions = 0
		fixes = nil
	} else if rebuild && mode != block.RepairNone {
		c.msg("ERROR need to rebuild refcount structures")
		res.CheckErrors++
	}
	for _, f := range fixes {
		if err := img.rc.add(f.k, f.delta); err != nil {
			return nil, err
		}
	}
	if err := c.copiedFlags(mode == block.RepairAll); err != nil {
		return nil, err
	}
	if mode != block.RepairNone {
		if err := img.writeBack(false); err != nil {
			return nil, err
		}
		if img.hdr.incompatible&incDirty != 0 {
			img.hdr.incompatible &^= incDirty
			var b [8]byte
			be.PutUint64(b[:], img.hdr.incompatible)
			if _, err := img.f.WriteAt(b[:], 72); err != nil {
				return nil, err
			}
		}
		img.rc.freeHint = 0
	}
	res.ImageEndOffset = (highest + 1) * cs
	img.lastCheck = c.ref
	return res, nil
}

// l1 counts an L1 table, its L2 tables and their clusters.
func (c *checker) l1(l1 []uint64, off int64, active bool) error {
	img := c.img
	cs := img.clusterSize
	c.inc(off, int64(len(l1))*8)
	for i, e := range l1 {
		l2off := int64(e & l1OffsetMask)
		if l2off == 0 {
			continue
		}
		if l2off&(cs-1) != 0 {
			c.msg("ERROR l2_offset=%x: Table is not cluster aligned; L1 entry corrupted", l2off)
			c.res.Corruptions++
			continue
		}
		_ = i
		c.inc(l2off, cs)
		t, err := img.l2.get(l2off, false)
		if err != nil {
			return err
		}
		if err := c.l2(t, active); err != nil {
			return err
		}
	}
	return nil
}

func (c *checker) l2(t *table, active bool) error {
	img := c.img
	cs := img.clusterSize
	es := img.entrySize()
	c.next = 0 // QEMU counts fragmentation within each L2 table
	for i := int64(0); i < int64(1)<<img.l2Bits; i++ {
		e := be.Uint64(t.b[i*es:])
		if e&flagCompressed != 0 {
			if e&flagCopied != 0 {
				coff, _ := img.compressedRange(e)
				c.msg("ERROR: coffset=0x%x: copied flag must never be set for compressed clusters", coff)
				c.res.Corruptions++
			}
			if img.extL2 && be.Uint64(t.b[i*es+8:]) != 0 {
				c.msg("ERROR compressed cluster %d with non-zero subcluster allocation bitmap, entry=0x%x", i, e)
				c.res.Corruptions++
			}
			if active {
				c.res.AllocatedClusters++
				c.res.CompressedClusters++
				c.res.FragmentedClusters++
			}
			coff, csize := img.compressedRange(e)
			c.inc(coff, csize)
			continue
		}
		host := int64(e & l2OffsetMask)
		normal := host != 0 || (img.external && e&flagCopied != 0)
		if !normal {
			continue
		}
		if active {
			c.res.AllocatedClusters++
			if c.next != 0 && host != c.next {
				c.res.FragmentedClusters++
			}
			c.next = host + cs
		}
		if host&(cs-1) != 0 {
			c.msg("ERROR offset=%x: Cluster is not properly aligned; L2 entry corrupted.", host)
			c.res.Corruptions++
			continue
		}
		if !img.external {
			c.inc(host, cs)
		}
	}
	return nil
}

// copiedFlags checks QCOW_OFLAG_COPIED on the active tables against the refcounts.
func (c *checker) copiedFlags(repair bool) error {
	img := c.img
	word := "ERROR"
	if repair {
		word = "Repairing"
	}
	for i, e := range img.l1 {
		l2off := int64(e & l1OffsetMask)
		if l2off == 0 || l2off&(img.clusterSize-1) != 0 {
			continue
		}
		r, err := img.rc.get(l2off >> img.clusterBits)
		if err != nil {
			return err
		}
		if (r == 1) != (e&flagCopied != 0) {
			c.msg("%s OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d", word, i, e, r)
			if repair {
				c.res.CorruptionsFixed++
			} else {
				c.res.Corruptions++
			}
		}
		if img.external {
			continue
		}
		t, err := img.l2.get(l2off, false)
		if err != nil {
			return err
		}
		es := img.entrySize()
		for j := int64(0); j < int64(1)<<img.l2Bits; j++ {
			le := be.Uint64(t.b[j*es:])
			h := int64(le & l2OffsetMask)
			if le&flagCompressed != 0 || h == 0 || h&(img.clusterSize-1) != 0 {
				continue
			}
			r, err := img.rc.get(h >> img.clusterBits)
			if err != nil {
				return err
			}
			if (r == 1) != (le&flagCopied != 0) {
				c.msg("%s OFLAG_COPIED data cluster: l2_entry=%x refcount=%d", word, le, r)
				if repair {
					c.res.CorruptionsFixed++
				} else {
					c.res.Corruptions++
				}
			}
		}
	}
	if repair {
		return img.refreshCopiedFlags()
	}
	return nil
}

// rebuildRefcounts writes fresh refcount blocks and a fresh table describing ref
// (plus themselves) at the end of the file, then switches the header to them.
func (img *Image) rebuildRefcounts(ref []uint64) error {
	cs := img.clusterSize
	rc := img.rc
	start := int64(len(ref))
	// Blocks and table go at the end: size them to cover everything including
	// themselves.
	var nblocks, tclusters int64 = 1, 1
	for {
		total := start + nblocks + tclusters
		nb := (total + rc.perBlock - 1) / rc.perBlock
		tc := (nb*8 + cs - 1) / cs
		if nb <= nblocks && tc <= tclusters {
			break
		}
		nblocks, tclusters = max(nb, nblocks), max(tc, tclusters)
	}
	if tclusters*cs > maxRefTableBytes {
		return fmt.Errorf("qcow2: refcount table would be too large")
	}
	full := make([]uint64, start+nblocks+tclusters)
	copy(full, ref)
	for k := start; k < int64(len(full)); k++ {
		full[k] = 1
	}
	table := make([]uint64, tclusters*cs/8)
	blk := make([]byte, cs)
	for b := int64(0); b*rc.perBlock < int64(len(full)); b++ {
		clear(blk)
		for k := b * rc.perBlock; k < min(int64(len(full)), (b+1)*rc.perBlock); k++ {
			if full[k] > rc.maxVal {
				return fmt.Errorf("qcow2: refcount of cluster %d exceeds the refcount width", k)
			}
			rc.setEntry(blk, k-b*rc.perBlock, full[k])
		}
		off := (start + b) * cs
		if _, err := img.f.WriteAt(blk, off); err != nil {
			return err
		}
		table[b] = uint64(off)
	}
	tb := make([]byte, tclusters*cs)
	for i, v := range table {
		be.PutUint64(tb[i*8:], v)
	}
	toff := (start + nblocks) * cs
	if _, err := img.f.WriteAt(tb, toff); err != nil {
		return err
	}
	if err := img.sync(img.f); err != nil {
		return err
	}
	oldOff, oldClusters := img.hdr.refTableOffset, img.hdr.refTableClusters
	img.hdr.refTableOffset, img.hdr.refTableClusters = uint64(toff), uint32(tclusters)
	if err := img.writeHeader(); err != nil {
		img.hdr.refTableOffset, img.hdr.refTableClusters = oldOff, oldClusters
		return err
	}
	img.extendFile(toff + tclusters*cs)
	rc.table = table
	rc.blocks = newTableCache(img, cs, rc.blocks.max)
	rc.tableDirty = false
	rc.freeHint = 0
	return img.sync(img.f)
}

package qcow2

import (
	"errors"
	"fmt"
	"os"
	"sort"

	"gemu/block"
	"golang.org/x/sys/unix"
)

// Writing. Writers hold wmu for the whole request; metadata changes hold mu. The order
// that keeps a crash harmless: host clusters are counted (refcount +1, in the cache)
// before anything references them; guest data is written before the L2 entry naming
// it changes; writeBack puts data, then refcount blocks and table, then L2 tables,
// then the L1 table on disk with a sync between each stage; references dropped are
// decremented only after the tables that dropped them are on disk.

type writeState struct {
	started bool // header marked for writing (dirty bit, autoclear bits)
}

func (img *Image) sync(f *os.File) error {
	if img.unsafe {
		return nil
	}
	return unix.Fdatasync(int(f.Fd()))
}

func (img *Image) extendFile(end int64) {
	if end > img.fileSize {
		img.fileSize = end
	}
}

// endCluster is the first cluster index past all data and metadata.
func (img *Image) endCluster() int64 {
	return (img.fileSize + img.clusterSize - 1) >> img.clusterBits
}

// writeBack writes all dirty metadata in crash-safe order. Caller holds mu.
func (img *Image) writeBack(final bool) error {
	if img.dataSync {
		if err := img.sync(img.data); err != nil {
			return err
		}
		img.dataSync = false
	}
	if err := img.writeDirty(img.rc.blocks); err != nil {
		return err
	}
	if img.rc.tableDirty {
		if err := img.rc.writeTable(); err != nil {
			return err
		}
		img.rc.tableDirty = false
	}
	l2Dirty := false
	for _, t := range img.l2.m {
		if t.dirty {
			l2Dirty = true
			break
		}
	}
	if l2Dirty || img.l1Dirty {
		if err := img.sync(img.f); err != nil {
			return err
		}
		if err := img.writeDirty(img.l2); err != nil {
			return err
		}
		if img.l1Dirty {
			if err := img.sync(img.f); err != nil {
				return err
			}
			if err := img.writeL1(); err != nil {
				return err
			}
		}
	}
	if len(img.rc.pending) > 0 {
		if err := img.sync(img.f); err != nil {
			return err
		}
		pend := img.rc.pending
		img.rc.pending = nil
		for _, off := range pend {
			if err := img.rc.add(off>>img.clusterBits, -1); err != nil {
				return err
			}
		}
		if err := img.writeDirty(img.rc.blocks); err != nil {
			return err
		}
	}
	if final {
		return img.sync(img.f)
	}
	return nil
}

// hasDirty reports whether any metadata waits in memory. Caller holds mu.
func (img *Image) hasDirty() bool {
	if img.l1Dirty || img.dataSync || img.rc.tableDirty || len(img.rc.pending) > 0 {
		return true
	}
	for _, c := range []*tableCache{img.l2, img.rc.blocks} {
		for _, t := range c.m {
			if t.dirty {
				return true
			}
		}
	}
	return false
}

func (img *Image) writeDirty(c *tableCache) error {
	for _, t := range c.m {
		if t.dirty {
			if _, err := img.f.WriteAt(t.b, t.off); err != nil {
				return err
			}
			t.dirty = false
		}
	}
	return nil
}

// writeL1 writes the active L1 table in place.
func (img *Image) writeL1() error {
	b := make([]byte, len(img.l1)*8)
	for i, e := range img.l1 {
		be.PutUint64(b[i*8:], e)
	}
	if _, err := img.f.WriteAt(b, int64(img.hdr.l1Offset)); err != nil {
		return err
	}
	img.l1Dirty = false
	return nil
}

// allocClusters counts n contiguous free clusters and returns the first one's offset.
// Caller holds mu.
func (img *Image) allocClusters(n int64) (int64, error) {
	rc := img.rc
	c := rc.freeHint
	firstFree := int64(-1)
	run := int64(0)
	for run < n {
		t, err := rc.blockFor(c + run)
		if err != nil {
			return 0, err
		}
		if t == nil {
			// No block: this range is all free.
			if firstFree < 0 {
				firstFree = c
			}
			end := ((c+run)/rc.perBlock + 1) * rc.perBlock
			run = min(n, end-c)
			continue
		}
		if rc.entry(t.b, (c+run)%rc.perBlock) == 0 {
			if firstFree < 0 {
				firstFree = c + run
			}
			run++
			continue
		}
		c += run + 1
		run = 0
	}
	if c > 1<<(56-img.clusterBits) {
		return 0, errors.New("qcow2: image file would be too large")
	}
	if err := img.overlapsMetadata(c<<img.clusterBits, n<<img.clusterBits); err != nil {
		return 0, err
	}
	rc.resStart, rc.resEnd = c, c+n
	defer func() { rc.resStart, rc.resEnd = 0, 0 }()
	for i := c; i < c+n; i++ {
		if err := rc.add(i, 1); err != nil {
			return 0, err
		}
	}
	if firstFree == c {
		rc.freeHint = c + n
	} else if firstFree >= 0 {
		rc.freeHint = firstFree
	}
	img.extendFile((c + n) << img.clusterBits)
	return c << img.clusterBits, nil
}

// overlapsMetadata refuses an allocation over the header or a table the header names:
// with consistent refcounts it cannot happen, so it means the refcounts are damaged
// (QEMU's overlap check plays the same role).
func (img *Image) overlapsMetadata(off, n int64) error {
	h := img.hdr
	regions := [][2]int64{
		{0, img.clusterSize},
		{int64(h.l1Offset), int64(h.l1Size) * 8},
		{int64(h.refTableOffset), int64(h.refTableClusters) * img.clusterSize},
	}
	if h.nbSnapshots > 0 {
		regions = append(regions, [2]int64{int64(h.snapshotsOffset), int64(h.nbSnapshots) * 40})
	}
	for _, r := range regions {
		if r[1] > 0 && off < r[0]+r[1] && r[0] < off+n {
			return fmt.Errorf("qcow2: refusing to allocate 0x%x over metadata at 0x%x: refcounts are damaged (run check -r all)", off, r[0])
		}
	}
	return nil
}

// freeRange queues decrements for the clusters overlapping [off, off+n).
func (img *Image) freeRange(off, n int64) error {
	for c := off >> img.clusterBits; c <= (off+n-1)>>img.clusterBits; c++ {
		img.rc.pending = append(img.rc.pending, c<<img.clusterBits)
	}
	return nil
}

// freeEntry queues the release of what an L2 entry references.
func (img *Image) freeEntry(e uint64) {
	if img.external {
		return
	}
	if e&flagCompressed != 0 {
		coff, csize := img.compressedRange(e)
		img.freeRange(coff, csize)
		return
	}
	if h := int64(e & l2OffsetMask); h != 0 {
		img.rc.pending = append(img.rc.pending, h)
	}
}

// startWriting marks the header before the first change: the dirty bit with lazy
// refcounts, and clearing autoclear bits we do not maintain (bitmaps).
func (img *Image) startWriting() error {
	if img.w != nil && img.w.started {
		return nil
	}
	if img.w == nil {
		img.w = &writeState{}
	}
	h := img.hdr
	if h.version == 3 {
		inc, ac := h.incompatible, h.autoclear
		if h.bitmaps == nil {
			ac &^= autoclearBitmap // no bitmaps we maintain
		}
		if h.compatible&compatLazyRefs != 0 {
			inc |= incDirty
		}
		if inc != h.incompatible || ac != h.autoclear {
			var b [24]byte
			be.PutUint64(b[:], inc)
			be.PutUint64(b[8:], h.compatible)
			be.PutUint64(b[16:], ac)
			if _, err := img.f.WriteAt(b[:], 72); err != nil {
				return err
			}
			if err := img.sync(img.f); err != nil {
				return err
			}
			h.incompatible, h.autoclear = inc, ac
		}
	}
	img.w.started = true
	return img.beginBitmaps()
}

// l2Table returns the L2 table for guest cluster ci ready for modification: allocated
// if missing, copied if shared with a snapshot. Caller holds mu.
func (img *Image) l2Table(ci int64) (*table, error) {
	l1i := ci >> img.l2Bits
	if l1i >= int64(len(img.l1)) {
		return nil, errors.New("qcow2: write beyond the L1 table")
	}
	e := img.l1[l1i]
	l2off := int64(e & l1OffsetMask)
	if l2off != 0 && e&flagCopied != 0 {
		if l2off&(img.clusterSize-1) != 0 {
			return nil, fmt.Errorf("qcow2: L2 table offset 0x%x unaligned (L1 index %d)", l2off, l1i)
		}
		return img.l2.get(l2off, false)
	}
	var old []byte
	if l2off != 0 {
		ot, err := img.l2.get(l2off, false)
		if err != nil {
			return nil, err
		}
		// A copy: getting the new table may evict the old one and reuse its buffer.
		old = append([]byte(nil), ot.b...)
	}
	noff, err := img.allocClusters(1)
	if err != nil {
		return nil, err
	}
	t, err := img.l2.get(noff, true)
	if err != nil {
		return nil, err
	}
	if old != nil {
		copy(t.b, old)
		img.rc.pending = append(img.rc.pending, l2off)
	}
	t.dirty = true
	img.l1[l1i] = uint64(noff) | flagCopied
	img.l1Dirty = true
	return t, nil
}

func (img *Image) entrySize() int64 {
	if img.extL2 {
		return 16
	}
	return 8
}

// WriteAt writes guest bytes.
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	if img.ro {
		return 0, block.ErrReadOnly
	}
	if off < 0 || off+int64(len(p)) > img.Size() {
		return 0, fmt.Errorf("qcow2: write at 0x%x+%d beyond the end of the disk", off, len(p))
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	err := img.startWriting()
	if err == nil {
		err = img.markBitmaps(off, int64(len(p)))
	}
	img.mu.Unlock()
	if err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		n, err := img.writeChunk(p[done:], off+int64(done))
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// writeChunk writes from p at off, at most to the end of one L2 table, and returns the
// bytes written.
func (img *Image) writeChunk(p []byte, off int64) (int, error) {
	cs := img.clusterSize
	ci := off >> img.clusterBits
	tableEnd := (ci>>img.l2Bits + 1) << (img.l2Bits + img.clusterBits)
	end := min(off+int64(len(p)), tableEnd)
	// Fast path: runs of whole clusters that are writable in place or need a fresh
	// cluster, done with one pwrite per contiguous host run.
	if !img.extL2 && off&(cs-1) == 0 && end-off >= cs {
		n, err := img.writeWholeClusters(p[:(end-off)&^(cs-1)], off)
		if n > 0 || err != nil {
			return n, err
		}
	}
	// One cluster (or part of it) the slow way.
	cend := min(end, (ci+1)<<img.clusterBits)
	return img.writeCluster(p[:cend-off], off)
}

// writeWholeClusters handles a prefix of whole clusters with standard L2 entries and
// returns how many bytes it wrote (0: the first cluster needs the slow path).
func (img *Image) writeWholeClusters(p []byte, off int64) (int, error) {
	cs := img.clusterSize
	n := int64(len(p)) >> img.clusterBits
	ci := off >> img.clusterBits
	img.mu.Lock()
	t, err := img.l2Table(ci)
	if err != nil {
		img.mu.Unlock()
		return 0, err
	}
	base := ci & (int64(1)<<img.l2Bits - 1)
	entry := func(i int64) uint64 { return be.Uint64(t.b[(base+i)*8:]) }
	inPlace := func(e uint64) bool {
		return e&(flagCompressed|flagZero) == 0 && e&flagCopied != 0 &&
			(e&l2OffsetMask != 0 || img.external) && int64(e&l2OffsetMask)&(cs-1) == 0
	}
	// Classify the run: either all in place with contiguous hosts, or all needing new
	// clusters.
	first := entry(0)
	var k int64
	var host int64
	if inPlace(first) {
		host = int64(first & l2OffsetMask)
		for k = 1; k < n; k++ {
			e := entry(k)
			if !inPlace(e) || int64(e&l2OffsetMask) != host+k*cs {
				break
			}
		}
		img.mu.Unlock()
		if _, err := img.data.WriteAt(p[:k*cs], host); err != nil {
			return 0, err
		}
		img.mu.Lock()
		img.dataSync = true
		img.mu.Unlock()
		return int(k * cs), nil
	}
	for k = 1; k < n && !inPlace(entry(k)); k++ {
	}
	if img.external {
		host = off
	} else if host, err = img.allocClusters(k); err != nil {
		img.mu.Unlock()
		return 0, err
	}
	img.mu.Unlock()
	if _, err := img.data.WriteAt(p[:k*cs], host); err != nil {
		return 0, err
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	img.dataSync = true
	// The table may have been evicted meanwhile: fetch it again.
	if t, err = img.l2Table(ci); err != nil {
		return 0, err
	}
	for i := int64(0); i < k; i++ {
		e := be.Uint64(t.b[(base+i)*8:])
		img.freeEntry(e)
		be.PutUint64(t.b[(base+i)*8:], uint64(host+i*cs)|flagCopied)
	}
	t.dirty = true
	return int(k * cs), nil
}

// writeCluster writes p (within one cluster) at off, copying on write what the rest of
// the cluster (or of the touched subclusters) held.
func (img *Image) writeCluster(p []byte, off int64) (int, error) {
	cs := img.clusterSize
	ci := off >> img.clusterBits
	cstart := ci << img.clusterBits
	img.mu.Lock()
	t, err := img.l2Table(ci)
	if err != nil {
		img.mu.Unlock()
		return 0, err
	}
	es := img.entrySize()
	idx := (ci & (int64(1)<<img.l2Bits - 1)) * es
	e := be.Uint64(t.b[idx:])
	var bitmap uint64
	if img.extL2 {
		bitmap = be.Uint64(t.b[idx+8:])
	}
	host := int64(e & l2OffsetMask)
	normal := e&flagCompressed == 0 && (host != 0 || (img.external && e&flagCopied != 0))
	reuse := normal && (e&flagCopied != 0 || img.external) && host&(cs-1) == 0
	img.mu.Unlock()

	// The span we rewrite: the touched subclusters, or the whole cluster when a new
	// cluster replaces a shared or compressed one.
	sub := int64(1) << img.subBits
	a, b := off-cstart, off-cstart+int64(len(p))
	sa, sb := a&^(sub-1), (b+sub-1)&^(sub-1)
	whole := !reuse && (!img.extL2 || normal || e&flagCompressed != 0)
	if whole {
		sa, sb = 0, cs
	}
	buf := getBuf(cs)
	defer putBuf(buf)
	span := buf[sa:sb]
	if sa < a || sb > b {
		// Read the current guest view of the span (resolves zero, backing, compressed
		// and old data), then overlay the new bytes.
		if _, err := img.readRange(span, cstart+sa); err != nil {
			return 0, err
		}
	}
	copy(span[a-sa:], p)
	var newHost int64
	img.mu.Lock()
	switch {
	case reuse:
		newHost = host
	case img.external:
		newHost = cstart
	default:
		if newHost, err = img.allocClusters(1); err != nil {
			img.mu.Unlock()
			return 0, err
		}
	}
	img.mu.Unlock()
	if _, err := img.data.WriteAt(span, newHost+sa); err != nil {
		return 0, err
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	img.dataSync = true
	if t, err = img.l2Table(ci); err != nil {
		return 0, err
	}
	if !reuse {
		img.freeEntry(e)
	}
	ne := uint64(newHost) | flagCopied
	if img.extL2 {
		var touched uint64
		for s := sa / sub; s < sb/sub; s++ {
			touched |= 1 << uint(s)
		}
		if whole {
			bitmap = 0xffffffff
		} else {
			bitmap = (bitmap | touched) &^ (touched << 32)
		}
		be.PutUint64(t.b[idx+8:], bitmap)
	}
	be.PutUint64(t.b[idx:], ne)
	t.dirty = true
	return len(p), nil
}

// readRange reads guest bytes without the size check of ReadAt (span within a cluster).
func (img *Image) readRange(b []byte, off int64) (int, error) {
	size := img.Size()
	if off+int64(len(b)) > size {
		clear(b[max(0, size-off):])
		if off >= size {
			return len(b), nil
		}
		b = b[:size-off]
	}
	return img.ReadAt(b, off)
}

// WriteZeroes makes [off, off+n) read as zeroes, with zero flags where the format
// allows, deallocating when flags permit.
func (img *Image) WriteZeroes(off, n int64, flags block.ZeroFlags) error {
	return img.zeroOrDiscard(off, n, flags&block.ZeroMayUnmap != 0, false)
}

// Discard drops the range; it reads back as zeroes on v3 images, as QEMU does.
func (img *Image) Discard(off, n int64) error {
	return img.zeroOrDiscard(off, n, true, true)
}

func (img *Image) zeroOrDiscard(off, n int64, unmap, discard bool) error {
	if img.ro {
		return block.ErrReadOnly
	}
	if off < 0 || n < 0 || off+n > img.Size() {
		return fmt.Errorf("qcow2: range 0x%x+%d beyond the end of the disk", off, n)
	}
	if err := img.markLocked(off, n); err != nil {
		return err
	}
	cs := img.clusterSize
	size := img.Size()
	end := off + n
	for off < end {
		cend := min(end, (off>>img.clusterBits+1)<<img.clusterBits)
		v2Write := img.hdr.version < 3 && !discard && !(img.backing == nil && unmap)
		whole := off&(cs-1) == 0 && (cend-off == cs || cend == size)
		if !whole && img.extL2 && !discard {
			// Whole subclusters get zero bits; the edges are written.
			sub := int64(1) << img.subBits
			a, b := (off+sub-1)&^(sub-1), cend&^(sub-1)
			if cend == size {
				b = cend
			}
			if a < b {
				done, err := img.zeroSubclusters(a, b)
				if err != nil {
					return err
				}
				if done {
					if err := img.writeZeroBytes(off, a); err != nil {
						return err
					}
					if err := img.writeZeroBytes(b, cend); err != nil {
						return err
					}
					off = cend
					continue
				}
			}
		}
		if !whole && !discard && !v2Write && !img.extL2 {
			// As QEMU: a partial range in a cluster that already reads as zeroes
			// turns the whole cluster into a zero cluster instead of allocating.
			cstart := off &^ (cs - 1)
			clen := min(cs, size-cstart)
			if st, err := img.BlockStatus(cstart, clen); err == nil && st.Zero && st.Length >= clen {
				if err := img.zeroCluster(cstart, unmap, false); err != nil {
					return err
				}
				off = cend
				continue
			}
		}
		if !whole || v2Write {
			if !discard {
				z := make([]byte, cend-off)
				if _, err := img.WriteAt(z, off); err != nil {
					return err
				}
			}
			off = cend
			continue
		}
		if err := img.zeroCluster(off, unmap, discard); err != nil {
			return err
		}
		off = cend
	}
	return nil
}

func (img *Image) writeZeroBytes(from, to int64) error {
	if from >= to {
		return nil
	}
	_, err := img.WriteAt(make([]byte, to-from), from)
	return err
}

// zeroSubclusters sets the zero bits of the subclusters in [a, b) (one cluster) and
// clears their allocation bits, as QEMU does; false means the cluster is compressed
// and must be written instead.
func (img *Image) zeroSubclusters(a, b int64) (bool, error) {
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	ci := a >> img.clusterBits
	if e, _, err := img.l2Entry(ci); err != nil || e&flagCompressed != 0 {
		return false, err
	}
	if err := img.startWriting(); err != nil {
		return false, err
	}
	t, err := img.l2Table(ci)
	if err != nil {
		return false, err
	}
	idx := (ci&(int64(1)<<img.l2Bits-1))*16 + 8
	var mask uint64
	base := ci << img.clusterBits
	for s := (a - base) >> img.subBits; s < (b-base+int64(1)<<img.subBits-1)>>img.subBits; s++ {
		mask |= 1 << uint(s)
	}
	bm := be.Uint64(t.b[idx:])
	be.PutUint64(t.b[idx:], (bm&^mask)|mask<<32)
	t.dirty = true
	return true, nil
}

// zeroCluster zeroes one whole cluster in the L2 table.
func (img *Image) zeroCluster(off int64, unmap, discard bool) error {
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.startWriting(); err != nil {
		return err
	}
	ci := off >> img.clusterBits
	v3 := img.hdr.version >= 3
	if cur, bm, err := img.l2Entry(ci); err != nil {
		return err
	} else if (!v3 && cur == 0) || (v3 && !img.extL2 && cur == flagZero) || (img.extL2 && cur == 0 && bm == 0xffffffff<<32) {
		return nil
	}
	t, err := img.l2Table(ci)
	if err != nil {
		return err
	}
	es := img.entrySize()
	idx := (ci & (int64(1)<<img.l2Bits - 1)) * es
	e := be.Uint64(t.b[idx:])
	host := int64(e & l2OffsetMask)
	keep := v3 && !unmap && e&flagCompressed == 0 && e&flagCopied != 0 && (host != 0 || img.external)
	var ne uint64
	if keep {
		ne = e
	} else {
		img.freeEntry(e)
	}
	if img.extL2 {
		be.PutUint64(t.b[idx+8:], 0xffffffff<<32)
		if !keep {
			ne = 0
		}
	} else if v3 {
		ne |= flagZero
	}
	be.PutUint64(t.b[idx:], ne)
	t.dirty = true
	return nil
}

// Flush writes all metadata in order and syncs.
func (img *Image) Flush() error {
	if img.ro {
		return nil
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	return img.flushLocked(false)
}

func (img *Image) flushLocked(closing bool) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.w == nil && !img.hasDirty() {
		return nil // nothing was changed: no need to sync
	}
	if err := img.writeBack(true); err != nil {
		return err
	}
	if closing && img.hdr.incompatible&incDirty != 0 {
		img.hdr.incompatible &^= incDirty
		var b [8]byte
		be.PutUint64(b[:], img.hdr.incompatible)
		if _, err := img.f.WriteAt(b[:], 72); err != nil {
			return err
		}
		return img.sync(img.f)
	}
	return nil
}

// Resize changes the virtual size. Growing extends the L1 table; shrinking (only with
// opts.Shrink) drops the clusters past the new end.
func (img *Image) Resize(size int64, opts block.ResizeOptions) error {
	if img.ro {
		return block.ErrReadOnly
	}
	prealloc := opts.Preallocation
	switch prealloc {
	case "", "off", "metadata", "falloc", "full":
	default:
		return fmt.Errorf("Invalid parameter '%s'", prealloc)
	}
	if size < 0 || size > 1<<55 {
		return errors.New("qcow2: invalid size")
	}
	if size&511 != 0 {
		return errors.New("The new size must be a multiple of 512")
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.startWriting(); err != nil {
		return err
	}
	if size < img.size && prealloc != "" && prealloc != "off" {
		return errors.New("Preallocation can only be used for growing images")
	}
	if img.dataRaw && (prealloc == "" || prealloc == "off") {
		prealloc = "metadata" // the data file must stay mapped 1:1
	}
	if size < img.size {
		if !opts.Shrink {
			return errors.New("Use the --shrink option to perform a shrink operation.")
		}
		// Drop every cluster past the new end (whole clusters only).
		first := (size + img.clusterSize - 1) >> img.clusterBits
		last := (img.size + img.clusterSize - 1) >> img.clusterBits
		for ci := first; ci < last; ci++ {
			if img.l1[ci>>img.l2Bits]&l1OffsetMask == 0 {
				ci = (ci>>img.l2Bits+1)<<img.l2Bits - 1
				continue
			}
			t, err := img.l2Table(ci)
			if err != nil {
				return err
			}
			idx := (ci & (int64(1)<<img.l2Bits - 1)) * img.entrySize()
			img.freeEntry(be.Uint64(t.b[idx:]))
			clear(t.b[idx : idx+img.entrySize()])
			t.dirty = true
		}
	}
	need := img.l1Entries(size)
	if need > int64(len(img.l1)) {
		if err := img.growL1(need); err != nil {
			return err
		}
	}
	if err := img.writeBack(false); err != nil {
		return err
	}
	if img.external && size > img.size {
		if st, err := img.data.Stat(); err == nil && st.Size() < size {
			if err := img.data.Truncate(size); err != nil {
				return err
			}
		}
	}
	old := img.size
	var b [8]byte
	be.PutUint64(b[:], uint64(size))
	if _, err := img.f.WriteAt(b[:], 24); err != nil {
		return err
	}
	img.size, img.hdr.size = size, uint64(size)
	img.resizeBitmaps(size)
	if size > old && prealloc != "" && prealloc != "off" {
		if err := img.preallocateLocked(prealloc, (old+img.clusterSize-1)>>img.clusterBits); err != nil {
			return err
		}
	}
	return img.sync(img.f)
}

func (img *Image) l1Entries(size int64) int64 {
	shift := img.clusterBits + img.l2Bits
	return (size + int64(1)<<shift - 1) >> shift
}

// growL1 moves the active L1 table to a new, larger place. Caller holds mu.
func (img *Image) growL1(entries int64) error {
	if entries*8 > maxL1Bytes {
		return errors.New("qcow2: L1 table would be too large")
	}
	if err := img.writeBack(false); err != nil {
		return err
	}
	clusters := (entries*8 + img.clusterSize - 1) / img.clusterSize
	off, err := img.allocClusters(clusters)
	if err != nil {
		return err
	}
	nl1 := make([]uint64, entries)
	copy(nl1, img.l1)
	b := make([]byte, clusters*img.clusterSize)
	for i, e := range nl1 {
		be.PutUint64(b[i*8:], e)
	}
	if err := img.writeBack(false); err != nil {
		return err
	}
	if _, err := img.f.WriteAt(b, off); err != nil {
		return err
	}
	if err := img.sync(img.f); err != nil {
		return err
	}
	var hb [12]byte
	be.PutUint32(hb[:], uint32(entries))
	be.PutUint64(hb[4:], uint64(off))
	if _, err := img.f.WriteAt(hb[:], 36); err != nil {
		return err
	}
	if err := img.sync(img.f); err != nil {
		return err
	}
	oldOff, oldLen := int64(img.hdr.l1Offset), int64(len(img.l1))*8
	img.l1 = nl1
	img.hdr.l1Offset, img.hdr.l1Size = uint64(off), uint32(entries)
	if oldLen > 0 {
		img.freeRange(oldOff, oldLen)
	}
	return nil
}

func fallocate(f *os.File, off, n int64) error {
	if n <= 0 {
		return nil
	}
	return unix.Fallocate(int(f.Fd()), 0, off, n)
}

// CompressionUnit is the cluster size: convert -c compresses whole clusters.
func (img *Image) CompressionUnit() int64 { return img.clusterSize }

// CompressCluster compresses one cluster (zero-padded if short) with the image's
// compression type; nil means it did not shrink below a cluster and is stored raw.
// Safe for concurrent use; the output depends only on the input.
func (img *Image) CompressCluster(p []byte) ([]byte, error) {
	if int64(len(p)) > img.clusterSize {
		return nil, fmt.Errorf("qcow2: compressed write of %d bytes exceeds the cluster size", len(p))
	}
	if int64(len(p)) < img.clusterSize {
		buf := getBuf(img.clusterSize)
		defer putBuf(buf)
		copy(buf, p)
		clear(buf[len(p):])
		p = buf
	}
	if looksRandom(p) {
		return nil, nil // early abort: see probe.go
	}
	limit := int(img.clusterSize) - 1
	if img.hdr.compressionType == compressZstd {
		return zstdCluster(p, limit)
	}
	return deflateCluster(p, limit)
}

// WriteCompressed stores one compressed cluster at guest offset off (cluster aligned),
// packing it after the previous compressed cluster as QEMU does; with compressed nil
// it writes raw normally.
func (img *Image) WriteCompressed(off int64, compressed []byte, raw []byte) error {
	if compressed == nil {
		_, err := img.WriteAt(raw, off)
		return err
	}
	if img.ro {
		return block.ErrReadOnly
	}
	if img.external {
		return errors.New("qcow2: compression is not supported with an external data file")
	}
	cs := img.clusterSize
	if off&(cs-1) != 0 || off >= img.Size() {
		return fmt.Errorf("qcow2: compressed write at unaligned offset 0x%x", off)
	}
	size := int64(len(compressed))
	if size == 0 || size >= cs {
		return errors.New("qcow2: compressed cluster does not fit")
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	if err := img.startMarking(off, cs); err != nil {
		img.mu.Unlock()
		return err
	}
	coff, err := img.allocBytes(size)
	img.mu.Unlock()
	if err != nil {
		return err
	}
	if _, err := img.f.WriteAt(compressed, coff); err != nil {
		return err
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	img.dataSync = true
	ci := off >> img.clusterBits
	t, err := img.l2Table(ci)
	if err != nil {
		return err
	}
	es := img.entrySize()
	idx := (ci & (int64(1)<<img.l2Bits - 1)) * es
	img.freeEntry(be.Uint64(t.b[idx:]))
	nsec := uint64(((coff + size - 1) >> 9) - (coff >> 9))
	be.PutUint64(t.b[idx:], flagCompressed|uint64(coff)|nsec<<img.csizeShift)
	if img.extL2 {
		be.PutUint64(t.b[idx+8:], 0)
	}
	t.dirty = true
	return nil
}

// WriteCompressedBatch stores a run of clusters (compressed, or raw where compression
// did not shrink them) as WriteCompressed would one by one, but sends host-contiguous
// pieces in one pwritev: convert -c writes tens of thousands of clusters, and a syscall
// each was a visible share of the single writer's time. Crash order is kept: all data
// is written before any L2 entry names it. Clusters that are not plain unallocated
// entries of an internal-data image take the one-by-one path.
func (img *Image) WriteCompressedBatch(cl []block.CompressedCluster) error {
	if img.ro {
		return block.ErrReadOnly
	}
	img.wmu.Lock()
	ok, err := img.batchable(cl)
	if err != nil || !ok {
		img.wmu.Unlock()
		if err != nil {
			return err
		}
		for _, c := range cl {
			if err := img.WriteCompressed(c.Off, c.Compressed, c.Raw); err != nil {
				return err
			}
		}
		return nil
	}
	defer img.wmu.Unlock()
	img.mu.Lock()
	if err := img.startMarkingClusters(cl); err != nil {
		img.mu.Unlock()
		return err
	}
	type seg struct {
		host int64
		b    []byte
	}
	segs := make([]seg, len(cl))
	entries := make([]uint64, len(cl))
	for i, c := range cl {
		if c.Compressed == nil {
			h, err := img.allocClusters(1)
			if err != nil {
				img.mu.Unlock()
				return err
			}
			segs[i], entries[i] = seg{h, c.Raw}, uint64(h)|flagCopied
			continue
		}
		size := int64(len(c.Compressed))
		coff, err := img.allocBytes(size)
		if err != nil {
			img.mu.Unlock()
			return err
		}
		nsec := uint64(((coff + size - 1) >> 9) - (coff >> 9))
		segs[i], entries[i] = seg{coff, c.Compressed}, flagCompressed|uint64(coff)|nsec<<img.csizeShift
	}
	img.mu.Unlock()
	sorted := append([]seg(nil), segs...)
	sort.Slice(sorted, func(a, b int) bool { return sorted[a].host < sorted[b].host })
	var iov [][]byte
	for i := 0; i < len(sorted); {
		start, end := sorted[i].host, sorted[i].host
		iov = iov[:0]
		for ; i < len(sorted) && sorted[i].host == end && len(iov) < 1024; i++ {
			iov = append(iov, sorted[i].b)
			end += int64(len(sorted[i].b))
		}
		if err := pwritev(img.f, iov, start); err != nil {
			return err
		}
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	img.dataSync = true
	es := img.entrySize()
	for i, c := range cl {
		ci := c.Off >> img.clusterBits
		t, err := img.l2Table(ci)
		if err != nil {
			return err
		}
		idx := (ci & (int64(1)<<img.l2Bits - 1)) * es
		be.PutUint64(t.b[idx:], entries[i])
		if img.extL2 {
			var bm uint64 // compressed: no subcluster bits
			if c.Compressed == nil {
				bm = 0xffffffff // raw: every subcluster allocated
			}
			be.PutUint64(t.b[idx+8:], bm)
		}
		t.dirty = true
	}
	return nil
}

// batchable reports whether every cluster of cl can go through the batched path:
// well-formed, and its L2 entry unallocated (nothing to free or overwrite in place).
func (img *Image) batchable(cl []block.CompressedCluster) (bool, error) {
	if img.external {
		return false, nil
	}
	cs := img.clusterSize
	img.mu.Lock()
	defer img.mu.Unlock()
	for _, c := range cl {
		if c.Off&(cs-1) != 0 || c.Off < 0 || c.Off >= img.size {
			return false, nil
		}
		if c.Compressed == nil && int64(len(c.Raw)) != cs {
			return false, nil
		}
		if n := int64(len(c.Compressed)); c.Compressed != nil && (n == 0 || n >= cs) {
			return false, nil
		}
		e, bm, err := img.l2Entry(c.Off >> img.clusterBits)
		if err != nil {
			return false, err
		}
		if e != 0 || bm != 0 {
			return false, nil
		}
	}
	return true, nil
}

// pwritev writes bufs back to back at off, retrying after short writes.
func pwritev(f *os.File, bufs [][]byte, off int64) error {
	if len(bufs) == 1 {
		_, err := f.WriteAt(bufs[0], off)
		return err
	}
	fd := int(f.Fd())
	for len(bufs) > 0 {
		n, err := unix.Pwritev(fd, bufs, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "pwritev", Path: f.Name(), Err: err}
		}
		if n == 0 {
			return &os.PathError{Op: "pwritev", Path: f.Name(), Err: unix.EIO}
		}
		off += int64(n)
		for n > 0 {
			if n < len(bufs[0]) {
				bufs[0] = bufs[0][n:]
				break
			}
			n -= len(bufs[0])
			bufs = bufs[1:]
		}
	}
	return nil
}

// allocBytes reserves size bytes for a compressed cluster, continuing in the cluster
// of the previous one while it fits. Caller holds mu.
func (img *Image) allocBytes(size int64) (int64, error) {
	cs := img.clusterSize
	off := img.freeByte
	if off != 0 {
		if r, err := img.rc.get(off >> img.clusterBits); err != nil {
			return 0, err
		} else if r == img.rc.maxVal || r == 0 {
			off = 0
		}
	}
	free := cs - off&(cs-1)
	if off == 0 || free < size {
		nc, err := img.allocClusters(1)
		if err != nil {
			return 0, err
		}
		if off == 0 || (off+cs-1)&^(cs-1) != nc {
			off = nc
		} else if err := img.rc.add(off>>img.clusterBits, 1); err != nil {
			return 0, err
		}
	} else if err := img.rc.add(off>>img.clusterBits, 1); err != nil {
		return 0, err
	}
	img.freeByte = off + size
	if img.freeByte&(cs-1) == 0 {
		img.freeByte = 0
	}
	return off, nil
}

// MakeEmpty drops every cluster of the active layer so reads fall through to the
// backing file (commit). The new L1 table reaches the disk before any reference is
// dropped, so a crash leaves either the old tree or an empty one (plus leaks).
func (img *Image) MakeEmpty() error {
	if img.ro {
		return block.ErrReadOnly
	}
	if img.dataRaw {
		// data_file_raw keeps the 1:1 mapping; the data file itself is the image.
		return errors.New("qcow2: cannot empty an image with a raw external data file")
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	// Not a guest-visible change (commit has put the data into the backing file), so
	// the bitmaps are not dirtied, as QEMU's make_empty does not dirty them.
	if err := img.startWriting(); err != nil {
		return err
	}
	if err := img.writeBack(false); err != nil {
		return err
	}
	if img.canEmptyCompletely() {
		return img.emptyCompletely() // QEMU's layout (qcow2/empty.go)
	}
	old := append([]uint64(nil), img.l1...)
	clear(img.l1)
	if err := img.writeL1(); err != nil {
		return err
	}
	if err := img.sync(img.f); err != nil {
		return err
	}
	if err := img.updateL1Refs(old, -1); err != nil {
		return err
	}
	return img.writeBack(true)
}

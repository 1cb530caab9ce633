package qcow2

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strings"

	"gemu/block"
)

// errIO is the errno text qemu-img prints when a repair cannot proceed
// ("Check failed: Input/output error").
var errIO = errors.New("Input/output error")

// Reserved bits qemu-img's check reports (QEMU's L1E/L2E/REFT reserved masks).
const (
	l1Reserved     = 0x7f000000000001ff
	l2StdReserved  = 0x3f000000000001fe
	refTableRsvd   = 0x1ff
	bitmapAllAlloc = 0xffffffff
)

// Check recomputes every refcount from the metadata (header, L1/L2 tables of the
// active state and every snapshot, snapshot table, refcount table and blocks) and
// compares with the stored ones, step for step as QEMU 7.2's qcow2_check_refcounts:
// the same findings, counted the same way, with the same messages. References are
// counted against the file's real length, so a truncated image reports every
// reference past its end. With a repair mode it fixes leaks (RepairLeaks) and
// corruptions (RepairAll: refcounts too low, a broken refcount structure rebuilt,
// OFLAG_COPIED).
//
// Repairs are ordered so that a crash part way loses nothing: refcounts are raised
// before references are written, a rebuilt refcount structure is written to free
// clusters and synced before the header switches to it, and the old structure is
// freed only afterwards.
//
// After a repair qemu-img checks again without repairing and reports that second
// result with the fixed counts of the first: callers do the same. A repair that
// needs a rebuild the mode does not allow fails with "Input/output error", as in QEMU.
func (img *Image) Check(mode block.RepairMode) (*block.CheckResult, error) {
	if mode != block.RepairNone && img.ro {
		return nil, block.ErrReadOnly
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	if mode != block.RepairNone {
		if err := img.loadTables(); err != nil {
			return nil, err
		}
		if err := img.writeBack(false); err != nil {
			return nil, err
		}
	}
	return img.checkLocked(mode)
}

// OpenForRepair makes an image opened read-only writable for check -r, as QEMU's
// BDRV_O_CHECK open: allowed also when the image is marked corrupt (a repair that
// leaves the image clean clears the mark), and without the automatic repair of a
// dirty image a read-write open does (check -r is that repair).
func (img *Image) OpenForRepair() error {
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	if !img.ro {
		return nil
	}
	reopen := func(name string) (*os.File, error) {
		f, err := os.OpenFile(name, os.O_RDWR, 0)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			t := err.Error()
			if t != "" {
				t = strings.ToUpper(t[:1]) + t[1:]
			}
			return nil, fmt.Errorf("Could not open '%s': %s", name, t)
		}
		return f, nil
	}
	f, err := reopen(img.filename)
	if err != nil {
		return err
	}
	if img.data != img.f {
		df, err := reopen(img.data.Name())
		if err != nil {
			f.Close()
			return err
		}
		img.data.Close()
		img.data = df
	} else {
		img.data = f
	}
	img.f.Close()
	img.f = f
	img.ro = false
	return nil
}

func (img *Image) check(mode block.RepairMode) (*block.CheckResult, error) {
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.checkLocked(mode)
}

type checker struct {
	img        *Image
	ref        refArray // computed refcounts per host cluster (QEMU's in-memory refcount table)
	res        *block.CheckResult
	fix        block.RepairMode
	fileLen    int64
	rebuild    bool
	suppressed int64 // messages past maxCheckMessages
	// signaled: the corruption event was reported (qcow2_signal_corruption reports
	// once; on a writable image it also marks the image corrupt).
	signaled bool
}

// signalCorruption is qcow2_signal_corruption for what the check itself trips on.
func (c *checker) signalCorruption(what string) {
	if c.signaled {
		return
	}
	c.signaled = true
	if c.img.ro {
		c.msg("qcow2: Image is corrupt: %s; further non-fatal corruption events will be suppressed", what)
		return
	}
	c.msg("qcow2: Marking image as corrupt: %s; further corruption events will be suppressed", what)
	c.img.markCorrupt()
}

// markCorrupt sets the corrupt bit on disk (qcow2_mark_corrupt).
func (img *Image) markCorrupt() {
	img.hdr.incompatible |= incCorrupt
	var b [8]byte
	be.PutUint64(b[:], img.hdr.incompatible)
	if _, err := img.repairWrite(b[:], 72); err == nil {
		img.sync(img.f)
	}
}

// stored is the stored refcount of cluster k (qcow2_get_refcount), signalling an
// unaligned refcount block as QEMU does.
func (c *checker) stored(k int64) (uint64, error) {
	r, err := c.img.storedRefcount(k)
	if err != nil && !c.signaled {
		ti := k / c.img.rc.perBlock
		c.signalCorruption(fmt.Sprintf("Refblock offset %#x unaligned (reftable index: %#x)", c.img.rc.table[ti]&refTableMask, ti))
	}
	return r, err
}

// maxCheckMessages bounds the findings kept for printing: QEMU streams them to
// stderr, one per bad cluster, and a hostile image can have hundreds of millions.
const maxCheckMessages = 100000

func (c *checker) msg(format string, a ...any) {
	if len(c.res.Messages) >= maxCheckMessages {
		c.suppressed++
		return
	}
	c.res.Messages = append(c.res.Messages, fmt.Sprintf(format, a...))
}

func (c *checker) grow(n int64) { c.ref.grow(n) }

// refArray holds the computed refcounts as compactly as the refcount width allows
// (2 bytes a cluster up to 16-bit refcounts, as QEMU's in-memory table), so checking
// a huge sparse file stays within the memory QEMU would use.
type refArray struct {
	w16 []uint16
	w64 []uint64
	n   int64
}

func newRefArray(bits uint, n int64) refArray {
	if bits <= 16 {
		return refArray{w16: make([]uint16, n), n: n}
	}
	return refArray{w64: make([]uint64, n), n: n}
}

func (r *refArray) len() int64 { return r.n }

func (r *refArray) get(k int64) uint64 {
	if r.w64 != nil {
		return r.w64[k]
	}
	return uint64(r.w16[k])
}

func (r *refArray) set(k int64, v uint64) {
	if r.w64 != nil {
		r.w64[k] = v
	} else {
		r.w16[k] = uint16(v)
	}
}

func (r *refArray) grow(n int64) {
	if n <= r.n {
		return
	}
	if r.w64 != nil {
		nr := make([]uint64, n, n+n/8)
		copy(nr, r.w64)
		r.w64 = nr
	} else {
		nr := make([]uint16, n, n+n/8)
		copy(nr, r.w16)
		r.w16 = nr
	}
	r.n = n
}

func (r *refArray) clear() {
	clear(r.w16)
	clear(r.w64)
}

func (r *refArray) uint64s() []uint64 {
	out := make([]uint64, r.n)
	for k := range out {
		out[k] = r.get(int64(k))
	}
	return out
}

// inc counts a reference to every cluster overlapping [off, off+size)
// (qcow2_inc_refcounts_imrt). A region ending one cluster or more past the end of the
// file is a corruption and is not counted.
func (c *checker) inc(off, size int64) {
	if size <= 0 {
		return
	}
	img := c.img
	if off < 0 || off > math.MaxInt64-size || off+size-c.fileLen >= img.clusterSize {
		c.msg("ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x%x size 0x%x", uint64(off), size)
		c.res.Corruptions++
		return
	}
	first, last := off>>img.clusterBits, (off+size-1)>>img.clusterBits
	c.grow(last + 1)
	for k := first; k <= last; k++ {
		if c.ref.get(k) >= img.rc.maxVal {
			c.msg("ERROR: overflow cluster offset=0x%x", k<<img.clusterBits)
			c.msg("Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing")
			c.res.Corruptions++
			continue
		}
		c.ref.set(k, c.ref.get(k)+1)
	}
}

func (img *Image) fileLength() (int64, error) {
	st, err := img.f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func (img *Image) checkLocked(mode block.RepairMode) (*block.CheckResult, error) {
	return img.checkRefs(mode, false)
}

// checkRefs is checkLocked; with keep it leaves the computed refcounts (the refcount
// table and blocks counted) in img.lastCheck for amend.
func (img *Image) checkRefs(mode block.RepairMode, keep bool) (*block.CheckResult, error) {
	if err := img.loadTables(); err != nil {
		return nil, err
	}
	res := &block.CheckResult{Filename: img.filename, Format: "qcow2"}
	size, err := img.fileLength()
	if err != nil {
		res.CheckErrors++
		return res, err
	}
	nb := (size + img.clusterSize - 1) >> img.clusterBits
	if nb > math.MaxInt32 {
		res.CheckErrors++
		return res, errors.New("File too large")
	}
	// Snapshot table entries (qcow2_check_read_snapshot_table): v3 entries need 16
	// bytes of extra data. Counted into the result after the refcount check.
	var snapMsgs []string
	var snapCorrupt int64
	if img.hdr.version >= 3 {
		for i, s := range img.snapshots {
			if s.shortExtra {
				word := "ERROR"
				if mode == block.RepairAll {
					word = "Repairing"
				}
				snapMsgs = append(snapMsgs, fmt.Sprintf("%s snapshot table entry %d is incomplete", word, i))
				snapCorrupt++
			}
		}
	}
	res.Messages = snapMsgs
	c := &checker{img: img, res: res, fix: mode, fileLen: size, ref: newRefArray(img.rc.bits, nb)}
	res.TotalClusters = (img.size + img.clusterSize - 1) >> img.clusterBits
	if err := c.calculate(mode); err != nil {
		return res, err
	}
	// QEMU's calculation alone (the refcount table and blocks counted): amend reuses it.
	if keep {
		img.lastCheck = c.ref.uint64s()
	}
	pre := *res
	pre.Messages = nil
	highest, err := c.compare(block.RepairNone)
	if err != nil {
		return res, err
	}
	if c.rebuild && mode == block.RepairAll {
		old := *res
		c.msg("Rebuilding refcount structure")
		if err := img.rebuildRefcountStructure(c); err != nil {
			return res, err
		}
		res.Corruptions, res.Leaks = 0, 0
		// The new table replaced the old one: count the references again.
		c.rebuild = false
		c.ref.clear()
		if err := c.calculate(block.RepairNone); err != nil {
			return res, err
		}
		saved := *res
		*res = block.CheckResult{}
		if highest, err = c.compare(block.RepairLeaks); err != nil {
			return res, err
		}
		if c.rebuild {
			c.msg("ERROR rebuilt refcount structure is still broken")
		}
		fresh := res.Leaks
		msgs := res.Messages
		*res = saved
		res.Messages = append(res.Messages, msgs...)
		if res.Corruptions < old.Corruptions {
			res.CorruptionsFixed += old.Corruptions - res.Corruptions
		}
		if res.Leaks < old.Leaks {
			res.LeaksFixed += old.Leaks - res.Leaks
		}
		res.Leaks += fresh
	} else if mode != block.RepairNone {
		if c.rebuild {
			c.msg("ERROR need to rebuild refcount structures")
			res.CheckErrors++
			return res, errIO
		}
		if res.Leaks > 0 || res.Corruptions > 0 {
			msgs := res.Messages
			*res = pre
			res.Messages = msgs
			if highest, err = c.compare(mode); err != nil {
				return res, err
			}
		}
	}
	if mode != block.RepairNone {
		// Fixed refcounts reach the disk before any OFLAG_COPIED repair relies on them.
		if err := img.writeBack(false); err != nil {
			return res, err
		}
		crashPoint()
	}
	if err := c.copiedFlags(); err != nil {
		return res, err
	}
	defer func() {
		if c.suppressed > 0 {
			res.Messages = append(res.Messages, fmt.Sprintf("(%d more messages not shown)", c.suppressed))
		}
	}()
	res.ImageEndOffset = (highest + 1) * img.clusterSize
	if snapCorrupt > 0 {
		if mode == block.RepairAll {
			// Rewritten whole (fresh clusters, header switched, old table freed).
			snaps := append([]snapshot(nil), img.snapshots...)
			for i := range snaps {
				snaps[i].diskLen, snaps[i].shortExtra = 0, false
			}
			if err := img.writeSnapshotTable(snaps); err != nil {
				c.msg("ERROR failed to update snapshot table: %v", err)
				res.CheckErrors++
				return res, err
			}
			res.CorruptionsFixed += snapCorrupt
		} else {
			res.Corruptions += snapCorrupt
		}
	}
	if mode != block.RepairNone {
		if err := img.writeBack(false); err != nil {
			return res, err
		}
		crashPoint()
		// qcow2_mark_clean and qcow2_mark_consistent: a clean result clears the dirty
		// bit and the corrupt mark.
		if res.CheckErrors == 0 && res.Corruptions == 0 && img.hdr.incompatible&(incDirty|incCorrupt) != 0 {
			img.hdr.incompatible &^= incDirty | incCorrupt
			var b [8]byte
			be.PutUint64(b[:], img.hdr.incompatible)
			if _, err := img.repairWrite(b[:], 72); err != nil {
				return res, err
			}
		}
		img.rc.freeHint = 0
		if sz, err := img.fileLength(); err == nil {
			img.extendFile(sz)
		}
	}
	return res, nil
}

// calculate counts every reference (QEMU's calculate_refcounts).
func (c *checker) calculate(fix block.RepairMode) error {
	img := c.img
	c.inc(0, img.clusterSize)
	if err := c.l1(img.l1, int64(img.hdr.l1Offset), int64(len(img.l1)), true); err != nil {
		return err
	}
	if img.external && len(img.snapshots) > 0 {
		c.msg("ERROR %d snapshots in image with data file", len(img.snapshots))
		c.res.Corruptions++
	}
	for _, s := range img.snapshots {
		if s.l1Offset&uint64(img.clusterSize-1) != 0 {
			c.msg("ERROR snapshot %s (%s) l1_offset=%#x: L1 table is not cluster aligned; snapshot table entry corrupted", s.id, s.name, s.l1Offset)
			c.res.Corruptions++
			continue
		}
		if uint64(s.l1Size)*8 > maxL1Bytes {
			c.msg("ERROR snapshot %s (%s) l1_size=%#x: L1 table is too large; snapshot table entry corrupted", s.id, s.name, s.l1Size)
			c.res.Corruptions++
			continue
		}
		l1, err := img.readL1(int64(s.l1Offset), int(s.l1Size))
		if err != nil {
			c.msg("ERROR: I/O error in check_refcounts_l1")
			c.res.CheckErrors++
			return err
		}
		if err := c.l1(l1, int64(s.l1Offset), int64(s.l1Size), false); err != nil {
			return err
		}
	}
	if len(img.snapshots) > 0 {
		c.inc(int64(img.hdr.snapshotsOffset), img.snapshotTableSize())
	}
	c.inc(int64(img.hdr.refTableOffset), int64(img.hdr.refTableClusters)*img.clusterSize)
	if err := c.refblocks(fix); err != nil {
		return err
	}
	return c.bitmapRefs()
}

// snapshotTableSize is the snapshot table's length on disk as QEMU counts it (the
// last entry without padding).
func (img *Image) snapshotTableSize() int64 {
	var n int64
	for i, s := range img.snapshots {
		l := s.diskLen
		if l == 0 {
			l = int64(len(encodeSnapshots([]snapshot{s})))
		}
		if i < len(img.snapshots)-1 {
			l = (l + 7) &^ 7
		}
		n += l
	}
	return n
}

// l1 counts an L1 table, its L2 tables and their clusters (check_refcounts_l1).
func (c *checker) l1(l1 []uint64, off, n int64, active bool) error {
	if n == 0 {
		return nil
	}
	img := c.img
	cs := img.clusterSize
	c.inc(off, n*8)
	for _, e := range l1 {
		if e == 0 {
			continue
		}
		if e&l1Reserved != 0 {
			c.msg("ERROR found L1 entry with reserved bits set: %x", e)
			c.res.Corruptions++
		}
		l2off := int64(e & l1OffsetMask)
		c.inc(l2off, cs)
		if l2off&(cs-1) != 0 {
			c.msg("ERROR l2_offset=%x: Table is not cluster aligned; L1 entry corrupted", l2off)
			c.res.Corruptions++
		}
		if err := c.l2(l2off, active); err != nil {
			return err
		}
	}
	return nil
}

// rawTable returns the cluster of metadata at off as on disk (bytes past the end of
// the file read as zeroes), or the cached copy if there is one.
func (img *Image) rawTable(off int64) ([]byte, error) {
	if t, ok := img.l2.m[off]; ok {
		return t.b, nil
	}
	b := make([]byte, img.clusterSize)
	if err := readFull(img.f, b, off); err != nil {
		return nil, err
	}
	return b, nil
}

// l2 counts one L2 table's clusters (check_refcounts_l2); fragmentation info is
// collected for the active state only.
func (c *checker) l2(l2off int64, active bool) error {
	img := c.img
	cs := img.clusterSize
	es := img.entrySize()
	b, err := img.rawTable(l2off)
	if err != nil {
		c.msg("ERROR: I/O error in check_refcounts_l2")
		c.res.CheckErrors++
		return err
	}
	var next int64
	for i := int64(0); i < int64(1)<<img.l2Bits; i++ {
		e := be.Uint64(b[i*es:])
		var bitmap uint64
		if img.extL2 {
			bitmap = be.Uint64(b[i*es+8:])
		}
		compressed := e&flagCompressed != 0
		if !compressed && e&l2StdReserved != 0 {
			c.msg("ERROR found l2 entry with reserved bits set: %x", e)
			c.res.Corruptions++
		}
		switch {
		case compressed:
			if e&flagCopied != 0 {
				coff, _ := img.compressedRange(e)
				c.msg("ERROR: coffset=0x%x: copied flag must never be set for compressed clusters", coff)
				e &^= flagCopied
				c.res.Corruptions++
			}
			if img.external {
				c.msg("ERROR compressed cluster %d with data file, entry=0x%x", i, e)
				c.res.Corruptions++
				continue
			}
			if bitmap != 0 {
				c.msg("ERROR compressed cluster %d with non-zero subcluster allocation bitmap, entry=0x%x", i, e)
				c.res.Corruptions++
				continue
			}
			coff, csize := img.compressedRange(e)
			c.inc(coff, csize)
			if active {
				c.res.AllocatedClusters++
				c.res.CompressedClusters++
				c.res.FragmentedClusters++
			}
		case e&flagZero != 0 && !img.extL2 && e&l2OffsetMask == 0:
			// Zero cluster without an allocation.
		case e&l2OffsetMask == 0 && !(img.external && e&flagCopied != 0):
			if bitmap&bitmapAllAlloc != 0 {
				c.res.Corruptions++
				c.msg("ERROR: Unallocated cluster has non-zero subcluster allocation map")
			}
		default:
			host := int64(e & l2OffsetMask)
			if (bitmap>>32)&bitmap != 0 {
				c.res.Corruptions++
				c.msg("ERROR offset=%x: Allocated cluster has corrupted subcluster allocation bitmap", host)
			}
			if host&(cs-1) != 0 {
				c.res.Corruptions++
				data := e&flagZero == 0
				if img.extL2 {
					data = bitmap&bitmapAllAlloc != 0
				}
				if !data {
					word := "ERROR"
					if c.fix == block.RepairAll {
						word = "Repairing"
					}
					c.msg("%s offset=%x: Preallocated cluster is not properly aligned; L2 entry corrupted.", word, host)
					if c.fix == block.RepairAll {
						err := c.zeroL2Entry(b, l2off, i, active)
						if errors.Is(err, errOverlap) {
							return errIO
						}
						if err == nil {
							continue
						}
					}
				} else {
					c.msg("ERROR offset=%x: Data cluster is not properly aligned; L2 entry corrupted.", host)
				}
			}
			if active {
				c.res.AllocatedClusters++
				if next != 0 && host != next {
					c.res.FragmentedClusters++
				}
				next = host + cs
			}
			if !img.external {
				c.inc(host, cs)
			}
		}
	}
	return nil
}

var errOverlap = errors.New("metadata overlap")

// zeroL2Entry turns entry i of the L2 table at l2off (held in b) into a zero cluster
// (QEMU's fix_l2_entry_by_zero): it only drops a reference, so it is safe at any time.
// A write that would hit other metadata is refused (errOverlap: the caller stops).
func (c *checker) zeroL2Entry(b []byte, l2off, i int64, active bool) error {
	img := c.img
	es := img.entrySize()
	if img.extL2 {
		bm := be.Uint64(b[i*es+8:])
		bm = (bm | bm<<32) & (uint64(bitmapAllAlloc) << 32)
		be.PutUint64(b[i*es:], 0)
		be.PutUint64(b[i*es+8:], bm)
	} else {
		be.PutUint64(b[i*es:], flagZero)
	}
	ign := olActiveL2
	if !active {
		ign = 0 // inactive L2 tables are not overlap-checked in QEMU's default mode
	}
	off := l2off + i*es
	if err := c.preWrite(ign, off, es); err != nil {
		c.msg("ERROR: Overlap check failed")
		c.res.CheckErrors++
		return errOverlap
	}
	if _, err := img.repairWrite(b[i*es:(i+1)*es], off); err != nil {
		c.msg("ERROR: Failed to overwrite L2 table entry: %v", err)
		c.res.CheckErrors++
		return err
	}
	if err := img.sync(img.f); err != nil {
		c.res.CheckErrors++
		return err
	}
	// A cached copy of the cluster written to is stale now (repairs start with a clean cache).
	if t, ok := img.l2.m[l2off&^(img.clusterSize-1)]; ok && &t.b[0] != &b[0] {
		img.l2.drop(t.off)
	}
	c.res.Corruptions--
	c.res.CorruptionsFixed++
	return nil
}

// refblocks counts the refcount blocks (check_refblocks).
func (c *checker) refblocks(fix block.RepairMode) error {
	img := c.img
	cs := img.clusterSize
	for i, e := range img.rc.table {
		off := e & refTableMask
		cluster := off >> img.clusterBits
		if e&refTableRsvd != 0 {
			c.msg("ERROR refcount table entry %d has reserved bits set", i)
			c.res.Corruptions++
			c.rebuild = true
			continue
		}
		if off&uint64(cs-1) != 0 {
			c.msg("ERROR refcount block %d is not cluster aligned; refcount table entry corrupted", i)
			c.res.Corruptions++
			c.rebuild = true
			continue
		}
		if cluster >= uint64(c.ref.len()) {
			c.res.Corruptions++
			word := "ERROR"
			if fix == block.RepairAll {
				word = "Repairing"
			}
			c.msg("%s refcount block %d is outside image", word, i)
			if fix == block.RepairAll {
				// QEMU grows the file to cover the block (which then reads as zeroes).
				if off > 1<<56 {
					c.rebuild = true
					c.msg("ERROR could not resize image: Invalid argument")
					continue
				}
				if err := img.f.Truncate(int64(off) + cs); err != nil {
					c.rebuild = true
					c.msg("ERROR could not resize image: %v", err)
					continue
				}
				c.fileLen = int64(off) + cs
				img.extendFile(c.fileLen)
				c.grow(int64(cluster) + 1)
				c.res.Corruptions--
				c.res.CorruptionsFixed++
				c.inc(int64(off), cs)
			}
			continue
		}
		if off != 0 {
			c.inc(int64(off), cs)
			if r := c.ref.get(int64(cluster)); r != 1 {
				c.msg("ERROR refcount block %d refcount=%d", i, r)
				c.res.Corruptions++
				c.rebuild = true
			}
		}
	}
	return nil
}

// stored is qcow2_get_refcount: an unaligned refcount block is an I/O error.
func (img *Image) storedRefcount(k int64) (uint64, error) {
	rc := img.rc
	ti := k / rc.perBlock
	if ti >= int64(len(rc.table)) {
		return 0, nil
	}
	off := int64(rc.table[ti] & refTableMask)
	if off == 0 {
		return 0, nil
	}
	if off&(img.clusterSize-1) != 0 {
		return 0, errIO
	}
	if off < 0 || off >= 1<<56 {
		return 0, nil // reads past any end of file: zeroes
	}
	return rc.get(k)
}

// compare compares computed and stored refcounts (compare_refcounts), fixing what the
// mode allows, and returns the highest cluster in use.
func (c *checker) compare(fix block.RepairMode) (int64, error) {
	img := c.img
	res := c.res
	var highest int64
	for k := int64(0); k < c.ref.len(); k++ {
		r1, err := c.stored(k)
		if err != nil {
			if len(res.Messages) < maxCheckMessages { // no formatting cost past the cap
				c.msg("Can't get refcount for cluster %d: %v", k, err)
			} else {
				c.suppressed++
			}
			res.CheckErrors++
			continue
		}
		r2 := c.ref.get(k)
		if r1 > 0 || r2 > 0 {
			highest = k
		}
		if r1 == r2 {
			continue
		}
		var fixed *int64
		switch {
		case r1 == 0:
			c.rebuild = true
		case r1 > r2 && fix != block.RepairNone:
			fixed = &res.LeaksFixed
		case r1 < r2 && fix == block.RepairAll:
			fixed = &res.CorruptionsFixed
		}
		word := "Leaked"
		switch {
		case fixed != nil:
			word = "Repairing"
		case r1 < r2:
			word = "ERROR"
		}
		c.msg("%s cluster %d refcount=%d reference=%d", word, k, r1, r2)
		if fixed != nil {
			if err := img.rc.add(k, int64(r2)-int64(r1)); err == nil {
				(*fixed)++
				continue
			}
		}
		if r1 < r2 {
			res.Corruptions++
		} else {
			res.Leaks++
		}
	}
	return highest, nil
}

// copiedFlags checks QCOW_OFLAG_COPIED on the active tables against the stored
// refcounts (check_oflag_copied). RepairAll always repairs; RepairLeaks only when
// the refcounts are known good by now.
func (c *checker) copiedFlags() error {
	img := c.img
	res := c.res
	repair := c.fix == block.RepairAll ||
		(c.fix == block.RepairLeaks && res.CheckErrors == 0 && res.Corruptions == 0 && res.Leaks == 0)
	word := "ERROR"
	if repair {
		word = "Repairing"
	}
	cs := img.clusterSize
	es := img.entrySize()
	for i, e := range img.l1 {
		l2off := int64(e & l1OffsetMask)
		if l2off == 0 {
			continue
		}
		r, err := c.stored(l2off >> img.clusterBits)
		if err != nil {
			continue
		}
		if (r == 1) != (e&flagCopied != 0) {
			res.Corruptions++
			c.msg("%s OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d", word, i, e, r)
			if repair {
				if r == 1 {
					img.l1[i] = e | flagCopied
				} else {
					img.l1[i] = e &^ flagCopied
				}
				if err := c.writeL1Entry(i); err != nil {
					res.CheckErrors++
					return err
				}
				res.Corruptions--
				res.CorruptionsFixed++
			}
		}
		b, err := img.rawTable(l2off)
		if err != nil {
			c.msg("ERROR: Could not read L2 table: %v", err)
			res.CheckErrors++
			return err
		}
		var dirty []int64
		for j := int64(0); j < int64(1)<<img.l2Bits; j++ {
			le := be.Uint64(b[j*es:])
			if le&flagCompressed != 0 || le&l2OffsetMask == 0 && !(img.external && le&flagCopied != 0) {
				continue
			}
			if le&flagZero != 0 && !img.extL2 && le&l2OffsetMask == 0 {
				continue
			}
			r := uint64(1)
			if !img.external {
				if r, err = c.stored(int64(le&l2OffsetMask) >> img.clusterBits); err != nil {
					continue
				}
			}
			if (r == 1) != (le&flagCopied != 0) {
				res.Corruptions++
				c.msg("%s OFLAG_COPIED data cluster: l2_entry=%x refcount=%d", word, le, r)
				if repair {
					dirty = append(dirty, j)
				}
			}
		}
		if len(dirty) == 0 {
			continue
		}
		if l2off&(cs-1) != 0 {
			c.msg("ERROR: Could not write L2 table; metadata overlap check failed: Input/output error")
			res.CheckErrors++
			return errIO
		}
		t, err := img.l2.get(l2off, false)
		if err != nil {
			c.msg("ERROR: Could not write L2 table: %v", err)
			res.CheckErrors++
			return err
		}
		for _, j := range dirty {
			le := be.Uint64(t.b[j*es:])
			r := uint64(1)
			if !img.external {
				r, _ = img.storedRefcount(int64(le&l2OffsetMask) >> img.clusterBits)
			}
			if r == 1 {
				le |= flagCopied
			} else {
				le &^= flagCopied
			}
			be.PutUint64(t.b[j*es:], le)
		}
		if _, err := img.repairWrite(t.b, l2off); err != nil {
			c.msg("ERROR: Could not write L2 table: %v", err)
			res.CheckErrors++
			return err
		}
		t.dirty = false
		res.Corruptions -= int64(len(dirty))
		res.CorruptionsFixed += int64(len(dirty))
	}
	return nil
}

// Metadata kinds of QEMU's overlap check ("cached" mode: all but inactive L2 tables).
const (
	olMainHeader = 1 << iota
	olActiveL1
	olActiveL2
	olRefcountTable
	olRefcountBlock
	olSnapshotTable
	olInactiveL1
)

var olNames = []string{"main header", "active L1 table", "active L2 table", "refcount table",
	"refcount block", "snapshot table", "inactive L1 table"}

// overlap is QEMU's qcow2_check_metadata_overlap: the first kind of metadata (not in
// ign) that [off, off+size) touches, or 0.
func (img *Image) overlap(ign int, off, size int64) int {
	if size <= 0 {
		return 0
	}
	cs := img.clusterSize
	if ign&olMainHeader == 0 && off < cs {
		return olMainHeader
	}
	size = (off&(cs-1) + size + cs - 1) &^ (cs - 1)
	off &^= cs - 1
	hits := func(o, n int64) bool { return o < off+size && off < o+n }
	if ign&olActiveL1 == 0 && len(img.l1) > 0 && hits(int64(img.hdr.l1Offset), int64(len(img.l1))*8) {
		return olActiveL1
	}
	if ign&olRefcountTable == 0 && len(img.rc.table) > 0 && hits(int64(img.hdr.refTableOffset), int64(len(img.rc.table))*8) {
		return olRefcountTable
	}
	if ign&olSnapshotTable == 0 && len(img.snapshots) > 0 && hits(int64(img.hdr.snapshotsOffset), int64(len(encodeSnapshots(img.snapshots)))) {
		return olSnapshotTable
	}
	if ign&olInactiveL1 == 0 {
		for _, s := range img.snapshots {
			if s.l1Size > 0 && hits(int64(s.l1Offset), int64(s.l1Size)*8) {
				return olInactiveL1
			}
		}
	}
	if ign&olActiveL2 == 0 {
		for _, e := range img.l1 {
			if o := int64(e & l1OffsetMask); o != 0 && hits(o, cs) {
				return olActiveL2
			}
		}
	}
	if ign&olRefcountBlock == 0 {
		for _, e := range img.rc.table {
			if o := e & refTableMask; o != 0 && o < 1<<62 && hits(int64(o), cs) {
				return olRefcountBlock
			}
		}
	}
	return 0
}

// preWrite refuses a metadata write that would land on other metadata, marking the
// image corrupt as QEMU does (qcow2_pre_write_overlap_check).
func (c *checker) preWrite(ign int, off, size int64) error {
	img := c.img
	ol := img.overlap(ign, off, size)
	if ol == 0 {
		return nil
	}
	name := ""
	for i, n := range olNames {
		if ol == 1<<i {
			name = n
		}
	}
	c.signalCorruption(fmt.Sprintf("Preventing invalid write on metadata (overlaps with %s)", name))
	return errIO
}

// writeL1Entry writes the 512-byte block of the active L1 table holding entry i, as
// QEMU's qcow2_write_l1_entry (so a table running past the end of the file is not
// extended by a repair).
func (c *checker) writeL1Entry(i int) error {
	img := c.img
	start := i &^ 63
	end := min(start+64, len(img.l1))
	b := make([]byte, 512)
	for j := start; j < end; j++ {
		be.PutUint64(b[(j-start)*8:], img.l1[j])
	}
	off := int64(img.hdr.l1Offset) + int64(start)*8
	if err := c.preWrite(olActiveL1, off, 512); err != nil {
		return err
	}
	if _, err := img.repairWrite(b, off); err != nil {
		return err
	}
	return nil
}

// allocIMRT finds n contiguous clusters free in the computed refcounts at or after
// *firstFree, growing the array past its end if needed, marks them used and returns
// the first one's offset (QEMU's alloc_clusters_imrt, so a rebuilt structure lands
// where QEMU puts it).
func (c *checker) allocIMRT(n int64, firstFree *int64) int64 {
	k := *firstFree
	run := int64(0)
	firstGap := true
	for ; k < c.ref.len() && run < n; k++ {
		if c.ref.get(k) == 0 {
			run++
			if firstGap {
				*firstFree = k
				firstGap = false
			}
		} else {
			run = 0
		}
	}
	if run < n {
		c.grow(k + n - run)
	}
	k -= run
	for i := int64(0); i < n; i++ {
		c.ref.set(k+i, 1)
	}
	return k << c.img.clusterBits
}

// writeRefblocks writes a refcount block for every block-sized range of
// [first, end) holding a non-zero computed refcount, allocating blocks in free
// clusters; it reports whether the new table had to grow
// (rebuild_refcounts_write_refblocks).
func (c *checker) writeRefblocks(first, end int64, table *[]uint64) (bool, error) {
	img := c.img
	rc := img.rc
	cs := img.clusterSize
	grown := false
	var firstFree int64
	buf := make([]byte, cs)
	for k := first; k < end; k++ {
		if k >= c.ref.len() || c.ref.get(k) == 0 {
			if k >= c.ref.len() {
				break
			}
			continue
		}
		bi := k / rc.perBlock
		start := bi * rc.perBlock
		var boff int64
		if int64(len(*table)) > bi && (*table)[bi] != 0 {
			boff = int64((*table)[bi])
		} else {
			firstFree = max(firstFree, start)
			boff = c.allocIMRT(1, &firstFree)
			if bk := boff >> img.clusterBits; bk >= end {
				end = bk + 1
			}
			if int64(len(*table)) <= bi {
				n := ((bi+1)*8 + cs - 1) / cs * cs / 8
				if n*8 > maxRefTableBytes {
					return false, errors.New("ERROR allocating reftable memory")
				}
				nt := make([]uint64, n)
				copy(nt, *table)
				*table = nt
				grown = true
			}
			(*table)[bi] = uint64(boff)
		}
		if err := c.preWrite(0, boff, cs); err != nil {
			c.msg("ERROR writing refblock: %v", err)
			return false, err
		}
		clear(buf)
		for j := start; j < min(start+rc.perBlock, c.ref.len()); j++ {
			rc.setEntry(buf, j-start, c.ref.get(j))
		}
		if _, err := img.repairWrite(buf, boff); err != nil {
			return false, fmt.Errorf("ERROR writing refblock: %v", err)
		}
		img.extendFile(boff + cs)
		k = start + rc.perBlock - 1
	}
	return grown, nil
}

// rebuildRefcountStructure replaces the refcount table and blocks with ones built
// from the computed refcounts, placed in free clusters as QEMU 7.2's
// rebuild_refcount_structure places them. The old structure stays on disk (and
// counted) until the header points at the new one; the caller's next pass frees it.
func (img *Image) rebuildRefcountStructure(c *checker) error {
	cs := img.clusterSize
	var table []uint64
	grown, err := c.writeRefblocks(0, c.ref.len(), &table)
	if err != nil {
		return err
	}
	var toff, tclusters int64
	for grown {
		tclusters = (int64(len(table))*8 + cs - 1) / cs
		var ff int64
		toff = c.allocIMRT(tclusters, &ff)
		start := toff >> img.clusterBits
		if grown, err = c.writeRefblocks(start, start+tclusters, &table); err != nil {
			return err
		}
	}
	if err := c.preWrite(0, toff, int64(len(table))*8); err != nil {
		c.msg("ERROR writing reftable: %v", err)
		return err
	}
	tb := make([]byte, tclusters*cs)
	for i, v := range table {
		be.PutUint64(tb[i*8:], v)
	}
	if _, err := img.repairWrite(tb, toff); err != nil {
		return fmt.Errorf("ERROR writing reftable: %v", err)
	}
	img.extendFile(toff + tclusters*cs)
	// Everything the new header names is on disk before the header does.
	if err := img.sync(img.f); err != nil {
		return err
	}
	var hb [12]byte
	be.PutUint64(hb[:], uint64(toff))
	be.PutUint32(hb[8:], uint32(tclusters))
	if _, err := img.repairWrite(hb[:], 48); err != nil {
		return fmt.Errorf("ERROR setting reftable: %v", err)
	}
	if err := img.sync(img.f); err != nil {
		return err
	}
	img.hdr.refTableOffset, img.hdr.refTableClusters = uint64(toff), uint32(tclusters)
	rc := img.rc
	rc.table = table
	rc.blocks = newTableCache(img, cs, rc.blocks.max)
	rc.tableDirty = false
	rc.freeHint = 0
	c.fileLen = max(c.fileLen, toff+tclusters*cs)
	if sz, err := img.fileLength(); err == nil {
		c.fileLen = sz
	}
	return nil
}

// checkCrashHook, when set (by tests), runs after every write a repair makes: a
// panic there stands for a crash at that point.
var checkCrashHook func()

func crashPoint() {
	if checkCrashHook != nil {
		checkCrashHook()
	}
}

// repairWrite is every write of a check repair (a crash point for the tests).
func (img *Image) repairWrite(b []byte, off int64) (int, error) {
	n, err := img.f.WriteAt(b, off)
	crashPoint()
	return n, err
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

package qcow2

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"gemu/block"
)

// snapshot is one entry of the internal snapshot table.
type snapshot struct {
	l1Offset    uint64
	l1Size      uint32
	id, name    string
	dateSec     uint32
	dateNsec    uint32
	vmClockNsec uint64
	vmStateSize uint64
	diskSize    uint64
	icount      int64
	extra       []byte // extra data beyond what we understand, kept verbatim
	// As read from disk (zero for entries made here): the entry's length without
	// padding, and whether its extra data is shorter than v3 requires (16 bytes).
	diskLen    int64
	shortExtra bool
}

func (s *snapshot) info() block.SnapshotInfo {
	return block.SnapshotInfo{ID: s.id, Name: s.name, VMStateSize: int64(s.vmStateSize),
		DateSec: int64(s.dateSec), DateNsec: int64(s.dateNsec), VMClockNsec: int64(s.vmClockNsec),
		ICount: s.icount}
}

// loadSnapshots parses the snapshot table with QEMU's bounds.
func (img *Image) loadSnapshots() error {
	h := img.hdr
	img.snapshots = nil
	if h.nbSnapshots == 0 {
		return nil
	}
	off := int64(h.snapshotsOffset)
	var total int64
	for i := 0; i < int(h.nbSnapshots); i++ {
		// A table cut short by truncation reads as zeroes past the end, as in QEMU
		// (check then reports the references past the end of the file).
		var fixed [40]byte
		if err := readFull(img.f, fixed[:], off); err != nil {
			return fmt.Errorf("qcow2: could not read snapshot table: %v", err)
		}
		s := snapshot{
			l1Offset:    be.Uint64(fixed[0:]),
			l1Size:      be.Uint32(fixed[8:]),
			dateSec:     be.Uint32(fixed[16:]),
			dateNsec:    be.Uint32(fixed[20:]),
			vmClockNsec: be.Uint64(fixed[24:]),
			vmStateSize: uint64(be.Uint32(fixed[32:])),
			icount:      -1,
			diskSize:    h.size,
		}
		idLen := int64(be.Uint16(fixed[12:]))
		nameLen := int64(be.Uint16(fixed[14:]))
		extraLen := int64(be.Uint32(fixed[36:]))
		if extraLen > maxSnapshotExtra {
			return errors.New("qcow2: too much extra metadata in snapshot table entry")
		}
		varLen := extraLen + idLen + nameLen
		v := make([]byte, varLen)
		if err := readFull(img.f, v, off+40); err != nil {
			return fmt.Errorf("qcow2: could not read snapshot table: %v", err)
		}
		extra := v[:extraLen]
		if len(extra) >= 8 {
			s.vmStateSize = be.Uint64(extra)
		}
		if len(extra) >= 16 {
			s.diskSize = be.Uint64(extra[8:])
		}
		if len(extra) >= 24 {
			s.icount = int64(be.Uint64(extra[16:]))
		}
		if len(extra) > 24 {
			s.extra = append([]byte(nil), extra[24:]...)
		}
		s.id = string(v[extraLen : extraLen+idLen])
		s.name = string(v[extraLen+idLen:])
		if uint64(s.l1Size)*8 > maxL1Bytes {
			return errors.New("qcow2: snapshot L1 table too large")
		}
		if s.l1Size > 0 {
			if err := checkOffset(s.l1Offset, uint64(s.l1Size)*8, uint64(img.clusterSize), -1, "Snapshot L1 table"); err != nil {
				return err
			}
		}
		s.diskLen = 40 + varLen
		s.shortExtra = extraLen < 16
		n := (40 + varLen + 7) &^ 7
		off += n
		total += n
		if total > maxSnapshotsTotal {
			return errors.New("qcow2: snapshot table too large")
		}
		img.snapshots = append(img.snapshots, s)
	}
	return nil
}

// encodeSnapshots serialises the snapshot table as QEMU 7.2 writes it (24 bytes of
// extra data: large VM state size, disk size, icount).
func encodeSnapshots(snaps []snapshot) []byte {
	var b []byte
	for _, s := range snaps {
		extra := make([]byte, 24, 24+len(s.extra))
		be.PutUint64(extra, s.vmStateSize)
		be.PutUint64(extra[8:], s.diskSize)
		be.PutUint64(extra[16:], uint64(s.icount))
		extra = append(extra, s.extra...)
		var fixed [40]byte
		be.PutUint64(fixed[0:], s.l1Offset)
		be.PutUint32(fixed[8:], s.l1Size)
		be.PutUint16(fixed[12:], uint16(len(s.id)))
		be.PutUint16(fixed[14:], uint16(len(s.name)))
		be.PutUint32(fixed[16:], s.dateSec)
		be.PutUint32(fixed[20:], s.dateNsec)
		be.PutUint64(fixed[24:], s.vmClockNsec)
		if s.vmStateSize <= 0xffffffff {
			be.PutUint32(fixed[32:], uint32(s.vmStateSize))
		}
		be.PutUint32(fixed[36:], uint32(len(extra)))
		b = append(b, fixed[:]...)
		b = append(b, extra...)
		b = append(b, s.id...)
		b = append(b, s.name...)
		for len(b)%8 != 0 {
			b = append(b, 0)
		}
	}
	return b
}

// Snapshots lists the internal snapshots.
func (img *Image) Snapshots() ([]block.SnapshotInfo, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	var r []block.SnapshotInfo
	for _, s := range img.snapshots {
		r = append(r, s.info())
	}
	return r, nil
}

func (img *Image) findSnapshot(name string) int {
	for i, s := range img.snapshots {
		if s.id == name {
			return i
		}
	}
	for i, s := range img.snapshots {
		if s.name == name {
			return i
		}
	}
	return -1
}

// CreateSnapshot copies the active L1 table, takes a reference on every L2 table and
// data cluster it reaches, and appends an entry to the snapshot table.
func (img *Image) CreateSnapshot(name string) error {
	return img.createSnapshot(snapshot{name: name})
}

// createSnapshot is CreateSnapshot of an entry whose VM state fields (vmStateSize,
// vmClockNsec, icount) the caller set; the rest is filled here.
func (img *Image) createSnapshot(s snapshot) error {
	if img.ro {
		return block.ErrReadOnly
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	// Names may repeat (qemu-img allows it); ids are unique.
	if len(img.snapshots) >= maxSnapshots {
		return errors.New("qcow2: too many snapshots")
	}
	// Pick the next free numeric id, as QEMU does.
	id := 1
	for _, s := range img.snapshots {
		if n, err := strconv.Atoi(s.id); err == nil && n >= id {
			id = n + 1
		}
	}
	if err := img.writeBack(false); err != nil {
		return err
	}
	if err := img.updateL1Refs(img.l1, 1); err != nil {
		return err
	}
	l1Bytes := int64(len(img.l1)) * 8
	l1Off, err := img.allocClusters((l1Bytes + img.clusterSize - 1) / img.clusterSize)
	if err != nil {
		return err
	}
	buf := make([]byte, (l1Bytes+img.clusterSize-1)/img.clusterSize*img.clusterSize)
	for i, e := range img.l1 {
		be.PutUint64(buf[i*8:], e)
	}
	if _, err := img.f.WriteAt(buf, l1Off); err != nil {
		return err
	}
	now := time.Now()
	s.l1Offset, s.l1Size, s.id, s.diskSize = uint64(l1Off), uint32(len(img.l1)), strconv.Itoa(id), uint64(img.size)
	s.dateSec, s.dateNsec = uint32(now.Unix()), uint32(now.Nanosecond())
	snaps := append(append([]snapshot(nil), img.snapshots...), s)
	if err := img.writeSnapshotTable(snaps); err != nil {
		return err
	}
	// Everything the active L1 reaches is now shared: clear the copied flags.
	if err := img.refreshCopiedFlags(); err != nil {
		return err
	}
	return img.writeBack(true)
}

// writeSnapshotTable writes a new table, switches the header to it, then frees the
// old one.
func (img *Image) writeSnapshotTable(snaps []snapshot) error {
	b := encodeSnapshots(snaps)
	var off int64
	if len(b) > 0 {
		var err error
		off, err = img.allocClusters((int64(len(b)) + img.clusterSize - 1) / img.clusterSize)
		if err != nil {
			return err
		}
		if _, err := img.f.WriteAt(b, off); err != nil {
			return err
		}
	}
	if err := img.writeBack(false); err != nil {
		return err
	}
	var hb [12]byte
	be.PutUint32(hb[:], uint32(len(snaps)))
	be.PutUint64(hb[4:], uint64(off))
	if _, err := img.f.WriteAt(hb[:], 60); err != nil {
		return err
	}
	if err := img.sync(img.f); err != nil {
		return err
	}
	oldOff, oldLen := int64(img.hdr.snapshotsOffset), int64(len(encodeSnapshots(img.snapshots)))
	if img.hdr.nbSnapshots == 0 {
		oldLen = 0
	}
	img.hdr.nbSnapshots, img.hdr.snapshotsOffset = uint32(len(snaps)), uint64(off)
	img.snapshots = snaps
	if oldLen > 0 {
		if err := img.freeRange(oldOff, oldLen); err != nil {
			return err
		}
	}
	return img.writeBack(false)
}

// ApplySnapshot makes the snapshot's L1 table the active one.
func (img *Image) ApplySnapshot(name string) error {
	if img.ro {
		return block.ErrReadOnly
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	i := img.findSnapshot(name)
	if i < 0 {
		return fmt.Errorf("Could not apply snapshot '%s': snapshot not found", name)
	}
	s := img.snapshots[i]
	if err := img.writeBack(false); err != nil {
		return err
	}
	sl1, err := img.readL1(int64(s.l1Offset), int(s.l1Size))
	if err != nil {
		return err
	}
	if len(sl1) > len(img.l1) {
		// The snapshot maps more than the active table can hold: grow it in place first.
		if err := img.growL1(int64(len(sl1))); err != nil {
			return err
		}
	}
	newL1 := make([]uint64, len(img.l1))
	copy(newL1, sl1)
	// Take references for the snapshot's tree first, then drop the old active tree.
	if err := img.updateL1Refs(newL1, 1); err != nil {
		return err
	}
	old := img.l1
	img.l1 = newL1
	if s.diskSize != 0 && int64(s.diskSize) != img.size {
		img.size = int64(s.diskSize)
		img.hdr.size = s.diskSize
		var b [8]byte
		be.PutUint64(b[:], s.diskSize)
		if _, err := img.f.WriteAt(b[:], 24); err != nil {
			return err
		}
	}
	if err := img.writeL1(); err != nil {
		return err
	}
	if err := img.updateL1Refs(old, -1); err != nil {
		return err
	}
	img.l2 = newTableCache(img, img.clusterSize, img.l2.max)
	if err := img.refreshCopiedFlags(); err != nil {
		return err
	}
	return img.writeBack(false)
}

// DeleteSnapshot drops the snapshot's references and removes its table entry.
func (img *Image) DeleteSnapshot(name string) error {
	if img.ro {
		return block.ErrReadOnly
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	i := img.findSnapshot(name)
	if i < 0 {
		return fmt.Errorf("Could not delete snapshot '%s': snapshot not found", name)
	}
	s := img.snapshots[i]
	if err := img.writeBack(false); err != nil {
		return err
	}
	snaps := append(append([]snapshot(nil), img.snapshots[:i]...), img.snapshots[i+1:]...)
	if err := img.writeSnapshotTable(snaps); err != nil {
		return err
	}
	sl1, err := img.readL1(int64(s.l1Offset), int(s.l1Size))
	if err != nil {
		return err
	}
	if err := img.updateL1Refs(sl1, -1); err != nil {
		return err
	}
	if err := img.freeRange(int64(s.l1Offset), int64(s.l1Size)*8); err != nil {
		return err
	}
	if err := img.refreshCopiedFlags(); err != nil {
		return err
	}
	return img.writeBack(false)
}

func (img *Image) readL1(off int64, n int) ([]uint64, error) {
	if uint64(n)*8 > maxL1Bytes {
		return nil, errors.New("qcow2: snapshot L1 table too large")
	}
	b := make([]byte, n*8)
	if err := readFull(img.f, b, off); err != nil {
		return nil, err
	}
	l1 := make([]uint64, n)
	for i := range l1 {
		l1[i] = be.Uint64(b[i*8:])
	}
	return l1, nil
}

// updateL1Refs adds delta to the refcount of every L2 table in l1 and every cluster
// those tables reference (a decrement to zero frees the cluster).
func (img *Image) updateL1Refs(l1 []uint64, delta int64) error {
	for _, e := range l1 {
		l2off := int64(e & l1OffsetMask)
		if l2off == 0 {
			continue
		}
		t, err := img.l2.get(l2off, false)
		if err != nil {
			return err
		}
		if err := img.l2DataRefs(t, delta); err != nil {
			return err
		}
		if err := img.rc.add(l2off>>img.clusterBits, delta); err != nil {
			return err
		}
		if delta < 0 {
			if r, _ := img.rc.get(l2off >> img.clusterBits); r == 0 {
				img.l2.drop(l2off)
			}
		}
	}
	return nil
}

// l2DataRefs adds delta to the clusters referenced by one L2 table.
func (img *Image) l2DataRefs(t *table, delta int64) error {
	if img.external {
		return nil
	}
	n := int64(1) << img.l2Bits
	stride := int64(8)
	if img.extL2 {
		stride = 16
	}
	for i := int64(0); i < n; i++ {
		e := be.Uint64(t.b[i*stride:])
		if e&flagCompressed != 0 {
			coff, csize := img.compressedRange(e)
			first := coff >> img.clusterBits
			last := (coff + csize - 1) >> img.clusterBits
			for c := first; c <= last; c++ {
				if err := img.rc.add(c, delta); err != nil {
					return err
				}
			}
			continue
		}
		if h := int64(e & l2OffsetMask); h != 0 {
			if err := img.rc.add(h>>img.clusterBits, delta); err != nil {
				return err
			}
		}
	}
	return nil
}

// refreshCopiedFlags sets QCOW_OFLAG_COPIED on active L1 and L2 entries exactly where
// the refcount is one, as QEMU and qemu-img check expect.
func (img *Image) refreshCopiedFlags() error {
	l1Changed := false
	for i, e := range img.l1 {
		l2off := int64(e & l1OffsetMask)
		if l2off == 0 {
			continue
		}
		r, err := img.rc.get(l2off >> img.clusterBits)
		if err != nil {
			return err
		}
		ne := e &^ flagCopied
		if r == 1 {
			ne |= flagCopied
		}
		if ne != e {
			img.l1[i] = ne
			l1Changed = true
		}
		t, err := img.l2.get(l2off, false)
		if err != nil {
			return err
		}
		n := int64(1) << img.l2Bits
		stride := int64(8)
		if img.extL2 {
			stride = 16
		}
		for j := int64(0); j < n; j++ {
			e := be.Uint64(t.b[j*stride:])
			if e&flagCompressed != 0 {
				continue
			}
			h := int64(e & l2OffsetMask)
			if h == 0 && !(img.external && e&flagCopied != 0) {
				continue
			}
			ne := e &^ flagCopied
			if img.external {
				ne |= flagCopied
			} else if r, err := img.rc.get(h >> img.clusterBits); err != nil {
				return err
			} else if r == 1 {
				ne |= flagCopied
			}
			if ne != e {
				be.PutUint64(t.b[j*stride:], ne)
				t.dirty = true
			}
		}
	}
	if l1Changed {
		img.l1Dirty = true
	}
	return nil
}

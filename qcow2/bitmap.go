package qcow2

// Persistent dirty bitmaps (the qcow2 "bitmaps" extension, autoclear bit 0), kept as
// QEMU 7.2 keeps them: the directory is read and checked when the image is opened; the
// first change to a writable image (a guest write, a resize, a bitmap operation) loads
// every consistent bitmap into memory and marks it in use on disk; from then on writes
// set its bits in memory, and Close stores every loaded bitmap in new clusters, points
// the header at a new directory and frees the old clusters. A crash in between leaves
// the bitmaps marked in use, which QEMU (and gemu) treat as inconsistent.

import (
	"errors"
	"fmt"
	"math/bits"

	"gemu/block"
)

const (
	bmeMaxTableSize   = 0x8000000
	bmeMaxPhysSize    = 0x20000000
	bmeMaxGranBits    = 31
	bmeMinGranBits    = 9
	bmeMaxNameSize    = 1023
	bmeFlagInUse      = 1 << 0
	bmeFlagAuto       = 1 << 1
	bmeReservedFlags  = 0xfffffffc
	bmeEntryReserved  = 0xff000000000001fe
	bmeEntryOffset    = 0x00fffffffffffe00
	bmeEntryAllOnes   = 1
	bmTypeDirty       = 1
	maxBitmaps        = 65535
	maxBitmapDirSize  = 1024 * maxBitmaps
	bitmapDirEntryLen = 24
	// maxBitmapMemory bounds the bitmap data one image keeps in memory.
	maxBitmapMemory = 512 << 20
)

// dirtyBitmap is one directory entry and, once loaded, its bits.
type dirtyBitmap struct {
	name      string
	granBits  uint8
	flags     uint32 // as on disk when the image was opened (or as stored last)
	tableOff  uint64
	tableSize uint32

	loaded       bool
	inconsistent bool     // in use on disk when we opened it: its data is unusable
	enabled      bool     // records writes (the "auto" flag)
	oldTable     []uint64 // the on-disk table of a loaded bitmap (freed after storing)
	chunks       map[int64][]byte
}

// bitmapExt is the decoded bitmaps header extension.
type bitmapExt struct {
	nb        uint32
	dirSize   uint64
	dirOffset uint64
}

// parseBitmapsExt checks the extension as qcow2_read_extensions does.
func parseBitmapsExt(data []byte, cs uint64) (*bitmapExt, error) {
	if be.Uint32(data[4:]) != 0 {
		return nil, errors.New("bitmaps_ext: Reserved field is not zero")
	}
	e := &bitmapExt{nb: be.Uint32(data), dirSize: be.Uint64(data[8:]), dirOffset: be.Uint64(data[16:])}
	if e.nb > maxBitmaps {
		return nil, fmt.Errorf("bitmaps_ext: Image has %d bitmaps, exceeding the QEMU supported maximum of %d", e.nb, maxBitmaps)
	}
	if e.nb == 0 {
		return nil, errors.New("found bitmaps extension with zero bitmaps")
	}
	if e.dirOffset&(cs-1) != 0 {
		return nil, errors.New("bitmaps_ext: invalid bitmap directory offset")
	}
	if e.dirSize > maxBitmapDirSize {
		return nil, fmt.Errorf("bitmaps_ext: bitmap directory size (%d) exceeds the maximum supported size (%d)", e.dirSize, maxBitmapDirSize)
	}
	return e, nil
}

func (e *bitmapExt) encode() []byte {
	b := make([]byte, 24)
	be.PutUint32(b, e.nb)
	be.PutUint64(b[8:], e.dirSize)
	be.PutUint64(b[16:], e.dirOffset)
	return b
}

func dirEntrySize(nameLen, extra int) int { return (bitmapDirEntryLen + nameLen + extra + 7) &^ 7 }

// bitmapTableSize is the number of bitmap clusters (table entries) a bitmap of the
// given granularity needs for a disk of size bytes.
func bitmapTableSize(size int64, granBits uint8, cs int64) int64 {
	nbits := (uint64(size) + (uint64(1) << granBits) - 1) >> granBits
	nbytes := (nbits + 7) / 8
	return int64((nbytes + uint64(cs) - 1) / uint64(cs))
}

// checkDirEntry is QEMU's check_dir_entry.
func (img *Image) checkDirEntry(b *dirtyBitmap) bool {
	cs := uint64(img.clusterSize)
	if b.tableSize == 0 || b.tableOff == 0 || b.tableOff%cs != 0 || b.tableSize > bmeMaxTableSize ||
		b.granBits > bmeMaxGranBits || b.granBits < bmeMinGranBits || b.flags&bmeReservedFlags != 0 ||
		len(b.name) > bmeMaxNameSize {
		return false
	}
	phys := uint64(b.tableSize) * cs
	if phys > bmeMaxPhysSize {
		return false
	}
	// The table must cover the disk unless the bitmap is in use (a resize that was
	// never stored): (phys*8) << granBits, which cannot overflow with phys <= 2^29.
	if b.flags&bmeFlagInUse == 0 && uint64(img.size) > (phys*8)<<b.granBits {
		return false
	}
	return true
}

// loadBitmapDir reads and checks the bitmap directory (bitmap_list_load).
func (img *Image) loadBitmapDir() error {
	e := img.hdr.bitmaps
	if e == nil {
		return nil
	}
	if e.dirSize == 0 {
		return errors.New("Requested bitmap directory size is zero")
	}
	if e.dirOffset > 1<<56 {
		return errors.New("Failed to read bitmap directory: Invalid argument")
	}
	dir := make([]byte, e.dirSize)
	if err := readFull(img.f, dir, int64(e.dirOffset)); err != nil {
		return fmt.Errorf("Failed to read bitmap directory: %v", err)
	}
	var list []*dirtyBitmap
	names := map[string]bool{}
	off := 0
	for off < len(dir) {
		if len(dir)-off < bitmapDirEntryLen {
			return errors.New("Broken bitmap directory")
		}
		if len(list)+1 > int(e.nb) {
			return errors.New("More bitmaps found than specified in header extension")
		}
		d := dir[off:]
		nameLen := int(be.Uint16(d[18:]))
		extra := int(be.Uint32(d[20:]))
		if extra > maxBitmapDirSize || off+dirEntrySize(nameLen, extra) > len(dir) {
			return errors.New("Broken bitmap directory")
		}
		if extra != 0 {
			return errors.New("Bitmap extra data is not supported")
		}
		b := &dirtyBitmap{
			tableOff:  be.Uint64(d),
			tableSize: be.Uint32(d[8:]),
			flags:     be.Uint32(d[12:]),
			granBits:  d[17],
			name:      string(d[bitmapDirEntryLen : bitmapDirEntryLen+nameLen]),
		}
		if d[16] != bmTypeDirty || !img.checkDirEntry(b) {
			return fmt.Errorf("Bitmap '%s' doesn't satisfy the constraints", printable(b.name))
		}
		if names[b.name] {
			return fmt.Errorf("Duplicate bitmap name '%s'", printable(b.name))
		}
		names[b.name] = true
		b.inconsistent = b.flags&bmeFlagInUse != 0
		b.enabled = b.flags&bmeFlagAuto != 0
		list = append(list, b)
		off += dirEntrySize(nameLen, extra)
	}
	if len(list) != int(e.nb) {
		return errors.New("Less bitmaps found than specified in header extension")
	}
	img.bitmaps = list
	return nil
}

// printable keeps a hostile name from putting control characters on a terminal.
func printable(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c == 0x7f {
			b[i] = '?'
		}
	}
	return string(b)
}

// readBitmapTable reads and checks a bitmap table (bitmap_table_load).
func (img *Image) readBitmapTable(b *dirtyBitmap) ([]uint64, error) {
	if b.tableOff > 1<<56 {
		return nil, fmt.Errorf("Could not read bitmap_table table from image for bitmap '%s': Invalid argument", b.name)
	}
	raw := make([]byte, int64(b.tableSize)*8)
	if err := readFull(img.f, raw, int64(b.tableOff)); err != nil {
		return nil, fmt.Errorf("Could not read bitmap_table table from image for bitmap '%s': %v", b.name, err)
	}
	t := make([]uint64, b.tableSize)
	for i := range t {
		t[i] = be.Uint64(raw[i*8:])
		if !validBitmapEntry(t[i], img.clusterSize) {
			return nil, fmt.Errorf("Could not read bitmap_table table from image for bitmap '%s': Invalid argument", b.name)
		}
	}
	return t, nil
}

func validBitmapEntry(e uint64, cs int64) bool {
	if e&bmeEntryReserved != 0 {
		return false
	}
	if off := e & bmeEntryOffset; off != 0 && (e&bmeEntryAllOnes != 0 || off%uint64(cs) != 0) {
		return false
	}
	return true
}

// checkBitmapTables validates the table of every consistent bitmap, as QEMU's open
// does when it loads them (a bad entry or a size that does not match the disk makes
// the image unopenable).
func (img *Image) checkBitmapTables() error {
	for _, b := range img.bitmaps {
		if b.inconsistent {
			continue
		}
		if _, err := img.readBitmapTable(b); err != nil {
			return err
		}
		if bitmapTableSize(img.size, b.granBits, img.clusterSize) != int64(b.tableSize) {
			return fmt.Errorf("Could not read bitmap '%s' from image: Invalid argument", b.name)
		}
	}
	return nil
}

func (img *Image) chunkBits() int64 { return img.clusterSize * 8 }

// loadBitmapData reads a consistent bitmap's clusters into memory. Caller holds mu.
func (img *Image) loadBitmapData(b *dirtyBitmap) error {
	t, err := img.readBitmapTable(b)
	if err != nil {
		return err
	}
	if bitmapTableSize(img.size, b.granBits, img.clusterSize) != int64(b.tableSize) {
		return fmt.Errorf("Could not read bitmap '%s' from image: Invalid argument", b.name)
	}
	b.chunks = map[int64][]byte{}
	nbits := (img.size + int64(1)<<b.granBits - 1) >> b.granBits
	for i, e := range t {
		off := int64(e & bmeEntryOffset)
		if off == 0 && e&bmeEntryAllOnes == 0 {
			continue
		}
		c, err := img.newChunk(b, int64(i))
		if err != nil {
			return err
		}
		if off == 0 {
			for j := range c {
				c[j] = 0xff
			}
		} else if err := readFull(img.f, c, off); err != nil {
			return fmt.Errorf("Could not read bitmap '%s' from image: %v", b.name, err)
		}
		// Bits past the end of the disk stay clear.
		if end := (int64(i) + 1) * img.chunkBits(); end > nbits {
			clearBits(c, nbits-int64(i)*img.chunkBits(), img.chunkBits())
		}
	}
	b.oldTable = t
	b.loaded = true
	return nil
}

func (img *Image) newChunk(b *dirtyBitmap, i int64) ([]byte, error) {
	if c := b.chunks[i]; c != nil {
		return c, nil
	}
	if img.bitmapMem+img.clusterSize > maxBitmapMemory {
		return nil, fmt.Errorf("qcow2: bitmaps need more than %d MiB of memory", maxBitmapMemory>>20)
	}
	img.bitmapMem += img.clusterSize
	c := make([]byte, img.clusterSize)
	b.chunks[i] = c
	return c, nil
}

// clearBits clears bits [from, to) of c (LSB first within each byte, as QEMU
// serialises its bitmaps).
func clearBits(c []byte, from, to int64) {
	for k := from; k < to && k < int64(len(c))*8; k++ {
		if k&7 == 0 && to-k >= 8 {
			n := min((to-k)/8, int64(len(c))-k/8)
			clear(c[k/8 : k/8+n])
			k += n*8 - 1
			continue
		}
		c[k/8] &^= 1 << (k & 7)
	}
}

func setBits(c []byte, from, to int64) {
	for k := from; k < to; k++ {
		if k&7 == 0 && to-k >= 8 {
			n := (to - k) / 8
			for j := k / 8; j < k/8+n; j++ {
				c[j] = 0xff
			}
			k += n*8 - 1
			continue
		}
		c[k/8] |= 1 << (k & 7)
	}
}

// beginBitmaps loads every consistent bitmap and marks it in use on disk, once per
// session, before the first change (qcow2_load_dirty_bitmaps on a writable image).
// Caller holds mu.
func (img *Image) beginBitmaps() error {
	if img.bmSession || len(img.bitmaps) == 0 {
		return nil
	}
	for _, b := range img.bitmaps {
		if b.inconsistent || b.loaded {
			continue
		}
		if err := img.loadBitmapData(b); err != nil {
			return err
		}
	}
	// Update the in-use flags in place with the autoclear bit cleared meanwhile, so a
	// torn directory write is never trusted (update_ext_header_and_dir_in_place).
	dirty := false
	for _, b := range img.bitmaps {
		if b.loaded && b.flags&bmeFlagInUse == 0 {
			b.flags |= bmeFlagInUse
			dirty = true
		}
	}
	img.bmSession = true
	if !dirty {
		return nil
	}
	if err := img.writeAutoclear(img.hdr.autoclear &^ autoclearBitmap); err != nil {
		return err
	}
	if err := img.writeBitmapDir(int64(img.hdr.bitmaps.dirOffset), img.bitmaps); err != nil {
		return err
	}
	if err := img.sync(img.f); err != nil {
		return err
	}
	return img.writeAutoclear(img.hdr.autoclear | autoclearBitmap)
}

func (img *Image) writeAutoclear(ac uint64) error {
	var b [8]byte
	be.PutUint64(b[:], ac)
	if _, err := img.f.WriteAt(b[:], 88); err != nil {
		return err
	}
	if err := img.sync(img.f); err != nil {
		return err
	}
	img.hdr.autoclear = ac
	return nil
}

func encodeBitmapDir(list []*dirtyBitmap) []byte {
	n := 0
	for _, b := range list {
		n += dirEntrySize(len(b.name), 0)
	}
	dir := make([]byte, n)
	off := 0
	for _, b := range list {
		d := dir[off:]
		be.PutUint64(d, b.tableOff)
		be.PutUint32(d[8:], b.tableSize)
		be.PutUint32(d[12:], b.flags)
		d[16] = bmTypeDirty
		d[17] = b.granBits
		be.PutUint16(d[18:], uint16(len(b.name)))
		copy(d[bitmapDirEntryLen:], b.name)
		off += dirEntrySize(len(b.name), 0)
	}
	return dir
}

func (img *Image) writeBitmapDir(off int64, list []*dirtyBitmap) error {
	_, err := img.f.WriteAt(encodeBitmapDir(list), off)
	return err
}

// markBitmaps records a guest change of [off, off+n) in every enabled bitmap. Caller
// holds mu after startWriting.
func (img *Image) markBitmaps(off, n int64) error {
	if n <= 0 || !img.bmSession {
		return nil
	}
	for _, b := range img.bitmaps {
		if !b.loaded || !b.enabled {
			continue
		}
		if err := img.setRange(b, off, n); err != nil {
			return err
		}
	}
	return nil
}

// setRange sets the bits covering guest bytes [off, off+n).
func (img *Image) setRange(b *dirtyBitmap, off, n int64) error {
	end := min(off+n, img.size)
	if off >= end {
		return nil
	}
	first, last := off>>b.granBits, (end-1)>>b.granBits
	cb := img.chunkBits()
	for k := first; k <= last; {
		ci := k / cb
		stop := min(last+1, (ci+1)*cb)
		c, err := img.newChunk(b, ci)
		if err != nil {
			return err
		}
		setBits(c, k-ci*cb, stop-ci*cb)
		k = stop
	}
	return nil
}

// resizeBitmaps follows a resize: bits past a smaller end are dropped. Caller holds
// mu.
func (img *Image) resizeBitmaps(size int64) {
	for _, b := range img.bitmaps {
		if !b.loaded {
			continue
		}
		nbits := (size + int64(1)<<b.granBits - 1) >> b.granBits
		for i, c := range b.chunks {
			start := i * img.chunkBits()
			if start >= nbits {
				delete(b.chunks, i)
				img.bitmapMem -= img.clusterSize
				continue
			}
			if nbits-start < img.chunkBits() {
				clearBits(c, nbits-start, img.chunkBits())
			}
		}
	}
}

// storeBitmaps writes every loaded bitmap to new clusters, then a new directory and
// header, then frees what the old ones used (qcow2_store_persistent_dirty_bitmaps).
// Caller holds wmu and mu.
func (img *Image) storeBitmaps() error {
	if !img.bmSession {
		return nil
	}
	img.bmSession = false
	if img.hdr.version < 3 {
		return nil // downgraded (amend compat=0.10): the bitmaps are left stale, as QEMU leaves them
	}
	cs := img.clusterSize
	var free [][2]int64 // old clusters, freed once the new directory is in the header
	type saved struct {
		b        *dirtyBitmap
		off      uint64
		size     uint32
		oldTable []uint64
	}
	var done []saved
	for _, b := range img.bitmaps {
		if !b.loaded {
			continue
		}
		ts := bitmapTableSize(img.size, b.granBits, cs)
		t := make([]uint64, ts)
		for i := int64(0); i < ts; i++ {
			c := b.chunks[i]
			if c == nil || allZero(c) {
				continue
			}
			off, err := img.allocClusters(1)
			if err != nil {
				return err
			}
			if _, err := img.f.WriteAt(c, off); err != nil {
				return err
			}
			t[i] = uint64(off)
		}
		tb := make([]byte, ts*8)
		for i, e := range t {
			be.PutUint64(tb[i*8:], e)
		}
		toff, err := img.allocClusters((ts*8 + cs - 1) / cs)
		if err != nil {
			return err
		}
		if _, err := img.f.WriteAt(tb, toff); err != nil {
			return err
		}
		done = append(done, saved{b, uint64(toff), uint32(ts), t})
	}
	for _, s := range done {
		if s.b.tableOff != 0 {
			for _, e := range s.b.oldTable {
				if o := int64(e & bmeEntryOffset); o != 0 {
					free = append(free, [2]int64{o, cs})
				}
			}
			free = append(free, [2]int64{int64(s.b.tableOff), int64(s.b.tableSize) * 8})
		}
		s.b.tableOff, s.b.tableSize, s.b.oldTable = s.off, s.size, s.oldTable
		s.b.flags = 0
		if s.b.enabled {
			s.b.flags = bmeFlagAuto
		}
	}
	h := img.hdr
	if h.bitmaps != nil {
		free = append(free, [2]int64{int64(h.bitmaps.dirOffset), int64(h.bitmaps.dirSize)})
	}
	for _, f := range img.freedBitmaps {
		free = append(free, f)
	}
	img.freedBitmaps = nil
	if len(img.bitmaps) > 0 {
		dir := encodeBitmapDir(img.bitmaps)
		doff, err := img.allocClusters((int64(len(dir)) + cs - 1) / cs)
		if err != nil {
			return err
		}
		if _, err := img.f.WriteAt(dir, doff); err != nil {
			return err
		}
		// Data, tables, directory and their refcounts on disk before the header names them.
		if err := img.writeBack(true); err != nil {
			return err
		}
		h.bitmaps = &bitmapExt{nb: uint32(len(img.bitmaps)), dirSize: uint64(len(dir)), dirOffset: uint64(doff)}
		h.autoclear |= autoclearBitmap
	} else {
		if err := img.writeBack(true); err != nil {
			return err
		}
		h.bitmaps = nil
		h.autoclear &^= autoclearBitmap
	}
	if err := img.writeHeader(); err != nil {
		return err
	}
	for _, f := range free {
		if f[1] > 0 {
			img.freeRange(f[0], f[1])
		}
	}
	return img.writeBack(true)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// bitmapInfo lists the directory as qemu-img info shows it.
func (img *Image) bitmapInfo() []any {
	var l []any
	for _, b := range img.bitmaps {
		flags := []any{}
		if b.flags&bmeFlagInUse != 0 {
			flags = append(flags, "in-use")
		}
		if b.flags&bmeFlagAuto != 0 {
			flags = append(flags, "auto")
		}
		l = append(l, map[string]any{"flags": flags, "name": b.name, "granularity": int64(1) << b.granBits})
	}
	return l
}

// Bitmaps lists the persistent bitmaps in directory order, flags as stored on disk.
func (img *Image) Bitmaps() []block.BitmapInfo {
	img.mu.Lock()
	defer img.mu.Unlock()
	var l []block.BitmapInfo
	for _, b := range img.bitmaps {
		l = append(l, block.BitmapInfo{Name: b.name, Granularity: int64(1) << b.granBits,
			InUse: b.inconsistent, Auto: b.enabled})
	}
	return l
}

// SupportsBitmaps: only v3 images keep persistent bitmaps.
func (img *Image) SupportsBitmaps() bool { return img.hdr.version >= 3 }

func (img *Image) findBitmap(name string) *dirtyBitmap {
	for _, b := range img.bitmaps {
		if b.name == name {
			return b
		}
	}
	return nil
}

// bitmapOp runs f on a writable image's loaded bitmaps under the writer locks.
func (img *Image) bitmapOp(f func() error) error {
	if img.ro {
		return block.ErrReadOnly
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.startWriting(); err != nil {
		return err
	}
	if err := img.beginBitmaps(); err != nil {
		return err
	}
	img.bmSession = true
	return f()
}

// usable is bdrv_dirty_bitmap_check for the operations that change a bitmap.
func usable(b *dirtyBitmap, name string) error {
	if b == nil {
		return fmt.Errorf("Dirty bitmap '%s' not found", name)
	}
	if b.inconsistent {
		return fmt.Errorf("Bitmap '%s' is inconsistent and cannot be used\nTry block-dirty-bitmap-remove to delete this bitmap from disk", name)
	}
	return nil
}

// AddBitmap creates an empty persistent bitmap (granularity 0: QEMU's default, the
// cluster size clamped to [4 KiB, 64 KiB]).
func (img *Image) AddBitmap(name string, granularity int64, disabled bool) error {
	return img.bitmapOp(func() error {
		if name == "" {
			return errors.New("Bitmap name cannot be empty")
		}
		if img.findBitmap(name) != nil {
			return fmt.Errorf("Bitmap already exists: %s", name)
		}
		if granularity == 0 {
			granularity = min(max(img.clusterSize, 4096), 65536)
		}
		if granularity < 512 || granularity > 1<<32-1 || granularity&(granularity-1) != 0 {
			return errors.New("Granularity must be power of 2 and at least 512")
		}
		gb := uint8(bits.TrailingZeros64(uint64(granularity)))
		if img.hdr.version < 3 {
			return fmt.Errorf("Can't make bitmap '%s' persistent in '%s': Cannot store dirty bitmaps in qcow2 v2 files", name, img.filename)
		}
		msg := ""
		switch {
		case gb > bmeMaxGranBits:
			msg = fmt.Sprintf("Granularity exceeds maximum (%d bytes)", uint64(1)<<bmeMaxGranBits)
		case len(name) > bmeMaxNameSize:
			msg = fmt.Sprintf("Name length exceeds maximum (%d characters)", bmeMaxNameSize)
		}
		if msg == "" {
			need := ((uint64(img.size)+(uint64(1)<<gb)-1)>>gb + 7) / 8
			if need > bmeMaxPhysSize || need > bmeMaxTableSize*uint64(img.clusterSize) {
				msg = "Too much space will be occupied by the bitmap. Use larger granularity"
			}
		}
		if msg == "" && len(img.bitmaps) >= maxBitmaps {
			msg = "Maximum number of persistent bitmaps is already reached"
		}
		if msg == "" {
			n := 0
			for _, b := range img.bitmaps {
				n += dirEntrySize(len(b.name), 0)
			}
			if n+dirEntrySize(len(name), 0) > maxBitmapDirSize {
				msg = "Not enough space in the bitmap directory"
			}
		}
		if msg != "" {
			return fmt.Errorf("Can't make bitmap '%s' persistent in '%s': %s", name, img.filename, msg)
		}
		img.bitmaps = append(img.bitmaps, &dirtyBitmap{name: name, granBits: gb, loaded: true,
			enabled: !disabled, chunks: map[int64][]byte{}})
		return nil
	})
}

// RemoveBitmap deletes a bitmap (also an inconsistent one).
func (img *Image) RemoveBitmap(name string) error {
	return img.bitmapOp(func() error {
		for i, b := range img.bitmaps {
			if b.name != name {
				continue
			}
			img.dropChunks(b)
			if b.tableOff != 0 {
				t := b.oldTable
				if t == nil {
					// Not loaded (inconsistent): its table was checked at open only if
					// it was consistent, so read it now and free what it names.
					if tt, err := img.readBitmapTable(b); err == nil {
						t = tt
					}
				}
				for _, e := range t {
					if o := int64(e & bmeEntryOffset); o != 0 {
						img.freedBitmaps = append(img.freedBitmaps, [2]int64{o, img.clusterSize})
					}
				}
				img.freedBitmaps = append(img.freedBitmaps, [2]int64{int64(b.tableOff), int64(b.tableSize) * 8})
			}
			img.bitmaps = append(img.bitmaps[:i:i], img.bitmaps[i+1:]...)
			return nil
		}
		return fmt.Errorf("Dirty bitmap '%s' not found", name)
	})
}

func (img *Image) dropChunks(b *dirtyBitmap) {
	img.bitmapMem -= int64(len(b.chunks)) * img.clusterSize
	b.chunks = map[int64][]byte{}
}

// ClearBitmap clears every bit.
func (img *Image) ClearBitmap(name string) error {
	return img.bitmapOp(func() error {
		b := img.findBitmap(name)
		if err := usable(b, name); err != nil {
			return err
		}
		img.dropChunks(b)
		return nil
	})
}

// EnableBitmap makes the bitmap record writes (or stop recording, on false).
func (img *Image) EnableBitmap(name string, on bool) error {
	return img.bitmapOp(func() error {
		b := img.findBitmap(name)
		if err := usable(b, name); err != nil {
			return err
		}
		b.enabled = on
		return nil
	})
}

// BitmapData returns a loaded or loadable bitmap's bits, serialised as QEMU stores
// them (LSB first, one bit per granularity of the disk). For tests and merges.
func (img *Image) BitmapData(name string) ([]byte, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	b := img.findBitmap(name)
	if err := usable(b, name); err != nil {
		return nil, err
	}
	if !b.loaded {
		// A read-only look: load into a copy so the image's state is unchanged.
		c := *b
		c.chunks = nil
		if err := img.loadBitmapData(&c); err != nil {
			return nil, err
		}
		img.bitmapMem -= int64(len(c.chunks)) * img.clusterSize
		b = &c
	}
	nbits := (img.size + int64(1)<<b.granBits - 1) >> b.granBits
	out := make([]byte, (nbits+7)/8)
	for i, c := range b.chunks {
		start := i * img.clusterSize
		if start < int64(len(out)) {
			copy(out[start:], c)
		}
	}
	return out, nil
}

// MergeBitmap ORs bitmap srcName of src (this image when src is nil) into dst. Both
// must describe the same disk size; granularities may differ.
func (img *Image) MergeBitmap(dst string, srcDrv block.Driver, srcName string) error {
	var data []byte
	var srcGran uint8
	var srcSize int64
	var src *Image
	if srcDrv != nil {
		s, ok := srcDrv.(*Image)
		if !ok {
			return fmt.Errorf("Dirty bitmap '%s' not found", srcName)
		}
		src = s
	}
	if src != nil && src != img {
		d, err := src.BitmapData(srcName)
		if err != nil {
			return err
		}
		data = d
		src.mu.Lock()
		srcGran = src.findBitmap(srcName).granBits
		srcSize = src.size
		src.mu.Unlock()
	}
	return img.bitmapOp(func() error {
		b := img.findBitmap(dst)
		if err := usable(b, dst); err != nil {
			return err
		}
		if data == nil {
			s := img.findBitmap(srcName)
			if err := usable(s, srcName); err != nil {
				return err
			}
			srcGran, srcSize = s.granBits, img.size
			nbits := (img.size + int64(1)<<s.granBits - 1) >> s.granBits
			data = make([]byte, (nbits+7)/8)
			for i, c := range s.chunks {
				copy(data[i*img.clusterSize:], c)
			}
		}
		if srcSize != img.size {
			return errors.New("Bitmaps are incompatible and can't be merged")
		}
		// Every set source bit dirties its guest range in dst.
		for i, c := range data {
			if c == 0 {
				continue
			}
			for j := 0; j < 8; j++ {
				if c>>j&1 == 0 {
					continue
				}
				k := int64(i)*8 + int64(j)
				if err := img.setRange(b, k<<srcGran, int64(1)<<srcGran); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// BitmapsSize is what qemu-img measure reports as "bitmaps size" for a qcow2 target
// of the given cluster size holding these bitmaps over a disk of size bytes.
func BitmapsSize(list []block.BitmapInfo, size, cs int64) int64 {
	var total, dir int64
	for _, b := range list {
		nbits := (size + b.Granularity - 1) / b.Granularity
		clusters := ((nbits+7)/8 + cs - 1) / cs
		total += clusters * cs
		total += (clusters*8 + cs - 1) / cs * cs
		dir += int64(dirEntrySize(len(b.Name), 0))
	}
	return total + (dir+cs-1)/cs*cs
}

// startMarking is startWriting followed by markBitmaps. Caller holds mu.
func (img *Image) startMarking(off, n int64) error {
	if err := img.startWriting(); err != nil {
		return err
	}
	return img.markBitmaps(off, n)
}

// startMarkingClusters marks every cluster of a compressed batch. Caller holds mu.
func (img *Image) startMarkingClusters(cl []block.CompressedCluster) error {
	if err := img.startWriting(); err != nil {
		return err
	}
	for _, c := range cl {
		if err := img.markBitmaps(c.Off, img.clusterSize); err != nil {
			return err
		}
	}
	return nil
}

// markLocked takes the writer locks for startMarking.
func (img *Image) markLocked(off, n int64) error {
	if n <= 0 {
		return nil
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.startMarking(off, n)
}

// bitmapRefs counts the bitmap directory, tables and data clusters
// (qcow2_check_bitmaps_refcounts).
func (c *checker) bitmapRefs() error {
	img := c.img
	e := img.hdr.bitmaps
	if e == nil {
		return nil
	}
	c.inc(int64(e.dirOffset), int64(e.dirSize))
	for _, b := range img.bitmaps {
		c.inc(int64(b.tableOff), int64(b.tableSize)*8)
		if b.tableOff > 1<<56 {
			c.res.Corruptions++
			continue
		}
		raw := make([]byte, int64(b.tableSize)*8)
		if err := readFull(img.f, raw, int64(b.tableOff)); err != nil {
			c.res.Corruptions++
			return err
		}
		bad := false
		for i := int64(0); i < int64(b.tableSize); i++ {
			if !validBitmapEntry(be.Uint64(raw[i*8:]), img.clusterSize) {
				bad = true
			}
		}
		if bad {
			// bitmap_table_load refuses the whole table.
			c.res.Corruptions++
			return errors.New("Invalid argument")
		}
		for i := int64(0); i < int64(b.tableSize); i++ {
			if off := int64(be.Uint64(raw[i*8:]) & bmeEntryOffset); off != 0 {
				c.inc(off, img.clusterSize)
			}
		}
	}
	return nil
}

// MeasureBitmaps is BitmapsSize for a target created with opts (qcow2_measure).
func (format) MeasureBitmaps(src block.Driver, size int64, opts map[string]string) (int64, bool, error) {
	img, ok := src.(*Image)
	if !ok || img.hdr.version < 3 {
		return 0, false, nil
	}
	switch opts["compat"] {
	case "0.10", "v2":
		return 0, false, nil
	}
	cs := int64(65536)
	if v, ok := opts["cluster_size"]; ok {
		n, err := ParseSize(v)
		if err != nil {
			return 0, false, err
		}
		cs = n
	}
	if cs < 512 || cs&(cs-1) != 0 {
		return 0, false, errors.New("Cluster size must be a power of two between 512 and 2048k")
	}
	return BitmapsSize(img.Bitmaps(), size, cs), true, nil
}

var _ block.Bitmapper = (*Image)(nil)
var _ block.BitmapMeasurer = format{}

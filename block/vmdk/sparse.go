package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zlib"
)

// gtCacheBudget bounds the grain tables kept in memory per extent; past it the cache
// is dropped (tables are written through, so nothing is lost).
const gtCacheBudget = 32 << 20

// sparseExtent is one hosted sparse extent file: header, grain directory (and its
// redundant copy) and lazily loaded grain tables.
type sparseExtent struct {
	f          *os.File
	path       string
	h          header
	grainBytes int64
	gtBytes    int64 // bytes of one grain table, sector aligned
	limit      int64 // bytes of guest data this extent maps
	compressed bool
	markers    bool
	zeroGrain  bool
	stream     bool // gd_offset was GD_AT_END: the real header is the footer

	mu       sync.RWMutex // guards gd, rgd, gts, gtsBytes, end, size, gen
	gen      uint64       // bumped on every grain-table update
	allocMu  sync.Mutex   // serialises allocations
	gd, rgd  []uint32
	gts      map[uint32][]uint32
	gtsBytes int
	end      int64 // end of file: where the next grain or table goes
	size     int64 // file size at open, bounds every offset read from metadata

	sw atomic.Pointer[streamWriter] // set while appending to an empty streamOptimized image

	// fill reads what unallocated grains show at extent offset off (the parent image);
	// nil means zeroes.
	fill func(p []byte, off int64) error
}

// openSparse reads a sparse extent's header and directories; dirBudget (if not nil)
// is the directory memory the image may still use, and is charged.
func openSparse(f *os.File, path string, dirBudget *int64) (*sparseExtent, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	buf := make([]byte, sectorSize)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return nil, fmt.Errorf("vmdk: could not read header: %v", shortErr(err))
	}
	h, err := parseHeader(buf)
	if err != nil {
		return nil, err
	}
	s := &sparseExtent{f: f, path: path, size: size}
	if h.GDOffset == gdAtEnd && !h.COWD {
		if h, err = readFooter(f, size); err != nil {
			return nil, err
		}
		s.stream = true
	}
	if err := h.validate(); err != nil {
		return nil, err
	}
	s.h = h
	s.grainBytes = int64(h.GrainSize) * sectorSize
	s.gtBytes = (int64(h.NumGTEsPerGT)*4 + sectorSize - 1) / sectorSize * sectorSize
	s.limit = int64(h.Capacity) * sectorSize
	s.compressed = h.compressed()
	s.markers = h.Flags&flagMarkers != 0
	s.zeroGrain = h.Flags&flagZeroGrain != 0
	if int64(h.OverHead) > size/sectorSize {
		return nil, fmt.Errorf("File truncated, expecting at least %d bytes", int64(h.OverHead)*sectorSize)
	}
	n := int(h.gdEntries())
	if dirBudget != nil {
		need := int64(n) * 4
		if h.Flags&flagRGD != 0 && h.RGDOffset != 0 && !s.stream {
			need *= 2
		}
		if *dirBudget -= need; *dirBudget < 0 {
			return nil, fmt.Errorf("vmdk: the extents' grain directories need more than %d MiB", maxDirBytes>>20)
		}
	}
	if s.gd, err = s.readDir("grain directory", h.GDOffset, n); err != nil {
		return nil, err
	}
	if h.Flags&flagRGD != 0 && h.RGDOffset != 0 && !s.stream {
		if s.rgd, err = s.readDir("redundant grain directory", h.RGDOffset, n); err != nil {
			return nil, err
		}
	}
	s.gts = map[uint32][]uint32{}
	s.end = (size + sectorSize - 1) &^ (sectorSize - 1)
	return s, nil
}

func shortErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("file too short")
	}
	return err
}

// readFooter returns the header copy a streamOptimized image keeps in its last three
// sectors: footer marker, footer, end-of-stream marker.
func readFooter(f *os.File, size int64) (header, error) {
	if size < 4*sectorSize || size%sectorSize != 0 {
		return header{}, fmt.Errorf("vmdk: stream image without a valid footer (file size %d)", size)
	}
	b := make([]byte, 3*sectorSize)
	if _, err := f.ReadAt(b, size-3*sectorSize); err != nil {
		return header{}, fmt.Errorf("vmdk: could not read footer: %v", shortErr(err))
	}
	le := binary.LittleEndian
	if le.Uint32(b[8:]) != 0 || le.Uint32(b[12:]) != markerFooter ||
		le.Uint64(b[1024:]) != 0 || le.Uint32(b[1032:]) != 0 || le.Uint32(b[1036:]) != markerEOS {
		return header{}, fmt.Errorf("vmdk: invalid footer or end-of-stream marker")
	}
	h, err := parseHeader(b[512:1024])
	if err != nil {
		return header{}, fmt.Errorf("%v (in footer)", err)
	}
	if h.GDOffset == gdAtEnd {
		return header{}, fmt.Errorf("vmdk: footer has no grain directory offset")
	}
	return h, nil
}

func (s *sparseExtent) readDir(what string, sector uint64, n int) ([]uint32, error) {
	bytesN := int64(n) * 4
	if sector == 0 || sector > uint64(s.size)/sectorSize || int64(sector)*sectorSize+bytesN > s.size {
		return nil, fmt.Errorf("vmdk: %s at sector %d (%d entries) lies outside the file", what, sector, n)
	}
	d := make([]uint32, n)
	raw := make([]byte, min(bytesN, 64<<10))
	for i := 0; i < n; {
		k := min(n-i, len(raw)/4)
		if _, err := s.f.ReadAt(raw[:4*k], int64(sector)*sectorSize+int64(i)*4); err != nil {
			return nil, fmt.Errorf("vmdk: reading %s: %v", what, shortErr(err))
		}
		for j := range k {
			d[i+j] = binary.LittleEndian.Uint32(raw[4*j:])
		}
		i += k
	}
	return d, nil
}

// gt returns grain table gdi (nil when the directory entry is 0), loading and checking it.
func (s *sparseExtent) gt(gdi uint32) ([]uint32, error) {
	s.mu.RLock()
	t, ok := s.gts[gdi]
	var sector uint32
	if !ok && int(gdi) < len(s.gd) {
		sector = s.gd[gdi]
	}
	gen := s.gen
	s.mu.RUnlock()
	if ok || sector == 0 {
		return t, nil
	}
	t, err := s.loadGT(gdi, sector)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if old, ok := s.gts[gdi]; ok {
		t = old
	} else if s.gen == gen {
		// Cache only if no entry changed while we read: else the copy may be stale.
		if s.gtsBytes+len(t)*4 > gtCacheBudget {
			s.gts, s.gtsBytes = map[uint32][]uint32{}, 0
		}
		s.gts[gdi] = t
		s.gtsBytes += len(t) * 4
	}
	s.mu.Unlock()
	return t, nil
}

func (s *sparseExtent) loadGT(gdi, sector uint32) ([]uint32, error) {
	n := int(s.h.NumGTEsPerGT)
	off := int64(sector) * sectorSize
	if off+int64(n)*4 > s.size {
		return nil, fmt.Errorf("vmdk: grain table %d at offset %d lies outside the file", gdi, off)
	}
	raw := make([]byte, n*4)
	if _, err := s.f.ReadAt(raw, off); err != nil {
		return nil, fmt.Errorf("vmdk: reading grain table %d: %v", gdi, shortErr(err))
	}
	t := make([]uint32, n)
	for i := range t {
		t[i] = binary.LittleEndian.Uint32(raw[4*i:])
	}
	if err := s.checkGT(gdi, off, t); err != nil {
		return nil, err
	}
	return t, nil
}

// checkGT refuses grain tables whose entries point into metadata, past the end of the
// file, or at the same or overlapping grains.
func (s *sparseExtent) checkGT(gdi uint32, gtOff int64, t []uint32) error {
	var used []uint32
	first := max(uint64(1), s.h.OverHead)
	for i, e := range t {
		if e == 0 || (e == gteZeroed && s.zeroGrain) {
			continue
		}
		off := int64(e) * sectorSize
		if uint64(e) < first {
			return fmt.Errorf("vmdk: grain table %d entry %d points into metadata (sector %d)", gdi, i, e)
		}
		if off >= s.size {
			return fmt.Errorf("vmdk: grain table %d entry %d points past the end of the file (offset %d)", gdi, i, off)
		}
		if !s.compressed {
			if overlaps(off, s.grainBytes, gtOff, int64(len(t))*4) ||
				overlaps(off, s.grainBytes, int64(s.h.GDOffset)*sectorSize, int64(len(s.gd))*4) ||
				(s.rgd != nil && overlaps(off, s.grainBytes, int64(s.h.RGDOffset)*sectorSize, int64(len(s.rgd))*4)) {
				return fmt.Errorf("vmdk: grain table %d entry %d overlaps grain metadata", gdi, i)
			}
		}
		used = append(used, e)
	}
	slices.Sort(used)
	minGap := uint32(1)
	if !s.compressed {
		minGap = uint32(s.h.GrainSize)
	}
	for i := 1; i < len(used); i++ {
		if used[i]-used[i-1] < minGap {
			return fmt.Errorf("vmdk: grain table %d has overlapping grains at sectors %d and %d", gdi, used[i-1], used[i])
		}
	}
	return nil
}

func overlaps(a, an, b, bn int64) bool { return a < b+bn && b < a+an }

// grainState classifies one grain-table entry.
type grainState int

const (
	grainUnalloc grainState = iota
	grainZero
	grainData
)

// lookup returns the state and the entry (a sector number) for guest grain gi.
func (s *sparseExtent) lookup(gi int64) (grainState, uint32, error) {
	per := int64(s.h.NumGTEsPerGT)
	gdi := gi / per
	if gdi >= int64(len(s.gd)) {
		return grainUnalloc, 0, nil
	}
	t, err := s.gt(uint32(gdi))
	if err != nil || t == nil {
		return grainUnalloc, 0, err
	}
	s.mu.RLock()
	e := t[gi%per]
	s.mu.RUnlock()
	switch {
	case e == 0:
		return grainUnalloc, 0, nil
	case e == gteZeroed && s.zeroGrain:
		return grainZero, e, nil
	}
	return grainData, e, nil
}

// grainLen is the guest bytes grain gi holds (the last grain may be short).
func (s *sparseExtent) grainLen(gi int64) int64 {
	return min(s.grainBytes, s.limit-gi*s.grainBytes)
}

// readAt reads p at extent-relative offset off. Ranges past the header's capacity
// read as zeroes.
func (s *sparseExtent) readAt(p []byte, off int64) error {
	if s.sw.Load() != nil {
		return fmt.Errorf("vmdk: streamOptimized image is being written and cannot be read until closed")
	}
	for len(p) > 0 {
		if off >= s.limit {
			clear(p)
			return nil
		}
		gi := off / s.grainBytes
		in := off % s.grainBytes
		n := min(int64(len(p)), s.grainBytes-in, s.limit-off)
		st, e, err := s.lookup(gi)
		if err != nil {
			return err
		}
		switch {
		case st == grainUnalloc && s.fill != nil:
			if err := s.fill(p[:n], off); err != nil {
				return err
			}
		case st != grainData:
			clear(p[:n])
		case s.compressed:
			if err := s.readCompressed(gi, e, in, p[:n]); err != nil {
				return err
			}
		default:
			host := int64(e)*sectorSize + in
			m, err := s.f.ReadAt(p[:n], host)
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			clear(p[m:n])
		}
		p, off = p[n:], off+n
	}
	return nil
}

// inflater is a pooled zlib reader with its input reader.
type inflater struct {
	br bytes.Reader
	zr io.ReadCloser
}

var inflaters sync.Pool

// bufPool hands out scratch buffers of at least the requested size.
type bufPool struct{ p sync.Pool }

func (bp *bufPool) get(n int) *[]byte {
	if b, ok := bp.p.Get().(*[]byte); ok && cap(*b) >= n {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n)
	return &b
}

func (bp *bufPool) put(b *[]byte) { bp.p.Put(b) }

// Two pools so grain-sized and record-sized buffers do not displace each other.
var scratch, recScratch bufPool

// readCompressed inflates grain gi (stored at sector e) and copies [in, in+len(p)).
func (s *sparseExtent) readCompressed(gi int64, e uint32, in int64, p []byte) error {
	off := int64(e) * sectorSize
	glen := s.grainLen(gi)
	// Records are at most a grain plus a little deflate overhead; qemu-img bounds them
	// by two grains. Read a grain and a sector first, the rest only when needed.
	maxRec := min(2*s.grainBytes, s.size-off)
	rb := recScratch.get(int(2 * s.grainBytes))
	defer recScratch.put(rb)
	first := maxRec
	if s.markers {
		first = min(s.grainBytes+sectorSize, maxRec)
	}
	raw := (*rb)[:first]
	if _, err := s.f.ReadAt(raw, off); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	data := raw
	if s.markers {
		if len(raw) < grainMarkerLen {
			return fmt.Errorf("vmdk: grain marker at offset %d overruns the file", off)
		}
		lba := binary.LittleEndian.Uint64(raw)
		sz := int64(binary.LittleEndian.Uint32(raw[8:]))
		if want := uint64(gi * int64(s.h.GrainSize)); lba != want {
			return fmt.Errorf("vmdk: grain marker at offset %d has LBA %d, expected %d", off, lba, want)
		}
		if sz == 0 || sz > maxRec-grainMarkerLen {
			return fmt.Errorf("vmdk: compressed grain at offset %d: length %d overruns the file or grain buffer", off, sz)
		}
		if need := grainMarkerLen + sz; need > int64(len(raw)) {
			more := (*rb)[len(raw):need]
			if _, err := s.f.ReadAt(more, off+int64(len(raw))); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			raw = (*rb)[:need]
		}
		data = raw[grainMarkerLen : grainMarkerLen+sz]
	}
	var dst []byte
	var db *[]byte
	if in == 0 && int64(len(p)) == glen {
		dst = p
	} else {
		db = scratch.get(int(glen))
		defer scratch.put(db)
		dst = *db
	}
	if err := inflate(dst, data); err != nil {
		return fmt.Errorf("vmdk: compressed grain at offset %d: %v", off, err)
	}
	if db != nil {
		copy(p, dst[in:])
	}
	return nil
}

// inflate decompresses zlib data into exactly len(dst) bytes.
func inflate(dst, data []byte) error {
	inf, _ := inflaters.Get().(*inflater)
	if inf == nil {
		inf = &inflater{}
	}
	defer inflaters.Put(inf)
	inf.br.Reset(data)
	var err error
	if inf.zr == nil {
		inf.zr, err = zlib.NewReader(&inf.br)
	} else {
		err = inf.zr.(zlib.Resetter).Reset(&inf.br, nil)
	}
	if err != nil {
		inf.zr = nil
		return err
	}
	if _, err := io.ReadFull(inf.zr, dst); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return errors.New("compressed data shorter than the grain")
		}
		return err
	}
	return nil
}

// status describes the run starting at extent offset off, at most n bytes, merging
// grains of the same kind (and, for data, contiguous host offsets). It scans a grain
// table at a time, so large unallocated areas cost little.
func (s *sparseExtent) status(off, n int64) (st grainState, host int64, length int64, err error) {
	if off >= s.limit {
		return grainUnalloc, -1, n, nil
	}
	n = min(n, s.limit-off)
	host = -1
	per := int64(s.h.NumGTEsPerGT)
	first := true
	// classify returns the state and host offset of one entry.
	classify := func(e uint32, in int64) (grainState, int64) {
		switch {
		case e == 0:
			return grainUnalloc, -1
		case e == gteZeroed && s.zeroGrain:
			return grainZero, -1
		case s.compressed:
			return grainData, -1
		}
		return grainData, int64(e)*sectorSize + in
	}
	for length < n {
		cur := off + length
		gi := cur / s.grainBytes
		gdi := gi / per
		var t []uint32
		if gdi < int64(len(s.gd)) {
			if t, err = s.gt(uint32(gdi)); err != nil {
				return 0, 0, 0, err
			}
		}
		if t == nil {
			// No grain table: the rest of its range is unallocated.
			if !first && st != grainUnalloc {
				break
			}
			st, first = grainUnalloc, false
			length += min((gdi+1)*per*s.grainBytes-cur, n-length)
			continue
		}
		s.mu.RLock()
		stop := false
		for idx := gi % per; idx < per && length < n; idx++ {
			in := (off + length) % s.grainBytes
			gs, h := classify(t[idx], in)
			if first {
				st, host, first = gs, h, false
			} else if gs != st || (h >= 0 && h != host+length) {
				stop = true
				break
			}
			length += min(s.grainBytes-in, n-length)
		}
		s.mu.RUnlock()
		if stop {
			break
		}
	}
	return st, host, length, nil
}

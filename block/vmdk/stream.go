package vmdk

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zlib"
)

// streamLevel is the deflate level for streamOptimized grains (zlib's default, as QEMU).
const streamLevel = 6

// streamFlushBytes batches appended records into large writes.
const streamFlushBytes = 4 << 20

// streamWriter appends grains to an empty streamOptimized extent in VMware's layout:
// each grain as a marker + zlib stream, each grain table after its grains behind a
// GT marker, then the GD marker and directory, the footer marker and footer (a header
// copy holding the directory offset), and the end-of-stream marker. Grains must
// arrive in increasing order; the sector-0 header says GD_AT_END throughout.
type streamWriter struct {
	s      *sparseExtent
	mu     sync.Mutex
	pos    int64  // file offset of out[0]
	out    []byte // records not yet written
	gd     []uint32
	curGD  int64
	gt     []uint32
	gtUsed bool
	next   int64 // lowest grain index that may still be written
	// written marks grains that got a record, so zeroing a grain already passed is
	// refused only when it holds data (one bit per grain).
	written []uint64
	pend    []byte
	pendGI  int64
	err     error // sticky: after a failure the image cannot be finished
}

// startStream switches an empty compressed extent to append mode, dropping any
// preallocated tables after the metadata area.
func (s *sparseExtent) startStream() error {
	h := s.h
	h.Flags &^= flagRGD
	h.RGDOffset = 0
	h.GDOffset = gdAtEnd
	if h.OverHead == 0 {
		h.OverHead = 128
	}
	hb := make([]byte, sectorSize)
	h.marshal(hb)
	if _, err := s.f.WriteAt(hb, 0); err != nil {
		return err
	}
	start := int64(h.OverHead) * sectorSize
	if err := s.f.Truncate(start); err != nil {
		return err
	}
	s.h = h
	s.markers = true
	s.sw.Store(&streamWriter{
		s: s, pos: start, curGD: -1, pendGI: -1,
		gd:  make([]uint32, len(s.gd)),
		gt:  make([]uint32, h.NumGTEsPerGT),
		out: make([]byte, 0, streamFlushBytes+2*s.grainBytes),
	})
	return nil
}

func (w *streamWriter) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return err
}

func (w *streamWriter) writeAt(p []byte, off int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	s := w.s
	for len(p) > 0 {
		if off >= s.limit {
			return fmt.Errorf("vmdk: write past the end of the extent")
		}
		gi := off / s.grainBytes
		in := off % s.grainBytes
		n := min(int64(len(p)), s.grainBytes-in, s.limit-off)
		if gi != w.pendGI {
			if err := w.flushPending(); err != nil {
				return err
			}
			if gi < w.next {
				return fmt.Errorf("vmdk: streamOptimized images are written in order: grain %d was already written", gi)
			}
			if w.pend == nil {
				w.pend = make([]byte, s.grainBytes)
			}
			clear(w.pend)
			w.pendGI = gi
		}
		copy(w.pend[in:], p[:n])
		p, off = p[n:], off+n
	}
	return nil
}

func (w *streamWriter) writeZeroes(off, n int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	s := w.s
	for n > 0 {
		gi := off / s.grainBytes
		in := off % s.grainBytes
		k := min(n, s.grainBytes-in, s.limit-off)
		if k <= 0 {
			return fmt.Errorf("vmdk: write past the end of the extent")
		}
		switch {
		case gi == w.pendGI:
			clear(w.pend[in : in+k])
		case gi < w.next && w.hasRecord(gi):
			return fmt.Errorf("vmdk: streamOptimized images are written in order: grain %d was already written", gi)
		}
		// Grains without a record stay unallocated, which reads as zeroes.
		off, n = off+k, n-k
	}
	return nil
}

// flushPending compresses and appends the grain collected by writeAt.
func (w *streamWriter) flushPending() error {
	if w.pendGI < 0 {
		return nil
	}
	gi := w.pendGI
	w.pendGI = -1
	data := w.pend[:w.s.grainLen(gi)]
	if isZero(data) {
		w.next = max(w.next, gi+1)
		return nil
	}
	rec := compressGrain(data, w.s.grainBytes)
	err := w.appendGrain(gi, rec)
	putRec(rec)
	return err
}

// appendGrain adds one compressed record (marker and padding included) for grain gi.
func (w *streamWriter) appendGrain(gi int64, rec []byte) error {
	if gi < w.next {
		return fmt.Errorf("vmdk: streamOptimized images are written in order: grain %d was already written", gi)
	}
	per := int64(len(w.gt))
	if gdi := gi / per; gdi != w.curGD {
		if err := w.finishGT(); err != nil {
			return err
		}
		w.curGD = gdi
	}
	binary.LittleEndian.PutUint64(rec, uint64(gi)*w.s.h.GrainSize)
	sector := (w.pos + int64(len(w.out))) / sectorSize
	if sector > 0xffffffff {
		return w.fail(fmt.Errorf("vmdk: streamOptimized image exceeds the 2 TiB a sparse extent can address"))
	}
	w.gt[gi%per] = uint32(sector)
	w.gtUsed = true
	if i := int(gi / 64); i >= len(w.written) {
		w.written = append(w.written, make([]uint64, i+1-len(w.written))...)
	}
	w.written[gi/64] |= 1 << (gi % 64)
	w.out = append(w.out, rec...)
	w.next = gi + 1
	if len(w.out) >= streamFlushBytes {
		return w.flushOut()
	}
	return nil
}

func (w *streamWriter) hasRecord(gi int64) bool {
	i := int(gi / 64)
	return i < len(w.written) && w.written[i]&(1<<(gi%64)) != 0
}

func (w *streamWriter) flushOut() error {
	if len(w.out) == 0 {
		return nil
	}
	if _, err := w.s.f.WriteAt(w.out, w.pos); err != nil {
		return w.fail(err)
	}
	w.pos += int64(len(w.out))
	w.out = w.out[:0]
	return nil
}

// appendMeta appends a metadata marker sector and its payload, returning the payload's
// sector.
func (w *streamWriter) appendMeta(typ uint32, payload []byte) uint32 {
	sectors := (len(payload) + sectorSize - 1) / sectorSize
	var m [sectorSize]byte
	putMetaMarker(m[:], uint64(sectors), typ)
	w.out = append(w.out, m[:]...)
	at := (w.pos + int64(len(w.out))) / sectorSize
	w.out = append(w.out, payload...)
	w.out = append(w.out, make([]byte, sectors*sectorSize-len(payload))...)
	return uint32(at)
}

func (w *streamWriter) finishGT() error {
	if w.curGD < 0 || !w.gtUsed {
		return nil
	}
	raw := make([]byte, len(w.gt)*4)
	for i, e := range w.gt {
		binary.LittleEndian.PutUint32(raw[4*i:], e)
	}
	w.gd[w.curGD] = w.appendMeta(markerGT, raw)
	clear(w.gt)
	w.gtUsed = false
	return nil
}

// finish writes the last grain, tables, directory, footer and end-of-stream marker.
func (w *streamWriter) finish() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if err := w.flushPending(); err != nil {
		return err
	}
	if err := w.finishGT(); err != nil {
		return err
	}
	raw := make([]byte, len(w.gd)*4)
	for i, e := range w.gd {
		binary.LittleEndian.PutUint32(raw[4*i:], e)
	}
	gdSector := w.appendMeta(markerGD, raw)
	footer := w.s.h
	footer.GDOffset = uint64(gdSector)
	fb := make([]byte, sectorSize)
	footer.marshal(fb)
	w.appendMeta(markerFooter, fb)
	var eos [sectorSize]byte
	w.out = append(w.out, eos[:]...)
	if err := w.flushOut(); err != nil {
		return err
	}
	if err := w.s.f.Truncate(w.pos); err != nil {
		return w.fail(err)
	}
	w.err = fmt.Errorf("vmdk: streamOptimized image already finished")
	return nil
}

// writeCompressed is the ClusterCompressor write path: rec is a record from
// compressGrain (or nil: compress raw here).
func (w *streamWriter) writeCompressed(off int64, rec []byte, raw []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	s := w.s
	if off%s.grainBytes != 0 || off >= s.limit {
		return fmt.Errorf("vmdk: compressed write at %d is not grain aligned", off)
	}
	gi := off / s.grainBytes
	if gi == w.pendGI {
		return fmt.Errorf("vmdk: compressed write to grain %d overlaps a pending write", gi)
	}
	if err := w.flushPending(); err != nil {
		return err
	}
	if rec == nil {
		raw = raw[:min(int64(len(raw)), s.grainLen(gi))]
		if isZero(raw) {
			if gi < w.next {
				return fmt.Errorf("vmdk: streamOptimized images are written in order: grain %d was already written", gi)
			}
			w.next = gi + 1
			return nil
		}
		rec = compressGrain(raw, s.grainBytes)
	}
	err := w.appendGrain(gi, rec)
	putRec(rec)
	return err
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// deflater is a pooled zlib writer appending to a record buffer.
type deflater struct {
	zw  *zlib.Writer
	dst []byte
}

func (d *deflater) Write(p []byte) (int, error) {
	d.dst = append(d.dst, p...)
	return len(p), nil
}

var deflaters sync.Pool

// recFree recycles record buffers between CompressCluster and WriteCompressed without
// allocating (a channel of slices, unlike sync.Pool, boxes nothing).
var recFree = make(chan []byte, 256)

func getRec(n int) []byte {
	select {
	case b := <-recFree:
		if cap(b) >= n {
			return b[:0]
		}
	default:
	}
	return make([]byte, 0, n)
}

func putRec(b []byte) {
	select {
	case recFree <- b:
	default:
	}
}

// compressGrain returns a pooled record: a 12-byte grain marker (LBA filled in when
// the record is placed), the zlib stream, and zero padding to a whole sector. The
// output depends only on data, so parallel compression stays deterministic.
func compressGrain(data []byte, grainBytes int64) []byte {
	rb := getRec(int(grainBytes + grainBytes/8 + 2*sectorSize))
	d, _ := deflaters.Get().(*deflater)
	if d == nil {
		d = &deflater{}
		d.zw, _ = zlib.NewWriterLevel(d, streamLevel)
	} else {
		d.zw.Reset(d)
	}
	d.dst = append(rb, zeroGrainBuf[:grainMarkerLen]...)
	d.zw.Write(data) // writes into d.dst cannot fail
	d.zw.Close()
	rec := d.dst
	d.dst = nil
	deflaters.Put(d)
	binary.LittleEndian.PutUint32(rec[8:], uint32(len(rec)-grainMarkerLen))
	if pad := len(rec) % sectorSize; pad != 0 {
		rec = append(rec, zeroGrainBuf[:sectorSize-pad]...)
	}
	return rec
}

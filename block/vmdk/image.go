package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"gemu/block"
)

// extent is one piece of the virtual disk as the descriptor lists it.
type extent struct {
	line     extentLine
	start    int64 // guest byte offset
	size     int64 // guest bytes
	path     string
	infoName string // file name as qemu-img info shows it
	f        *os.File
	flatOff  int64 // FLAT: byte offset of the extent data in f
	sp       *sparseExtent
}

// image is an open VMDK: a descriptor and its extents.
type image struct {
	filename   string
	readOnly   bool
	opts       block.OpenOptions // as opened: extents inherit locking and O_DIRECT
	size       int64
	desc       *descriptor
	createType string
	descFile   *os.File // separate descriptor file, nil for monolithic sparse
	extents    []*extent
	closeOnce  sync.Once

	// Where the descriptor text lives, so the CID can be rewritten.
	descF            *os.File
	descOff, descLen int64
	cidOnce          sync.Once
	cidErr           error

	backing     block.Driver // parent image, nil if none (or not opened)
	parentFull  string       // parent path as opened
	parentCIDOK bool         // the parent's CID is our parentCID
}

// Backing returns the parent image, if one was opened.
func (m *image) Backing() block.Driver { return m.backing }

// streamImage is an image whose only extent is streamOptimized: its
// block.ClusterCompressor deflates grains (on every core in the convert pipeline).
type streamImage struct{ *image }

// CompressionRequired tells the convert pipeline that every grain of this image is
// stored compressed, so it should use the ClusterCompressor path even without -c
// (qemu-img convert compresses streamOptimized output without -c too).
func (m *streamImage) CompressionRequired() bool { return true }

// sparseImage is an image made only of uncompressed sparse extents of one grain
// size. Like qemu-img, convert -c to it succeeds and stores grains uncompressed:
// its CompressCluster returns nil ("store uncompressed").
type sparseImage struct{ *image }

func (m *sparseImage) CompressionUnit() int64 { return m.extents[0].sp.grainBytes }

func (m *sparseImage) CompressCluster([]byte) ([]byte, error) { return nil, nil }

func (m *sparseImage) WriteCompressed(off int64, compressed []byte, raw []byte) error {
	if compressed != nil {
		return fmt.Errorf("vmdk: this subformat stores grains uncompressed")
	}
	if off < 0 || off >= m.size {
		return fmt.Errorf("vmdk: compressed write at %d beyond the end of the disk", off)
	}
	raw = raw[:min(int64(len(raw)), m.size-off)]
	if isZero(raw) {
		if m.backing == nil {
			return nil // unallocated grains read as zeroes
		}
		return m.WriteZeroes(off, int64(len(raw)), 0)
	}
	_, err := m.WriteAt(raw, off)
	return err
}

func (m *image) Format() string   { return "vmdk" }
func (m *image) Filename() string { return m.filename }
func (m *image) Size() int64      { return m.size }

// find returns the index of the extent holding guest offset off.
func (m *image) find(off int64) int {
	return sort.Search(len(m.extents), func(i int) bool {
		e := m.extents[i]
		return e.start+e.size > off
	})
}

func (m *image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("vmdk: negative offset")
	}
	total := len(p)
	if off >= m.size {
		return 0, io.EOF
	}
	if int64(len(p)) > m.size-off {
		p = p[:m.size-off]
	}
	done := 0
	for i := m.find(off); len(p) > 0 && i < len(m.extents); i++ {
		e := m.extents[i]
		rel := off - e.start
		n := min(int64(len(p)), e.size-rel)
		if err := e.readAt(p[:n], rel); err != nil {
			return done, err
		}
		p, off, done = p[n:], off+n, done+int(n)
	}
	if done < total {
		return done, io.EOF
	}
	return done, nil
}

func (e *extent) readAt(p []byte, rel int64) error {
	switch e.line.Kind {
	case kindZero:
		clear(p)
	case kindSparse:
		return e.sp.readAt(p, rel)
	default:
		n, err := e.f.ReadAt(p, e.flatOff+rel)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		clear(p[n:])
	}
	return nil
}

// each runs fn over the extent pieces covering [off, off+n).
func (m *image) each(off, n int64, fn func(e *extent, rel, k, done int64) error) error {
	if off < 0 || n < 0 || off+n > m.size {
		return fmt.Errorf("vmdk: access at %d+%d beyond the end of the disk (%d)", off, n, m.size)
	}
	var done int64
	for i := m.find(off); n > 0 && i < len(m.extents); i++ {
		e := m.extents[i]
		rel := off - e.start
		k := min(n, e.size-rel)
		if err := fn(e, rel, k, done); err != nil {
			return err
		}
		off, n, done = off+k, n-k, done+k
	}
	return nil
}

func (m *image) writable(e *extent) error {
	if m.readOnly {
		return block.ErrReadOnly
	}
	if e.line.ReadOnly {
		return fmt.Errorf("vmdk: extent %q is read-only", e.line.Name)
	}
	return m.touch()
}

// touch gives the image a new CID on its first write after opening, as QEMU does, so
// children made on top of the old content (parentCID) stop reading through it. The new
// CID is derived from the old one rather than random to keep converts reproducible.
func (m *image) touch() error {
	m.cidOnce.Do(func() { m.cidErr = m.rewriteCID() })
	return m.cidErr
}

func (m *image) rewriteCID() error {
	if m.descF == nil || m.descLen <= 0 || m.descLen > maxDescBytes {
		return nil
	}
	buf := make([]byte, m.descLen)
	if _, err := m.descF.ReadAt(buf, m.descOff); err != nil && err != io.EOF {
		return err
	}
	i := bytes.Index(buf, []byte("\nCID="))
	if i < 0 {
		return nil
	}
	i += len("\nCID=")
	j := i
	for j < len(buf) && buf[j] != '\n' && buf[j] != '\r' && buf[j] != 0 {
		j++
	}
	cid := crc32.ChecksumIEEE(binary.LittleEndian.AppendUint32([]byte("gemu vmdk write"), m.desc.CID))
	if cid == m.desc.CID || cid == 0xffffffff {
		cid ^= 1
	}
	hex := fmt.Appendf(nil, "%08x", cid)
	if j-i == len(hex) {
		if _, err := m.descF.WriteAt(hex, m.descOff+int64(i)); err != nil {
			return err
		}
	} else {
		text := bytes.TrimRight(buf, "\x00")
		nb := append(append(append([]byte{}, text[:i]...), hex...), text[j:]...)
		if m.descOff > 0 && int64(len(nb)) > m.descLen {
			return nil // no room in the embedded descriptor: keep the old CID
		}
		if m.descOff == 0 {
			if err := m.descF.Truncate(int64(len(nb))); err != nil {
				return err
			}
		} else {
			nb = append(nb, make([]byte, m.descLen-int64(len(nb)))...)
		}
		if _, err := m.descF.WriteAt(nb, m.descOff); err != nil {
			return err
		}
	}
	m.desc.CID = cid
	return nil
}

func (m *image) WriteAt(p []byte, off int64) (int, error) {
	err := m.each(off, int64(len(p)), func(e *extent, rel, k, done int64) error {
		if err := m.writable(e); err != nil {
			return err
		}
		q := p[done : done+k]
		switch e.line.Kind {
		case kindZero:
			if !isZero(q) {
				return fmt.Errorf("vmdk: cannot write data into a ZERO extent")
			}
			return nil
		case kindSparse:
			return e.sp.writeAt(q, rel)
		}
		_, err := e.f.WriteAt(q, e.flatOff+rel)
		return err
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (m *image) WriteZeroes(off, n int64, flags block.ZeroFlags) error {
	return m.each(off, n, func(e *extent, rel, k, _ int64) error {
		if err := m.writable(e); err != nil {
			return err
		}
		switch e.line.Kind {
		case kindZero:
			return nil
		case kindSparse:
			return e.sp.writeZeroes(rel, k)
		}
		mode := uint32(unix.FALLOC_FL_ZERO_RANGE)
		if flags&block.ZeroMayUnmap != 0 {
			mode = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
		}
		if unix.Fallocate(int(e.f.Fd()), mode, e.flatOff+rel, k) == nil {
			return nil
		}
		for k > 0 {
			c := min(k, int64(len(zeroGrainBuf)))
			if _, err := e.f.WriteAt(zeroGrainBuf[:c], e.flatOff+rel); err != nil {
				return err
			}
			rel, k = rel+c, k-c
		}
		return nil
	})
}

// Discard is advisory: VMDK cannot release grains (QEMU ignores discard too), so it
// does nothing beyond checking the range.
func (m *image) Discard(off, n int64) error {
	if m.readOnly {
		return block.ErrReadOnly
	}
	return m.each(off, n, func(*extent, int64, int64, int64) error { return nil })
}

func (m *image) Flush() error {
	if m.readOnly {
		return nil
	}
	for _, e := range m.extents {
		if e.sp != nil && e.sp.sw.Load() != nil {
			e.sp.sw.Load().mu.Lock()
			err := e.sp.sw.Load().flushOut()
			e.sp.sw.Load().mu.Unlock()
			if err != nil {
				return err
			}
		}
		if e.f != nil {
			if err := e.f.Sync(); err != nil {
				return err
			}
		}
	}
	return nil
}

// BlockStatus reports one run as qemu-img map does for vmdk: grains allocated with
// data (with host offset unless compressed), zeroed grains, unallocated grains;
// flat extents are data, with the host file's holes reported as zero.
func (m *image) BlockStatus(off, n int64) (block.Status, error) {
	if off < 0 || off >= m.size || n <= 0 {
		return block.Status{Offset: off, HostOffset: -1}, nil
	}
	n = min(n, m.size-off)
	e := m.extents[m.find(off)]
	rel := off - e.start
	n = min(n, e.size-rel)
	st := block.Status{Offset: off, Length: n, HostOffset: -1}
	switch e.line.Kind {
	case kindZero:
		st.Zero, st.Allocated = true, true
	case kindFlat:
		host := e.flatOff + rel
		st.Data, st.Allocated, st.HostOffset, st.HostFile = true, true, host, e.path
		data, hole := seekDataHole(e.f, host)
		switch {
		case data < 0:
			// SEEK_DATA unsupported: report data.
		case data > host:
			st.Zero = true
			st.Length = min(n, data-host)
		default:
			st.Length = min(n, hole-host)
		}
	case kindSparse:
		gs, host, length, err := e.sp.status(rel, n)
		if err != nil {
			return st, err
		}
		st.Length = length
		switch gs {
		case grainUnalloc:
			st.Zero = true
			if m.backing != nil {
				return m.parentStatus(off, length)
			}
		case grainZero:
			st.Zero, st.Allocated = true, true
		case grainData:
			st.Data, st.Allocated = true, true
			st.HostFile = e.path
			st.HostOffset = host
			st.Compressed = e.sp.compressed
		}
	}
	return st, nil
}

// parentStatus describes a range this image leaves to its parent, as qemu-img map:
// the parent's status one level deeper; past the parent's end, unallocated zeroes at
// depth 0.
func (m *image) parentStatus(off, n int64) (block.Status, error) {
	psize := m.backing.Size()
	if off >= psize {
		return block.Status{Offset: off, Length: n, Zero: true, HostOffset: -1}, nil
	}
	ps, err := m.backing.BlockStatus(off, min(n, psize-off))
	if err != nil {
		return ps, err
	}
	ps.Offset = off
	ps.Length = min(ps.Length, n)
	ps.Depth++
	return ps, nil
}

// seekDataHole returns the next data offset at or after off and the hole after it
// (data past EOF reads as a hole); data < 0 when the filesystem cannot say.
func seekDataHole(f *os.File, off int64) (data, hole int64) {
	fd := int(f.Fd())
	d, err := unix.Seek(fd, off, unix.SEEK_DATA)
	if err != nil {
		if err == unix.ENXIO {
			return 1 << 62, 1 << 62
		}
		return -1, -1
	}
	h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
	if err != nil {
		return -1, -1
	}
	return d, h
}

// Resize is not supported: qemu-img 7.2 cannot resize vmdk images either.
func (m *image) Resize(int64, block.ResizeOptions) error { return errNoResize{} }

// errNoResize carries qemu-img's message and matches block.ErrUnsupported.
type errNoResize struct{}

func (errNoResize) Error() string { return "Image format driver does not support resize" }
func (errNoResize) Unwrap() error { return block.ErrUnsupported }

func (m *image) Close() error {
	var err error
	m.closeOnce.Do(func() {
		seen := map[*os.File]bool{}
		for _, e := range m.extents {
			if e.sp != nil && e.sp.sw.Load() != nil {
				if ferr := e.sp.sw.Load().finish(); ferr != nil && err == nil {
					err = ferr
				}
			}
		}
		for _, e := range m.extents {
			if e.f != nil && !seen[e.f] {
				seen[e.f] = true
				if cerr := e.f.Close(); cerr != nil && err == nil {
					err = cerr
				}
			}
		}
		if m.descFile != nil && !seen[m.descFile] {
			m.descFile.Close()
		}
		if m.backing != nil {
			m.backing.Close()
		}
	})
	return err
}

// ActualSize sums the host bytes of the descriptor and every distinct extent file.
func (m *image) ActualSize() (int64, error) {
	var total int64
	seen := map[string]bool{}
	add := func(path string) error {
		if seen[path] {
			return nil
		}
		seen[path] = true
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			return err
		}
		total += st.Blocks * 512
		return nil
	}
	if err := add(m.filename); err != nil {
		return 0, err
	}
	for _, e := range m.extents {
		if e.path != "" {
			if err := add(e.path); err != nil {
				return 0, err
			}
		}
	}
	return total, nil
}

// Info reports the vmdk part of qemu-img info.
func (m *image) Info() (*block.ImageInfo, error) {
	info := &block.ImageInfo{HasDirtyFlag: true}
	if m.desc.ParentHint != "" {
		info.BackingFilename = m.desc.ParentHint
		info.FullBackingFilename = m.parentFull
		info.BackingFilenameFormat = "vmdk"
	}
	var exts []any
	for _, e := range m.extents {
		x := map[string]any{
			"filename":     e.infoName,
			"format":       extentInfoFormat(m, e),
			"virtual-size": e.size,
		}
		if e.sp != nil {
			x["cluster-size"] = e.sp.grainBytes
			if e.sp.compressed {
				x["compressed"] = true
			}
		}
		exts = append(exts, x)
	}
	info.ClusterSize = m.clusterSize()
	info.FormatSpecific = map[string]any{
		"type": "vmdk",
		"data": map[string]any{
			"cid":         int64(m.desc.CID),
			"parent-cid":  int64(m.desc.ParentCID),
			"create-type": m.createType,
			"extents":     exts,
		},
	}
	return info, nil
}

// clusterSize is the image's cluster size as qemu-img reports it: the grain size when
// every extent is sparse with the same grain size and compression, else none.
func (m *image) clusterSize() int64 {
	first := m.extents[0].sp
	if first == nil {
		return 0
	}
	for _, e := range m.extents[1:] {
		if e.sp == nil || e.sp.compressed != first.compressed || e.sp.grainBytes != first.grainBytes {
			return 0
		}
	}
	return first.grainBytes
}

// extentInfoFormat is the extent type as qemu-img prints it: empty for the extent of
// a monolithic sparse file (it has no descriptor line of its own).
func extentInfoFormat(m *image, e *extent) string {
	if m.descFile == nil {
		return ""
	}
	return e.line.Type
}

// CompressionUnit is the grain size: the pipeline hands over whole grains.
func (m *streamImage) CompressionUnit() int64 { return m.extents[0].sp.grainBytes }

// CompressCluster deflates one grain into an on-disk record (marker, zlib stream,
// padding); all-zero grains return nil so WriteCompressed leaves them unallocated.
func (m *streamImage) CompressCluster(p []byte) ([]byte, error) {
	if isZero(p) {
		return nil, nil
	}
	return compressGrain(p, m.extents[0].sp.grainBytes), nil
}

// WriteCompressed appends a record from CompressCluster (nil: raw is compressed
// here); calls must come in increasing offset order. The record buffer is recycled.
func (m *streamImage) WriteCompressed(off int64, compressed []byte, raw []byte) error {
	if m.readOnly {
		return block.ErrReadOnly
	}
	sp := m.extents[0].sp
	if err := sp.ensureStream(); err != nil {
		return err
	}
	if err := m.touch(); err != nil {
		return err
	}
	return sp.sw.Load().writeCompressed(off, compressed, raw)
}

// dirPrefix is the descriptor's folder as qemu-img prefixes extent names with it.
func dirPrefix(filename string) string {
	if i := strings.LastIndexByte(filename, '/'); i >= 0 {
		return filename[:i+1]
	}
	return ""
}

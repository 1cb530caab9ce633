package qcow2

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"gemu/block"
	"golang.org/x/sys/unix"
)

// Kinds of guest range, as QEMU's subcluster types.
const (
	kUnalloc    = iota // read from the backing file (or zeroes)
	kZero              // reads as zeroes; host may be set (preallocated zero cluster)
	kData              // data at host
	kCompressed        // one compressed cluster, desc is the L2 entry
)

// extent is a run of guest bytes mapped the same way.
type extent struct {
	kind   int
	host   int64 // -1 if none; for kData contiguous over length
	length int64
	desc   uint64
}

// l2Entry returns the L2 entry and (extended L2) subcluster bitmap for guest cluster
// index ci, and whether its L2 table exists. Caller holds mu.
func (img *Image) l2Entry(ci int64) (entry, bitmap uint64, err error) {
	if err := img.loadTables(); err != nil {
		return 0, 0, err
	}
	l1i := ci >> img.l2Bits
	if l1i >= int64(len(img.l1)) {
		return 0, 0, nil
	}
	l2off := int64(img.l1[l1i] & l1OffsetMask)
	if l2off == 0 {
		return 0, 0, nil
	}
	if l2off&(img.clusterSize-1) != 0 {
		return 0, 0, fmt.Errorf("qcow2: L2 table offset 0x%x unaligned (L1 index %d)", l2off, l1i)
	}
	if l2off >= img.fileSize {
		return 0, 0, fmt.Errorf("qcow2: L2 table offset 0x%x past the end of the file (L1 index %d)", l2off, l1i)
	}
	t, err := img.l2.get(l2off, false)
	if err != nil {
		return 0, 0, err
	}
	i := ci & (int64(1)<<img.l2Bits - 1)
	if img.extL2 {
		return be.Uint64(t.b[i*16:]), be.Uint64(t.b[i*16+8:]), nil
	}
	return be.Uint64(t.b[i*8:]), 0, nil
}

// classify returns the extent for the subcluster (or cluster) holding guest offset
// off, limited to that subcluster.
func (img *Image) classify(entry, bitmap uint64, off int64) (extent, error) {
	sub := int64(1) << img.subBits
	inSub := off & (sub - 1)
	ext := extent{host: -1, length: sub - inSub}
	if entry&flagCompressed != 0 {
		if img.external {
			return ext, errors.New("qcow2: compressed cluster in an image with an external data file")
		}
		inCl := off & (img.clusterSize - 1)
		ext.kind, ext.desc, ext.length = kCompressed, entry, img.clusterSize-inCl
		return ext, nil
	}
	host := int64(entry & l2OffsetMask)
	normal := host != 0 || (img.external && entry&flagCopied != 0)
	if !img.extL2 {
		switch {
		case entry&flagZero != 0:
			ext.kind = kZero
			if normal {
				ext.host = host + (off & (img.clusterSize - 1))
			}
		case normal:
			if host&(img.clusterSize-1) != 0 {
				return ext, fmt.Errorf("qcow2: cluster allocation offset 0x%x unaligned (guest offset 0x%x)", host, off)
			}
			if !img.external && host >= img.fileSize {
				return ext, fmt.Errorf("qcow2: cluster offset 0x%x past the end of the file (guest offset 0x%x)", host, off)
			}
			ext.kind, ext.host = kData, host+(off&(img.clusterSize-1))
		default:
			ext.kind = kUnalloc
		}
		return ext, nil
	}
	j := uint((off & (img.clusterSize - 1)) >> img.subBits)
	alloc, zero := bitmap>>j&1 != 0, bitmap>>(32+j)&1 != 0
	if normal {
		if host&(img.clusterSize-1) != 0 {
			return ext, fmt.Errorf("qcow2: cluster allocation offset 0x%x unaligned (guest offset 0x%x)", host, off)
		}
		h := host + (off & (img.clusterSize - 1))
		switch {
		case alloc && zero:
			return ext, fmt.Errorf("qcow2: invalid subcluster bitmap 0x%x (guest offset 0x%x)", bitmap, off)
		case zero:
			ext.kind, ext.host = kZero, h
		case alloc:
			ext.kind, ext.host = kData, h
		default:
			ext.kind, ext.host = kUnalloc, h
		}
		return ext, nil
	}
	if bitmap&0xffffffff != 0 {
		return ext, fmt.Errorf("qcow2: invalid subcluster bitmap 0x%x (guest offset 0x%x)", bitmap, off)
	}
	if zero {
		ext.kind = kZero
	} else {
		ext.kind = kUnalloc
	}
	return ext, nil
}

// lookup maps guest bytes [off, off+n) to one extent (the longest run of the same kind
// with contiguous host offsets, within one L2 table). Caller holds mu.
func (img *Image) lookup(off, n int64) (extent, error) {
	ci := off >> img.clusterBits
	entry, bitmap, err := img.l2Entry(ci)
	if err != nil {
		return extent{}, err
	}
	ext, err := img.classify(entry, bitmap, off)
	if err != nil || ext.kind == kCompressed {
		ext.length = min(ext.length, n)
		return ext, err
	}
	tableEnd := (ci>>img.l2Bits + 1) << (img.l2Bits + img.clusterBits)
	limit := min(off+n, tableEnd)
	pos := off + ext.length
	for pos < limit {
		if pos&(img.clusterSize-1) == 0 {
			entry, bitmap, err = img.l2Entry(pos >> img.clusterBits)
			if err != nil {
				return extent{}, err
			}
		}
		next, err := img.classify(entry, bitmap, pos)
		if err != nil || next.kind != ext.kind || (ext.host < 0) != (next.host < 0) ||
			(ext.host >= 0 && next.host != ext.host+(pos-off)) {
			break
		}
		pos += next.length
	}
	ext.length = min(pos, off+n) - off
	return ext, nil
}

var clusterBufs sync.Map // cluster size -> *sync.Pool

func getBuf(size int64) []byte {
	p, _ := clusterBufs.LoadOrStore(size, &sync.Pool{New: func() any { b := make([]byte, size); return &b }})
	return *(p.(*sync.Pool).Get().(*[]byte))
}

func putBuf(b []byte) {
	if p, ok := clusterBufs.Load(int64(len(b))); ok {
		p.(*sync.Pool).Put(&b)
	}
}

// ReadAt reads guest bytes; ranges past the virtual size are an error.
func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	size := img.Size()
	if off < 0 {
		return 0, errors.New("qcow2: negative offset")
	}
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := len(p)
	if off+int64(len(p)) > size {
		p = p[:size-off]
	}
	done := 0
	for done < len(p) {
		img.mu.Lock()
		ext, err := img.lookup(off+int64(done), int64(len(p)-done))
		img.mu.Unlock()
		if err != nil {
			return done, err
		}
		b := p[done : done+int(ext.length)]
		if err := img.readExtent(ext, b, off+int64(done)); err != nil {
			return done, err
		}
		done += len(b)
	}
	if done < want {
		return done, io.EOF
	}
	return done, nil
}

func (img *Image) readExtent(ext extent, b []byte, off int64) error {
	switch ext.kind {
	case kZero:
		clear(b)
	case kUnalloc:
		return img.readBacking(b, off)
	case kData:
		return readFull(img.data, b, ext.host)
	case kCompressed:
		if int64(len(b)) == img.clusterSize {
			// A whole cluster (the usual convert read): no bounce buffer and copy. The
			// capacity is cut to the cluster: the zstd decoder may use spare capacity
			// as scratch, and the caller's bytes past b are not ours to touch.
			if err := img.decompress(ext.desc, b[:len(b):len(b)]); err != nil {
				return fmt.Errorf("%v (guest offset 0x%x)", err, off)
			}
			return nil
		}
		buf := getBuf(img.clusterSize)
		defer putBuf(buf)
		if err := img.decompress(ext.desc, buf); err != nil {
			return fmt.Errorf("%v (guest offset 0x%x)", err, off)
		}
		copy(b, buf[off&(img.clusterSize-1):])
	}
	return nil
}

// readBacking fills b with the backing file's bytes at off (zeroes past its end).
func (img *Image) readBacking(b []byte, off int64) error {
	if img.backing == nil {
		clear(b)
		return nil
	}
	bs := img.backing.Size()
	n := int64(len(b))
	if off >= bs {
		clear(b)
		return nil
	}
	if off+n > bs {
		clear(b[bs-off:])
		b = b[:bs-off]
	}
	_, err := img.backing.ReadAt(b, off)
	if err == io.EOF {
		err = nil
	}
	return err
}

// compressedRange returns the host offset and byte length of a compressed cluster.
func (img *Image) compressedRange(desc uint64) (int64, int64) {
	coff := int64(desc & (uint64(1)<<img.csizeShift - 1))
	nsec := int64((desc>>img.csizeShift)&img.csizeMask) + 1
	return coff, nsec*512 - (coff & 511)
}

func (img *Image) decompress(desc uint64, dst []byte) error {
	coff, csize := img.compressedRange(desc)
	src := getBuf(img.clusterSize * 2)
	defer putBuf(src)
	if csize > int64(len(src)) || csize <= 0 {
		return errors.New("qcow2: compressed cluster descriptor out of range")
	}
	img.mu.Lock()
	fileSize := img.fileSize
	img.mu.Unlock()
	if coff >= fileSize {
		return fmt.Errorf("qcow2: compressed cluster offset 0x%x past the end of the file", coff)
	}
	src = src[:csize]
	if err := readFull(img.f, src, coff); err != nil {
		return err
	}
	if img.hdr.compressionType == compressZstd {
		return unzstdCluster(dst, src)
	}
	return inflateCluster(dst, src)
}

// BlockStatus reports the range at off as qemu-img map sees it.
func (img *Image) BlockStatus(off, n int64) (block.Status, error) {
	size := img.Size()
	if off >= size || n <= 0 {
		return block.Status{Offset: off}, nil
	}
	n = min(n, size-off)
	img.mu.Lock()
	ext, err := img.lookup(off, n)
	img.mu.Unlock()
	if err != nil {
		return block.Status{}, err
	}
	st := block.Status{Offset: off, Length: ext.length, HostOffset: -1}
	switch ext.kind {
	case kData:
		st.Data, st.Allocated = true, true
		st.HostOffset, st.HostFile = ext.host, img.data.Name()
		if img.metadataPrealloc() {
			st.Length, st.Zero = holeStatus(img.data, ext.host, ext.length)
		}
	case kZero:
		st.Zero, st.Allocated = true, true
		if ext.host >= 0 {
			st.HostOffset, st.HostFile = ext.host, img.data.Name()
		}
	case kCompressed:
		st.Data, st.Allocated, st.Compressed = true, true, true
	case kUnalloc:
		if img.backing == nil {
			st.Zero = true
			if ext.host >= 0 {
				st.HostOffset, st.HostFile = ext.host, img.data.Name()
			}
			return st, nil
		}
		bs := img.backing.Size()
		if off >= bs {
			st.Zero = true
			if ext.host >= 0 {
				st.HostOffset, st.HostFile = ext.host, img.data.Name()
			}
			return st, nil
		}
		bst, err := img.backing.BlockStatus(off, min(ext.length, bs-off))
		if err != nil {
			return block.Status{}, err
		}
		if bst.Length <= 0 {
			bst.Length = min(ext.length, bs-off)
			bst.Zero = true
		}
		bst.Depth++
		return bst, nil
	}
	return st, nil
}

// metadataPrealloc reports QEMU's heuristic for preallocation=metadata images: many
// more clusters carry a refcount than the file has blocks allocated. Then block status
// asks the file whether each data cluster is a hole.
func (img *Image) metadataPrealloc() bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.metaPre != 0 || img.external {
		return img.metaPre == 1
	}
	img.metaPre = 2
	if img.loadTables() != nil {
		return false
	}
	st, err := img.f.Stat()
	if err != nil {
		return false
	}
	real, err := allocatedBytes(img.f)
	if err != nil {
		return false
	}
	realClusters := real / img.clusterSize
	threshold := max(realClusters*10/9, realClusters+2)
	nb := (st.Size() + img.clusterSize - 1) / img.clusterSize
	var allocated int64
	for i := int64(0); i < nb; i++ {
		r, err := img.rc.get(i)
		if err != nil {
			return false
		}
		if r > 0 {
			allocated++
			if allocated >= threshold {
				img.metaPre = 1
				return true
			}
		}
	}
	return false
}

// holeStatus limits n to the run at host that is all hole or all data in f.
func holeStatus(f *os.File, host, n int64) (int64, bool) {
	fd := int(f.Fd())
	d, err := unix.Seek(fd, host, unix.SEEK_DATA)
	if err != nil || d > host {
		// A hole at host (ENXIO: hole to the end of the file).
		if err != nil {
			return n, true
		}
		return min(n, d-host), true
	}
	h, err := unix.Seek(fd, host, unix.SEEK_HOLE)
	if err != nil {
		return n, false
	}
	return min(n, h-host), false
}

func allocatedBytes(f *os.File) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}

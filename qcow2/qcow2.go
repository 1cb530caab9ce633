package qcow2

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"gemu/block"
)

func init() { block.Register(format{}) }

// format is the registered qcow2 Format.
type format struct{}

func (format) Name() string { return "qcow2" }

func (format) Probe(buf []byte, filename string) int {
	// As QEMU: the magic and a version of at least 2 (1 is the older qcow format).
	if len(buf) >= 8 && be.Uint32(buf) == magic && be.Uint32(buf[4:]) >= 2 {
		return 100
	}
	return 0
}

func (format) Open(filename string, opts block.OpenOptions) (block.Driver, error) {
	img, err := open(filename, opts)
	if err != nil {
		return nil, err // not a typed nil inside the interface
	}
	return img, nil
}

// Image is an open qcow2 image. Reads may run concurrently; writes are serialised.
type Image struct {
	filename string
	f        *os.File // the qcow2 file (metadata, and data unless external)
	data     *os.File // where guest data lives (== f unless an external data file)
	ro       bool
	hdr      *header
	fileSize int64

	clusterBits uint
	clusterSize int64
	l2Bits      uint // log2 of L2 entries per table
	extL2       bool
	subBits     uint // log2 of subcluster size (== clusterBits without extended L2)
	csizeShift  uint
	csizeMask   uint64
	dataRaw     bool
	external    bool

	backing     block.Driver
	backingName string // as resolved for opening

	snapshots []snapshot

	// mu guards all metadata below; data I/O happens outside it.
	mu        sync.Mutex
	l1        []uint64
	l1Dirty   bool
	l2        *tableCache
	rc        *refcounts
	size      int64
	closed    bool
	metaPre   int      // 0 unknown, 1 metadata preallocated, 2 not
	lastCheck []uint64 // refcounts computed by the last check (amend reuses them)
	freeByte  int64    // where the next compressed cluster may go (0: a new cluster)
	dataSync  bool

	// wmu serialises writers (allocation, COW).
	wmu sync.Mutex
	w   *writeState

	// Persistent dirty bitmaps (bitmap.go): the directory, whether this session has
	// marked them in use (and must store them on Close), what their data takes in
	// memory, and clusters of removed bitmaps to free when the directory is stored.
	bitmaps      []*dirtyBitmap
	bmSession    bool
	bitmapMem    int64
	freedBitmaps [][2]int64

	// unsafe skips fdatasync (qemu-img's cache=unsafe for convert targets).
	unsafe bool
}

func open(filename string, opts block.OpenOptions) (*Image, error) {
	if opts.Depth > block.MaxChainDepth {
		return nil, fmt.Errorf("%s: backing chain too deep (loop?)", filename)
	}
	f, err := block.OpenImageFile(filename, opts, block.RoleImage)
	if err != nil {
		return nil, err
	}
	if opts.Direct {
		// Metadata I/O is not block-aligned: O_DIRECT was only checked (see block.BufferedAfterDirect).
		if err := block.BufferedAfterDirect(f); err != nil {
			f.Close()
			return nil, err
		}
	}
	img, err := openFile(f, filename, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return img, nil
}

func openFile(f *os.File, filename string, opts block.OpenOptions) (*Image, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	fileSize := st.Size()
	// Read the first cluster (the header and its extensions live there).
	var hb [24]byte
	if _, err := f.ReadAt(hb[:], 0); err != nil && err != io.EOF {
		return nil, err
	}
	want := int64(1) << maxClusterBits
	if cb := be.Uint32(hb[20:]); cb >= minClusterBits && cb <= maxClusterBits {
		want = int64(1) << cb
	}
	buf := make([]byte, min(want, fileSize))
	if _, err := f.ReadAt(buf, 0); err != nil && err != io.EOF {
		return nil, err
	}
	h, err := parseHeader(buf, fileSize)
	if err != nil {
		return nil, err
	}
	img := &Image{
		filename:    filename,
		f:           f,
		data:        f,
		ro:          opts.ReadOnly,
		hdr:         h,
		fileSize:    fileSize,
		clusterBits: uint(h.clusterBits),
		clusterSize: int64(1) << h.clusterBits,
		extL2:       h.incompatible&incExtendedL2 != 0,
		size:        int64(h.size),
	}
	img.l2Bits = img.clusterBits - 3
	img.subBits = img.clusterBits
	if img.extL2 {
		img.l2Bits--
		img.subBits = img.clusterBits - 5
	}
	img.csizeShift = 62 - (img.clusterBits - 8)
	img.csizeMask = (uint64(1) << (img.clusterBits - 8)) - 1
	if !img.ro && h.incompatible&incCorrupt != 0 {
		return nil, errors.New("qcow2: Image is corrupt; cannot be opened read/write")
	}
	img.l2 = newTableCache(img, img.clusterSize, cacheBudget(img.clusterSize))
	if !img.ro {
		if err := img.loadTables(); err != nil {
			return nil, err
		}
	}
	if err := img.loadSnapshots(); err != nil {
		return nil, err
	}
	if err := img.loadBitmapDir(); err != nil {
		return nil, err
	}
	if err := img.checkBitmapTables(); err != nil {
		return nil, err
	}
	if h.hasDataFile {
		img.external = true
		img.dataRaw = h.autoclear&autoclearRaw != 0
		p, err := dataFilePath(h.dataFile)
		if err != nil {
			return nil, fmt.Errorf("qcow2: data file: %v", err)
		}
		dopts := opts
		dopts.ReadOnly = img.ro
		df, err := block.OpenImageFile(p, dopts, block.RoleData)
		if err != nil {
			var le *block.LockError
			if errors.As(err, &le) {
				return nil, err
			}
			return nil, fmt.Errorf("Could not open '%s': %v", p, errors.Unwrap(err))
		}
		if dopts.Direct {
			if err := block.BufferedAfterDirect(df); err != nil {
				df.Close()
				return nil, err
			}
		}
		img.data = df
	}
	if h.backingFile != "" && !opts.NoBacking {
		if err := img.openBacking(opts); err != nil {
			img.closeFiles()
			return nil, err
		}
	}
	if !img.ro {
		if h.incompatible&incDirty != 0 {
			// Refcounts may be stale (lazy refcounts): rebuild them as QEMU does.
			if _, err := img.check(block.RepairAll); err != nil {
				img.closeFiles()
				return nil, fmt.Errorf("qcow2: could not repair dirty image: %v", err)
			}
		}
	}
	return img, nil
}

// loadTables reads the active L1 table and the refcount table. Read-only opens (every
// backing layer) defer it to the first access, so opening a long or looping chain
// costs little memory per layer. Caller holds mu (or is opening the image).
func (img *Image) loadTables() error {
	if img.rc != nil {
		return nil
	}
	h := img.hdr
	l1 := make([]byte, int(h.l1Size)*8)
	if len(l1) > 0 {
		if err := readFull(img.f, l1, int64(h.l1Offset)); err != nil {
			return fmt.Errorf("qcow2: could not read L1 table: %v", err)
		}
	}
	img.l1 = make([]uint64, h.l1Size)
	for i := range img.l1 {
		img.l1[i] = be.Uint64(l1[i*8:])
	}
	rc, err := loadRefcounts(img)
	if err != nil {
		img.l1 = nil
		return err
	}
	img.rc = rc
	return nil
}

// cacheBudget bounds each metadata cache to a few MiB, as QEMU's default caches do.
func cacheBudget(cs int64) int {
	n := int((32 << 20) / cs)
	return max(n, 8)
}

// resolveChild turns a backing or data file name recorded in an image into a path,
// refusing the JSON and protocol forms QEMU would interpret specially.
func resolveChild(image, name string) (string, error) {
	return block.ResolveBacking(image, name)
}

// dataFilePath checks an external data file name. QEMU 7.2 opens it as given
// (relative to the working directory, not the image), so we do the same.
func dataFilePath(name string) (string, error) {
	if name == "" || block.HasProtocol(name) {
		return "", fmt.Errorf("refusing data file name %q", name)
	}
	return name, nil
}

func (img *Image) openBacking(opts block.OpenOptions) error {
	p, err := resolveChild(img.filename, img.hdr.backingFile)
	if err != nil {
		return fmt.Errorf("Could not open backing file: %v", err)
	}
	img.backingName = p
	fmtName := img.hdr.backingFormat
	if opts.BackingFormat != "" {
		fmtName = opts.BackingFormat
	}
	if opts.Depth+1 > block.MaxChainDepth {
		return fmt.Errorf("Could not open backing file: backing chain of '%s' is too deep (loop?)", img.filename)
	}
	d, err := block.Open(p, opts.BackingOptions(fmtName))
	if err != nil {
		if strings.HasPrefix(err.Error(), "Could not open backing file: ") {
			return err // already said by a deeper layer
		}
		return fmt.Errorf("Could not open backing file: %v", err)
	}
	img.backing = d
	return nil
}

func (img *Image) Format() string   { return "qcow2" }
func (img *Image) Filename() string { return img.filename }

func (img *Image) Size() int64 {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.size
}

// Backing returns the opened backing layer, or nil.
func (img *Image) Backing() block.Driver {
	if img.backing == nil {
		return nil
	}
	return img.backing
}

// ActualSize is the host space used by the image file. An external data file is not
// counted: qemu-img 7.2 reports the qcow2 file's blocks only ("disk size").
func (img *Image) ActualSize() (int64, error) {
	return allocatedBytes(img.f)
}

// SetUnsafe makes Flush and Close skip fdatasync, like qemu-img's cache=unsafe
// (used for convert targets, where a crash means redoing the conversion anyway).
func (img *Image) SetUnsafe(unsafe bool) { img.unsafe = unsafe }

// Info reports what `qemu-img info` shows for qcow2.
func (img *Image) Info() (*block.ImageInfo, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	h := img.hdr
	info := &block.ImageInfo{
		ClusterSize:           img.clusterSize,
		HasDirtyFlag:          true,
		DirtyFlag:             h.incompatible&incDirty != 0,
		BackingFilename:       h.backingFile,
		BackingFilenameFormat: h.backingFormat,
	}
	if h.backingFile != "" {
		if p, err := resolveChild(img.filename, h.backingFile); err == nil {
			info.FullBackingFilename = p
		}
	}
	for _, s := range img.snapshots {
		info.Snapshots = append(info.Snapshots, s.info())
	}
	data := map[string]any{}
	ct := "zlib"
	if h.compressionType == compressZstd {
		ct = "zstd"
	}
	if h.version == 2 {
		data["compat"] = "0.10"
		data["compression-type"] = ct
		data["refcount-bits"] = 1 << h.refcountOrder
	} else {
		data["compat"] = "1.1"
		data["compression-type"] = ct
		data["lazy-refcounts"] = h.compatible&compatLazyRefs != 0
		if l := img.bitmapInfo(); len(l) > 0 {
			data["bitmaps"] = l
		}
		data["refcount-bits"] = 1 << h.refcountOrder
		if h.hasDataFile {
			data["data-file"] = h.dataFile
			data["data-file-raw"] = h.autoclear&autoclearRaw != 0
		}
		data["corrupt"] = h.incompatible&incCorrupt != 0
		data["extended-l2"] = img.extL2
	}
	info.FormatSpecific = map[string]any{"type": "qcow2", "data": data}
	return info, nil
}

// InfoKeyOrder is the order qemu-img 7.2 prints the keys of format-specific data for
// qcow2 (JSON and human output); FormatSpecific is a map, so callers that print it
// need this order.
var InfoKeyOrder = []string{"compat", "compression-type", "lazy-refcounts", "bitmaps", "refcount-bits",
	"data-file", "data-file-raw", "corrupt", "extended-l2"}

func (img *Image) closeFiles() {
	if img.backing != nil {
		img.backing.Close()
		img.backing = nil
	}
	if img.data != img.f {
		img.data.Close()
	}
	img.f.Close()
}

// Close writes back pending metadata and closes the image and its backing chain.
func (img *Image) Close() error {
	img.wmu.Lock()
	defer img.wmu.Unlock()
	if img.closed {
		return nil
	}
	var err error
	if !img.ro {
		img.mu.Lock()
		err = img.storeBitmaps()
		img.mu.Unlock()
		if ferr := img.flushLocked(true); err == nil {
			err = ferr
		}
	}
	img.closed = true
	img.closeFiles()
	return err
}

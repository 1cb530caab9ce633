// Package vpc owns the VHD (Virtual PC) image format driver: fixed disks (data then
// the 512-byte "conectix" footer) and dynamic disks (footer copy, "cxsparse" header,
// block allocation table, a sector bitmap before each block, footer at the end), the
// footer checksum, CHS geometry as QEMU's calculate_geometry computes it, and the
// rules by which QEMU takes the disk size from the CHS geometry or from current_size
// depending on the creator application (Virtual PC and QEMU: CHS; Hyper-V "win ",
// "qem2", Disk2vhd "d2v ", XenServer "tap\0", XenConverter "CTXS": current_size; a
// maximal geometry always means current_size). Creation matches qemu-img create -f vpc
// (subformat=dynamic|fixed, force_size). Every table and offset is bounded before use.
//
// It registers the "vpc" format with package block from init and implements
// block.Driver with the optional Infoer and ActualSizer. It must not touch the block
// layer's registry beyond Register, nor any other format.
package vpc

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"gemu/block"
	"gemu/block/internal/imgfile"
)

func init() { block.Register(Format{}) }

const (
	footerLen    = 512
	dynHeaderLen = 1024
	typeFixed    = 2
	typeDynamic  = 3
	typeDiff     = 4
	// maxGeometry is the largest CHS geometry, 65535 cylinders x 16 heads x 255 sectors.
	maxGeometry = 65535 * 16 * 255
	// maxSectors is QEMU's VHD_MAX_SECTORS (2040 GiB).
	maxSectors = 0xff000000
	// blockSize is the default (and QEMU's) dynamic block size.
	blockSize = 2 << 20
	// maxBATEntries bounds the BAT (2040 GiB in 512-byte blocks would be 2^32: QEMU
	// refuses more than INT_MAX/4 entries).
	maxBATEntries = (1<<31 - 1) / 4
	// timestampBase is 2000-01-01 00:00:00 UTC.
	timestampBase = 946684800
)

var be = binary.BigEndian

// Footer is the VHD hard disk footer.
type Footer struct {
	Cookie      [8]byte
	Features    uint32
	Version     uint32
	DataOffset  uint64
	Timestamp   uint32
	CreatorApp  [4]byte
	CreatorVer  uint32
	CreatorOS   uint32
	OrigSize    uint64
	CurrentSize uint64
	Cyls        uint16
	Heads       uint8
	Secs        uint8
	Type        uint32
	Checksum    uint32
	UUID        [16]byte
	SavedState  uint8
	Reserved    [427]byte
}

// DynHeader is the dynamic disk header.
type DynHeader struct {
	Cookie          [8]byte
	DataOffset      uint64
	TableOffset     uint64
	Version         uint32
	MaxTableEntries uint32
	BlockSize       uint32
	Checksum        uint32
	ParentUUID      [16]byte
	ParentTimestamp uint32
	Reserved        uint32
	ParentName      [512]byte
	ParentLocators  [8 * 24]byte
	Reserved2       [256]byte
}

// checksum is the ones' complement of the byte sum with the checksum field as zero.
func checksum(b []byte, at int) uint32 {
	var s uint32
	for i, c := range b {
		if i >= at && i < at+4 {
			continue
		}
		s += uint32(c)
	}
	return ^s
}

func encode(v any) []byte {
	b, _ := binary.Append(nil, be, v)
	return b
}

func (f *Footer) bytes() []byte {
	f.Checksum = 0
	b := encode(f)
	f.Checksum = checksum(b, 64)
	be.PutUint32(b[64:], f.Checksum)
	return b
}

// Geometry is QEMU's calculate_geometry: the CHS geometry of a disk of total sectors.
func Geometry(total int64) (cyls uint16, heads, secs uint8) {
	total = min(total, maxGeometry)
	var cth int64
	var h, s int64
	if total >= 65535*16*63 {
		s, h = 255, 16
		cth = total / s
	} else {
		s = 17
		cth = total / s
		h = (cth + 1023) / 1024
		if h < 4 {
			h = 4
		}
		if cth >= h*1024 || h > 16 {
			s, h = 31, 16
			cth = total / s
		}
		if cth >= h*1024 {
			s, h = 63, 16
			cth = total / s
		}
	}
	return uint16(cth / h), uint8(h), uint8(s)
}

// Format is the registered "vpc" format.
type Format struct{}

func (Format) Name() string { return "vpc" }

// Probe: "conectix" at offset 0 (vpc_probe). Fixed disks carry the cookie only in the
// footer; block.Open looks for it there (probe.go) since gemu implements vpc.
func (Format) Probe(b []byte, _ string) int {
	if len(b) >= 8 && string(b[:8]) == "conectix" {
		return 100
	}
	return 0
}

// OptionsHelp is qemu-img's `create -f vpc -o help` text.
func (Format) OptionsHelp() string {
	return `Supported options:
  extent_size_hint=<size> - Extent size hint for the image file, 0 to disable
  force_size=<bool (on/off)> - Force disk size calculation to use the actual size specified, rather than using the nearest CHS-based calculation
  nocow=<bool (on/off)>  - Turn off copy-on-write (valid only on btrfs)
  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)
  size=<size>            - Virtual disk size
  subformat=<str>        - Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} 
`
}

// Create makes an image as qemu-img create -f vpc does (vpc_co_create).
func (Format) Create(filename string, o block.CreateOptions) error {
	if err := imgfile.CheckOptions("vpc", o.Options, "size", "subformat", "force_size", "preallocation", "extent_size_hint", "nocow"); err != nil {
		return err
	}
	if o.Backing != "" {
		return fmt.Errorf("Backing file not supported for file format 'vpc'")
	}
	sub := o.Options["subformat"]
	if sub == "" {
		sub = "dynamic"
	}
	if sub != "dynamic" && sub != "fixed" {
		return fmt.Errorf("Parameter 'subformat' does not accept value '%s'", sub)
	}
	force := false
	if v, ok := o.Options["force_size"]; ok {
		var err error
		if force, err = imgfile.Bool("force_size", v); err != nil {
			return err
		}
	}
	prealloc, err := imgfile.Prealloc(o.Options["preallocation"], "off", "falloc", "full")
	if err != nil {
		return err
	}
	if o.Size < 0 {
		return fmt.Errorf("Image size must be non-negative")
	}
	totalSize := (o.Size + 511) &^ 511
	var cyls uint16
	var heads, secs uint8
	var total int64
	if !force {
		total = min(maxGeometry, totalSize/512)
		for i := int64(0); total > int64(cyls)*int64(heads)*int64(secs); i++ {
			cyls, heads, secs = Geometry(total + i)
		}
		if int64(cyls)*int64(heads)*int64(secs) == maxGeometry {
			total = totalSize / 512
		} else {
			total = int64(cyls) * int64(heads) * int64(secs)
		}
	} else {
		total = totalSize / 512
		cyls, heads, secs = 65535, 16, 255
	}
	if total > maxSectors {
		return fmt.Errorf("The image size is too large for file format 'vpc'")
	}
	size := total * 512
	ft := &Footer{Features: 2, Version: 0x00010000, CreatorVer: 0x00050003, CreatorOS: 0x5769326b,
		OrigSize: uint64(size), CurrentSize: uint64(size), Cyls: cyls, Heads: heads, Secs: secs}
	copy(ft.Cookie[:], "conectix")
	copy(ft.CreatorApp[:], "qemu")
	if force {
		copy(ft.CreatorApp[:], "qem2")
	}
	ft.Timestamp = uint32(time.Now().Unix() - timestampBase)
	rand.Read(ft.UUID[:])
	ft.UUID[6] = ft.UUID[6]&0x0f | 0x40
	ft.UUID[8] = ft.UUID[8]&0x3f | 0x80
	f, err := block.CreateImageFile(filename)
	if err != nil {
		return err
	}
	defer f.Close()
	if sub == "fixed" {
		ft.Type = typeFixed
		ft.DataOffset = ^uint64(0)
		if err := f.Truncate(size + footerLen); err != nil {
			return err
		}
		if prealloc == "full" {
			if err := imgfile.ZeroFill(f, 0, size); err != nil {
				return err
			}
		} else if prealloc == "falloc" {
			unix.Fallocate(int(f.Fd()), 0, 0, size)
		}
		if _, err := f.WriteAt(ft.bytes(), size); err != nil {
			return err
		}
		return f.Sync()
	}
	// preallocation is the file layer's option: QEMU applies it to the empty file,
	// which a dynamic disk then fills with its structures only.
	ft.Type = typeDynamic
	ft.DataOffset = footerLen
	entries := (size + blockSize - 1) / blockSize
	dh := &DynHeader{DataOffset: ^uint64(0), TableOffset: 3 * 512, Version: 0x00010000,
		MaxTableEntries: uint32(entries), BlockSize: blockSize}
	copy(dh.Cookie[:], "cxsparse")
	db := encode(dh)
	be.PutUint32(db[36:], checksum(db, 36))
	batLen := (entries*4 + 511) &^ 511
	bat := make([]byte, batLen)
	for i := range bat {
		bat[i] = 0xff
	}
	fb := ft.bytes()
	for _, w := range []struct {
		b   []byte
		off int64
	}{{fb, 0}, {db, footerLen}, {bat, 3 * 512}, {fb, 3*512 + batLen}} {
		if _, err := f.WriteAt(w.b, w.off); err != nil {
			return err
		}
	}
	return f.Sync()
}

// Image is one open VHD.
type Image struct {
	name     string
	f        *os.File
	readOnly bool
	size     int64
	footer   Footer
	fixed    bool
	dataEnd  int64 // fixed disks: where the footer starts

	// dynamic disks
	mu         sync.RWMutex
	bat        []uint32
	batOff     int64
	blockBytes int64
	bitmapLen  int64
	freeOff    int64 // where the next block goes (the trailing footer's place)
}

// Open opens a VHD.
func (Format) Open(filename string, opts block.OpenOptions) (block.Driver, error) {
	f, fsize, err := imgfile.Open(filename, opts)
	if err != nil {
		return nil, err
	}
	m, err := open(f, filename, fsize, opts.ReadOnly)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("Could not open '%s': %v", filename, err)
	}
	return m, nil
}

func open(f *os.File, name string, fsize int64, ro bool) (*Image, error) {
	buf := make([]byte, footerLen)
	if fsize < footerLen {
		return nil, errors.New("File too small for a VHD header")
	}
	if err := imgfile.ReadAt(f, buf, 0, "footer"); err != nil {
		return nil, err
	}
	if string(buf[:8]) != "conectix" {
		if err := imgfile.ReadAt(f, buf, fsize-footerLen, "footer"); err != nil {
			return nil, err
		}
		if string(buf[:8]) != "conectix" {
			return nil, errors.New("block-vpc: The image is not a valid VHD file (no \"conectix\" footer)")
		}
	}
	m := &Image{name: name, f: f, readOnly: ro}
	binary.Decode(buf, be, &m.footer)
	ft := &m.footer
	if checksum(buf, 64) != ft.Checksum {
		return nil, errors.New("Incorrect header checksum")
	}
	switch ft.Type {
	case typeFixed, typeDynamic:
	case typeDiff:
		return nil, errors.New("vpc: differencing VHD images are not supported")
	default:
		return nil, fmt.Errorf("vpc: unknown disk type %d", ft.Type)
	}
	total := int64(ft.Cyls) * int64(ft.Heads) * int64(ft.Secs)
	app := string(ft.CreatorApp[:])
	useCHS := app != "win " && app != "qem2" && app != "d2v " && app != "CTXS" && app != "tap\x00"
	if !useCHS || total == maxGeometry {
		total = int64(ft.CurrentSize / 512)
		if ft.CurrentSize > maxSectors*512 {
			total = maxSectors + 1
		}
	}
	if total > maxSectors {
		return nil, errors.New("Disk size is too large, max size is 2040 GiB")
	}
	m.size = total * 512
	if ft.Type == typeFixed {
		m.fixed = true
		// The data ends where the footer starts. A footer claiming more (another
		// creator's current_size) reads zeroes past it, as QEMU reads past the end of
		// the file, but guest writes never reach the footer.
		m.dataEnd = fsize - footerLen
		return m, nil
	}
	if ft.DataOffset > uint64(fsize) || ft.DataOffset+dynHeaderLen > uint64(fsize) {
		return nil, fmt.Errorf("vpc: dynamic header at %d lies past the end of the file", ft.DataOffset)
	}
	db := make([]byte, dynHeaderLen)
	if err := imgfile.ReadAt(f, db, int64(ft.DataOffset), "dynamic header"); err != nil {
		return nil, err
	}
	var dh DynHeader
	binary.Decode(db, be, &dh)
	if string(dh.Cookie[:]) != "cxsparse" {
		return nil, errors.New("vpc: invalid dynamic disk header (no \"cxsparse\" cookie)")
	}
	bs := int64(dh.BlockSize)
	if bs < 512 || bs&(bs-1) != 0 {
		return nil, fmt.Errorf("Invalid block size %d", dh.BlockSize)
	}
	m.blockBytes = bs
	m.bitmapLen = (bs/(8*512) + 511) &^ 511
	if m.size/bs > 0xffffffff {
		return nil, errors.New("Too many blocks")
	}
	if int64(dh.MaxTableEntries)*bs < m.size {
		return nil, errors.New("Page table too small")
	}
	if dh.MaxTableEntries > maxBATEntries {
		return nil, fmt.Errorf("Max Table Entries too large (%d)", dh.MaxTableEntries)
	}
	n := int64(dh.MaxTableEntries)
	if dh.TableOffset > uint64(fsize) || int64(dh.TableOffset)+n*4 > fsize {
		return nil, fmt.Errorf("vpc: block allocation table (%d entries at %d) lies past the end of the file", n, dh.TableOffset)
	}
	m.batOff = int64(dh.TableOffset)
	raw := make([]byte, n*4)
	if err := imgfile.ReadAt(f, raw, m.batOff, "block allocation table"); err != nil {
		return nil, err
	}
	m.bat = make([]uint32, n)
	m.freeOff = (m.batOff + n*4 + 511) &^ 511
	for i := range m.bat {
		e := be.Uint32(raw[i*4:])
		m.bat[i] = e
		if e != 0xffffffff {
			if 512*int64(e) < m.batOff+n*4 {
				return nil, fmt.Errorf("vpc: BAT entry %d points into the image's headers or BAT", i)
			}
			next := 512*int64(e) + m.bitmapLen + bs
			m.freeOff = max(m.freeOff, next)
		}
	}
	if m.freeOff > fsize {
		return nil, errors.New("block-vpc: free_data_block_offset points after the end of file. The image has been truncated.")
	}
	return m, nil
}

func (m *Image) Format() string   { return "vpc" }
func (m *Image) Filename() string { return m.name }
func (m *Image) Size() int64      { return m.size }

// hostOff is the file offset of guest offset off and how many bytes from there are
// contiguous in its block (-1: unallocated).
func (m *Image) hostOff(off int64) (int64, int64) {
	if m.fixed {
		if off >= m.dataEnd {
			return -1, m.size - off
		}
		return off, min(m.size, m.dataEnd) - off
	}
	b := off / m.blockBytes
	in := off % m.blockBytes
	left := m.blockBytes - in
	if b >= int64(len(m.bat)) || m.bat[b] == 0xffffffff {
		return -1, left
	}
	return int64(m.bat[b])*512 + m.bitmapLen + in, left
}

func (m *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > m.size {
		return 0, fmt.Errorf("vpc: read at %d outside the disk", off)
	}
	n := min(int64(len(p)), m.size-off)
	for done := int64(0); done < n; {
		m.mu.RLock()
		h, left := m.hostOff(off + done)
		m.mu.RUnlock()
		k := min(n-done, left)
		q := p[done : done+k]
		if h < 0 {
			clear(q)
		} else if err := imgfile.ReadZeroPast(m.f, q, h); err != nil {
			return int(done), err
		}
		done += k
	}
	if n < int64(len(p)) {
		return int(n), fmt.Errorf("vpc: read past the end of the disk")
	}
	return int(n), nil
}

func (m *Image) WriteAt(p []byte, off int64) (int, error) {
	if m.readOnly {
		return 0, block.ErrReadOnly
	}
	if off < 0 || off+int64(len(p)) > m.size {
		return 0, fmt.Errorf("vpc: write at %d+%d outside the disk", off, len(p))
	}
	n := int64(len(p))
	for done := int64(0); done < n; {
		m.mu.RLock()
		h, left := m.hostOff(off + done)
		m.mu.RUnlock()
		k := min(n-done, left)
		if h < 0 && m.fixed {
			return int(done), fmt.Errorf("vpc: write at %d reaches the footer of the fixed disk (data ends at %d)", off+done, m.dataEnd)
		}
		if h < 0 {
			var err error
			if h, err = m.alloc(off + done); err != nil {
				return int(done), err
			}
		}
		if _, err := m.f.WriteAt(p[done:done+k], h); err != nil {
			return int(done), err
		}
		done += k
	}
	return int(n), nil
}

// alloc allocates the block holding guest offset off as QEMU's alloc_block does: the
// bitmap (all ones) where the footer was, the footer moved past the new block, then
// the BAT entry.
func (m *Image) alloc(off int64) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h, _ := m.hostOff(off); h >= 0 {
		return h, nil
	}
	b := off / m.blockBytes
	if m.freeOff/512 >= 0xffffffff {
		return 0, errors.New("vpc: image file too large for another block")
	}
	at := m.freeOff
	bitmap := make([]byte, m.bitmapLen)
	for i := range bitmap {
		bitmap[i] = 0xff
	}
	if _, err := m.f.WriteAt(bitmap, at); err != nil {
		return 0, err
	}
	m.freeOff = at + m.bitmapLen + m.blockBytes
	if _, err := m.f.WriteAt(m.footer.bytes(), m.freeOff); err != nil {
		return 0, err
	}
	var e [4]byte
	be.PutUint32(e[:], uint32(at/512))
	if _, err := m.f.WriteAt(e[:], m.batOff+b*4); err != nil {
		return 0, err
	}
	m.bat[b] = uint32(at / 512)
	h, _ := m.hostOff(off)
	return h, nil
}

// WriteZeroes writes zeroes into allocated blocks; unallocated blocks read as zero.
func (m *Image) WriteZeroes(off, n int64, _ block.ZeroFlags) error {
	if m.readOnly {
		return block.ErrReadOnly
	}
	if off < 0 || off+n > m.size {
		return fmt.Errorf("vpc: zero write outside the disk")
	}
	zero := make([]byte, min(n, 1<<20))
	for n > 0 {
		m.mu.RLock()
		h, left := m.hostOff(off)
		m.mu.RUnlock()
		k := min(n, left, int64(len(zero)))
		if h >= 0 {
			if _, err := m.f.WriteAt(zero[:k], h); err != nil {
				return err
			}
		}
		off += k
		n -= k
	}
	return nil
}

func (m *Image) Discard(off, n int64) error {
	if m.readOnly {
		return block.ErrReadOnly
	}
	return nil
}

func (m *Image) Flush() error {
	if m.readOnly {
		return nil
	}
	return m.f.Sync()
}

// BlockStatus: dynamic blocks are data at their host offset or zero; a fixed disk
// passes the host file's data and holes through as QEMU does (BDRV_BLOCK_RAW).
func (m *Image) BlockStatus(off, n int64) (block.Status, error) {
	if off < 0 || off >= m.size {
		return block.Status{Offset: off, HostOffset: -1}, nil
	}
	n = min(n, m.size-off)
	st := block.Status{Offset: off, Allocated: true, HostOffset: -1}
	if m.fixed {
		st.Data, st.HostOffset, st.HostFile = true, off, m.name
		st.Zero, st.Length = imgfile.HostExtent(m.f, off, n)
		return st, nil
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	h, left := m.hostOff(off)
	st.Length = min(n, left)
	for st.Length < n {
		h2, l2 := m.hostOff(off + st.Length)
		if (h < 0) != (h2 < 0) || (h >= 0 && h2 != h+st.Length) {
			break
		}
		st.Length = min(n, st.Length+l2)
	}
	if h >= 0 {
		st.Data, st.HostOffset, st.HostFile = true, h, m.name
	} else {
		st.Zero = true
	}
	return st, nil
}

func (m *Image) Resize(size int64, o block.ResizeOptions) error {
	return errors.New("Image format driver does not support resize")
}

func (m *Image) Close() error {
	if m.f == nil {
		return nil
	}
	var err error
	if !m.readOnly {
		err = m.f.Sync()
	}
	if e := m.f.Close(); err == nil {
		err = e
	}
	m.f = nil
	return err
}

// Info: qemu-img reports the block size as cluster size for dynamic disks, none for
// fixed ones.
func (m *Image) Info() (*block.ImageInfo, error) {
	in := &block.ImageInfo{HasDirtyFlag: true}
	if !m.fixed {
		in.ClusterSize = m.blockBytes
	}
	return in, nil
}

func (m *Image) ActualSize() (int64, error) { return block.FileSize(m.name) }

// Package vdi owns the VirtualBox VDI image format driver: the pre-header text, the
// 1.1 header (signature 0xbeda107f), the block map (0xffffffff unallocated,
// 0xfffffffe zero), dynamic and static images, allocation of new blocks at the end of
// the file as QEMU's block/vdi.c does, `check` as qemu-img's, and creation as qemu-img
// creates (size rounded up to 512 bytes, 1 MiB blocks). Every header field is
// bounded before use.
//
// It registers the "vdi" format with package block from init and implements
// block.Driver with the optional Infoer, ActualSizer and Checker. It must not touch
// the block layer's registry beyond Register, nor any other format.
package vdi

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"sync"

	"gemu/block"
	"gemu/block/internal/imgfile"
)

func init() { block.Register(Format{}) }

const (
	signature   = 0xbeda107f
	version11   = 0x00010001
	typeDynamic = 1
	typeStatic  = 2
	sectorSize  = 512
	blockSize   = 1 << 20
	headerLen   = 512
	// Unallocated is a never-written block (reads as zeroes in QEMU).
	Unallocated = 0xffffffff
	// Discarded is a block known to be zero.
	Discarded = 0xfffffffe
	// maxBlocks is QEMU's VDI_BLOCKS_IN_IMAGE_MAX (the block map must fit one request).
	maxBlocks = 0x1fffff80
	maxDisk   = maxBlocks * blockSize
	text      = "<<< QEMU VM Virtual Disk Image >>>\n"
)

var le = binary.LittleEndian

// Header is the VDI header after the 64-byte pre-header text.
type Header struct {
	Text            [64]byte
	Signature       uint32
	Version         uint32
	HeaderSize      uint32
	ImageType       uint32
	ImageFlags      uint32
	Description     [256]byte
	OffsetBmap      uint32
	OffsetData      uint32
	Cylinders       uint32
	Heads           uint32
	Sectors         uint32
	SectorSize      uint32
	Unused1         uint32
	DiskSize        uint64
	BlockSize       uint32
	BlockExtra      uint32
	BlocksInImage   uint32
	BlocksAllocated uint32
	UUIDImage       [16]byte
	UUIDLastSnap    [16]byte
	UUIDLink        [16]byte
	UUIDParent      [16]byte
	Unused2         [56]byte
}

func parseHeader(b []byte) (*Header, error) {
	var h Header
	if _, err := binary.Decode(b[:headerLen], le, &h); err != nil {
		return nil, err
	}
	return &h, nil
}

func (h *Header) bytes() []byte {
	b, _ := binary.Append(nil, le, h)
	return b
}

// validate applies QEMU's vdi_open checks, in its order and with its messages.
func (h *Header) validate() error {
	if h.DiskSize > maxDisk {
		return fmt.Errorf("Unsupported VDI image size (size is 0x%x, max supported is 0x%x)", h.DiskSize, uint64(maxDisk))
	}
	if h.Signature != signature {
		return fmt.Errorf("Image not in VDI format (bad signature %08x)", h.Signature)
	}
	if h.Version != version11 {
		return fmt.Errorf("unsupported VDI image (version %d.%d)", h.Version>>16, h.Version&0xffff)
	}
	if h.OffsetBmap%sectorSize != 0 {
		return fmt.Errorf("unsupported VDI image (unaligned block map offset 0x%x)", h.OffsetBmap)
	}
	if h.OffsetData%sectorSize != 0 {
		return fmt.Errorf("unsupported VDI image (unaligned data offset 0x%x)", h.OffsetData)
	}
	if h.SectorSize != sectorSize {
		return fmt.Errorf("unsupported VDI image (sector size %d is not %d)", h.SectorSize, sectorSize)
	}
	if h.BlockSize != blockSize {
		return fmt.Errorf("unsupported VDI image (block size %d is not %d)", h.BlockSize, blockSize)
	}
	disk := (h.DiskSize + sectorSize - 1) &^ (sectorSize - 1)
	if disk > uint64(h.BlocksInImage)*uint64(h.BlockSize) {
		return fmt.Errorf("unsupported VDI image (disk size %d, image bitmap has room for %d)", disk, uint64(h.BlocksInImage)*uint64(h.BlockSize))
	}
	if h.UUIDLink != [16]byte{} {
		return fmt.Errorf("unsupported VDI image (non-NULL link UUID)")
	}
	if h.UUIDParent != [16]byte{} {
		return fmt.Errorf("unsupported VDI image (non-NULL parent UUID)")
	}
	if h.BlocksInImage > maxBlocks {
		return fmt.Errorf("unsupported VDI image (too many blocks %d, max is %d)", h.BlocksInImage, maxBlocks)
	}
	bmapEnd := uint64(h.OffsetBmap) + uint64(h.BlocksInImage)*4
	if h.OffsetBmap < headerLen && h.BlocksInImage > 0 {
		return fmt.Errorf("unsupported VDI image (block map at 0x%x overlaps the header)", h.OffsetBmap)
	}
	if uint64(h.OffsetData) < bmapEnd && h.BlocksInImage > 0 {
		return fmt.Errorf("unsupported VDI image (data offset 0x%x inside the block map, which ends at 0x%x)", h.OffsetData, bmapEnd)
	}
	return nil
}

// Format is the registered "vdi" format.
type Format struct{}

func (Format) Name() string { return "vdi" }

// Probe: the signature at offset 64 (vdi_probe).
func (Format) Probe(b []byte, _ string) int {
	if len(b) >= headerLen && le.Uint32(b[64:]) == signature {
		return 100
	}
	return 0
}

// OptionsHelp is qemu-img's `create -f vdi -o help` text.
func (Format) OptionsHelp() string {
	return `Supported options:
  extent_size_hint=<size> - Extent size hint for the image file, 0 to disable
  nocow=<bool (on/off)>  - Turn off copy-on-write (valid only on btrfs)
  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)
  size=<size>            - Virtual disk size
  static=<bool (on/off)> - VDI static (pre-allocated) image
`
}

// Create makes an image as qemu-img create -f vdi does.
func (Format) Create(filename string, o block.CreateOptions) error {
	if err := imgfile.CheckOptions("vdi", o.Options, "size", "static", "preallocation", "extent_size_hint", "nocow"); err != nil {
		return err
	}
	if o.Backing != "" {
		return fmt.Errorf("Backing file not supported for file format 'vdi'")
	}
	static := false
	if v, ok := o.Options["static"]; ok {
		var err error
		if static, err = imgfile.Bool("static", v); err != nil {
			return err
		}
	}
	prealloc, err := imgfile.Prealloc(o.Options["preallocation"], "off", "falloc", "full")
	if err != nil {
		if v := o.Options["preallocation"]; v == "metadata" {
			return fmt.Errorf("Unsupported preallocation mode: %s", v)
		}
		return err
	}
	if o.Size < 0 {
		return fmt.Errorf("Image size must be non-negative")
	}
	size := (uint64(o.Size) + sectorSize - 1) &^ (sectorSize - 1)
	if size > maxDisk {
		return fmt.Errorf("Unsupported VDI image size (size is 0x%x, max supported is 0x%x)", size, uint64(maxDisk))
	}
	blocks := uint32((size + blockSize - 1) / blockSize)
	bmapLen := (uint64(blocks)*4 + sectorSize - 1) &^ (sectorSize - 1)
	h := &Header{
		Signature: signature, Version: version11, HeaderSize: 0x180,
		ImageType: typeDynamic, OffsetBmap: 0x200, OffsetData: uint32(0x200 + bmapLen),
		SectorSize: sectorSize, DiskSize: size, BlockSize: blockSize, BlocksInImage: blocks,
	}
	copy(h.Text[:], text)
	if static {
		h.ImageType = typeStatic
		h.BlocksAllocated = blocks
	}
	rand.Read(h.UUIDImage[:])
	rand.Read(h.UUIDLastSnap[:])
	for _, u := range []*[16]byte{&h.UUIDImage, &h.UUIDLastSnap} {
		u[7] = u[7]&0x0f | 0x40 // version 4, stored little endian (IPRT)
		u[8] = u[8]&0x3f | 0x80
	}
	f, err := block.CreateImageFile(filename)
	if err != nil {
		return err
	}
	defer f.Close()
	bmap := make([]byte, bmapLen)
	for i := range uint64(blocks) {
		v := uint32(Unallocated)
		if static {
			v = uint32(i)
		}
		le.PutUint32(bmap[i*4:], v)
	}
	if _, err := f.WriteAt(h.bytes(), 0); err != nil {
		return err
	}
	if _, err := f.WriteAt(bmap, 0x200); err != nil {
		return err
	}
	end := int64(h.OffsetData)
	if static {
		end += int64(blocks) * blockSize
	}
	if err := f.Truncate(end); err != nil {
		return err
	}
	if prealloc != "off" || static {
		mode := prealloc
		if mode == "off" {
			mode = "sparse"
		}
		if mode == "full" {
			if err := imgfile.ZeroFill(f, int64(h.OffsetData), end-int64(h.OffsetData)); err != nil {
				return err
			}
		}
	}
	return f.Sync()
}

// Image is one open VDI image.
type Image struct {
	name     string
	f        *os.File
	h        *Header
	readOnly bool
	size     int64

	mu   sync.RWMutex
	bmap []uint32
}

// Open opens a VDI image.
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
	hb := make([]byte, headerLen)
	if err := imgfile.ReadAt(f, hb, 0, "header"); err != nil {
		return nil, err
	}
	h, err := parseHeader(hb)
	if err != nil {
		return nil, err
	}
	if err := h.validate(); err != nil {
		return nil, err
	}
	n := int64(h.BlocksInImage)
	if int64(h.OffsetBmap)+n*4 > fsize {
		return nil, fmt.Errorf("VDI block map (%d entries at 0x%x) lies past the end of the file", n, h.OffsetBmap)
	}
	raw := make([]byte, n*4)
	if err := imgfile.ReadAt(f, raw, int64(h.OffsetBmap), "block map"); err != nil {
		return nil, err
	}
	m := &Image{name: name, f: f, h: h, readOnly: ro, bmap: make([]uint32, n)}
	m.size = int64((h.DiskSize + sectorSize - 1) &^ (sectorSize - 1))
	for i := range m.bmap {
		m.bmap[i] = le.Uint32(raw[i*4:])
	}
	return m, nil
}

func (m *Image) Format() string   { return "vdi" }
func (m *Image) Filename() string { return m.name }
func (m *Image) Size() int64      { return m.size }

// hostOff returns the file offset of block b's data, or -1 for unallocated blocks.
func (m *Image) hostOff(b int64) int64 {
	e := m.bmap[b]
	if e >= Discarded {
		return -1
	}
	return int64(m.h.OffsetData) + int64(e)*blockSize
}

func (m *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > m.size {
		return 0, fmt.Errorf("vdi: read at %d outside the disk", off)
	}
	n := min(int64(len(p)), m.size-off)
	done := int64(0)
	for done < n {
		b := (off + done) / blockSize
		in := (off + done) % blockSize
		k := min(n-done, blockSize-in)
		m.mu.RLock()
		h := m.hostOff(b)
		m.mu.RUnlock()
		q := p[done : done+k]
		if h < 0 {
			clear(q)
		} else if err := imgfile.ReadZeroPast(m.f, q, h+in); err != nil {
			return int(done), err
		}
		done += k
	}
	if n < int64(len(p)) {
		return int(n), fmt.Errorf("vdi: read past the end of the disk")
	}
	return int(n), nil
}

func (m *Image) WriteAt(p []byte, off int64) (int, error) {
	if m.readOnly {
		return 0, block.ErrReadOnly
	}
	if off < 0 || off+int64(len(p)) > m.size {
		return 0, fmt.Errorf("vdi: write at %d+%d outside the disk", off, len(p))
	}
	done := int64(0)
	n := int64(len(p))
	for done < n {
		b := (off + done) / blockSize
		in := (off + done) % blockSize
		k := min(n-done, blockSize-in)
		if err := m.writeBlock(b, in, p[done:done+k]); err != nil {
			return int(done), err
		}
		done += k
	}
	return int(n), nil
}

// writeBlock writes q at offset in of block b, allocating the block at the end of
// the file first (whole, zero-padded, as QEMU writes it) and then the block map and
// header, so a crash leaves at worst an unreferenced block.
func (m *Image) writeBlock(b, in int64, q []byte) error {
	m.mu.RLock()
	h := m.hostOff(b)
	e := m.bmap[b]
	m.mu.RUnlock()
	if e < Discarded && e >= m.h.BlocksInImage {
		// Only a corrupt map holds such an entry: writing there would grow the file
		// to wherever it points.
		return fmt.Errorf("vdi: block map entry of block %d is out of range (%d, image has %d blocks)", b, e, m.h.BlocksInImage)
	}
	if h >= 0 {
		_, err := m.f.WriteAt(q, h+in)
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if h = m.hostOff(b); h >= 0 {
		_, err := m.f.WriteAt(q, h+in)
		return err
	}
	if imgfile.IsZero(q) && m.bmap[b] == Discarded {
		return nil
	}
	if m.h.BlocksAllocated >= m.h.BlocksInImage {
		return fmt.Errorf("vdi: no free block index (blocks_allocated %d of %d)", m.h.BlocksAllocated, m.h.BlocksInImage)
	}
	idx := m.h.BlocksAllocated
	h = int64(m.h.OffsetData) + int64(idx)*blockSize
	buf := make([]byte, blockSize)
	copy(buf[in:], q)
	if _, err := m.f.WriteAt(buf, h); err != nil {
		return err
	}
	m.bmap[b] = idx
	m.h.BlocksAllocated++
	var eb [4]byte
	le.PutUint32(eb[:], idx)
	if _, err := m.f.WriteAt(eb[:], int64(m.h.OffsetBmap)+b*4); err != nil {
		return err
	}
	_, err := m.f.WriteAt(m.h.bytes(), 0)
	return err
}

// WriteZeroes writes zeroes; allocated blocks stay allocated (QEMU's vdi has no
// zero-write or discard support either), unallocated ones already read as zero.
func (m *Image) WriteZeroes(off, n int64, _ block.ZeroFlags) error {
	if m.readOnly {
		return block.ErrReadOnly
	}
	if off < 0 || off+n > m.size {
		return fmt.Errorf("vdi: zero write outside the disk")
	}
	zero := make([]byte, min(n, blockSize))
	for n > 0 {
		b := off / blockSize
		in := off % blockSize
		k := min(n, blockSize-in)
		m.mu.RLock()
		h := m.hostOff(b)
		m.mu.RUnlock()
		if h >= 0 {
			if _, err := m.f.WriteAt(zero[:k], h+in); err != nil {
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

// BlockStatus reports allocated blocks as data at their host offset, others as zero
// (qemu's vdi_co_block_status with unallocated_blocks_are_zero).
func (m *Image) BlockStatus(off, n int64) (block.Status, error) {
	if off < 0 || off >= m.size {
		return block.Status{Offset: off}, nil
	}
	n = min(n, m.size-off)
	m.mu.RLock()
	defer m.mu.RUnlock()
	b := off / blockSize
	h := m.hostOff(b)
	st := block.Status{Offset: off, HostOffset: -1, HostFile: m.name}
	length := int64(0)
	for cur := off; cur < off+n; {
		cb := cur / blockSize
		ch := m.hostOff(cb)
		if (ch < 0) != (h < 0) || (h >= 0 && ch != h+(cb-b)*blockSize) {
			break
		}
		k := min(off+n-cur, (cb+1)*blockSize-cur)
		length += k
		cur += k
	}
	st.Length = length
	st.Allocated = true
	if h >= 0 {
		st.Data = true
		st.HostOffset = h + off%blockSize
		if m.h.ImageType == typeStatic {
			// QEMU asks the file about static images (BDRV_BLOCK_RECURSE):
			// host holes read as zero.
			st.Zero, st.Length = imgfile.HostExtent(m.f, st.HostOffset, length)
		}
	} else {
		st.Zero = true
		st.HostFile = ""
	}
	return st, nil
}

func (m *Image) Resize(size int64, o block.ResizeOptions) error {
	return fmt.Errorf("Image format driver does not support resize")
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

// Info is qemu-img info's format part: the cluster size is the block size.
func (m *Image) Info() (*block.ImageInfo, error) {
	return &block.ImageInfo{ClusterSize: blockSize, HasDirtyFlag: true}, nil
}

func (m *Image) ActualSize() (int64, error) { return block.FileSize(m.name) }

// Check is qemu-img check for vdi (vdi_co_check): each block map entry inside the
// image and used once, and blocks_allocated equal to their count. No repairs.
func (m *Image) Check(mode block.RepairMode) (*block.CheckResult, error) {
	if mode != block.RepairNone {
		return nil, block.ErrUnsupported // vdi_co_check: -ENOTSUP for any repair
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	r := &block.CheckResult{Filename: m.name, Format: "vdi"}
	used := make(map[uint32]uint32)
	var allocated uint32
	for b, e := range m.bmap {
		if e >= Discarded {
			continue
		}
		if e >= m.h.BlocksInImage {
			r.Messages = append(r.Messages, fmt.Sprintf("ERROR: block index %d too large, is %d", b, e))
			r.Corruptions++
			continue
		}
		allocated++
		if prev, dup := used[e]; dup {
			r.Messages = append(r.Messages, fmt.Sprintf("ERROR: block index %d also used by %d", prev, e))
			r.Corruptions++
		} else {
			used[e] = e
		}
	}
	if allocated != m.h.BlocksAllocated {
		r.Messages = append(r.Messages, fmt.Sprintf("ERROR: allocated blocks mismatch, is %d, should be %d", allocated, m.h.BlocksAllocated))
		r.Corruptions++
	}
	return r, nil
}

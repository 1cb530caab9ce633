// Package vhdx owns the VHDX image format driver: the file type identifier, the two
// headers (sequence numbers, CRC-32C), the region tables (BAT and metadata regions,
// overlap checks), the metadata items (file parameters: block size and
// leave-blocks-allocated; virtual disk size; logical and physical sector size; page
// 83 data), the BAT with payload and sector-bitmap entries and their states, replay
// of a log left by a crash before the image is used (as QEMU's vhdx-log.c), and
// creation as qemu-img creates (subformat=dynamic|fixed, block_size, log_size,
// block_state_zero). Metadata is written directly, never through the log: gemu only
// writes while the log is empty, and on a read-write open it updates both headers
// with a new sequence number and file write GUID as QEMU's vhdx_update_headers does.
// Every table, offset and length read from a file is bounded before use.
//
// It registers the "vhdx" format with package block from init and implements
// block.Driver with the optional Infoer, ActualSizer and Checker. It must not touch
// the block layer's registry beyond Register, nor any other format.
package vhdx

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"sync"
	"unicode/utf16"

	"gemu/block"
	"gemu/block/internal/imgfile"
)

func init() { block.Register(Format{}) }

const (
	kiB = 1 << 10
	miB = 1 << 20
	tiB = 1 << 40

	header1Off  = 64 * kiB
	header2Off  = 128 * kiB
	headerLen   = 4 * kiB
	region1Off  = 192 * kiB
	region2Off  = 256 * kiB
	regionLen   = 64 * kiB
	headerEnd   = 1 * miB // end of the header section
	maxRegions  = 2047
	metaHdrLen  = 64 * kiB
	maxMetaEnts = 2047
	maxSize     = 64 * tiB
	minBlock    = 1 * miB
	maxBlock    = 256 * miB
	logSector   = 4 * kiB

	// BAT states.
	stateNotPresent = 0
	stateUndefined  = 1
	stateZero       = 2
	stateUnmapped   = 3
	stateFull       = 6
	statePartial    = 7
	stateMask       = 7
)

var (
	le     = binary.LittleEndian
	crcTab = crc32.MakeTable(crc32.Castagnoli)
)

// GUIDs as stored (the first three fields little endian).
var (
	guidBAT       = [16]byte{0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08}
	guidMetadata  = [16]byte{0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e}
	guidFileParam = [16]byte{0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b}
	guidDiskSize  = [16]byte{0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8}
	guidPage83    = [16]byte{0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45, 0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46}
	guidLogical   = [16]byte{0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47, 0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f}
	guidPhysical  = [16]byte{0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44, 0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56}
	guidParentLoc = [16]byte{0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45, 0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c}
)

// crc is CRC-32C of b with the 4 bytes at at taken as zero (vhdx_checksum_calc).
func crc(b []byte, at int) uint32 {
	var z [4]byte
	c := crc32.Update(0, crcTab, b[:at])
	c = crc32.Update(c, crcTab, z[:])
	return crc32.Update(c, crcTab, b[at+4:])
}

func newGUID() (g [16]byte) {
	rand.Read(g[:])
	g[7] = g[7]&0x0f | 0x40
	g[8] = g[8]&0x3f | 0x80
	return g
}

// Header is one of the two VHDX headers.
type Header struct {
	Signature     uint32
	Checksum      uint32
	Sequence      uint64
	FileWriteGUID [16]byte
	DataWriteGUID [16]byte
	LogGUID       [16]byte
	LogVersion    uint16
	Version       uint16
	LogLength     uint32
	LogOffset     uint64
}

func (h *Header) bytes() []byte {
	b := make([]byte, headerLen)
	h.Signature = 0x64616568 // "head"
	h.Checksum = 0
	binary.Encode(b, le, h)
	h.Checksum = crc(b, 4)
	le.PutUint32(b[4:], h.Checksum)
	return b
}

// regionEntry is one region table entry.
type regionEntry struct {
	GUID     [16]byte
	Offset   uint64
	Length   uint32
	Required uint32
}

func regionTable(ents []regionEntry) []byte {
	b := make([]byte, regionLen)
	copy(b, "regi")
	le.PutUint32(b[8:], uint32(len(ents)))
	for i, e := range ents {
		binary.Encode(b[16+32*i:], le, e)
	}
	le.PutUint32(b[4:], crc(b, 4))
	return b
}

// Format is the registered "vhdx" format.
type Format struct{}

func (Format) Name() string { return "vhdx" }

// Probe: "vhdxfile" at offset 0 (vhdx_probe).
func (Format) Probe(b []byte, _ string) int {
	if len(b) >= 8 && string(b[:8]) == "vhdxfile" {
		return 100
	}
	return 0
}

// OptionsHelp is qemu-img's `create -f vhdx -o help` text.
func (Format) OptionsHelp() string {
	return `Supported options:
  block_size=<size>      - Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size.
  block_state_zero=<bool (on/off)> - Force use of payload blocks of type 'ZERO'. Non-standard, but default.  Do not set to 'off' when using 'qemu-img convert' with subformat=dynamic.
  extent_size_hint=<size> - Extent size hint for the image file, 0 to disable
  log_size=<size>        - Log size; min 1MB.
  nocow=<bool (on/off)>  - Turn off copy-on-write (valid only on btrfs)
  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)
  size=<size>            - Virtual disk size; max of 64TB.
  subformat=<str>        - VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'.
`
}

// layout is where create puts things, and how open finds the image's geometry.
type geom struct {
	size       int64
	blockSize  int64
	logical    int64
	chunkRatio int64
	dataBlocks int64
	batEntries int64
	leaveAlloc bool
	hasParent  bool
	physical   int64
	page83     [16]byte
	blockShift uint
}

func newGeom(size, blockSize, logical int64) geom {
	g := geom{size: size, blockSize: blockSize, logical: logical}
	g.chunkRatio = (1 << 23) * logical / blockSize
	g.dataBlocks = (size + blockSize - 1) / blockSize
	if g.dataBlocks > 0 {
		g.batEntries = g.dataBlocks + (g.dataBlocks-1)/g.chunkRatio
	}
	return g
}

// batIndex is the BAT entry of payload block b (a sector-bitmap entry follows every
// chunkRatio payload entries).
func (g *geom) batIndex(b int64) int64 { return b + b/g.chunkRatio }

// Create makes an image as qemu-img create -f vhdx does (vhdx_co_create).
func (Format) Create(filename string, o block.CreateOptions) error {
	if err := imgfile.CheckOptions("vhdx", o.Options, "size", "block_size", "log_size", "subformat", "block_state_zero", "preallocation", "extent_size_hint", "nocow"); err != nil {
		return err
	}
	if o.Backing != "" {
		return fmt.Errorf("Backing file not supported for file format 'vhdx'")
	}
	// preallocation is the file layer's option: QEMU applies it to the empty file
	// before the format writes its structures, so it changes nothing here.
	if _, err := imgfile.Prealloc(o.Options["preallocation"], "off", "falloc", "full"); err != nil {
		return err
	}
	size := o.Size
	if size < 0 {
		return fmt.Errorf("Image size must be non-negative")
	}
	if size > maxSize {
		return fmt.Errorf("Image size too large; max of 64TB")
	}
	parseSz := func(k string, def int64) (int64, error) {
		v, ok := o.Options[k]
		if !ok {
			return def, nil
		}
		n, err := block.ParseSize(v, 1)
		if err != nil {
			return 0, fmt.Errorf("Parameter '%s' expects a non-negative number below 2^64", k)
		}
		return n, nil
	}
	logSize, err := parseSz("log_size", miB)
	if err != nil {
		return err
	}
	bs, err := parseSz("block_size", 0)
	if err != nil {
		return err
	}
	zeroBlocks := true
	if v, ok := o.Options["block_state_zero"]; ok {
		if zeroBlocks, err = imgfile.Bool("block_state_zero", v); err != nil {
			return err
		}
	}
	fixed := false
	switch o.Options["subformat"] {
	case "", "dynamic":
	case "fixed":
		fixed = true
	default:
		return fmt.Errorf("Parameter 'subformat' does not accept value '%s'", o.Options["subformat"])
	}
	// As vhdx_co_create: sizes round up to 1 MiB, the block size is capped at 256 MiB.
	logSize = (logSize + miB - 1) &^ (miB - 1)
	if logSize < miB || logSize > 1<<32-miB {
		return fmt.Errorf("Log size must be a multiple of 1 MB")
	}
	bs = (bs + miB - 1) &^ (miB - 1)
	bs = min(bs, maxBlock)
	if bs == 0 {
		switch {
		case size > 32*tiB:
			bs = 64 * miB
		case size > 100<<30:
			bs = 32 * miB
		case size > 1<<30:
			bs = 16 * miB
		default:
			bs = 8 * miB
		}
	}
	if bs&(bs-1) != 0 {
		return fmt.Errorf("Block size must be a power of two")
	}
	size = (size + 511) &^ 511
	g := newGeom(size, bs, 512)
	batOff := int64(headerEnd) + logSize
	batLen := (g.batEntries*8 + miB - 1) &^ (miB - 1)
	if batLen == 0 {
		batLen = miB
	}
	metaOff := batOff + batLen
	dataOff := metaOff + 5*miB

	f, err := block.CreateImageFile(filename)
	if err != nil {
		return err
	}
	defer f.Close()
	// File type identifier.
	id := make([]byte, 64*kiB)
	copy(id, "vhdxfile")
	for i, c := range utf16.Encode([]rune("gemu-img v7.2.0")) {
		le.PutUint16(id[8+2*i:], c)
	}
	fileGUID := newGUID()
	var seq [8]byte
	rand.Read(seq[:])
	h := Header{Sequence: le.Uint64(seq[:]) >> 2, FileWriteGUID: fileGUID, DataWriteGUID: fileGUID,
		Version: 1, LogLength: uint32(logSize), LogOffset: headerEnd}
	h1 := h.bytes()
	h.Sequence++
	h2 := h.bytes()
	rt := regionTable([]regionEntry{
		{GUID: guidBAT, Offset: uint64(batOff), Length: uint32(batLen)},
		{GUID: guidMetadata, Offset: uint64(metaOff), Length: miB},
	})
	meta := make([]byte, miB)
	copy(meta, "metadata")
	type item struct {
		guid  [16]byte
		flags uint32
		data  []byte
	}
	fp := make([]byte, 8)
	le.PutUint32(fp, uint32(bs))
	if fixed {
		le.PutUint32(fp[4:], 1) // leave blocks allocated
	}
	ds := make([]byte, 8)
	le.PutUint64(ds, uint64(size))
	p83 := newGUID()
	ls := []byte{0, 2, 0, 0}
	items := []item{{guidFileParam, 4, fp}, {guidDiskSize, 6, ds}, {guidPage83, 6, p83[:]}, {guidLogical, 6, ls}, {guidPhysical, 6, ls}}
	le.PutUint16(meta[10:], uint16(len(items)))
	at := uint32(metaHdrLen)
	for i, it := range items {
		e := meta[32+32*i:]
		copy(e, it.guid[:])
		le.PutUint32(e[16:], at)
		le.PutUint32(e[20:], uint32(len(it.data)))
		le.PutUint32(e[24:], it.flags)
		copy(meta[at:], it.data)
		at += uint32(len(it.data))
	}
	end := dataOff
	if fixed {
		end = dataOff + size
	}
	if err := f.Truncate(end); err != nil {
		return err
	}
	if fixed || zeroBlocks {
		bat := make([]byte, g.batEntries*8)
		state := uint64(stateNotPresent)
		if fixed {
			state = stateFull
		}
		if zeroBlocks {
			state = stateZero
		}
		for b := int64(0); b < g.dataBlocks; b++ {
			e := state
			if state == stateFull {
				e |= uint64((dataOff+b*bs+miB-1)&^(miB-1)) &^ (miB - 1)
			}
			le.PutUint64(bat[g.batIndex(b)*8:], e)
		}
		if _, err := f.WriteAt(bat, batOff); err != nil {
			return err
		}
	}
	for _, w := range []struct {
		b   []byte
		off int64
	}{{meta, metaOff}, {rt, region1Off}, {rt, region2Off}, {h1, header1Off}, {h2, header2Off}, {id, 0}} {
		if _, err := f.WriteAt(w.b, w.off); err != nil {
			return err
		}
	}
	return f.Sync()
}

// Image is one open VHDX.
type Image struct {
	name     string
	f        *os.File
	readOnly bool
	g        geom

	hdrs     [2]*Header
	cur      int // index of the current header
	batOff   int64
	metaOff  int64
	logOff   int64
	logLen   int64
	replayed bool   // a log was replayed on open (check reports it as fixed)
	meta     []span // headers, log and regions: no payload block may overlap them

	mu      sync.RWMutex
	bat     []uint64
	wrote   bool // data write GUID updated for this session
	session [16]byte
}

// Open opens a VHDX image, replaying its log first when it holds one (read-write
// opens only: a read-only open of such an image fails as in QEMU).
func (Format) Open(filename string, opts block.OpenOptions) (block.Driver, error) {
	f, fsize, err := imgfile.Open(filename, opts)
	if err != nil {
		return nil, err
	}
	m := &Image{name: filename, f: f, readOnly: opts.ReadOnly}
	if err := m.open(fsize); err != nil {
		f.Close()
		return nil, fmt.Errorf("Could not open '%s': %v", filename, err)
	}
	return m, nil
}

func (m *Image) open(fsize int64) error {
	if fsize < 1*miB {
		return errors.New("vhdx: file too small for a VHDX image")
	}
	sig := make([]byte, 8)
	if err := imgfile.ReadAt(m.f, sig, 0, "file identifier"); err != nil {
		return err
	}
	if string(sig) != "vhdxfile" {
		return errors.New("Not a VHDX image (no \"vhdxfile\" identifier)")
	}
	if err := m.readHeaders(); err != nil {
		return err
	}
	h := m.hdrs[m.cur]
	m.logOff, m.logLen = int64(h.LogOffset), int64(h.LogLength)
	if h.LogOffset%miB != 0 || h.LogLength%miB != 0 || h.LogOffset < headerEnd ||
		m.logOff > fsize || m.logLen > fsize-m.logOff && m.logLen > 0 {
		return fmt.Errorf("vhdx: log (offset %d, length %d) is misaligned or lies past the end of the file", h.LogOffset, h.LogLength)
	}
	if h.LogGUID != [16]byte{} {
		lg, err := m.findLog(fsize)
		if err != nil {
			return err
		}
		if lg != nil {
			if m.readOnly {
				return fmt.Errorf("VHDX image file '%s' opened read-only, but contains a log that needs to be replayed (to replay the log, run: qemu-img check -r all '%s')", m.name, m.name)
			}
			if err := m.replay(lg, fsize); err != nil {
				return err
			}
			m.replayed = true
			if st, err := m.f.Stat(); err == nil {
				fsize = st.Size()
			}
		}
	}
	if err := m.readRegions(fsize); err != nil {
		return err
	}
	if err := m.readMetadata(fsize); err != nil {
		return err
	}
	if err := m.readBAT(fsize); err != nil {
		return err
	}
	if !m.readOnly {
		m.session = newGUID()
		var zero [16]byte
		if err := m.updateHeaders(false, &zero); err != nil {
			return err
		}
	}
	return nil
}

// readHeaders validates both headers and picks the valid one with the higher
// sequence number (vhdx_parse_header).
func (m *Image) readHeaders() error {
	var valid [2]bool
	for i, off := range []int64{header1Off, header2Off} {
		b := make([]byte, headerLen)
		if err := imgfile.ReadAt(m.f, b, off, "header"); err != nil {
			return err
		}
		var h Header
		binary.Decode(b, le, &h)
		m.hdrs[i] = &h
		valid[i] = h.Signature == 0x64616568 && crc(b, 4) == h.Checksum
	}
	switch {
	case valid[0] && valid[1]:
		m.cur = 0
		if m.hdrs[1].Sequence > m.hdrs[0].Sequence {
			m.cur = 1
		}
	case valid[0]:
		m.cur = 0
	case valid[1]:
		m.cur = 1
	default:
		return errors.New("No valid VHDX header found")
	}
	h := m.hdrs[m.cur]
	if h.Version != 1 {
		return fmt.Errorf("vhdx: unsupported header version %d", h.Version)
	}
	if h.LogVersion != 0 {
		return fmt.Errorf("vhdx: unsupported log version %d", h.LogVersion)
	}
	return nil
}

// updateHeaders writes the inactive header, then the other, each with the next
// sequence number, this session's file write GUID, a new data write GUID if asked,
// and the given log GUID (vhdx_update_headers).
func (m *Image) updateHeaders(newData bool, logGUID *[16]byte) error {
	data := m.hdrs[m.cur].DataWriteGUID
	if newData {
		data = newGUID()
	}
	for range 2 {
		cur := m.hdrs[m.cur]
		n := *cur
		n.Sequence = cur.Sequence + 1
		n.FileWriteGUID = m.session
		n.DataWriteGUID = data
		if logGUID != nil {
			n.LogGUID = *logGUID
		}
		in := 1 - m.cur
		off := int64(header1Off)
		if in == 1 {
			off = header2Off
		}
		if _, err := m.f.WriteAt(n.bytes(), off); err != nil {
			return err
		}
		if err := m.f.Sync(); err != nil {
			return err
		}
		m.hdrs[in] = &n
		m.cur = in
	}
	return nil
}

// readRegions parses region table 1 (table 2 if 1 is corrupt) and checks the BAT and
// metadata regions are there, aligned, inside the file, and overlap nothing.
func (m *Image) readRegions(fsize int64) error {
	var ents []regionEntry
	var err error
	for _, off := range []int64{region1Off, region2Off} {
		if ents, err = m.readRegionTable(off); err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	used := []span{{0, headerEnd}}
	if m.logLen > 0 {
		used = append(used, span{m.logOff, m.logOff + m.logLen})
	}
	var haveBAT, haveMeta bool
	for _, e := range ents {
		off, n := int64(e.Offset), int64(e.Length)
		if off%miB != 0 || n%miB != 0 || n == 0 {
			return fmt.Errorf("vhdx: region at %d (length %d) is not aligned to 1 MiB", off, n)
		}
		if e.Offset > uint64(fsize) || off+n > fsize {
			return fmt.Errorf("vhdx: region at %d (length %d) lies past the end of the file", off, n)
		}
		for _, u := range used {
			if off < u.end && u.off < off+n {
				return fmt.Errorf("vhdx: region at %d (length %d) overlaps another region, the headers or the log", off, n)
			}
		}
		used = append(used, span{off, off + n})
		switch e.GUID {
		case guidBAT:
			if haveBAT {
				return errors.New("vhdx: two BAT regions")
			}
			haveBAT, m.batOff = true, off
			m.g.batEntries = n / 8 // refined by the metadata
		case guidMetadata:
			if haveMeta {
				return errors.New("vhdx: two metadata regions")
			}
			haveMeta, m.metaOff = true, off
		default:
			if e.Required&1 != 0 {
				return errors.New("Unsupported data region found")
			}
		}
	}
	if !haveBAT || !haveMeta {
		return errors.New("vhdx: region table lacks the BAT or the metadata region")
	}
	m.meta = used
	return nil
}

// span is a byte range of the file [off, end).
type span struct{ off, end int64 }

func (m *Image) readRegionTable(off int64) ([]regionEntry, error) {
	b := make([]byte, regionLen)
	if err := imgfile.ReadAt(m.f, b, off, "region table"); err != nil {
		return nil, err
	}
	if string(b[:4]) != "regi" {
		return nil, errors.New("vhdx: region table signature is wrong")
	}
	if crc(b, 4) != le.Uint32(b[4:]) {
		return nil, errors.New("vhdx: region table checksum is wrong")
	}
	n := le.Uint32(b[8:])
	if n > maxRegions {
		return nil, fmt.Errorf("vhdx: region table has %d entries (at most %d)", n, maxRegions)
	}
	ents := make([]regionEntry, n)
	for i := range ents {
		binary.Decode(b[16+32*i:], le, &ents[i])
	}
	return ents, nil
}

// readMetadata reads the metadata table and the items gemu needs.
func (m *Image) readMetadata(fsize int64) error {
	b := make([]byte, metaHdrLen)
	if err := imgfile.ReadAt(m.f, b, m.metaOff, "metadata table"); err != nil {
		return err
	}
	if string(b[:8]) != "metadata" {
		return errors.New("vhdx: metadata table signature is wrong")
	}
	n := int(le.Uint16(b[10:]))
	if n > maxMetaEnts {
		return fmt.Errorf("vhdx: metadata table has %d entries (at most %d)", n, maxMetaEnts)
	}
	found := map[[16]byte][]byte{}
	for i := range n {
		e := b[32+32*i:]
		var g [16]byte
		copy(g[:], e)
		off, ln, flags := le.Uint32(e[16:]), le.Uint32(e[20:]), le.Uint32(e[24:])
		if _, dup := found[g]; dup {
			return errors.New("vhdx: metadata item listed twice")
		}
		if ln > 64*kiB || off < metaHdrLen || uint64(off)+uint64(ln) > miB {
			return fmt.Errorf("vhdx: metadata item at %d (length %d) lies outside the metadata region", off, ln)
		}
		d := make([]byte, ln)
		if err := imgfile.ReadAt(m.f, d, m.metaOff+int64(off), "metadata item"); err != nil {
			return err
		}
		switch g {
		case guidFileParam, guidDiskSize, guidPage83, guidLogical, guidPhysical, guidParentLoc:
			found[g] = d
		default:
			if flags&4 != 0 {
				return errors.New("Unsupported metadata item found")
			}
		}
	}
	need := func(g [16]byte, n int, what string) ([]byte, error) {
		d, ok := found[g]
		if !ok || len(d) < n {
			return nil, fmt.Errorf("vhdx: metadata item %s missing or too short", what)
		}
		return d, nil
	}
	fp, err := need(guidFileParam, 8, "file parameters")
	if err != nil {
		return err
	}
	ds, err := need(guidDiskSize, 8, "virtual disk size")
	if err != nil {
		return err
	}
	ls, err := need(guidLogical, 4, "logical sector size")
	if err != nil {
		return err
	}
	ps, err := need(guidPhysical, 4, "physical sector size")
	if err != nil {
		return err
	}
	bs := int64(le.Uint32(fp))
	bits := le.Uint32(fp[4:])
	size := le.Uint64(ds)
	logical := int64(le.Uint32(ls))
	phys := int64(le.Uint32(ps))
	if bs < minBlock || bs > maxBlock || bs&(bs-1) != 0 {
		return fmt.Errorf("vhdx: invalid block size %d", bs)
	}
	if logical != 512 && logical != 4096 {
		return fmt.Errorf("vhdx: invalid logical sector size %d", logical)
	}
	if phys != 512 && phys != 4096 {
		return fmt.Errorf("vhdx: invalid physical sector size %d", phys)
	}
	if size > maxSize {
		return fmt.Errorf("vhdx: virtual disk size %d is larger than 64 TiB", size)
	}
	if bits&2 != 0 {
		return errors.New("vhdx: differencing images (has_parent) are not supported")
	}
	m.g = newGeom(int64(size), bs, logical)
	m.g.leaveAlloc = bits&1 != 0
	m.g.physical = phys
	if p, ok := found[guidPage83]; ok && len(p) >= 16 {
		copy(m.g.page83[:], p)
	}
	return nil
}

func (m *Image) readBAT(fsize int64) error {
	n := m.g.batEntries
	// The BAT region was checked to lie inside the file; its length bounds n.
	var regionLen int64
	ents, _ := m.readRegionTable(region1Off)
	if ents == nil {
		ents, _ = m.readRegionTable(region2Off)
	}
	for _, e := range ents {
		if e.GUID == guidBAT {
			regionLen = int64(e.Length)
		}
	}
	if n*8 > regionLen {
		return fmt.Errorf("vhdx: BAT region of %d bytes is too small for %d entries", regionLen, n)
	}
	raw := make([]byte, n*8)
	if err := imgfile.ReadAt(m.f, raw, m.batOff, "BAT"); err != nil {
		return err
	}
	m.bat = make([]uint64, n)
	for i := range m.bat {
		m.bat[i] = le.Uint64(raw[i*8:])
	}
	for b := int64(0); b < m.g.dataBlocks; b++ {
		e := m.bat[m.g.batIndex(b)]
		switch e & stateMask {
		case stateFull, statePartial:
			off := int64(e >> 20 << 20)
			if e>>20 > uint64(fsize)>>20 {
				return fmt.Errorf("vhdx: BAT entry %d points past the end of the file", m.g.batIndex(b))
			}
			for _, u := range m.meta {
				if off < u.end && u.off < off+m.g.blockSize {
					return fmt.Errorf("vhdx: BAT entry %d points into the header section, the log or a metadata region", m.g.batIndex(b))
				}
			}
		case stateNotPresent, stateUndefined, stateZero, stateUnmapped:
		default:
			return fmt.Errorf("vhdx: BAT entry %d has invalid state %d", m.g.batIndex(b), e&stateMask)
		}
	}
	return nil
}

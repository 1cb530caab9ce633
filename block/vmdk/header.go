package vmdk

import (
	"encoding/binary"
	"fmt"
)

// On-disk constants of the hosted sparse extent (VMware "Virtual Disk Format 5.0").
const (
	sectorSize = 512

	magicKDMV = 0x564d444b // "KDMV" read little-endian
	magicCOWD = 0x44574f43 // "COWD": ESX vmfsSparse (VMDK3), read only

	flagNLDetect  = 1 << 0
	flagRGD       = 1 << 1
	flagZeroGrain = 1 << 2
	flagCompress  = 1 << 16
	flagMarkers   = 1 << 17

	compressDeflate = 1

	// gdAtEnd in the header's gd_offset says the real header is the footer near EOF.
	gdAtEnd = ^uint64(0)

	markerEOS    = 0
	markerGT     = 1
	markerGD     = 2
	markerFooter = 3

	// gteZeroed is a grain-table entry meaning "this grain reads as zeroes" when the
	// zeroed-grain flag is set.
	gteZeroed = 1

	// Limits that keep hostile headers from costing unbounded memory. QEMU refuses
	// num_gtes_per_gt above 512 too; grains above 16 MiB exist nowhere.
	maxGTEsPerGT    = 512
	maxGrainSectors = 16 << 20 / sectorSize
	maxGDEntries    = 16 << 20 // 64 MiB of grain directory
	maxDescBytes    = 1 << 20
	// maxDirBytes bounds the grain directories held for all extents of one image
	// (a descriptor could list one big sparse file thousands of times).
	maxDirBytes = 64 << 20
)

// header is the 512-byte sparse extent header (and the stream footer's copy of it).
type header struct {
	Version      uint32
	Flags        uint32
	Capacity     uint64 // sectors
	GrainSize    uint64 // sectors
	DescOffset   uint64 // sectors
	DescSize     uint64 // sectors
	NumGTEsPerGT uint32
	RGDOffset    uint64 // sectors
	GDOffset     uint64 // sectors
	OverHead     uint64 // sectors: metadata before the first grain
	Unclean      uint8
	CompressAlgo uint16

	// COWD is set for a vmfsSparse extent: 4096-entry grain tables, a directory of
	// COWDDirEntries entries, no redundant directory, read only.
	COWD           bool
	COWDDirEntries uint32
}

// cowdGTEs is the fixed grain-table size of vmfsSparse extents.
const cowdGTEs = 4096

func parseHeader(b []byte) (header, error) {
	var h header
	if len(b) < sectorSize {
		return h, fmt.Errorf("vmdk: file too short for a sparse header")
	}
	le := binary.LittleEndian
	switch le.Uint32(b) {
	case magicKDMV:
	case magicCOWD:
		// version, flags, disk_sectors, granularity, l1dir_offset, l1dir_size (32-bit).
		h.COWD = true
		h.Version = 1
		h.Capacity = uint64(le.Uint32(b[12:]))
		h.GrainSize = uint64(le.Uint32(b[16:]))
		h.GDOffset = uint64(le.Uint32(b[20:]))
		h.COWDDirEntries = le.Uint32(b[24:])
		h.NumGTEsPerGT = cowdGTEs
		return h, nil
	default:
		return h, fmt.Errorf("vmdk: bad sparse extent magic %#x", le.Uint32(b))
	}
	h.Version = le.Uint32(b[4:])
	h.Flags = le.Uint32(b[8:])
	h.Capacity = le.Uint64(b[12:])
	h.GrainSize = le.Uint64(b[20:])
	h.DescOffset = le.Uint64(b[28:])
	h.DescSize = le.Uint64(b[36:])
	h.NumGTEsPerGT = le.Uint32(b[44:])
	h.RGDOffset = le.Uint64(b[48:])
	h.GDOffset = le.Uint64(b[56:])
	h.OverHead = le.Uint64(b[64:])
	h.Unclean = b[72]
	h.CompressAlgo = le.Uint16(b[77:])
	return h, nil
}

func (h *header) marshal(b []byte) {
	clear(b[:sectorSize])
	le := binary.LittleEndian
	le.PutUint32(b, magicKDMV)
	le.PutUint32(b[4:], h.Version)
	le.PutUint32(b[8:], h.Flags)
	le.PutUint64(b[12:], h.Capacity)
	le.PutUint64(b[20:], h.GrainSize)
	le.PutUint64(b[28:], h.DescOffset)
	le.PutUint64(b[36:], h.DescSize)
	le.PutUint32(b[44:], h.NumGTEsPerGT)
	le.PutUint64(b[48:], h.RGDOffset)
	le.PutUint64(b[56:], h.GDOffset)
	le.PutUint64(b[64:], h.OverHead)
	b[72] = h.Unclean
	// Newline-detection bytes: a file mangled by a text-mode transfer fails here.
	b[73], b[74], b[75], b[76] = '\n', ' ', '\r', '\n'
	le.PutUint16(b[77:], h.CompressAlgo)
}

// validate checks the geometry fields that size in-memory tables; offsets are checked
// against the file when the tables are read.
func (h *header) validate() error {
	if h.Version == 0 || h.Version > 3 {
		return fmt.Errorf("vmdk: unsupported sparse extent version %d", h.Version)
	}
	if h.GrainSize == 0 || h.GrainSize&(h.GrainSize-1) != 0 || h.GrainSize > maxGrainSectors {
		return fmt.Errorf("vmdk: invalid grain size %d sectors", h.GrainSize)
	}
	if h.NumGTEsPerGT == 0 || (h.NumGTEsPerGT > maxGTEsPerGT && !h.COWD) {
		return fmt.Errorf("vmdk: invalid grain table size %d entries (at most %d)", h.NumGTEsPerGT, maxGTEsPerGT)
	}
	if h.Capacity > 1<<53 {
		return fmt.Errorf("vmdk: capacity %d sectors too large", h.Capacity)
	}
	if h.Flags&flagCompress != 0 || h.CompressAlgo != 0 {
		if h.CompressAlgo != compressDeflate {
			return fmt.Errorf("vmdk: unsupported compression algorithm %d", h.CompressAlgo)
		}
	}
	if n := h.gdEntries(); n > maxGDEntries {
		return fmt.Errorf("vmdk: grain directory of %d entries too large", n)
	}
	return nil
}

func (h *header) gdEntries() uint64 {
	if h.COWD {
		return uint64(h.COWDDirEntries)
	}
	per := h.GrainSize * uint64(h.NumGTEsPerGT)
	return (h.Capacity + per - 1) / per
}

func (h *header) compressed() bool { return h.CompressAlgo == compressDeflate }

// marker layout: val uint64 (LBA or sector count), size uint32, then type uint32 when
// size is 0 (metadata marker) or the compressed grain bytes.
const grainMarkerLen = 12

func putMetaMarker(b []byte, sectors uint64, typ uint32) {
	clear(b[:sectorSize])
	binary.LittleEndian.PutUint64(b, sectors)
	binary.LittleEndian.PutUint32(b[12:], typ)
}

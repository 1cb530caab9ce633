// Package qcow2 owns the qcow2 image-format driver: header and extension parsing,
// L1/L2 mapping, refcounts, compressed clusters (zlib and zstd), backing chains,
// external data files, internal snapshots, check/repair, amend and measure. It is
// reached only through the block package's Driver interfaces and registers itself as
// the "qcow2" format from init.
//
// Damaged images are opened as QEMU opens them: tables that lie (partly) past the end
// of the file read as zeroes, and check (check.go, QEMU 7.2's algorithm step for
// step) reports every reference past the end; repairs and emptying (empty.go, as
// make_completely_empty) write in an order a crash cannot turn into data loss.
//
// It must not know about the emulator, the gemu-img command line or other formats
// (backing files are opened through the block registry).
package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

var be = binary.BigEndian

const (
	magic = 0x514649fb // "QFI\xfb"

	v2HeaderLen = 72
	v3HeaderLen = 104 // without the compression type byte
	// QEMU writes 112-byte v3 headers (compression type plus padding).
	v3HeaderLenFull = 112

	minClusterBits = 9
	maxClusterBits = 21

	// Limits QEMU applies when opening an image: they bound what a hostile header can
	// make us allocate.
	maxL1Bytes        = 32 << 20
	maxRefTableBytes  = 8 << 20
	maxBackingNameLen = 1023
	maxSnapshots      = 65536
	maxSnapshotExtra  = 1024
	maxSnapshotsTotal = 64 << 20 // snapshot table bytes we are willing to read

	// Incompatible feature bits.
	incDirty        = 1 << 0
	incCorrupt      = 1 << 1
	incDataFile     = 1 << 2
	incCompression  = 1 << 3
	incExtendedL2   = 1 << 4
	incKnown        = incDirty | incCorrupt | incDataFile | incCompression | incExtendedL2
	compatLazyRefs  = 1 << 0
	autoclearBitmap = 1 << 0
	autoclearRaw    = 1 << 1

	// Header extension types.
	extEnd         = 0x00000000
	extBackingFmt  = 0xe2792aca
	extFeatures    = 0x6803f857
	extBitmaps     = 0x23852875
	extCrypto      = 0x0537be77
	extDataFile    = 0x44415441
	compressZlib   = 0
	compressZstd   = 1
	l1OffsetMask   = 0x00fffffffffffe00
	l2OffsetMask   = 0x00fffffffffffe00
	flagCopied     = uint64(1) << 63
	flagCompressed = uint64(1) << 62
	flagZero       = uint64(1) << 0
	refTableMask   = 0xfffffffffffffe00
)

// header is the decoded image header plus the extensions we understand.
type header struct {
	version          uint32
	backingOffset    uint64
	backingSize      uint32
	clusterBits      uint32
	size             uint64
	cryptMethod      uint32
	l1Size           uint32
	l1Offset         uint64
	refTableOffset   uint64
	refTableClusters uint32
	nbSnapshots      uint32
	snapshotsOffset  uint64
	incompatible     uint64
	compatible       uint64
	autoclear        uint64
	refcountOrder    uint32
	headerLength     uint32
	compressionType  uint8

	backingFile   string
	backingFormat string
	dataFile      string
	hasDataFile   bool
	featureNames  map[[2]byte]string // {type, bit} -> name
	unknownExts   []rawExt           // preserved verbatim when the header is rewritten
	hasBitmapsExt bool
	bitmaps       *bitmapExt // a valid bitmaps extension (autoclear bit set), or nil
}

type rawExt struct {
	typ  uint32
	data []byte
}

// parseHeader decodes the header and extensions from the first cluster of the file.
// buf holds at least the first min(cluster, file) bytes; fileSize bounds offsets.
func parseHeader(buf []byte, fileSize int64) (*header, error) {
	if len(buf) < v2HeaderLen {
		return nil, errors.New("image is too small to hold a qcow2 header")
	}
	if be.Uint32(buf) != magic {
		return nil, errors.New("Image is not in qcow2 format")
	}
	h := &header{
		version:          be.Uint32(buf[4:]),
		backingOffset:    be.Uint64(buf[8:]),
		backingSize:      be.Uint32(buf[16:]),
		clusterBits:      be.Uint32(buf[20:]),
		size:             be.Uint64(buf[24:]),
		cryptMethod:      be.Uint32(buf[32:]),
		l1Size:           be.Uint32(buf[36:]),
		l1Offset:         be.Uint64(buf[40:]),
		refTableOffset:   be.Uint64(buf[48:]),
		refTableClusters: be.Uint32(buf[56:]),
		nbSnapshots:      be.Uint32(buf[60:]),
		snapshotsOffset:  be.Uint64(buf[64:]),
	}
	if h.version < 2 || h.version > 3 {
		return nil, fmt.Errorf("Unsupported qcow2 version %d", h.version)
	}
	if h.clusterBits < minClusterBits || h.clusterBits > maxClusterBits {
		return nil, fmt.Errorf("Unsupported cluster size: 2^%d", h.clusterBits)
	}
	cs := uint64(1) << h.clusterBits
	h.refcountOrder = 4
	h.headerLength = v2HeaderLen
	if h.version == 3 {
		if len(buf) < v3HeaderLen {
			return nil, errors.New("qcow2 header exceeds cluster size")
		}
		h.incompatible = be.Uint64(buf[72:])
		h.compatible = be.Uint64(buf[80:])
		h.autoclear = be.Uint64(buf[88:])
		h.refcountOrder = be.Uint32(buf[96:])
		h.headerLength = be.Uint32(buf[100:])
		if h.headerLength < v3HeaderLen {
			return nil, errors.New("qcow2 header too short")
		}
		if uint64(h.headerLength) > cs || int(h.headerLength) > len(buf) {
			return nil, errors.New("qcow2 header exceeds cluster size")
		}
		if h.headerLength > v3HeaderLen {
			h.compressionType = buf[104]
		}
	}
	if h.refcountOrder > 6 {
		return nil, errors.New("Reference count entry width too large; may not exceed 64 bits")
	}
	if h.cryptMethod != 0 {
		return nil, errors.New("qcow2: encrypted images are not supported")
	}
	if unk := h.incompatible &^ incKnown; unk != 0 {
		return nil, fmt.Errorf("Unsupported qcow2 feature(s): incompatible feature bits 0x%x", unk)
	}
	switch h.compressionType {
	case compressZlib:
		if h.incompatible&incCompression != 0 {
			return nil, errors.New("qcow2: compression type incompatible bit set with zlib compression")
		}
	case compressZstd:
		if h.incompatible&incCompression == 0 {
			return nil, errors.New("qcow2: compression type incompatible bit is not set")
		}
	default:
		return nil, fmt.Errorf("qcow2: unknown compression type %d", h.compressionType)
	}
	if h.incompatible&incExtendedL2 != 0 && h.clusterBits < 14 {
		return nil, errors.New("qcow2: extended L2 entries need a cluster size of at least 16 KiB")
	}
	// Extensions run from the end of the header to the backing file name (or the end
	// of the first cluster).
	end := cs
	if h.backingOffset != 0 && h.backingOffset < end {
		end = h.backingOffset
	}
	if end > uint64(len(buf)) {
		end = uint64(len(buf))
	}
	off := uint64(h.headerLength)
	for off < end {
		if end-off < 8 {
			return nil, errors.New("qcow2: header extension truncated")
		}
		typ := be.Uint32(buf[off:])
		ln := uint64(be.Uint32(buf[off+4:]))
		off += 8
		if ln > end-off {
			return nil, errors.New("qcow2: header extension too large")
		}
		data := buf[off : off+ln]
		off += (ln + 7) &^ 7
		switch typ {
		case extEnd:
			off = end
		case extBackingFmt:
			if ln > 1023 {
				return nil, errors.New("qcow2: backing format name too long")
			}
			h.backingFormat = cstr(data)
		case extFeatures:
			h.featureNames = map[[2]byte]string{}
			for i := 0; i+48 <= len(data); i += 48 {
				h.featureNames[[2]byte{data[i], data[i+1]}] = cstr(data[i+2 : i+48])
			}
		case extDataFile:
			h.dataFile = cstr(data)
			h.hasDataFile = true
		case extCrypto:
			return nil, errors.New("qcow2: encrypted images are not supported")
		case extBitmaps:
			h.hasBitmapsExt = true
			if ln != 24 {
				return nil, errors.New("bitmaps_ext: Invalid extension length")
			}
			if h.autoclear&autoclearBitmap == 0 {
				// Written by a program without bitmap support: the bitmaps are stale
				// (QEMU ignores them; check reports their clusters as leaked).
				h.unknownExts = append(h.unknownExts, rawExt{typ, append([]byte(nil), data...)})
				break
			}
			e, err := parseBitmapsExt(data, cs)
			if err != nil {
				return nil, err
			}
			h.bitmaps = e
		default:
			h.unknownExts = append(h.unknownExts, rawExt{typ, append([]byte(nil), data...)})
		}
	}
	if h.backingOffset != 0 {
		if h.backingSize > maxBackingNameLen || h.backingSize == 0 {
			return nil, errors.New("qcow2: backing file name too long")
		}
		if h.backingOffset > cs || h.backingOffset+uint64(h.backingSize) > cs ||
			h.backingOffset+uint64(h.backingSize) > uint64(len(buf)) {
			return nil, errors.New("qcow2: backing file name is outside the first cluster")
		}
		h.backingFile = string(buf[h.backingOffset : h.backingOffset+uint64(h.backingSize)])
	}
	if h.incompatible&incDataFile != 0 && !h.hasDataFile {
		return nil, errors.New("qcow2: image needs an external data file but names none")
	}
	if h.incompatible&incDataFile == 0 && h.hasDataFile {
		return nil, errors.New("qcow2: data file name given without the external data file feature")
	}
	if h.autoclear&autoclearRaw != 0 && !h.hasDataFile {
		return nil, errors.New("qcow2: data_file_raw set without an external data file")
	}
	if err := h.checkTables(fileSize); err != nil {
		return nil, err
	}
	return h, nil
}

// checkTables validates the metadata offsets and sizes the way QEMU's qcow2_open does,
// before anything is allocated from them.
func (h *header) checkTables(fileSize int64) error {
	cs := uint64(1) << h.clusterBits
	if h.refTableClusters == 0 {
		return errors.New("Image does not contain a reference count table")
	}
	if uint64(h.refTableClusters)*cs > maxRefTableBytes {
		return errors.New("Reference count table too large")
	}
	// The L1 and refcount tables may lie (partly) past the end of the file, as in a
	// truncated image: QEMU opens those (the missing part reads as zeroes) and check
	// reports every reference past the end, so only alignment and overflow are refused.
	if err := checkOffset(h.refTableOffset, uint64(h.refTableClusters)*cs, cs, -1, "Reference count table"); err != nil {
		return err
	}
	if uint64(h.l1Size)*8 > maxL1Bytes {
		return errors.New("Active L1 table too large")
	}
	if h.l1Size > 0 {
		if err := checkOffset(h.l1Offset, uint64(h.l1Size)*8, cs, -1, "Active L1 table"); err != nil {
			return err
		}
	}
	// The L1 table must map the whole disk.
	l2Bits := h.clusterBits - 3
	if h.incompatible&incExtendedL2 != 0 {
		l2Bits--
	}
	shift := h.clusterBits + l2Bits
	if h.size > (uint64(1)<<62) || (h.size+(uint64(1)<<shift)-1)>>shift > uint64(h.l1Size) {
		return errors.New("L1 table is too small")
	}
	if h.nbSnapshots > maxSnapshots {
		return errors.New("Too many snapshots")
	}
	if h.nbSnapshots > 0 {
		if err := checkOffset(h.snapshotsOffset, uint64(h.nbSnapshots)*40, cs, -1, "Snapshot table"); err != nil {
			return err
		}
	}
	return nil
}

// checkOffset rejects a table that is misaligned, overflows or (with fileSize >= 0)
// lies past the end of the file.
func checkOffset(off, size, cs uint64, fileSize int64, what string) error {
	if off&(cs-1) != 0 {
		return fmt.Errorf("%s offset invalid", what)
	}
	if off > 1<<56 || size > 1<<56 || (fileSize >= 0 && off+size > uint64(fileSize)) {
		return fmt.Errorf("%s offset invalid", what)
	}
	return nil
}

func cstr(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// encodeHeader serialises h (and its extensions and backing name) into one cluster.
func (h *header) encode(cs int) ([]byte, error) {
	buf := make([]byte, cs)
	be.PutUint32(buf, magic)
	be.PutUint32(buf[4:], h.version)
	be.PutUint32(buf[20:], h.clusterBits)
	be.PutUint64(buf[24:], h.size)
	be.PutUint32(buf[32:], h.cryptMethod)
	be.PutUint32(buf[36:], h.l1Size)
	be.PutUint64(buf[40:], h.l1Offset)
	be.PutUint64(buf[48:], h.refTableOffset)
	be.PutUint32(buf[56:], h.refTableClusters)
	be.PutUint32(buf[60:], h.nbSnapshots)
	be.PutUint64(buf[64:], h.snapshotsOffset)
	off := v2HeaderLen
	if h.version == 3 {
		h.headerLength = v3HeaderLenFull
		be.PutUint64(buf[72:], h.incompatible)
		be.PutUint64(buf[80:], h.compatible)
		be.PutUint64(buf[88:], h.autoclear)
		be.PutUint32(buf[96:], h.refcountOrder)
		be.PutUint32(buf[100:], h.headerLength)
		buf[104] = h.compressionType
		off = int(h.headerLength)
	}
	put := func(typ uint32, data []byte) error {
		n := (len(data) + 7) &^ 7
		if off+8+n > cs {
			return errors.New("qcow2: header extensions do not fit in the first cluster")
		}
		be.PutUint32(buf[off:], typ)
		be.PutUint32(buf[off+4:], uint32(len(data)))
		copy(buf[off+8:], data)
		off += 8 + n
		return nil
	}
	if h.backingFormat != "" {
		if err := put(extBackingFmt, []byte(h.backingFormat)); err != nil {
			return nil, err
		}
	}
	if h.hasDataFile {
		if err := put(extDataFile, []byte(h.dataFile)); err != nil {
			return nil, err
		}
	}
	if h.version == 3 {
		if err := put(extFeatures, featureTable()); err != nil {
			return nil, err
		}
	}
	// A downgrade to v2 keeps the extension, as QEMU's does (v2 has no autoclear
	// bits, so readers then treat the bitmaps as stale).
	if h.bitmaps != nil && (h.autoclear&autoclearBitmap != 0 || h.version < 3) {
		if err := put(extBitmaps, h.bitmaps.encode()); err != nil {
			return nil, err
		}
	}
	for _, e := range h.unknownExts {
		if err := put(e.typ, e.data); err != nil {
			return nil, err
		}
	}
	if err := put(extEnd, nil); err != nil {
		return nil, err
	}
	h.backingOffset, h.backingSize = 0, 0
	if h.backingFile != "" {
		if len(h.backingFile) > maxBackingNameLen || off+len(h.backingFile) > cs {
			return nil, errors.New("qcow2: backing file name too long")
		}
		h.backingOffset = uint64(off)
		h.backingSize = uint32(len(h.backingFile))
		copy(buf[off:], h.backingFile)
	}
	be.PutUint64(buf[8:], h.backingOffset)
	be.PutUint32(buf[16:], h.backingSize)
	return buf, nil
}

// featureTable is the feature name table QEMU writes, so tools print names for bits.
func featureTable() []byte {
	names := []struct {
		typ, bit byte
		name     string
	}{
		{0, 0, "dirty bit"}, {0, 1, "corrupt bit"}, {0, 2, "external data file"},
		{0, 3, "compression type"}, {0, 4, "extended L2 entries"},
		{1, 0, "lazy refcounts"}, {2, 0, "bitmaps"}, {2, 1, "raw external data"},
	}
	b := make([]byte, 48*len(names))
	for i, n := range names {
		b[i*48] = n.typ
		b[i*48+1] = n.bit
		copy(b[i*48+2:i*48+48], n.name)
	}
	return b
}

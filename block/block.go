// Package block owns the block-driver interface shared by gemu-img and the emulator's
// virtual disks, the format registry and probing, the raw driver, and image-level
// operations built only on the interface (convert, compare, map, measure, dd, bench,
// commit, rebase).
// Format drivers (qcow2/, block/vmdk) implement Driver and register a Format.
// It also owns QEMU-compatible image locking (lock.go): every image file a driver opens
// goes through OpenImageFile, which takes the OFD byte locks QEMU's file-posix takes, so
// gemu and QEMU processes refuse each other as QEMU refuses itself.
//
// It must not know about the emulator, nor import any format driver (drivers register
// themselves from init; mains import them).
package block

import (
	"errors"
	"io"
)

// Status describes how a range of a virtual disk is backed, as qemu-img map reports it.
type Status struct {
	Offset int64 // guest offset of the range
	Length int64 // bytes; the driver may return less than asked, never zero unless at EOF
	// Data: the range is allocated with data at this layer or below (qemu-img map "data").
	Data bool
	// Zero: the range reads as zeroes (qemu-img map "zero").
	Zero bool
	// Allocated: this layer (Depth 0) or a backing layer holds it (qemu-img map "present").
	Allocated bool
	// Depth: 0 for this image, 1 for its backing file, and so on; for unallocated ranges
	// with no backing, the chain length (as qemu-img reports).
	Depth int
	// HostOffset: offset in the file named by HostFile where the data lives, or -1
	// (compressed clusters, zero ranges, holes).
	HostOffset int64
	HostFile   string
	Compressed bool
}

// ZeroFlags tune WriteZeroes.
type ZeroFlags int

const (
	// ZeroMayUnmap lets the driver deallocate instead of writing zeroes.
	ZeroMayUnmap ZeroFlags = 1 << iota
)

// Driver is one open image (one layer of a chain; a driver opens its own backing layers).
// All methods are safe for concurrent use unless noted; offsets are guest byte offsets.
type Driver interface {
	Format() string
	Filename() string
	// Size is the virtual disk size in bytes.
	Size() int64
	io.ReaderAt
	io.WriterAt
	WriteZeroes(off, n int64, flags ZeroFlags) error
	Discard(off, n int64) error
	Flush() error
	// BlockStatus describes the range starting at off, at most n bytes long.
	BlockStatus(off, n int64) (Status, error)
	Resize(size int64, opts ResizeOptions) error
	Close() error
}

// ResizeOptions tune Driver.Resize.
type ResizeOptions struct {
	Shrink        bool
	Preallocation string // "", off, metadata, falloc, full
}

// Optional interfaces a Driver may implement.

// Infoer returns format-specific data for `info`.
type Infoer interface {
	Info() (*ImageInfo, error)
}

// Backed is a driver with a backing file.
type Backed interface {
	Backing() Driver // nil if none
}

// ActualSizer reports host bytes used (qemu-img info "actual-size").
type ActualSizer interface {
	ActualSize() (int64, error)
}

// ImageInfo is the format-specific part of `info`, in qemu-img's JSON field order and names.
// Fields a format lacks stay at zero values and are omitted by the JSON writer.
type ImageInfo struct {
	ClusterSize           int64
	DirtyFlag             bool
	HasDirtyFlag          bool
	BackingFilename       string
	FullBackingFilename   string
	BackingFilenameFormat string
	Snapshots             []SnapshotInfo
	FormatSpecific        map[string]any // {"type": ..., "data": {...}}, marshalled as is
	Encrypted             bool
}

// SnapshotInfo is one internal snapshot as qemu-img info lists it.
type SnapshotInfo struct {
	ID          string
	Name        string
	VMStateSize int64
	DateSec     int64
	DateNsec    int64
	VMClockNsec int64
	ICount      int64 // -1 when absent
}

// OpenOptions tune Open.
type OpenOptions struct {
	ReadOnly bool
	// Format forces the format; "" probes. A named format is never overridden by probing.
	Format string
	// NoBacking opens the image without its backing chain (qemu-img -u operations, info).
	NoBacking bool
	// BackingFormat, if set, overrides the format recorded for the backing file.
	BackingFormat string
	// Depth counts the layers opened above this one, so loops and absurd chains fail.
	Depth int
	// NoLock opens without taking or checking image locks (QEMU's file.locking=off).
	NoLock bool
	// ForceShare (qemu-img -U) lets others use every permission: the open takes no
	// "shared" locks and checks only that nobody refuses it reading. Read-only opens only.
	ForceShare bool
	// Unshare lists permissions the users of this image refuse to other processes on top
	// of what the format itself refuses (QEMU's device-level shared permissions): 0 for
	// qemu-img-like tools, PermWrite for a guest disk (QEMU's devices without share-rw).
	Unshare Perm
	// Direct opens the image's files with O_DIRECT (cache=none / directsync).
	Direct bool
}

// MaxChainDepth bounds backing-chain length.
const MaxChainDepth = 256

// CreateOptions are the parsed -o options plus -b/-F for Create.
type CreateOptions struct {
	Size          int64
	Options       map[string]string // raw key=value pairs, validated by the format
	Backing       string
	BackingFormat string
}

// Format is a registered image format.
type Format interface {
	Name() string
	// Probe scores how likely buf (the first bytes of the file, at least 512 unless the file
	// is shorter) is this format: 0 no, 100 certain. Raw scores 1.
	Probe(buf []byte, filename string) int
	Open(filename string, opts OpenOptions) (Driver, error)
	Create(filename string, opts CreateOptions) error
}

// ErrReadOnly is returned by writes to an image opened read-only.
var ErrReadOnly = errors.New("image is read-only")

// ErrUnsupported is returned for operations a format does not implement.
var ErrUnsupported = errors.New("operation not supported by this format")

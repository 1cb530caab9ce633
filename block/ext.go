package block

import (
	"fmt"
	"sort"
	"sync"
)

// Optional capabilities of a Driver, used by gemu-img subcommands. A driver implements
// only what its format supports; callers type-assert.

// CheckResult is `qemu-img check` output, in its JSON field names.
type CheckResult struct {
	Filename           string `json:"filename"`
	Format             string `json:"format"`
	CheckErrors        int64  `json:"check-errors"`
	ImageEndOffset     int64  `json:"image-end-offset,omitempty"`
	TotalClusters      int64  `json:"total-clusters,omitempty"`
	AllocatedClusters  int64  `json:"allocated-clusters,omitempty"`
	FragmentedClusters int64  `json:"fragmented-clusters,omitempty"`
	CompressedClusters int64  `json:"compressed-clusters,omitempty"`
	Corruptions        int64  `json:"corruptions,omitempty"`
	Leaks              int64  `json:"leaks,omitempty"`
	CorruptionsFixed   int64  `json:"corruptions-fixed,omitempty"`
	LeaksFixed         int64  `json:"leaks-fixed,omitempty"`
	// Messages are the human-readable lines qemu-img prints before its summary
	// ("Leaked cluster 5 refcount=1 reference=0", "ERROR cluster ...").
	Messages []string `json:"-"`
}

// RepairMode is check -r.
type RepairMode int

const (
	RepairNone RepairMode = iota
	RepairLeaks
	RepairAll
)

// Checker verifies (and optionally repairs) image metadata.
type Checker interface {
	Check(mode RepairMode) (*CheckResult, error)
}

// Snapshotter manages internal snapshots (qemu-img snapshot).
type Snapshotter interface {
	Snapshots() ([]SnapshotInfo, error)
	CreateSnapshot(name string) error
	ApplySnapshot(name string) error // by name or id
	DeleteSnapshot(name string) error
}

// Amender changes format options in place (qemu-img amend -o).
type Amender interface {
	Amend(options map[string]string) error
}

// BackingSetter rewrites the backing-file reference without touching data (rebase -u,
// and the last step of a safe rebase or a commit -b).
type BackingSetter interface {
	SetBacking(filename, format string) error
}

// ClusterCompressor lets the convert pipeline compress clusters on every core and
// write them in order. CompressCluster must be safe to call concurrently and return a
// deterministic result; WriteCompressed is called from one goroutine in offset order.
// A nil result from CompressCluster means "store uncompressed" (the data did not shrink).
type ClusterCompressor interface {
	CompressionUnit() int64 // cluster or grain size in bytes
	CompressCluster(p []byte) ([]byte, error)
	WriteCompressed(off int64, compressed []byte, raw []byte) error
}

// CompressedCluster is one cluster for CompressedBatcher: Compressed as from
// CompressCluster (nil: store Raw uncompressed), Raw the cluster's bytes.
type CompressedCluster struct {
	Off        int64
	Compressed []byte
	Raw        []byte
}

// CompressedBatcher is an optional ClusterCompressor extension: the convert writer
// hands it a run of clusters in offset order (one chunk's worth) instead of one call
// per cluster, so a driver can send host-contiguous clusters in one write. The result
// must be what WriteCompressed on each cluster in turn would give; the slices are only
// valid during the call.
type CompressedBatcher interface {
	WriteCompressedBatch(clusters []CompressedCluster) error
}

// Measurer computes `qemu-img measure` figures for a format.
type Measurer interface {
	// Measure returns the bytes required for an image of virtual size size holding the
	// allocated ranges of src (nil: an empty image), and the bytes when fully allocated.
	Measure(size int64, opts map[string]string, src Driver) (required, fullyAllocated int64, err error)
}

var (
	regMu   sync.RWMutex
	formats = map[string]Format{}
)

// Register adds a format; drivers call it from init.
func Register(f Format) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := formats[f.Name()]; dup {
		panic("block: format registered twice: " + f.Name())
	}
	formats[f.Name()] = f
}

// Lookup returns the named format.
func Lookup(name string) (Format, error) {
	regMu.RLock()
	defer regMu.RUnlock()
	if f, ok := formats[name]; ok {
		return f, nil
	}
	return nil, fmt.Errorf("Unknown file format '%s'", name)
}

// Formats lists registered format names, sorted.
func Formats() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	var n []string
	for k := range formats {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Emptier drops every cluster of this layer so reads fall through to the backing file
// (qemu's bdrv_make_empty), used by commit after the data reached the base. It must be
// safe against a crash at any point: each range either keeps this layer's data or
// falls through to a backing file that already holds the same bytes. Without it,
// Commit replaces the layer's file by a fresh image with the same options (refused
// for layers with internal snapshots, data files or encryption).
type Emptier interface {
	MakeEmpty() error
}

// UnsafeCacher lets a caller give up durability for speed as qemu-img's cache=unsafe
// (convert's default) does: Flush and Close skip fdatasync. Write ordering inside the
// image is unchanged; only survival of a host crash or power loss is given up.
type UnsafeCacher interface {
	SetUnsafe(unsafe bool)
}

// Package qed owns the read-only QED image format driver: the header (cluster and
// table sizes, features), the L1 and L2 tables (zero clusters included), and the
// backing file (its format recorded or probed, or raw with the no-probe feature).
// Every table offset is checked to be cluster aligned and inside the file before use;
// L2 tables shared between L1 entries (or aliasing the L1) read consistently and are
// reported by check. Writes are refused with block.ErrReadOnly and create with a
// one-line error: gemu reads QED, it does not make it.
//
// It registers the "qed" format with package block from init and implements
// block.Driver with the optional Infoer, ActualSizer, Backed and Checker. It must not
// touch the block layer's registry beyond Register, nor any other format.
package qed

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"gemu/block"
	"gemu/block/internal/imgfile"
)

func init() { block.Register(Format{}) }

const (
	magic           = 0x00444551 // "QED\0"
	featBacking     = 1
	featNeedCheck   = 2
	featNoProbe     = 4
	knownFeatures   = featBacking | featNeedCheck | featNoProbe
	minCluster      = 4 << 10
	maxCluster      = 64 << 20
	maxTableSize    = 16
	clusterZero     = 1
	maxBackingName  = 1023
	maxCachedTables = 64
)

var le = binary.LittleEndian

// Header is the QED header.
type Header struct {
	Magic             uint32
	ClusterSize       uint32
	TableSize         uint32
	HeaderSize        uint32
	Features          uint64
	CompatFeatures    uint64
	AutoclearFeatures uint64
	L1Offset          uint64
	ImageSize         uint64
	BackingNameOffset uint32
	BackingNameSize   uint32
}

// Format is the registered "qed" format.
type Format struct{}

func (Format) Name() string { return "qed" }

// Probe: "QED\0" (bdrv_qed_probe).
func (Format) Probe(b []byte, _ string) int {
	if len(b) >= 4 && le.Uint32(b) == magic {
		return 100
	}
	return 0
}

// OptionsHelp is qemu-img's `create -f qed -o help` text.
func (Format) OptionsHelp() string {
	return `Supported options:
  backing_file=<str>     - File name of a base image
  backing_fmt=<str>      - Image format of the base image
  cluster_size=<size>    - Cluster size (in bytes)
  extent_size_hint=<size> - Extent size hint for the image file, 0 to disable
  nocow=<bool (on/off)>  - Turn off copy-on-write (valid only on btrfs)
  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)
  size=<size>            - Virtual disk size
  table_size=<size>      - L1/L2 table size (in clusters)
`
}

func (Format) Create(string, block.CreateOptions) error {
	return errors.New("Creating qed images is not supported by gemu-img (qed is read-only in gemu)")
}

// Image is one open QED image.
type Image struct {
	imgfile.ReadOnly
	name     string
	f        *os.File
	h        Header
	fsize    int64
	size     int64
	cluster  int64
	tableLen int64 // bytes per table
	entries  int64 // entries per table
	l1       []uint64
	backing  block.Driver
	backName string
	backFull string
	backFmt  string

	mu    sync.Mutex
	cache map[int64][]uint64
	order []int64
}

// Open opens a QED image, read-only whatever opts says.
func (Format) Open(filename string, opts block.OpenOptions) (block.Driver, error) {
	// Read-only in gemu whatever the caller asked: writes fail with block.ErrReadOnly.
	opts.ReadOnly = true
	f, fsize, err := imgfile.Open(filename, opts)
	if err != nil {
		return nil, err
	}
	m := &Image{name: filename, f: f, fsize: fsize, cache: map[int64][]uint64{}}
	if err := m.open(opts); err != nil {
		m.Close()
		return nil, fmt.Errorf("Could not open '%s': %v", filename, err)
	}
	return m, nil
}

func isPow2(v uint64) bool { return v != 0 && v&(v-1) == 0 }

func (m *Image) open(opts block.OpenOptions) error {
	b := make([]byte, 64)
	if err := imgfile.ReadAt(m.f, b, 0, "header"); err != nil {
		return err
	}
	binary.Decode(b, le, &m.h)
	h := &m.h
	if h.Magic != magic {
		return errors.New("Image not in QED format")
	}
	if h.Features&^knownFeatures != 0 {
		return fmt.Errorf("Unsupported QED features: %#x", h.Features&^knownFeatures)
	}
	if !isPow2(uint64(h.ClusterSize)) || h.ClusterSize < minCluster || h.ClusterSize > maxCluster {
		return fmt.Errorf("QED cluster size %d is invalid (a power of two from 4 KiB to 64 MiB)", h.ClusterSize)
	}
	if !isPow2(uint64(h.TableSize)) || h.TableSize > maxTableSize {
		return fmt.Errorf("QED table size %d is invalid (a power of two up to 16)", h.TableSize)
	}
	m.cluster = int64(h.ClusterSize)
	m.tableLen = int64(h.TableSize) * m.cluster
	m.entries = m.tableLen / 8
	if h.HeaderSize == 0 || uint64(h.HeaderSize)*uint64(h.ClusterSize) > 1<<30 {
		return fmt.Errorf("QED header size of %d clusters is invalid", h.HeaderSize)
	}
	if h.ImageSize%512 != 0 {
		return errors.New("QED image size is not a multiple of 512")
	}
	maxImage := uint64(m.cluster) * uint64(m.entries) * uint64(m.entries)
	if h.ImageSize > maxImage || h.ImageSize > 1<<62 {
		return fmt.Errorf("QED image size %d is larger than its tables can map (%d)", h.ImageSize, maxImage)
	}
	m.size = int64(h.ImageSize)
	if err := m.checkTable(h.L1Offset, "L1 table"); err != nil {
		return err
	}
	if h.Features&featBacking != 0 {
		if err := m.openBacking(opts); err != nil {
			return err
		}
	}
	raw := make([]byte, m.tableLen)
	if err := imgfile.ReadAt(m.f, raw, int64(h.L1Offset), "L1 table"); err != nil {
		return err
	}
	m.l1 = make([]uint64, m.entries)
	for i := range m.l1 {
		m.l1[i] = le.Uint64(raw[i*8:])
	}
	return nil
}

// checkTable: a table offset must be cluster aligned, past the header and wholly
// inside the file (qed_check_table_offset).
func (m *Image) checkTable(off uint64, what string) error {
	hdrEnd := uint64(m.h.HeaderSize) * uint64(m.cluster)
	if off%uint64(m.cluster) != 0 || off < hdrEnd || off > uint64(m.fsize) || int64(off)+m.tableLen > m.fsize {
		return fmt.Errorf("QED %s offset %d is invalid (unaligned, inside the header or past the end of the file)", what, off)
	}
	return nil
}

func (m *Image) openBacking(opts block.OpenOptions) error {
	h := &m.h
	if h.BackingNameSize == 0 || h.BackingNameSize > maxBackingName ||
		uint64(h.BackingNameOffset)+uint64(h.BackingNameSize) > uint64(h.HeaderSize)*uint64(m.cluster) {
		return errors.New("QED backing file name lies outside the header")
	}
	nb := make([]byte, h.BackingNameSize)
	if err := imgfile.ReadAt(m.f, nb, int64(h.BackingNameOffset), "backing file name"); err != nil {
		return err
	}
	m.backName = string(nb)
	full, err := block.ResolveBacking(m.name, m.backName)
	if err != nil {
		return err
	}
	m.backFull = full
	if h.Features&featNoProbe != 0 {
		m.backFmt = "raw"
	}
	if opts.NoBacking {
		return nil
	}
	bf := m.backFmt
	if opts.BackingFormat != "" {
		bf = opts.BackingFormat
	}
	if opts.Depth+1 >= block.MaxChainDepth {
		return fmt.Errorf("Backing chain of '%s' is too deep", m.name)
	}
	d, err := block.Open(full, opts.BackingOptions(bf))
	if err != nil {
		if strings.Contains(err.Error(), "too deep") {
			return err
		}
		return fmt.Errorf("Could not open backing file: %v", err)
	}
	m.backing = d
	return nil
}

func (m *Image) Format() string   { return "qed" }
func (m *Image) Filename() string { return m.name }
func (m *Image) Size() int64      { return m.size }

// Backing returns the backing layer, if opened.
func (m *Image) Backing() block.Driver { return m.backing }

// l2 returns the L2 table at off (validated), from a small cache.
func (m *Image) l2(off uint64) ([]uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.cache[int64(off)]; ok {
		return t, nil
	}
	if err := m.checkTable(off, "L2 table"); err != nil {
		return nil, err
	}
	raw := make([]byte, m.tableLen)
	if err := imgfile.ReadAt(m.f, raw, int64(off), "L2 table"); err != nil {
		return nil, err
	}
	t := make([]uint64, m.entries)
	for i := range t {
		t[i] = le.Uint64(raw[i*8:])
	}
	if len(m.order) >= maxCachedTables {
		delete(m.cache, m.order[0])
		m.order = m.order[1:]
	}
	m.cache[int64(off)] = t
	m.order = append(m.order, int64(off))
	return t, nil
}

// lookup returns the L2 entry of the cluster at guest offset off: 0 unallocated,
// 1 zero, else the (validated) file offset.
func (m *Image) lookup(off int64) (uint64, error) {
	c := off / m.cluster
	l1i, l2i := c/m.entries, c%m.entries
	if l1i >= int64(len(m.l1)) {
		return 0, fmt.Errorf("qed: offset %d outside the L1 table", off)
	}
	l2off := m.l1[l1i]
	if l2off == 0 {
		return 0, nil
	}
	t, err := m.l2(l2off)
	if err != nil {
		return 0, err
	}
	e := t[l2i]
	if e > clusterZero && (e%uint64(m.cluster) != 0 || e < uint64(m.h.HeaderSize)*uint64(m.cluster) || e >= uint64(m.fsize)) {
		return 0, fmt.Errorf("qed: cluster offset %d is invalid (unaligned, inside the header or past the end of the file)", e)
	}
	return e, nil
}

func (m *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > m.size {
		return 0, fmt.Errorf("qed: read at %d outside the disk", off)
	}
	n := min(int64(len(p)), m.size-off)
	for done := int64(0); done < n; {
		cur := off + done
		k := min(n-done, m.cluster-cur%m.cluster)
		q := p[done : done+k]
		e, err := m.lookup(cur)
		if err != nil {
			return int(done), err
		}
		switch {
		case e == clusterZero:
			clear(q)
		case e == 0:
			if err := imgfile.ReadBacking(m.backing, q, cur); err != nil {
				return int(done), err
			}
		default:
			if err := imgfile.ReadZeroPast(m.f, q, int64(e)+cur%m.cluster); err != nil {
				return int(done), err
			}
		}
		done += k
	}
	if n < int64(len(p)) {
		return int(n), errors.New("qed: read past the end of the disk")
	}
	return int(n), nil
}

// BlockStatus as QEMU's qed: data clusters at their offset, zero clusters, and for
// unallocated ones the backing file's status one level down.
func (m *Image) BlockStatus(off, n int64) (block.Status, error) {
	if off < 0 || off >= m.size {
		return block.Status{Offset: off, HostOffset: -1}, nil
	}
	n = min(n, m.size-off)
	kind := func(e uint64) int {
		switch e {
		case 0:
			return 0
		case clusterZero:
			return 1
		}
		return 2
	}
	e, err := m.lookup(off)
	if err != nil {
		return block.Status{}, err
	}
	length := min(n, m.cluster-off%m.cluster)
	for length < n {
		e2, err := m.lookup(off + length)
		if err != nil || kind(e2) != kind(e) || (kind(e) == 2 && e2 != e+uint64(off%m.cluster+length)) {
			break
		}
		length = min(n, length+m.cluster)
	}
	st := block.Status{Offset: off, Length: length, HostOffset: -1}
	switch kind(e) {
	case 1:
		st.Zero, st.Allocated = true, true
	case 2:
		st.Data, st.Allocated = true, true
		st.HostOffset, st.HostFile = int64(e)+off%m.cluster, m.name
	default:
		if m.backing == nil || off >= m.backing.Size() {
			st.Zero = true
			return st, nil
		}
		bs, err := m.backing.BlockStatus(off, min(length, m.backing.Size()-off))
		if err != nil {
			return block.Status{}, err
		}
		bs.Depth++
		return bs, nil
	}
	return st, nil
}

func (m *Image) Close() error {
	if m.backing != nil {
		m.backing.Close()
		m.backing = nil
	}
	if m.f == nil {
		return nil
	}
	err := m.f.Close()
	m.f = nil
	return err
}

// Info: cluster size and the backing file as qemu-img info shows them.
func (m *Image) Info() (*block.ImageInfo, error) {
	in := &block.ImageInfo{ClusterSize: m.cluster, HasDirtyFlag: true, DirtyFlag: m.h.Features&featNeedCheck != 0}
	if m.backName != "" {
		in.BackingFilename, in.FullBackingFilename, in.BackingFilenameFormat = m.backName, m.backFull, m.backFmt
	}
	return in, nil
}

func (m *Image) ActualSize() (int64, error) { return block.FileSize(m.name) }

// Check is qemu-img check for qed (qed_check): every table and cluster offset valid,
// no cluster referenced twice, clusters of the file nothing references counted as
// leaks; total, allocated and fragmented cluster counts as qemu-img reports them. No
// repairs: the image is read-only.
func (m *Image) Check(mode block.RepairMode) (*block.CheckResult, error) {
	r, err := m.check()
	if err == nil && mode != block.RepairNone && (r.Corruptions > 0 || r.Leaks > 0) {
		return nil, errors.New("qed images are read-only in gemu: cannot repair")
	}
	return r, err
}

func (m *Image) check() (*block.CheckResult, error) {
	r := &block.CheckResult{Filename: m.name, Format: "qed"}
	r.TotalClusters = (m.size + m.cluster - 1) / m.cluster
	nclusters := (m.fsize + m.cluster - 1) / m.cluster
	used := make(map[int64]bool)
	mark := func(off uint64, n int64) bool {
		ok := true
		for c := int64(off) / m.cluster; c < (int64(off)+n+m.cluster-1)/m.cluster; c++ {
			if used[c] {
				ok = false
			}
			used[c] = true
		}
		return ok
	}
	mark(0, int64(m.h.HeaderSize)*m.cluster)
	mark(m.h.L1Offset, m.tableLen)
	for i, l2off := range m.l1 {
		if l2off == 0 {
			continue
		}
		if err := m.checkTable(l2off, "L2 table"); err != nil {
			r.Messages = append(r.Messages, fmt.Sprintf("ERROR: L1 entry %d: %v", i, err))
			r.Corruptions++
			continue
		}
		if !mark(l2off, m.tableLen) {
			r.Messages = append(r.Messages, fmt.Sprintf("ERROR: L2 table at %d is referenced more than once", l2off))
			r.Corruptions++
			continue
		}
		t, err := m.l2(l2off)
		if err != nil {
			return nil, err
		}
		var last uint64
		for _, e := range t {
			if e <= clusterZero {
				continue
			}
			r.AllocatedClusters++
			if last != 0 && last+uint64(m.cluster) != e {
				r.FragmentedClusters++
			}
			last = e
			if e%uint64(m.cluster) != 0 || e >= uint64(m.fsize) || e < uint64(m.h.HeaderSize)*uint64(m.cluster) {
				r.Messages = append(r.Messages, fmt.Sprintf("ERROR: invalid cluster offset %d", e))
				r.Corruptions++
				continue
			}
			if !mark(e, m.cluster) {
				r.Messages = append(r.Messages, fmt.Sprintf("ERROR: cluster at %d is referenced more than once", e))
				r.Corruptions++
			}
		}
	}
	for c := int64(0); c < nclusters; c++ {
		if !used[c] {
			r.Messages = append(r.Messages, fmt.Sprintf("Leaked cluster %d", c))
			r.Leaks++
		}
	}
	return r, nil
}

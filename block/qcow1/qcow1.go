// Package qcow1 owns the read-only driver for version 1 qcow images ("QFI\xfb",
// version 1): the header, the L1 and L2 tables, compressed clusters (raw deflate) and
// the backing file. Every table and cluster offset is checked against the file before
// use. Encrypted images are refused. Writes are refused with block.ErrReadOnly and
// create with a one-line error.
//
// It registers the "qcow" format with package block from init and implements
// block.Driver with the optional Infoer, ActualSizer and Backed. It must not touch
// the block layer's registry beyond Register, nor any other format (qcow2/ owns
// versions 2 and 3).
package qcow1

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"gemu/block"
	"gemu/block/internal/imgfile"
)

func init() { block.Register(Format{}) }

const (
	magic          = 0x514649fb
	headerLen      = 48
	oflagCompress  = 1 << 63
	maxBackingName = 1023
	maxL1Bytes     = 32 << 20
	maxCachedL2    = 64
)

var be = binary.BigEndian

// Header is the qcow version 1 header.
type Header struct {
	Magic         uint32
	Version       uint32
	BackingOffset uint64
	BackingSize   uint32
	Mtime         uint32
	Size          uint64
	ClusterBits   uint8
	L2Bits        uint8
	Padding       uint16
	CryptMethod   uint32
	L1Offset      uint64
}

// Format is the registered "qcow" format.
type Format struct{}

func (Format) Name() string { return "qcow" }

// Probe: magic and version 1 (qcow_probe).
func (Format) Probe(b []byte, _ string) int {
	if len(b) >= 8 && be.Uint32(b) == magic && be.Uint32(b[4:]) == 1 {
		return 100
	}
	return 0
}

// OptionsHelp is qemu-img's `create -f qcow -o help` text.
func (Format) OptionsHelp() string {
	return `Supported options:
  backing_file=<str>     - File name of a base image
  backing_fmt=<str>      - Format of the backing image
  encrypt.format=<str>   - Encrypt the image, format choices: 'aes'
  encrypt.key-secret=<str> - ID of the secret that provides the AES encryption key
  encryption=<bool (on/off)> - Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)
  extent_size_hint=<size> - Extent size hint for the image file, 0 to disable
  nocow=<bool (on/off)>  - Turn off copy-on-write (valid only on btrfs)
  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)
  size=<size>            - Virtual disk size
`
}

func (Format) Create(string, block.CreateOptions) error {
	return errors.New("Creating qcow (version 1) images is not supported by gemu-img (qcow is read-only in gemu; use qcow2)")
}

// Image is one open qcow image.
type Image struct {
	imgfile.ReadOnly
	name     string
	f        *os.File
	h        Header
	fsize    int64
	cluster  int64
	l2Len    int64 // entries per L2 table
	l1       []uint64
	backing  block.Driver
	backName string
	backFull string

	mu    sync.Mutex
	cache map[uint64][]uint64
	order []uint64
}

// Open opens a qcow image, read-only whatever opts says.
func (Format) Open(filename string, opts block.OpenOptions) (block.Driver, error) {
	opts.ReadOnly = true
	f, fsize, err := imgfile.Open(filename, opts)
	if err != nil {
		return nil, err
	}
	m := &Image{name: filename, f: f, fsize: fsize, cache: map[uint64][]uint64{}}
	if err := m.open(opts); err != nil {
		m.Close()
		return nil, fmt.Errorf("Could not open '%s': %v", filename, err)
	}
	return m, nil
}

func (m *Image) open(opts block.OpenOptions) error {
	b := make([]byte, headerLen)
	if err := imgfile.ReadAt(m.f, b, 0, "header"); err != nil {
		return err
	}
	binary.Decode(b, be, &m.h)
	h := &m.h
	if h.Magic != magic {
		return errors.New("Image not in qcow format")
	}
	if h.Version != 1 {
		return fmt.Errorf("qcow (v%d) does not support qcow version %d", 1, h.Version)
	}
	if h.Size <= 1 {
		return errors.New("Image size is too small (must be at least 2 bytes)")
	}
	if h.ClusterBits < 9 || h.ClusterBits > 16 {
		return errors.New("Cluster size must be between 512 and 64k")
	}
	if h.L2Bits < 9-3 || h.L2Bits > 16-3 {
		return errors.New("L2 table size must be between 512 and 64k")
	}
	if h.CryptMethod > 1 {
		return errors.New("invalid encryption method in qcow header")
	}
	if h.CryptMethod == 1 {
		return errors.New("qcow: AES-encrypted images are not supported")
	}
	m.cluster = 1 << h.ClusterBits
	m.l2Len = 1 << h.L2Bits
	shift := uint(h.ClusterBits) + uint(h.L2Bits)
	if h.Size > 1<<62 {
		return errors.New("Image too large")
	}
	l1n := (h.Size + 1<<shift - 1) >> shift
	if l1n*8 > maxL1Bytes {
		return errors.New("Image too large")
	}
	if h.L1Offset > uint64(m.fsize) || int64(h.L1Offset)+int64(l1n)*8 > m.fsize {
		return fmt.Errorf("qcow: L1 table (%d entries at %d) lies past the end of the file", l1n, h.L1Offset)
	}
	raw := make([]byte, l1n*8)
	if err := imgfile.ReadAt(m.f, raw, int64(h.L1Offset), "L1 table"); err != nil {
		return err
	}
	m.l1 = make([]uint64, l1n)
	for i := range m.l1 {
		m.l1[i] = be.Uint64(raw[i*8:])
	}
	if h.BackingOffset != 0 {
		if h.BackingSize == 0 || h.BackingSize > maxBackingName || h.BackingOffset > uint64(m.fsize) {
			return errors.New("qcow: backing file name is too long or lies past the end of the file")
		}
		nb := make([]byte, h.BackingSize)
		if err := imgfile.ReadAt(m.f, nb, int64(h.BackingOffset), "backing file name"); err != nil {
			return err
		}
		m.backName = string(nb)
		full, err := block.ResolveBacking(m.name, m.backName)
		if err != nil {
			return err
		}
		m.backFull = full
		if !opts.NoBacking {
			if opts.Depth+1 >= block.MaxChainDepth {
				return fmt.Errorf("Backing chain of '%s' is too deep", m.name)
			}
			d, err := block.Open(full, opts.BackingOptions(opts.BackingFormat))
			if err != nil {
				if strings.Contains(err.Error(), "too deep") {
					return err
				}
				return fmt.Errorf("Could not open backing file: %v", err)
			}
			m.backing = d
		}
	}
	return nil
}

func (m *Image) Format() string        { return "qcow" }
func (m *Image) Filename() string      { return m.name }
func (m *Image) Size() int64           { return int64(m.h.Size) }
func (m *Image) Backing() block.Driver { return m.backing }

func (m *Image) l2(off uint64) ([]uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.cache[off]; ok {
		return t, nil
	}
	if off > uint64(m.fsize) || int64(off)+m.l2Len*8 > m.fsize {
		return nil, fmt.Errorf("qcow: L2 table at %d lies past the end of the file", off)
	}
	raw := make([]byte, m.l2Len*8)
	if err := imgfile.ReadAt(m.f, raw, int64(off), "L2 table"); err != nil {
		return nil, err
	}
	t := make([]uint64, m.l2Len)
	for i := range t {
		t[i] = be.Uint64(raw[i*8:])
	}
	if len(m.order) >= maxCachedL2 {
		delete(m.cache, m.order[0])
		m.order = m.order[1:]
	}
	m.cache[off] = t
	m.order = append(m.order, off)
	return t, nil
}

// lookup returns the L2 entry for guest offset off (0: unallocated).
func (m *Image) lookup(off int64) (uint64, error) {
	c := off >> m.h.ClusterBits
	l1i, l2i := c>>m.h.L2Bits, c&(m.l2Len-1)
	if l1i >= int64(len(m.l1)) {
		return 0, fmt.Errorf("qcow: offset %d outside the L1 table", off)
	}
	if m.l1[l1i] == 0 {
		return 0, nil
	}
	t, err := m.l2(m.l1[l1i])
	if err != nil {
		return 0, err
	}
	return t[l2i], nil
}

// compressed splits a compressed entry into file offset and stored size.
func (m *Image) compressed(e uint64) (int64, int64) {
	cb := uint(m.h.ClusterBits)
	size := int64((e >> (63 - cb)) & uint64(m.cluster-1))
	return int64(e & (1<<(63-cb) - 1)), size
}

func (m *Image) readCompressed(e uint64, q []byte, in int64) error {
	off, n := m.compressed(e)
	if off < 0 || off > m.fsize || n <= 0 {
		return fmt.Errorf("qcow: compressed cluster at %d lies past the end of the file", off)
	}
	n = min(n, m.fsize-off)
	buf := make([]byte, n)
	if err := imgfile.ReadAt(m.f, buf, off, "compressed cluster"); err != nil {
		return err
	}
	out := make([]byte, m.cluster)
	r := flate.NewReader(bytes.NewReader(buf))
	k, err := io.ReadFull(r, out)
	if err != nil && k != len(out) {
		return fmt.Errorf("qcow: compressed cluster at %d does not decompress to a cluster", off)
	}
	copy(q, out[in:])
	return nil
}

func (m *Image) ReadAt(p []byte, off int64) (int, error) {
	size := m.Size()
	if off < 0 || off > size {
		return 0, fmt.Errorf("qcow: read at %d outside the disk", off)
	}
	n := min(int64(len(p)), size-off)
	for done := int64(0); done < n; {
		cur := off + done
		in := cur & (m.cluster - 1)
		k := min(n-done, m.cluster-in)
		q := p[done : done+k]
		e, err := m.lookup(cur)
		if err != nil {
			return int(done), err
		}
		switch {
		case e == 0:
			if err := imgfile.ReadBacking(m.backing, q, cur); err != nil {
				return int(done), err
			}
		case e&oflagCompress != 0:
			if err := m.readCompressed(e, q, in); err != nil {
				return int(done), err
			}
		default:
			if e > uint64(m.fsize) {
				return int(done), fmt.Errorf("qcow: cluster at %d lies past the end of the file", e)
			}
			if err := imgfile.ReadZeroPast(m.f, q, int64(e)+in); err != nil {
				return int(done), err
			}
		}
		done += k
	}
	if n < int64(len(p)) {
		return int(n), errors.New("qcow: read past the end of the disk")
	}
	return int(n), nil
}

// BlockStatus as QEMU's qcow: data clusters at their offset, compressed clusters as
// data without one, unallocated ones from the backing file one level down.
func (m *Image) BlockStatus(off, n int64) (block.Status, error) {
	size := m.Size()
	if off < 0 || off >= size {
		return block.Status{Offset: off, HostOffset: -1}, nil
	}
	n = min(n, size-off)
	in := off & (m.cluster - 1)
	e, err := m.lookup(off)
	if err != nil {
		return block.Status{}, err
	}
	length := min(n, m.cluster-in)
	for length < n {
		e2, err := m.lookup(off + length)
		if err != nil || (e == 0) != (e2 == 0) || (e != 0 && (e&oflagCompress != 0 || e2 != e+uint64(in+length))) {
			break
		}
		length = min(n, length+m.cluster)
	}
	st := block.Status{Offset: off, Length: length, HostOffset: -1}
	switch {
	case e == 0:
		if m.backing == nil || off >= m.backing.Size() {
			st.Zero = true
			if m.backing != nil {
				st.Depth = 1
			}
			return st, nil
		}
		bs, err := m.backing.BlockStatus(off, min(length, m.backing.Size()-off))
		if err != nil {
			return block.Status{}, err
		}
		bs.Depth++
		return bs, nil
	case e&oflagCompress != 0:
		st.Data, st.Allocated, st.Compressed = true, true, true
	default:
		st.Data, st.Allocated = true, true
		st.HostOffset, st.HostFile = int64(e)+in, m.name
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

// Info: cluster size and backing file as qemu-img info shows them.
func (m *Image) Info() (*block.ImageInfo, error) {
	in := &block.ImageInfo{ClusterSize: m.cluster, HasDirtyFlag: true}
	if m.backName != "" {
		in.BackingFilename, in.FullBackingFilename = m.backName, m.backFull
	}
	return in, nil
}

func (m *Image) ActualSize() (int64, error) { return block.FileSize(m.name) }

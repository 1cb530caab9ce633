// Package parallels owns the read-only driver for Parallels images: the header (both
// magics: "WithoutFreeSpace", whose BAT counts sectors, and "WithouFreSpacExt",
// whose BAT counts clusters), the block allocation table, and `check` as qemu-img's
// parallels_co_check reports it. The BAT and every offset it holds are bounded before
// use. Writes are refused with block.ErrReadOnly and create with a one-line error.
//
// It registers the "parallels" format with package block from init and implements
// block.Driver with the optional Infoer, ActualSizer and Checker. It must not touch
// the block layer's registry beyond Register, nor any other format.
package parallels

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"gemu/block"
	"gemu/block/internal/imgfile"
)

func init() { block.Register(Format{}) }

const (
	magic1     = "WithoutFreeSpace"
	magic2     = "WithouFreSpacExt"
	version    = 2
	headerLen  = 64
	inuseMagic = 0x746f6e59
	maxTracks  = (1<<31 - 1) / 513
	maxBAT     = (1<<31 - 1) / 4
	maxSectors = 1 << 53
)

var le = binary.LittleEndian

// Header is the Parallels header.
type Header struct {
	Magic      [16]byte
	Version    uint32
	Heads      uint32
	Cylinders  uint32
	Tracks     uint32
	BATEntries uint32
	NbSectors  uint64
	Inuse      uint32
	DataOff    uint32
	Flags      uint32
	ExtOff     uint64
}

// Format is the registered "parallels" format.
type Format struct{}

func (Format) Name() string { return "parallels" }

// Probe: either magic and version 2 (parallels_probe).
func (Format) Probe(b []byte, _ string) int {
	if len(b) < headerLen {
		return 0
	}
	m := string(b[:16])
	if (m == magic1 || m == magic2) && le.Uint32(b[16:]) == version {
		return 100
	}
	return 0
}

// OptionsHelp is qemu-img's `create -f parallels -o help` text.
func (Format) OptionsHelp() string {
	return `Supported options:
  cluster_size=<size>    - Parallels image cluster size
  extent_size_hint=<size> - Extent size hint for the image file, 0 to disable
  nocow=<bool (on/off)>  - Turn off copy-on-write (valid only on btrfs)
  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)
  size=<size>            - Virtual disk size
`
}

func (Format) Create(string, block.CreateOptions) error {
	return errors.New("Creating parallels images is not supported by gemu-img (parallels is read-only in gemu)")
}

// Image is one open Parallels image.
type Image struct {
	imgfile.ReadOnly
	name    string
	f       *os.File
	h       Header
	fsize   int64
	size    int64
	cluster int64 // bytes
	mult    int64 // sectors per BAT unit
	bat     []uint32
	dataEnd int64 // sectors
}

// Open opens a Parallels image, read-only whatever opts says.
func (Format) Open(filename string, opts block.OpenOptions) (block.Driver, error) {
	opts.ReadOnly = true
	f, fsize, err := imgfile.Open(filename, opts)
	if err != nil {
		return nil, err
	}
	m := &Image{name: filename, f: f, fsize: fsize}
	if err := m.open(); err != nil {
		f.Close()
		return nil, fmt.Errorf("Could not open '%s': %v", filename, err)
	}
	return m, nil
}

func (m *Image) open() error {
	b := make([]byte, headerLen)
	if err := imgfile.ReadAt(m.f, b, 0, "header"); err != nil {
		return err
	}
	binary.Decode(b, le, &m.h)
	h := &m.h
	mg := string(h.Magic[:])
	if (mg != magic1 && mg != magic2) || h.Version != version {
		return errors.New("Image not in Parallels format")
	}
	if h.NbSectors > maxSectors {
		return fmt.Errorf("Invalid image: %d sectors is too large", h.NbSectors)
	}
	m.size = int64(h.NbSectors) * 512
	if h.Tracks == 0 {
		return errors.New("Invalid image: Zero sectors per track")
	}
	if h.Tracks > maxTracks {
		return errors.New("Invalid image: Too big cluster")
	}
	m.cluster = int64(h.Tracks) * 512
	// "WithouFreSpacExt" BATs count clusters, "WithoutFreeSpace" ones sectors
	// (QEMU's off_multiplier).
	m.mult = 1
	if mg == magic2 {
		m.mult = int64(h.Tracks)
	}
	if h.BATEntries > maxBAT {
		return errors.New("Catalog too large")
	}
	n := int64(h.BATEntries)
	if headerLen+n*4 > m.fsize {
		return fmt.Errorf("parallels: BAT of %d entries lies past the end of the file", n)
	}
	raw := make([]byte, n*4)
	if err := imgfile.ReadAt(m.f, raw, headerLen, "BAT"); err != nil {
		return err
	}
	m.bat = make([]uint32, n)
	m.dataEnd = int64(h.DataOff)
	if m.dataEnd == 0 {
		m.dataEnd = (headerLen + n*4 + 511) / 512
	}
	for i := range m.bat {
		m.bat[i] = le.Uint32(raw[i*4:])
		if off := int64(m.bat[i]) * m.mult; off >= m.dataEnd {
			m.dataEnd = off + int64(h.Tracks)
		}
	}
	return nil
}

func (m *Image) Format() string   { return "parallels" }
func (m *Image) Filename() string { return m.name }
func (m *Image) Size() int64      { return m.size }

// hostOff is the file offset of guest offset off, or -1 when unallocated.
func (m *Image) hostOff(off int64) int64 {
	i := off / m.cluster
	if i >= int64(len(m.bat)) || m.bat[i] == 0 {
		return -1
	}
	return int64(m.bat[i])*m.mult*512 + off%m.cluster
}

func (m *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > m.size {
		return 0, fmt.Errorf("parallels: read at %d outside the disk", off)
	}
	n := min(int64(len(p)), m.size-off)
	for done := int64(0); done < n; {
		cur := off + done
		k := min(n-done, m.cluster-cur%m.cluster)
		q := p[done : done+k]
		if h := m.hostOff(cur); h < 0 {
			clear(q)
		} else if err := imgfile.ReadZeroPast(m.f, q, h); err != nil {
			return int(done), err
		}
		done += k
	}
	if n < int64(len(p)) {
		return int(n), errors.New("parallels: read past the end of the disk")
	}
	return int(n), nil
}

// BlockStatus: allocated clusters are data at their offset; others unallocated zeroes.
func (m *Image) BlockStatus(off, n int64) (block.Status, error) {
	if off < 0 || off >= m.size {
		return block.Status{Offset: off, HostOffset: -1}, nil
	}
	n = min(n, m.size-off)
	h := m.hostOff(off)
	length := min(n, m.cluster-off%m.cluster)
	for length < n {
		h2 := m.hostOff(off + length)
		if (h < 0) != (h2 < 0) || (h >= 0 && h2 != h+length) {
			break
		}
		length = min(n, length+m.cluster)
	}
	st := block.Status{Offset: off, Length: length, HostOffset: -1}
	if h >= 0 {
		st.Data, st.Allocated, st.HostOffset, st.HostFile = true, true, h, m.name
	} else {
		st.Zero = true
	}
	return st, nil
}

func (m *Image) Close() error {
	if m.f == nil {
		return nil
	}
	err := m.f.Close()
	m.f = nil
	return err
}

// Info: qemu-img shows no cluster size for parallels.
func (m *Image) Info() (*block.ImageInfo, error) { return &block.ImageInfo{}, nil }

func (m *Image) ActualSize() (int64, error) { return block.FileSize(m.name) }

// Check is parallels_co_check without repairs: BAT entries past the end of the file,
// an image left in use, space leaked after the last cluster, fragmentation.
func (m *Image) Check(mode block.RepairMode) (*block.CheckResult, error) {
	r, err := m.check()
	if err == nil && mode != block.RepairNone && (r.Corruptions > 0 || r.Leaks > 0) {
		return nil, errors.New("parallels images are read-only in gemu: cannot repair")
	}
	return r, err
}

func (m *Image) check() (*block.CheckResult, error) {
	r := &block.CheckResult{Filename: m.name, Format: "parallels", TotalClusters: int64(len(m.bat))}
	if m.h.Inuse == inuseMagic {
		r.Messages = append(r.Messages, "ERROR image was not closed correctly")
		r.Corruptions++
	}
	var high, prev int64
	for i, e := range m.bat {
		if e == 0 {
			prev = 0
			continue
		}
		off := int64(e) * m.mult * 512
		if off > m.fsize {
			r.Messages = append(r.Messages, fmt.Sprintf("ERROR cluster %d is outside image", i))
			r.Corruptions++
		}
		r.AllocatedClusters++
		high = max(high, off)
		if prev != 0 && prev+m.cluster != off {
			r.FragmentedClusters++
		}
		prev = off
	}
	if high == 0 {
		r.ImageEndOffset = m.dataEnd * 512
	} else {
		r.ImageEndOffset = high + m.cluster
	}
	if m.fsize > r.ImageEndOffset {
		n := (m.fsize - r.ImageEndOffset + m.cluster - 1) / m.cluster
		r.Messages = append(r.Messages, fmt.Sprintf("ERROR space leaked at the end of the image %d", m.fsize-r.ImageEndOffset))
		r.Leaks += n
	}
	return r, nil
}

func decodeHeader(b []byte, h *Header) { binary.Decode(b, le, h) }

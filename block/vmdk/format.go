// Package vmdk owns the VMDK image format driver: descriptors (embedded or in their
// own file, with FLAT, SPARSE, VMFSSPARSE and ZERO extents confined to the
// descriptor's folder), hosted sparse extents (grain directory, its redundant copy,
// grain tables, zeroed grains), streamOptimized extents (zlib grains behind markers,
// footer, end-of-stream marker), vmfsSparse (COWD) extents read-only, parent images
// (parentFileNameHint with the CID check), and creation of every subformat qemu-img
// creates. Every table, offset and length read from a file is bounded before use.
//
// It registers the "vmdk" format with package block from init and implements
// block.Driver with the optional Infoer, ActualSizer and (for streamOptimized)
// ClusterCompressor. It must not touch the block layer's registry beyond Register,
// nor any other format.
package vmdk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gemu/block"
)

func init() { block.Register(vmdkFormat{}) }

type vmdkFormat struct{}

func (vmdkFormat) Name() string { return "vmdk" }

// Probe recognises sparse extents by magic and text descriptors by their header
// comment or their version= and createType= lines.
func (vmdkFormat) Probe(buf []byte, _ string) int {
	if len(buf) >= 4 {
		switch uint32(buf[0]) | uint32(buf[1])<<8 | uint32(buf[2])<<16 | uint32(buf[3])<<24 {
		case magicKDMV, magicCOWD:
			return 100
		}
	}
	if bytes.HasPrefix(buf, []byte("# Disk DescriptorFile")) {
		return 100
	}
	if bytes.Contains(buf, []byte("\nversion=")) && bytes.Contains(buf, []byte("\ncreateType=")) {
		return 100
	}
	return 0
}

func (vmdkFormat) Open(filename string, opts block.OpenOptions) (block.Driver, error) {
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := block.OpenImageFile(filename, opts, block.RoleImage)
	if err != nil {
		var le *block.LockError
		if errors.As(err, &le) {
			return nil, err
		}
		return nil, fmt.Errorf("Could not open '%s': %v", filename, unwrapPathErr(err))
	}
	if opts.Direct {
		// Grain-table I/O is not block-aligned: O_DIRECT was only checked (see block.BufferedAfterDirect).
		if err := block.BufferedAfterDirect(f); err != nil {
			f.Close()
			return nil, err
		}
	}
	m := &image{filename: filename, readOnly: opts.ReadOnly, opts: opts}
	err = m.open(f, flag)
	if err == nil {
		err = m.openParent(opts)
	}
	if err != nil {
		m.descFile = f
		m.Close()
		if len(m.extents) == 0 || m.extents[0].f != f {
			f.Close()
		}
		return nil, err
	}
	if len(m.extents) == 1 && m.extents[0].sp != nil && m.extents[0].sp.compressed && m.descFile == nil {
		return &streamImage{m}, nil
	}
	if m.allSparse() {
		return &sparseImage{m}, nil
	}
	return m, nil
}

// allSparse reports whether every extent is an uncompressed sparse extent with the
// first one's grain size.
func (m *image) allSparse() bool {
	if len(m.extents) == 0 {
		return false
	}
	for _, e := range m.extents {
		if e.sp == nil || e.sp.compressed || e.sp.grainBytes != m.extents[0].sp.grainBytes {
			return false
		}
	}
	return true
}

func (m *image) open(f *os.File, flag int) error {
	head := make([]byte, sectorSize)
	n, err := f.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return err
	}
	head = head[:n]
	if n >= 4 && (head[0] == 'K' && string(head[:4]) == "KDMV" || string(head[:4]) == "COWD") {
		sp, err := openSparse(f, m.filename, nil)
		if err != nil {
			return err
		}
		desc, err := readEmbeddedDesc(sp)
		if err != nil {
			return err
		}
		if desc != nil {
			m.descF, m.descOff, m.descLen = f, int64(sp.h.DescOffset)*sectorSize, int64(sp.h.DescSize)*sectorSize
		}
		if sp.h.Capacity == 0 && desc != nil && len(desc.Extents) > 0 {
			// A descriptor wrapped in a sparse header: the data lives elsewhere.
			m.descFile = f
			return m.openExtents(desc, flag)
		}
		if head[0] == 'K' && !hasCIDAt0x200(f) {
			return fmt.Errorf("vmdk: no CID in the descriptor area at sector 1: Invalid argument")
		}
		if desc == nil {
			desc = &descriptor{CID: 0xffffffff, ParentCID: 0xffffffff, CreateType: "monolithicSparse"}
		}
		m.desc = desc
		m.createType = desc.CreateType
		if sp.compressed {
			m.createType = "streamOptimized"
		}
		if sp.h.Version == 3 && !sp.compressed && !m.readOnly {
			return fmt.Errorf("vmdk: VMDK version 3 must be read only")
		}
		m.size = sp.limit
		m.extents = []*extent{{
			line: extentLine{Kind: kindSparse, Type: "SPARSE", Sectors: int64(sp.h.Capacity), Name: filepath.Base(m.filename)},
			size: sp.limit,
			path: m.filename, infoName: m.filename,
			f: f, sp: sp,
		}}
		return nil
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("vmdk: '%s' is not a regular file", m.filename)
	}
	if st.Size() > maxDescBytes {
		return fmt.Errorf("vmdk: descriptor file of %d bytes too large (at most %d)", st.Size(), maxDescBytes)
	}
	buf := make([]byte, st.Size())
	if _, err := f.ReadAt(buf, 0); err != nil && err != io.EOF {
		return err
	}
	desc, err := parseDescriptor(buf)
	if err != nil {
		return err
	}
	m.descFile = f
	m.descF, m.descOff, m.descLen = f, 0, st.Size()
	return m.openExtents(desc, flag)
}

// hasCIDAt0x200 reports whether the text at byte 0x200 of a hosted sparse file (up to
// its first NUL, at most 10 KiB) names a CID. QEMU reads the CID from there for every
// such file and refuses the image when there is none, so gemu does the same rather than
// accept an image qemu-img cannot open.
func hasCIDAt0x200(f *os.File) bool {
	buf := make([]byte, 20*sectorSize)
	n, _ := f.ReadAt(buf, 0x200)
	buf = buf[:n]
	if i := bytes.IndexByte(buf, 0); i >= 0 {
		buf = buf[:i]
	}
	return bytes.Contains(buf, []byte("CID"))
}

func readEmbeddedDesc(sp *sparseExtent) (*descriptor, error) {
	h := sp.h
	if h.DescOffset == 0 || h.DescSize == 0 {
		return nil, nil
	}
	if h.DescSize > maxDescBytes/sectorSize {
		return nil, fmt.Errorf("vmdk: embedded descriptor of %d sectors too large", h.DescSize)
	}
	off := int64(h.DescOffset) * sectorSize
	if h.DescOffset > uint64(sp.size)/sectorSize || off+int64(h.DescSize)*sectorSize > sp.size {
		return nil, fmt.Errorf("vmdk: embedded descriptor at sector %d lies outside the file", h.DescOffset)
	}
	buf := make([]byte, h.DescSize*sectorSize)
	if _, err := sp.f.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("vmdk: reading descriptor: %v", shortErr(err))
	}
	if i := bytes.IndexByte(buf, 0); i >= 0 {
		buf = buf[:i]
	}
	if len(bytes.TrimSpace(buf)) == 0 {
		return nil, nil
	}
	return parseDescriptor(buf)
}

func (m *image) openExtents(desc *descriptor, flag int) error {
	switch desc.CreateType {
	case "seSparse", "vmfsRaw", "vmfsRawDeviceMap", "vmfsPassthroughRawDeviceMap":
		return fmt.Errorf("vmdk: unsupported image type '%s'", desc.CreateType)
	}
	if len(desc.Extents) == 0 {
		return fmt.Errorf("vmdk: descriptor lists no extents")
	}
	m.desc = desc
	m.createType = desc.CreateType
	dir := filepath.Dir(m.filename)
	prefix := dirPrefix(m.filename)
	dirBudget := int64(maxDirBytes)
	for _, l := range desc.Extents {
		if m.size > 1<<62-l.Sectors*sectorSize {
			return fmt.Errorf("vmdk: extents add up to more than the maximum disk size")
		}
		e := &extent{line: l, start: m.size, size: l.Sectors * sectorSize}
		m.size += e.size
		m.extents = append(m.extents, e)
		if l.Kind == kindZero {
			continue
		}
		p, err := confinedPath(dir, l.Name)
		if err != nil {
			return err
		}
		e.path, e.infoName = p, prefix+l.Name
		eo := m.opts
		if l.ReadOnly || flag&(os.O_WRONLY|os.O_RDWR) == 0 {
			eo.ReadOnly = true
		}
		role := block.RoleImage
		if l.Kind == kindFlat {
			role = block.RoleData
		}
		if e.f, err = block.OpenImageFile(p, eo, role); err != nil {
			var le *block.LockError
			if errors.As(err, &le) {
				return err
			}
			return fmt.Errorf("vmdk: could not open extent '%s': %v", l.Name, unwrapPathErr(err))
		}
		if eo.Direct {
			if err := block.BufferedAfterDirect(e.f); err != nil {
				return err
			}
		}
		if st, err := e.f.Stat(); err != nil || !st.Mode().IsRegular() {
			return fmt.Errorf("vmdk: extent %q is not a regular file", l.Name)
		}
		if l.Kind == kindFlat {
			e.flatOff = l.Offset * sectorSize
			continue
		}
		if e.sp, err = openSparse(e.f, p, &dirBudget); err != nil {
			return fmt.Errorf("%v (extent '%s')", err, l.Name)
		}
		if e.sp.h.Version == 3 && !e.sp.compressed && !m.readOnly && !l.ReadOnly {
			return fmt.Errorf("vmdk: VMDK version 3 must be read only")
		}
	}
	return nil
}

// validOption lists the -o keys create accepts (as qemu-img 7.2 vmdk).
var validOption = map[string]bool{
	"size": true, "adapter_type": true, "backing_file": true, "backing_fmt": true,
	"compat6": true, "extent_size_hint": true, "hwversion": true, "nocow": true,
	"preallocation": true, "subformat": true, "toolsversion": true, "zeroed_grain": true,
}

func parseBool(k, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "on", "yes", "true", "":
		return true, nil
	case "off", "no", "false":
		return false, nil
	}
	return false, fmt.Errorf("Parameter '%s' expects 'on' or 'off'", k)
}

// openParent opens the image named by parentFileNameHint (relative to this image's
// folder, or absolute, never a protocol or json: name) as the backing layer: grains
// this image does not allocate read from it, as long as its CID is the parentCID
// recorded here (qemu-img likewise fails such reads).
func (m *image) openParent(opts block.OpenOptions) error {
	hint := m.desc.ParentHint
	if hint == "" {
		return nil
	}
	if err := checkBackingName(hint); err != nil {
		return err
	}
	m.parentFull = hint
	if !filepath.IsAbs(hint) {
		m.parentFull = dirPrefix(m.filename) + hint
	}
	if opts.NoBacking {
		return nil
	}
	if opts.BackingFormat != "" && opts.BackingFormat != "vmdk" {
		return fmt.Errorf("vmdk: the parent of a vmdk image must be vmdk, not %s", opts.BackingFormat)
	}
	if opts.Depth+1 >= block.MaxChainDepth {
		return errChainTooLong
	}
	if st, err := os.Stat(m.parentFull); err != nil {
		return fmt.Errorf("Could not open backing file: Could not open '%s': %v", m.parentFull, unwrapPathErr(err))
	} else if !st.Mode().IsRegular() {
		return fmt.Errorf("Could not open backing file: '%s' is not a regular file", m.parentFull)
	}
	p, err := vmdkFormat{}.Open(m.parentFull, opts.BackingOptions("vmdk"))
	if errors.Is(err, errChainTooLong) {
		return err
	} else if err != nil {
		return fmt.Errorf("Could not open backing file: %v", err)
	}
	m.backing = p
	m.parentCIDOK = parentCID(p) == m.desc.ParentCID
	for _, e := range m.extents {
		if e.sp != nil {
			e.sp.fill = func(b []byte, off int64) error { return m.readParent(b, e.start+off) }
		}
	}
	return nil
}

// errChainTooLong stops parent chains that loop or are absurdly long; it is passed up
// unwrapped so the message stays one short line.
var errChainTooLong = fmt.Errorf("vmdk: backing chain longer than %d images (loop?)", block.MaxChainDepth)

// checkBackingName refuses parent names that are not plain file paths.
func checkBackingName(name string) error {
	if strings.HasPrefix(name, "json:") || strings.ContainsRune(name, 0) {
		return fmt.Errorf("vmdk: parent file name %q is not a file path", name)
	}
	if i := strings.IndexByte(name, ':'); i >= 0 && !strings.Contains(name[:i], "/") {
		return fmt.Errorf("vmdk: parent file name %q looks like a protocol, not a file path", name)
	}
	return nil
}

func parentCID(d block.Driver) uint32 {
	switch p := d.(type) {
	case *image:
		return p.desc.CID
	case *streamImage:
		return p.desc.CID
	case *sparseImage:
		return p.desc.CID
	}
	return 0
}

// readParent fills p with the parent's data at guest offset off (zeroes past its end).
func (m *image) readParent(p []byte, off int64) error {
	if !m.parentCIDOK {
		return fmt.Errorf("vmdk: parent '%s' has CID %08x, but this image expects %08x", m.parentFull, parentCID(m.backing), m.desc.ParentCID)
	}
	n := max(0, min(int64(len(p)), m.backing.Size()-off))
	if n > 0 {
		if _, err := m.backing.ReadAt(p[:n], off); err != nil && err != io.EOF {
			return err
		}
	}
	clear(p[n:])
	return nil
}

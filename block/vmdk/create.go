package vmdk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"

	"gemu/block"
)

// splitBytes is the extent size of the twoGbMaxExtent subformats.
const splitBytes = 2 << 30

type createParams struct {
	subformat, adapter, hw, tools, prealloc string
	zeroed                                  bool
	backing, backingFmt                     string
}

func parseCreate(opts block.CreateOptions) (createParams, error) {
	p := createParams{subformat: "monolithicSparse", adapter: "ide", hw: "4", tools: "2147483647", prealloc: "off"}
	compat6, hwSet := false, false
	for k, v := range opts.Options {
		if !validOption[k] {
			return p, fmt.Errorf("Invalid parameter '%s'", k)
		}
		var err error
		switch k {
		case "subformat":
			switch v {
			case "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized":
				p.subformat = v
			default:
				return p, fmt.Errorf("invalid parameter value: %s", v)
			}
		case "adapter_type":
			switch v {
			case "ide", "buslogic", "lsilogic", "legacyESX":
				p.adapter = v
			default:
				return p, fmt.Errorf("invalid parameter value: %s", v)
			}
		case "hwversion":
			if v != "undefined" {
				p.hw, hwSet = v, true
			}
		case "toolsversion":
			p.tools = v
		case "compat6":
			compat6, err = parseBool(k, v)
		case "zeroed_grain":
			p.zeroed, err = parseBool(k, v)
		case "preallocation":
			p.prealloc = v
		case "backing_file":
			p.backing = v
		case "backing_fmt":
			p.backingFmt = v
		}
		if err != nil {
			return p, err
		}
	}
	if opts.Backing != "" {
		p.backing = opts.Backing
	}
	if opts.BackingFormat != "" {
		p.backingFmt = opts.BackingFormat
	}
	if compat6 && hwSet {
		return p, fmt.Errorf("compat6 cannot be enabled with hwversion set")
	}
	if compat6 {
		p.hw = "6"
	}
	// qemu-img 7.2 accepts these modes for vmdk and leaves every extent sparse.
	switch p.prealloc {
	case "off", "", "falloc", "full":
	default:
		return p, fmt.Errorf("Unsupported preallocation mode: %s", p.prealloc)
	}
	return p, nil
}

// Create writes a new image. Extent files are written before the descriptor that
// names them. The CID is derived from the name, size and subformat rather than drawn
// at random so that converting the same input twice gives byte-identical images.
func (vmdkFormat) Create(filename string, opts block.CreateOptions) error {
	p, err := parseCreate(opts)
	if err != nil {
		return err
	}
	if opts.Size < 0 || opts.Size > 1<<53 {
		return fmt.Errorf("vmdk: invalid image size %d", opts.Size)
	}
	pcid, hint := uint32(0xffffffff), ""
	if p.backing != "" {
		if strings.HasSuffix(p.subformat, "Flat") {
			return fmt.Errorf("Flat image can't have backing file")
		}
		if p.backingFmt != "" && p.backingFmt != "vmdk" {
			return fmt.Errorf("backing_file must be a vmdk image")
		}
		if err := checkBackingName(p.backing); err != nil {
			return err
		}
		full := p.backing
		if !filepath.IsAbs(full) {
			full = dirPrefix(filename) + full
		}
		if _, err := os.Stat(full); err != nil {
			return fmt.Errorf("Could not open '%s': %v", full, unwrapPathErr(err))
		}
		parent, err := vmdkFormat{}.Open(full, block.OpenOptions{ReadOnly: true, Format: "vmdk", NoBacking: true})
		if err != nil {
			return fmt.Errorf("backing_file must be a vmdk image")
		}
		pcid, hint = parentCID(parent), p.backing
		if opts.Size == 0 {
			opts.Size = parent.Size()
		}
		parent.Close()
	}
	size := (opts.Size + sectorSize - 1) &^ (sectorSize - 1)
	sectors := size / sectorSize
	cid := crc32.ChecksumIEEE(fmt.Appendf(nil, "%s:%d:%s", filepath.Base(filename), size, p.subformat))
	dir := filepath.Dir(filename)
	base := filepath.Base(filename)
	stem, ext := base, ""
	if i := strings.LastIndexByte(base, '.'); i > 0 {
		stem, ext = base[:i], base[i:]
	}
	var lines []extentLine
	switch p.subformat {
	case "monolithicSparse", "streamOptimized":
		lines = []extentLine{{Sectors: sectors, Kind: kindSparse, Type: "SPARSE", Name: base}}
		desc := formatDescriptor(cid, pcid, p.subformat, hint, lines, p.hw, p.adapter, p.tools, sectors)
		return writeSparseFile(filename, sectors, p.subformat == "streamOptimized", p.zeroed, desc)
	case "monolithicFlat":
		name := stem + "-flat" + ext
		lines = []extentLine{{Sectors: sectors, Kind: kindFlat, Type: "FLAT", Name: name}}
		if err := writeFlatFile(filepath.Join(dir, name), size); err != nil {
			return err
		}
	default: // twoGbMaxExtent*
		flat := p.subformat == "twoGbMaxExtentFlat"
		for i, left := 1, size; left > 0 || i == 1; i++ {
			n := min(left, splitBytes)
			var l extentLine
			if flat {
				l = extentLine{Sectors: n / sectorSize, Kind: kindFlat, Type: "FLAT", Name: fmt.Sprintf("%s-f%03d%s", stem, i, ext)}
				err = writeFlatFile(filepath.Join(dir, l.Name), n)
			} else {
				l = extentLine{Sectors: n / sectorSize, Kind: kindSparse, Type: "SPARSE", Name: fmt.Sprintf("%s-s%03d%s", stem, i, ext)}
				err = writeSparseFile(filepath.Join(dir, l.Name), n/sectorSize, false, p.zeroed, "")
			}
			if err != nil {
				return err
			}
			if n > 0 {
				lines = append(lines, l)
			}
			left -= n
		}
	}
	desc := formatDescriptor(cid, pcid, p.subformat, hint, lines, p.hw, p.adapter, p.tools, sectors)
	return writeDescriptorFile(filename, []byte(desc))
}

// writeDescriptorFile writes a separate descriptor file, taking the create locks first
// (block.CreateImageFile) so a descriptor in use is not overwritten.
func writeDescriptorFile(filename string, desc []byte) error {
	f, err := block.CreateImageFile(filename)
	if err != nil {
		return createError(filename, err)
	}
	if _, err := f.Write(desc); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// createError words a failure to create path: lock conflicts as qemu-img prints them.
func createError(path string, err error) error {
	var le *block.LockError
	if errors.As(err, &le) {
		return err
	}
	return fmt.Errorf("Could not create '%s': %v", path, unwrapPathErr(err))
}

func writeFlatFile(path string, size int64) error {
	f, err := block.CreateImageFile(path)
	if err != nil {
		return createError(path, err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

// writeSparseFile lays out a hosted sparse extent as qemu-img does: header, 20-sector
// descriptor area, redundant directory and its tables, directory and its tables,
// grains from the next 64 KiB boundary. A stream extent instead gets VMware's
// layout: header saying GD_AT_END, descriptor, then (empty) directory, footer and
// end-of-stream marker, so the empty image is already valid.
func writeSparseFile(path string, sectors int64, compress, zeroed bool, desc string) error {
	const grain = 128
	const per = 512
	h := header{Version: 1, Flags: flagNLDetect | flagRGD, Capacity: uint64(sectors), GrainSize: grain,
		NumGTEsPerGT: per, DescOffset: 1, DescSize: 20}
	if zeroed {
		h.Version = 2
		h.Flags |= flagZeroGrain
	}
	gtCount := (sectors + grain*per - 1) / (grain * per)
	gdSectors := (gtCount*4 + sectorSize - 1) / sectorSize
	gtSectors := int64(per * 4 / sectorSize)
	if len(desc) > int(h.DescSize)*sectorSize {
		return fmt.Errorf("vmdk: descriptor too long")
	}
	var img []byte
	if compress {
		h.Version = 3
		h.Flags = flagNLDetect | flagCompress | flagMarkers
		if zeroed {
			h.Flags |= flagZeroGrain
		}
		h.CompressAlgo = compressDeflate
		h.GDOffset = gdAtEnd
		h.OverHead = grain
		img = make([]byte, h.OverHead*sectorSize)
		h.marshal(img)
		copy(img[sectorSize:], desc)
		// GD marker and an all-zero directory, footer marker and footer, EOS.
		gdAt := int64(len(img))/sectorSize + 1
		m := make([]byte, sectorSize)
		putMetaMarker(m, uint64(gdSectors), markerGD)
		img = append(img, m...)
		img = append(img, make([]byte, gdSectors*sectorSize)...)
		putMetaMarker(m, 1, markerFooter)
		img = append(img, m...)
		footer := h
		footer.GDOffset = uint64(gdAt)
		fb := make([]byte, sectorSize)
		footer.marshal(fb)
		img = append(img, fb...)
		img = append(img, make([]byte, sectorSize)...)
	} else {
		h.RGDOffset = h.DescOffset + h.DescSize
		h.GDOffset = h.RGDOffset + uint64(gdSectors+gtSectors*gtCount)
		h.OverHead = (h.GDOffset + uint64(gdSectors+gtSectors*gtCount) + grain - 1) / grain * grain
		img = make([]byte, h.OverHead*sectorSize)
		h.marshal(img)
		copy(img[sectorSize:], desc)
		for _, gd := range []uint64{h.RGDOffset, h.GDOffset} {
			for i := int64(0); i < gtCount; i++ {
				gt := uint32(int64(gd) + gdSectors + i*gtSectors)
				binary.LittleEndian.PutUint32(img[int64(gd)*sectorSize+4*i:], gt)
			}
		}
	}
	if int64(len(img)) > 1<<30 {
		return fmt.Errorf("vmdk: image too large for a single sparse extent")
	}
	f, err := block.CreateImageFile(path)
	if err != nil {
		return createError(path, err)
	}
	defer f.Close()
	if _, err := f.Write(img); err != nil {
		return err
	}
	return f.Sync()
}

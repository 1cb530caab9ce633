package qcow2

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"gemu/block"
)

// createOpts are the validated -o options of `create`.
type createOpts struct {
	clusterBits   uint
	version       uint32
	lazy          bool
	prealloc      string
	refcountOrder uint32
	zstd          bool
	extL2         bool
	backing       string
	backingFmt    string
	dataFile      string
	dataFileRaw   bool
}

// ParseSize parses a qemu-style size ("65536", "64k", "2M", "1G"...).
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty size")
	}
	mul := int64(1)
	switch s[len(s)-1] {
	case 'b', 'B':
		s = s[:len(s)-1]
	case 'k', 'K':
		mul, s = 1<<10, s[:len(s)-1]
	case 'm', 'M':
		mul, s = 1<<20, s[:len(s)-1]
	case 'g', 'G':
		mul, s = 1<<30, s[:len(s)-1]
	case 't', 'T':
		mul, s = 1<<40, s[:len(s)-1]
	case 'p', 'P':
		mul, s = 1<<50, s[:len(s)-1]
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && mul > 1 && strings.Contains(s, ".") {
		v := f * float64(mul)
		if v < 0 || v >= 1<<63 {
			return 0, errors.New("size out of range")
		}
		return int64(v), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size '%s'", s)
	}
	if n > (1<<63-1)/mul {
		return 0, errors.New("size out of range")
	}
	return n * mul, nil
}

func parseBool(key, v string) (bool, error) {
	switch v {
	case "on", "true", "yes":
		return true, nil
	case "off", "false", "no":
		return false, nil
	}
	return false, fmt.Errorf("Parameter '%s' expects 'on' or 'off'", key)
}

func parseCreateOpts(o block.CreateOptions) (*createOpts, error) {
	c := &createOpts{clusterBits: 16, version: 3, prealloc: "off", refcountOrder: 4,
		backing: o.Backing, backingFmt: o.BackingFormat}
	var err error
	lazySet := false
	for k, v := range o.Options {
		switch k {
		case "size":
		case "cluster_size":
			n, err := ParseSize(v)
			if err != nil || n < 512 || n > 2<<20 || n&(n-1) != 0 {
				return nil, errors.New("Cluster size must be a power of two between 512 and 2048k")
			}
			c.clusterBits = uint(bits.TrailingZeros64(uint64(n)))
		case "compat":
			switch v {
			case "0.10", "v2":
				c.version = 2
			case "1.1", "v3":
				c.version = 3
			default:
				return nil, fmt.Errorf("Invalid parameter '%s'", v)
			}
		case "lazy_refcounts":
			if c.lazy, err = parseBool(k, v); err != nil {
				return nil, err
			}
			lazySet = true
		case "preallocation":
			switch v {
			case "off", "metadata", "falloc", "full":
				c.prealloc = v
			default:
				return nil, fmt.Errorf("Invalid parameter '%s'", v)
			}
		case "refcount_bits":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 64 || n&(n-1) != 0 {
				return nil, errors.New("Refcount width must be a power of two and may not exceed 64 bits")
			}
			c.refcountOrder = uint32(bits.TrailingZeros(uint(n)))
		case "compression_type":
			switch v {
			case "zlib":
				c.zstd = false
			case "zstd":
				c.zstd = true
			default:
				return nil, fmt.Errorf("Invalid parameter '%s'", v)
			}
		case "extended_l2":
			if c.extL2, err = parseBool(k, v); err != nil {
				return nil, err
			}
		case "backing_file":
			c.backing = v
		case "backing_fmt":
			c.backingFmt = v
		case "data_file":
			c.dataFile = v
		case "data_file_raw":
			if c.dataFileRaw, err = parseBool(k, v); err != nil {
				return nil, err
			}
		case "encryption", "encrypt.format":
			if v != "off" && v != "" {
				return nil, errors.New("qcow2: encryption is not supported")
			}
		default:
			return nil, fmt.Errorf("Invalid parameter '%s'", k)
		}
	}
	if c.version == 2 {
		switch {
		case lazySet && c.lazy:
			return nil, errors.New("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)")
		case c.refcountOrder != 4:
			return nil, errors.New("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
		case c.dataFile != "":
			return nil, errors.New("data-file requires compat=1.1 or greater")
		case c.zstd:
			return nil, errors.New("Non-zlib compression type is only supported with compatibility level 1.1 and above (use compat=1.1 or greater)")
		case c.extL2:
			return nil, errors.New("Extended L2 entries are only supported with compatibility level 1.1 and above (use compat=1.1 or greater)")
		}
	}
	if c.extL2 && c.clusterBits < 14 {
		return nil, errors.New("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
	}
	if c.dataFileRaw && c.dataFile == "" {
		return nil, errors.New("data-file-raw requires data-file")
	}
	if c.backing != "" && c.dataFileRaw {
		return nil, errors.New("Backing file and data-file-raw cannot be used at the same time")
	}
	if c.backing != "" {
		if _, err := resolveChild(".", c.backing); err != nil {
			return nil, err
		}
	}
	if c.dataFile != "" {
		if _, err := resolveChild(".", c.dataFile); err != nil {
			return nil, err
		}
	}
	if c.dataFileRaw && c.prealloc == "off" {
		// The data file must map 1:1, so every cluster is allocated up front (as QEMU).
		c.prealloc = "metadata"
	}
	return c, nil
}

func (format) Create(filename string, o block.CreateOptions) error {
	c, err := parseCreateOpts(o)
	if err != nil {
		return err
	}
	size := o.Size
	if s, ok := o.Options["size"]; ok && size == 0 {
		if size, err = ParseSize(s); err != nil {
			return err
		}
	}
	if size == 0 && c.backing != "" {
		if size, err = backingSize(filename, c.backing, c.backingFmt); err != nil {
			return err
		}
	}
	if size < 0 || size > 1<<55 {
		return errors.New("qcow2: image size out of range")
	}
	size = (size + 511) &^ 511 // QEMU rounds the size up to whole sectors
	cs := int64(1) << c.clusterBits
	h := &header{
		version:          c.version,
		clusterBits:      uint32(c.clusterBits),
		refTableOffset:   uint64(cs),
		refTableClusters: 1,
		refcountOrder:    c.refcountOrder,
		backingFile:      c.backing,
		backingFormat:    c.backingFmt,
	}
	if c.lazy {
		h.compatible |= compatLazyRefs
	}
	if c.zstd {
		h.compressionType = compressZstd
		h.incompatible |= incCompression
	}
	if c.extL2 {
		h.incompatible |= incExtendedL2
	}
	if c.dataFile != "" {
		h.incompatible |= incDataFile
		h.dataFile, h.hasDataFile = c.dataFile, true
		if c.dataFileRaw {
			h.autoclear |= autoclearRaw
		}
	}
	hb, err := h.encode(int(cs))
	if err != nil {
		return err
	}
	f, err := block.CreateImageFile(filename)
	if err != nil {
		return err
	}
	defer f.Close()
	// Cluster 0 header, 1 refcount table, 2 refcount block counting clusters 0-2.
	img := make([]byte, 3*cs)
	copy(img, hb)
	be.PutUint64(img[cs:], uint64(2*cs))
	rcTmp := &refcounts{bits: 1 << c.refcountOrder}
	rcTmp.maxVal = uint64(1)<<min(rcTmp.bits, 63) - 1
	for i := int64(0); i < 3; i++ {
		rcTmp.setEntry(img[2*cs:], i, 1)
	}
	if _, err := f.WriteAt(img, 0); err != nil {
		return err
	}
	if c.dataFile != "" {
		p, err := dataFilePath(c.dataFile)
		if err != nil {
			return err
		}
		df, err := block.CreateImageFile(p)
		if err != nil {
			return err
		}
		err = df.Truncate(size)
		if cerr := df.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	im, err := openFile(f, filename, block.OpenOptions{NoBacking: true})
	if err != nil {
		return err
	}
	if err := im.Resize(size, block.ResizeOptions{Preallocation: c.prealloc}); err != nil {
		im.closeFiles()
		return err
	}
	err = im.Close()
	return err
}

func backingSize(image, backing, fmtName string) (int64, error) {
	p, err := resolveChild(image, backing)
	if err != nil {
		return 0, err
	}
	d, err := block.Open(p, block.OpenOptions{ReadOnly: true, Format: fmtName, NoBacking: true})
	if err != nil {
		return 0, fmt.Errorf("Could not open backing image: %v", err)
	}
	defer d.Close()
	return d.Size(), nil
}

// preallocateLocked allocates every L2 table and data cluster from guest cluster from
// on (metadata), and for falloc/full the host space behind them. Caller holds mu.
func (img *Image) preallocateLocked(mode string, from int64) error {
	cs := img.clusterSize
	nclusters := (img.size + cs - 1) >> img.clusterBits
	perTable := int64(1) << img.l2Bits
	es := img.entrySize()
	var dataStart, dataEnd int64 = -1, 0
	for ci := from; ci < nclusters; ci = (ci>>img.l2Bits + 1) << img.l2Bits {
		t, err := img.l2Table(ci)
		if err != nil {
			return err
		}
		first := ci & (perTable - 1)
		k := min(perTable-first, nclusters-ci)
		var host int64
		if img.external {
			host = ci << img.clusterBits
		} else if host, err = img.allocClusters(k); err != nil {
			return err
		}
		if dataStart < 0 {
			dataStart = host
		}
		dataEnd = host + k*cs
		for i := int64(0); i < k; i++ {
			img.freeEntry(be.Uint64(t.b[(first+i)*es:]))
			be.PutUint64(t.b[(first+i)*es:], uint64(host+i*cs)|flagCopied)
		}
		t.dirty = true
		if !img.external && mode != "metadata" {
			if err := img.fillData(host, k*cs, mode); err != nil {
				return err
			}
		}
	}
	if img.external {
		if mode != "metadata" {
			if err := img.fillData(from*cs, img.size-from*cs, mode); err != nil {
				return err
			}
		}
	} else if dataEnd > 0 {
		st, err := img.f.Stat()
		if err != nil {
			return err
		}
		if st.Size() < img.fileSize {
			if err := img.f.Truncate(img.fileSize); err != nil {
				return err
			}
		}
	}
	return img.writeBack(false)
}

func (img *Image) fillData(off, n int64, mode string) error {
	if err := fallocate(img.data, off, n); err != nil && mode == "falloc" {
		return err
	}
	if mode == "full" {
		z := make([]byte, min(n, 4<<20))
		for done := int64(0); done < n; {
			k := min(int64(len(z)), n-done)
			if _, err := img.data.WriteAt(z[:k], off+done); err != nil {
				return err
			}
			done += k
		}
	}
	return nil
}

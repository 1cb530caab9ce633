package qcow2

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"

	"gemu/block"
)

// writeHeader rewrites the header cluster in one write, so a crash leaves either the
// old or the new header.
func (img *Image) writeHeader() error {
	b, err := img.hdr.encode(int(img.clusterSize))
	if err != nil {
		return err
	}
	if _, err := img.f.WriteAt(b, 0); err != nil {
		return err
	}
	return img.sync(img.f)
}

// SetBacking records a new backing file name and format (rebase -u); data is not
// touched. The new backing file is opened for reads if it can be.
func (img *Image) SetBacking(filename, format string) error {
	if img.ro {
		return block.ErrReadOnly
	}
	if filename != "" {
		if _, err := resolveChild(img.filename, filename); err != nil {
			return err
		}
	} else {
		format = ""
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.external && img.dataRaw && filename != "" {
		return errors.New("qcow2: a backing file cannot be used with data-file-raw")
	}
	if err := img.writeBack(false); err != nil {
		return err
	}
	oldFile, oldFmt := img.hdr.backingFile, img.hdr.backingFormat
	img.hdr.backingFile, img.hdr.backingFormat = filename, format
	if err := img.writeHeader(); err != nil {
		img.hdr.backingFile, img.hdr.backingFormat = oldFile, oldFmt
		return err
	}
	if img.backing != nil {
		img.backing.Close()
		img.backing = nil
	}
	if filename != "" {
		img.openBacking(block.OpenOptions{}) // best effort: rebase -u may name a file yet to come
	}
	return nil
}

// Amend changes compat, lazy_refcounts and refcount_bits in place (qemu-img amend).
func (img *Image) Amend(options map[string]string) error {
	if img.ro {
		return block.ErrReadOnly
	}
	version := img.hdr.version
	lazy := img.hdr.compatible&compatLazyRefs != 0
	order := img.hdr.refcountOrder
	for k, v := range options {
		switch k {
		case "compat":
			switch v {
			case "0.10", "v2":
				version = 2
			case "1.1", "v3":
				version = 3
			default:
				return fmt.Errorf("Unknown compatibility level %s", v)
			}
		case "lazy_refcounts":
			b, err := parseBool(k, v)
			if err != nil {
				return err
			}
			lazy = b
		case "refcount_bits":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 64 || n&(n-1) != 0 {
				return errors.New("Refcount width must be a power of two and may not exceed 64 bits")
			}
			order = uint32(bits.TrailingZeros(uint(n)))
		case "size":
			return errors.New("qcow2: use resize to change the size")
		case "cluster_size":
			return errors.New("Changing the cluster size is not supported")
		case "preallocation":
			return errors.New("Changing the preallocation mode is not supported")
		case "compression_type":
			return errors.New("Changing the compression type is not supported")
		case "extended_l2":
			return errors.New("Toggling extended L2 entries is not supported")
		case "data_file", "data_file_raw":
			return errors.New("qcow2: changing the data file is not supported")
		case "encryption", "encrypt.format":
			return errors.New("Changing the encryption flag is not supported")
		case "backing_file", "backing_fmt":
			// Handled below through SetBacking.
		default:
			return fmt.Errorf("Invalid parameter '%s'", k)
		}
	}
	if version == 2 {
		switch {
		case lazy && options["lazy_refcounts"] != "":
			return errors.New("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)")
		case order != 4:
			return errors.New("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
		case img.extL2:
			return errors.New("Cannot downgrade an image with extended L2 entries")
		case img.external:
			return errors.New("Cannot downgrade an image with a data file")
		case img.hdr.compressionType != compressZlib:
			return errors.New("Cannot downgrade an image with a non-zlib compression type")
		}
		lazy = false
	}
	if bf, ok := options["backing_file"]; ok {
		bfmt := options["backing_fmt"]
		if err := img.SetBacking(bf, bfmt); err != nil {
			return err
		}
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.writeBack(true); err != nil {
		return err
	}
	if order != img.hdr.refcountOrder {
		if err := img.changeRefcountOrder(order); err != nil {
			return err
		}
	}
	if version == 2 && img.hdr.version == 3 {
		if err := img.expandZeroClusters(); err != nil {
			return err
		}
		if err := img.writeBack(true); err != nil {
			return err
		}
	}
	h := img.hdr
	h.version = version
	if version == 2 {
		h.incompatible, h.compatible, h.autoclear = 0, 0, 0
		h.headerLength = v2HeaderLen
	} else {
		h.incompatible &^= incDirty
		if lazy {
			h.compatible |= compatLazyRefs
		} else {
			h.compatible &^= compatLazyRefs
		}
	}
	return img.writeHeader()
}

// expandZeroClusters removes zero flags before a downgrade to version 2: without a
// backing file an unallocated cluster already reads as zeroes; with one, the cluster
// gets a zeroed host cluster. Caller holds mu.
func (img *Image) expandZeroClusters() error {
	l1s := [][]uint64{img.l1}
	for _, s := range img.snapshots {
		l1, err := img.readL1(int64(s.l1Offset), int(s.l1Size))
		if err != nil {
			return err
		}
		l1s = append(l1s, l1)
	}
	hasBacking := img.hdr.backingFile != ""
	for n, l1 := range l1s {
		for _, e := range l1 {
			l2off := int64(e & l1OffsetMask)
			if l2off == 0 {
				continue
			}
			t, err := img.l2.get(l2off, false)
			if err != nil {
				return err
			}
			shared := e&flagCopied == 0 || n > 0
			for i := int64(0); i < int64(1)<<img.l2Bits; i++ {
				le := be.Uint64(t.b[i*8:])
				if le&flagCompressed != 0 || le&flagZero == 0 {
					continue
				}
				host := int64(le & l2OffsetMask)
				switch {
				case !hasBacking && host == 0:
					be.PutUint64(t.b[i*8:], 0)
				case host != 0:
					// Every reference to a preallocated zero cluster is a zero entry
					// (a write to a shared one goes elsewhere), so zeroing it is safe.
					z := make([]byte, img.clusterSize)
					if _, err := img.data.WriteAt(z, host); err != nil {
						return err
					}
					img.dataSync = true
					be.PutUint64(t.b[i*8:], le&^flagZero)
				case !shared:
					nh, err := img.allocClusters(1)
					if err != nil {
						return err
					}
					z := make([]byte, img.clusterSize)
					if _, err := img.data.WriteAt(z, nh); err != nil {
						return err
					}
					img.dataSync = true
					img.freeEntry(le)
					be.PutUint64(t.b[i*8:], uint64(nh)|flagCopied)
				default:
					return errors.New("qcow2: cannot downgrade: zero clusters in snapshots over a backing file")
				}
				t.dirty = true
			}
		}
	}
	return nil
}

// changeRefcountOrder rewrites the refcount structures with a new entry width.
// Caller holds mu.
func (img *Image) changeRefcountOrder(order uint32) error {
	res, ref, err := img.computeRefs()
	if err != nil {
		return err
	}
	if res.Corruptions > 0 || res.Leaks > 0 {
		return errors.New("qcow2: image has refcount errors; run check -r all first")
	}
	newBits := uint(1) << order
	var maxVal uint64 = ^uint64(0)
	if newBits < 64 {
		maxVal = uint64(1)<<newBits - 1
	}
	for k, r := range ref {
		if r > maxVal {
			return fmt.Errorf("Cannot decrease refcount entry width to %d bits: Cluster at offset %#x has a refcount of %d", newBits, int64(k)<<img.clusterBits, r)
		}
	}
	rc := img.rc
	oldBits, oldPer, oldMax := rc.bits, rc.perBlock, rc.maxVal
	oldOrder := img.hdr.refcountOrder
	rc.bits, rc.perBlock, rc.maxVal = newBits, img.clusterSize*8/int64(newBits), maxVal
	img.hdr.refcountOrder = order
	if err := img.rebuildRefcounts(ref); err != nil {
		rc.bits, rc.perBlock, rc.maxVal = oldBits, oldPer, oldMax
		img.hdr.refcountOrder = oldOrder
		return err
	}
	return nil
}

// computeRefs runs the check computation and returns the refcounts the structures
// should hold once the current refcount table and blocks are replaced.
func (img *Image) computeRefs() (*block.CheckResult, []uint64, error) {
	res, err := img.checkLocked(block.RepairNone)
	if err != nil {
		return nil, nil, err
	}
	c := img.lastCheck
	img.lastCheck = nil
	cs := img.clusterSize
	dec := func(off, n int64) {
		for k := off >> img.clusterBits; k <= (off+n-1)>>img.clusterBits && k < int64(len(c)); k++ {
			if c[k] > 0 {
				c[k]--
			}
		}
	}
	dec(int64(img.hdr.refTableOffset), int64(img.hdr.refTableClusters)*cs)
	for _, e := range img.rc.table {
		if off := int64(e & refTableMask); off > 0 && off&(cs-1) == 0 {
			dec(off, cs)
		}
	}
	return res, c, nil
}

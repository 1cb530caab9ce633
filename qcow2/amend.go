package qcow2

import (
	"errors"
	"fmt"
	"math/bits"
	"sort"
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

// amendOptions and createOnlyOptions are qcow2's option lists in QEMU 7.2
// (qcow2_amend_opts, and the rest of qcow2_create_opts).
var (
	amendOptions = map[string]bool{"size": true, "compat": true, "backing_file": true, "backing_fmt": true,
		"data_file": true, "data_file_raw": true, "lazy_refcounts": true, "refcount_bits": true,
		"encrypt.new-secret": true, "encrypt.old-secret": true, "encrypt.keyslot": true,
		"encrypt.state": true, "encrypt.iter-time": true}
	createOnlyOptions = map[string]bool{"cluster_size": true, "preallocation": true, "extended_l2": true,
		"compression_type": true, "encryption": true, "encrypt.format": true, "encrypt.key-secret": true,
		"encrypt.cipher-alg": true, "encrypt.cipher-mode": true, "encrypt.ivgen-alg": true,
		"encrypt.ivgen-hash-alg": true, "encrypt.hash-alg": true}
)

// Amend changes compat, lazy_refcounts, refcount_bits and size in place (qemu-img
// amend), with QEMU 7.2's checks and messages: option names are checked first (a
// creation-only option gets qemu-img's hint on a second line), and the backing file
// cannot be changed (rebase does that) — naming the current one is accepted.
func (img *Image) Amend(options map[string]string) error {
	if img.ro {
		return block.ErrReadOnly
	}
	keys := make([]string, 0, len(options))
	for k := range options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	allKnown := true
	for _, k := range keys {
		allKnown = allKnown && (amendOptions[k] || createOnlyOptions[k])
	}
	for _, k := range keys {
		if !amendOptions[k] {
			if allKnown {
				return fmt.Errorf("Invalid parameter '%s'\nThis option is only supported for image creation", k)
			}
			return fmt.Errorf("Invalid parameter '%s'", k)
		}
	}
	version := img.hdr.version
	lazy := img.hdr.compatible&compatLazyRefs != 0
	order := img.hdr.refcountOrder
	newSize := int64(-1)
	for _, k := range keys {
		v := options[k]
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
			n, err := ParseSize(v)
			if err != nil || n < 0 {
				return errors.New("Parameter 'size' expects a non-negative number below 2^64\n" +
					"Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n" +
					"and exabytes, respectively.")
			}
			newSize = n
		case "data_file":
			if !img.external {
				return errors.New("data-file can only be set for images that use an external data file")
			}
			return errors.New("qcow2: changing the data file is not supported")
		case "data_file_raw":
			return errors.New("qcow2: changing data_file_raw is not supported")
		case "backing_file", "backing_fmt":
		default: // encrypt.*
			return errors.New("Changing the encryption parameters is not supported")
		}
	}
	_, hasFile := options["backing_file"]
	_, hasFmt := options["backing_fmt"]
	if (hasFile || hasFmt) && (options["backing_file"] != img.hdr.backingFile || options["backing_fmt"] != img.hdr.backingFormat) {
		return errors.New("Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.")
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
	if newSize >= 0 && newSize != img.Size() {
		// QEMU truncates after the other changes, before a downgrade; doing it first
		// gives the same image.
		if err := img.Resize(newSize, block.ResizeOptions{Shrink: true}); err != nil {
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
	res, err := img.checkRefs(block.RepairNone, true)
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

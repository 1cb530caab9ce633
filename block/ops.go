package block

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// CompareResult is the outcome of Compare, in qemu-img compare's terms.
type CompareResult struct {
	Identical bool
	// Message is the line qemu-img prints: "Images are identical.", "Content mismatch
	// at offset N!", "Strict mode: ...".
	Message string
	// SizeWarning: sizes differ in non-strict mode ("Warning: Image size mismatch!").
	SizeWarning bool
}

const compareChunk = 1 << 20

// Compare compares the guest views of a and b as qemu-img compare does: mismatches are
// reported at the first differing 512-byte sector; in non-strict mode a larger image
// must read as zeroes past the smaller one's end; strict mode also requires equal sizes
// and equal allocation status.
func Compare(a, b Driver, strict bool, progress func(done, total int64)) (*CompareResult, error) {
	sa, sb := a.Size(), b.Size()
	res := &CompareResult{}
	if sa != sb {
		if strict {
			res.Message = "Strict mode: Image size mismatch!"
			return res, nil
		}
		res.SizeWarning = true
	}
	total := max(sa, sb)
	ba := make([]byte, compareChunk)
	bb := make([]byte, compareChunk)
	var stA, stB Status
	off := int64(0)
	for off < total {
		n := min(int64(compareChunk), total-off)
		za, zb := true, true // beyond an image's end reads as zero
		if off < sa {
			st, err := statusAt(a, &stA, off)
			if err != nil {
				return nil, err
			}
			n = min(n, st.Offset+st.Length-off)
			za = st.Zero
			if strict && off < sb {
				st2, err := statusAt(b, &stB, off)
				if err != nil {
					return nil, err
				}
				// qemu compares the raw status words, which include BDRV_BLOCK_EOF: a run
				// reaching the end of one image but not the other is a mismatch too.
				eof1, eof2 := st.Offset+st.Length >= sa, st2.Offset+st2.Length >= sb
				if st.Allocated != st2.Allocated || st.Zero != st2.Zero || st.Data != st2.Data || eof1 != eof2 {
					res.Message = fmt.Sprintf("Strict mode: Offset %d block status mismatch!", off)
					return res, nil
				}
			}
		} else {
			n = min(n, total-off)
		}
		if off < sb {
			st, err := statusAt(b, &stB, off)
			if err != nil {
				return nil, err
			}
			n = min(n, st.Offset+st.Length-off)
			zb = st.Zero
		}
		if !(za && zb) {
			pa, pb := ba[:n], bb[:n]
			if err := readZeroPast(a, pa, off); err != nil {
				return nil, err
			}
			if err := readZeroPast(b, pb, off); err != nil {
				return nil, err
			}
			if !bytes.Equal(pa, pb) {
				for s := int64(0); s < n; s += 512 {
					e := min(s+512, n)
					if !bytes.Equal(pa[s:e], pb[s:e]) {
						res.Message = fmt.Sprintf("Content mismatch at offset %d!", off+s)
						return res, nil
					}
				}
			}
		}
		off += n
		if progress != nil {
			progress(off, total)
		}
	}
	res.Identical = true
	res.Message = "Images are identical."
	return res, nil
}

// statusAt returns a status covering off, reusing *cache when it still does.
func statusAt(d Driver, cache *Status, off int64) (Status, error) {
	if cache.Length > 0 && off >= cache.Offset && off < cache.Offset+cache.Length {
		return *cache, nil
	}
	st, err := d.BlockStatus(off, d.Size()-off)
	if err != nil {
		return Status{}, err
	}
	if st.Length <= 0 {
		return Status{}, fmt.Errorf("%s: block status of offset %d returned an empty range", d.Filename(), off)
	}
	st.Offset = off
	*cache = st
	return st, nil
}

// readZeroPast reads p at off, with bytes past the image end reading as zero.
func readZeroPast(d Driver, p []byte, off int64) error {
	size := d.Size()
	if off >= size {
		clear(p)
		return nil
	}
	in := p
	if off+int64(len(p)) > size {
		in = p[:size-off]
		clear(p[size-off:])
	}
	return readFull(d, in, off)
}

// MapEntry is one line of qemu-img map.
type MapEntry struct {
	Start, Length int64
	Depth         int
	Present       bool
	Zero          bool
	Data          bool
	Offset        int64 // -1: none
	File          string
}

// Map lists d's block status over [start, start+length), merging neighbours as
// qemu-img map does (same flags and depth, contiguous host offsets).
func Map(d Driver, start, length int64) ([]MapEntry, error) {
	end := min(start+length, d.Size())
	var out []MapEntry
	for off := start; off < end; {
		st, err := d.BlockStatus(off, end-off)
		if err != nil {
			return nil, err
		}
		if st.Length <= 0 {
			return nil, fmt.Errorf("%s: block status of offset %d returned an empty range", d.Filename(), off)
		}
		n := min(st.Length, end-off)
		e := MapEntry{Start: off, Length: n, Depth: st.Depth, Present: st.Allocated, Zero: st.Zero,
			Data: st.Data, Offset: st.HostOffset, File: st.HostFile}
		if e.Offset < 0 {
			e.Offset, e.File = -1, ""
		}
		if l := len(out); l > 0 && mergeable(out[l-1], e) {
			out[l-1].Length += n
		} else {
			out = append(out, e)
		}
		off += n
	}
	return out, nil
}

func mergeable(a, b MapEntry) bool {
	if a.Depth != b.Depth || a.Present != b.Present || a.Zero != b.Zero || a.Data != b.Data || a.File != b.File {
		return false
	}
	if a.Offset < 0 || b.Offset < 0 {
		return a.Offset < 0 && b.Offset < 0
	}
	return a.Offset+a.Length == b.Offset
}

// CommitOptions tune Commit.
type CommitOptions struct {
	// Drop leaves the top image as it is (-d, implied by -b).
	Drop bool
	// AfterWrite, if set, runs after each write to the base (crash-test hook).
	AfterWrite func()
	Progress   func(done, total int64)
}

// Commit copies everything the layers above base allocate into base (which must be
// open writable, separately from top's read-only chain), flushes it, then — unless
// Drop — empties top so it reads through to base. Until base is flushed, top still
// shadows every range being written, so a crash at any point loses nothing: the
// chain reads as before, or (after MakeEmpty began) the same bytes from base.
func Commit(top Driver, baseDepth int, base Driver, o CommitOptions) error {
	size := top.Size()
	if base.Size() < size {
		if err := base.Resize(size, ResizeOptions{}); err != nil {
			return fmt.Errorf("Could not resize the base image: %v", err)
		}
	}
	buf := make([]byte, compareChunk)
	for off := int64(0); off < size; {
		st, err := top.BlockStatus(off, size-off)
		if err != nil {
			return err
		}
		if st.Length <= 0 {
			return fmt.Errorf("%s: block status of offset %d returned an empty range", top.Filename(), off)
		}
		n := min(st.Length, int64(len(buf)), size-off)
		if st.Allocated && st.Depth < baseDepth {
			if st.Zero {
				if err := base.WriteZeroes(off, n, 0); err != nil {
					return err
				}
			} else {
				if err := readFull(top, buf[:n], off); err != nil {
					return err
				}
				if _, err := base.WriteAt(buf[:n], off); err != nil {
					return err
				}
			}
			if o.AfterWrite != nil {
				o.AfterWrite()
			}
		}
		off += n
		if o.Progress != nil {
			o.Progress(off, size)
		}
	}
	if err := base.Flush(); err != nil {
		return err
	}
	if o.Drop {
		return nil
	}
	e, ok := top.(Emptier)
	if !ok {
		if err := emptyByRecreate(top); err != nil {
			return fmt.Errorf("Could not empty %s: %v", top.Filename(), err)
		}
		return nil
	}
	if err := e.MakeEmpty(); err != nil {
		return fmt.Errorf("Could not empty %s: %v", top.Filename(), err)
	}
	return top.Flush()
}

// emptyByRecreate empties a layer whose driver has no Emptier: a fresh image of the
// same format, size, options and backing reference is created beside it, synced, and
// renamed over it. The rename is atomic, so a crash leaves either the old top (whose
// data the base already holds) or the empty one. The options are read back from the
// driver's info, whose format-specific names follow QEMU's option names with '-' for
// '_'. Layers this cannot reproduce faithfully (internal snapshots, external data
// files, encryption) are refused rather than silently changed.
func emptyByRecreate(top Driver) error {
	inf, ok := top.(Infoer)
	if !ok {
		return fmt.Errorf("%s does not support emptying nodes", top.Format())
	}
	info, err := inf.Info()
	if err != nil {
		return err
	}
	snaps := len(info.Snapshots)
	if s, ok := top.(Snapshotter); ok {
		l, err := s.Snapshots()
		if err != nil {
			return err
		}
		snaps += len(l)
	}
	if snaps > 0 || info.Encrypted {
		return fmt.Errorf("%s does not support emptying images with snapshots or encryption", top.Format())
	}
	opts := map[string]string{}
	if info.ClusterSize > 0 {
		opts["cluster_size"] = fmt.Sprint(info.ClusterSize)
	}
	if data, ok := info.FormatSpecific["data"].(map[string]any); ok {
		for k, v := range data {
			switch k {
			case "corrupt", "bitmaps":
				continue
			case "data-file", "data-file-raw", "encrypt":
				return fmt.Errorf("%s does not support emptying images with %s", top.Format(), k)
			}
			switch x := v.(type) {
			case bool:
				if x {
					opts[strings.ReplaceAll(k, "-", "_")] = "on"
				} else {
					opts[strings.ReplaceAll(k, "-", "_")] = "off"
				}
			case string, int, int64, float64, uint32, uint64, int32:
				opts[strings.ReplaceAll(k, "-", "_")] = fmt.Sprint(x)
			default:
				return fmt.Errorf("%s does not support emptying nodes", top.Format())
			}
		}
	}
	f, err := Lookup(top.Format())
	if err != nil {
		return err
	}
	name := top.Filename()
	fi, err := os.Stat(name)
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(name), "."+filepath.Base(name)+".empty")
	os.Remove(tmp)
	co := CreateOptions{Size: top.Size(), Options: opts, Backing: info.BackingFilename, BackingFormat: info.BackingFilenameFormat}
	if err := f.Create(tmp, co); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := syncPath(tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Chmod(tmp, fi.Mode().Perm()); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncPath(filepath.Dir(name))
}

func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// RebaseOptions tune Rebase.
type RebaseOptions struct {
	AfterWrite func()
	Progress   func(done, total int64)
}

// Rebase (safe mode) makes top's guest view independent of its old backing file and
// then points it at newBacking (nil: no backing): wherever top does not allocate a range
// and the old and new backing views differ, the old view is copied into top. The
// copies do not change what top reads, and the header is rewritten only after they are
// flushed, so a crash leaves the chain reading the same bytes either way.
func Rebase(top Driver, newBacking Driver, newName, newFormat string, o RebaseOptions) error {
	bs, ok := top.(BackingSetter)
	if !ok {
		return fmt.Errorf("Could not change the backing file to '%s': %v", newName, ErrUnsupported)
	}
	size := top.Size()
	const gran = 64 << 10
	oldBuf := make([]byte, compareChunk)
	newBuf := make([]byte, compareChunk)
	for off := int64(0); off < size; {
		st, err := top.BlockStatus(off, size-off)
		if err != nil {
			return err
		}
		if st.Length <= 0 {
			return fmt.Errorf("%s: block status of offset %d returned an empty range", top.Filename(), off)
		}
		n := min(st.Length, int64(len(oldBuf)), size-off)
		if !(st.Allocated && st.Depth == 0) {
			po, pn := oldBuf[:n], newBuf[:n]
			if err := readFull(top, po, off); err != nil {
				return err
			}
			if newBacking != nil {
				if err := readZeroPast(newBacking, pn, off); err != nil {
					return err
				}
			} else {
				clear(pn)
			}
			for s := int64(0); s < n; {
				e := min((off+s)/gran*gran+gran-off, n)
				if !bytes.Equal(po[s:e], pn[s:e]) {
					if _, err := top.WriteAt(po[s:e], off+s); err != nil {
						return err
					}
					if o.AfterWrite != nil {
						o.AfterWrite()
					}
				}
				s = e
			}
		}
		off += n
		if o.Progress != nil {
			o.Progress(off, size)
		}
	}
	if err := top.Flush(); err != nil {
		return err
	}
	if err := bs.SetBacking(newName, newFormat); err != nil {
		return fmt.Errorf("Could not change the backing file to '%s': %v", newName, err)
	}
	return top.Flush()
}

// DDRange returns the input range qemu-img dd copies: from skip blocks in up to
// count blocks from the *start* of the input (qemu-img counts skipped blocks against
// count), clipped to the input size. The output is end-start bytes.
func DDRange(inSize, bs, count, skip int64) (start, end int64, err error) {
	if bs <= 0 || skip < 0 {
		return 0, 0, errors.New("invalid block size or skip")
	}
	end = inSize
	if count >= 0 && count <= math.MaxInt64/bs && count*bs < end {
		end = count * bs
	}
	if skip > math.MaxInt64/bs || skip*bs > end {
		return end, end, nil
	}
	return skip * bs, end, nil
}

// DD copies in[start:end) (see DDRange) to out at offset 0, bs bytes at a time.
func DD(in, out Driver, bs, count, skip int64) error {
	start, end, err := DDRange(in.Size(), bs, count, skip)
	if err != nil {
		return err
	}
	buf := make([]byte, bs)
	for off := start; off < end; off += bs {
		n := min(bs, end-off)
		if err := readFull(in, buf[:n], off); err != nil {
			return err
		}
		if _, err := out.WriteAt(buf[:n], off-start); err != nil {
			return fmt.Errorf("error while writing to output image file: %v", err)
		}
	}
	return out.Flush()
}

// FileSize is the allocated size of a host file (for info's actual-size on formats
// that do not implement ActualSizer).
func FileSize(name string) (int64, error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	d := &rawDriver{f: f, name: name}
	return d.ActualSize()
}

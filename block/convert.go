package block

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// ConvertOptions tune Convert (qemu-img convert's flags after the images are open).
type ConvertOptions struct {
	// Compress writes every non-zero cluster through the target's ClusterCompressor (-c).
	Compress bool
	// Sparse is -S in bytes: zero-filled runs of this granularity inside data are not
	// written (or written as zeroes when the target is not known to be zero). 0 turns
	// zero detection off and writes every byte, holes included (fully allocated output).
	Sparse int64
	// Workers is -m: reads (and compression) in flight at once; 0 means 8 as in qemu-img.
	// Compression always uses at least every core.
	Workers int
	// TargetIsZero: the target reads as zeroes (fresh image or --target-is-zero), so zero
	// and hole ranges are never written.
	TargetIsZero bool
	// TargetHasBacking (-B): ranges the source's top layer does not allocate are left
	// to the target's backing file; zeroes elsewhere are written explicitly.
	TargetHasBacking bool
	// Progress, if set, is called from one goroutine with bytes done so far.
	Progress func(done, total int64)
	// NoFlush skips the final Flush of the target (qemu-img convert's default cache mode
	// "unsafe" does not fsync the output either; Close still writes all metadata).
	NoFlush bool
	// ChunkSize is the read granularity; 0 means 2 MiB. Output never depends on it
	// except through which zero granules are detected, which are on a fixed grid.
	ChunkSize int64
}

const (
	clsData = iota
	clsZero
	clsBacking
)

// ContentStatuser is an optional Driver interface for formats whose BlockStatus
// mirrors QEMU's (so map and compare print what qemu-img prints) but who know more
// about which ranges read as zeroes, e.g. vhdx, which QEMU reports as all data:
// Convert asks it instead, so such ranges are neither read nor scanned.
type ContentStatuser interface {
	ContentStatus(off, n int64) (Status, error)
}

type opKind uint8

const (
	opData opKind = iota
	opZero
	opCompressed
)

type writeOp struct {
	kind opKind
	off  int64
	data []byte // opData: slice of the task buffer; opCompressed: compressed bytes
	raw  []byte // opCompressed: the uncompressed cluster
	n    int64  // opZero length
}

type convTask struct {
	off, n int64
	cls    int
	buf    []byte
	// release unmaps a Viewer's view the ops point into (nil: they use buf); the
	// writer calls it once the task is done, whatever happened.
	release func()
	ops     []writeOp
	err     error
	done    chan struct{}
}

// Convert copies src's guest view into dst (both already open; dst at least as large).
// Ranges are found with BlockStatus, read by a bounded set of workers, compressed on
// every core for compressed targets, and written by one goroutine in offset order, so
// the target's bytes do not depend on timing or on Workers. Memory is bounded by a fixed
// number of chunk buffers.
//
// There is no out-of-order mode (qemu-img -W): writes reach a formatted target in
// offset order so its layout is deterministic, and raw targets, whose bytes do not
// depend on write order, are already written by the workers directly.
func Convert(src, dst Driver, o ConvertOptions) error {
	size := src.Size()
	if dst.Size() < size {
		return fmt.Errorf("Target image is smaller than the source (%d < %d bytes)", dst.Size(), size)
	}
	var cc ClusterCompressor
	unit := int64(0)
	if o.Compress {
		var ok bool
		if cc, ok = dst.(ClusterCompressor); !ok {
			return errors.New("Compression not supported for this file format")
		}
		unit = cc.CompressionUnit()
		if unit <= 0 || unit > 64<<20 {
			return fmt.Errorf("invalid compression unit %d", unit)
		}
	}
	chunk := o.ChunkSize
	if chunk <= 0 {
		chunk = 2 << 20
	}
	if unit > 0 {
		chunk = max(unit, chunk/unit*unit)
	}
	workers := o.Workers
	if workers <= 0 {
		workers = 8
	}
	if o.Compress {
		workers = max(workers, runtime.NumCPU())
	}
	workers = min(workers, 64)
	// Granule for zero detection: a fixed grid so output does not depend on chunking.
	gran := o.Sparse
	if gran > 0 && dst.Format() != "raw" {
		// Skipping part of a cluster still allocates it; only whole-cluster zero runs help.
		if u, ok := dst.(ClusterCompressor); ok && u.CompressionUnit() > gran && u.CompressionUnit()%gran == 0 {
			gran = u.CompressionUnit()
		}
	}
	direct := dst.Format() == "raw" && !o.Compress
	targetZero := o.TargetIsZero && !o.TargetHasBacking

	_, srcBacked := backingOf(src)
	cur := &statusCursor{src: src, size: size, hasBacking: srcBacked, keepBacking: o.TargetHasBacking && srcBacked}

	nbuf := 2*workers + 2
	if o.Compress {
		// Each compressed task also holds its compressed clusters until written: keep
		// one task per worker plus the one being written.
		nbuf = workers + 2
	}
	bufs := make(chan []byte, nbuf)
	for range nbuf {
		bufs <- nil // allocated lazily: small images need few
	}
	work := make(chan *convTask, nbuf)
	ordered := make(chan *convTask, 4*nbuf)
	var failed atomic.Bool

	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A view of a file that shrinks under us faults: make that a panic
			// safeProcess turns into an error.
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			for t := range work {
				if !failed.Load() {
					t.err = safeProcess(t, src, dst, cc, unit, gran, o.Sparse == 0, direct, targetZero)
				}
				if t.err != nil {
					failed.Store(true)
				}
				close(t.done)
			}
		}()
	}

	// Writer: one goroutine, offset order.
	var werr error
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		var done int64
		for t := range ordered {
			<-t.done
			if werr == nil && t.err != nil {
				werr = t.err
			}
			if werr == nil && !direct {
				werr = safeRunOps(dst, cc, t.ops, targetZero)
				if werr != nil {
					failed.Store(true)
				}
			}
			if t.release != nil {
				t.release()
			}
			if t.buf != nil {
				bufs <- t.buf
			}
			done += t.n
			if o.Progress != nil && werr == nil {
				o.Progress(done, size)
			}
		}
	}()

	// Dispatcher.
	var derr error
	off := int64(0)
	for off < size && !failed.Load() {
		t, err := nextTask(cur, off, size, chunk, unit > 0)
		if err != nil {
			derr = err
			break
		}
		if t.cls == clsData {
			t.buf = <-bufs
			if t.buf == nil {
				t.buf = make([]byte, chunk)
			}
		}
		t.done = make(chan struct{})
		ordered <- t
		work <- t
		off += t.n
	}
	close(work)
	wg.Wait()
	close(ordered)
	<-wdone
	if derr != nil {
		return derr
	}
	if werr != nil {
		return werr
	}
	if o.NoFlush {
		return nil
	}
	return dst.Flush()
}

// nextTask cuts the next range at off: data ranges end at the next chunk boundary
// (cluster-aligned windows for compressed targets), zero and backing ranges run as
// far as their class does.
func nextTask(cur *statusCursor, off, size, chunk int64, windowed bool) (*convTask, error) {
	grid := min((off/chunk+1)*chunk, size)
	if windowed {
		// Whole window is one class, or it is read as data (zero clusters inside are
		// found by content).
		cls, end, err := cur.run(off, grid)
		if err != nil {
			return nil, err
		}
		if end < grid {
			return &convTask{off: off, n: grid - off, cls: clsData}, nil
		}
		if cls != clsData {
			// Extend over following whole windows of the same class.
			for end < size {
				next := min(end+chunk, size)
				c2, e2, err := cur.run(end, next)
				if err != nil {
					return nil, err
				}
				if c2 != cls || e2 < next {
					break
				}
				end = next
			}
			return &convTask{off: off, n: end - off, cls: cls}, nil
		}
		return &convTask{off: off, n: grid - off, cls: clsData}, nil
	}
	cls, _, err := cur.at(off)
	if err != nil {
		return nil, err
	}
	limit := size
	if cls == clsData {
		limit = grid // never look further than this chunk: keeps the walk linear
	}
	cls, end, err := cur.run(off, limit)
	if err != nil {
		return nil, err
	}
	return &convTask{off: off, n: end - off, cls: cls}, nil
}

// statusCursor classifies source ranges, merging consecutive statuses of one class.
type statusCursor struct {
	src         Driver
	size        int64
	hasBacking  bool
	keepBacking bool
	// last status
	stOff, stEnd int64
	stCls        int
}

func (c *statusCursor) classify(st Status) int {
	if c.keepBacking && (st.Depth > 0 || !st.Allocated) {
		return clsBacking
	}
	if st.Zero || (!st.Data && !st.Allocated && !c.hasBacking) {
		return clsZero
	}
	return clsData
}

func (c *statusCursor) at(off int64) (int, int64, error) {
	if off >= c.stOff && off < c.stEnd {
		return c.stCls, c.stEnd, nil
	}
	var st Status
	var err error
	if cs, ok := c.src.(ContentStatuser); ok {
		st, err = cs.ContentStatus(off, c.size-off)
	} else {
		st, err = c.src.BlockStatus(off, c.size-off)
	}
	if err != nil {
		return 0, 0, err
	}
	if st.Length <= 0 {
		return 0, 0, fmt.Errorf("%s: block status of offset %d returned an empty range", c.src.Filename(), off)
	}
	c.stOff, c.stEnd, c.stCls = off, min(off+st.Length, c.size), c.classify(st)
	return c.stCls, c.stEnd, nil
}

// run returns the class at off and how far (up to limit) it extends.
func (c *statusCursor) run(off, limit int64) (int, int64, error) {
	cls, end, err := c.at(off)
	if err != nil {
		return 0, 0, err
	}
	for end < limit {
		c2, e2, err := c.at(end)
		if err != nil {
			return 0, 0, err
		}
		if c2 != cls {
			break
		}
		end = e2
	}
	return cls, min(end, limit), nil
}

func backingOf(d Driver) (Driver, bool) {
	if b, ok := d.(Backed); ok {
		if bd := b.Backing(); bd != nil {
			return bd, true
		}
	}
	return nil, false
}

// safeProcess runs processTask, turning a driver panic on a hostile image into an
// error: a worker goroutine's panic would otherwise end the process with a trace.
func safeProcess(t *convTask, src, dst Driver, cc ClusterCompressor, unit, gran int64, full, direct, targetZero bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error at byte %d: %v", t.off, r)
		}
	}()
	return processTask(t, src, dst, cc, unit, gran, full, direct, targetZero)
}

// processTask reads a data task and turns it into write ops (executed here for direct
// raw targets, else by the ordered writer).
func processTask(t *convTask, src, dst Driver, cc ClusterCompressor, unit, gran int64, full, direct, targetZero bool) error {
	switch t.cls {
	case clsBacking:
		return nil
	case clsZero:
		if !full {
			t.ops = []writeOp{{kind: opZero, off: t.off, n: t.n}}
			break
		}
		// -S 0: zeroes are written as data, chunk by chunk.
		for o := int64(0); o < t.n; o += int64(len(zeroChunk)) {
			n := min(int64(len(zeroChunk)), t.n-o)
			t.ops = append(t.ops, writeOp{kind: opData, off: t.off + o, data: zeroChunk[:n]})
		}
	case clsData:
		buf := t.buf[:t.n]
		if v, ok := src.(Viewer); ok {
			b, rel, err := v.View(t.off, t.n)
			if err != nil {
				return err
			}
			if b != nil {
				buf, t.release = b, rel
			}
		}
		if t.release == nil {
			if err := readFull(src, buf, t.off); err != nil {
				return err
			}
		}
		switch {
		case cc != nil:
			if err := compressOps(t, buf, cc, unit); err != nil {
				return err
			}
		case full:
			t.ops = []writeOp{{kind: opData, off: t.off, data: buf}}
		default:
			t.ops = sparseOps(buf, t.off, gran)
		}
	}
	if direct {
		return runOps(dst, nil, t.ops, targetZero)
	}
	return nil
}

func compressOps(t *convTask, buf []byte, cc ClusterCompressor, unit int64) error {
	for o := int64(0); o < int64(len(buf)); o += unit {
		p := buf[o:min(o+unit, int64(len(buf)))]
		if isZero(p) {
			t.ops = append(t.ops, writeOp{kind: opZero, off: t.off + o, n: int64(len(p))})
			continue
		}
		if int64(len(p)) < unit {
			// Last cluster of an image whose size is not cluster-aligned: pad with zeroes.
			q := make([]byte, unit)
			copy(q, p)
			p = q
		}
		c, err := cc.CompressCluster(p)
		if err != nil {
			return err
		}
		t.ops = append(t.ops, writeOp{kind: opCompressed, off: t.off + o, data: c, raw: p})
	}
	return nil
}

// sparseOps splits buf (guest offset off) on a fixed gran grid into data writes and
// zero ranges; gran 0 means one data write.
func sparseOps(buf []byte, off, gran int64) []writeOp {
	if gran <= 0 {
		return []writeOp{{kind: opData, off: off, data: buf}}
	}
	var ops []writeOp
	pos := int64(0)
	n := int64(len(buf))
	for pos < n {
		end := min((off+pos)/gran*gran+gran-off, n)
		zero := isZero(buf[pos:end])
		k := opData
		if zero {
			k = opZero
		}
		if l := len(ops); l > 0 && ops[l-1].kind == k {
			if k == opZero {
				ops[l-1].n += end - pos
			} else {
				ops[l-1].data = buf[ops[l-1].off-off : end]
			}
		} else if k == opZero {
			ops = append(ops, writeOp{kind: opZero, off: off + pos, n: end - pos})
		} else {
			ops = append(ops, writeOp{kind: opData, off: off + pos, data: buf[pos:end]})
		}
		pos = end
	}
	return ops
}

// safeRunOps is runOps with a driver panic turned into an error (see safeProcess).
func safeRunOps(dst Driver, cc ClusterCompressor, ops []writeOp, targetZero bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error while writing: %v", r)
		}
	}()
	return runOps(dst, cc, ops, targetZero)
}

func runOps(dst Driver, cc ClusterCompressor, ops []writeOp, targetZero bool) error {
	batcher, _ := cc.(CompressedBatcher)
	var batch []CompressedCluster
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := batcher.WriteCompressedBatch(batch)
		if err != nil {
			err = fmt.Errorf("error while writing at byte %d: %v", batch[0].Off, err)
		}
		batch = batch[:0]
		return err
	}
	for _, op := range ops {
		if op.kind == opCompressed && batcher != nil {
			batch = append(batch, CompressedCluster{Off: op.off, Compressed: op.data, Raw: op.raw})
			continue
		}
		if op.kind == opZero && targetZero {
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		switch op.kind {
		case opData:
			if _, err := dst.WriteAt(op.data, op.off); err != nil {
				return fmt.Errorf("error while writing at byte %d: %v", op.off, err)
			}
		case opZero:
			if err := dst.WriteZeroes(op.off, op.n, ZeroMayUnmap); err != nil {
				return fmt.Errorf("error while writing zeroes at byte %d: %v", op.off, err)
			}
		case opCompressed:
			if err := cc.WriteCompressed(op.off, op.data, op.raw); err != nil {
				return fmt.Errorf("error while writing at byte %d: %v", op.off, err)
			}
		}
	}
	return flush()
}

// readFull reads len(p) bytes at off; a short read at the image end is an error.
func readFull(d io.ReaderAt, p []byte, off int64) error {
	n, err := d.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("error while reading at byte %d: %v", off+int64(n), err)
}

// isZero reports whether p is all zero bytes.
func isZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), len(zeroChunk))
		if !bytes.Equal(p[:n], zeroChunk[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}

// Package vmstate owns gemu's snapshot and migration stream: a versioned format of
// gemu's own (QEMU's stream is not a compatibility target; management tools treat it
// as opaque) carrying a machine's configuration fingerprint, one section per device
// and vCPU (a bus.State: name, version, the device's own bytes) and guest RAM, sparse
// (zero pages are not sent). It also offers the name-keyed field encoding devices and
// CPUs may use for their section data (fields.go).
//
// The stream, all integers little-endian:
//
//	header:  "GEMUVMST" | u32 format version (2) | u32 n | n × (u16 len key, u16 len value)
//	         config entries (the fingerprint: machine type, RAM size, CPUs, devices, ...)
//	records: u8 kind, then
//	         kind 1 (section):   u16 name length | name | u32 version | u32 length | data
//	         kind 3 (RAM batch): u32 n | n × (u64 guest-physical address | u32 pages |
//	                             u32 flags) | zero bytes up to the next multiple of 4096
//	                             from the start of the stream | the pages of every entry
//	                             without flag 1, 4096 bytes each, in entry order
//	         kind 0 (end):       u64 sections | u64 RAM pages with data (a check against
//	                             truncation)
//
// A batch entry with flag 1 (zero) carries no data: its pages read zero. A live
// migration sends RAM in passes, so a page may come several times; the last one counts.
// Every page the stream does not carry is zero in the restored guest. The padding puts
// every page's data at a page-aligned offset in the stream, so a restore from a file
// can map the pages straight from it (LoadFile) instead of copying them.
//
// Format version 1 (gemu before live migration) had no batches but kind 2 RAM runs
// (u64 address | u32 pages | the pages' data, unaligned); Load still reads it, LoadFile
// copies its pages.
//
// Reading is bounded: names, section sizes, config entries, batch entries and the
// total of section data have fixed limits, data is read as it arrives (a stream that
// claims a large section and ends early costs no large allocation), and every RAM run
// must lie inside the destination's RAM.
//
// It must not know a board: boards (machine/virt) choose the sections and the config.
package vmstate

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"gemu/hw/bus"
)

// Magic starts every stream; Version is the format version this package writes.
const (
	Magic    = "GEMUVMST"
	Version  = 2
	PageSize = 4096
)

const (
	recEnd      = 0
	recSection  = 1
	recRAMv1    = 2 // format version 1 only
	recRAMBatch = 3

	flagZero = 1

	maxConfig       = 4096     // config entries
	maxString       = 4096     // one key, value or section name
	maxSection      = 64 << 20 // one section's data
	maxSectionTotal = 256 << 20
	maxRun          = 1 << 18 // pages in one RAM run (1 GiB)
	maxBatch        = 1 << 14 // entries in one RAM batch
	batchEntry      = 16      // bytes of one batch entry
)

// KV is one entry of a machine's configuration fingerprint.
type KV struct{ Key, Value string }

// Config is the fingerprint of the machine a stream was saved from: a restore refuses
// a stream whose Config differs from the destination's.
type Config []KV

// Diff returns nil if c (the stream's) and here (the destination's) are the same
// configuration, else an error naming the first difference.
func (c Config) Diff(here Config) error {
	m := map[string]string{}
	for _, kv := range here {
		m[kv.Key] = kv.Value
	}
	seen := map[string]bool{}
	for _, kv := range c {
		seen[kv.Key] = true
		v, ok := m[kv.Key]
		if !ok {
			return fmt.Errorf("the saved machine has %s=%s, this one has no %s", kv.Key, kv.Value, kv.Key)
		}
		if v != kv.Value {
			return fmt.Errorf("the saved machine has %s=%s, this one %s=%s", kv.Key, kv.Value, kv.Key, v)
		}
	}
	for _, kv := range here {
		if !seen[kv.Key] {
			return fmt.Errorf("this machine has %s=%s, the saved one has no %s", kv.Key, kv.Value, kv.Key)
		}
	}
	return nil
}

// Stats counts what a Writer sent or a Load read.
type Stats struct {
	Bytes     uint64 // stream bytes
	Pages     uint64 // RAM pages transferred with their data (non-zero when sent)
	ZeroPages uint64 // RAM pages sent or skipped as zero
	Sections  uint64
	Mapped    uint64 // pages LoadFile mapped from the file instead of copying
}

// Writer writes one stream.
type Writer struct {
	w     *bufio.Writer
	cw    *countWriter
	err   error
	Stats Stats
}

type countWriter struct {
	w io.Writer
	n uint64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += uint64(n)
	return n, err
}

// NewWriter writes the header of a stream for a machine of configuration cfg to w.
func NewWriter(w io.Writer, cfg Config) (*Writer, error) {
	cw := &countWriter{w: w}
	sw := &Writer{w: bufio.NewWriterSize(cw, 1<<20), cw: cw}
	le := binary.LittleEndian
	b := []byte(Magic)
	b = le.AppendUint32(b, Version)
	b = le.AppendUint32(b, uint32(len(cfg)))
	for _, kv := range cfg {
		if len(kv.Key) > maxString || len(kv.Value) > maxString {
			return nil, fmt.Errorf("vmstate: config entry %q too long", kv.Key)
		}
		b = le.AppendUint16(b, uint16(len(kv.Key)))
		b = le.AppendUint16(b, uint16(len(kv.Value)))
		b = append(b, kv.Key...)
		b = append(b, kv.Value...)
	}
	sw.write(b)
	return sw, sw.err
}

func (w *Writer) write(b []byte) {
	if w.err == nil {
		_, w.err = w.w.Write(b)
	}
}

// Offset is the number of bytes written so far.
func (w *Writer) Offset() uint64 { return w.cw.n + uint64(w.w.Buffered()) }

// Section writes one device's state.
func (w *Writer) Section(s bus.State) error {
	if len(s.Name) == 0 || len(s.Name) > maxString || len(s.Data) > maxSection || s.Version < 0 {
		return fmt.Errorf("vmstate: section %q cannot be written (%d bytes)", s.Name, len(s.Data))
	}
	le := binary.LittleEndian
	b := []byte{recSection}
	b = le.AppendUint16(b, uint16(len(s.Name)))
	b = append(b, s.Name...)
	b = le.AppendUint32(b, uint32(s.Version))
	b = le.AppendUint32(b, uint32(len(s.Data)))
	w.write(b)
	w.write(s.Data)
	w.Stats.Sections++
	return w.err
}

var zeros [PageSize]byte

// zeroPage reports whether the page p is all zero (bytes.Equal is the runtime's
// vectorized compare).
func zeroPage(p []byte) bool { return bytes.Equal(p, zeros[:len(p)]) }

// run is one batch entry: pages [first, first+n) of the memory being written.
type run struct {
	first, n int
	zero     bool
}

// RAM writes every page of mem, the guest RAM at guest-physical gpa (page aligned;
// len(mem) a multiple of PageSize): the non-zero ones with their data; zero pages are
// not sent (a restore starts from zeroed RAM).
func (w *Writer) RAM(gpa uint64, mem []byte) error {
	return w.ram(gpa, mem, nil, false)
}

// RAMPages writes the pages of mem whose bit is set in sel (bit i%64 of sel[i/64] for
// page i): the non-zero ones with their data, zero ones as zero entries (a page a
// previous pass sent may have become zero). For the passes of a live migration.
func (w *Writer) RAMPages(gpa uint64, mem []byte, sel []uint64) error {
	return w.ram(gpa, mem, sel, true)
}

// BatchBytes bounds the data of one RAM batch: a page is checked for zero when its
// batch is built and sent when the batch is written, a moment later.
const BatchBytes = 16 << 20

func (w *Writer) ram(gpa uint64, mem []byte, sel []uint64, sendZero bool) error {
	if gpa%PageSize != 0 || len(mem)%PageSize != 0 {
		return errors.New("vmstate: RAM not page aligned")
	}
	np := len(mem) / PageSize
	if sel != nil && len(sel)*64 < np {
		return errors.New("vmstate: page selection shorter than the RAM")
	}
	page := func(i int) []byte { return mem[i*PageSize : (i+1)*PageSize] }
	var runs []run
	data := 0
	flush := func() {
		if len(runs) > 0 {
			w.batch(gpa, mem, runs)
		}
		runs, data = runs[:0], 0
	}
	for i := 0; i < np && w.err == nil; {
		if sel != nil {
			if sel[i/64] == 0 {
				i = (i/64 + 1) * 64
				continue
			}
			if sel[i/64]>>(i%64)&1 == 0 {
				i++
				continue
			}
		}
		z := zeroPage(page(i))
		j := i + 1
		for j < np && j-i < maxRun && (sel == nil || sel[j/64]>>(j%64)&1 != 0) && zeroPage(page(j)) == z &&
			(z || data+(j-i)*PageSize < BatchBytes) {
			j++
		}
		if z {
			w.Stats.ZeroPages += uint64(j - i)
		}
		if !z || sendZero {
			runs = append(runs, run{i, j - i, z})
			if !z {
				data += (j - i) * PageSize
			}
			if len(runs) == maxBatch || data >= BatchBytes {
				flush()
			}
		}
		i = j
	}
	flush()
	return w.err
}

// batch writes one RAM batch record of runs of mem (at gpa).
func (w *Writer) batch(gpa uint64, mem []byte, runs []run) {
	le := binary.LittleEndian
	b := make([]byte, 0, 5+batchEntry*len(runs))
	b = append(b, recRAMBatch)
	b = le.AppendUint32(b, uint32(len(runs)))
	for _, r := range runs {
		flags := uint32(0)
		if r.zero {
			flags = flagZero
		}
		b = le.AppendUint64(b, gpa+uint64(r.first)*PageSize)
		b = le.AppendUint32(b, uint32(r.n))
		b = le.AppendUint32(b, flags)
	}
	w.write(b)
	if pad := (PageSize - w.Offset()%PageSize) % PageSize; pad != 0 {
		w.write(zeros[:pad])
	}
	for _, r := range runs {
		if !r.zero {
			w.write(mem[r.first*PageSize : (r.first+r.n)*PageSize])
			w.Stats.Pages += uint64(r.n)
		}
	}
}

// Close writes the end record and flushes; it does not close the underlying writer.
func (w *Writer) Close() error {
	le := binary.LittleEndian
	b := []byte{recEnd}
	b = le.AppendUint64(b, w.Stats.Sections)
	b = le.AppendUint64(b, w.Stats.Pages)
	w.write(b)
	if w.err == nil {
		w.err = w.w.Flush()
	}
	w.Stats.Bytes = w.cw.n
	return w.err
}

// Flush writes what the Writer buffers to the underlying writer.
func (w *Writer) Flush() error {
	if w.err == nil {
		w.err = w.w.Flush()
	}
	w.Stats.Bytes = w.cw.n
	return w.err
}

// Target is where Load puts what it reads.
type Target struct {
	// Config is the destination machine's; a stream of another configuration is
	// refused before anything is written.
	Config Config
	// RAM returns the destination's host memory for n bytes of guest RAM at gpa, or
	// false when the range is not RAM.
	RAM func(gpa, n uint64) ([]byte, bool)
	// Map, for LoadFile only, maps n bytes of the file at offset off (page aligned)
	// as the guest RAM at gpa, copy-on-write (Linux: MAP_PRIVATE|MAP_FIXED); nil, or an
	// error, and LoadFile copies instead.
	Map func(gpa, n uint64, off int64) error
	// Zero makes n bytes of guest RAM at gpa read zero (a batch's zero entry); nil:
	// the bytes RAM returns are cleared.
	Zero func(gpa, n uint64) error
}

// ErrConfig wraps the error of a stream saved from another configuration.
var ErrConfig = errors.New("the stream is from a different machine configuration")

// ReadConfig reads a stream's header and returns its configuration.
func ReadConfig(r io.Reader) (Config, error) {
	cfg, _, err := readHeader(r)
	return cfg, err
}

func readHeader(r io.Reader) (Config, uint32, error) {
	var h [16]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, 0, fmt.Errorf("not a gemu migration stream: %v", short(err))
	}
	if string(h[:8]) != Magic {
		return nil, 0, errors.New("not a gemu migration stream (bad magic)")
	}
	le := binary.LittleEndian
	ver := le.Uint32(h[8:])
	if ver != 1 && ver != Version {
		return nil, 0, fmt.Errorf("migration stream format version %d is not supported (this gemu reads 1 and %d)", ver, Version)
	}
	n := le.Uint32(h[12:])
	if n > maxConfig {
		return nil, 0, fmt.Errorf("migration stream: %d config entries (limit %d)", n, maxConfig)
	}
	cfg := make(Config, 0, min(n, 64))
	for range n {
		var l [4]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return nil, 0, fmt.Errorf("migration stream header: %v", short(err))
		}
		kl, vl := le.Uint16(l[:]), le.Uint16(l[2:])
		if kl > maxString || vl > maxString {
			return nil, 0, errors.New("migration stream header: config entry too long")
		}
		kv := make([]byte, int(kl)+int(vl))
		if _, err := io.ReadFull(r, kv); err != nil {
			return nil, 0, fmt.Errorf("migration stream header: %v", short(err))
		}
		cfg = append(cfg, KV{string(kv[:kl]), string(kv[kl:])})
	}
	return cfg, ver, nil
}

func short(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errors.New("stream truncated")
	}
	return err
}

// Load reads a whole stream into t: it checks the configuration, writes each RAM run
// into t.RAM as it arrives and returns the device sections in stream order. RAM pages
// the stream does not carry are left as they are (the caller zeroes the destination
// first). Every malformed or truncated stream is a one-line error.
func Load(r io.Reader, t Target) ([]bus.State, Stats, error) {
	t.Map = nil
	return load(&streamSrc{r: bufio.NewReaderSize(r, 64<<10)}, t)
}

// source is what load reads from: a stream, or a file it may skip data in.
type source interface {
	io.Reader
	offset() uint64
	// skip moves n bytes on without reading them; false when the source cannot.
	skip(n uint64) (bool, error)
}

type streamSrc struct {
	r io.Reader
	n uint64
}

func (c *streamSrc) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	return n, err
}

func (c *streamSrc) offset() uint64            { return c.n }
func (c *streamSrc) skip(uint64) (bool, error) { return false, nil }

func load(cr source, t Target) ([]bus.State, Stats, error) {
	var st Stats
	cfg, ver, err := readHeader(cr)
	if err != nil {
		return nil, st, err
	}
	if err := cfg.Diff(t.Config); err != nil {
		return nil, st, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	le := binary.LittleEndian
	var secs []bus.State
	var total uint64
	names := map[string]bool{}
	for {
		var k [1]byte
		if _, err := io.ReadFull(cr, k[:]); err != nil {
			return nil, st, fmt.Errorf("migration stream: %v (no end record)", short(err))
		}
		switch {
		case k[0] == recEnd:
			var e [16]byte
			if _, err := io.ReadFull(cr, e[:]); err != nil {
				return nil, st, fmt.Errorf("migration stream end record: %v", short(err))
			}
			if le.Uint64(e[:]) != st.Sections || le.Uint64(e[8:]) != st.Pages {
				return nil, st, fmt.Errorf("migration stream: end record counts %d sections and %d pages, the stream had %d and %d",
					le.Uint64(e[:]), le.Uint64(e[8:]), st.Sections, st.Pages)
			}
			st.Bytes = cr.offset()
			return secs, st, nil
		case k[0] == recSection:
			var h [2]byte
			if _, err := io.ReadFull(cr, h[:]); err != nil {
				return nil, st, fmt.Errorf("migration stream section: %v", short(err))
			}
			nl := le.Uint16(h[:])
			if nl == 0 || nl > maxString {
				return nil, st, errors.New("migration stream: bad section name length")
			}
			b := make([]byte, int(nl)+8)
			if _, err := io.ReadFull(cr, b); err != nil {
				return nil, st, fmt.Errorf("migration stream section: %v", short(err))
			}
			name := string(b[:nl])
			ver, size := le.Uint32(b[nl:]), le.Uint32(b[nl+4:])
			if size > maxSection || total+uint64(size) > maxSectionTotal || ver > 1<<30 {
				return nil, st, fmt.Errorf("migration stream: section %q of %d bytes exceeds the limits", name, size)
			}
			if names[name] {
				return nil, st, fmt.Errorf("migration stream: section %q given twice", name)
			}
			names[name] = true
			var buf bytes.Buffer
			if n, err := buf.ReadFrom(io.LimitReader(cr, int64(size))); err != nil || n != int64(size) {
				return nil, st, fmt.Errorf("migration stream: section %q truncated", name)
			}
			total += uint64(size)
			secs = append(secs, bus.State{Name: name, Version: int(ver), Data: buf.Bytes()})
			st.Sections++
		case k[0] == recRAMv1 && ver == 1:
			var h [12]byte
			if _, err := io.ReadFull(cr, h[:]); err != nil {
				return nil, st, fmt.Errorf("migration stream RAM: %v", short(err))
			}
			gpa, np := le.Uint64(h[:]), uint64(le.Uint32(h[8:]))
			mem, err := ramRun(t, gpa, np)
			if err != nil {
				return nil, st, err
			}
			if _, err := io.ReadFull(cr, mem); err != nil {
				return nil, st, fmt.Errorf("migration stream RAM: %v", short(err))
			}
			st.Pages += np
		case k[0] == recRAMBatch && ver >= 2:
			if err := loadBatch(cr, t, &st); err != nil {
				return nil, st, err
			}
		default:
			return nil, st, fmt.Errorf("migration stream: unknown record kind %d", k[0])
		}
	}
}

// ramRun checks one run of np pages at gpa and returns the destination's memory for it.
func ramRun(t Target, gpa, np uint64) ([]byte, error) {
	if gpa%PageSize != 0 || np == 0 || np > maxRun {
		return nil, fmt.Errorf("migration stream: bad RAM run at %#x (%d pages)", gpa, np)
	}
	mem, ok := t.RAM(gpa, np*PageSize)
	if !ok || uint64(len(mem)) != np*PageSize {
		return nil, fmt.Errorf("migration stream: RAM run [%#x, +%d pages) is outside this machine's RAM", gpa, np)
	}
	return mem, nil
}

// loadBatch reads one RAM batch (after its kind byte).
func loadBatch(cr source, t Target, st *Stats) error {
	le := binary.LittleEndian
	var h [4]byte
	if _, err := io.ReadFull(cr, h[:]); err != nil {
		return fmt.Errorf("migration stream RAM batch: %v", short(err))
	}
	n := le.Uint32(h[:])
	if n == 0 || n > maxBatch {
		return fmt.Errorf("migration stream: RAM batch of %d entries", n)
	}
	ents := make([]byte, n*batchEntry)
	if _, err := io.ReadFull(cr, ents); err != nil {
		return fmt.Errorf("migration stream RAM batch: %v", short(err))
	}
	var mems [][]byte
	for i := range n {
		e := ents[i*batchEntry:]
		gpa, np, flags := le.Uint64(e), uint64(le.Uint32(e[8:])), le.Uint32(e[12:])
		if flags&^flagZero != 0 {
			return fmt.Errorf("migration stream: RAM batch entry flags %#x", flags)
		}
		mem, err := ramRun(t, gpa, np)
		if err != nil {
			return err
		}
		if flags&flagZero == 0 {
			mems = append(mems, mem)
			continue
		}
		mems = append(mems, nil)
		st.ZeroPages += np
		if t.Zero != nil {
			if err := t.Zero(gpa, np*PageSize); err != nil {
				return fmt.Errorf("migration stream: zeroing RAM at %#x: %v", gpa, err)
			}
		} else {
			clear(mem)
		}
	}
	var pad [PageSize]byte
	if p := (PageSize - cr.offset()%PageSize) % PageSize; p != 0 {
		if _, err := io.ReadFull(cr, pad[:p]); err != nil {
			return fmt.Errorf("migration stream RAM batch: %v", short(err))
		}
	}
	for i, mem := range mems {
		if mem == nil {
			continue
		}
		np := uint64(len(mem)) / PageSize
		if t.Map != nil {
			off := cr.offset()
			if ok, err := cr.skip(uint64(len(mem))); err != nil {
				return fmt.Errorf("migration stream RAM: %v", err)
			} else if ok {
				gpa := le.Uint64(ents[i*batchEntry:])
				if err := t.Map(gpa, uint64(len(mem)), int64(off)); err == nil {
					st.Pages += np
					st.Mapped += np
					continue
				}
				if _, err := cr.(*fileSrc).seek(off); err != nil {
					return fmt.Errorf("migration stream RAM: %v", err)
				}
			}
		}
		if _, err := io.ReadFull(cr, mem); err != nil {
			return fmt.Errorf("migration stream RAM: %v", short(err))
		}
		st.Pages += np
	}
	return nil
}

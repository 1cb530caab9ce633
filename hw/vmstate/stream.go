// Package vmstate owns gemu's snapshot and migration stream: a versioned format of
// gemu's own (QEMU's stream is not a compatibility target; management tools treat it
// as opaque) carrying a machine's configuration fingerprint, one section per device
// and vCPU (a bus.State: name, version, the device's own bytes) and guest RAM, sparse
// (zero pages are not sent). It also offers the name-keyed field encoding devices and
// CPUs may use for their section data (fields.go).
//
// The stream, all integers little-endian:
//
//	header:  "GEMUVMST" | u32 format version (1) | u32 n | n × (u16 len key, u16 len value)
//	         config entries (the fingerprint: machine type, RAM size, CPUs, devices, ...)
//	records: u8 kind, then
//	         kind 1 (section): u16 name length | name | u32 version | u32 length | data
//	         kind 2 (RAM run): u64 guest-physical address | u32 pages | pages × 4096 bytes
//	         kind 0 (end):     u64 sections | u64 RAM pages (a check against truncation)
//
// A RAM run holds consecutive non-zero pages; every page the stream does not carry is
// zero in the restored guest. Reading is bounded: names, section sizes, config entries
// and the total of section data have fixed limits, data is read as it arrives (a
// stream that claims a large section and ends early costs no large allocation), and
// every RAM run must lie inside the destination's RAM.
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
	Version  = 1
	PageSize = 4096
)

const (
	recEnd     = 0
	recSection = 1
	recRAM     = 2

	maxConfig       = 4096     // config entries
	maxString       = 4096     // one key, value or section name
	maxSection      = 64 << 20 // one section's data
	maxSectionTotal = 256 << 20
	maxRun          = 1 << 18 // pages in one RAM run (1 GiB)
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
	Pages     uint64 // non-zero RAM pages transferred
	ZeroPages uint64 // RAM pages skipped as zero (Writer only)
	Sections  uint64
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

// RAM writes the non-zero pages of mem, the guest RAM at guest-physical gpa (page
// aligned; len(mem) a multiple of PageSize), as runs.
func (w *Writer) RAM(gpa uint64, mem []byte) error {
	if gpa%PageSize != 0 || len(mem)%PageSize != 0 {
		return errors.New("vmstate: RAM not page aligned")
	}
	le := binary.LittleEndian
	np := len(mem) / PageSize
	for i := 0; i < np && w.err == nil; {
		if zeroPage(mem[i*PageSize : (i+1)*PageSize]) {
			w.Stats.ZeroPages++
			i++
			continue
		}
		j := i + 1
		for j < np && j-i < maxRun && !zeroPage(mem[j*PageSize:(j+1)*PageSize]) {
			j++
		}
		b := []byte{recRAM}
		b = le.AppendUint64(b, gpa+uint64(i)*PageSize)
		b = le.AppendUint32(b, uint32(j-i))
		w.write(b)
		w.write(mem[i*PageSize : j*PageSize])
		w.Stats.Pages += uint64(j - i)
		i = j
	}
	return w.err
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

// Target is where Load puts what it reads.
type Target struct {
	// Config is the destination machine's; a stream of another configuration is
	// refused before anything is written.
	Config Config
	// RAM returns the destination's host memory for n bytes of guest RAM at gpa, or
	// false when the range is not RAM.
	RAM func(gpa, n uint64) ([]byte, bool)
}

// ErrConfig wraps the error of a stream saved from another configuration.
var ErrConfig = errors.New("the stream is from a different machine configuration")

// ReadConfig reads a stream's header and returns its configuration.
func ReadConfig(r io.Reader) (Config, error) {
	var h [16]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, fmt.Errorf("not a gemu migration stream: %v", short(err))
	}
	if string(h[:8]) != Magic {
		return nil, errors.New("not a gemu migration stream (bad magic)")
	}
	le := binary.LittleEndian
	if v := le.Uint32(h[8:]); v != Version {
		return nil, fmt.Errorf("migration stream format version %d is not supported (this gemu reads %d)", v, Version)
	}
	n := le.Uint32(h[12:])
	if n > maxConfig {
		return nil, fmt.Errorf("migration stream: %d config entries (limit %d)", n, maxConfig)
	}
	cfg := make(Config, 0, min(n, 64))
	for range n {
		var l [4]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return nil, fmt.Errorf("migration stream header: %v", short(err))
		}
		kl, vl := le.Uint16(l[:]), le.Uint16(l[2:])
		if kl > maxString || vl > maxString {
			return nil, errors.New("migration stream header: config entry too long")
		}
		kv := make([]byte, int(kl)+int(vl))
		if _, err := io.ReadFull(r, kv); err != nil {
			return nil, fmt.Errorf("migration stream header: %v", short(err))
		}
		cfg = append(cfg, KV{string(kv[:kl]), string(kv[kl:])})
	}
	return cfg, nil
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
	cr := &countReader{r: bufio.NewReaderSize(r, 64<<10)}
	var st Stats
	cfg, err := ReadConfig(cr)
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
		switch k[0] {
		case recEnd:
			var e [16]byte
			if _, err := io.ReadFull(cr, e[:]); err != nil {
				return nil, st, fmt.Errorf("migration stream end record: %v", short(err))
			}
			if le.Uint64(e[:]) != st.Sections || le.Uint64(e[8:]) != st.Pages {
				return nil, st, fmt.Errorf("migration stream: end record counts %d sections and %d pages, the stream had %d and %d",
					le.Uint64(e[:]), le.Uint64(e[8:]), st.Sections, st.Pages)
			}
			st.Bytes = cr.n
			return secs, st, nil
		case recSection:
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
		case recRAM:
			var h [12]byte
			if _, err := io.ReadFull(cr, h[:]); err != nil {
				return nil, st, fmt.Errorf("migration stream RAM: %v", short(err))
			}
			gpa, np := le.Uint64(h[:]), uint64(le.Uint32(h[8:]))
			if gpa%PageSize != 0 || np == 0 || np > maxRun {
				return nil, st, fmt.Errorf("migration stream: bad RAM run at %#x (%d pages)", gpa, np)
			}
			mem, ok := t.RAM(gpa, np*PageSize)
			if !ok || uint64(len(mem)) != np*PageSize {
				return nil, st, fmt.Errorf("migration stream: RAM run [%#x, +%d pages) is outside this machine's RAM", gpa, np)
			}
			if _, err := io.ReadFull(cr, mem); err != nil {
				return nil, st, fmt.Errorf("migration stream RAM: %v", short(err))
			}
			st.Pages += np
		default:
			return nil, st, fmt.Errorf("migration stream: unknown record kind %d", k[0])
		}
	}
}

type countReader struct {
	r io.Reader
	n uint64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	return n, err
}

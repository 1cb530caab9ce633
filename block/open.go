package block

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ProbeSize is how many leading bytes of a file Open hands to Format.Probe.
const ProbeSize = 4096

// Warn receives warnings the block layer prints the way qemu-img does (one message,
// possibly several lines). gemu-img leaves it writing to stderr; tests may capture it.
var Warn = func(msg string) { fmt.Fprintln(os.Stderr, msg) }

// Open opens filename as the format named in opts.Format or, when that is empty, the
// registered format whose Probe scores the file's first bytes highest. A named format
// is never overridden by probing: a qcow2 header opened with Format "raw" stays raw.
// When probing settles on raw for a writable open, the qemu-img warning is printed and
// writes that would make block 0 look like another format are refused, so a guest
// cannot turn its raw disk into, say, a qcow2 pointing at a host file.
func Open(filename string, opts OpenOptions) (Driver, error) {
	if opts.Depth > MaxChainDepth {
		return nil, fmt.Errorf("Backing chain of '%s' is too deep (more than %d layers)", filename, MaxChainDepth)
	}
	if HasProtocol(filename) {
		return nil, fmt.Errorf("Could not open '%s': protocol and json: filenames are not supported", filename)
	}
	if opts.ForceShare && !opts.ReadOnly {
		return nil, errors.New("force-share=on can only be used with read-only images")
	}
	if opts.Format != "" {
		f, err := Lookup(opts.Format)
		if err != nil {
			for _, k := range knownFormats {
				if k.name == opts.Format {
					return nil, &UnsupportedFormatError{Format: k.name, Named: true}
				}
			}
			return nil, err
		}
		return f.Open(filename, opts)
	}
	f, err := probe(filename)
	if err != nil {
		return nil, err
	}
	if f.Name() == "raw" {
		o := opts
		o.Format = "raw"
		d, err := f.Open(filename, o)
		if err != nil {
			return nil, err
		}
		if r, ok := d.(*rawDriver); ok && !opts.ReadOnly {
			r.probed = true
			Warn(fmt.Sprintf("WARNING: Image format was not specified for '%s' and probing guessed raw.\n"+
				"         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n"+
				"         Specify the 'raw' format explicitly to remove the restrictions.", filename))
		}
		return d, nil
	}
	return f.Open(filename, opts)
}

// probe picks the best-scoring registered format for the file's first bytes.
func probe(filename string) (Format, error) {
	fh, err := os.Open(filename)
	if err != nil {
		return nil, fmt.Errorf("Could not open '%s': %s", filename, errnoText(err))
	}
	defer fh.Close()
	buf := make([]byte, ProbeSize)
	n, err := io.ReadFull(fh, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("Could not read '%s': %s", filename, errnoText(err))
	}
	f, err := bestFormat(buf[:n], filename, "")
	if err != nil || f.Name() != "raw" {
		return f, err
	}
	// Raw only if no format qemu-img knows claims the file: look at the trailer too
	// (fixed VHD footer, DMG koly block).
	var tail []byte
	if size, err := fh.Seek(0, io.SeekEnd); err == nil && size >= 512 {
		tail = make([]byte, 512)
		if _, err := fh.ReadAt(tail, size-512); err != nil {
			tail = nil
		}
	}
	if tf := tailFormat(tail); tf != nil {
		return tf, nil
	}
	if name := knownUnsupported(buf[:n], tail, filename); name != "" {
		return nil, &UnsupportedFormatError{Format: name}
	}
	return f, nil
}

// bestFormat returns the highest Probe score among registered formats, skipping skip.
// Ties go to the alphabetically first name so the choice is deterministic.
func bestFormat(buf []byte, filename, skip string) (Format, error) {
	var best Format
	bestScore := 0
	for _, name := range Formats() {
		if name == skip {
			continue
		}
		f, _ := Lookup(name)
		if s := f.Probe(buf, filename); s > bestScore {
			best, bestScore = f, s
		}
	}
	if best == nil {
		return nil, fmt.Errorf("Could not determine image format of '%s'", filename)
	}
	return best, nil
}

// HasProtocol reports whether name would be taken by QEMU as a protocol or json:
// specification rather than a plain file: a ':' before any '/'. Backing and data-file
// references with such names are refused, so an image cannot make gemu open sockets,
// URLs or arbitrary option strings.
func HasProtocol(name string) bool {
	i := strings.IndexAny(name, ":/\\")
	return i >= 0 && name[i] == ':'
}

// ResolveBacking turns a backing-file (or data-file) reference stored in image into a
// path to open: refused if it names a protocol or json: string, and taken relative to the
// image's folder unless absolute, as qemu's path_combine does.
func ResolveBacking(image, ref string) (string, error) {
	if ref == "" {
		return "", errors.New("empty backing file name")
	}
	if strings.IndexByte(ref, 0) >= 0 {
		return "", fmt.Errorf("backing file name of '%s' contains a NUL byte", image)
	}
	if HasProtocol(ref) {
		return "", fmt.Errorf("backing file '%s' of '%s' names a protocol or json: specification, which is not supported", ref, image)
	}
	if filepath.IsAbs(ref) || HasProtocol(image) {
		return ref, nil
	}
	// Plain concatenation, not filepath.Join: "full-backing-filename" must read as
	// qemu-img prints it (a/../b stays a/../b).
	i := strings.LastIndexByte(image, '/')
	if i < 0 {
		return ref, nil
	}
	return image[:i+1] + ref, nil
}

// errnoText renders an os error as qemu-img does: the strerror text only.
func errnoText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	s := err.Error()
	if s != "" {
		s = strings.ToUpper(s[:1]) + s[1:]
	}
	return s
}

// Package backend is the layer between the emulator's virtual disks and block.Driver
// (QEMU's BlockBackend role): it opens a -drive's image chain with QEMU's drive options
// (format probing, read-only, snapshot=on, cache modes, discard, detect-zeroes, locking,
// werror/rerror) and serves byte-addressed requests that devices make: every method is
// safe for concurrent use, so a device's worker pool runs many requests at once.
//
// It owns the drive-option semantics only. It must not know about devices, buses or
// guests (virtio-blk and the CLI call it), nor import any format driver: formats come
// from the block registry (the main program imports the drivers). snapshot=on needs
// the qcow2 driver registered.
package backend

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"gemu/block"
)

// Options are a drive's block options, named and valued as QEMU's -drive options.
type Options struct {
	File   string
	Format string // "" probes (a probed raw image gets QEMU's warning via block.Warn)
	// ReadOnly: the guest cannot write; the image is opened read-only.
	ReadOnly bool
	// Snapshot: writes go to a temporary qcow2 overlay (backing = the image) created in
	// os.TempDir and unlinked right after it is opened; the image is opened read-only
	// and never changes.
	Snapshot bool
	// Cache: writeback (default) | none | writethrough | directsync | unsafe.
	// none and directsync open with O_DIRECT (see block.OpenOptions.Direct);
	// writethrough and directsync flush after every write; unsafe makes Flush a no-op.
	Cache string
	// Discard: ignore (default) | unmap. "off" and "on" are QEMU's synonyms.
	Discard string
	// DetectZeroes: off (default) | on | unmap (all-zero writes become WriteZeroes;
	// unmap also deallocates, and needs Discard unmap, as in QEMU).
	DetectZeroes string
	// Locking: on (default, also "auto") | off (QEMU's file.locking).
	Locking string
	// WError: enospc (default) | report | ignore | stop. RError: report (default) |
	// ignore | stop.
	WError, RError string
	// ShareRW lets other processes write the image while the guest uses it (QEMU's
	// share-rw=on device property). Without it the drive refuses other writers, as
	// QEMU's block devices do.
	ShareRW bool
}

// Action is what the device does with a failed request (QEMU's BlockErrorAction).
type Action int

const (
	// Report the error to the guest (the device's I/O error status).
	Report Action = iota
	// Ignore the error: the device completes the request as if it succeeded.
	Ignore
	// Stop the VM; the request is retried when it resumes.
	Stop
)

func (a Action) String() string {
	switch a {
	case Report:
		return "report"
	case Ignore:
		return "ignore"
	case Stop:
		return "stop"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// errorPolicy is a parsed werror/rerror value.
type errorPolicy int

const (
	policyReport errorPolicy = iota
	policyIgnore
	policyStop
	policyENOSPC
)

// Backend is an open drive. All methods are safe for concurrent use.
type Backend struct {
	d        block.Driver
	ro       bool
	unmap    bool // discard=unmap
	zeroes   string
	werr     errorPolicy
	rerr     errorPolicy
	closeMu  sync.RWMutex // Close excludes requests in flight
	closed   bool
	overlay  string // snapshot=on: the (already unlinked) overlay path, for messages
	flushAll bool   // writethrough/directsync
	noFlush  bool   // unsafe
}

// ErrClosed is returned by requests after Close.
var ErrClosed = errors.New("block backend is closed")

// Open opens the drive o describes.
func Open(o Options) (*Backend, error) {
	if o.File == "" {
		return nil, errors.New("drive has no file")
	}
	b := &Backend{ro: o.ReadOnly}
	var direct bool
	switch o.Cache {
	case "", "writeback":
	case "none":
		direct = true
	case "writethrough":
		b.flushAll = true
	case "directsync":
		direct, b.flushAll = true, true
	case "unsafe":
		b.noFlush = true
	default:
		return nil, fmt.Errorf("invalid cache option")
	}
	switch o.Discard {
	case "", "ignore", "off":
	case "unmap", "on":
		b.unmap = true
	default:
		return nil, fmt.Errorf("Invalid discard option")
	}
	switch o.DetectZeroes {
	case "", "off":
		b.zeroes = "off"
	case "on":
		b.zeroes = "on"
	case "unmap":
		if !b.unmap {
			return nil, errors.New("setting detect-zeroes to unmap is not allowed without setting discard operation to unmap")
		}
		b.zeroes = "unmap"
	default:
		return nil, fmt.Errorf("Parameter 'detect-zeroes' does not accept value '%s'", o.DetectZeroes)
	}
	noLock := false
	switch o.Locking {
	case "", "on", "auto":
	case "off":
		noLock = true
	default:
		return nil, fmt.Errorf("Parameter 'locking' does not accept value '%s'", o.Locking)
	}
	var err error
	if b.werr, err = parsePolicy(o.WError, false); err != nil {
		return nil, err
	}
	if b.rerr, err = parsePolicy(o.RError, true); err != nil {
		return nil, err
	}
	opts := block.OpenOptions{
		ReadOnly: o.ReadOnly || o.Snapshot,
		Format:   o.Format,
		NoLock:   noLock,
		Direct:   direct,
	}
	if !o.ShareRW {
		opts.Unshare = block.PermWrite
	}
	if o.Snapshot {
		b.d, b.overlay, err = openSnapshot(o.File, opts)
	} else {
		b.d, err = block.Open(o.File, opts)
	}
	if err != nil {
		return nil, openError(o.File, err)
	}
	if b.noFlush {
		if u, ok := b.d.(interface{ SetUnsafe(bool) }); ok {
			u.SetUnsafe(true)
		}
	}
	return b, nil
}

// parsePolicy parses werror (read false) or rerror (read true) as QEMU does.
func parsePolicy(v string, read bool) (errorPolicy, error) {
	switch v {
	case "":
		if read {
			return policyReport, nil
		}
		return policyENOSPC, nil
	case "report":
		return policyReport, nil
	case "ignore":
		return policyIgnore, nil
	case "stop":
		return policyStop, nil
	case "enospc":
		if !read {
			return policyENOSPC, nil
		}
	}
	kind := "write"
	if read {
		kind = "read"
	}
	return 0, fmt.Errorf("'%s' invalid %s error action", v, kind)
}

// openError words an open failure as qemu-system does: lock conflicts and driver
// messages as they are, bare OS errors as "Could not open 'FILE': strerror".
func openError(file string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		s := pe.Err.Error()
		if s != "" {
			s = strings.ToUpper(s[:1]) + s[1:]
		}
		return fmt.Errorf("Could not open '%s': %s", file, s)
	}
	return err
}

// openSnapshot opens file read-only under a temporary qcow2 overlay that takes the
// writes (snapshot=on), and unlinks the overlay so nothing is left at exit.
func openSnapshot(file string, opts block.OpenOptions) (block.Driver, string, error) {
	qf, err := block.Lookup("qcow2")
	if err != nil {
		return nil, "", errors.New("snapshot=on needs the qcow2 driver")
	}
	// Open the image first: its format, its size, and the lock check, before anything
	// is created.
	base, err := block.Open(file, opts)
	if err != nil {
		return nil, "", err
	}
	format, size := base.Format(), base.Size()
	abs, err := filepath.Abs(file)
	if err != nil {
		base.Close()
		return nil, "", err
	}
	tmp, err := os.CreateTemp("", "gemu-snapshot-*.qcow2")
	if err != nil {
		base.Close()
		return nil, "", fmt.Errorf("Could not create temporary overlay: %v", err)
	}
	path := tmp.Name()
	tmp.Close()
	defer os.Remove(path)
	// base stays open (and locked) until the overlay's chain holds the image: two
	// read-only opens of it are compatible, and no writer can slip in between.
	defer base.Close()
	err = qf.Create(path, block.CreateOptions{Size: size, Backing: abs, BackingFormat: format,
		Options: map[string]string{}})
	if err != nil {
		return nil, "", fmt.Errorf("Could not create temporary overlay '%s': %v", path, err)
	}
	oo := opts
	oo.ReadOnly = false
	oo.Format = "qcow2"
	oo.Direct = false // the overlay lives in the temporary folder, cached
	oo.BackingFormat = format
	d, err := block.Open(path, oo)
	if err != nil {
		return nil, "", err
	}
	return d, path, nil
}

// Driver returns the top driver (the overlay with snapshot=on), for info and tests.
func (b *Backend) Driver() block.Driver { return b.d }

// Size is the virtual disk size in bytes.
func (b *Backend) Size() int64 { return b.d.Size() }

// ReadOnly reports whether the guest may not write (snapshot=on disks are writable).
func (b *Backend) ReadOnly() bool { return b.ro }

// WriteCache reports whether the guest should see a volatile write cache (QEMU's
// "write cache" device property): false for writethrough and directsync.
func (b *Backend) WriteCache() bool { return !b.flushAll }

func (b *Backend) enter() error {
	b.closeMu.RLock()
	if b.closed {
		b.closeMu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (b *Backend) leave() { b.closeMu.RUnlock() }

// ReadAt reads len(p) bytes at guest offset off.
func (b *Backend) ReadAt(p []byte, off int64) (int, error) {
	if err := b.enter(); err != nil {
		return 0, err
	}
	defer b.leave()
	if err := b.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	return b.d.ReadAt(p, off)
}

// WriteAt writes p at guest offset off; with detect-zeroes an all-zero p becomes a
// WriteZeroes.
func (b *Backend) WriteAt(p []byte, off int64) (int, error) {
	if err := b.enter(); err != nil {
		return 0, err
	}
	defer b.leave()
	if b.ro {
		return 0, block.ErrReadOnly
	}
	if err := b.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	if b.zeroes != "off" && len(p) > 0 && allZero(p) {
		var fl block.ZeroFlags
		if b.zeroes == "unmap" {
			fl = block.ZeroMayUnmap
		}
		if err := b.d.WriteZeroes(off, int64(len(p)), fl); err != nil {
			return 0, err
		}
		return len(p), b.afterWrite()
	}
	n, err := b.d.WriteAt(p, off)
	if err != nil {
		return n, err
	}
	return n, b.afterWrite()
}

// WriteZeroes makes [off, off+n) read as zeroes; unmap lets the range be deallocated
// (only with discard=unmap, as QEMU drops BDRV_REQ_MAY_UNMAP otherwise).
func (b *Backend) WriteZeroes(off, n int64, unmap bool) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	if b.ro {
		return block.ErrReadOnly
	}
	if err := b.check(off, n); err != nil {
		return err
	}
	var fl block.ZeroFlags
	if unmap && b.unmap {
		fl = block.ZeroMayUnmap
	}
	if err := b.d.WriteZeroes(off, n, fl); err != nil {
		return err
	}
	return b.afterWrite()
}

// Discard deallocates [off, off+n) with discard=unmap; with discard=ignore it does
// nothing. Discard is advisory: the range's contents are unspecified afterwards.
func (b *Backend) Discard(off, n int64) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	if b.ro {
		return block.ErrReadOnly
	}
	if err := b.check(off, n); err != nil {
		return err
	}
	if !b.unmap {
		return nil
	}
	return b.d.Discard(off, n)
}

// Flush makes completed writes durable (a no-op with cache=unsafe).
func (b *Backend) Flush() error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.leave()
	if b.noFlush || b.ro {
		return nil
	}
	return b.d.Flush()
}

func (b *Backend) afterWrite() error {
	if b.flushAll {
		return b.d.Flush()
	}
	return nil
}

// check refuses requests outside the disk (QEMU's blk_check_byte_request).
func (b *Backend) check(off, n int64) error {
	if off < 0 || n < 0 || off > b.d.Size() || n > b.d.Size()-off {
		return fmt.Errorf("request at offset %d, %d bytes, outside the disk (%d bytes): %w", off, n, b.d.Size(), syscall.EIO)
	}
	return nil
}

// ErrorAction says what to do with err, the failure of a read (write false) or write
// request, per rerror/werror: enospc stops the VM on ENOSPC and reports anything else.
func (b *Backend) ErrorAction(err error, write bool) Action {
	p := b.rerr
	if write {
		p = b.werr
	}
	switch p {
	case policyIgnore:
		return Ignore
	case policyStop:
		return Stop
	case policyENOSPC:
		if errors.Is(err, syscall.ENOSPC) {
			return Stop
		}
	}
	return Report
}

// Close waits for requests in flight, flushes (unless cache=unsafe) and closes the
// image chain, releasing its locks. A snapshot=on overlay disappears with it.
func (b *Backend) Close() error {
	b.closeMu.Lock()
	defer b.closeMu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	var err error
	if !b.ro && !b.noFlush {
		err = b.d.Flush()
	}
	if cerr := b.d.Close(); err == nil {
		err = cerr
	}
	return err
}

// allZero reports whether p is all zero bytes.
func allZero(p []byte) bool {
	for len(p) >= 8 {
		if p[0]|p[1]|p[2]|p[3]|p[4]|p[5]|p[6]|p[7] != 0 {
			return false
		}
		p = p[8:]
	}
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}

package block

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

func init() { Register(rawFormat{}) }

type rawFormat struct{}

func (rawFormat) Name() string { return "raw" }

// Probe gives raw the lowest non-zero score: any file is a raw image, but any other
// format that recognises its header wins.
func (rawFormat) Probe([]byte, string) int { return 1 }

func (rawFormat) Open(filename string, opts OpenOptions) (Driver, error) {
	f, err := OpenImageFile(filename, opts, RoleFiltered)
	if err != nil {
		var le *LockError
		if errors.As(err, &le) {
			return nil, err
		}
		return nil, fmt.Errorf("Could not open '%s': %s", filename, errnoText(err))
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("Could not open '%s': %s", filename, errnoText(err))
	}
	d := &rawDriver{f: f, name: filename, ro: opts.ReadOnly}
	if opts.Direct {
		fl := os.O_RDWR
		if opts.ReadOnly {
			fl = os.O_RDONLY
		}
		fb, err := os.OpenFile(filename, fl, 0)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("Could not open '%s': %s", filename, errnoText(err))
		}
		d.dio = &directIO{align: probeDirectAlignment(f), buffered: fb}
	}
	// Like QEMU, the disk is a whole number of sectors; the tail of a partial last
	// sector reads as zeroes.
	d.size.Store((size + 511) &^ 511)
	return d, nil
}

// Create makes a raw image of opts.Size bytes. Options: preallocation=off|falloc|full.
// An existing file is truncated to zero first so the new image reads as zeroes.
func (rawFormat) Create(filename string, opts CreateOptions) error {
	prealloc := "off"
	for k, v := range opts.Options {
		switch k {
		case "preallocation":
			prealloc = v
		case "size":
		default:
			return fmt.Errorf("Invalid parameter '%s'", k)
		}
	}
	if opts.Backing != "" {
		return fmt.Errorf("Backing file not supported for file format 'raw'")
	}
	switch prealloc {
	case "off", "falloc", "full":
	default:
		return fmt.Errorf("Invalid parameter '%s'", prealloc)
	}
	if opts.Size < 0 {
		return fmt.Errorf("Image size must be less than 8 EiB!")
	}
	opts.Size = (opts.Size + 511) &^ 511 // whole sectors, as qemu-img creates them
	f, err := CreateImageFile(filename)
	if err != nil {
		var le *LockError
		if errors.As(err, &le) {
			return err
		}
		return fmt.Errorf("Could not create '%s': %s", filename, errnoText(err))
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		if err := f.Truncate(opts.Size); err != nil {
			return fmt.Errorf("Could not resize file: %s", errnoText(err))
		}
	}
	if err := preallocate(f, 0, opts.Size, prealloc); err != nil {
		return err
	}
	return nil
}

// Measure implements Measurer for raw: every virtual byte takes a host byte.
func (rawFormat) Measure(size int64, opts map[string]string, src Driver) (int64, int64, error) {
	if src != nil {
		size = src.Size()
	}
	size = (size + 511) &^ 511
	return size, size, nil
}

// preallocate fills [from, to) of f as preallocation mode says.
func preallocate(f *os.File, from, to int64, mode string) error {
	if to <= from {
		return nil
	}
	switch mode {
	case "", "off":
		return nil
	case "falloc":
		if err := unix.Fallocate(int(f.Fd()), 0, from, to-from); err != nil {
			return fmt.Errorf("Could not preallocate data for the new file: %s", errnoText(err))
		}
		return nil
	case "full":
		return writeZeroBytes(f, from, to-from)
	}
	return fmt.Errorf("Unsupported preallocation mode '%s'", mode)
}

var zeroChunk = make([]byte, 1<<20)

func writeZeroBytes(w io.WriterAt, off, n int64) error {
	for n > 0 {
		c := min(n, int64(len(zeroChunk)))
		if _, err := w.WriteAt(zeroChunk[:c], off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

// rawDriver is a raw image: guest offset = host offset in one file or block device.
type rawDriver struct {
	f    *os.File
	name string
	ro   bool
	size atomic.Int64
	// probed: format came from probing, so block 0 writes are checked (see Open).
	probed bool
	// dio is set when f was opened with O_DIRECT.
	dio *directIO
	// noFalloc remembers that fallocate is unsupported so we stop asking.
	noFalloc atomic.Bool
	mu       sync.Mutex // serialises block-0 check-and-write
}

func (d *rawDriver) Format() string   { return "raw" }
func (d *rawDriver) Filename() string { return d.name }
func (d *rawDriver) Size() int64      { return d.size.Load() }

func (d *rawDriver) ReadAt(p []byte, off int64) (int, error) {
	size := d.Size()
	if off < 0 || off > size {
		return 0, fmt.Errorf("read at offset %d beyond end of image (%d bytes)", off, size)
	}
	want := p
	if int64(len(p)) > size-off {
		want = p[:size-off]
	}
	var n int
	var err error
	if d.dio != nil {
		n, err = d.dio.readAt(d.f, want, off)
	} else {
		n, err = d.f.ReadAt(want, off)
	}
	if errors.Is(err, io.EOF) {
		// The file shrank under us: what is gone reads as zeroes, as in QEMU.
		clear(want[n:])
		n, err = len(want), nil
	}
	if err == nil && len(want) < len(p) {
		return n, io.EOF
	}
	return n, err
}

func (d *rawDriver) WriteAt(p []byte, off int64) (int, error) {
	if d.ro {
		return 0, ErrReadOnly
	}
	if off < 0 || off+int64(len(p)) > d.Size() {
		return 0, fmt.Errorf("write at offset %d, %d bytes, beyond end of image (%d bytes)", off, len(p), d.Size())
	}
	if d.probed && off < 512 {
		d.mu.Lock()
		defer d.mu.Unlock()
		if err := d.checkBlock0(p, off); err != nil {
			return 0, err
		}
	}
	if size := d.Size(); d.probed && size >= 512 && off+int64(len(p)) > size-512 {
		d.mu.Lock()
		defer d.mu.Unlock()
		if err := d.checkTail(p, off, size); err != nil {
			return 0, err
		}
	}
	if d.dio != nil {
		return d.dio.writeAt(d.f, p, off)
	}
	return d.f.WriteAt(p, off)
}

// checkTail refuses a write that would give a probed raw image a trailer another
// format is probed by (a fixed VHD footer), as checkBlock0 does for block 0.
func (d *rawDriver) checkTail(p []byte, off, size int64) error {
	t := make([]byte, 512)
	if _, err := d.ReadAt(t, size-512); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	for i := range t {
		if o := size - 512 + int64(i) - off; o >= 0 && o < int64(len(p)) {
			t[i] = p[o]
		}
	}
	if f := tailFormat(t); f != nil {
		return fmt.Errorf("Operation not permitted: write to the last 512 bytes of a probed raw image would make it look like %s", f.Name())
	}
	return nil
}

// checkBlock0 refuses a write that would make a probed raw image probe as another format.
func (d *rawDriver) checkBlock0(p []byte, off int64) error {
	b0 := make([]byte, 512)
	if _, err := d.ReadAt(b0, 0); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	copy(b0[off:], p)
	if f, err := bestFormat(b0, d.name, ""); err == nil && f.Name() != "raw" {
		return fmt.Errorf("Operation not permitted: write to block 0 of a probed raw image would make it look like %s", f.Name())
	}
	if name := knownUnsupported(b0, nil, ""); name != "" {
		return fmt.Errorf("Operation not permitted: write to block 0 of a probed raw image would make it look like %s", name)
	}
	return nil
}

func (d *rawDriver) WriteZeroes(off, n int64, flags ZeroFlags) error {
	if d.ro {
		return ErrReadOnly
	}
	if n <= 0 {
		return nil
	}
	if off < 0 || off+n > d.Size() {
		return fmt.Errorf("write zeroes at offset %d, %d bytes, beyond end of image", off, n)
	}
	if !d.noFalloc.Load() && !(d.probed && off < 512) {
		mode := uint32(unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE)
		if flags&ZeroMayUnmap != 0 {
			mode = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
		}
		err := unix.Fallocate(int(d.f.Fd()), mode, off, n)
		if err == nil {
			return nil
		}
		if flags&ZeroMayUnmap == 0 {
			// Some filesystems punch but cannot zero a range.
			if err2 := unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err2 == nil {
				return nil
			}
		}
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.ENODEV) {
			d.noFalloc.Store(true)
		}
	}
	for n > 0 {
		c := min(n, int64(len(zeroChunk)))
		if _, err := d.WriteAt(zeroChunk[:c], off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

// Discard punches a hole; it is advisory, so an unsupported filesystem is not an error.
func (d *rawDriver) Discard(off, n int64) error {
	if d.ro {
		return ErrReadOnly
	}
	if n <= 0 || off >= d.Size() {
		return nil
	}
	n = min(n, d.Size()-off)
	err := unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err != nil && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}

func (d *rawDriver) Flush() error {
	if d.ro {
		return nil
	}
	err := unix.Fdatasync(int(d.f.Fd()))
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EROFS) {
		return nil // special files that cannot be synced
	}
	return err
}

// BlockStatus reports data and holes of the host file with SEEK_DATA/SEEK_HOLE. Holes
// read as zeroes and are "present" at depth 0, as qemu-img map shows for raw files.
func (d *rawDriver) BlockStatus(off, n int64) (Status, error) {
	size := d.Size()
	if off >= size || n <= 0 {
		return Status{Offset: off, HostOffset: -1}, nil
	}
	end := min(off+n, size)
	st := Status{Offset: off, Allocated: true, HostOffset: off, HostFile: d.name}
	fd := int(d.f.Fd())
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		st.Zero, st.Length = true, end-off
		return st, nil
	case err != nil:
		st.Data, st.Length = true, end-off
		return st, nil
	case data > off:
		st.Zero, st.Length = true, min(data, end)-off
		return st, nil
	}
	hole, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil || hole <= off {
		hole = end
	}
	st.Data, st.Length = true, min(hole, end)-off
	return st, nil
}

func (d *rawDriver) Resize(size int64, opts ResizeOptions) error {
	if d.ro {
		return ErrReadOnly
	}
	cur := d.Size()
	if size < cur && !opts.Shrink {
		return errors.New("Use the --shrink option to perform a shrink operation.")
	}
	if size < 0 {
		return errors.New("New image size must be positive")
	}
	switch opts.Preallocation {
	case "", "off", "falloc", "full":
	default:
		return fmt.Errorf("Unsupported preallocation mode '%s'", opts.Preallocation)
	}
	if fi, err := d.f.Stat(); err == nil && !fi.Mode().IsRegular() {
		if size > cur {
			return errors.New("Cannot grow device files")
		}
		d.size.Store(size)
		return nil
	}
	if err := d.f.Truncate(size); err != nil {
		return fmt.Errorf("Failed to resize underlying file: %s", errnoText(err))
	}
	d.size.Store(size)
	f := d.f
	if d.dio != nil {
		f = d.dio.buffered
	}
	return preallocate(f, cur, size, opts.Preallocation)
}

func (d *rawDriver) ActualSize() (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(d.f.Fd()), &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}

func (d *rawDriver) Close() error {
	if d.dio != nil {
		d.dio.buffered.Close()
	}
	return d.f.Close()
}

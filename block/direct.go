package block

import (
	"errors"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// O_DIRECT support for the raw driver (cache=none, directsync). Direct I/O needs the
// file offset, the length and the buffer address aligned to the device's logical block
// size; requests that are not are bounced through an aligned buffer, as QEMU's
// bdrv_co_preadv/pwritev bounce them (a sub-block write is a read-modify-write).

// directIO is the state of a file opened with O_DIRECT.
type directIO struct {
	align int64
	// rmw: sub-block writes (read-modify-write) exclude every other write; aligned
	// writes share it.
	rmw sync.RWMutex
	// buffered is a second, unlocked descriptor without O_DIRECT for the few writes
	// O_DIRECT cannot express: the unaligned tail of a file whose size is not a whole
	// number of blocks (writing the whole block would grow the file).
	buffered *os.File
}

// probeDirectAlignment finds the request alignment of f (QEMU's raw_probe_alignment):
// the smallest of 512, 1024, 2048, 4096 a direct read accepts.
func probeDirectAlignment(f *os.File) int64 {
	buf := alignedBuf(4096, 4096)
	for _, a := range []int{512, 1024, 2048, 4096} {
		_, err := unix.Pread(int(f.Fd()), buf[:a], 0)
		if !errors.Is(err, unix.EINVAL) {
			return int64(a)
		}
	}
	return 4096
}

// alignedBuf returns n bytes whose address is a multiple of align (a power of two).
func alignedBuf(n int, align int64) []byte {
	b := make([]byte, n+int(align))
	o := int(int64(uintptr(unsafe.Pointer(&b[0]))) & (align - 1))
	if o != 0 {
		o = int(align) - o
	}
	return b[o : o+n : o+n]
}

func (dio *directIO) aligned(p []byte, off int64) bool {
	a := dio.align
	return off%a == 0 && int64(len(p))%a == 0 &&
		(len(p) == 0 || int64(uintptr(unsafe.Pointer(&p[0])))%a == 0)
}

// readAt reads like os.File.ReadAt on an O_DIRECT file, bouncing unaligned requests.
func (dio *directIO) readAt(f *os.File, p []byte, off int64) (int, error) {
	if dio.aligned(p, off) {
		return f.ReadAt(p, off)
	}
	a := dio.align
	start := off &^ (a - 1)
	end := (off + int64(len(p)) + a - 1) &^ (a - 1)
	buf := alignedBuf(int(end-start), a)
	n, err := f.ReadAt(buf, start)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	got := int64(n) - (off - start)
	if got < 0 {
		got = 0
	}
	got = min(got, int64(len(p)))
	copy(p, buf[off-start:off-start+got])
	if err == nil && got < int64(len(p)) {
		err = io.EOF
	}
	return int(got), err
}

// writeAt writes like os.File.WriteAt on an O_DIRECT file, bouncing unaligned requests.
func (dio *directIO) writeAt(f *os.File, p []byte, off int64) (int, error) {
	a := dio.align
	if off%a == 0 && int64(len(p))%a == 0 {
		dio.rmw.RLock()
		defer dio.rmw.RUnlock()
		if dio.aligned(p, off) {
			return f.WriteAt(p, off)
		}
		buf := alignedBuf(len(p), a)
		copy(buf, p)
		return f.WriteAt(buf, off)
	}
	dio.rmw.Lock()
	defer dio.rmw.Unlock()
	start := off &^ (a - 1)
	end := (off + int64(len(p)) + a - 1) &^ (a - 1)
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if end > fi.Size() {
		// The block straddles the end of the file: write through the page cache, then
		// push it out so later direct reads see it.
		n, err := dio.buffered.WriteAt(p, off)
		if err == nil {
			err = unix.Fdatasync(int(dio.buffered.Fd()))
		}
		return n, err
	}
	buf := alignedBuf(int(end-start), a)
	if _, err := f.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	copy(buf[off-start:], p)
	if _, err := f.WriteAt(buf, start); err != nil {
		return 0, err
	}
	return len(p), nil
}

// BufferedAfterDirect clears O_DIRECT on f, opened by OpenImageFile with opts.Direct.
// Drivers whose metadata I/O is not block-aligned (qcow2, VMDK) call it: the open itself
// went through O_DIRECT, so a filesystem that refuses it fails the same way QEMU's
// cache=none does, and the I/O then goes through the page cache (a Flush still reaches
// the disk, so guest-visible durability is that of cache=none).
func BufferedAfterDirect(f *os.File) error {
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	_, err = unix.FcntlInt(f.Fd(), unix.F_SETFL, fl&^unix.O_DIRECT)
	return err
}

package memory

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Lazy restore (Firecracker's snapshot memory file): guest RAM pages mapped from a
// file instead of copied, so a restored guest reads each page from the host's page
// cache when it first touches it. The mappings replace parts of a slot's host mapping
// in place (MAP_FIXED), so host addresses the TLBs and devices hold stay valid.

// MapFile maps n bytes of f at offset off (both page aligned) over the guest RAM at
// gpa, copy-on-write (MAP_PRIVATE): the guest's writes stay in its memory, the file
// is never written. The range must lie in one slot. The file must not change while
// the mapping lives.
func (r *RAM) MapFile(gpa, n uint64, f *os.File, off int64) error {
	mem, err := r.fixedRange(gpa, n, off)
	if err != nil {
		return err
	}
	return mapFixed(mem, int(f.Fd()), off, unix.MAP_PRIVATE)
}

// Discard makes [gpa, gpa+n) (page aligned, in one slot) read zero and gives its host
// memory back: a fresh anonymous mapping replaces whatever was there, a file mapping
// (MapFile) included, where MADV_DONTNEED would bring back the file's contents.
func (r *RAM) Discard(gpa, n uint64) error {
	mem, err := r.fixedRange(gpa, n, 0)
	if err != nil {
		return err
	}
	if err := mapFixed(mem, -1, 0, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE); err != nil {
		return err
	}
	if len(mem) >= hugeAlign {
		_ = unix.Madvise(mem, unix.MADV_HUGEPAGE) // advice only, as in Add
	}
	return nil
}

func (r *RAM) fixedRange(gpa, n uint64, off int64) ([]byte, error) {
	ps := uint64(unix.Getpagesize())
	if gpa%ps != 0 || n%ps != 0 || uint64(off)%ps != 0 || n == 0 || off < 0 {
		return nil, fmt.Errorf("memory: mapping [%#x, +%#x) at file offset %#x is not page aligned", gpa, n, off)
	}
	mem, ok := r.Slice(gpa, n)
	if !ok {
		return nil, fmt.Errorf("memory: [%#x, +%#x) is not in one RAM slot", gpa, n)
	}
	return mem, nil
}

func mapFixed(mem []byte, fd int, off int64, flags int) error {
	addr := uintptr(unsafe.Pointer(&mem[0]))
	p, _, errno := unix.Syscall6(unix.SYS_MMAP, addr, uintptr(len(mem)), unix.PROT_READ|unix.PROT_WRITE,
		uintptr(flags|unix.MAP_FIXED), uintptr(fd), uintptr(off))
	if errno != 0 {
		return fmt.Errorf("memory: mmap over guest RAM: %v", errno)
	}
	if p != addr {
		return fmt.Errorf("memory: mmap over guest RAM moved it")
	}
	return nil
}

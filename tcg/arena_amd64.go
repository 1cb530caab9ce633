package tcg

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The code arena holds generated machine code. It is W^X through a double mapping of
// one memfd per chunk: code is written through a read-write view and executed through
// a read-execute view of the same pages, so no page is ever writable and executable
// at once and no mprotect toggling can race with another vCPU executing a neighbour
// block. Code is never freed (invalidated blocks leave garbage behind); when the
// arena reaches arenaMax, new blocks use the closure backend instead.

const (
	arenaChunk = 16 << 20
	arenaMax   = 512 << 20
)

type arena struct {
	mu     sync.Mutex
	rw, rx []byte // current chunk's two views
	used   int
	total  int
	failed bool
}

var codeArena arena

// place copies code into the arena and returns its executable address, or 0 when the
// arena is exhausted or could not be mapped.
func (a *arena) place(code []byte) uintptr {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := (len(code) + 15) &^ 15
	if n > arenaChunk || a.failed {
		return 0
	}
	if a.rw == nil || a.used+n > len(a.rw) {
		if a.total+arenaChunk > arenaMax || !a.grow() {
			a.failed = true
			return 0
		}
	}
	copy(a.rw[a.used:], code)
	p := uintptr(unsafe.Pointer(&a.rx[a.used]))
	a.used += n
	return p
}

func (a *arena) grow() bool {
	fd, err := unix.MemfdCreate("gemu-tcg", unix.MFD_CLOEXEC)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if unix.Ftruncate(fd, arenaChunk) != nil {
		return false
	}
	rw, err := unix.Mmap(fd, 0, arenaChunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return false
	}
	rx, err := unix.Mmap(fd, 0, arenaChunk, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_SHARED)
	if err != nil {
		unix.Munmap(rw)
		return false
	}
	if a.rw != nil {
		unix.Munmap(a.rw) // the old chunk is full: its code is only executed from now on
	}
	a.rw, a.rx, a.used = rw, rx, 0
	a.total += arenaChunk
	return true
}

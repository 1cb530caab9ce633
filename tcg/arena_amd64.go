package tcg

import (
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The code arena holds generated machine code in one memfd per chunk, mapped read and
// execute only; code is written with pwrite on the file, so no page is ever writable
// through a mapping (W^X), no mprotect toggling can race with another vCPU executing a
// neighbour block, and the pages are resident once (a second, writable mapping would
// count them twice in RSS). Code is never freed (invalidated blocks leave garbage behind); when the
// arena reaches arenaMax, new blocks use the closure backend instead.

const (
	arenaChunk = 16 << 20
	arenaMax   = 512 << 20
)

type arena struct {
	mu     sync.Mutex
	fd     int    // current chunk's memfd
	rx     []byte // its executable mapping
	used   int
	total  int
	failed bool
}

var codeArena arena

// place copies code into the arena and returns its executable address, or 0 when the
// arena is exhausted or could not be mapped.
func (a *arena) place(code []byte, guestPC uint64) uintptr {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := (len(code) + 15) &^ 15
	if n > arenaChunk || a.failed {
		return 0
	}
	if a.rx == nil || a.used+n > len(a.rx) {
		if a.total+arenaChunk > arenaMax || !a.grow() {
			a.failed = true
			return 0
		}
	}
	if w, err := unix.Pwrite(a.fd, code, int64(a.used)); err != nil || w != len(code) {
		a.failed = true
		return 0
	}
	p := uintptr(unsafe.Pointer(&a.rx[a.used]))
	a.used += n
	if perfMap != nil {
		fmt.Fprintf(perfMap, "%x %x gemu_tb_%x\n", p, len(code), guestPC)
	}
	return p
}

// perfMap is /tmp/perf-PID.map when GEMU_PERFMAP is set: Linux perf then names
// samples in generated code after the guest PC of their block (perf report), as
// QEMU's -perfmap does.
var perfMap = func() *os.File {
	if os.Getenv("GEMU_PERFMAP") == "" {
		return nil
	}
	f, err := os.Create(fmt.Sprintf("/tmp/perf-%d.map", os.Getpid()))
	if err != nil {
		return nil
	}
	return f
}()

func (a *arena) grow() bool {
	fd, err := unix.MemfdCreate("gemu-tcg", unix.MFD_CLOEXEC)
	if err != nil {
		return false
	}
	if unix.Ftruncate(fd, arenaChunk) != nil {
		unix.Close(fd)
		return false
	}
	rx, err := unix.Mmap(fd, 0, arenaChunk, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return false
	}
	if a.rx != nil {
		unix.Close(a.fd) // the full chunk stays mapped for execution
	}
	a.fd, a.rx, a.used = fd, rx, 0
	a.total += arenaChunk
	return true
}

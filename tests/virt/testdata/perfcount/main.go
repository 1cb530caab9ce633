// Command perfcount is the guest side of tests/virt's PMU test: it counts the CPU
// cycles and instructions of a loop with perf_event_open (user space only) and prints
// "PERF cycles=N instructions=M iterations=K".
package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

const iterations = 10_000_000

var sink uint64

func open(config uint64) int {
	attr := unix.PerfEventAttr{
		Type:   unix.PERF_TYPE_HARDWARE,
		Config: config,
		Bits:   unix.PerfBitDisabled | unix.PerfBitExcludeKernel | unix.PerfBitExcludeHv,
	}
	attr.Size = uint32(unsafe.Sizeof(attr))
	fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		fmt.Println("PERF-ERROR perf_event_open:", err)
		os.Exit(1)
	}
	return fd
}

func read(fd int) uint64 {
	var b [8]byte
	if _, err := unix.Read(fd, b[:]); err != nil {
		fmt.Println("PERF-ERROR read:", err)
		os.Exit(1)
	}
	return binary.LittleEndian.Uint64(b[:])
}

//go:noinline
func loop(n int) {
	x := sink
	for i := 0; i < n; i++ {
		x = x*3 + uint64(i)
	}
	sink = x
}

func main() {
	runtime.LockOSThread()
	cy := open(unix.PERF_COUNT_HW_CPU_CYCLES)
	in := open(unix.PERF_COUNT_HW_INSTRUCTIONS)
	for _, fd := range []int{cy, in} {
		unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_RESET, 0)
		unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_ENABLE, 0)
	}
	loop(iterations)
	for _, fd := range []int{cy, in} {
		unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_DISABLE, 0)
	}
	fmt.Printf("PERF cycles=%d instructions=%d iterations=%d\n", read(cy), read(in), iterations)
}

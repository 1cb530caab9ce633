// Command guestio is the in-guest half of `make bench-blk`: a small static program the
// benchmark cross-builds for the guest (GOARCH=arm64 or amd64, CGO_ENABLED=0) and puts
// into the busybox initramfs. It times synchronous O_DIRECT I/O on a block device, one
// request in flight (queue depth 1), so every figure is the device model's round trip:
//
//   - seqread:  the first -size bytes read in -bs blocks (default 1 MiB);
//   - randread: -rand reads of 4 KiB at uniformly random 4 KiB-aligned offsets within
//     -size (fixed seed: every run reads the same offsets), stopped early after
//     -maxsecs so that a slow emulator cannot hang the benchmark;
//   - seqwrite: the first -size bytes written in -bs blocks with a non-zero pattern,
//     then fdatasync (a FLUSH); the time includes the flush.
//
// Each test prints one line
//
//	GUESTIO test=NAME bytes=N ops=N secs=S mbps=X iops=X lat_us=X
//
// with MB/s in units of 10^6 bytes and the mean latency of one request. It is not part
// of gemu; it runs only inside test guests.
package main

import (
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	dev := flag.String("dev", "/dev/vda", "block device")
	sizeMiB := flag.Int64("size", 256, "MiB of the device the sequential tests cover and random reads fall in")
	bs := flag.Int("bs", 1<<20, "sequential block size in bytes (a multiple of 4096)")
	nrand := flag.Int("rand", 20000, "4 KiB random reads")
	maxSecs := flag.Float64("maxsecs", 60, "stop the random reads after this many seconds")
	tests := flag.String("tests", "seqread,randread,seqwrite", "tests to run, in order")
	flag.Parse()
	if err := run(*dev, *sizeMiB<<20, *bs, *nrand, *maxSecs, strings.Split(*tests, ",")); err != nil {
		fmt.Println("GUESTIO-FAIL", err)
		os.Exit(1)
	}
}

func run(dev string, size int64, bs, nrand int, maxSecs float64, tests []string) error {
	if bs <= 0 || bs%4096 != 0 || size < int64(bs) {
		return fmt.Errorf("bad -bs %d / -size %d", bs, size)
	}
	f, err := os.OpenFile(dev, os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	devSize, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if devSize < size {
		return fmt.Errorf("%s has %d bytes, fewer than -size %d", dev, devSize, size)
	}
	size -= size % int64(bs)
	// O_DIRECT needs an aligned buffer: an anonymous mapping is page-aligned.
	buf, err := syscall.Mmap(-1, 0, bs, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return err
	}
	fd := int(f.Fd())
	go watchdog()
	for _, t := range tests {
		switch t {
		case "seqread":
			start := time.Now()
			ops := 0
			for off := int64(0); off < size; off += int64(bs) {
				if err := full(syscall.Pread, fd, buf, off); err != nil {
					return fmt.Errorf("seqread at %d: %w", off, err)
				}
				ops++
			}
			report(t, size, ops, time.Since(start))
		case "randread":
			rng := rand.New(rand.NewPCG(1, 2))
			blocks := size / 4096
			b := buf[:4096]
			limit := time.Duration(maxSecs * float64(time.Second))
			start := time.Now()
			ops := 0
			for ops < nrand {
				off := rng.Int64N(blocks) * 4096
				if err := full(syscall.Pread, fd, b, off); err != nil {
					return fmt.Errorf("randread at %d: %w", off, err)
				}
				ops++
				if ops%256 == 0 && time.Since(start) > limit {
					break
				}
			}
			report(t, int64(ops)*4096, ops, time.Since(start))
		case "seqwrite":
			for i := range buf {
				buf[i] = byte(i*7+0x5a) | 1
			}
			start := time.Now()
			ops := 0
			for off := int64(0); off < size; off += int64(bs) {
				if err := full(syscall.Pwrite, fd, buf, off); err != nil {
					return fmt.Errorf("seqwrite at %d: %w", off, err)
				}
				ops++
			}
			if err := syscall.Fdatasync(fd); err != nil {
				return fmt.Errorf("seqwrite flush: %w", err)
			}
			report(t, size, ops, time.Since(start))
		default:
			return fmt.Errorf("unknown test %q", t)
		}
	}
	return nil
}

// full does one pread or pwrite of all of p at off (a short transfer is an error:
// direct I/O on a block device is never short inside the device).
func full(op func(int, []byte, int64) (int, error), fd int, p []byte, off int64) error {
	inflight.Store(&request{off: off, n: len(p), start: time.Now()})
	n, err := op(fd, p, off)
	inflight.Store(nil)
	if err != nil {
		return err
	}
	if n != len(p) {
		return fmt.Errorf("short transfer: %d of %d bytes", n, len(p))
	}
	return nil
}

type request struct {
	off   int64
	n     int
	start time.Time
}

// inflight is the request under way, for the watchdog.
var inflight atomic.Pointer[request]

// watchdog prints a GUESTIO-STALL line when one request has been waiting for 10 s, and
// each minute after (a lost request or interrupt in the device model), so that a hung run
// says where it hung before the benchmark's timeout kills it.
func watchdog() {
	var last *request
	var reported time.Duration
	for range time.Tick(time.Second) {
		r := inflight.Load()
		if r != last {
			last, reported = r, 0
		}
		if r == nil {
			continue
		}
		// Report at 10 s, then every minute.
		if d := time.Since(r.start); reported == 0 && d >= 10*time.Second || reported > 0 && d-reported >= time.Minute {
			reported = d.Truncate(10 * time.Second)
			fmt.Printf("GUESTIO-STALL request of %d bytes at offset %d waiting for %.0f s\n", r.n, r.off, d.Seconds())
			if reported == 10*time.Second {
				stallInfo()
			}
		}
	}
}

// stallInfo prints what the guest kernel knows of a stalled request: the requests the
// block layer has in flight and the virtio interrupt counts (a count that no longer
// moves means the completion interrupt never came; an in-flight count of 0 would mean
// the request completed but the wake-up was lost).
func stallInfo() {
	for _, p := range []string{"/sys/block/vda/inflight", "/proc/interrupts"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if p == "/proc/interrupts" && !strings.Contains(l, "virtio") {
				continue
			}
			fmt.Printf("GUESTIO-STALL %s: %s\n", p, strings.Join(strings.Fields(l), " "))
		}
	}
}

func report(test string, bytes int64, ops int, d time.Duration) {
	s := d.Seconds()
	fmt.Printf("GUESTIO test=%s bytes=%d ops=%d secs=%.3f mbps=%.2f iops=%.1f lat_us=%.1f\n",
		test, bytes, ops, s, float64(bytes)/s/1e6, float64(ops)/s, s/float64(ops)*1e6)
}

package vmdk

import (
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// mixedData is the benchmark input: 1 MiB chunks alternating compressible text and
// random bytes, as in the benchmark image.
func mixedData(size int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, size)
	words := []string{"the ", "quick ", "brown ", "fox ", "jumps ", "over ", "lazy ", "dog\n", "vmdk ", "grain "}
	for off := 0; off < size; off += 1 << 20 {
		end := min(off+1<<20, size)
		if (off>>20)%2 == 0 {
			for i := off; i < end; {
				i += copy(b[i:end], words[r.IntN(len(words))])
			}
		} else {
			for i := off; i < end; i += 8 {
				v := r.Uint64()
				for j := 0; j < 8 && i+j < end; j++ {
					b[i+j] = byte(v >> (8 * j))
				}
			}
		}
	}
	return b
}

func BenchmarkCompressGrain(b *testing.B) {
	data := mixedData(8 << 20)
	b.SetBytes(65536)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		off := (i * 65536) % len(data)
		putRec(compressGrain(data[off:off+65536], 65536))
		i++
	}
}

func BenchmarkInflateGrain(b *testing.B) {
	data := mixedData(8 << 20)
	var recs [][]byte
	for off := 0; off < len(data); off += 65536 {
		recs = append(recs, append([]byte(nil), compressGrain(data[off:off+65536], 65536)...))
	}
	dst := make([]byte, 65536)
	b.SetBytes(65536)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r := recs[i%len(recs)]
		sz := le.Uint32(r[8:])
		if err := inflate(dst, r[12:12+sz]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// TestStreamSpeedVsQemu times raw->streamOptimized (through ClusterCompressor on every
// core) and streamOptimized->raw (parallel ReadAt) against qemu-img on the same data.
// Set GEMU_VMDK_BENCH_MIB to run it (e.g. 768); it only prints figures.
func TestStreamSpeedVsQemu(t *testing.T) {
	mib, _ := strconv.Atoi(os.Getenv("GEMU_VMDK_BENCH_MIB"))
	if mib <= 0 {
		t.Skip("set GEMU_VMDK_BENCH_MIB=N to time N MiB against qemu-img")
	}
	needQemu(t)
	dir := t.TempDir()
	src := mixedData(mib << 20)
	raw := filepath.Join(dir, "src.raw")
	writeFile(t, raw, src)
	start := time.Now()
	streamConvert(t, src, filepath.Join(dir, "ours.vmdk"), runtime.GOMAXPROCS(0))
	ours := time.Since(start)
	start = time.Now()
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, filepath.Join(dir, "q.vmdk"))
	theirs := time.Since(start)
	t.Logf("raw->streamOptimized %d MiB: gemu %.2fs, qemu-img %.2fs, ratio %.2fx (GOMAXPROCS=%d)", mib, ours.Seconds(), theirs.Seconds(), theirs.Seconds()/ours.Seconds(), runtime.GOMAXPROCS(0))

	d := openT(t, filepath.Join(dir, "q.vmdk"), true)
	defer d.Close()
	out, _ := os.Create(filepath.Join(dir, "ours.raw"))
	start = time.Now()
	parallelToRaw(t, d, out)
	out.Close()
	ours = time.Since(start)
	start = time.Now()
	run(t, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", filepath.Join(dir, "q.vmdk"), filepath.Join(dir, "q.raw"))
	theirs = time.Since(start)
	t.Logf("streamOptimized->raw %d MiB: gemu %.2fs, qemu-img %.2fs, ratio %.2fx", mib, ours.Seconds(), theirs.Seconds(), theirs.Seconds()/ours.Seconds())
	run(t, "cmp", filepath.Join(dir, "ours.raw"), raw)
	if out, err := exec.Command("cmp", filepath.Join(dir, "q.raw"), raw).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
}

// parallelToRaw copies d to w in 1 MiB chunks on every core.
func parallelToRaw(t testing.TB, d interface {
	io.ReaderAt
	Size() int64
}, w io.WriterAt) {
	const chunk = 1 << 20
	var wg sync.WaitGroup
	next := make(chan int64)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunk)
			for off := range next {
				n := min(chunk, d.Size()-off)
				if _, err := d.ReadAt(buf[:n], off); err != nil {
					t.Error(err)
				}
				if !isZero(buf[:n]) {
					w.WriteAt(buf[:n], off)
				}
			}
		}()
	}
	for off := int64(0); off < d.Size(); off += chunk {
		next <- off
	}
	close(next)
	wg.Wait()
}

// BenchmarkStreamRead: a qemu-img streamOptimized image of mixed data read on every
// core (the vmdk->raw convert path).
func BenchmarkStreamRead(b *testing.B) {
	needQemu(b)
	dir := b.TempDir()
	src := mixedData(64 << 20)
	raw := filepath.Join(dir, "src.raw")
	writeFile(b, raw, src)
	run(b, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, filepath.Join(dir, "q.vmdk"))
	d := openT(b, filepath.Join(dir, "q.vmdk"), true)
	defer d.Close()
	out, _ := os.Create(filepath.Join(dir, "o.raw"))
	defer out.Close()
	b.SetBytes(64 << 20)
	for b.Loop() {
		parallelToRaw(b, d, out)
	}
}

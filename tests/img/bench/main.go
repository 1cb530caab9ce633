// Command bench compares gemu-img with qemu-img on the conversions people run most,
// on a 2 GiB raw image holding 768 MiB of mixed data (compressible text and random
// bytes) with holes between. Runs alternate between the two tools; medians, ratios
// and gemu-img's peak RSS are printed. It is run by `make bench-img`, not by tests.
package main

import (
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	gemu := flag.String("gemu", "bin/gemu-img", "gemu-img binary")
	qemu := flag.String("qemu", "qemu-img", "qemu-img binary")
	runs := flag.Int("runs", 3, "runs per tool and case")
	dir := flag.String("dir", "", "work folder (default: a new temporary one)")
	only := flag.String("only", "", "run only cases whose name equals or contains one of these (comma-separated)")
	skip := flag.String("skip", "", "skip cases whose name contains one of these (comma-separated)")
	flag.Parse()
	// Wall times on a shared machine follow its load (tools with more threads get a
	// bigger share of a busy CPU), so the figures are printed with it.
	fmt.Printf("load before: %s", loadAvg())
	if err := run(*gemu, *qemu, *runs, *dir, *only, *skip); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Printf("load after: %s", loadAvg())
}

// loadAvg is /proc/loadavg's 1, 5 and 15 minute averages and CPU count.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if err != nil || len(f) < 3 {
		return "unknown\n"
	}
	return fmt.Sprintf("%s %s %s on %d CPUs\n", f[0], f[1], f[2], runtime.NumCPU())
}

const (
	imageSize = 2 << 30
	extent    = 4 << 20
)

// makeSource writes the 2 GiB sparse raw: of every 8 extents of 4 MiB, 3 hold data
// (768 MiB in all), each extent alternating 64 KiB of text and 64 KiB of random bytes.
func makeSource(p string) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(imageSize); err != nil {
		return err
	}
	r := rand.New(rand.NewSource(1))
	line := "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor %08d\n"
	buf := make([]byte, extent)
	n := 0
	for i := 0; i < imageSize/extent; i++ {
		if m := i % 8; m != 0 && m != 3 && m != 5 {
			continue
		}
		for o := 0; o < extent; o += 128 << 10 {
			var sb strings.Builder
			for sb.Len() < 64<<10 {
				fmt.Fprintf(&sb, line, n)
				n++
			}
			copy(buf[o:o+64<<10], sb.String())
			r.Read(buf[o+64<<10 : o+128<<10])
		}
		if _, err := f.WriteAt(buf, int64(i)*extent); err != nil {
			return err
		}
	}
	return f.Sync()
}

// binSample is the size of the real-data sample for the compressed cases.
const binSample = 256 << 20

// makeBinSample concatenates this host's binaries and libraries (regular files under
// /usr/bin and /usr/lib, in name order) into p, up to n bytes; it returns the length.
func makeBinSample(p string, n int64) (int64, error) {
	var names []string
	for _, d := range []string{"/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"} {
		m, _ := filepath.Glob(filepath.Join(d, "*"))
		sort.Strings(m)
		names = append(names, m...)
	}
	out, err := os.Create(p)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	var done int64
	for _, name := range names {
		if done >= n {
			break
		}
		if fi, err := os.Lstat(name); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		m, err := io.Copy(out, io.LimitReader(f, n-done))
		f.Close()
		if err != nil {
			return done, err
		}
		done += m
	}
	return done, out.Sync()
}

type tcase struct {
	name string
	in   string   // input file (made before timing)
	gemu []string // arguments after "convert"
	qemu [][]string
	out  string
}

func run(gemu, qemu string, runs int, dir, only, skip string) error {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	} else {
		d, err := os.MkdirTemp("", "gemu-bench-img")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	if _, err := exec.LookPath(qemu); err != nil {
		return fmt.Errorf("qemu-img not found: %v", err)
	}
	src := filepath.Join(dir, "src.raw")
	fmt.Printf("building %s (2 GiB, 768 MiB data)...\n", src)
	if err := makeSource(src); err != nil {
		return err
	}
	// Real data for the compressed cases: the synthetic source is half random bytes,
	// which both tools store raw (gemu-img after a cheap probe), so it says little
	// about the encoders themselves.
	bins := filepath.Join(dir, "bin.raw")
	if n, err := makeBinSample(bins, binSample); err != nil {
		return err
	} else if n < binSample {
		fmt.Printf("note: only %d MiB of binaries under /usr/bin and /usr/lib\n", n>>20)
	}
	// Inputs for the reading cases, made by qemu-img so both tools read the same file.
	inputs := map[string][]string{
		"in.qcow2":      {"convert", "-f", "raw", "-O", "qcow2", src},
		"in-zlib.qcow2": {"convert", "-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zlib", src},
		"in-zstd.qcow2": {"convert", "-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zstd", src},
		"in.vmdk":       {"convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", src},
		"in.vdi":        {"convert", "-f", "raw", "-O", "vdi", src},
		"in.vhd":        {"convert", "-f", "raw", "-O", "vpc", src},
		"in.vhdx":       {"convert", "-f", "raw", "-O", "vhdx", src},
	}
	out := func(n string) string { return filepath.Join(dir, n) }
	cases := []tcase{
		{name: "raw->qcow2", gemu: []string{"-f", "raw", "-O", "qcow2", src}, out: "o.qcow2"},
		{name: "qcow2->raw", in: "in.qcow2", gemu: []string{"-f", "qcow2", "-O", "raw", out("in.qcow2")}, out: "o.raw"},
		{name: "raw->qcow2 -c zlib", gemu: []string{"-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zlib", src}, out: "o.qcow2",
			qemu: [][]string{nil, {"-W"}}},
		{name: "raw->qcow2 -c zstd", gemu: []string{"-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zstd", src}, out: "o.qcow2",
			qemu: [][]string{nil, {"-W"}}},
		{name: "bin->qcow2 -c zlib", gemu: []string{"-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zlib", bins}, out: "o.qcow2",
			qemu: [][]string{{"-W"}}},
		{name: "bin->qcow2 -c zstd", gemu: []string{"-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zstd", bins}, out: "o.qcow2",
			qemu: [][]string{{"-W"}}},
		{name: "zlib qcow2->raw", in: "in-zlib.qcow2", gemu: []string{"-f", "qcow2", "-O", "raw", out("in-zlib.qcow2")}, out: "o.raw"},
		{name: "zstd qcow2->raw", in: "in-zstd.qcow2", gemu: []string{"-f", "qcow2", "-O", "raw", out("in-zstd.qcow2")}, out: "o.raw"},
		{name: "raw->vmdk stream", gemu: []string{"-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", src}, out: "o.vmdk"},
		{name: "vmdk->raw", in: "in.vmdk", gemu: []string{"-f", "vmdk", "-O", "raw", out("in.vmdk")}, out: "o.raw"},
		{name: "vdi->qcow2", in: "in.vdi", gemu: []string{"-f", "vdi", "-O", "qcow2", out("in.vdi")}, out: "o.qcow2"},
		{name: "qcow2->vdi", in: "in.qcow2", gemu: []string{"-f", "qcow2", "-O", "vdi", out("in.qcow2")}, out: "o.vdi"},
		{name: "vhd->qcow2", in: "in.vhd", gemu: []string{"-f", "vpc", "-O", "qcow2", out("in.vhd")}, out: "o.qcow2"},
		{name: "qcow2->vhd", in: "in.qcow2", gemu: []string{"-f", "qcow2", "-O", "vpc", out("in.qcow2")}, out: "o.vhd"},
		{name: "vhdx->qcow2", in: "in.vhdx", gemu: []string{"-f", "vhdx", "-O", "qcow2", out("in.vhdx")}, out: "o.qcow2"},
		{name: "qcow2->vhdx", in: "in.qcow2", gemu: []string{"-f", "qcow2", "-O", "vhdx", out("in.qcow2")}, out: "o.vhdx"},
	}
	for _, c := range cases {
		caseNames[c.name] = true
	}
	made := map[string]bool{}
	fmt.Printf("%-32s %9s %9s %8s   %-25s %10s\n", "case (median wall, CPU)", "gemu-img", "qemu-img", "speedup", "cpu gemu / qemu / ratio", "gemu RSS")
	for _, c := range cases {
		if only != "" && !matchAny(c.name, only, true) || skip != "" && matchAny(c.name, skip, false) {
			continue
		}
		if c.in != "" && !made[c.in] {
			args := append(append([]string{}, inputs[c.in]...), out(c.in))
			if _, err := timeRun(qemu, args); err != nil {
				return fmt.Errorf("making %s: %v", c.in, err)
			}
			made[c.in] = true
		}
		variants := c.qemu
		if variants == nil {
			variants = [][]string{nil}
		}
		var gt, gc []time.Duration
		var rss, gsize, glen int64
		qsize, qlen := make([]int64, len(variants)), make([]int64, len(variants))
		qt := make([][]time.Duration, len(variants))
		qc := make([][]time.Duration, len(variants))
		for i := 0; i < runs; i++ {
			os.Remove(out(c.out))
			sm, err := timeRun(gemu, append(append([]string{"convert"}, c.gemu...), out(c.out)))
			if err != nil {
				// Report and go on: one unsupported case should not hide the others.
				fmt.Printf("%-32s gemu-img failed: %.200s\n", c.name, strings.TrimSpace(err.Error()))
				gt = nil
				break
			}
			gt, gc = append(gt, sm.wall), append(gc, sm.cpu)
			rss = max(rss, sm.rss)
			gsize, glen = fileSize(out(c.out))
			for v, extra := range variants {
				os.Remove(out(c.out))
				args := append(append(append([]string{"convert"}, extra...), c.gemu...), out(c.out))
				sm, err := timeRun(qemu, args)
				if err != nil {
					return fmt.Errorf("%s: qemu-img: %v", c.name, err)
				}
				qt[v], qc[v] = append(qt[v], sm.wall), append(qc[v], sm.cpu)
				qsize[v], qlen[v] = fileSize(out(c.out))
			}
		}
		os.Remove(out(c.out))
		if gt == nil {
			continue
		}
		g, gcpu := median(gt), median(gc)
		for v, extra := range variants {
			q, qcpu := median(qt[v]), median(qc[v])
			name := c.name
			if len(extra) > 0 {
				name += " (qemu " + strings.Join(extra, " ") + ")"
			}
			fmt.Printf("%-32s %8.2fs %8.2fs %7.2fx   cpu %6.2fs %6.2fs %6.2fx %7d MiB   out %d / %d MiB (%+.2f%%, length %+.2f%%)\n", name, g.Seconds(), q.Seconds(),
				q.Seconds()/g.Seconds(), gcpu.Seconds(), qcpu.Seconds(), qcpu.Seconds()/gcpu.Seconds(), rss/1024,
				gsize>>20, qsize[v]>>20, 100*(float64(gsize)/float64(max(qsize[v], 1))-1),
				100*(float64(glen)/float64(max(qlen[v], 1))-1))
		}
	}
	return nil
}

// matchAny reports whether name contains one of the comma-separated patterns; with
// exactFirst, a pattern equal to some case name matches only that case (so "raw->qcow2"
// does not also select "raw->qcow2 -c zlib").
func matchAny(name, list string, exactFirst bool) bool {
	for _, p := range strings.Split(list, ",") {
		if p == "" {
			continue
		}
		if exactFirst && isCaseName(p) {
			if name == p {
				return true
			}
			continue
		}
		if strings.Contains(name, p) {
			return true
		}
	}
	return false
}

// caseNames holds every case name, for matchAny's exact matches.
var caseNames = map[string]bool{}

func isCaseName(p string) bool { return caseNames[p] }

// sample is one run: wall time, CPU time (user+system) and peak RSS in KiB.
type sample struct {
	wall, cpu time.Duration
	rss       int64
}

// timeRun runs a command and measures it.
func timeRun(bin string, args []string) (sample, error) {
	cmd := exec.Command(bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return sample{}, fmt.Errorf("%s %s: %v: %s", bin, strings.Join(args, " "), err, stderr.String())
	}
	sm := sample{wall: d, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		sm.rss = ru.Maxrss
	}
	return sm, nil
}

// fileSize is the allocated size of the output file (what a compressed image costs on
// disk) and its length (what copying it moves).
func fileSize(p string) (alloc, length int64) {
	var st syscall.Stat_t
	if syscall.Stat(p, &st) != nil {
		return 0, 0
	}
	return st.Blocks * 512, st.Size
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// Command bench compares gemu-system-x86_64 -accel tcg with qemu-system-x86_64 -accel tcg
// on the same Debian amd64 kernel and busybox initramfs, alternating the two emulators
// run by run:
//
//   - boot: wall time from start to exit of a guest whose /init powers off at once, and
//     the emulator's peak RSS (from wait4);
//   - cpu: host wall time between two console markers around a CPU-bound busybox job
//     (gzip, md5sum and sha256sum of a 4 MiB random buffer).
//
// Each run also reports the emulator's CPU time (user+sys, from wait4), which a loaded
// host distorts less than wall time. It prints each run and the medians, with gemu/QEMU
// ratios. Run by `make bench-tcg-x86`.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"gemu/tests/assets"
)

const cpuScript = `head -c 4194304 /dev/urandom > /tmp/buf
echo BENCH-START
gzip -c /tmp/buf | md5sum
md5sum /tmp/buf
sha256sum /tmp/buf
echo BENCH-END
`

type result struct {
	wall   time.Duration // whole run
	marked time.Duration // between BENCH-START and BENCH-END (cpu runs)
	cpu    time.Duration // user+sys of the emulator process
	rssKiB int64
}

func main() {
	runs := flag.Int("runs", 3, "runs per emulator and workload")
	mem := flag.String("m", "512", "guest RAM (-m)")
	flag.Parse()
	if why := assets.Missing("amd64"); why != "" {
		fail(why)
	}
	gemu := filepath.Join(os.Getenv("GEMU_BIN"), "gemu-system-x86_64")
	if _, err := os.Stat(gemu); err != nil {
		fail("gemu-system-x86_64 not built (run make build): " + err.Error())
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		fail("qemu-system-x86_64 not installed")
	}
	emus := []struct{ name, bin string }{{"gemu", gemu}, {"qemu", qemu}}
	workloads := []struct{ name, script string }{{"boot", "true\n"}, {"cpu", cpuScript}}

	res := map[string][]result{}
	for _, w := range workloads {
		for i := range *runs {
			for _, e := range emus {
				r, err := runOnce(e.bin, *mem, w.script)
				if err != nil {
					fail(fmt.Sprintf("%s %s run %d: %v", e.name, w.name, i+1, err))
				}
				key := e.name + "/" + w.name
				res[key] = append(res[key], r)
				fmt.Printf("%-10s run %d: wall %6.2fs  cpu %6.2fs  job %6.2fs  peak RSS %4d MiB\n", key, i+1,
					r.wall.Seconds(), r.cpu.Seconds(), r.marked.Seconds(), r.rssKiB>>10)
			}
		}
	}
	fmt.Printf("\nmedians over %d alternating runs (-accel tcg -m %s -smp 1):\n", *runs, *mem)
	med := func(key string, f func(r result) float64) float64 {
		var v []float64
		for _, r := range res[key] {
			v = append(v, f(r))
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	wall := func(r result) float64 { return r.wall.Seconds() }
	job := func(r result) float64 { return r.marked.Seconds() }
	rss := func(r result) float64 { return float64(r.rssKiB) / 1024 }
	gb, qb := med("gemu/boot", wall), med("qemu/boot", wall)
	gr, qr := med("gemu/boot", rss), med("qemu/boot", rss)
	gc, qc := med("gemu/cpu", job), med("qemu/cpu", job)
	cpu := func(r result) float64 { return r.cpu.Seconds() }
	gcb, qcb := med("gemu/boot", cpu), med("qemu/boot", cpu)
	fmt.Printf("boot-to-poweroff wall: gemu %.2fs  qemu %.2fs  ratio %.2fx\n", gb, qb, gb/qb)
	fmt.Printf("boot-to-poweroff CPU:  gemu %.2fs  qemu %.2fs  ratio %.2fx\n", gcb, qcb, gcb/qcb)
	fmt.Printf("boot peak RSS:         gemu %.0f MiB  qemu %.0f MiB  ratio %.2fx\n", gr, qr, gr/qr)
	fmt.Printf("cpu job (gzip+md5+sha256 of 4 MiB): gemu %.2fs  qemu %.2fs  ratio %.2fx\n", gc, qc, gc/qc)
}

func runOnce(bin, mem, script string) (result, error) {
	cmd := exec.Command(bin, "-accel", "tcg", "-m", mem, "-smp", "1", "-nographic", "-no-reboot",
		"-kernel", assets.Kernel("amd64"), "-initrd", assets.Initrd("amd64"),
		"-append", "console=ttyS0 quiet panic=-1 "+assets.CmdArg(script))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return result{}, err
	}
	var tail []string
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	var s0, s1 time.Time
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.Contains(l, "BENCH-START"):
			s0 = time.Now()
		case strings.Contains(l, "BENCH-END"):
			s1 = time.Now()
		}
		if tail = append(tail, l); len(tail) > 20 {
			tail = tail[1:]
		}
	}
	err = cmd.Wait()
	r := result{wall: time.Since(start)}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.rssKiB = ru.Maxrss
		r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if !s0.IsZero() && !s1.IsZero() {
		r.marked = s1.Sub(s0)
	}
	if err != nil {
		return r, fmt.Errorf("%v; last output:\n%s", err, strings.Join(tail, "\n"))
	}
	if !strings.Contains(strings.Join(tail, "\n"), "GEMU-CMD-EXIT 0") {
		return r, fmt.Errorf("guest script failed; last output:\n%s", strings.Join(tail, "\n"))
	}
	return r, nil
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bench:", msg)
	os.Exit(1)
}

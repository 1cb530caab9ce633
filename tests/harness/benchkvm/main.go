// Command benchkvm is `make bench-kvm`: inside the KVM-in-TCG harness it boots Debian's
// kernel with the busybox initramfs to the /init marker and on to poweroff, alternating
// gemu-system-x86_64 and qemu-system-x86_64 -accel kvm with the same kernel, initrd, -m
// and -smp, and prints per-run figures, medians and gemu/QEMU ratios: boot-to-marker wall
// time, peak RSS, and peak RSS outside guest RAM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gemu/tests/harness"
	"gemu/tests/testbin"
)

func main() {
	runs := flag.Int("runs", 5, "boots per VMM")
	mem := flag.Int("m", 256, "guest MiB")
	cpus := flag.Int("smp", 2, "guest CPUs")
	verbose := flag.Bool("v", false, "copy the outer guest's console to stderr as it runs")
	flag.Parse()
	if err := run(*runs, *mem, *cpus, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "bench-kvm:", err)
		os.Exit(1)
	}
}

func run(runs, mem, cpus int, verbose bool) error {
	if m := harness.Missing(); m != "" {
		return fmt.Errorf("cannot run: %s", m)
	}
	dir, err := os.MkdirTemp("", "benchkvm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	gemu, err := testbin.Build(dir, "gemu/cmd/gemu-system-x86_64")
	if err != nil {
		return err
	}
	timeit, err := testbin.Build(dir, "gemu/tests/harness/timeit")
	if err != nil {
		return err
	}
	inner := harness.InnerArgs(mem, cpus, "true")
	vmms := map[string]string{
		"gemu": harness.InnerGemu + " -accel kvm -nographic -no-reboot " + inner,
		"qemu": "qemu-system-x86_64 -accel kvm -cpu host -display none -nodefaults -serial stdio -no-reboot " + inner,
	}
	var sb strings.Builder
	for i := 0; i < runs; i++ {
		for _, name := range []string{"gemu", "qemu"} {
			fmt.Fprintf(&sb, "/timeit -name %s -marker GEMU-INIT-OK -guest-mib %d %s\n", name, mem, vmms[name])
		}
	}
	start := time.Now()
	opts := harness.Options{
		Script: sb.String(), Gemu: gemu, QEMU: true,
		Files: map[string]string{"/timeit": timeit}, Timeout: 30 * time.Minute,
	}
	if verbose {
		opts.Stdout = os.Stderr
	}
	out, err := harness.Run(context.Background(), opts)
	if err != nil {
		fmt.Println(out)
		return err
	}
	re := regexp.MustCompile(`TIMEIT name=(\w+) marker=(\S+) total=(\S+) maxrss_kib=(\d+) own_kib=(\d+) exit=(\d+)`)
	res := map[string][][4]float64{}
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		var v [4]float64
		for i := range v {
			v[i], _ = strconv.ParseFloat(m[2+i], 64)
		}
		if m[6] != "0" || v[0] < 0 {
			fmt.Printf("%s run failed (exit %s, marker %s)\n", m[1], m[6], m[2])
			continue
		}
		res[m[1]] = append(res[m[1]], v)
	}
	fmt.Printf("bench-kvm: Debian %s boot to /init marker, -m %d -smp %d, %d alternating runs each, inside the KVM-in-TCG harness (%.0f s)\n",
		"6.1", mem, cpus, runs, time.Since(start).Seconds())
	med := map[string][4]float64{}
	for _, name := range []string{"gemu", "qemu"} {
		if len(res[name]) == 0 {
			fmt.Println(out)
			return fmt.Errorf("no successful %s runs", name)
		}
		var m [4]float64
		for k := 0; k < 4; k++ {
			var xs []float64
			for _, v := range res[name] {
				xs = append(xs, v[k])
			}
			sort.Float64s(xs)
			m[k] = xs[len(xs)/2]
		}
		med[name] = m
		fmt.Printf("  %-5s median: marker %.3f s, poweroff %.3f s, peak RSS %.1f MiB, RSS outside guest RAM %.1f MiB (%d runs)\n",
			name, m[0], m[1], m[2]/1024, m[3]/1024, len(res[name]))
	}
	g, q := med["gemu"], med["qemu"]
	fmt.Printf("  ratio gemu/qemu: marker %.2f, poweroff %.2f, peak RSS %.2f, RSS outside guest RAM %.2f\n",
		g[0]/q[0], g[1]/q[1], g[2]/q[2], g[3]/q[3])
	return nil
}

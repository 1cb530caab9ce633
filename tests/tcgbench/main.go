// Command tcgbench is `make bench-tcg`: the broad CPU benchmark of gemu's translator
// against QEMU's on the same guest. It cross-builds tests/tcgbench/guest (a static Go
// program of ~20 CPU-bound cases: AES-GCM, ChaCha20, SHA-1/256/512, CRC32, RSA- and
// ECDSA-style big numbers, deflate, zstd, gzip, regular expressions, JSON, sorting,
// matrix multiply, FFT, timers, threads, fork/exec) for the guest architecture, puts it
// in the busybox test initramfs, boots Debian's kernel under gemu and QEMU alternately
// (-smp 2), and prints each case's in-guest time: medians, gemu/QEMU ratios and their
// geometric mean. A case whose result digest differs between the emulators is flagged.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"gemu/tests/assets"
	"gemu/tests/assets/initramfs"
)

func main() {
	runs := flag.Int("runs", 3, "alternating runs per emulator")
	arch := flag.String("arch", "arm64", "guest architecture (arm64; amd64 once x86 TCG boots)")
	only := flag.String("cases", "", "comma-separated case names (default: all)")
	base := flag.String("base", "", "directory of a baseline gemu-system-aarch64 (a build of main, say) run in the same alternation, for before/after ratios under the same load")
	flag.Parse()
	if *arch != "arm64" {
		fail("-arch " + *arch + ": only arm64 guests run under gemu's TCG so far")
	}
	if why := assets.Missing(*arch); why != "" {
		fail(why)
	}
	gemu := filepath.Join(os.Getenv("GEMU_BIN"), "gemu-system-aarch64")
	if _, err := os.Stat(gemu); err != nil {
		fail("gemu-system-aarch64 not built (run make build): " + err.Error())
	}
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		fail("qemu-system-aarch64 not installed")
	}
	dir, err := os.MkdirTemp("", "gemu-tcgbench-")
	if err != nil {
		fail(err.Error())
	}
	defer os.RemoveAll(dir)
	initrd, err := buildInitrd(dir, *arch, strings.ReplaceAll(*only, ",", " "))
	if err != nil {
		fail(err.Error())
	}
	load := loadavg()
	emus := []struct{ name, bin string }{{"gemu", gemu}, {"qemu", qemu}}
	times := map[string]map[string][]float64{"gemu": {}, "qemu": {}, "base": {}}
	checks := map[string]map[string]string{"gemu": {}, "qemu": {}, "base": {}}
	if *base != "" {
		b := filepath.Join(*base, "gemu-system-aarch64")
		if _, err := os.Stat(b); err != nil {
			fail("-base: " + err.Error())
		}
		emus = append([]struct{ name, bin string }{{"base", b}}, emus...)
	}
	var order []string
	for i := range *runs {
		for _, e := range emus {
			res, err := runOnce(e.bin, initrd)
			if err != nil {
				fail(fmt.Sprintf("%s run %d: %v", e.name, i+1, err))
			}
			fmt.Printf("%s run %d:", e.name, i+1)
			for _, r := range res {
				if len(order) < len(res) && e.name == "gemu" && i == 0 {
					order = append(order, r.name)
				}
				times[e.name][r.name] = append(times[e.name][r.name], r.secs)
				checks[e.name][r.name] = r.check
				fmt.Printf(" %s=%.2fs", r.name, r.secs)
			}
			fmt.Println()
		}
	}
	fmt.Printf("\nbench-tcg: %s guest, -M virt -cpu cortex-a57 -m 1024 -smp 2, medians of %d alternating runs; load average %s at start, %s at end\n",
		*arch, *runs, load, loadavg())
	fmt.Printf("%-16s %10s %10s %8s", "case", "gemu s", "qemu s", "ratio")
	if *base != "" {
		fmt.Printf(" %10s %8s", "base s", "base")
	}
	fmt.Println()
	logSum, n := 0.0, 0
	baseLog := 0.0
	worst := ""
	worstRatio := 0.0
	for _, c := range order {
		g, q := median(times["gemu"][c]), median(times["qemu"][c])
		ratio := g / q
		flag := ""
		if checks["gemu"][c] != checks["qemu"][c] {
			flag = "  RESULT DIFFERS: gemu " + checks["gemu"][c] + " qemu " + checks["qemu"][c]
		}
		if *base != "" {
			b := median(times["base"][c])
			if checks["base"][c] != checks["qemu"][c] {
				flag += "  BASE RESULT DIFFERS: " + checks["base"][c]
			}
			flag = fmt.Sprintf(" %10.3f %7.2fx", b, b/q) + flag
			baseLog += math.Log(b / q)
		}
		fmt.Printf("%-16s %10.3f %10.3f %7.2fx%s\n", c, g, q, ratio, flag)
		if q > 0 && g > 0 {
			logSum += math.Log(ratio)
			n++
			if ratio > worstRatio {
				worst, worstRatio = c, ratio
			}
		}
	}
	if n > 0 {
		fmt.Printf("%-16s %32.2fx  (geometric mean of %d ratios; worst %s %.2fx; < 1 means gemu is faster)\n", "geomean", math.Exp(logSum/float64(n)), n, worst, worstRatio)
		if *base != "" {
			fmt.Printf("%-16s %32.2fx  (baseline's geometric mean)\n", "base geomean", math.Exp(baseLog/float64(n)))
		}
	}
}

type caseResult struct {
	name, check string
	secs        float64
}

// buildInitrd cross-builds the guest program and puts it, with busybox and a script
// that runs it, into a fresh initramfs.
func buildInitrd(dir, arch, cases string) (string, error) {
	bin := filepath.Join(dir, "gemu-bench")
	cmd := exec.Command("go", "build", "-o", bin, "./tests/tcgbench/guest")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the guest program: %v\n%s", err, out)
	}
	im := initramfs.New()
	im.AddBusybox(filepath.Join(assets.Dir(arch), "busybox"))
	im.AddFile("bin/gemu-bench", bin, 0o755)
	// GOMAXPROCS follows the guest's 2 CPUs; the script's status ends the run.
	im.AddBytes(initramfs.CmdFile, []byte("/bin/gemu-bench "+cases+"\n"), 0o755)
	out := filepath.Join(dir, "initrd.gz")
	return out, im.WriteFile(out)
}

func runOnce(bin, initrd string) ([]caseResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-M", "virt", "-cpu", "cortex-a57", "-m", "1024", "-smp", "2",
		"-kernel", assets.Kernel("arm64"), "-initrd", initrd, "-append", "console=ttyAMA0 quiet",
		"-nographic", "-no-reboot")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var res []caseResult
	done := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 1 && f[0] == "BENCH-DONE" {
			done = true
		}
		if len(f) == 4 && f[0] == "BENCH" {
			s, err := strconv.ParseFloat(f[2], 64)
			if err == nil {
				res = append(res, caseResult{name: f[1], secs: s, check: f[3]})
			}
		}
	}
	werr := cmd.Wait()
	if !done {
		return res, fmt.Errorf("the guest program did not finish (%v)", werr)
	}
	return res, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return f[0]
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "tcgbench:", msg)
	os.Exit(1)
}

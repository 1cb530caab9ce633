// Command bench is `make bench-blk`: virtio-blk throughput and latency of gemu against
// QEMU with the same guest, image and drive flags
//
//	-drive file=IMG,if=virtio,format=raw|qcow2,cache=none,aio=threads
//
// on a raw image and on a qcow2 converted from it by qemu-img (fully allocated: every
// cluster holds data, so reads hit data). Inside the guest the static helper
// tests/blk/guestio times O_DIRECT I/O on /dev/vda at queue depth 1: a sequential read
// and a sequential write (with its final flush) of -size MiB in 1 MiB blocks, and -rand
// random 4 KiB reads (bounded by -maxsecs).
//
//   - arm64: gemu-system-aarch64 vs qemu-system-aarch64 -M virt -cpu cortex-a57 (TCG)
//     on this host, Debian's arm64 kernel with a busybox initramfs that holds the helper;
//   - x86_64: gemu-system-x86_64 vs qemu-system-x86_64 -accel kvm inside the KVM-in-TCG
//     harness (tests/harness), the images on an ext4 filesystem on a loop device in the
//     outer guest (its initramfs is tmpfs, which has no O_DIRECT on its 6.1 kernel).
//
// Runs alternate between the emulators (the order swapped every run), each run one guest
// boot doing the three tests. It prints every run, then a table of medians with
// gemu/QEMU ratios for throughput (MB/s, IOPS) and mean latency, and the host's load
// average. It exits non-zero only when something fails to run, never on a ratio.
// -profile FILE adds one gemu arm64 random-read run with GEMU_CPUPROFILE=FILE and
// prints the top of `go tool pprof -top`.
package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"gemu/tests/assets"
	"gemu/tests/assets/initramfs"
	"gemu/tests/harness"
	"gemu/tests/testbin"
)

type config struct {
	runs      int
	sizeMiB   int64
	nrand     int
	maxSecs   float64
	armMem    int
	kvmMem    int
	transport string // arm64: pci or mmio
	profile   string
	verbose   bool
	timeout   time.Duration
}

var tests = []string{"seqread", "seqwrite", "randread"}
var formats = []string{"raw", "qcow2"}

// sample is one GUESTIO line.
type sample struct {
	mbps, iops, latUS, secs float64
	ops                     int
}

// key names one cell: arch/format/vmm/test.
type key struct{ arch, format, vmm, test string }

type results map[key][]sample

// failures lists the runs that did not complete (a hung or crashed guest): they are
// reported and make the exit status 1, but the other runs still go on.
var failures []string

func failed(msg string) {
	fmt.Println("FAILED:", msg)
	failures = append(failures, msg)
}

func main() {
	var c config
	arches := flag.String("arch", "arm64,x86_64", "architectures to run (arm64: TCG here; x86_64: KVM in the harness)")
	flag.IntVar(&c.runs, "runs", 3, "runs per emulator, format and architecture (medians are reported)")
	flag.Int64Var(&c.sizeMiB, "size", 256, "MiB read and written sequentially (also the image size)")
	flag.IntVar(&c.nrand, "rand", 20000, "4 KiB random reads per run")
	flag.Float64Var(&c.maxSecs, "maxsecs", 60, "bound on the random-read phase of one run, seconds")
	flag.IntVar(&c.armMem, "m", 512, "arm64 guest MiB")
	flag.IntVar(&c.kvmMem, "kvm-m", 256, "x86_64 inner guest MiB")
	flag.StringVar(&c.transport, "arm-transport", "pci", "arm64 virtio transport: pci (if=virtio) or mmio (-device virtio-blk-device)")
	flag.StringVar(&c.profile, "profile", "", "write a gemu CPU profile of one arm64 raw random-read run to FILE")
	flag.BoolVar(&c.verbose, "v", false, "copy guest consoles to stderr")
	flag.DurationVar(&c.timeout, "timeout", 5*time.Minute, "bound on one guest run (arm64; x86_64 gets 3x, being nested)")
	flag.Parse()
	if c.transport != "pci" && c.transport != "mmio" {
		fail("-arm-transport must be pci or mmio")
	}
	if c.runs < 1 || c.sizeMiB < 1 || c.nrand < 1 {
		fail("-runs, -size and -rand must be positive")
	}
	if err := run(c, strings.Split(*arches, ",")); err != nil {
		fail(err.Error())
	}
}

func run(c config, arches []string) error {
	fmt.Printf("bench-blk: load average at start %s\n", loadavg())
	dir, err := os.MkdirTemp("", "benchblk-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	imgs, err := makeImages(dir, c.sizeMiB<<20)
	if err != nil {
		return err
	}
	res := results{}
	start := time.Now()
	for _, a := range arches {
		switch a {
		case "arm64":
			err = runArm(c, dir, imgs, res)
		case "x86_64", "amd64":
			err = runKVM(c, dir, imgs, res)
		default:
			err = fmt.Errorf("unknown -arch %q", a)
		}
		if err != nil {
			return err
		}
	}
	printTable(c, arches, res)
	fmt.Printf("bench-blk: %.0f s; load average at end %s (%d host CPUs, shared)\n",
		time.Since(start).Seconds(), loadavg(), runtime.NumCPU())
	if c.profile != "" {
		if err := profileArm(c, dir, imgs); err != nil {
			failed(err.Error())
		}
	}
	if len(failures) > 0 {
		return fmt.Errorf("%d runs failed:\n%s", len(failures), strings.Join(failures, "\n"))
	}
	return nil
}

// makeImages writes a raw image with a non-zero pattern in every 4 KiB block (so that
// qemu-img convert allocates every cluster, and gzip still compresses the harness's
// copy) and converts it to qcow2, checking with qemu-img map that all of it is data.
func makeImages(dir string, size int64) (map[string]string, error) {
	raw := filepath.Join(dir, "disk.raw")
	f, err := os.Create(raw)
	if err != nil {
		return nil, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	blk := make([]byte, 4096)
	for i := int64(0); i < size/4096; i++ {
		for j := 0; j < len(blk); j += 8 {
			binary.LittleEndian.PutUint64(blk[j:], uint64(i)<<16|uint64(j)|0xa5a5_0000_0000_0001)
		}
		w.Write(blk)
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	q := filepath.Join(dir, "disk.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, q).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("qemu-img convert: %v\n%s", err, out)
	}
	out, err := exec.Command("qemu-img", "map", "--output=json", "-f", "qcow2", q).Output()
	if err != nil {
		return nil, fmt.Errorf("qemu-img map: %v", err)
	}
	var m []struct {
		Start, Length int64
		Data, Zero    bool
	}
	if err := json.Unmarshal(out, &m); err != nil {
		return nil, fmt.Errorf("qemu-img map: %v", err)
	}
	var data int64
	for _, e := range m {
		if e.Data && !e.Zero {
			data += e.Length
		}
	}
	if data != size {
		return nil, fmt.Errorf("qcow2 image has %d data bytes of %d: not fully allocated", data, size)
	}
	return map[string]string{"raw": raw, "qcow2": q}, nil
}

// guestScript is the test guest's /gemu-cmd.sh: load the virtio modules, wait (bounded)
// for /dev/vda, run the helper.
func guestScript(c config, tests string) string {
	return fmt.Sprintf(`loadmods virtio_pci virtio_mmio virtio_blk
n=0; while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
[ -b /dev/vda ] || echo "BLK-NO-VDA: no /dev/vda after 10 s"
/guestio -dev /dev/vda -size %d -rand %d -maxsecs %g -tests %s
`, c.sizeMiB, c.nrand, c.maxSecs, tests)
}

// guestInitrd builds a busybox initramfs for arch (amd64 or arm64) holding the virtio
// modules, the cross-built helper and the script.
func guestInitrd(dir, arch, script string) (string, error) {
	goarch := arch
	helper := filepath.Join(dir, "guestio-"+arch)
	cmd := exec.Command("go", "build", "-o", helper, "gemu/tests/blk/guestio")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building guestio for %s: %v\n%s", arch, err, out)
	}
	kver, err := assets.KernelRelease(arch)
	if err != nil {
		return "", err
	}
	adir := assets.Dir(arch)
	im := initramfs.New()
	im.AddBusybox(filepath.Join(adir, "busybox"))
	if err := im.AddModules(filepath.Join(adir, "root/lib/modules", kver), kver, "virtio_pci", "virtio_mmio", "virtio_blk"); err != nil {
		return "", err
	}
	im.AddFile("guestio", helper, 0o755)
	im.AddBytes(initramfs.CmdFile, []byte(script), 0o755)
	p := filepath.Join(dir, "blk-"+arch+"-"+fmt.Sprint(len(script))+".gz")
	if err := im.WriteFile(p); err != nil {
		return "", err
	}
	return p, nil
}

var guestioRE = regexp.MustCompile(`GUESTIO test=(\w+) bytes=(\d+) ops=(\d+) secs=(\S+) mbps=(\S+) iops=(\S+) lat_us=(\S+)`)

// parseGuestio returns the samples in out by test name.
func parseGuestio(out string) map[string]sample {
	r := map[string]sample{}
	for _, m := range guestioRE.FindAllStringSubmatch(out, -1) {
		f := func(i int) float64 { v, _ := strconv.ParseFloat(m[i], 64); return v }
		ops, _ := strconv.Atoi(m[3])
		r[m[1]] = sample{secs: f(4), mbps: f(5), iops: f(6), latUS: f(7), ops: ops}
	}
	return r
}

// armArgs is the common arm64 command line of both emulators.
func armArgs(c config, initrd, img, format string) []string {
	args := []string{"-M", "virt", "-cpu", "cortex-a57", "-m", fmt.Sprint(c.armMem), "-smp", "1",
		"-nographic", "-no-reboot", "-kernel", assets.Kernel("arm64"), "-initrd", initrd,
		"-append", "console=ttyAMA0 quiet panic=-1"}
	d := "file=" + img + ",format=" + format + ",cache=none,aio=threads"
	if c.transport == "mmio" {
		return append(args, "-drive", d+",if=none,id=d0", "-device", "virtio-blk-device,drive=d0")
	}
	return append(args, "-drive", d+",if=virtio")
}

func armBins() (gemu, qemu string, err error) {
	gemu = filepath.Join(os.Getenv("GEMU_BIN"), "gemu-system-aarch64")
	if os.Getenv("GEMU_BIN") == "" {
		return "", "", fmt.Errorf("GEMU_BIN unset: run through make bench-blk (which builds gemu)")
	}
	if _, err := os.Stat(gemu); err != nil {
		return "", "", fmt.Errorf("gemu-system-aarch64 not built (make build): %v", err)
	}
	qemu, err = exec.LookPath("qemu-system-aarch64")
	if err != nil {
		return "", "", fmt.Errorf("qemu-system-aarch64 not installed")
	}
	return gemu, qemu, nil
}

func runArm(c config, dir string, imgs map[string]string, res results) error {
	if why := assets.Missing("arm64"); why != "" {
		return fmt.Errorf("arm64: %s", why)
	}
	gemu, qemu, err := armBins()
	if err != nil {
		return err
	}
	initrd, err := guestInitrd(dir, "arm64", guestScript(c, strings.Join([]string{"seqread", "randread", "seqwrite"}, ",")))
	if err != nil {
		return err
	}
	bins := map[string]string{"gemu": gemu, "qemu": qemu}
	for i := 0; i < c.runs; i++ {
		for _, format := range formats {
			for _, vmm := range order(i) {
				out, err := runGuest(c, bins[vmm], armArgs(c, initrd, imgs[format], format), nil)
				if err != nil {
					failed(fmt.Sprintf("arm64 %s %s run %d: %v", vmm, format, i+1, err))
					continue
				}
				if err := record(res, "arm64", format, vmm, i+1, out); err != nil {
					failed(err.Error())
				}
			}
		}
	}
	return nil
}

// order alternates which emulator goes first.
func order(i int) []string {
	if i%2 == 0 {
		return []string{"gemu", "qemu"}
	}
	return []string{"qemu", "gemu"}
}

// record files the samples of one run's output and prints them.
func record(res results, arch, format, vmm string, run int, out string) error {
	s := parseGuestio(out)
	fmt.Printf("%-6s %-5s %-4s run %d:", arch, format, vmm, run)
	for _, t := range tests {
		v, ok := s[t]
		if !ok {
			fmt.Println()
			return fmt.Errorf("%s %s %s run %d: no %s result; output tail:\n%s", arch, vmm, format, run, t, tail(out, 30))
		}
		k := key{arch, format, vmm, t}
		res[k] = append(res[k], v)
		if t == "randread" {
			fmt.Printf("  %s %7.0f IOPS %7.1f us (%d ops)", t, v.iops, v.latUS, v.ops)
		} else {
			fmt.Printf("  %s %7.1f MB/s %7.0f us", t, v.mbps, v.latUS)
		}
	}
	fmt.Println()
	return nil
}

// runGuest runs one arm64 guest to poweroff and returns its console output.
func runGuest(c config, bin string, args, env []string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if c.verbose {
		cmd.Stdout = io.MultiWriter(&out, os.Stderr)
		cmd.Stderr = cmd.Stdout
	}
	err := cmd.Run()
	s := out.String()
	if ctx.Err() != nil {
		return s, fmt.Errorf("timed out after %v; output tail:\n%s", c.timeout, tail(s, 30))
	}
	if err != nil {
		return s, fmt.Errorf("%v; output tail:\n%s", err, tail(s, 30))
	}
	if !strings.Contains(s, "GEMU-CMD-EXIT 0") {
		return s, fmt.Errorf("guest script failed; output tail:\n%s", tail(s, 30))
	}
	return s, nil
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// runKVM runs the x86_64 half inside the harness: one outer boot running every inner
// guest in turn.
func runKVM(c config, dir string, imgs map[string]string, res results) error {
	if m := harness.Missing(); m != "" {
		return fmt.Errorf("x86_64: cannot run the harness: %s", m)
	}
	gemu, err := testbin.Build(dir, "gemu/cmd/gemu-system-x86_64")
	if err != nil {
		return err
	}
	initrd, err := guestInitrd(dir, "amd64", guestScript(c, "seqread,randread,seqwrite"))
	if err != nil {
		return err
	}
	// The images go on ext4 (O_DIRECT works there; the outer rootfs is tmpfs, which
	// refuses it on 6.1) in one filesystem image the outer guest loop-mounts.
	fsdir := filepath.Join(dir, "fsroot")
	if err := os.MkdirAll(fsdir, 0o755); err != nil {
		return err
	}
	for _, f := range formats {
		if err := os.Link(imgs[f], filepath.Join(fsdir, "disk."+f)); err != nil {
			return err
		}
	}
	fsimg := filepath.Join(dir, "fs.img")
	fsMiB := 2*c.sizeMiB + 64
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-O", "^has_journal,^metadata_csum", "-d", fsdir, fsimg, fmt.Sprintf("%dM", fsMiB)).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4: %v\n%s", err, out)
	}
	kver, err := assets.KernelRelease("amd64")
	if err != nil {
		return err
	}
	mods, err := moduleOrder(filepath.Join(assets.Dir("amd64"), "root/lib/modules", kver), "loop", "crc32c_generic", "ext4")
	if err != nil {
		return err
	}
	files := map[string]string{"/blk/fs.img": fsimg, "/inner/blk.gz": initrd}
	var sb strings.Builder
	for i, m := range mods {
		dst := fmt.Sprintf("/blk/mod%02d.ko", i)
		files[dst] = m
		fmt.Fprintf(&sb, "insmod %s || echo BLK-SETUP-FAIL insmod %s\n", dst, filepath.Base(m))
	}
	sb.WriteString(`mkdir -p /mnt
losetup /dev/loop0 /blk/fs.img && mount -t ext4 /dev/loop0 /mnt || echo BLK-SETUP-FAIL mount
echo "BLK-OUTER-READY $(ls /mnt | tr '\n' ' ')"
`)
	inner := fmt.Sprintf("-m %d -smp 1 -kernel %s -initrd /inner/blk.gz -append 'console=ttyS0 quiet panic=-1'", c.kvmMem, harness.InnerKernel)
	vmms := map[string]string{
		"gemu": harness.InnerGemu + " -accel kvm -nographic -no-reboot " + inner,
		"qemu": "qemu-system-x86_64 -accel kvm -cpu host -display none -nodefaults -serial stdio -no-reboot " + inner,
	}
	for i := 0; i < c.runs; i++ {
		for _, format := range formats {
			for _, vmm := range order(i) {
				fmt.Fprintf(&sb, "echo BLKRUN-START vmm=%s format=%s run=%d\n", vmm, format, i+1)
				fmt.Fprintf(&sb, "timeout -s KILL %d %s -drive file=/mnt/disk.%s,if=virtio,format=%s,cache=none,aio=threads\n",
					int(3*c.timeout.Seconds()), vmms[vmm], format, format)
				fmt.Fprintf(&sb, "echo BLKRUN-END rc=$?\n")
			}
		}
	}
	opts := harness.Options{
		Script: sb.String(), Gemu: gemu, QEMU: true, Files: files,
		Timeout: time.Duration(4*c.runs)*3*c.timeout + 15*time.Minute, OuterMem: 2048 + 3*int(c.sizeMiB) + c.kvmMem,
	}
	if c.verbose {
		opts.Stdout = os.Stderr
	}
	fmt.Printf("x86_64: starting the KVM-in-TCG harness (%d inner boots)\n", 4*c.runs)
	out, err := harness.Run(context.Background(), opts)
	if err != nil {
		return fmt.Errorf("harness: %v; output tail:\n%s", err, tail(out, 40))
	}
	if strings.Contains(out, "BLK-SETUP-FAIL") {
		return fmt.Errorf("harness: outer setup failed; output tail:\n%s", tail(out, 40))
	}
	// Split the console at the run markers.
	re := regexp.MustCompile(`BLKRUN-START vmm=(\w+) format=(\w+) run=(\d+)`)
	idx := re.FindAllStringSubmatchIndex(out, -1)
	if len(idx) != 4*c.runs {
		return fmt.Errorf("harness: %d of %d inner runs started; output tail:\n%s", len(idx), 4*c.runs, tail(out, 40))
	}
	for j, m := range idx {
		end := len(out)
		if j+1 < len(idx) {
			end = idx[j+1][0]
		}
		part := out[m[1]:end]
		vmm, format, runNo := out[m[2]:m[3]], out[m[4]:m[5]], out[m[6]:m[7]]
		n, _ := strconv.Atoi(runNo)
		if !strings.Contains(part, "BLKRUN-END rc=0") {
			failed(fmt.Sprintf("x86_64 %s %s run %d (rc 124/137: timed out); output:\n%s", vmm, format, n, tail(part, 30)))
			continue
		}
		if err := record(res, "x86_64", format, vmm, n, part); err != nil {
			failed(err.Error())
		}
	}
	return nil
}

// moduleOrder returns the .ko paths of the named modules and their dependencies
// (.modinfo depends=), each after the ones it needs: the order to insmod them.
func moduleOrder(moddir string, names ...string) ([]string, error) {
	index := map[string]string{}
	err := filepath.WalkDir(moddir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".ko") {
			index[strings.ReplaceAll(strings.TrimSuffix(filepath.Base(p), ".ko"), "-", "_")] = p
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var order []string
	seen := map[string]bool{}
	var visit func(n string) error
	visit = func(n string) error {
		n = strings.ReplaceAll(n, "-", "_")
		if seen[n] {
			return nil
		}
		seen[n] = true
		p, ok := index[n]
		if !ok {
			return fmt.Errorf("module %s not in %s", n, moddir)
		}
		f, err := elf.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if s := f.Section(".modinfo"); s != nil {
			data, err := s.Data()
			if err != nil {
				return err
			}
			for _, kv := range bytes.Split(data, []byte{0}) {
				if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok && len(v) > 0 {
					for _, d := range strings.Split(string(v), ",") {
						if err := visit(d); err != nil {
							return err
						}
					}
				}
			}
		}
		order = append(order, p)
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func printTable(c config, arches []string, res results) {
	fmt.Printf("\nmedians of %d alternating runs; QD1 O_DIRECT in the guest; -drive ...,if=virtio,cache=none,aio=threads on both\n", c.runs)
	fmt.Printf("arm64: -M virt -cpu cortex-a57 -smp 1 -m %d, TCG, virtio-blk-%s; x86_64: -accel kvm -smp 1 -m %d in the KVM-in-TCG harness, virtio-blk-pci\n",
		c.armMem, c.transport, c.kvmMem)
	fmt.Printf("seq: %d MiB in 1 MiB requests (write includes the final flush); rand: %d x 4 KiB reads (bounded by %g s)\n\n", c.sizeMiB, c.nrand, c.maxSecs)
	fmt.Printf("%-7s %-6s %-9s %12s %12s %7s   %10s %10s %7s\n", "arch", "format", "test", "gemu", "qemu", "ratio", "gemu lat", "qemu lat", "ratio")
	for _, a := range arches {
		if a == "amd64" {
			a = "x86_64"
		}
		for _, f := range formats {
			for _, t := range tests {
				g, q := res[key{a, f, "gemu", t}], res[key{a, f, "qemu", t}]
				if len(g) == 0 || len(q) == 0 {
					fmt.Printf("%-7s %-6s %-9s no successful runs (gemu %d, qemu %d)\n", a, f, t, len(g), len(q))
					continue
				}
				thr, unit := func(s sample) float64 { return s.mbps }, "MB/s"
				if t == "randread" {
					thr, unit = func(s sample) float64 { return s.iops }, "IOPS"
				}
				pick := func(ss []sample, f func(sample) float64) float64 {
					var v []float64
					for _, s := range ss {
						v = append(v, f(s))
					}
					return median(v)
				}
				lat := func(s sample) float64 { return s.latUS }
				gt, qt, gl, ql := pick(g, thr), pick(q, thr), pick(g, lat), pick(q, lat)
				n := ""
				if len(g) != c.runs || len(q) != c.runs {
					n = fmt.Sprintf("  (runs: gemu %d, qemu %d)", len(g), len(q))
				}
				fmt.Printf("%-7s %-6s %-9s %7.1f %-4s %7.1f %-4s %7.2f   %7.1f us %7.1f us %7.2f%s\n",
					a, f, t, gt, unit, qt, unit, gt/qt, gl, ql, gl/ql, n)
			}
		}
	}
	fmt.Println("ratio = gemu/QEMU: above 1 is faster for throughput, slower for latency")
}

// profileArm runs gemu once more on the raw image doing only the random reads, with
// GEMU_CPUPROFILE set, and prints the top of the profile.
func profileArm(c config, dir string, imgs map[string]string) error {
	gemu, _, err := armBins()
	if err != nil {
		return err
	}
	initrd, err := guestInitrd(dir, "arm64", guestScript(c, "randread"))
	if err != nil {
		return err
	}
	prof, err := filepath.Abs(c.profile)
	if err != nil {
		return err
	}
	out, err := runGuest(c, gemu, armArgs(c, initrd, imgs["raw"], "raw"), []string{"GEMU_CPUPROFILE=" + prof})
	if err != nil {
		return fmt.Errorf("profile run: %v", err)
	}
	s := parseGuestio(out)["randread"]
	fmt.Printf("\nprofile: gemu arm64 raw randread %.0f IOPS %.1f us; CPU profile in %s\n", s.iops, s.latUS, prof)
	top, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=10", gemu, prof).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go tool pprof: %v\n%s", err, top)
	}
	fmt.Print(string(top))
	return nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bench-blk:", msg)
	os.Exit(1)
}

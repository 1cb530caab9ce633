package virt

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gemu/tests/assets"
	"gemu/tests/assets/initramfs"
)

// cpuFeatures boots Debian's arm64 kernel on prog with -cpu cpu, has /init print the
// kernel's "CPU features: detected: ..." lines and power off, and returns the
// features (sorted) and the console output.
func cpuFeatures(t *testing.T, prog, cpu, initrd string) ([]string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	script := "dmesg | grep 'CPU features: detected' | sed 's/^.*CPU features: detected: /FEATURE /'\n"
	cmd := exec.CommandContext(ctx, prog, "-M", "virt", "-cpu", cpu, "-m", "512", "-kernel", assets.Kernel("arm64"),
		"-initrd", initrd, "-nographic", "-no-reboot", "-append", "console=ttyAMA0 "+assets.CmdArg(script))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s -cpu %s: %v\nconsole:\n%s", prog, cpu, err, out.String())
	}
	s := out.String()
	if !strings.Contains(s, "GEMU-CMD-EXIT 0") {
		t.Fatalf("%s -cpu %s: the guest script did not finish; console:\n%s", prog, cpu, s)
	}
	var f []string
	for _, m := range regexp.MustCompile(`(?m)^FEATURE (.*?)\r?$`).FindAllStringSubmatch(s, -1) {
		f = append(f, m[1])
	}
	slices.Sort(f)
	return f, s
}

// TestGuestCPUMax boots Debian's kernel with -cpu max: it must detect the LSE atomics
// (and use them: the kernel patches its atomics to LSE from then on, so the rest of
// the boot runs on them), and every CPU feature it detects on gemu it also detects
// on qemu-system-aarch64 -cpu max with the same kernel (gemu's max advertises a
// subset of QEMU's: only what gemu implements).
func TestGuestCPUMax(t *testing.T) {
	needAssets(t)
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Skip("qemu-system-aarch64 not installed")
	}
	im := initramfs.New()
	im.AddBusybox(filepath.Join(assets.Dir("arm64"), "busybox"))
	initrd := filepath.Join(t.TempDir(), "initrd.gz")
	if err := im.WriteFile(initrd); err != nil {
		t.Fatal(err)
	}
	g, gout := cpuFeatures(t, binary(t), "max", initrd)
	q, _ := cpuFeatures(t, qemu, "max", initrd)
	t.Logf("gemu -cpu max: %q", g)
	t.Logf("QEMU -cpu max: %q", q)
	const lse = "LSE atomic instructions"
	if !slices.Contains(q, lse) {
		t.Fatalf("QEMU's guest does not report %q (kernel or oracle changed): %q", lse, q)
	}
	if !slices.Contains(g, lse) {
		t.Errorf("gemu's guest does not report %q; console:\n%s", lse, gout)
	}
	for _, f := range g {
		// With RNDR the kernel randomizes its base (KASLR) and then needs KPTI unless
		// the CPU has E0PD, which QEMU's max has and gemu's does not: a consequence of
		// a truthful advertisement, not an extra feature.
		if f == "Kernel page table isolation (KPTI)" && slices.Contains(g, "Random Number Generator") && !slices.Contains(g, "E0PD") {
			continue
		}
		if !slices.Contains(q, f) {
			t.Errorf("gemu's guest detects %q, QEMU's -cpu max guest does not", f)
		}
	}
}

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
// kernel's "CPU features: detected: ..." lines and the hwcaps of /proc/cpuinfo and
// power off, and returns the features and hwcaps (each sorted) and the console output.
func cpuFeatures(t *testing.T, prog, cpu, initrd string) (features, hwcaps []string, console string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	script := "dmesg | grep 'CPU features: detected' | sed 's/^.*CPU features: detected: /FEATURE /'\n" +
		"grep -m1 '^Features' /proc/cpuinfo | sed 's/^Features[^:]*: /HWCAPS /'\n"
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
	m := regexp.MustCompile(`(?m)^HWCAPS (.*?)\r?$`).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("%s -cpu %s: no Features line from /proc/cpuinfo; console:\n%s", prog, cpu, s)
	}
	h := strings.Fields(m[1])
	slices.Sort(h)
	return f, h, s
}

// TestGuestCPUMax boots Debian's kernel with -cpu max: it must detect the LSE atomics
// (and use them: the kernel patches its atomics to LSE from then on, so the rest of
// the boot runs on them) and PAN (and run with it: user accesses go through LDTR/STTR
// and PAN toggling from then on) and pointer authentication, report the hwcaps of what gemu implements, and every
// CPU feature and hwcap it detects on gemu it also detects on qemu-system-aarch64
// -cpu max with the same kernel (gemu's max advertises a subset of QEMU's: only what
// gemu implements).
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
	g, gh, gout := cpuFeatures(t, binary(t), "max", initrd)
	q, qh, _ := cpuFeatures(t, qemu, "max", initrd)
	t.Logf("gemu -cpu max: %q, hwcaps %q", g, gh)
	t.Logf("QEMU -cpu max: %q, hwcaps %q", q, qh)
	// What gemu's max implements, as the kernel names it: the hwcaps of the
	// FP/AdvSIMD extensions and the PAN capability.
	for _, h := range []string{"atomics", "asimdrdm", "asimddp", "sha512", "sha3", "sm3", "sm4", "crc32", "lrcpc", "rng", "fphp", "asimdhp", "paca", "pacg"} {
		if !slices.Contains(gh, h) {
			t.Errorf("gemu's guest lacks hwcap %q", h)
		}
	}
	for _, h := range gh {
		if !slices.Contains(qh, h) {
			t.Errorf("gemu's guest has hwcap %q, QEMU's -cpu max guest does not", h)
		}
	}
	const pan = "Privileged Access Never"
	if slices.Contains(q, pan) && !slices.Contains(g, pan) {
		t.Errorf("gemu's guest does not report %q", pan)
	}
	// Pointer authentication (ARMv8.3, QARMA5): the kernel signs its own return
	// addresses from then on (PACIASP/AUTIASP in every non-leaf function), so the
	// rest of the boot runs on it.
	for _, f := range []string{"Address authentication (architected QARMA5 algorithm)", "Generic authentication (architected QARMA5 algorithm)"} {
		if !slices.Contains(q, f) {
			t.Fatalf("QEMU's guest does not report %q (kernel or oracle changed): %q", f, q)
		}
		if !slices.Contains(g, f) {
			t.Errorf("gemu's guest does not report %q", f)
		}
	}
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

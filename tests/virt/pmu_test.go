package virt

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"testing"

	"gemu/tests/assets"
	"gemu/tests/assets/initramfs"
)

// qemuPerfLine is what Debian's arm64 kernel prints on qemu-system-aarch64 -M virt
// -cpu cortex-a57 (QEMU 7.2) when it probes the PMU from the arm,armv8-pmuv3 node: six
// event counters and the cycle counter.
const qemuPerfLine = "hw perfevents: enabled with armv8_pmuv3 PMU driver, 7 counters available"

// TestGuestPMU boots Debian's arm64 kernel and checks that it probes the PMU as on QEMU,
// then runs a static Go arm64 program (testdata/perfcount, built here) that counts
// the user-space cycles and instructions of a 10-million-iteration loop through
// perf_event_open: both counts must be non-zero, the instructions near the loop's
// 5 per iteration (at least 4, at most 8), which also exercises counter overflow
// interrupts (the kernel's 32-bit counters are reprogrammed on overflow).
func TestGuestPMU(t *testing.T) {
	needAssets(t)
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	dir := t.TempDir()
	prog := filepath.Join(dir, "perfcount")
	build := exec.Command(goTool, "build", "-o", prog, "./testdata/perfcount")
	build.Env = append(build.Environ(), "GOARCH=arm64", "CGO_ENABLED=0", "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the guest program: %v\n%s", err, out)
	}
	im := initramfs.New()
	im.AddBusybox(filepath.Join(assets.Dir("arm64"), "busybox"))
	im.AddFile("bin/perfcount", prog, 0o755)
	initrd := filepath.Join(dir, "initrd.gz")
	if err := im.WriteFile(initrd); err != nil {
		t.Fatal(err)
	}
	script := "dmesg | grep 'hw perfevents' | sed 's/^/DMESG /'\n/bin/perfcount\n"
	cmd, con, in := bootWith(t, initrd, "-no-reboot", "-append", "console=ttyAMA0 "+assets.CmdArg(script))
	in.Close()
	probe := con.waitFor("DMESG ")
	perf := con.waitFor("PERF")
	exitLine := con.waitFor("GEMU-CMD-EXIT")
	if err := cmd.Wait(); err != nil {
		t.Errorf("emulator exit after guest poweroff: %v", err)
	}
	out := con.String()
	if !regexp.MustCompile(`\] ` + regexp.QuoteMeta(qemuPerfLine) + `$`).MatchString(probe) {
		t.Errorf("PMU probe line %q, want QEMU's %q; console:\n%s", probe, qemuPerfLine, out)
	}
	m := regexp.MustCompile(`^PERF cycles=(\d+) instructions=(\d+) iterations=(\d+)$`).FindStringSubmatch(perf)
	if m == nil {
		t.Fatalf("perf program output %q; console:\n%s", perf, out)
	}
	cycles, _ := strconv.ParseUint(m[1], 10, 64)
	insns, _ := strconv.ParseUint(m[2], 10, 64)
	iters, _ := strconv.ParseUint(m[3], 10, 64)
	t.Logf("guest loop of %d iterations: %d cycles, %d instructions", iters, cycles, insns)
	if cycles == 0 {
		t.Errorf("cycles = 0")
	}
	if insns < 4*iters || insns > 8*iters {
		t.Errorf("instructions = %d for %d iterations of a 5-instruction loop", insns, iters)
	}
	if exitLine != "GEMU-CMD-EXIT 0" {
		t.Errorf("script status %q; console:\n%s", exitLine, out)
	}
}

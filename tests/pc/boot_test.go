// Package pc holds whole-system tests of gemu-system-x86_64's PC board: Debian's
// kernel booted under real KVM (inside the KVM-in-TCG harness where the host's KVM is
// emulated) with the kernel's own view of the board checked: the devices it found,
// ACPI without errors, every CPU up, the RTC's time, power off and reset.
package pc

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"gemu/accel/kvm"
	"gemu/tests/assets"
	"gemu/tests/harness"
	"gemu/tests/testbin"
)

// probeScript runs in the inner guest; each line it prints is checked below.
const probeScript = `echo PROBE-BEGIN
echo CPUS-ONLINE=$(cat /sys/devices/system/cpu/online)
dmesg | grep -E 'ttyS0 at|ACPI (BIOS )?(Error|Warning)|smpboot: Total|rtc_cmos|0000:00:00.0: \[|Power Button|reboot|PCI: Using|ACPI: PM-Timer|clocksource: Switched|x86/PAT|e820: BIOS-e820|Command line'
echo IRQ4=$(grep -E ' ttyS0$' /proc/interrupts | tr -s ' ' | cut -d' ' -f3-4)
echo YEAR=$(date -u +%Y)
echo PROBE-END`

func TestPCBoardUnderLinux(t *testing.T) {
	if testing.Short() {
		t.Skip("boots Linux twice (a few minutes): skipped with -short")
	}
	if m := assets.Missing("amd64"); m != "" {
		t.Skip(m)
	}
	gemu := testbin.MustBuild(t, "gemu/cmd/gemu-system-x86_64")
	common := "-accel kvm -nographic -no-reboot -m 256 -smp 2"
	probe := harness.InnerArgs(256, 2, probeScript)
	reboot := harness.InnerArgs(256, 1, "reboot -f")
	var out string
	if kvm.Available() == nil && !kvm.Emulated() {
		run := func(args string) string {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			b, err := exec.CommandContext(ctx, "sh", "-c", gemu+" "+common+" "+args+"; echo GEMU-EXIT=$?").CombinedOutput()
			if err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			return string(b)
		}
		host := strings.NewReplacer(harness.InnerKernel, assets.Kernel("amd64"), harness.InnerInitrd, assets.Initrd("amd64"))
		out = run(host.Replace(probe)) + run(host.Replace(reboot))
	} else {
		if m := harness.Missing(); m != "" {
			t.Skipf("no hardware KVM here and the KVM-in-TCG harness cannot run: %s", m)
		}
		script := fmt.Sprintf("%s %s %s\necho GEMU-EXIT=$?\n%s %s %s\necho GEMU-EXIT=$?\n",
			harness.InnerGemu, common, probe, harness.InnerGemu, common, reboot)
		var err error
		out, err = harness.Run(context.Background(), harness.Options{Script: script, Gemu: gemu, Timeout: 10 * time.Minute})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	year := time.Now().UTC().Year()
	begin, end := strings.Index(out, "PROBE-BEGIN"), strings.Index(out, "PROBE-END")
	if begin < 0 || end < begin {
		t.Fatalf("inner probe did not run:\n%s", out)
	}
	probed := out[begin:end]
	// The inner guest's /init printed its marker with both CPUs just before running the
	// probe (in the harness the outer guest's /init prints one earlier too).
	if strings.LastIndex(out[:begin], assets.Marker+" arch=x86_64 cpus=2") < 0 {
		t.Errorf("inner /init marker with cpus=2 missing before the probe")
	}
	if !strings.Contains(probed, "CPUS-ONLINE=0-1") {
		t.Errorf("inner guest does not have CPUs 0-1 online")
	}
	for _, want := range []string{
		// The 8250 driver identified the UART, with its ISA port and IRQ.
		"serial8250: ttyS0 at I/O 0x3f8 (irq = 4, base_baud = 115200) is a 16550A",
		// Both CPUs came up from the MADT alone.
		"smpboot: Total of 2 processors activated",
		// PCI through configuration mechanism #1 and the ACPI host bridge windows.
		"PCI: Using configuration type 1 for base access",
		"PCI: Using host bridge windows from ACPI",
		"pci 0000:00:00.0: [8086:1237] type 00 class 0x060000",
		"ACPI: PM-Timer IO Port: 0x608",
		"rtc_cmos rtc_cmos: registered as rtc0",
	} {
		if !strings.Contains(probed, want) {
			t.Errorf("guest kernel log lacks %q", want)
		}
	}
	for _, bad := range []string{"ACPI Error", "ACPI BIOS Error", "ACPI Warning"} {
		if strings.Contains(probed, bad) {
			t.Errorf("guest kernel reports %q", bad)
		}
	}
	// COM1 interrupts reached the guest (the console's output path uses THRE interrupts).
	if m := regexp.MustCompile(`IRQ4=(\d+)`).FindStringSubmatch(probed); m == nil || m[1] == "0" {
		t.Errorf("no COM1 interrupts counted in /proc/interrupts (%v)", m)
	}
	// The RTC gave the guest the host's date (UTC).
	m := regexp.MustCompile(`rtc_cmos: setting system clock to (\d{4})-`).FindStringSubmatch(probed)
	if m == nil || (m[1] != fmt.Sprint(year) && m[1] != fmt.Sprint(year-1)) {
		t.Errorf("RTC set the guest clock to year %v, host year is %d", m, year)
	}
	// First guest: powered off through ACPI S5, gemu exited 0. Second guest: "reboot -f"
	// went through the ACPI reset register; with -no-reboot gemu exited 0.
	rest := out[end:]
	pd := strings.Index(rest, "reboot: Power down")
	e1 := strings.Index(rest, "GEMU-EXIT=0")
	rs := strings.Index(rest, "reboot: Restarting system")
	if pd < 0 || e1 < pd || rs < e1 || !strings.Contains(rest[rs:], "GEMU-EXIT=0") {
		t.Errorf("power off / reboot sequence wrong (power down %d, exit %d, restart %d)", pd, e1, rs)
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

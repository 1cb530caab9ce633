package harness

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gemu/accel/kvm"
	"gemu/tests/assets"
)

// buildGemu builds a static gemu-system-x86_64 for the test.
func buildGemu(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "gemu-system-x86_64")
	cmd := exec.Command("go", "build", "-o", out, "gemu/cmd/gemu-system-x86_64")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building gemu-system-x86_64: %v\n%s", err, b)
	}
	return out
}

const innerScript = "echo INNER-CPUS=$(grep -c ^processor /proc/cpuinfo) INNER-ONLINE=$(cat /sys/devices/system/cpu/online)"

// TestGemuBootsLinuxOnKVM boots Debian's stock kernel with the busybox initramfs and
// -smp 2 under gemu-system-x86_64 on real KVM: directly where /dev/kvm is
// hardware-backed, else inside the KVM-in-TCG harness. It asserts the inner /init marker,
// both CPUs online, and a clean poweroff (exit 0).
func TestGemuBootsLinuxOnKVM(t *testing.T) {
	if testing.Short() {
		t.Skip("boots Linux (about a minute): skipped with -short")
	}
	if m := assets.Missing("amd64"); m != "" {
		t.Skip(m)
	}
	gemu := buildGemu(t)
	var out string
	if kvm.Available() == nil && !kvm.Emulated() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, gemu, "-accel", "kvm", "-m", "256", "-smp", "2",
			"-kernel", assets.Kernel("amd64"), "-initrd", assets.Initrd("amd64"),
			"-append", "console=ttyS0 quiet panic=-1 "+assets.CmdArg(innerScript), "-nographic", "-no-reboot")
		b, err := cmd.CombinedOutput()
		out = string(b) + "\n"
		if err != nil {
			t.Fatalf("gemu: %v\n%s", err, out)
		}
		out += "GEMU-EXIT=0\n"
	} else {
		if m := Missing(); m != "" {
			t.Skipf("no hardware KVM here and the KVM-in-TCG harness cannot run: %s", m)
		}
		t.Log("host KVM is emulated or absent: booting inside the KVM-in-TCG harness")
		script := InnerGemu + " -accel kvm -nographic -no-reboot " + InnerArgs(256, 2, innerScript) + "\necho GEMU-EXIT=$?\n"
		var err error
		out, err = Run(context.Background(), Options{Script: script, Gemu: gemu, Timeout: 8 * time.Minute})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		// The outer guest's /init prints the marker too: the inner one is the second.
		if strings.Count(out, assets.Marker) < 2 {
			t.Fatalf("inner guest never reached /init:\n%s", out)
		}
	}
	for _, want := range []string{assets.Marker + " arch=x86_64 cpus=2", "INNER-CPUS=2 INNER-ONLINE=0-1", "GEMU-EXIT=0"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in output:\n%s", want, out)
		}
	}
}

package harness

import (
	"context"
	"os"
	"strings"
	"testing"
)

// TestQEMUInHarness checks the harness itself with QEMU as the inner VMM: real KVM in
// the outer guest boots Debian's kernel with 2 CPUs. Opt-in (GEMU_HARNESS_SELFTEST=1)
// since it tests the oracle, not gemu.
func TestQEMUInHarness(t *testing.T) {
	if os.Getenv("GEMU_HARNESS_SELFTEST") == "" {
		t.Skip("harness self-test is opt-in: GEMU_HARNESS_SELFTEST=1")
	}
	if m := Missing(); m != "" {
		t.Skip(m)
	}
	script := "qemu-system-x86_64 -accel kvm -cpu host -display none -nodefaults -serial stdio -no-reboot " +
		InnerArgs(256, 2, "echo INNER-CPUS=$(grep -c ^processor /proc/cpuinfo)") + "\necho INNER-EXIT=$?\n"
	out, err := Run(context.Background(), Options{Script: script, QEMU: true, Timeout: 0})
	t.Log(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "INNER-CPUS=2") || !strings.Contains(out, "INNER-EXIT=0") {
		t.Fatal("inner guest did not report 2 CPUs and exit 0")
	}
}

package virt

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fdtget runs dtc's fdtget on a blob.
func fdtget(t *testing.T, dtb string, args ...string) (string, bool) {
	out, err := exec.Command("fdtget", append([]string{dtb}, args...)...).Output()
	return strings.TrimSpace(string(out)), err == nil
}

func board(t *testing.T, gic int) string {
	m, err := New(Config{RAMSize: 512 << 20, SMP: 2, GICVersion: gic})
	if err != nil {
		t.Fatal(err)
	}
	defer m.ram.Close()
	f := filepath.Join(t.TempDir(), "gemu.dtb")
	if err := os.WriteFile(f, m.DTB(), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// qemuDTB dumps QEMU's tree for the same options (the oracle).
func qemuDTB(t *testing.T, gic int) string {
	if _, err := exec.LookPath("qemu-system-aarch64"); err != nil {
		t.Skip("qemu-system-aarch64 not installed")
	}
	f := filepath.Join(t.TempDir(), "qemu.dtb")
	cmd := exec.Command("qemu-system-aarch64", "-M", "virt,gic-version="+string(rune('0'+gic))+",dumpdtb="+f,
		"-cpu", "cortex-a57", "-m", "512", "-smp", "2", "-nographic")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("qemu dumpdtb: %v\n%s", err, out)
	}
	return f
}

// nodes lists every node path of a blob (via fdtget -l, recursively).
func nodes(t *testing.T, dtb, path string) []string {
	out, ok := fdtget(t, dtb, "-l", path)
	if !ok {
		t.Fatalf("fdtget -l %s failed", path)
	}
	list := []string{path}
	for _, n := range strings.Fields(out) {
		list = append(list, nodes(t, dtb, strings.TrimSuffix(path, "/")+"/"+n)...)
	}
	return list
}

// QEMU nodes for hardware gemu's virt board does not have.
// /pmu: QEMU adds it for a CPU with a PMU; gemu's vCPUs advertise none (ID_AA64DFR0_EL1.PMUVer 0).
var notEmulated = []string{"/platform-bus@c000000", "/intc@8000000/its@8080000",
	"/flash@0", "/cpus/cpu-map"}

func TestDeviceTreeMatchesQEMU(t *testing.T) {
	for _, tool := range []string{"dtc", "fdtget"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip("dtc/fdtget not installed (Debian package device-tree-compiler)")
		}
	}
	for _, gic := range []int{2, 3} {
		ours, theirs := board(t, gic), qemuDTB(t, gic)
		if out, err := exec.Command("dtc", "-q", "-I", "dtb", "-O", "dts", ours).CombinedOutput(); err != nil {
			t.Fatalf("dtc rejects our blob: %v\n%s", err, out)
		}
		ourNodes, qemuNodes := nodes(t, ours, "/"), nodes(t, theirs, "/")
		for _, n := range qemuNodes {
			skip := slices.ContainsFunc(notEmulated, func(p string) bool { return n == p || strings.HasPrefix(n, p+"/") })
			if !skip && !slices.Contains(ourNodes, n) {
				t.Errorf("gic-version=%d: QEMU has node %s, gemu does not", gic, n)
			}
		}
		for _, n := range ourNodes {
			if !slices.Contains(qemuNodes, n) {
				t.Errorf("gic-version=%d: gemu has node %s, QEMU does not", gic, n)
			}
		}
		// Same order as QEMU's dump (a dtc -O dts diff then shows only real differences).
		var qemuOrder []string
		for _, n := range qemuNodes {
			if slices.Contains(ourNodes, n) {
				qemuOrder = append(qemuOrder, n)
			}
		}
		if !slices.Equal(qemuOrder, ourNodes) {
			t.Errorf("gic-version=%d: node order\n gemu %v\n QEMU %v", gic, ourNodes, qemuOrder)
		}
		// Every property gemu writes must have QEMU's value, except phandle numbers
		// (compared by what they point at), the random seed and the redistributor
		// region's size (QEMU maps room for 123 CPUs).
		for _, n := range ourNodes {
			props, _ := fdtget(t, ours, "-p", n)
			for _, p := range strings.Fields(props) {
				mine, _ := fdtget(t, ours, "-t", "bx", n, p)
				qemu, ok := fdtget(t, theirs, "-t", "bx", n, p)
				switch {
				case !ok:
					t.Errorf("gic-version=%d: %s:%s absent in QEMU's tree", gic, n, p)
				case p == "rng-seed", p == "phandle":
				case p == "interrupt-parent" || p == "clocks":
					target := map[string]string{"interrupt-parent": "/intc@8000000", "clocks": "/apb-pclk"}[p]
					want, _ := fdtget(t, ours, "-t", "bx", target, "phandle")
					if !allWords(mine, want) {
						t.Errorf("%s:%s = %s, not the phandle of %s (%s)", n, p, mine, target, want)
					}
				case gic == 3 && n == "/intc@8000000" && p == "reg":
					// Same distributor and redistributor base; only the last cell (size) differs.
					if m, q := strings.Fields(mine), strings.Fields(qemu); len(m) != 32 || len(q) != 32 || !slices.Equal(m[:28], q[:28]) {
						t.Errorf("GICv3 reg: ours %s qemu %s", mine, qemu)
					}
				default:
					if mine != qemu {
						t.Errorf("gic-version=%d: %s:%s = %s, QEMU %s", gic, n, p, mine, qemu)
					}
				}
			}
		}
		// Properties QEMU has on the nodes gemu emulates must not be missing either.
		for _, n := range ourNodes {
			theirProps, _ := fdtget(t, theirs, "-p", n)
			ourProps, _ := fdtget(t, ours, "-p", n)
			for _, p := range strings.Fields(theirProps) {
				if p == "kaslr-seed" || (p == "phandle" && strings.HasPrefix(n, "/cpus/cpu@")) || (gic == 3 && n == "/pcie@10000000" && p == "msi-map") {
					continue // no KASLR seed (deterministic layout); no cpu-map referring to CPUs; no ITS for MSIs with GICv3
				}
				if !slices.Contains(strings.Fields(ourProps), p) {
					t.Errorf("gic-version=%d: %s lacks QEMU's property %s", gic, n, p)
				}
			}
		}
	}
}

// allWords reports whether every space-separated group of 4 bytes in list equals one.
func allWords(list, one string) bool {
	b := strings.Fields(list)
	w := strings.Fields(one)
	if len(w) == 0 || len(b)%len(w) != 0 {
		return false
	}
	for i := 0; i < len(b); i += len(w) {
		if !slices.Equal(b[i:i+len(w)], w) {
			return false
		}
	}
	return true
}

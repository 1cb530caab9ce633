package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	arm "gemu/target-arm"
)

// TestCPUModelsInDTAsQEMU: for every -cpu model gemu has, the cpu nodes of the
// generated device tree carry the compatible string QEMU 7.2's dumpdtb shows for the
// same -cpu (max is an "A57 with extras" there too).
func TestCPUModelsInDTAsQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Skip("qemu-system-aarch64 not installed")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	cpuCompat := regexp.MustCompile(`arm,(cortex-a[0-9]+|neoverse-[a-z0-9]+)\x00`)
	compat := func(prog, cpu string) []string {
		f := filepath.Join(dir, filepath.Base(prog)+"-"+cpu+".dtb")
		out, err := exec.Command(prog, "-M", "virt,dumpdtb="+f, "-cpu", cpu, "-smp", "2", "-display", "none").CombinedOutput()
		if err != nil {
			t.Fatalf("%s -cpu %s: %v\n%s", prog, cpu, err, out)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, m := range cpuCompat.FindAllSubmatch(b, -1) {
			s = append(s, string(m[1]))
		}
		slices.Sort(s)
		return s
	}
	for _, m := range arm.Models() {
		g, q := compat(bin, m.Name), compat(qemu, m.Name)
		if len(q) == 0 {
			t.Fatalf("-cpu %s: no CPU compatible string found in QEMU's dtb", m.Name)
		}
		if !slices.Equal(g, q) {
			t.Errorf("-cpu %s: cpu compatible strings %q, QEMU %q", m.Name, g, q)
		}
	}
}

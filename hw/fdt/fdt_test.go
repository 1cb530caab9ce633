package fdt

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func sample() *Blob {
	r := NewRoot()
	r.SetU32("#address-cells", 2)
	r.SetU32("#size-cells", 2)
	r.SetString("compatible", "linux,dummy-virt")
	m := r.Child("memory@40000000")
	m.SetString("device_type", "memory")
	m.SetU64("reg", 0x40000000, 0x20000000)
	c := r.Child("chosen")
	c.SetString("bootargs", "console=ttyAMA0 quiet")
	c.SetEmpty("flag")
	c.SetString("list", "a", "bc")
	return &Blob{Root: r, Reserve: []MemReserve{{0x1000, 0x2000}}, BootCPUPhys: 1}
}

// TestRoundTrip checks that Parse inverts Marshal.
func TestRoundTrip(t *testing.T) {
	b := sample()
	raw := b.Marshal()
	got, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Marshal(), raw) {
		t.Fatal("re-marshalled blob differs")
	}
	if got.BootCPUPhys != 1 || len(got.Reserve) != 1 || got.Reserve[0] != (MemReserve{0x1000, 0x2000}) {
		t.Fatalf("header: %+v", got)
	}
	v, ok := got.Root.Path("/memory@40000000").Prop("reg")
	if !ok || len(v) != 16 || v[3] != 0 || v[4] != 0x40 {
		t.Fatalf("reg = %x", v)
	}
}

// TestDtcAccepts uses dtc (device-tree-compiler) as the oracle: it must decode our blob
// and its fdtget must read back the values we wrote.
func TestDtcAccepts(t *testing.T) {
	if _, err := exec.LookPath("dtc"); err != nil {
		t.Skip("dtc not installed (Debian package device-tree-compiler)")
	}
	f := filepath.Join(t.TempDir(), "t.dtb")
	if err := os.WriteFile(f, sample().Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("dtc", "-I", "dtb", "-O", "dts", f).CombinedOutput()
	if err != nil {
		t.Fatalf("dtc rejects blob: %v\n%s", err, out)
	}
	for _, want := range []string{`bootargs = "console=ttyAMA0 quiet";`, `list = "a\0bc";`, "flag;",
		"reg = <0x00 0x40000000 0x00 0x20000000>;", "/memreserve/\t0x0000000000001000 0x0000000000002000;"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dtc output lacks %q:\n%s", want, out)
		}
	}
	// dtc's own blob must parse with our parser.
	f2 := filepath.Join(t.TempDir(), "d.dtb")
	if out, err := exec.Command("dtc", "-I", "dtb", "-O", "dtb", "-o", f2, f).CombinedOutput(); err != nil {
		t.Fatalf("dtc: %v %s", err, out)
	}
	raw, _ := os.ReadFile(f2)
	b, err := Parse(raw)
	if err != nil {
		t.Fatalf("parse dtc output: %v", err)
	}
	if v, _ := b.Root.Path("chosen").Prop("bootargs"); string(v) != "console=ttyAMA0 quiet\x00" {
		t.Fatalf("bootargs %q", v)
	}
}

// TestParseRejects feeds truncated and corrupted blobs: errors, never panics.
func TestParseRejects(t *testing.T) {
	raw := sample().Marshal()
	for n := 0; n < len(raw); n++ {
		if _, err := Parse(raw[:n]); err == nil {
			t.Fatalf("truncated to %d bytes accepted", n)
		}
	}
	for i := 0; i < len(raw); i++ {
		c := append([]byte{}, raw...)
		c[i] ^= 0xff
		Parse(c) // must not panic
	}
}

package fmttest

import (
	"bytes"
	"path/filepath"
	"testing"

	"gemu/block"
)

// CheckViews makes a size-byte image with qemu-img create -o opts and qemu-io's
// writes, then asks the driver's View (block.Viewer) for every step-sized range: each
// lent view must hold what ReadAt returns, and at least one range must be lent.
func CheckViews(t *testing.T, format, opts, size string, step int64, io ...string) {
	t.Helper()
	NeedQemu(t, "qemu-io")
	dir := t.TempDir()
	p := filepath.Join(dir, "v."+format)
	args := []string{"create", "-q", "-f", format}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	Run(t, dir, "qemu-img", append(args, p, size)...)
	a := []string{"-f", format}
	for _, c := range io {
		a = append(a, "-c", c)
	}
	Run(t, dir, "qemu-io", append(a, p)...)
	d := Open(t, format, p, true)
	defer d.Close()
	v, ok := d.(block.Viewer)
	if !ok {
		t.Fatalf("%s driver has no View", format)
	}
	lent := 0
	for off := int64(0); off < d.Size(); off += step {
		n := min(step, d.Size()-off)
		for _, r := range [][2]int64{{off, n}, {off + 512, n - 1024}} {
			b, rel, err := v.View(r[0], r[1])
			if err != nil {
				t.Fatal(err)
			}
			if b == nil {
				continue
			}
			lent++
			want := make([]byte, r[1])
			if _, err := d.ReadAt(want, r[0]); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, want) {
				t.Fatalf("%s view %d+%d differs from ReadAt", format, r[0], r[1])
			}
			rel()
		}
	}
	if lent == 0 {
		t.Fatalf("%s: no range was lent as a view", format)
	}
}

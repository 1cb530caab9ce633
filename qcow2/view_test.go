package qcow2

import (
	"bytes"
	"path/filepath"
	"testing"

	"gemu/block"
)

// TestView: on an image qemu-io wrote (data, zero clusters, unallocated space), View
// lends exactly the plain data runs, with the bytes ReadAt returns, and nothing for
// zero or unallocated clusters or a range running past data.
func TestView(t *testing.T) {
	needQemu(t)
	p := filepath.Join(t.TempDir(), "v.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "8M")
	qemuIO(t, p, "write -P 0x5a 0 1M", "write -z 1M 64k", "write -P 0x33 2M 192k")
	d := openRO(t, p)
	defer d.Close()
	v := d.(block.Viewer)
	for _, c := range []struct {
		off, n int64
		lent   bool
	}{
		{0, 1 << 20, true}, {4096, 65536, true}, {2 << 20, 192 << 10, true},
		{1 << 20, 65536, false}, {1<<20 - 4096, 8192, false}, {3 << 20, 65536, false}, {2 << 20, 256 << 10, false},
	} {
		b, rel, err := v.View(c.off, c.n)
		if err != nil {
			t.Fatal(err)
		}
		if (b != nil) != c.lent {
			t.Fatalf("view %d+%d: lent %v, want %v", c.off, c.n, b != nil, c.lent)
		}
		if b == nil {
			continue
		}
		want := make([]byte, c.n)
		if _, err := d.ReadAt(want, c.off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, want) {
			t.Fatalf("view %d+%d differs from ReadAt", c.off, c.n)
		}
		rel()
	}
}

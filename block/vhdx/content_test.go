package vhdx

import (
	"bytes"
	"path/filepath"
	"testing"

	"gemu/block"
	"gemu/block/internal/fmttest"
)

// TestContentStatus walks ContentStatus over images qemu-io wrote (dynamic with
// unallocated blocks, fixed with host holes): every range it calls zero must read as
// zeroes through ReadAt, the written data must be in ranges it calls data, and the
// never-written blocks must be found zero (else convert reads them for nothing).
func TestContentStatus(t *testing.T) {
	io := []string{"write -P 0x11 0 100k", "write -P 0x22 9M 300k", "write -P 0x33 13M 1M"}
	for _, opts := range []string{"block_size=1M", "subformat=fixed,block_size=1M", "block_size=8M"} {
		t.Run(opts, func(t *testing.T) {
			fmttest.NeedQemu(t, "qemu-io")
			dir := t.TempDir()
			p := filepath.Join(dir, "a.vhdx")
			// Made in place (not copied) so the host file keeps its holes.
			fmttest.Run(t, dir, "qemu-img", "create", "-q", "-f", "vhdx", "-o", opts, p, "16M")
			a := []string{"-f", "vhdx"}
			for _, c := range io {
				a = append(a, "-c", c)
			}
			fmttest.Run(t, dir, "qemu-io", append(a, p)...)
			d := fmttest.Open(t, "vhdx", p, true)
			defer d.Close()
			cs := d.(block.ContentStatuser)
			size := d.Size()
			var zero int64
			for off := int64(0); off < size; {
				st, err := cs.ContentStatus(off, size-off)
				if err != nil {
					t.Fatal(err)
				}
				if st.Length <= 0 || off+st.Length > size {
					t.Fatalf("status at %d: bad length %d", off, st.Length)
				}
				if st.Zero {
					buf := make([]byte, st.Length)
					if _, err := d.ReadAt(buf, off); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(buf, make([]byte, len(buf))) {
						t.Fatalf("range %d+%d reported zero holds data", off, st.Length)
					}
					zero += st.Length
				}
				off += st.Length
			}
			// 16 MiB less the three written MiB-aligned runs: at least 13 MiB need no read.
			if zero < 13<<20 {
				t.Fatalf("only %d bytes reported zero, want at least %d", zero, 13<<20)
			}
		})
	}
}

package qcow2

import (
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"gemu/block"
)

// realSample writes up to n bytes of this host's binaries (the regular files of
// /usr/bin in name order, concatenated) to path: machine code, string tables and
// padding, the data a compressed disk image mostly holds. It returns the bytes written.
func realSample(t *testing.T, path string, n int64) int64 {
	t.Helper()
	names, err := filepath.Glob("/usr/bin/*")
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var done int64
	for _, name := range names {
		if done >= n {
			break
		}
		fi, err := os.Lstat(name)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		m, err := io.Copy(out, io.LimitReader(f, n-done))
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		done += m
	}
	return done
}

// convertCompressed is gemu-img convert -c -f raw -O qcow2 -o compression_type=ct.
func convertCompressed(t *testing.T, src, dst, ct string) {
	t.Helper()
	s, err := block.Open(src, block.OpenOptions{ReadOnly: true, Format: "raw"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, err := block.Lookup("qcow2")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Create(dst, block.CreateOptions{Size: s.Size(), Options: map[string]string{"compression_type": ct}}); err != nil {
		t.Fatal(err)
	}
	d, err := block.Open(dst, block.OpenOptions{Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := block.Convert(s, d, block.ConvertOptions{Compress: true, Sparse: 4096, TargetIsZero: true, NoFlush: true}); err != nil {
		d.Close()
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCompressedSizeVsQemuImg holds compressed output to qemu-img's size: on 32 MiB of
// this host's binaries, our qcow2 file (zlib and zstd) may be at most 0.5% larger than
// what `qemu-img convert -c` writes from the same data, and must read back identical
// through qemu-img compare.
func TestCompressedSizeVsQemuImg(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	raw := filepath.Join(dir, "sample.raw")
	const want = 32 << 20
	if n := realSample(t, raw, want); n < want {
		t.Skipf("only %d bytes of binaries under /usr/bin, need %d for a meaningful sample", n, want)
	}
	for _, ct := range []string{"zlib", "zstd"} {
		t.Run(ct, func(t *testing.T) {
			ours, theirs := filepath.Join(dir, "gemu-"+ct+".qcow2"), filepath.Join(dir, "qemu-"+ct+".qcow2")
			convertCompressed(t, raw, ours, ct)
			run(t, "qemu-img", "convert", "-c", "-W", "-f", "raw", "-O", "qcow2", "-o", "compression_type="+ct, raw, theirs)
			run(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, ours)
			qemuCheckClean(t, ours)
			og, err := os.Stat(ours)
			if err != nil {
				t.Fatal(err)
			}
			oq, err := os.Stat(theirs)
			if err != nil {
				t.Fatal(err)
			}
			g, q := og.Size(), oq.Size()
			pct := 100 * (float64(g)/float64(q) - 1)
			t.Logf("%s: gemu %d bytes, qemu-img %d bytes (%+.2f%%)", ct, g, q, pct)
			if pct > 0.5 {
				t.Errorf("%s: compressed image is %d bytes, %.2f%% larger than qemu-img's %d (limit 0.5%%)", ct, g, pct, q)
			}
		})
	}
}

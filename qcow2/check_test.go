package qcow2

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"gemu/block"
)

// checkAlloc runs a read-only check of p and returns the result, the error and the
// bytes allocated meanwhile.
func checkAlloc(t *testing.T, p string) (*block.CheckResult, error, uint64) {
	t.Helper()
	d, err := block.Open(p, block.OpenOptions{Format: "qcow2", ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r, err := d.(block.Checker).Check(block.RepairNone)
	runtime.ReadMemStats(&after)
	return r, err, after.TotalAlloc - before.TotalAlloc
}

// A huge sparse file (an image extended to 1 TiB) is checked in bounded memory: the
// computed refcounts take 2 bytes a cluster as in QEMU, not 8. One too large for
// QEMU's limit (more than 2^31 clusters) fails with one line, allocating nothing big.
func TestCheckHugeSparseFileBounded(t *testing.T) {
	dir := t.TempDir()
	f, _ := block.Lookup("qcow2")
	for _, c := range []struct {
		cluster string
		length  int64
		wantErr string
		budget  uint64
	}{
		{"65536", 1 << 40, "", 48 << 20},
		{"512", 2 << 40, "File too large", 1 << 20},
	} {
		p := filepath.Join(dir, "sparse-"+c.cluster+".qcow2")
		if err := f.Create(p, block.CreateOptions{Size: 1 << 20, Options: map[string]string{"cluster_size": c.cluster}}); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, c.length); err != nil {
			t.Skipf("cannot make a %d-byte sparse file here: %v", c.length, err)
		}
		r, err, alloc := checkAlloc(t, p)
		switch {
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr) || strings.Contains(err.Error(), "\n")):
			t.Errorf("%s: err %v, want one line with %q", p, err, c.wantErr)
		case c.wantErr == "" && (err != nil || r.Corruptions+r.Leaks+r.CheckErrors != 0):
			t.Errorf("%s: %+v %v, want a clean check", p, r, err)
		}
		if alloc > c.budget {
			t.Errorf("%s: check allocated %d MiB, budget %d MiB", p, alloc>>20, c.budget>>20)
		}
	}
}

// Truncating an image our writer made: the references past the new end are
// corruptions (the image is not called clean), in bounded memory.
func TestCheckTruncatedNotClean(t *testing.T) {
	dir := t.TempDir()
	b := baseImage(t, dir, nil)
	for _, cut := range []int64{int64(len(b)) - 4096, int64(len(b)) / 2, 3 * 4096} {
		p := filepath.Join(dir, "cut.qcow2")
		if err := os.WriteFile(p, b[:cut], 0o644); err != nil {
			t.Fatal(err)
		}
		r, err, _ := checkAlloc(t, p)
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		if r.Corruptions == 0 {
			t.Errorf("cut at %d of %d: check finds no corruption: %+v", cut, len(b), r)
		}
	}
}

// A misaligned refcount block entry in a huge sparse file: QEMU prints one line per
// cluster; we keep the first maxCheckMessages and count the rest, in bounded memory.
func TestCheckMessagesBounded(t *testing.T) {
	dir := t.TempDir()
	f, _ := block.Lookup("qcow2")
	p := filepath.Join(dir, "m.qcow2")
	if err := f.Create(p, block.CreateOptions{Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	l := parseLayout(b)
	// Every refcount block entry covering the 1 TiB (512 of them) misaligned.
	for i := int64(0); i < 512; i++ {
		be.PutUint64(b[l.rt+8*i:], uint64(l.rb+512))
	}
	os.WriteFile(p, b, 0o644)
	if err := os.Truncate(p, 1<<40); err != nil {
		t.Skipf("cannot make a sparse 1 TiB file: %v", err)
	}
	r, err, alloc := checkAlloc(t, p)
	if err != nil {
		t.Fatal(err)
	}
	if r.CheckErrors != 1<<24 {
		t.Errorf("check errors %d, want one per cluster (%d)", r.CheckErrors, 1<<24)
	}
	if n := len(r.Messages); n > maxCheckMessages+2 || !strings.Contains(r.Messages[n-1], "more messages not shown") {
		t.Errorf("%d messages kept, last %q", n, r.Messages[n-1])
	}
	if alloc > 96<<20 {
		t.Errorf("check allocated %d MiB", alloc>>20)
	}
}

package block

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The raw driver with Direct: the descriptor really has O_DIRECT, and unaligned
// requests (offset, length, buffer address, and the partial block at the end of a file
// whose size is not a whole number of blocks) read and write correctly.
func TestRawDirect(t *testing.T) {
	img := filepath.Join(t.TempDir(), "d.raw")
	size := 1<<20 + 1000 // not a whole number of sectors: the tail goes through the page cache
	ref := make([]byte, size)
	for i := range ref {
		ref[i] = byte(i * 13)
	}
	if err := os.WriteFile(img, ref, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Open(img, OpenOptions{Format: "raw", Direct: true})
	if err != nil {
		t.Fatalf("O_DIRECT open (does %s refuse O_DIRECT?): %v", filepath.Dir(img), err)
	}
	defer d.Close()
	r := d.(*rawDriver)
	fl, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(int(r.f.Fd())))
	if err != nil {
		t.Skipf("no fdinfo: %v", err)
	}
	for _, line := range strings.Split(string(fl), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			f, _ := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			if f&syscall.O_DIRECT == 0 {
				t.Errorf("flags %o without O_DIRECT", f)
			}
		}
	}
	if r.dio.align < 512 {
		t.Errorf("alignment %d", r.dio.align)
	}
	model := append([]byte(nil), ref...)
	model = append(model, make([]byte, int(d.Size())-len(model))...)
	for _, w := range []struct{ off, n int }{{1, 10}, {4095, 2}, {8192, 4096}, {513, 7000}, {size - 100, 100}, {size - 5000, 5000 + 24}} {
		buf := make([]byte, w.n+1)[1:] // unaligned address
		for i := range buf {
			buf[i] = byte(w.off + i*3 + 1)
		}
		if _, err := d.WriteAt(buf, int64(w.off)); err != nil {
			t.Fatalf("write %+v: %v", w, err)
		}
		copy(model[w.off:], buf)
	}
	got := make([]byte, len(model)+3)[3:]
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Errorf("direct reads differ from what was written")
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	file, _ := os.ReadFile(img)
	if !bytes.Equal(file, model[:len(file)]) || len(file) < size {
		t.Errorf("file content differs")
	}
}

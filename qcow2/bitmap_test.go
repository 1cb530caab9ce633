package qcow2

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"gemu/block"
)

// Persistent dirty bitmaps against qemu-img and qemu-io: bitmaps qemu makes and dirties
// are read bit for bit; gemu's writes and bitmap operations leave images qemu-img
// checks clean, shows identically and copies (convert --bitmaps) with the same bits.

func openRW(t *testing.T, path string) *Image {
	t.Helper()
	d, err := block.Open(path, block.OpenOptions{Format: "qcow2"})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return d.(*Image)
}

// wantBits is the bitmap of granularity g over size bytes with the given byte ranges
// written.
func wantBits(size, g int64, ranges ...[2]int64) []byte {
	n := (size + g - 1) / g
	b := make([]byte, (n+7)/8)
	for _, r := range ranges {
		for k := r[0] / g; k <= (r[0]+r[1]-1)/g; k++ {
			b[k/8] |= 1 << (k % 8)
		}
	}
	return b
}

func bitsOf(t *testing.T, path, name string) []byte {
	t.Helper()
	d := openRO(t, path)
	defer d.Close()
	b, err := d.(*Image).BitmapData(name)
	if err != nil {
		t.Fatalf("%s: bitmap %s: %v", path, name, err)
	}
	return b
}

func qemuInfoFS(t *testing.T, path string) any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(run(t, "qemu-img", "info", "--output=json", path), &m); err != nil {
		t.Fatal(err)
	}
	return m["format-specific"]
}

func TestBitmapsFromQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "a.qcow2")
	const size = 64 << 20
	run(t, "qemu-img", "create", "-f", "qcow2", p, "64M")
	run(t, "qemu-img", "bitmap", "--add", p, "b1")
	run(t, "qemu-img", "bitmap", "--add", "-g", "128k", "--disable", p, "b2")
	run(t, "qemu-img", "bitmap", "--add", "-g", "4k", p, "b3")
	w := [][2]int64{{0, 65536}, {1 << 20, 4096}, {40<<20 + 512, 100}, {size - 512, 512}}
	var cmds []string
	for _, r := range w {
		cmds = append(cmds, "write "+itoa(r[0])+" "+itoa(r[1]))
	}
	qemuIO(t, p, cmds...)
	checkInfo(t, p)
	if got, want := bitsOf(t, p, "b1"), wantBits(size, 65536, w...); !bytes.Equal(got, want) {
		t.Errorf("b1 bits differ from qemu-io's writes")
	}
	if got := bitsOf(t, p, "b2"); !bytes.Equal(got, wantBits(size, 128<<10)) {
		t.Errorf("disabled b2 has bits set")
	}
	if got, want := bitsOf(t, p, "b3"), wantBits(size, 4096, w...); !bytes.Equal(got, want) {
		t.Errorf("b3 bits differ from qemu-io's writes")
	}
	d := openRO(t, p)
	r, err := d.(*Image).Check(block.RepairNone)
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	compareCheck(t, p, r)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestBitmapsGemuWrites: gemu's own writes dirty the enabled bitmaps as qemu-io's do.
func TestBitmapsGemuWrites(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	const size = 32 << 20
	ref := filepath.Join(dir, "ref.qcow2")
	ours := filepath.Join(dir, "ours.qcow2")
	run(t, "qemu-img", "create", "-f", "qcow2", ref, "32M")
	run(t, "qemu-img", "bitmap", "--add", ref, "on")
	run(t, "qemu-img", "bitmap", "--add", "--disable", ref, "off")
	run(t, "qemu-img", "bitmap", "--add", "-g", "512", ref, "fine")
	qemuIO(t, ref, "write 0 4096")
	b, _ := os.ReadFile(ref)
	os.WriteFile(ours, b, 0o644)
	w := [][2]int64{{3 << 20, 70000}, {17<<20 + 7, 1}, {size - 4096, 4096}}
	z := [2]int64{8 << 20, 3 << 20}
	var cmds []string
	for _, r := range w {
		cmds = append(cmds, "write "+itoa(r[0])+" "+itoa(r[1]))
	}
	cmds = append(cmds, "write -z "+itoa(z[0])+" "+itoa(z[1]), "discard 0 65536")
	qemuIO(t, ref, cmds...)

	img := openRW(t, ours)
	for _, r := range w {
		if _, err := img.WriteAt(make([]byte, r[1]), r[0]); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.WriteZeroes(z[0], z[1], 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Discard(0, 65536); err != nil {
		t.Fatal(err)
	}
	// While open for writing, the bitmaps are marked in use on disk as QEMU marks them.
	if fs := qemuInfoFSShared(t, ours); !strings.Contains(fs, "in-use") {
		t.Errorf("bitmaps not in use while written: %s", fs)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheckClean(t, ours)
	if got, want := qemuInfoFS(t, ours), qemuInfoFS(t, ref); !reflect.DeepEqual(got, want) {
		t.Errorf("info\n got %v\nwant %v", got, want)
	}
	checkInfo(t, ours)
	for _, name := range []string{"on", "off", "fine"} {
		if got, want := bitsOf(t, ours, name), bitsOf(t, ref, name); !bytes.Equal(got, want) {
			t.Errorf("bitmap %s: gemu's writes set other bits than qemu-io's", name)
		}
	}
	// qemu-img accepts gemu's stored bitmaps and copies them with the same bits.
	cp := filepath.Join(dir, "copy.qcow2")
	run(t, "qemu-img", "convert", "--bitmaps", "-O", "qcow2", ours, cp)
	for _, name := range []string{"on", "off", "fine"} {
		if got, want := bitsOf(t, cp, name), bitsOf(t, ref, name); !bytes.Equal(got, want) {
			t.Errorf("bitmap %s as copied by qemu-img differs", name)
		}
	}
	// A resize keeps the bitmaps valid for qemu.
	img = openRW(t, ours)
	if err := img.Resize(48<<20, block.ResizeOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheckClean(t, ours)
	run(t, "qemu-img", "resize", ref, "48M")
	if got, want := qemuInfoFS(t, ours), qemuInfoFS(t, ref); !reflect.DeepEqual(got, want) {
		t.Errorf("info after resize\n got %v\nwant %v", got, want)
	}
	for _, name := range []string{"on", "off", "fine"} {
		if got, want := bitsOf(t, ours, name), bitsOf(t, ref, name); !bytes.Equal(got, want) {
			t.Errorf("bitmap %s after resize differs", name)
		}
	}
}

func qemuInfoFSShared(t *testing.T, path string) string {
	t.Helper()
	out, _ := exec.Command("qemu-img", "info", "-U", "--output=json", path).CombinedOutput()
	return string(out)
}

// TestBitmapOpsMatchQemu applies the same bitmap operations with gemu and qemu-img.
func TestBitmapOpsMatchQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	run(t, "qemu-img", "create", "-f", "qcow2", base, "16M")
	run(t, "qemu-img", "bitmap", "--add", base, "a")
	qemuIO(t, base, "write 0 64k", "write 5M 1k")
	run(t, "qemu-img", "bitmap", "--add", base, "b")
	qemuIO(t, base, "write 9M 64k")
	src := filepath.Join(dir, "src.qcow2")
	run(t, "qemu-img", "create", "-f", "qcow2", src, "16M")
	run(t, "qemu-img", "bitmap", "--add", "-g", "1M", src, "s")
	qemuIO(t, src, "write 12M 4k")
	b, _ := os.ReadFile(base)
	ref, ours := filepath.Join(dir, "ref.qcow2"), filepath.Join(dir, "ours.qcow2")
	os.WriteFile(ref, b, 0o644)
	os.WriteFile(ours, b, 0o644)

	run(t, "qemu-img", "bitmap", "--add", "-g", "8k", "--disable", ref, "c")
	run(t, "qemu-img", "bitmap", "--merge", "a", ref, "c")
	run(t, "qemu-img", "bitmap", "--clear", "--disable", ref, "a")
	run(t, "qemu-img", "bitmap", "--merge", "s", "-b", src, "-F", "qcow2", ref, "b")
	run(t, "qemu-img", "bitmap", "--remove", ref, "b")
	run(t, "qemu-img", "bitmap", "--add", ref, "b")
	run(t, "qemu-img", "bitmap", "--merge", "s", "-b", src, ref, "b")
	run(t, "qemu-img", "bitmap", "--enable", ref, "c")

	img := openRW(t, ours)
	s := openRO(t, src).(*Image)
	steps := []func() error{
		func() error { return img.AddBitmap("c", 8192, true) },
		func() error { return img.MergeBitmap("c", nil, "a") },
		func() error { return img.ClearBitmap("a") },
		func() error { return img.EnableBitmap("a", false) },
		func() error { return img.MergeBitmap("b", s, "s") },
		func() error { return img.RemoveBitmap("b") },
		func() error { return img.AddBitmap("b", 0, false) },
		func() error { return img.MergeBitmap("b", s, "s") },
		func() error { return img.EnableBitmap("c", true) },
	}
	for i, f := range steps {
		if err := f(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	s.Close()
	for _, bad := range []error{img.AddBitmap("a", 0, false), img.RemoveBitmap("nope"), img.AddBitmap("x", 1000, false)} {
		if bad == nil {
			t.Errorf("bad bitmap operation accepted")
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheckClean(t, ours)
	if got, want := qemuInfoFS(t, ours), qemuInfoFS(t, ref); !reflect.DeepEqual(got, want) {
		t.Errorf("info\n got %v\nwant %v", got, want)
	}
	for _, name := range []string{"a", "b", "c"} {
		if got, want := bitsOf(t, ours, name), bitsOf(t, ref, name); !bytes.Equal(got, want) {
			t.Errorf("bitmap %s differs from qemu-img's", name)
		}
	}
	// Removing the last bitmap drops the extension and the autoclear bit.
	img = openRW(t, ours)
	for _, n := range []string{"a", "b", "c"} {
		if err := img.RemoveBitmap(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheckClean(t, ours)
	if fs := qemuInfoFSShared(t, ours); strings.Contains(fs, "bitmaps") {
		t.Errorf("bitmaps left: %s", fs)
	}
}

// TestBitmapsDowngrade: amend compat=0.10 leaves the bitmaps stale as qemu-img's does
// (same leaks, same warning on the next open).
func TestBitmapsDowngrade(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	ref, ours := filepath.Join(dir, "ref.qcow2"), filepath.Join(dir, "ours.qcow2")
	run(t, "qemu-img", "create", "-f", "qcow2", ref, "16M")
	run(t, "qemu-img", "bitmap", "--add", ref, "a")
	run(t, "qemu-img", "bitmap", "--add", "--disable", ref, "b")
	qemuIO(t, ref, "write 0 64k")
	b, _ := os.ReadFile(ref)
	os.WriteFile(ours, b, 0o644)
	run(t, "qemu-img", "amend", "-o", "compat=0.10", ref)
	img := openRW(t, ours)
	if err := img.Amend(map[string]string{"compat": "0.10"}); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	want, _ := exec.Command("qemu-img", "check", "--output=json", ref).CombinedOutput()
	got, _ := exec.Command("qemu-img", "check", "--output=json", ours).CombinedOutput()
	norm := func(b []byte) string {
		return regexp.MustCompile(`"filename": "[^"]*"|"image-end-offset": [0-9]+|Leaked cluster [0-9]+`).ReplaceAllString(string(b), "")
	}
	if norm(got) != norm(want) {
		t.Errorf("check after downgrade\n got %s\nwant %s", got, want)
	}
}

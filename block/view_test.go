package block

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// shrinkingView lends views of a raw file, then truncates the file before convert
// touches them: reading the view faults, which must be an error, not a crash.
type shrinkingView struct {
	*rawDriver
	path string
}

func (s shrinkingView) View(off, n int64) ([]byte, func(), error) {
	b, rel, err := s.rawDriver.View(off, n)
	os.Truncate(s.path, 0)
	return b, rel, err
}

func TestConvertViewShrunkFileFails(t *testing.T) {
	p, _ := rawWithHoles(t, 4<<20, [][2]int64{{0, 4 << 20}})
	src := openRaw(t, p, true)
	out := filepath.Join(t.TempDir(), "o.raw")
	if err := (rawFormat{}).Create(out, CreateOptions{Size: src.Size()}); err != nil {
		t.Fatal(err)
	}
	dst := openRaw(t, out, false)
	err := Convert(shrinkingView{src.(*rawDriver), p}, dst, ConvertOptions{Sparse: 4096, TargetIsZero: true})
	if err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("convert of a file shrunk under its view: %v, want a fault turned into an error", err)
	}
}

// Views are used for raw sources inside the file, and the bytes come out the same
// as through ReadAt (TestConvertRawSparse checks the whole convert).
func TestRawView(t *testing.T) {
	p, want := rawWithHoles(t, 3<<20+4096, [][2]int64{{4096, 2 << 20}, {3 << 20, 3<<20 + 4096}})
	d := openRaw(t, p, true)
	v := d.(Viewer)
	for _, r := range [][2]int64{{0, 3<<20 + 4096}, {4097, 1 << 20}, {3 << 20, 4096}} {
		b, rel, err := v.View(r[0], r[1])
		if err != nil || b == nil {
			t.Fatalf("view %v: %v (nil %v)", r, err, b == nil)
		}
		if !bytes.Equal(b, want[r[0]:r[0]+r[1]]) {
			t.Fatalf("view %v differs from the file", r)
		}
		rel()
	}
	if b, _, _ := v.View(3<<20, 8192); b != nil {
		t.Fatal("view past the end of the file was lent")
	}
}

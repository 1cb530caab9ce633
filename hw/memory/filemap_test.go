package memory

import (
	"bytes"
	"os"
	"testing"
)

// TestMapFile: pages mapped from a file read its contents, a guest write changes the
// guest's copy and not the file, Discard makes the range read zero again (not the
// file's data, which MADV_DONTNEED would bring back).
func TestMapFile(t *testing.T) {
	r := newTestRAM(t)
	f, err := os.CreateTemp(t.TempDir(), "ram")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := bytes.Repeat([]byte{0xab}, 3*PageSize)
	data[PageSize] = 1
	f.Write(data)
	if err := r.MapFile(0x10000, 2*PageSize, f, PageSize); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2*PageSize)
	if err := r.ReadAt(got, 0x10000); err != nil || !bytes.Equal(got, data[PageSize:]) {
		t.Fatalf("mapped pages read %x... (%v)", got[:4], err)
	}
	if err := r.Write32(0x10000, 0); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, 4)
	f.ReadAt(back, PageSize)
	if back[0] != 1 {
		t.Fatal("a guest write reached the file")
	}
	if err := r.Discard(0x10000, 2*PageSize); err != nil {
		t.Fatal(err)
	}
	r.ReadAt(got, 0x10000)
	if !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatal("discarded pages do not read zero")
	}
	if err := r.MapFile(0xff000, 2*PageSize, f, 0); err == nil {
		t.Fatal("a mapping past the slot's end accepted")
	}
	if err := r.MapFile(0x10000, PageSize, f, 17); err == nil {
		t.Fatal("an unaligned file offset accepted")
	}
}

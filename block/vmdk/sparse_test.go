package vmdk

import (
	"bytes"
	"encoding/binary"
	"os"
	"sync"
	"testing"

	"gemu/block"
)

// TestConcurrentSparseWrites: goroutines writing interleaved pieces of the same grains
// and grain tables (tables allocated on demand, as in images whose directory starts
// empty) produce the right content, and the redundant tables match the primary ones.
func TestConcurrentSparseWrites(t *testing.T) {
	needQemu(t)
	chdirTemp(t)
	const size = 80 << 20 // 3 grain tables
	if err := vmdkFormatT(t).Create("c.vmdk", block.CreateOptions{Size: size, Options: map[string]string{"zeroed_grain": "on"}}); err != nil {
		t.Fatal(err)
	}
	// Clear the preallocated directories so tables are allocated by writes.
	b, _ := os.ReadFile("c.vmdk")
	h, _ := parseHeader(b)
	for _, gd := range []uint64{h.GDOffset, h.RGDOffset} {
		clear(b[gd*sectorSize : gd*sectorSize+3*4])
	}
	writeFile(t, "c.vmdk", b)
	want := make([]byte, size)
	d := openT(t, "c.vmdk", false)
	var wg sync.WaitGroup
	const piece = 24 << 10
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for off := int64(w * piece); off+piece <= size; off += 4 * piece * 7 {
				p := bytes.Repeat([]byte{byte(off>>10) | 1}, piece)
				if _, err := d.WriteAt(p, off); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	for w := 0; w < 4; w++ {
		for off := int64(w * piece); off+piece <= size; off += 4 * piece * 7 {
			copy(want[off:off+piece], bytes.Repeat([]byte{byte(off>>10) | 1}, piece))
		}
	}
	got := make([]byte, size)
	if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("content differs after concurrent writes (%v)", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, "want.raw", want)
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", "want.raw", "c.vmdk")
	run(t, "qemu-img", "check", "c.vmdk")
	checkRedundant(t, "c.vmdk")
}

// checkRedundant compares every grain table with its redundant copy.
func checkRedundant(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := parseHeader(b)
	le := binary.LittleEndian
	for i := uint64(0); i < h.gdEntries(); i++ {
		gt := int64(le.Uint32(b[h.GDOffset*sectorSize+4*i:])) * sectorSize
		rgt := int64(le.Uint32(b[h.RGDOffset*sectorSize+4*i:])) * sectorSize
		if (gt == 0) != (rgt == 0) {
			t.Fatalf("directory entry %d: primary %d, redundant %d", i, gt, rgt)
		}
		if gt != 0 && !bytes.Equal(b[gt:gt+2048], b[rgt:rgt+2048]) {
			t.Fatalf("grain table %d differs from its redundant copy", i)
		}
	}
}

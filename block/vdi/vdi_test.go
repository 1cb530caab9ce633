package vdi

import (
	"bytes"
	"os"
	"testing"

	"gemu/block"
	"gemu/block/internal/fmttest"
)

func TestMain(m *testing.M) {
	fmttest.HostileChild("vdi")
	os.Exit(m.Run())
}

var qemuIO = []string{"write -P 0x11 0 100k", "write -P 0x22 1000k 3k", "write -z 3M 64k", "write -P 0x33 5M 1M"}

func TestReadQemuImages(t *testing.T) {
	fmttest.ReadMatrix(t, "vdi", []fmttest.ReadCase{
		{Size: "7M", IO: qemuIO},
		{Size: "6000001", IO: qemuIO[:3]},
		{Opts: "static=on", Size: "6M", IO: qemuIO},
		{Opts: "static=on", Size: "1025k", IO: []string{"write -P 0x44 1024k 1k"}},
		{Size: "3G", IO: []string{"write -P 1 2G 1M", "write -P 2 3071M 1M", "write -P 3 0 4k"}},
		{Size: "0"},
	})
}

func TestWriteReadByQemu(t *testing.T) {
	fmttest.WriteMatrix(t, "vdi", []fmttest.WriteCase{
		{Size: 6<<20 + 7*512, Seed: 1, QemuCheck: true},
		{Size: 9 << 20, Seed: 2, Opts: map[string]string{"static": "on"}, QemuCheck: true},
		{Size: 1<<20 + 512, Seed: 3, QemuCheck: true},
	})
}

func TestCreateLikeQemu(t *testing.T) {
	fmttest.CreateLikeQemu(t, "vdi", []string{"", "static=on"}, []string{"0", "1", "511", "1M", "1000001", "3G"}, true)
}

// Writes allocate blocks at the end of the file in order, and blocks_allocated
// follows, as QEMU's vdi_co_pwritev does.
func TestAllocationOrder(t *testing.T) {
	b := fmttest.Build(t, "vdi", 4<<20, nil, func(d block.Driver) {
		d.WriteAt([]byte{1}, 3<<20)
		d.WriteAt([]byte{2}, 1<<20+5)
		d.WriteAt(make([]byte, 4096), 0) // zeroes into an unallocated block still allocate
	})
	h, err := parseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.BlocksAllocated != 3 {
		t.Fatalf("blocks_allocated %d, want 3", h.BlocksAllocated)
	}
	want := []uint32{2, 1, Unallocated, 0}
	for i, w := range want {
		if g := le.Uint32(b[int(h.OffsetBmap)+4*i:]); g != w {
			t.Errorf("bmap[%d] = %#x, want %#x", i, g, w)
		}
	}
	if int64(len(b)) != int64(h.OffsetData)+3*blockSize {
		t.Errorf("file is %d bytes, want %d", len(b), int64(h.OffsetData)+3*blockSize)
	}
	if b[int(h.OffsetData)+3] != 0 || b[int(h.OffsetData)+1*blockSize+5] != 2 {
		t.Errorf("data not where the block map says")
	}
}

// base is a 3 MiB image whose block 2 is allocated and holds data, cut short after
// its first 4 KiB as an image whose last block was never written out to the end
// (reads past the end of the file are zeroes, as in QEMU). Small enough for the
// committed corpus.
func base(t testing.TB) []byte {
	b := fmttest.Build(t, "vdi", 3<<20, nil, func(d block.Driver) {
		d.WriteAt(bytes.Repeat([]byte("vdi "), 1024), 2<<20)
	})
	return b[:le.Uint32(b[0x158:])+4096]
}

func mut(fn func(b []byte) []byte) func(testing.TB) []byte {
	return func(t testing.TB) []byte { return fn(base(t)) }
}

func put32(off int, v uint32) func([]byte) []byte {
	return func(b []byte) []byte { le.PutUint32(b[off:], v); return b }
}

var hostileCases = toCases([]hc{
	{"valid", "", base},
	{"bad-signature", "bad signature", mut(put32(0x40, 0x12345678))},
	{"version-2", "unsupported VDI image (version 2.0)", mut(put32(0x44, 0x00020000))},
	{"block-size-0", "block size 0 is not 1048576", mut(put32(0x178, 0))},
	{"block-size-huge", "block size 4294967295", mut(put32(0x178, 0xffffffff))},
	{"sector-size-4k", "sector size 4096", mut(put32(0x168, 4096))},
	{"unaligned-bmap", "unaligned block map offset", mut(put32(0x154, 0x201))},
	{"unaligned-data", "unaligned data offset", mut(put32(0x158, 0x401))},
	{"disk-size-2^63", "Unsupported VDI image size", mut(func(b []byte) []byte { binary64(b, 0x170, 1<<63); return b })},
	{"disk-bigger-than-bmap", "image bitmap has room for", mut(func(b []byte) []byte { binary64(b, 0x170, 5<<20); return b })},
	{"too-many-blocks", "too many blocks", mut(func(b []byte) []byte {
		le.PutUint32(b[0x180:], 0x40000000)
		return b
	})},
	{"bmap-past-eof", "block map", mut(func(b []byte) []byte {
		le.PutUint32(b[0x180:], 1<<28)
		binary64(b, 0x170, 1<<20)
		return b
	})},
	{"bmap-offset-huge", "inside the block map", mut(put32(0x154, 0xfffffe00))},
	{"bmap-overlaps-header", "overlaps the header", mut(put32(0x154, 0))},
	{"data-inside-bmap", "inside the block map", mut(put32(0x158, 0x200))},
	{"parent-uuid", "non-NULL parent UUID", mut(func(b []byte) []byte { b[0x1b8] = 1; return b })},
	{"link-uuid", "non-NULL link UUID", mut(func(b []byte) []byte { b[0x1a8] = 1; return b })},
	// A block map entry pointing far past the end of the file reads as zeroes, as in
	// QEMU (the file is simply short); check reports it.
	{"entry-past-eof", "", mut(func(b []byte) []byte { le.PutUint32(b[0x208:], 0x3fffffff); return b })},
	{"truncated-header", "header at offset 0 lies past the end of the file", func(testing.TB) []byte { return []byte("<<< short >>>") }},
})

// hc is a hostile case written positionally.
type hc struct {
	name, want string
	make       func(testing.TB) []byte
}

func toCases(l []hc) []fmttest.HostileCase {
	var out []fmttest.HostileCase
	for _, c := range l {
		out = append(out, fmttest.HostileCase{Name: c.name, Want: c.want, Make: c.make})
	}
	return out
}

func binary64(b []byte, off int, v uint64) { le.PutUint64(b[off:], v) }

func TestHostileCorpus(t *testing.T) { fmttest.Hostile(t, "vdi", hostileCases) }

// A guest write to a block whose map entry is out of range fails instead of growing
// the file to wherever the entry points.
func TestWriteOutOfRangeEntry(t *testing.T) {
	p := t.TempDir() + "/e.vdi"
	b := base(t)
	le.PutUint32(b[0x208:], 0x3fffffff)
	os.WriteFile(p, b, 0o644)
	d := fmttest.Open(t, "vdi", p, false)
	defer d.Close()
	if _, err := d.WriteAt([]byte{1}, 2<<20); err == nil {
		t.Fatal("write through an out-of-range block map entry succeeded")
	}
	if st, _ := os.Stat(p); st.Size() > int64(len(b)) {
		t.Errorf("file grew to %d bytes", st.Size())
	}
}

// An image qemu-img refuses is refused by gemu too, and check agrees on the block map
// entry past the end of the image.
func TestHostileLikeQemu(t *testing.T) {
	fmttest.NeedQemu(t)
	dir := t.TempDir()
	for _, c := range hostileCases {
		p := dir + "/" + c.Name
		os.WriteFile(p, c.Make(t), 0o644)
		_, qerr := fmttest.RunErr("qemu-img", "info", "-f", "vdi", p)
		gerr := fmttest.Exercise("vdi", p)
		if qerr != nil && gerr == nil {
			t.Errorf("%s: qemu-img refuses it, gemu reads it", c.Name)
		}
	}
	p := dir + "/entry-past-eof"
	d := fmttest.Open(t, "vdi", p, true)
	defer d.Close()
	fmttest.CheckLikeQemu(t, d, "vdi", p)
}

func FuzzOpen(f *testing.F) {
	fmttest.Seeds(f, hostileCases)
	f.Fuzz(func(t *testing.T, b []byte) { fmttest.FuzzImage(t, "vdi", b) })
}

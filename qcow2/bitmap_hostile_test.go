package qcow2

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"gemu/block"
)

// Hostile bitmap directories: crafted from a small image with two bitmaps (generated
// by TestGenerateHostileBitmaps with GEMU_QCOW2_REGEN=1 into testdata/hostile-bitmaps
// and committed). Each must give a one-line error on open, on check, or on the first
// write (which loads the bitmaps), never a panic or a large allocation.

const hostileBitmapDir = "testdata/hostile-bitmaps"

func bitmapBase(t *testing.T) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bm.qcow2")
	f, _ := block.Lookup("qcow2")
	if err := f.Create(p, block.CreateOptions{Size: 1 << 20, Options: map[string]string{"cluster_size": "4096"}}); err != nil {
		t.Fatal(err)
	}
	img := openRW(t, p)
	if err := img.AddBitmap("b1", 512, false); err != nil {
		t.Fatal(err)
	}
	if err := img.AddBitmap("b2", 65536, true); err != nil {
		t.Fatal(err)
	}
	img.WriteAt(bytes.Repeat([]byte{1}, 8192), 0)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bitmapLayout finds the bitmaps extension and the first directory entry's table.
type bmLayout struct {
	ext, dir, table int64 // ext: offset of the extension's data
}

func parseBitmapLayout(b []byte) bmLayout {
	g := binary.BigEndian
	var l bmLayout
	off := int64(g.Uint32(b[100:]))
	for off+8 <= 4096 {
		typ, ln := g.Uint32(b[off:]), int64(g.Uint32(b[off+4:]))
		if typ == 0 {
			break
		}
		if typ == extBitmaps {
			l.ext = off + 8
		}
		off += 8 + (ln+7)&^7
	}
	if l.ext != 0 {
		l.dir = int64(g.Uint64(b[l.ext+16:]))
		l.table = int64(g.Uint64(b[l.dir:]))
	}
	return l
}

func hostileBitmapCases(t *testing.T) map[string][]byte {
	base := bitmapBase(t)
	l := parseBitmapLayout(base)
	if l.ext == 0 {
		t.Fatal("base image has no bitmaps extension")
	}
	g := binary.BigEndian
	mut := func(fs ...func([]byte)) []byte {
		b := append([]byte(nil), base...)
		for _, f := range fs {
			f(b)
		}
		return b
	}
	u64 := func(off int64, v uint64) func([]byte) { return func(b []byte) { g.PutUint64(b[off:], v) } }
	u32 := func(off int64, v uint32) func([]byte) { return func(b []byte) { g.PutUint32(b[off:], v) } }
	u16 := func(off int64, v uint16) func([]byte) { return func(b []byte) { g.PutUint16(b[off:], v) } }
	u8 := func(off int64, v byte) func([]byte) { return func(b []byte) { b[off] = v } }
	e, d := l.ext, l.dir
	// A directory of 65535 minimal entries, each claiming a table past the end.
	end := int64(len(base)+4095) &^ 4095
	manyImg := mut(u32(e, maxBitmaps), u64(e+8, uint64(maxBitmaps*32)), u64(e+16, uint64(end)))
	{
		dir := make([]byte, maxBitmaps*32)
		for i := 0; i < maxBitmaps; i++ {
			x := dir[i*32:]
			g.PutUint64(x, uint64(1<<30)+uint64(i)*4096)
			g.PutUint32(x[8:], 1)
			x[16], x[17] = 1, 16
			g.PutUint16(x[18:], 4)
			g.PutUint32(x[24:], uint32(i))
		}
		manyImg = append(append(manyImg, make([]byte, end-int64(len(manyImg)))...), dir...)
	}
	return map[string][]byte{
		"bitmaps_ext_short.qcow2":         mut(u32(e-4, 16)),
		"bitmaps_reserved.qcow2":          mut(u32(e+4, 1)),
		"bitmaps_zero.qcow2":              mut(u32(e, 0)),
		"bitmaps_too_many.qcow2":          mut(u32(e, 65536)),
		"bitmaps_dir_unaligned.qcow2":     mut(u64(e+16, uint64(d+8))),
		"bitmaps_dir_huge.qcow2":          mut(u64(e+8, 1<<40)),
		"bitmaps_dir_size_zero.qcow2":     mut(u64(e+8, 0)),
		"bitmaps_dir_past_eof.qcow2":      mut(u64(e+16, 1<<40)),
		"bitmaps_dir_overflow.qcow2":      mut(u64(e+16, 0xfffffffffffff000)),
		"bitmaps_dir_cut.qcow2":           mut(u64(e+8, 20)),
		"bitmaps_fewer_than_said.qcow2":   mut(u32(e, 3)),
		"bitmaps_more_than_said.qcow2":    mut(u32(e, 1)),
		"bitmaps_name_overflow.qcow2":     mut(u16(d+18, 0xffff)),
		"bitmaps_extra_data.qcow2":        mut(u32(d+20, 8)),
		"bitmaps_extra_huge.qcow2":        mut(u32(d+20, 0xffffffff)),
		"bitmaps_table_size_zero.qcow2":   mut(u32(d+8, 0)),
		"bitmaps_table_size_huge.qcow2":   mut(u32(d+8, 0xffffffff)),
		"bitmaps_table_size_wrong.qcow2":  mut(u32(d+8, 2)),
		"bitmaps_table_unaligned.qcow2":   mut(u64(d, uint64(l.table+8))),
		"bitmaps_table_zero.qcow2":        mut(u64(d, 0)),
		"bitmaps_table_past_eof.qcow2":    mut(u64(d, 1<<40)),
		"bitmaps_gran_small.qcow2":        mut(u8(d+17, 8)),
		"bitmaps_gran_large.qcow2":        mut(u8(d+17, 40)),
		"bitmaps_flags_reserved.qcow2":    mut(u32(d+12, 0x80000000)),
		"bitmaps_type.qcow2":              mut(u8(d+16, 2)),
		"bitmaps_dup_name.qcow2":          mut(func(b []byte) { copy(b[d+32+24:], "b1") }),
		"bitmaps_entry_reserved.qcow2":    mut(u64(l.table, 0xff00000000000000)),
		"bitmaps_entry_allones_off.qcow2": mut(u64(l.table, 0x10001)),
		"bitmaps_entry_unaligned.qcow2":   mut(u64(l.table, 0x10200)),
		"bitmaps_entry_past_eof.qcow2":    mut(u64(l.table, 1<<40)),
		"bitmaps_entry_on_reftable.qcow2": mut(u64(l.table, g.Uint64(base[48:]))),
		"bitmaps_table_overflow.qcow2":    mut(u64(d, 0xfffffffffffff000)),
		"bitmaps_many.qcow2":              manyImg,
		"bitmaps_v2_stale.qcow2":          mut(u64(88, 0)),
	}
}

func TestGenerateHostileBitmaps(t *testing.T) {
	if os.Getenv("GEMU_QCOW2_REGEN") == "" {
		t.Skip("set GEMU_QCOW2_REGEN=1 to rewrite testdata/hostile-bitmaps")
	}
	os.MkdirAll(hostileBitmapDir, 0o755)
	for name, b := range hostileBitmapCases(t) {
		if err := os.WriteFile(filepath.Join(hostileBitmapDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// probeBitmaps is probeImage plus what a writer does: list and read every bitmap,
// then open read-write, write (loading and marking the bitmaps) and close (storing
// them).
func probeBitmaps(path string) error {
	if err := probeImage(path); err != nil {
		return err
	}
	d, err := block.Open(path, block.OpenOptions{Format: "qcow2"})
	if err != nil {
		return err
	}
	img := d.(*Image)
	for _, b := range img.Bitmaps() {
		if !b.InUse {
			if _, err := img.BitmapData(b.Name); err != nil {
				d.Close()
				return err
			}
		}
	}
	if _, err := d.WriteAt([]byte{1}, 4096); err != nil {
		d.Close()
		return err
	}
	if err := d.Close(); err != nil {
		return err
	}
	return probeImage(path)
}

func TestHostileBitmaps(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(hostileBitmapDir, "*.qcow2"))
	if len(files) < 30 {
		t.Fatalf("hostile bitmap corpus has %d files, want at least 30", len(files))
	}
	sort.Strings(files)
	// Cases QEMU opens as well: a stale extension (bitmaps written by a program without
	// bitmap support) only leaks clusters, which check reports and a write keeps.
	mayOpen := map[string]bool{"bitmaps_v2_stale.qcow2": true}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), filepath.Base(f))
		os.WriteFile(p, b, 0o644)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		err = probeBitmaps(p)
		runtime.ReadMemStats(&after)
		name := filepath.Base(f)
		if err == nil && !mayOpen[name] {
			t.Errorf("%s: no error", name)
			continue
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: multi-line error %q", name, err)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 160<<20 {
			t.Errorf("%s: allocated %d MiB", name, grew>>20)
		}
		t.Logf("%-36s %v", name, err)
	}
}

// FuzzBitmaps overlays fuzzed bytes on the bitmaps extension, the directory or the
// first bitmap table of a small image with bitmaps, then reads, checks and writes it.
func FuzzBitmaps(f *testing.F) {
	base, err := os.ReadFile(filepath.Join(hostileBitmapDir, "bitmaps_v2_stale.qcow2"))
	if err != nil {
		f.Skip("testdata/hostile-bitmaps missing")
	}
	binary.BigEndian.PutUint64(base[88:], autoclearBitmap) // the valid original
	l := parseBitmapLayout(base)
	targets := []int64{l.ext, l.dir, l.table}
	for i := range targets {
		f.Add(uint8(i), uint16(0), []byte{0xff, 0xff, 0xff, 0xff})
		f.Add(uint8(i), uint16(8), []byte{0, 0, 0, 0, 0, 0, 0x10, 0x00})
		f.Add(uint8(i), uint16(16), []byte{1, 40, 0xff, 0xff})
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, which uint8, at uint16, data []byte) {
		b := append([]byte(nil), base...)
		off := targets[int(which)%len(targets)] + int64(at)%256
		if off >= int64(len(b)) || len(data) > 256 {
			return
		}
		copy(b[off:], data)
		p := filepath.Join(dir, "t.qcow2")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		probeBitmaps(p)
	})
}

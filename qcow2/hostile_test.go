package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"gemu/block"
)

// The hostile corpus: crafted images that each break one rule. They are generated
// from a small valid image by TestGenerateHostile (run with GEMU_QCOW2_REGEN=1 to
// rewrite qcow2/testdata/hostile) and committed, so the checks below and the fuzz
// seeds do not depend on the generator staying the same.

const hostileDir = "testdata/hostile"

// baseImage builds a small valid image: 1 MiB, 4 KiB clusters, two data clusters,
// cluster 4 compressed, and one snapshot.
func baseImage(t *testing.T, dir string, opts map[string]string) []byte {
	t.Helper()
	p := filepath.Join(dir, "base.qcow2")
	f, _ := block.Lookup("qcow2")
	o := map[string]string{"cluster_size": "4096"}
	for k, v := range opts {
		o[k] = v
	}
	if err := f.Create(p, block.CreateOptions{Size: 1 << 20, Options: o}); err != nil {
		t.Fatal(err)
	}
	d, err := block.Open(p, block.OpenOptions{Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	d.WriteAt(bytes.Repeat([]byte{0x42}, 8<<10), 0)
	cc := d.(block.ClusterCompressor)
	raw := bytes.Repeat([]byte("compressible "), 4096/13+1)[:4096]
	c, _ := cc.CompressCluster(raw)
	if err := cc.WriteCompressed(16<<10, c, raw); err != nil {
		t.Fatal(err)
	}
	if err := d.(block.Snapshotter).CreateSnapshot("snap"); err != nil {
		t.Fatal(err)
	}
	d.Close()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type layout struct {
	l1, rt, snaps, l2, rb, data, comp int64
	compDesc                          uint64
}

func parseLayout(b []byte) layout {
	g := binary.BigEndian
	l := layout{l1: int64(g.Uint64(b[40:])), rt: int64(g.Uint64(b[48:])), snaps: int64(g.Uint64(b[64:]))}
	l.rb = int64(g.Uint64(b[l.rt:]))
	l.l2 = int64(g.Uint64(b[l.l1:]) & l1OffsetMask)
	l.data = int64(g.Uint64(b[l.l2:]) & l2OffsetMask)
	l.compDesc = g.Uint64(b[l.l2+4*8:])
	return l
}

func hostileCases(t *testing.T) map[string][]byte {
	dir := t.TempDir()
	base := baseImage(t, dir, nil)
	zstdBase := baseImage(t, dir, map[string]string{"compression_type": "zstd"})
	l := parseLayout(base)
	g := binary.BigEndian
	mut := func(src []byte, f func(b []byte)) []byte {
		b := append([]byte(nil), src...)
		f(b)
		return b
	}
	u32 := func(off int, v uint32) func([]byte) { return func(b []byte) { g.PutUint32(b[off:], v) } }
	u64 := func(off int64, v uint64) func([]byte) { return func(b []byte) { g.PutUint64(b[off:], v) } }
	withBacking := func(name string) func([]byte) {
		return func(b []byte) {
			off := 4096 - 1024
			copy(b[off:], name)
			g.PutUint64(b[8:], uint64(off))
			g.PutUint32(b[16:], uint32(len(name)))
		}
	}
	// Header extensions start at 112 in our images; the first is the feature table.
	// Compressed descriptors: 4 KiB clusters put the sector count at bit 58.
	c := map[string][]byte{
		"l1_size_huge.qcow2":                 mut(base, u32(36, 0x7fffffff)),
		"l1_offset_past_eof.qcow2":           mut(base, u64(40, 1<<40)),
		"l1_offset_misaligned.qcow2":         mut(base, u64(40, uint64(l.l1)+8)),
		"l1_offset_overflow.qcow2":           mut(base, u64(40, 0xffffffffffff0000)),
		"l1_too_small.qcow2":                 mut(base, u32(36, 0)),
		"size_huge.qcow2":                    mut(base, u64(24, 1<<61)),
		"refcount_table_clusters_huge.qcow2": mut(base, u32(56, 0xffffffff)),
		"refcount_table_clusters_zero.qcow2": mut(base, u32(56, 0)),
		"refcount_table_past_eof.qcow2":      mut(base, u64(48, 1<<44)),
		"refcount_table_misaligned.qcow2":    mut(base, u64(48, uint64(l.rt)+512)),
		"refcount_order_7.qcow2":             mut(base, u32(96, 7)),
		"cluster_bits_8.qcow2":               mut(base, u32(20, 8)),
		"cluster_bits_31.qcow2":              mut(base, u32(20, 31)),
		"version_4.qcow2":                    mut(base, u32(4, 4)),
		"header_length_short.qcow2":          mut(base, u32(100, 60)),
		"header_length_huge.qcow2":           mut(base, u32(100, 1<<20)),
		"extension_length_huge.qcow2":        mut(base, u32(116, 0xfffffff0)),
		"extension_truncated.qcow2": mut(base, func(b []byte) {
			// An extension header whose data runs past the first cluster.
			g.PutUint32(b[112:], 0x12345678)
			g.PutUint32(b[116:], 4096-120+8)
		}),
		"backing_name_too_long.qcow2":       mut(base, func(b []byte) { withBacking("x")(b); g.PutUint32(b[16:], 5000) }),
		"backing_offset_past_cluster.qcow2": mut(base, func(b []byte) { withBacking("x")(b); g.PutUint64(b[8:], 70000) }),
		"backing_json.qcow2":                mut(base, withBacking(`json:{"driver":"file","filename":"/etc/passwd"}`)),
		"backing_nbd.qcow2":                 mut(base, withBacking("nbd:localhost:10809")),
		"backing_http.qcow2":                mut(base, withBacking("http://example.com/x.img")),
		"backing_loop_self.qcow2":           mut(base, withBacking("backing_loop_self.qcow2")),
		"backing_loop_a.qcow2":              mut(base, withBacking("backing_loop_b.qcow2")),
		"backing_loop_b.qcow2":              mut(base, withBacking("backing_loop_a.qcow2")),
		"backing_missing.qcow2":             mut(base, withBacking("does-not-exist.qcow2")),
		"encrypted_aes.qcow2":               mut(base, u32(32, 1)),
		"unknown_incompatible_bit.qcow2":    mut(base, u64(72, 1<<10)),
		"compression_type_unknown.qcow2":    mut(base, func(b []byte) { b[104] = 7; g.PutUint64(b[72:], incCompression) }),
		"data_file_bit_without_name.qcow2":  mut(base, u64(72, incDataFile)),
		"data_file_json.qcow2": mut(base, func(b []byte) {
			g.PutUint64(b[72:], incDataFile)
			name := "json:{}"
			g.PutUint32(b[112:], extDataFile)
			g.PutUint32(b[116:], uint32(len(name)))
			copy(b[120:], name+"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
		}),
		"l2_offset_misaligned.qcow2":   mut(base, u64(l.l1, uint64(l.l2+512)|flagCopied)),
		"l2_offset_past_eof.qcow2":     mut(base, u64(l.l1, uint64(1<<40)|flagCopied)),
		"l1_overlaps_header.qcow2":     mut(base, u64(40, 0)),
		"data_offset_misaligned.qcow2": mut(base, u64(l.l2, uint64(l.data+512)|flagCopied)),
		"data_offset_past_eof.qcow2":   mut(base, u64(l.l2, uint64(1<<45)|flagCopied)),
		"compressed_overrun.qcow2":     mut(base, u64(l.l2+4*8, flagCompressed|uint64(len(base)-100)|uint64(0xf)<<58)),
		"compressed_garbage.qcow2":     mut(base, u64(l.l2+4*8, flagCompressed|uint64(l.rt)|uint64(3)<<58)),
		"compressed_past_eof.qcow2":    mut(base, u64(l.l2+4*8, flagCompressed|uint64(1<<50))),
		"zstd_bad_frame.qcow2": mut(zstdBase, func(b []byte) {
			zl := parseLayout(b)
			g.PutUint64(b[zl.l2+4*8:], flagCompressed|uint64(zl.rt)|uint64(3)<<58)
		}),
		"snapshot_table_past_eof.qcow2":    mut(base, u64(64, 1<<40)),
		"snapshot_count_huge.qcow2":        mut(base, u32(60, 0x10000000)),
		"snapshot_extra_huge.qcow2":        mut(base, u32(int(l.snaps)+36, 0xffffffff)),
		"snapshot_l1_huge.qcow2":           mut(base, u32(int(l.snaps)+8, 0x7fffffff)),
		"snapshot_l1_past_eof.qcow2":       mut(base, u64(l.snaps, 1<<41)),
		"refblock_misaligned.qcow2":        mut(base, u64(l.rt, uint64(l.rb)+512)),
		"refblock_offset_negative.qcow2":   mut(base, u64(l.rt, 0x8000000000010000)),
		"snapshot_offset_negative.qcow2":   mut(base, u64(64, 0x8000000000010000)),
		"refblock_past_eof.qcow2":          mut(base, u64(l.rt, 1<<40)),
		"refcount_table_overlaps_l1.qcow2": mut(base, u64(48, uint64(l.l1))),
		"truncated_header.qcow2":           base[:50],
		"truncated_after_header.qcow2":     base[:4096],
	}
	return c
}

func TestGenerateHostile(t *testing.T) {
	if os.Getenv("GEMU_QCOW2_REGEN") == "" {
		t.Skip("set GEMU_QCOW2_REGEN=1 to rewrite testdata/hostile")
	}
	os.MkdirAll(hostileDir, 0o755)
	for name, b := range hostileCases(t) {
		if err := os.WriteFile(filepath.Join(hostileDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// probeImage opens and reads a whole image the way gemu-img would (info, map,
// convert, check) and returns the first error.
func probeImage(path string) (err error) {
	d, err := block.Open(path, block.OpenOptions{ReadOnly: true, Format: "qcow2"})
	if err != nil {
		return err
	}
	defer d.Close()
	if _, err := d.(block.Infoer).Info(); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	size := d.Size()
	for off := int64(0); off < size && off < 64<<20; off += int64(len(buf)) {
		n := min(int64(len(buf)), size-off)
		if _, err := d.ReadAt(buf[:n], off); err != nil {
			return err
		}
	}
	for off := int64(0); off < size && off < 64<<20; {
		st, err := d.BlockStatus(off, size-off)
		if err != nil {
			return err
		}
		if st.Length <= 0 {
			break
		}
		off += st.Length
	}
	r, err := d.(block.Checker).Check(block.RepairNone)
	if err != nil {
		return err
	}
	if r.Corruptions > 0 || r.CheckErrors > 0 {
		return errors.New("check found corruptions")
	}
	return nil
}

func TestHostileCorpus(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(hostileDir, "*.qcow2"))
	if len(files) < 30 {
		t.Fatalf("hostile corpus has %d files, want at least 30", len(files))
	}
	sort.Strings(files)
	for _, f := range files {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		err := probeImage(f)
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Errorf("%s: no error", filepath.Base(f))
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: multi-line error %q", filepath.Base(f), err)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 96<<20 {
			t.Errorf("%s: allocated %d MiB", filepath.Base(f), grew>>20)
		}
		t.Logf("%-40s %v", filepath.Base(f), err)
	}
}

// FuzzOpen mutates whole images (seeded with the corpus and valid images): opening,
// reading, mapping and checking must fail cleanly, never panic or run away.
func FuzzOpen(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(hostileDir, "*.qcow2"))
	for _, p := range files {
		if strings.HasPrefix(filepath.Base(p), "backing_") {
			continue
		}
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	// A small valid image keeps mutation fast (big seeds slow the fuzzer down).
	if b, err := os.ReadFile(filepath.Join(hostileDir, "..", "small.qcow2")); err == nil {
		f.Add(b)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4<<20 {
			return
		}
		p := filepath.Join(dir, "fuzz.qcow2")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		probeImage(p)
	})
}

// FuzzHeader feeds header and extension bytes straight to the parser.
func FuzzHeader(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(hostileDir, "*.qcow2"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b[:min(len(b), 4096)], int64(len(b)))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		parseHeader(b, size)
	})
}

// FuzzTables overlays fuzzed bytes on one metadata table (L1, L2, refcount table or
// block, snapshot table) of a small valid image and reads, maps and checks it.
func FuzzTables(f *testing.F) {
	base, err := os.ReadFile(filepath.Join(hostileDir, "..", "small.qcow2"))
	if err != nil {
		f.Skip("testdata/small.qcow2 missing")
	}
	l := parseLayout(base)
	targets := []int64{l.l1, l.l2, l.rt, l.rb, l.snaps}
	for i := range targets {
		f.Add(uint8(i), uint16(0), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		f.Add(uint8(i), uint16(8), []byte{0x80, 0, 0, 0, 0, 0, 0x02, 0x00})
		f.Add(uint8(i), uint16(16), []byte{0x40, 0, 0, 0, 0, 0, 0x10, 0x00})
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, which uint8, at uint16, data []byte) {
		b := append([]byte(nil), base...)
		off := targets[int(which)%len(targets)] + int64(at)%512
		if off >= int64(len(b)) || len(data) > 512 {
			return
		}
		copy(b[off:], data)
		p := filepath.Join(dir, "t.qcow2")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		probeImage(p)
	})
}

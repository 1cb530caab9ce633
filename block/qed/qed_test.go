package qed

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gemu/block"
	"gemu/block/internal/fmttest"
	_ "gemu/qcow2" // a backing file format
)

func TestMain(m *testing.M) {
	fmttest.HostileChild("qed")
	os.Exit(m.Run())
}

var qemuIO = []string{"write -P 0x11 0 100k", "write -P 0x22 1000k 3k", "write -z 3M 64k", "write -P 0x33 5M 1M"}

func TestReadQemuImages(t *testing.T) {
	fmttest.ReadMatrix(t, "qed", []fmttest.ReadCase{
		{Size: "7M", IO: qemuIO},
		{Size: "6000128", IO: qemuIO[:3]},
		{Opts: "cluster_size=4k", Size: "7M", IO: qemuIO},
		{Opts: "cluster_size=1M,table_size=16", Size: "7M", IO: qemuIO},
		{Size: "3G", IO: []string{"write -P 1 2G 1M", "write -P 2 3071M 1M", "write -P 3 0 4k"}},
	})
}

// TestBacking: a QED over a raw and over a qcow2 backing file reads, maps and shows
// its backing file as qemu-img does, and converts to raw equal to qemu-img's.
func TestBacking(t *testing.T) {
	fmttest.NeedQemu(t, "qemu-io")
	dir := t.TempDir()
	for _, bf := range []string{"raw", "qcow2"} {
		back := filepath.Join(dir, "back."+bf)
		fmttest.Run(t, dir, "qemu-img", "create", "-q", "-f", bf, back, "4M")
		fmttest.Run(t, dir, "qemu-io", "-f", bf, "-c", "write -P 0x61 0 4M", back)
		img := filepath.Join(dir, "top-"+bf+".qed")
		fmttest.Run(t, dir, "qemu-img", "create", "-q", "-f", "qed", "-b", "back."+bf, "-F", bf, img, "6M")
		fmttest.Run(t, dir, "qemu-io", "-f", "qed", "-c", "write -P 0x62 64k 64k", "-c", "write -z 1M 64k", img)
		f, _ := block.Lookup("qed")
		d, err := f.Open(img, block.OpenOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		ours := img + ".raw"
		fmttest.ToRaw(t, d, ours)
		fmttest.Run(t, dir, "qemu-img", "convert", "-O", "raw", img, img+".ref")
		fmttest.Run(t, dir, "qemu-img", "compare", "-f", "raw", "-F", "raw", img+".ref", ours)
		if a, b := fmttest.QemuMap(t, "qed", img), fmttest.OurMap(t, d); a != b {
			t.Errorf("%s map differs:\nqemu:\n%s\nours:\n%s", bf, a, b)
		}
		fmttest.CheckInfo(t, d, "qed", img)
		if _, err := d.WriteAt([]byte{1}, 0); err != block.ErrReadOnly {
			t.Errorf("write: %v, want ErrReadOnly", err)
		}
		d.Close()
	}
	if err := (Format{}).Create(filepath.Join(dir, "x.qed"), block.CreateOptions{Size: 1 << 20}); err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("create: %v, want a one-line refusal", err)
	}
}

func base(t testing.TB) []byte {
	return fmttest.QemuBuild(t, "qed", "2M", "cluster_size=4k", "write -P 0x41 0 8k", "write -z 8k 4k", "write -P 0x42 1M 4k")
}

func mut(fn func(b []byte) []byte) func(testing.TB) []byte {
	return func(t testing.TB) []byte { return fn(base(t)) }
}

func p32(off int, v uint32) func([]byte) []byte {
	return func(b []byte) []byte { le.PutUint32(b[off:], v); return b }
}

func p64(off int, v uint64) func([]byte) []byte {
	return func(b []byte) []byte { le.PutUint64(b[off:], v); return b }
}

// l2 is the offset of the first L2 table of base.
func l2(b []byte) int { return int(le.Uint64(b[le.Uint64(b[40:]):])) }

var hostileCases = toCases([]hc{
	{"valid", "", base},
	{"bad-magic", "not in QED format", mut(p32(0, 0x12345678))},
	{"unknown-feature", "Unsupported QED features", mut(p64(16, 1<<40))},
	{"cluster-size-0", "cluster size 0", mut(p32(4, 0))},
	{"cluster-size-huge", "cluster size 2147483648", mut(p32(4, 1<<31))},
	{"cluster-size-odd", "cluster size 65537", mut(p32(4, 65537))},
	{"table-size-0", "table size 0", mut(p32(8, 0))},
	{"table-size-32", "table size 32", mut(p32(8, 32))},
	{"header-size-huge", "header size", mut(p32(12, 0xffffffff))},
	{"image-size-odd", "not a multiple of 512", mut(p64(48, 1<<20+1))},
	{"image-size-2^63", "larger than its tables can map", mut(p64(48, 1<<63))},
	{"l1-past-eof", "L1 table offset", mut(p64(40, 1<<40))},
	{"l1-unaligned", "L1 table offset", mut(func(b []byte) []byte { le.PutUint64(b[40:], le.Uint64(b[40:])+8); return b })},
	{"l1-in-header", "L1 table offset", mut(p64(40, 0))},
	{"l2-past-eof", "L2 table offset", mut(func(b []byte) []byte { le.PutUint64(b[le.Uint64(b[40:]):], 1<<40); return b })},
	{"l2-overflow", "L2 table offset", mut(func(b []byte) []byte { le.PutUint64(b[le.Uint64(b[40:]):], ^uint64(0)&^0xffff); return b })},
	// An L1 entry naming the L1 table itself as its L2: its entries (L2 offsets) are
	// read as cluster offsets; nothing loops, check reports the aliasing.
	{"l2-is-l1", "", mut(func(b []byte) []byte { le.PutUint64(b[le.Uint64(b[40:]):], le.Uint64(b[40:])); return b })},
	{"l2-shared", "", mut(func(b []byte) []byte {
		l1 := le.Uint64(b[40:])
		le.PutUint64(b[l1+8:], le.Uint64(b[l1:]))
		le.PutUint64(b[48:], 1<<30)
		return b
	})},
	{"cluster-past-eof", "cluster offset", mut(func(b []byte) []byte { le.PutUint64(b[l2(b):], 1<<40); return b })},
	{"cluster-unaligned", "cluster offset", mut(func(b []byte) []byte { le.PutUint64(b[l2(b):], le.Uint64(b[l2(b):])+4); return b })},
	{"backing-protocol", "protocol", mut(func(b []byte) []byte {
		copy(b[64:], "nbd:localhost:10809")
		le.PutUint64(b[16:], featBacking)
		le.PutUint32(b[56:], 64)
		le.PutUint32(b[60:], 19)
		return b
	})},
	{"backing-name-outside-header", "outside the header", mut(func(b []byte) []byte {
		le.PutUint64(b[16:], featBacking)
		le.PutUint32(b[56:], le.Uint32(b[4:])*le.Uint32(b[12:])-6)
		le.PutUint32(b[60:], 100)
		return b
	})},
	{"backing-missing", "Could not open backing file", mut(func(b []byte) []byte {
		copy(b[64:], "does-not-exist.raw")
		le.PutUint64(b[16:], featBacking|featNoProbe)
		le.PutUint32(b[56:], 64)
		le.PutUint32(b[60:], 18)
		return b
	})},
	{"truncated", "header at offset 0", func(testing.TB) []byte { return []byte("QED\x00") }},
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

func TestHostileCorpus(t *testing.T) {
	fmttest.NeedQemu(t, "qemu-io") // the corpus is made from a qemu-img image
	fmttest.Hostile(t, "qed", hostileCases)
}

// A QED naming itself as backing file fails with one line (chain too deep), as the
// check of the L2 aliasing case reports its corruption.
func TestHostileExtra(t *testing.T) {
	fmttest.NeedQemu(t, "qemu-io")
	dir := t.TempDir()
	b := base(t)
	copy(b[64:], "self.qed")
	le.PutUint64(b[16:], featBacking)
	le.PutUint32(b[56:], 64)
	le.PutUint32(b[60:], 8)
	p := filepath.Join(dir, "self.qed")
	os.WriteFile(p, b, 0o644)
	err := fmttest.Exercise("qed", p)
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("self-backed image: %v", err)
	}
	for _, c := range hostileCases {
		p := filepath.Join(dir, c.Name)
		os.WriteFile(p, c.Make(t), 0o644)
		_, qerr := fmttest.RunErr("qemu-img", "info", "-f", "qed", p)
		if gerr := fmttest.Exercise("qed", p); qerr != nil && gerr == nil {
			t.Errorf("%s: qemu-img refuses it, gemu reads it", c.Name)
		}
		if c.Name == "l2-is-l1" {
			d := fmttest.Open(t, "qed", p, true)
			r, err := d.(block.Checker).Check(block.RepairNone)
			if err != nil || r.Corruptions == 0 {
				t.Errorf("check of an L2 aliasing the L1: %+v %v", r, err)
			}
			d.Close()
		}
	}
}

func FuzzOpen(f *testing.F) {
	if _, err := fmttest.RunErr("qemu-img", "--version"); err != nil {
		f.Skip("qemu-img not installed: no seed images")
	}
	fmttest.Seeds(f, hostileCases)
	f.Fuzz(func(t *testing.T, b []byte) { fmttest.FuzzImage(t, "qed", b) })
}

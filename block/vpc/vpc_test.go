package vpc

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"gemu/block"
	"gemu/block/internal/fmttest"
)

func TestMain(m *testing.M) {
	fmttest.HostileChild("vpc")
	os.Exit(m.Run())
}

var qemuIO = []string{"write -P 0x11 0 100k", "write -P 0x22 2000k 300k", "write -z 3M 64k", "write -P 0x33 5M 1M"}

func TestReadQemuImages(t *testing.T) {
	fmttest.ReadMatrix(t, "vpc", []fmttest.ReadCase{
		{Size: "7M", IO: qemuIO},
		{Size: "6000001", IO: qemuIO[:3]},
		{Opts: "subformat=fixed", Size: "7M", IO: qemuIO},
		{Opts: "subformat=fixed", Size: "6000001", IO: qemuIO[:3]},
		{Opts: "force_size=on", Size: "7000001", IO: qemuIO},
		{Opts: "subformat=fixed,force_size=on", Size: "7000001", IO: qemuIO},
		{Size: "3G", IO: []string{"write -P 1 2G 1M", "write -P 2 3000M 1M", "write -P 3 0 4k"}},
		{Size: "130G", IO: []string{"write -P 1 129G 1M"}},
	})
}

func TestWriteReadByQemu(t *testing.T) {
	fmttest.WriteMatrix(t, "vpc", []fmttest.WriteCase{
		{Size: 6<<20 + 7*512, Seed: 1},
		{Size: 9 << 20, Seed: 2, Opts: map[string]string{"subformat": "fixed"}},
		{Size: 5<<20 + 512, Seed: 3, Opts: map[string]string{"force_size": "on"}},
		{Size: 3<<20 + 1024, Seed: 4, Opts: map[string]string{"subformat": "fixed", "force_size": "on"}},
	})
}

func TestCreateLikeQemu(t *testing.T) {
	fmttest.CreateLikeQemu(t, "vpc", []string{"", "subformat=fixed", "force_size=on", "subformat=fixed,force_size=on"},
		[]string{"512", "1000001", "10M", "3G", "127G", "200G"}, false)
}

// TestGeometry: calculate_geometry as qemu-img applies it, for sizes on every branch.
func TestGeometry(t *testing.T) {
	fmttest.NeedQemu(t)
	dir := t.TempDir()
	for _, s := range []int64{1 << 20, 30 << 20, 300 << 20, 1 << 30, 8 << 30, 31 << 30, 32 << 30, 127 << 30} {
		p := filepath.Join(dir, "g.vpc")
		fmttest.Run(t, dir, "qemu-img", "create", "-q", "-f", "vpc", p, fmt.Sprint(s))
		b, _ := os.ReadFile(p)
		c, h, sec := be.Uint16(b[56:]), b[58], b[59]
		var total int64
		var gc uint16
		var gh, gs uint8
		for i := int64(0); min(maxGeometry, s/512) > total; i++ {
			gc, gh, gs = Geometry(min(maxGeometry, s/512) + i)
			total = int64(gc) * int64(gh) * int64(gs)
		}
		if c != gc || h != gh || sec != gs {
			t.Errorf("size %d: qemu CHS %d/%d/%d, ours %d/%d/%d", s, c, h, sec, gc, gh, gs)
		}
	}
}

// TestCreatorApps: images from other creators take their size from current_size or
// from the CHS geometry exactly as QEMU decides, and qemu-img info agrees.
func TestCreatorApps(t *testing.T) {
	fmttest.NeedQemu(t)
	dir := t.TempDir()
	for _, sub := range []string{"dynamic", "fixed"} {
		for _, app := range []string{"vpc ", "win ", "qemu", "qem2", "d2v ", "tap\x00", "CTXS", "xyz "} {
			b := fmttest.Build(t, "vpc", 10<<20, map[string]string{"subformat": sub}, nil)
			foot := b[:512]
			if sub == "fixed" {
				foot = b[len(b)-512:]
			}
			// current_size 10 MiB + 3 sectors, CHS from qemu's create (10514432).
			be.PutUint64(foot[48:], 10<<20+3*512)
			copy(foot[28:], app)
			be.PutUint32(foot[64:], checksum(foot, 64))
			if sub == "dynamic" {
				copy(b[len(b)-512:], foot)
			}
			p := filepath.Join(dir, fmt.Sprintf("%s-%x.vpc", sub, app))
			os.WriteFile(p, b, 0o644)
			d := fmttest.Open(t, "vpc", p, true)
			q := fmttest.QemuInfo(t, "vpc", p)
			if int64(q["virtual-size"].(float64)) != d.Size() {
				t.Errorf("%s %q: qemu size %v, ours %d", sub, app, q["virtual-size"], d.Size())
			}
			d.Close()
		}
	}
}

// TestProbeFixed: a fixed VHD (footer only) probes as vpc, not raw.
func TestProbeFixed(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f.vhd")
	os.WriteFile(p, fmttest.Build(t, "vpc", 1<<20, map[string]string{"subformat": "fixed"}, nil), 0o644)
	d, err := block.Open(p, block.OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Format() != "vpc" {
		t.Fatalf("fixed VHD probed as %s", d.Format())
	}
	r, err := block.Open(p, block.OpenOptions{ReadOnly: true, Format: "raw"})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
}

func base(t testing.TB) []byte {
	return fmttest.Build(t, "vpc", 6<<20, nil, func(d block.Driver) {
		d.WriteAt(bytes.Repeat([]byte("vhd "), 1024), 0)
		d.WriteAt(bytes.Repeat([]byte("blk2"), 1024), 4<<20)
	})
}

func fixedBase(t testing.TB) []byte {
	return fmttest.Build(t, "vpc", 1<<20, map[string]string{"subformat": "fixed"}, func(d block.Driver) {
		d.WriteAt(bytes.Repeat([]byte("fix "), 1024), 0)
	})
}

// refoot rewrites both footers' checksums after fn changed the one at 0.
func refoot(fn func(b []byte)) func(testing.TB) []byte {
	return func(t testing.TB) []byte {
		b := base(t)
		fn(b)
		be.PutUint32(b[64:], checksum(b[:512], 64))
		copy(b[len(b)-512:], b[:512])
		return b
	}
}

func dyn(fn func(b []byte)) func(testing.TB) []byte {
	return func(t testing.TB) []byte {
		b := base(t)
		fn(b[512:1536])
		be.PutUint32(b[512+36:], checksum(b[512:1536], 36))
		return b
	}
}

var hostileCases = toCases([]hc{
	{"valid", "", base},
	{"valid-fixed", "", fixedBase},
	{"bad-checksum", "Incorrect header checksum", func(t testing.TB) []byte { b := base(t); b[70] ^= 1; return b }},
	{"no-cookie", "not a valid VHD", func(t testing.TB) []byte { b := base(t); b[0] = 'x'; b[len(b)-512] = 'x'; return b }},
	{"differencing", "differencing", refoot(func(b []byte) { be.PutUint32(b[60:], typeDiff) })},
	{"unknown-type", "unknown disk type", refoot(func(b []byte) { be.PutUint32(b[60:], 9) })},
	{"size-2^63", "too large", refoot(func(b []byte) { be.PutUint64(b[48:], 1<<63); copy(b[28:], "win ") })},
	{"max-chs-huge-size", "too large", refoot(func(b []byte) {
		be.PutUint16(b[56:], 65535)
		b[58], b[59] = 16, 255
		be.PutUint64(b[48:], 3<<40)
	})},
	{"dyn-header-past-eof", "past the end of the file", refoot(func(b []byte) { be.PutUint64(b[16:], 1<<40) })},
	{"dyn-header-overflow", "past the end of the file", refoot(func(b []byte) { be.PutUint64(b[16:], ^uint64(0)-100) })},
	{"bad-sparse-cookie", "cxsparse", dyn(func(d []byte) { d[0] = 'X' })},
	{"block-size-0", "Invalid block size 0", dyn(func(d []byte) { be.PutUint32(d[32:], 0) })},
	{"block-size-odd", "Invalid block size", dyn(func(d []byte) { be.PutUint32(d[32:], 3<<20) })},
	{"block-size-huge", "Page table too small", dyn(func(d []byte) { be.PutUint32(d[32:], 1<<31); be.PutUint32(d[28:], 0) })},
	{"bat-too-small", "Page table too small", dyn(func(d []byte) { be.PutUint32(d[28:], 1) })},
	{"bat-entries-huge", "Max Table Entries too large", dyn(func(d []byte) { be.PutUint32(d[28:], 0xffffffff) })},
	{"bat-past-eof", "past the end of the file", dyn(func(d []byte) { be.PutUint64(d[16:], 1<<50) })},
	{"bat-entry-past-eof", "free_data_block_offset points after the end of file", func(t testing.TB) []byte {
		b := base(t)
		be.PutUint32(b[1536+4:], 0x7fffffff)
		return b
	}},
	{"bat-entry-into-header", "points into the image's headers", func(t testing.TB) []byte {
		b := base(t)
		be.PutUint32(b[1536+4:], 1)
		return b
	}},
	{"truncated", "File too small", func(testing.TB) []byte { return []byte("conectix") }},
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

func TestHostileCorpus(t *testing.T) { fmttest.Hostile(t, "vpc", hostileCases) }

// Images qemu-img refuses, gemu refuses too.
func TestHostileLikeQemu(t *testing.T) {
	fmttest.NeedQemu(t)
	dir := t.TempDir()
	for _, c := range hostileCases {
		p := filepath.Join(dir, c.Name)
		os.WriteFile(p, c.Make(t), 0o644)
		_, qerr := fmttest.RunErr("qemu-img", "info", "-f", "vpc", p)
		gerr := fmttest.Exercise("vpc", p)
		if qerr != nil && gerr == nil {
			t.Errorf("%s: qemu-img refuses it, gemu reads it", c.Name)
		}
	}
}

func FuzzOpen(f *testing.F) {
	fmttest.Seeds(f, hostileCases)
	f.Fuzz(func(t *testing.T, b []byte) { fmttest.FuzzImage(t, "vpc", b) })
}

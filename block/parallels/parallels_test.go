package parallels

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gemu/block"
	"gemu/block/internal/fmttest"
)

func TestMain(m *testing.M) {
	fmttest.HostileChild("parallels")
	os.Exit(m.Run())
}

var qemuIO = []string{"write -P 0x11 0 100k", "write -P 0x22 1000k 3k", "write -z 3M 64k", "write -P 0x33 5M 1M"}

func TestReadQemuImages(t *testing.T) {
	fmttest.ReadMatrix(t, "parallels", []fmttest.ReadCase{
		{Size: "7M", IO: qemuIO},
		{Size: "6000128", IO: qemuIO[:3]},
		{Opts: "cluster_size=64k", Size: "7M", IO: qemuIO},
		{Opts: "cluster_size=4M", Size: "9M", IO: qemuIO},
		{Size: "3G", IO: []string{"write -P 1 2G 1M", "write -P 2 3071M 1M", "write -P 3 0 4k"}},
	})
}

// TestOldMagic: a "WithoutFreeSpace" image, whose BAT counts sectors, reads as the
// same data as the "WithouFreSpacExt" image it was made from, and as qemu reads it.
func TestOldMagic(t *testing.T) {
	fmttest.NeedQemu(t, "qemu-io")
	b := base(t)
	m := parse(b)
	copy(b, magic1)
	for i := range int(m.h.BATEntries) {
		e := le.Uint32(b[headerLen+4*i:])
		le.PutUint32(b[headerLen+4*i:], e*m.h.Tracks)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "old.parallels")
	os.WriteFile(p, b, 0o644)
	d := fmttest.Open(t, "parallels", p, true)
	defer d.Close()
	fmttest.ToRaw(t, d, p+".ours")
	fmttest.Run(t, dir, "qemu-img", "convert", "-f", "parallels", "-O", "raw", p, p+".ref")
	fmttest.Run(t, dir, "qemu-img", "compare", "-f", "raw", "-F", "raw", p+".ref", p+".ours")
	if a, o := fmttest.QemuMap(t, "parallels", p), fmttest.OurMap(t, d); a != o {
		t.Errorf("map differs:\nqemu:\n%s\nours:\n%s", a, o)
	}
	if _, err := d.WriteAt([]byte{1}, 0); err != block.ErrReadOnly {
		t.Errorf("write: %v, want ErrReadOnly", err)
	}
	if err := (Format{}).Create(filepath.Join(dir, "x"), block.CreateOptions{Size: 1 << 20}); err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("create: %v, want a one-line refusal", err)
	}
}

func parse(b []byte) *Image {
	m := &Image{}
	decodeHeader(b, &m.h)
	return m
}

func base(t testing.TB) []byte {
	return fmttest.QemuBuild(t, "parallels", "1M", "cluster_size=16k", "write -P 0x41 0 16k", "write -P 0x42 256k 4k", "write -P 0x43 768k 16k")
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

var hostileCases = toCases([]hc{
	{"valid", "", base},
	{"bad-magic", "not in Parallels format", mut(func(b []byte) []byte { b[3] = 'x'; return b })},
	{"version-3", "not in Parallels format", mut(p32(16, 3))},
	{"tracks-0", "Zero sectors per track", mut(p32(28, 0))},
	{"tracks-huge", "Too big cluster", mut(p32(28, 0xffffffff))},
	{"bat-entries-huge", "Catalog too large", mut(p32(32, 0xffffffff))},
	{"bat-past-eof", "BAT of", mut(p32(32, 1<<28))},
	{"sectors-2^63", "too large", mut(p64(36, 1<<63))},
	{"sectors-2^54", "too large", mut(p64(36, 1<<54))},
	// More sectors than the BAT covers: the rest reads as zeroes (as QEMU 7.2 does).
	{"sectors-past-bat", "", mut(p64(36, 1<<17))},
	// A BAT entry past the end of the file reads as zeroes; check reports it.
	{"entry-past-eof", "", mut(func(b []byte) []byte { le.PutUint32(b[headerLen+4:], 0x7fffffff); return b })},
	{"entry-huge-old-magic", "", mut(func(b []byte) []byte {
		copy(b, magic1)
		le.PutUint32(b[headerLen:], 0xffffffff)
		return b
	})},
	{"in-use", "", mut(p32(44, inuseMagic))},
	{"data-off-0", "", mut(p32(48, 0))},
	{"data-off-huge", "", mut(p32(48, 0xffffffff))},
	{"bat-entries-0", "", mut(p32(32, 0))},
	{"truncated-bat", "BAT of", func(t testing.TB) []byte { return base(t)[:100] }},
	{"truncated", "header at offset 0", func(testing.TB) []byte { return []byte(magic2) }},
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
	fmttest.Hostile(t, "parallels", hostileCases)
}

// Images qemu-img refuses are refused; check agrees with qemu-img's on the odd ones.
func TestHostileLikeQemu(t *testing.T) {
	fmttest.NeedQemu(t, "qemu-io")
	dir := t.TempDir()
	for _, c := range hostileCases {
		p := filepath.Join(dir, c.Name)
		os.WriteFile(p, c.Make(t), 0o644)
		_, qerr := fmttest.RunErr("qemu-img", "info", "-f", "parallels", p)
		gerr := fmttest.Exercise("parallels", p)
		if qerr != nil && gerr == nil {
			t.Errorf("%s: qemu-img refuses it, gemu reads it", c.Name)
		}
		if c.Want == "" && gerr == nil && c.Name != "in-use" {
			d := fmttest.Open(t, "parallels", p, true)
			fmttest.CheckLikeQemu(t, d, "parallels", p)
			d.Close()
		}
	}
}

func FuzzOpen(f *testing.F) {
	if _, err := fmttest.RunErr("qemu-img", "--version"); err != nil {
		f.Skip("qemu-img not installed: no seed images")
	}
	fmttest.Seeds(f, hostileCases)
	f.Fuzz(func(t *testing.T, b []byte) { fmttest.FuzzImage(t, "parallels", b) })
}

package qcow1

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gemu/block"
	"gemu/block/internal/fmttest"
)

func TestMain(m *testing.M) {
	fmttest.HostileChild("qcow")
	os.Exit(m.Run())
}

var qemuIO = []string{"write -P 0x11 0 100k", "write -P 0x22 1000k 3k", "write -P 0x33 5M 1M"}

func TestReadQemuImages(t *testing.T) {
	fmttest.ReadMatrix(t, "qcow", []fmttest.ReadCase{
		{Size: "7M", IO: qemuIO},
		{Size: "6000001", IO: qemuIO[:2]},
		{Size: "3G", IO: []string{"write -P 1 2G 1M", "write -P 2 3071M 1M", "write -P 3 0 4k"}},
	})
}

// TestCompressedAndBacking: qemu-img convert -c makes deflated clusters, and a qcow
// over a raw backing file reads through to it; both read equal to qemu-img's raw.
func TestCompressedAndBacking(t *testing.T) {
	fmttest.NeedQemu(t, "qemu-io")
	dir := t.TempDir()
	raw := filepath.Join(dir, "src.raw")
	os.WriteFile(raw, fmttest.Patterned(3<<20+4096, 5), 0o644)
	c := filepath.Join(dir, "c.qcow")
	os.WriteFile(c, cbase(t), 0o644)
	b := filepath.Join(dir, "b.qcow")
	fmttest.Run(t, dir, "qemu-img", "create", "-q", "-f", "qcow", "-b", "src.raw", "-F", "raw", b)
	cd := fmttest.Open(t, "qcow", c, true)
	if a, o := fmttest.QemuMap(t, "qcow", c), fmttest.OurMap(t, cd); a != o {
		t.Errorf("compressed map differs:\nqemu:\n%s\nours:\n%s", a, o)
	}
	cd.Close()
	fmttest.Run(t, dir, "qemu-io", "-f", "qcow", "-c", "write -P 0x77 64k 8k", b)
	for _, img := range []string{c, b} {
		d := fmttest.Open(t, "qcow", img, true)
		fmttest.ToRaw(t, d, img+".ours")
		fmttest.Run(t, dir, "qemu-img", "convert", "-O", "raw", img, img+".ref")
		fmttest.Run(t, dir, "qemu-img", "compare", "-f", "raw", "-F", "raw", img+".ref", img+".ours")
		if img == b {
			if a, o := fmttest.QemuMap(t, "qcow", img), fmttest.OurMap(t, d); a != o {
				t.Errorf("map differs:\nqemu:\n%s\nours:\n%s", a, o)
			}
			fmttest.CheckInfo(t, d, "qcow", img)
		}
		if _, err := d.WriteAt([]byte{1}, 0); err != block.ErrReadOnly {
			t.Errorf("write: %v, want ErrReadOnly", err)
		}
		d.Close()
	}
	if err := (Format{}).Create(filepath.Join(dir, "x.qcow"), block.CreateOptions{Size: 1 << 20}); err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("create: %v, want a one-line refusal", err)
	}
}

func base(t testing.TB) []byte {
	return fmttest.QemuBuild(t, "qcow", "2M", "", "write -P 0x41 0 64k", "write -P 0x42 1M 4k")
}

// cbase has compressed clusters (qemu-io write -c takes one cluster at a time;
// qemu-img 7.2 convert -c -O qcow fails).
func cbase(t testing.TB) []byte {
	var io []string
	for i := range 24 {
		io = append(io, fmt.Sprintf("write -c -P 0x%02x %d 4k", 0x30+i, i*3*4096))
	}
	io = append(io, "write -P 0x99 1M 4k")
	return fmttest.QemuBuild(t, "qcow", "2M", "", io...)
}

func mut(base func(testing.TB) []byte, fn func(b []byte) []byte) func(testing.TB) []byte {
	return func(t testing.TB) []byte { return fn(base(t)) }
}

func p32(off int, v uint32) func([]byte) []byte {
	return func(b []byte) []byte { be.PutUint32(b[off:], v); return b }
}

func p64(off int, v uint64) func([]byte) []byte {
	return func(b []byte) []byte { be.PutUint64(b[off:], v); return b }
}

func p8(off int, v byte) func([]byte) []byte {
	return func(b []byte) []byte { b[off] = v; return b }
}

// l2 is the offset of the first L2 table.
func l2(b []byte) int { return int(be.Uint64(b[be.Uint64(b[40:]):])) }

// firstCompressed returns the offset of the first compressed L2 entry of b.
func firstCompressed(b []byte) int {
	t := l2(b)
	for i := 0; i < 512; i++ {
		if be.Uint64(b[t+8*i:])&oflagCompress != 0 {
			return t + 8*i
		}
	}
	return t
}

var hostileCases = toCases([]hc{
	{"valid", "", base},
	{"valid-compressed", "", cbase},
	{"version-2", "does not support qcow version 2", mut(base, p32(4, 2))},
	{"size-0", "too small", mut(base, p64(24, 0))},
	{"size-2^63", "too large", mut(base, p64(24, 1<<63))},
	{"size-l1-huge", "too large", mut(base, p64(24, 1<<61))},
	{"cluster-bits-0", "Cluster size", mut(base, p8(32, 0))},
	{"cluster-bits-40", "Cluster size", mut(base, p8(32, 40))},
	{"l2-bits-0", "L2 table size", mut(base, p8(33, 0))},
	{"l2-bits-40", "L2 table size", mut(base, p8(33, 40))},
	{"encrypted", "AES-encrypted", mut(base, p32(36, 1))},
	{"crypt-method-7", "invalid encryption method", mut(base, p32(36, 7))},
	{"l1-past-eof", "L1 table", mut(base, p64(40, 1<<40))},
	{"l1-overflow", "L1 table", mut(base, p64(40, ^uint64(0)-4))},
	{"l2-past-eof", "L2 table at", mut(base, func(b []byte) []byte { be.PutUint64(b[be.Uint64(b[40:]):], 1<<40); return b })},
	{"cluster-past-eof", "past the end of the file", mut(base, func(b []byte) []byte { be.PutUint64(b[l2(b):], 1<<50); return b })},
	{"compressed-garbage", "does not decompress", mut(cbase, func(b []byte) []byte {
		e := be.Uint64(b[firstCompressed(b):])
		off := e & (1<<(63-12) - 1)
		for i := range 64 {
			b[int(off)+i] = 0xff
		}
		return b
	})},
	{"compressed-past-eof", "compressed cluster", mut(cbase, func(b []byte) []byte {
		o := firstCompressed(b)
		e := be.Uint64(b[o:])
		be.PutUint64(b[o:], e&^(1<<(63-12)-1)|1<<40)
		return b
	})},
	{"backing-protocol", "protocol", mut(base, func(b []byte) []byte {
		b = append(b, "nbd:host:1"...)
		be.PutUint64(b[8:], uint64(len(b)-10))
		be.PutUint32(b[16:], 10)
		return b
	})},
	{"backing-name-huge", "too long", mut(base, func(b []byte) []byte {
		be.PutUint64(b[8:], 48)
		be.PutUint32(b[16:], 0xffffffff)
		return b
	})},
	{"truncated", "header at offset 0", func(testing.TB) []byte { return []byte("QFI\xfb\x00\x00\x00\x01") }},
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
	fmttest.NeedQemu(t, "qemu-io") // the corpus is made from qemu-img images
	fmttest.Hostile(t, "qcow", hostileCases)
}

func TestHostileLikeQemu(t *testing.T) {
	fmttest.NeedQemu(t, "qemu-io")
	dir := t.TempDir()
	for _, c := range hostileCases {
		p := filepath.Join(dir, c.Name)
		os.WriteFile(p, c.Make(t), 0o644)
		_, qerr := fmttest.RunErr("qemu-img", "info", "-f", "qcow", p)
		if gerr := fmttest.Exercise("qcow", p); qerr != nil && gerr == nil {
			t.Errorf("%s: qemu-img refuses it, gemu reads it", c.Name)
		}
	}
}

func FuzzOpen(f *testing.F) {
	if _, err := fmttest.RunErr("qemu-img", "--version"); err != nil {
		f.Skip("qemu-img not installed: no seed images")
	}
	fmttest.Seeds(f, hostileCases)
	f.Fuzz(func(t *testing.T, b []byte) { fmttest.FuzzImage(t, "qcow", b) })
}

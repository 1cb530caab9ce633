package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// mixedRaw writes size bytes of random, text and zero 64 KiB runs to path.
func mixedRaw(t *testing.T, path string, size int64, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 3))
	b := make([]byte, size)
	for off := int64(0); off < size; off += 65536 {
		end := min(off+65536, size)
		switch r.IntN(3) {
		case 1:
			for i := off; i < end; i++ {
				b[i] = byte(r.Uint32())
			}
		case 2:
			copy(b[off:end], bytes.Repeat([]byte("gemu-img formats "), 4096))
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFormatsInterop: for every subformat of vdi, vpc and vhdx, qemu-img creates and
// qemu-io writes an image that gemu-img info, map, check and convert -O raw read as
// qemu-img does (byte-identical raw output); gemu-img convert makes the format from
// raw data that qemu-img check finds clean and compare finds identical; and the
// read-only formats (qed, qcow, parallels) convert to raw identically and refuse
// create with one line.
func TestFormatsInterop(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	mixedRaw(t, filepath.Join(dir, "src.raw"), 5<<20+3*512, 9)
	io := []string{"-c", "write -P 0x11 0 100k", "-c", "write -P 0x22 2000k 300k", "-c", "write -z 3M 64k"}
	type fc struct {
		format, opts string
		writable     bool
	}
	for _, c := range []fc{
		{"vdi", "", true}, {"vdi", "static=on", true},
		{"vpc", "", true}, {"vpc", "subformat=fixed", true}, {"vpc", "force_size=on", true},
		{"vhdx", "", true}, {"vhdx", "subformat=fixed", true}, {"vhdx", "block_size=1M,block_state_zero=off", true},
		{"qed", "", false}, {"qcow", "", false}, {"parallels", "", false},
	} {
		name := c.format + strings.ReplaceAll(c.opts, ",", "_")
		img := name + ".img"
		args := []string{"create", "-q", "-f", c.format}
		if c.opts != "" {
			args = append(args, "-o", c.opts)
		}
		ok(t, qemu(t, dir, append(args, img, "5M")...), "qemu-img create "+name)
		q := runIn(t, dir, nil, "qemu-io", append(append([]string{"-f", c.format}, io...), img)...)
		ok(t, q, "qemu-io "+name)
		for _, cmd := range [][]string{{"info", "--output=json"}, {"map", "--output=json"}, {"check", "--output=json"}} {
			a := append(append([]string{}, cmd...), "-f", c.format, img)
			g, qq := gemu(t, dir, a...), qemu(t, dir, a...)
			if g.stdout != qq.stdout || g.code != qq.code {
				t.Errorf("%s %s: gemu-img (exit %d)\n%s%s\nqemu-img (exit %d)\n%s%s", name, cmd[0], g.code, g.stdout, g.stderr, qq.code, qq.stdout, qq.stderr)
			}
		}
		ok(t, gemu(t, dir, "convert", "-f", c.format, "-O", "raw", img, name+".g.raw"), "gemu-img convert "+name)
		ok(t, qemu(t, dir, "convert", "-f", c.format, "-O", "raw", img, name+".q.raw"), "qemu-img convert "+name)
		gb, _ := os.ReadFile(filepath.Join(dir, name+".g.raw"))
		qb, _ := os.ReadFile(filepath.Join(dir, name+".q.raw"))
		if !bytes.Equal(gb, qb) {
			t.Errorf("%s: gemu-img convert -O raw differs from qemu-img's (%d vs %d bytes)", name, len(gb), len(qb))
		}
		out := name + ".out"
		if !c.writable {
			g := gemu(t, dir, "create", "-f", c.format, out, "1M")
			if g.code != 1 || strings.Count(g.stderr, "\n") != 1 {
				t.Errorf("%s: create: exit %d %q, want one line and exit 1", name, g.code, g.stderr)
			}
			continue
		}
		a := []string{"convert", "-f", "raw", "-O", c.format}
		if c.opts != "" {
			a = append(a, "-o", c.opts)
		}
		ok(t, gemu(t, dir, append(a, "src.raw", out)...), "gemu-img convert -O "+name)
		if c.format != "vpc" {
			ok(t, qemu(t, dir, "check", "-f", c.format, out), "qemu-img check "+name)
		}
		ok(t, qemu(t, dir, "compare", "-f", c.format, "-F", "raw", out, "src.raw"), "qemu-img compare "+name)
		ok(t, gemu(t, dir, "compare", "-f", c.format, "-F", "raw", out, "src.raw"), "gemu-img compare "+name)
	}
}

package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Images of formats qemu-img knows and gemu does not implement are refused with one
// line and exit 1, never opened as raw; -f raw still opens them.
func TestProbeKnownUnsupported(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	type img struct{ file, format string }
	var imgs []img
	for _, c := range []struct {
		file, format string
		args         []string
	}{
		{"a.luks", "luks", []string{"--object", "secret,id=s0,data=x", "-o", "key-secret=s0"}},
	} {
		args := append(append([]string{"create", "-q", "-f", c.format}, c.args...), c.file, "1M")
		r := qemu(t, dir, args...)
		// LUKS key setup times PBKDF on CPU time, which a busy machine can fail
		// ("Unable to get accurate CPU usage"): try again.
		for i := 0; i < 10 && r.code != 0 && strings.Contains(r.stderr, "accurate CPU usage"); i++ {
			r = qemu(t, dir, args...)
		}
		ok(t, r, "qemu-img create -f "+c.format)
		imgs = append(imgs, img{c.file, c.format})
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// DMG: a koly trailer in the last 512 bytes (not named .dmg).
	dmg := make([]byte, 64<<10)
	copy(dmg[len(dmg)-512:], "koly")
	binary.BigEndian.PutUint32(dmg[len(dmg)-508:], 4)
	write("apple.img", dmg)
	imgs = append(imgs, img{"apple.img", "dmg"})
	// cloop V2.0 header.
	cl := make([]byte, 4096)
	copy(cl, "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n")
	write("a.cloop", cl)
	imgs = append(imgs, img{"a.cloop", "cloop"})
	// bochs growing redolog.
	bo := make([]byte, 4096)
	copy(bo, "Bochs Virtual HD Image")
	copy(bo[32:], "Redolog")
	copy(bo[48:], "Growing")
	binary.LittleEndian.PutUint32(bo[64:], 0x00020000)
	binary.LittleEndian.PutUint32(bo[68:], 512)
	write("a.bochs", bo)
	imgs = append(imgs, img{"a.bochs", "bochs"})

	for _, im := range imgs {
		// qemu-img must recognise the crafted and created images as that format
		// (except the DMG without its .dmg name, which QEMU probes as raw).
		if im.file != "apple.img" {
			q := qemu(t, dir, "info", "--output=json", im.file)
			if im.format != "luks" && im.format != "bochs" && im.format != "cloop" && !strings.Contains(q.stdout, `"format": "`+im.format+`"`) {
				t.Errorf("qemu-img does not see %s as %s: %s %s", im.file, im.format, q.stdout, q.stderr)
			}
		}
		for _, cmd := range [][]string{{"info", im.file}, {"check", im.file}, {"map", im.file}, {"convert", "-O", "raw", im.file, "out.raw"}, {"compare", im.file, im.file}} {
			g := gemu(t, dir, cmd...)
			want := "gemu-img: Could not open '" + im.file + "': Image format '" + im.format + "' is not supported by gemu (use -f raw, or format=raw on a drive, to open it as raw)\n"
			code := 1
			if cmd[0] == "compare" {
				code = 2 // compare's "error" status, as qemu-img's
			}
			if g.code != code || g.stderr != want {
				t.Errorf("gemu-img %v: exit %d, stderr %q, want exit %d and %q", cmd, g.code, g.stderr, code, want)
			}
		}
		g := gemu(t, dir, "info", "-f", im.format, im.file)
		if want := "gemu-img: Could not open '" + im.file + "': Image format '" + im.format + "' is not supported by gemu\n"; g.code != 1 || g.stderr != want {
			t.Errorf("gemu-img info -f %s: exit %d, stderr %q, want %q", im.format, g.code, g.stderr, want)
		}
		g = gemu(t, dir, "info", "-f", "raw", im.file)
		if g.code != 0 || !strings.Contains(g.stdout, "file format: raw") {
			t.Errorf("gemu-img info -f raw %s: exit %d %q %q", im.file, g.code, g.stdout, g.stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "out.raw")); err == nil {
		t.Errorf("convert wrote a target from an unsupported source")
	}
}

// Images of the formats gemu implements besides qcow2 and vmdk probe as their format
// (a fixed VHD, footer only, too: QEMU probes it as raw), with qemu-img's virtual
// size, and `create -o help` prints qemu-img's option list for each.
func TestProbeImplemented(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	for _, c := range []struct {
		file, format string
		args         []string
	}{
		{"a.vdi", "vdi", nil},
		{"a.vpc", "vpc", nil},
		{"fixed.vhd", "vpc", []string{"-o", "subformat=fixed"}},
		{"a.vhdx", "vhdx", nil},
		{"a.qed", "qed", nil},
		{"a.qcow", "qcow", nil},
		{"a.hds", "parallels", nil},
	} {
		ok(t, qemu(t, dir, append(append([]string{"create", "-q", "-f", c.format}, c.args...), c.file, "3M")...), "qemu-img create -f "+c.format)
		g := gemu(t, dir, "info", "--output=json", c.file)
		q := qemu(t, dir, "info", "--output=json", "-f", c.format, c.file)
		if g.code != 0 || !strings.Contains(g.stdout, `"format": "`+c.format+`"`) {
			t.Errorf("gemu-img info %s: exit %d %s %s", c.file, g.code, g.stdout, g.stderr)
		}
		vs := func(s string) string {
			i := strings.Index(s, `"virtual-size":`)
			if i < 0 {
				return ""
			}
			return strings.SplitN(s[i:], ",", 2)[0]
		}
		if vs(g.stdout) != vs(q.stdout) || vs(q.stdout) == "" {
			t.Errorf("%s: gemu %s, qemu %s", c.file, vs(g.stdout), vs(q.stdout))
		}
		gh := gemu(t, dir, "create", "-f", c.format, "-o", "help", "x")
		qh := qemu(t, dir, "create", "-f", c.format, "-o", "help", "x")
		if gh.code != 0 || gh.stdout != qh.stdout {
			t.Errorf("create -f %s -o help: exit %d\n%s\nwant\n%s", c.format, gh.code, gh.stdout, qh.stdout)
		}
	}
}

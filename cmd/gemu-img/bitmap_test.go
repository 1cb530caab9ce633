package main

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"gemu/block"
)

// gemu-img bitmap against qemu-img bitmap: the same argument lists on copies of one
// image give the same exit status, the same message (qemu-img's generated node names
// aside) and the same bitmaps in qemu-img info; qemu-img check stays clean.

// qemu-img names the image by a generated node name (#block123), gemu-img by its file.
var nodeName = regexp.MustCompile(`(bitmaps to |persistent in ')[^:']+`)

func normErr(s string) string {
	s = strings.ReplaceAll(s, "gemu-img", "qemu-img")
	return nodeName.ReplaceAllString(s, "${1}NODE")
}

func TestBitmapCommandMatchesQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "base.qcow2", "64M"), "create")
	ok(t, qemu(t, dir, "bitmap", "--add", "base.qcow2", "b1"), "add")
	ok(t, qemu(t, dir, "bitmap", "--add", "-g", "128k", "--disable", "base.qcow2", "b2"), "add")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "src.qcow2", "64M"), "create")
	ok(t, qemu(t, dir, "bitmap", "--add", "-g", "1M", "src.qcow2", "s"), "add")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "-o", "compat=0.10", "v2.qcow2", "1M"), "create")
	ok(t, qemu(t, dir, "create", "-q", "-f", "raw", "raw.img", "1M"), "create")
	needQemuIO(t)
	runIn(t, dir, nil, "qemu-io", "-f", "qcow2", "-c", "write 0 64k", "-c", "write 7M 4k", "base.qcow2")
	runIn(t, dir, nil, "qemu-io", "-f", "qcow2", "-c", "write 30M 64k", "src.qcow2")
	base, err := os.ReadFile(filepath.Join(dir, "base.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	cases := [][]string{
		{"--add", "IMG", "new"},
		{"--add", "-g", "4k", "--disable", "IMG", "new"},
		{"--add", "-g", "0", "IMG", "new"},
		{"--add", "--granularity=2M", "IMG", "new"},
		{"--add", "IMG", "b1"},
		{"--add", "IMG", ""},
		{"--add", "-g", "1000", "IMG", "x"},
		{"--add", "-g", "256", "IMG", "x"},
		{"--add", "-g", "4G", "IMG", "x"},
		{"--remove", "IMG", "b1"},
		{"--remove", "IMG", "nob"},
		{"--clear", "IMG", "b1"},
		{"--clear", "IMG", "nob"},
		{"--disable", "IMG", "b1"},
		{"--enable", "IMG", "b2"},
		{"--enable", "--add", "IMG", "x"},
		{"--add", "--merge", "b1", "IMG", "x"},
		{"--merge", "b2", "IMG", "b1"},
		{"--merge", "nob", "IMG", "b1"},
		{"--merge", "b1", "IMG", "nob"},
		{"--add", "-g", "512", "--merge", "s", "-b", "src.qcow2", "-F", "qcow2", "IMG", "m"},
		{"--merge", "s", "-b", "src.qcow2", "IMG", "b2"},
		{"--merge", "s", "-b", "nofile", "IMG", "b2"},
		{"--remove", "--add", "--clear", "--disable", "IMG", "b1"},
		{"--add", "--remove", "--remove", "IMG", "z"},
		{"--remove", "-g", "512", "IMG", "x"},
		{"--merge", "b1", "-F", "qcow2", "IMG", "x"},
		{"--remove", "-b", "src.qcow2", "IMG", "x"},
		{"IMG", "x"},
		{"--remove", "IMG"},
		{"--remove", "IMG", "x", "y"},
		{"--add", "raw.img", "x"},
		{"--add", "-f", "raw", "raw.img", "x"},
		{"--add", "v2.qcow2", "x"},
		{"--add", "-f", "raw", "IMG", "x"},
		{"-U", "--add", "IMG", "x"},
		{"-q", "--add", "IMG", "x"},
		{"--add", "--granularity", "IMG"},
	}
	for _, c := range cases {
		var got, want result
		var gInfo, wInfo any
		for i, run := range []func(*testing.T, string, ...string) result{qemu, gemu} {
			img := []string{"q.qcow2", "g.qcow2"}[i]
			if err := os.WriteFile(filepath.Join(dir, img), base, 0o644); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"bitmap"}, c...)
			for j := range args {
				if args[j] == "IMG" {
					args[j] = img
				}
			}
			r := run(t, dir, args...)
			r.stderr = strings.ReplaceAll(normErr(r.stderr), img, "IMG")
			chk := qemu(t, dir, "check", img)
			if chk.code != 0 {
				t.Errorf("%v: qemu-img check after %s: %s%s", c, []string{"qemu-img", "gemu-img"}[i], chk.stdout, chk.stderr)
			}
			info := jsonOf(t, ok(t, qemu(t, dir, "info", "--output=json", img), "info").stdout)
			fs := info.(map[string]any)["format-specific"]
			if i == 0 {
				want, wInfo = r, fs
			} else {
				got, gInfo = r, fs
			}
		}
		if got.code != want.code {
			t.Errorf("%v: exit %d, qemu-img %d (%q / %q)", c, got.code, want.code, got.stderr, want.stderr)
		}
		if got.stderr != want.stderr && !strings.Contains(want.stderr, "Invalid granularity") {
			t.Errorf("%v: stderr\n got %q\nwant %q", c, got.stderr, want.stderr)
		}
		if !reflect.DeepEqual(gInfo, wInfo) {
			t.Errorf("%v: info\n got %v\nwant %v", c, gInfo, wInfo)
		}
	}
	// --object and --image-opts are refused with one line.
	for _, args := range [][]string{{"bitmap", "--object", "secret,id=s,data=x", "--add", "g.qcow2", "x"},
		{"bitmap", "--image-opts", "--add", "driver=qcow2,file.filename=g.qcow2", "x"}} {
		r := gemu(t, dir, args...)
		if r.code != 1 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
}

func needQemuIO(t *testing.T) {
	t.Helper()
	r := runIn(t, t.TempDir(), nil, "sh", "-c", "command -v qemu-io")
	if r.code != 0 {
		t.Skip("qemu-io not installed: no oracle")
	}
}

func bitmapBits(t *testing.T, path string) map[string][]byte {
	t.Helper()
	d, err := block.Open(path, block.OpenOptions{ReadOnly: true, Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	bm := d.(block.Bitmapper)
	m := map[string][]byte{}
	for _, b := range bm.Bitmaps() {
		if b.InUse {
			continue
		}
		data, err := bm.BitmapData(b.Name)
		if err != nil {
			t.Fatal(err)
		}
		m[b.Name] = data
	}
	return m
}

// TestConvertBitmapsSnapshotsMeasure: convert --bitmaps / --skip-broken-bitmaps,
// convert -l and measure (-l, "bitmaps size") against qemu-img: exit status, messages,
// measure output, and targets that qemu-img checks clean, shows the same bitmaps for,
// holds the same bits in, and compares equal to qemu-img's own.
func TestConvertBitmapsSnapshotsMeasure(t *testing.T) {
	needQemu(t)
	needQemuIO(t)
	dir := t.TempDir()
	q := func(args ...string) { ok(t, qemu(t, dir, args...), strings.Join(args, " ")) }
	io := func(img string, cmds ...string) {
		args := []string{"-f", "qcow2"}
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		if r := runIn(t, dir, nil, "qemu-io", append(args, img)...); r.code != 0 {
			t.Fatalf("qemu-io: %s", r.stderr)
		}
	}
	q("create", "-q", "-f", "qcow2", "bm.qcow2", "64M")
	q("bitmap", "--add", "bm.qcow2", "b1")
	q("bitmap", "--add", "-g", "128k", "--disable", "bm.qcow2", "b2")
	q("bitmap", "--add", "-g", "8k", "bm.qcow2", "b3")
	io("bm.qcow2", "write -P 1 0 64k", "write -P 2 5M 1k", "write -P 3 63M 1M")
	// broken.qcow2 holds an inconsistent (in-use) bitmap: a writer that never closed.
	// It is the file as a crash leaves it while gemu writes (bitmaps marked in use),
	// plus a consistent bitmap qemu-img adds afterwards.
	b, _ := os.ReadFile(filepath.Join(dir, "bm.qcow2"))
	os.WriteFile(filepath.Join(dir, "writing.qcow2"), b, 0o644)
	img, err := block.Open(filepath.Join(dir, "writing.qcow2"), block.OpenOptions{Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt([]byte{1}, 0); err != nil {
		t.Fatal(err)
	}
	crashed, _ := os.ReadFile(filepath.Join(dir, "writing.qcow2"))
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "broken.qcow2"), crashed, 0o644)
	if !strings.Contains(ok(t, qemu(t, dir, "info", "broken.qcow2"), "info").stdout, "in-use") {
		t.Fatal("bitmaps of an image being written are not in use on disk")
	}
	q("bitmap", "--add", "broken.qcow2", "fresh")
	io("broken.qcow2", "write 1M 4k")
	q("create", "-q", "-f", "qcow2", "snap.qcow2", "16M")
	io("snap.qcow2", "write -P 1 0 1M")
	q("snapshot", "-c", "s1", "snap.qcow2")
	io("snap.qcow2", "write -P 2 0 2M")
	q("snapshot", "-c", "s2", "snap.qcow2")
	io("snap.qcow2", "write -P 3 4M 1M")
	q("create", "-q", "-f", "qcow2", "-o", "compat=0.10", "v2.qcow2", "1M")
	q("create", "-q", "-f", "raw", "raw.img", "1M")

	type tc struct {
		args   []string
		target bool // compare the created target too
	}
	cases := []tc{
		{[]string{"convert", "--bitmaps", "-O", "qcow2", "bm.qcow2", "OUT"}, true},
		{[]string{"convert", "--bitmaps", "-O", "qcow2", "-o", "cluster_size=4k", "bm.qcow2", "OUT"}, true},
		{[]string{"convert", "--bitmaps", "-c", "-O", "qcow2", "bm.qcow2", "OUT"}, true},
		{[]string{"convert", "--bitmaps", "-O", "raw", "bm.qcow2", "OUT"}, false},
		{[]string{"convert", "--bitmaps", "-O", "qcow2", "-o", "compat=0.10", "bm.qcow2", "OUT"}, false},
		{[]string{"convert", "--skip-broken-bitmaps", "-O", "qcow2", "bm.qcow2", "OUT"}, false},
		{[]string{"convert", "--bitmaps", "-O", "qcow2", "bm.qcow2", "snap.qcow2", "OUT"}, false},
		{[]string{"convert", "--bitmaps", "-O", "qcow2", "-f", "raw", "raw.img", "OUT"}, false},
		{[]string{"convert", "--bitmaps", "-O", "qcow2", "v2.qcow2", "OUT"}, false},
		{[]string{"convert", "--bitmaps", "-O", "qcow2", "broken.qcow2", "OUT"}, false},
		{[]string{"convert", "--bitmaps", "--skip-broken-bitmaps", "-O", "qcow2", "broken.qcow2", "OUT"}, true},
		{[]string{"convert", "-O", "qcow2", "-l", "s1", "snap.qcow2", "OUT"}, true},
		{[]string{"convert", "-O", "raw", "-l", "2", "snap.qcow2", "OUT"}, true},
		{[]string{"convert", "-O", "raw", "-l", "snapshot.name=s2", "snap.qcow2", "OUT"}, true},
		{[]string{"convert", "-O", "raw", "-l", "snapshot.id=1,snapshot.name=s1", "snap.qcow2", "OUT"}, true},
		{[]string{"convert", "-O", "raw", "-l", "snapshot.id=1,snapshot.name=s2", "snap.qcow2", "OUT"}, false},
		{[]string{"convert", "-O", "raw", "-l", "snapshot.id=", "snap.qcow2", "OUT"}, false},
		{[]string{"convert", "-O", "raw", "-l", "snapshot.foo=1", "snap.qcow2", "OUT"}, false},
		{[]string{"convert", "-O", "raw", "-l", "nope", "snap.qcow2", "OUT"}, false},
		{[]string{"convert", "-O", "raw", "-l", "s1", "snap.qcow2", "bm.qcow2", "OUT"}, false},
		{[]string{"convert", "-O", "raw", "-l", "s1", "-f", "raw", "raw.img", "OUT"}, false},
		{[]string{"convert", "-O", "raw", "-s", "s1", "snap.qcow2", "OUT"}, false},
		{[]string{"info", "bm.qcow2"}, false},
		{[]string{"info", "--output=json", "bm.qcow2"}, false},
		{[]string{"info", "broken.qcow2"}, false},
		{[]string{"info", "--output=json", "broken.qcow2"}, false},
		{[]string{"check", "bm.qcow2"}, false},
		{[]string{"check", "--output=json", "bm.qcow2"}, false},
		{[]string{"check", "--output=json", "broken.qcow2"}, false},
		{[]string{"measure", "-O", "qcow2", "bm.qcow2"}, false},
		{[]string{"measure", "--output=json", "-O", "qcow2", "bm.qcow2"}, false},
		{[]string{"measure", "-O", "qcow2", "-o", "cluster_size=4k", "bm.qcow2"}, false},
		{[]string{"measure", "-O", "qcow2", "-o", "compat=0.10", "bm.qcow2"}, false},
		{[]string{"measure", "-O", "qcow2", "v2.qcow2"}, false},
		{[]string{"measure", "-O", "raw", "bm.qcow2"}, false},
		{[]string{"measure", "-O", "qcow2", "broken.qcow2"}, false},
		{[]string{"measure", "-O", "qcow2", "-l", "s1", "snap.qcow2"}, false},
		{[]string{"measure", "-O", "qcow2", "-l", "snapshot.name=s1,snapshot.name=s2", "snap.qcow2"}, false},
		{[]string{"measure", "-O", "qcow2", "-l", "nope", "snap.qcow2"}, false},
		{[]string{"measure", "-O", "qcow2", "-l", "s1", "--size", "1G"}, false},
		{[]string{"measure", "-O", "qcow2", "-f", "qcow2"}, false},
		{[]string{"measure", "-O", "qcow2", "-l", "s1", "-f", "raw", "raw.img"}, false},
	}
	for _, c := range cases {
		var res [2]result
		for i, run := range []func(*testing.T, string, ...string) result{qemu, gemu} {
			out := []string{"q.out", "g.out"}[i]
			os.Remove(filepath.Join(dir, out))
			args := append([]string(nil), c.args...)
			for j := range args {
				if args[j] == "OUT" {
					args[j] = out
				}
			}
			r := run(t, dir, args...)
			r.stderr = strings.ReplaceAll(strings.ReplaceAll(r.stderr, "gemu-img", "qemu-img"), out, "OUT")
			res[i] = r
		}
		if res[1].code != res[0].code || res[1].stderr != res[0].stderr || res[1].stdout != res[0].stdout {
			t.Errorf("%v:\n got %d %q %q\nwant %d %q %q", c.args, res[1].code, res[1].stdout, res[1].stderr,
				res[0].code, res[0].stdout, res[0].stderr)
			continue
		}
		if !c.target || res[0].code != 0 {
			continue
		}
		ok(t, qemu(t, dir, "compare", "q.out", "g.out"), "compare")
		if c.args[2] == "raw" || c.args[3] == "raw" {
			continue
		}
		if r := qemu(t, dir, "check", "g.out"); r.code != 0 {
			t.Errorf("%v: qemu-img check: %s", c.args, r.stdout)
		}
		qi := jsonOf(t, ok(t, qemu(t, dir, "info", "--output=json", "q.out"), "info").stdout).(map[string]any)
		gi := jsonOf(t, ok(t, qemu(t, dir, "info", "--output=json", "g.out"), "info").stdout).(map[string]any)
		if !reflect.DeepEqual(gi["format-specific"], qi["format-specific"]) {
			t.Errorf("%v: info\n got %v\nwant %v", c.args, gi["format-specific"], qi["format-specific"])
		}
		if g, w := bitmapBits(t, filepath.Join(dir, "g.out")), bitmapBits(t, filepath.Join(dir, "q.out")); !reflect.DeepEqual(g, w) {
			t.Errorf("%v: bitmap bits differ from qemu-img's copy", c.args)
		}
	}
}

// TestCommitBitmaps: commit into a base with bitmaps dirties the base's enabled
// bitmaps and leaves the emptied top's as they were, as qemu-img commit does.
func TestCommitBitmaps(t *testing.T) {
	needQemu(t)
	needQemuIO(t)
	dir := t.TempDir()
	for _, sub := range []string{"q", "g"} {
		d := filepath.Join(dir, sub)
		os.Mkdir(d, 0o755)
		ok(t, qemu(t, d, "create", "-q", "-f", "qcow2", "base.qcow2", "32M"), "create")
		ok(t, qemu(t, d, "bitmap", "--add", "base.qcow2", "bb"), "bitmap")
		ok(t, qemu(t, d, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2"), "create")
		ok(t, qemu(t, d, "bitmap", "--add", "-g", "4k", "top.qcow2", "tb"), "bitmap")
		if r := runIn(t, d, nil, "qemu-io", "-f", "qcow2", "-c", "write 1M 64k", "-c", "write 20M 4k", "top.qcow2"); r.code != 0 {
			t.Fatal(r.stderr)
		}
	}
	ok(t, qemu(t, filepath.Join(dir, "q"), "commit", "-q", "top.qcow2"), "commit")
	ok(t, gemu(t, filepath.Join(dir, "g"), "commit", "-q", "top.qcow2"), "commit")
	for _, img := range []string{"base.qcow2", "top.qcow2"} {
		q, g := filepath.Join(dir, "q", img), filepath.Join(dir, "g", img)
		if r := qemu(t, dir, "check", g); r.code != 0 {
			t.Errorf("%s: qemu-img check: %s", img, r.stdout)
		}
		qi := jsonOf(t, ok(t, qemu(t, dir, "info", "--output=json", q), "info").stdout).(map[string]any)
		gi := jsonOf(t, ok(t, qemu(t, dir, "info", "--output=json", g), "info").stdout).(map[string]any)
		if !reflect.DeepEqual(gi["format-specific"], qi["format-specific"]) {
			t.Errorf("%s: info\n got %v\nwant %v", img, gi["format-specific"], qi["format-specific"])
		}
		if gb, qb := bitmapBits(t, g), bitmapBits(t, q); !reflect.DeepEqual(gb, qb) {
			t.Errorf("%s: bitmap bits differ from qemu-img commit's", img)
		}
	}
}

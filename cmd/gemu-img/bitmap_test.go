package main

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// gemu-img bitmap against qemu-img bitmap: the same argument lists on copies of one
// image give the same exit status, the same message (qemu-img's generated node names
// aside) and the same bitmaps in qemu-img info; qemu-img check stays clean.

// qemu-img names the image by a generated node name (#block123), gemu-img by its file.
var nodeName = regexp.MustCompile(`(bitmaps to |persistent in ')[^:']+`)

func normErr(s string) string {
	s = strings.ReplaceAll(s, "gemu-img:", "qemu-img:")
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

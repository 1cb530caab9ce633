package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// hostileLimit is the address-space limit (prlimit --as) hostile images run under: an
// image that makes gemu-img allocate by a size field it read would die here instead of
// succeeding, and the test fails.
const hostileLimit = "1073741824"

// Every crafted image of the drivers' hostile corpora is refused (or read) with a
// one-line message and bounded memory: no panic, no runtime fatal error, no OOM.
func TestHostileImages(t *testing.T) {
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("prlimit (util-linux) is not installed: cannot bound memory")
	}
	total := 0
	for _, f := range hostileFiles(t) {
		// Work on a copy: check -r and convert must not touch the corpus, and a
		// descriptor's relative extents resolve inside the copy's folder only.
		tmp := t.TempDir()
		img := filepath.Join(tmp, filepath.Base(f))
		copyFile(t, f, img)
		total++
		failed := false
		for _, args := range [][]string{
			{"info", img},
			{"info", "--output=json", "--backing-chain", img},
			{"check", img},
			{"map", "--output=json", img},
			{"convert", "-O", "raw", img, filepath.Join(tmp, "out.raw")},
			{"compare", img, img},
		} {
			r := runIn(t, tmp, nil, "prlimit", append([]string{"--as=" + hostileLimit, gemuImg}, args...)...)
			if strings.Contains(r.stderr, "fatal error") || strings.Contains(r.stderr, "out of memory") || r.code < 0 || r.code > 63 {
				t.Errorf("%s %v: died (exit %d): %.300s", filepath.Base(f), args[0], r.code, r.stderr)
				continue
			}
			if r.code != 0 && args[0] != "check" && args[0] != "compare" {
				failed = true
				errLine(t, r, filepath.Base(f)+" "+strings.Join(args[:len(args)-1], " "))
			}
		}
		if !failed {
			t.Logf("%s: every command succeeded (image is odd but readable)", filepath.Base(f))
		}
	}
	if total == 0 {
		t.Skip("no hostile corpus present yet (qcow2/testdata/hostile, block/vmdk/testdata/hostile)")
	}
}

var hostileCorpora = []string{"../../qcow2/testdata/hostile", "../../block/vmdk/testdata/hostile",
	"../../block/vdi/testdata/hostile", "../../block/vpc/testdata/hostile", "../../block/vhdx/testdata/hostile",
	"../../block/qed/testdata/hostile", "../../block/qcow1/testdata/hostile", "../../block/parallels/testdata/hostile"}

func hostileFiles(t *testing.T) []string {
	var out []string
	for _, dir := range hostileCorpora {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		if len(files) == 0 {
			t.Logf("corpus %s is missing or empty", dir)
		}
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil && fi.Mode().IsRegular() {
				out = append(out, f)
			}
		}
	}
	return out
}

// An image qemu-img refuses to open must not be opened by gemu-img either (in
// particular not silently as raw): qemu-img is the oracle for what is acceptable.
// Images on which qemu-img itself crashes are left out.
func TestHostileRefusedLikeQemu(t *testing.T) {
	needQemu(t)
	files := hostileFiles(t)
	if len(files) == 0 {
		t.Skip("no hostile corpus present yet")
	}
	for _, f := range files {
		tmp := t.TempDir()
		img := filepath.Join(tmp, filepath.Base(f))
		copyFile(t, f, img)
		q := runIn(t, tmp, nil, "qemu-img", "info", img)
		g := runIn(t, tmp, nil, gemuImg, "info", img)
		qemuCrashed := q.code < 0 || q.code > 2 || strings.Contains(q.stderr, "Assertion")
		if q.code != 0 && !qemuCrashed && g.code == 0 {
			t.Errorf("%s: qemu-img refuses it (%s) but gemu-img info accepts it", filepath.Base(f), strings.TrimSpace(q.stderr))
		}
	}
}

package main

import (
	"encoding/binary"
	"fmt"
	"gemu/block"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func qemuIO(t *testing.T, dir, img, fmt string, cmds ...string) {
	t.Helper()
	args := []string{"-f", fmt}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	ok(t, runQemuIO(t, dir, append(args, img)...), "qemu-io "+strings.Join(cmds, "; "))
}

// view returns the guest view of img as qemu-img reads it (the oracle).
func view(t *testing.T, dir, img string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "view.raw")
	ok(t, qemu(t, dir, "convert", "-O", "raw", img, out), "qemu-img convert "+img)
	return readFile(t, out)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if err := os.WriteFile(to, readFile(t, from), 0o644); err != nil {
		t.Fatal(err)
	}
}

// chain builds base.raw <- mid.qcow2 <- top.qcow2 with data at every layer, overlapping.
func chain(t *testing.T, dir string) (base, mid, top string) {
	t.Helper()
	base = makePattern(t, dir, "base.raw", 6<<20, 11)
	mid = filepath.Join(dir, "mid.qcow2")
	top = filepath.Join(dir, "top.qcow2")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", mid), "create mid")
	qemuIO(t, dir, mid, "qcow2", "write -P 0x11 512k 1M", "write -z 2M 128k", "write -P 0x12 5M 100k")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top), "create top")
	qemuIO(t, dir, top, "qcow2", "write -P 0x21 1M 64k", "write -P 0x22 3M 300k", "write -z 5M 4k", "write -P 0x23 5800k 8k")
	return
}

func qemuCheckClean(t *testing.T, dir, img string) {
	t.Helper()
	if r := qemu(t, dir, "check", img); r.code != 0 {
		t.Errorf("qemu-img check %s: exit %d\n%s%s", img, r.code, r.stdout, r.stderr)
	}
}

func TestRebaseMatchesQemu(t *testing.T) {
	needQemu(t)
	needFormat(t, "qcow2")
	needCap(t, "qcow2", "block.BackingSetter", canSetBacking)
	dir := t.TempDir()
	_, _, top := chain(t, dir)
	before := view(t, dir, top)
	makePattern(t, dir, "other.raw", 5<<20, 12)

	// Safe rebase onto a different file: the view does not change.
	g := filepath.Join(dir, "g.qcow2")
	copyFile(t, top, g)
	ok(t, gemu(t, dir, "rebase", "-f", "qcow2", "-b", "other.raw", "-F", "raw", g), "gemu-img rebase")
	if !reflect.DeepEqual(view(t, dir, g), before) {
		t.Error("safe rebase changed the guest view")
	}
	qemuCheckClean(t, dir, g)
	info := jsonOf(t, ok(t, qemu(t, dir, "info", "--output=json", g), "info").stdout).(map[string]any)
	if info["backing-filename"] != "other.raw" || info["backing-filename-format"] != "raw" {
		t.Errorf("backing after rebase: %v %v", info["backing-filename"], info["backing-filename-format"])
	}
	// Rebase onto nothing.
	copyFile(t, top, g)
	ok(t, gemu(t, dir, "rebase", "-b", "", g), "gemu-img rebase -b ''")
	if !reflect.DeepEqual(view(t, dir, g), before) {
		t.Error("rebase onto no backing changed the guest view")
	}
	qemuCheckClean(t, dir, g)

	// Unsafe rebase only rewrites the reference: same result as qemu-img's.
	q := filepath.Join(dir, "q.qcow2")
	copyFile(t, top, g)
	copyFile(t, top, q)
	ok(t, gemu(t, dir, "rebase", "-u", "-b", "other.raw", "-F", "raw", g), "gemu-img rebase -u")
	ok(t, qemu(t, dir, "rebase", "-u", "-b", "other.raw", "-F", "raw", q), "qemu-img rebase -u")
	if !reflect.DeepEqual(view(t, dir, g), view(t, dir, q)) {
		t.Error("unsafe rebase: views differ from qemu-img's")
	}
}

func TestCommitMatchesQemu(t *testing.T) {
	needQemu(t)
	needFormat(t, "qcow2")
	for _, mode := range []string{"default", "-d", "-b"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			base, mid, top := chain(t, dir)
			before := view(t, dir, top)
			baseBefore := readFile(t, base)
			infoBefore := jsonOf(t, ok(t, qemu(t, dir, "info", "--output=json", top), "info").stdout).(map[string]any)
			args := []string{"commit", top}
			switch mode {
			case "-d":
				args = []string{"commit", "-d", top}
			case "-b":
				args = []string{"commit", "-b", base, top}
			}
			r := ok(t, gemu(t, dir, args...), "gemu-img commit")
			if r.stdout != "Image committed.\n" {
				t.Errorf("stdout %q", r.stdout)
			}
			if !reflect.DeepEqual(view(t, dir, top), before) {
				t.Error("commit changed the top's view")
			}
			switch mode {
			case "-b":
				if !reflect.DeepEqual(view(t, dir, base), before) {
					t.Error("base does not hold the committed view")
				}
			default:
				if !reflect.DeepEqual(view(t, dir, mid), before) {
					t.Error("mid does not hold the committed view")
				}
				if !reflect.DeepEqual(readFile(t, base), baseBefore) {
					t.Error("commit into mid touched base")
				}
				qemuCheckClean(t, dir, mid)
			}
			qemuCheckClean(t, dir, top)
			infoAfter := jsonOf(t, ok(t, qemu(t, dir, "info", "--output=json", top), "info").stdout).(map[string]any)
			for _, k := range []string{"virtual-size", "cluster-size", "format-specific", "backing-filename", "backing-filename-format"} {
				if !reflect.DeepEqual(infoBefore[k], infoAfter[k]) {
					t.Errorf("commit changed the top's %s: %v -> %v", k, infoBefore[k], infoAfter[k])
				}
			}
			m := jsonOf(t, ok(t, qemu(t, dir, "map", "--output=json", top), "map").stdout).([]any)
			allocatedTop := false
			for _, e := range m {
				if e.(map[string]any)["depth"].(float64) == 0 && e.(map[string]any)["present"] == true {
					allocatedTop = true
				}
			}
			if mode == "default" && allocatedTop {
				t.Error("top still allocates clusters after commit (should be emptied)")
			}
			if mode != "default" && !allocatedTop {
				t.Error("commit -d/-b emptied the top")
			}
		})
	}
}

func TestSnapshotMatchesQemu(t *testing.T) {
	needQemu(t)
	needFormat(t, "qcow2")
	dir := t.TempDir()
	pat := makePattern(t, dir, "p.raw", 4<<20, 13)
	img := filepath.Join(dir, "s.qcow2")
	ok(t, qemu(t, dir, "convert", "-O", "qcow2", pat, img), "convert")
	orig := view(t, dir, img)
	ok(t, gemu(t, dir, "snapshot", "-c", "first", img), "snapshot -c")
	qemuCheckClean(t, dir, img)
	qemuIO(t, dir, img, "qcow2", "write -P 0x77 0 1M")
	ok(t, gemu(t, dir, "snapshot", "-c", "second", img), "snapshot -c second")
	g := ok(t, gemu(t, dir, "snapshot", "-l", img), "gemu-img snapshot -l").stdout
	q := ok(t, qemu(t, dir, "snapshot", "-l", img), "qemu-img snapshot -l").stdout
	if g != q {
		t.Errorf("snapshot -l:\n--- gemu-img\n%s--- qemu-img\n%s", g, q)
	}
	gi := ok(t, gemu(t, dir, "info", img), "info").stdout
	qi := ok(t, qemu(t, dir, "info", img), "info").stdout
	if dropLines(gi, "disk size") != dropLines(qi, "disk size") {
		t.Errorf("info with snapshots:\n--- gemu-img\n%s--- qemu-img\n%s", gi, qi)
	}
	ok(t, gemu(t, dir, "snapshot", "-a", "first", img), "snapshot -a")
	if !reflect.DeepEqual(view(t, dir, img), orig) {
		t.Error("applying the snapshot did not restore the data")
	}
	qemuCheckClean(t, dir, img)
	ok(t, gemu(t, dir, "snapshot", "-d", "first", img), "snapshot -d")
	qemuCheckClean(t, dir, img)
	if l := ok(t, qemu(t, dir, "snapshot", "-l", img), "list").stdout; strings.Contains(l, "first") || !strings.Contains(l, "second") {
		t.Errorf("after deleting 'first': %q", l)
	}
	errLine(t, gemu(t, dir, "snapshot", "-a", "nosuch", img), "apply a missing snapshot")
}

func TestAmendMatchesQemu(t *testing.T) {
	needQemu(t)
	needFormat(t, "qcow2")
	needCap(t, "qcow2", "block.Amender", canAmend)
	dir := t.TempDir()
	pat := makePattern(t, dir, "p.raw", 4<<20, 14)
	for _, o := range []string{"compat=0.10", "lazy_refcounts=on", "refcount_bits=64"} {
		g := filepath.Join(dir, "g.qcow2")
		q := filepath.Join(dir, "q.qcow2")
		ok(t, qemu(t, dir, "convert", "-O", "qcow2", pat, g), "convert")
		copyFile(t, g, q)
		ok(t, gemu(t, dir, "amend", "-o", o, g), "gemu-img amend "+o)
		ok(t, qemu(t, dir, "amend", "-o", o, q), "qemu-img amend "+o)
		gi := jsonOf(t, ok(t, qemu(t, dir, "info", "--output=json", g), "info").stdout).(map[string]any)
		qi := jsonOf(t, ok(t, qemu(t, dir, "info", "--output=json", q), "info").stdout).(map[string]any)
		if !reflect.DeepEqual(gi["format-specific"], qi["format-specific"]) {
			t.Errorf("amend %s: %v vs %v", o, gi["format-specific"], qi["format-specific"])
		}
		qemuCheckClean(t, dir, g)
		if !reflect.DeepEqual(view(t, dir, g), readFile(t, pat)) {
			t.Errorf("amend %s changed the data", o)
		}
	}
}

// qcow2 byte surgery: set the 16-bit refcount of host cluster idx.
func setRefcount(t *testing.T, img string, idx int64, v uint16) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdr := make([]byte, 104)
	f.ReadAt(hdr, 0)
	cbits := binary.BigEndian.Uint32(hdr[20:])
	rtOff := int64(binary.BigEndian.Uint64(hdr[48:]))
	if binary.BigEndian.Uint32(hdr[4:]) >= 3 && binary.BigEndian.Uint32(hdr[96:]) != 4 {
		t.Fatal("test image must use 16-bit refcounts")
	}
	perBlock := int64(1) << (cbits - 1)
	e := make([]byte, 8)
	f.ReadAt(e, rtOff+8*(idx/perBlock))
	rb := int64(binary.BigEndian.Uint64(e))
	if rb == 0 {
		t.Fatal("no refcount block for the cluster")
	}
	binary.BigEndian.PutUint16(e, v)
	f.WriteAt(e[:2], rb+2*(idx%perBlock))
}

func TestCheckMatchesQemu(t *testing.T) {
	needQemu(t)
	needFormat(t, "qcow2")
	dir := t.TempDir()
	pat := makePattern(t, dir, "p.raw", 4<<20, 15)
	clean := filepath.Join(dir, "clean.qcow2")
	ok(t, qemu(t, dir, "convert", "-O", "qcow2", pat, clean), "convert")
	st, _ := os.Stat(clean)
	m := jsonOf(t, ok(t, qemu(t, dir, "map", "--output=json", clean), "map").stdout).([]any)
	dataCluster := int64(m[0].(map[string]any)["offset"].(float64)) >> 16

	leak := filepath.Join(dir, "leak.qcow2")
	copyFile(t, clean, leak)
	f, _ := os.OpenFile(leak, os.O_RDWR, 0)
	f.Truncate(st.Size() + 65536)
	f.Close()
	setRefcount(t, leak, st.Size()>>16, 1)

	over := filepath.Join(dir, "over.qcow2")
	copyFile(t, clean, over)
	setRefcount(t, over, dataCluster, 2)

	corrupt := filepath.Join(dir, "corrupt.qcow2")
	copyFile(t, clean, corrupt)
	setRefcount(t, corrupt, dataCluster, 0)

	for _, img := range []string{clean, leak, over, corrupt} {
		for _, o := range []string{"--output=json", "--output=human"} {
			g := gemu(t, dir, "check", o, img)
			q := qemu(t, dir, "check", o, img)
			if g.code != q.code {
				t.Errorf("check %s %s: exit %d, qemu-img %d", o, filepath.Base(img), g.code, q.code)
			}
			if o == "--output=json" {
				gj, qj := jsonOf(t, g.stdout), jsonOf(t, q.stdout)
				if !reflect.DeepEqual(gj, qj) {
					t.Errorf("check json %s:\ngemu-img %v\nqemu-img %v", filepath.Base(img), gj, qj)
				}
			} else if g.stdout != q.stdout {
				t.Errorf("check %s:\n--- gemu-img\n%s--- qemu-img\n%s", filepath.Base(img), g.stdout, q.stdout)
			}
		}
	}
	// Repair: gemu-img exits as qemu-img does on a copy, and what qemu-img check then
	// finds agrees too.
	for _, c := range []struct{ img, mode string }{{leak, "leaks"}, {over, "leaks"}, {corrupt, "all"}} {
		q := c.img + ".q"
		copyFile(t, c.img, q)
		g := gemu(t, dir, "check", "-r", c.mode, c.img)
		qr := qemu(t, dir, "check", "-r", c.mode, q)
		if g.code != qr.code {
			t.Errorf("check -r %s %s: exit %d, qemu-img %d\n%s%s", c.mode, filepath.Base(c.img), g.code, qr.code, g.stdout, g.stderr)
		}
		ga, qa := qemu(t, dir, "check", "--output=json", c.img), qemu(t, dir, "check", "--output=json", q)
		if ga.code != qa.code || ga.code != 0 {
			t.Errorf("after check -r %s %s: qemu-img check exit %d (on qemu-img's repair %d)\n%s", c.mode, filepath.Base(c.img), ga.code, qa.code, ga.stdout)
		}
	}
}

// A SIGKILL at any point of commit or rebase leaves every byte of the chain's view as
// it was (the copy into the lower layer is shadowed until the header or the top changes).
func TestCrashSafety(t *testing.T) {
	needQemu(t)
	needFormat(t, "qcow2")
	if testing.Short() {
		t.Skip("kills gemu-img many times: long test")
	}
	dir := t.TempDir()
	_, _, top := chain(t, dir)
	before := view(t, dir, top)
	makePattern(t, dir, "other.raw", 6<<20, 16)
	r := rand.New(rand.NewSource(17))
	save := filepath.Join(dir, "save")
	os.Mkdir(save, 0o755)
	for _, n := range []string{"base.raw", "mid.qcow2", "top.qcow2"} {
		copyFile(t, filepath.Join(dir, n), filepath.Join(save, n))
	}
	restore := func() {
		for _, n := range []string{"base.raw", "mid.qcow2", "top.qcow2"} {
			copyFile(t, filepath.Join(save, n), filepath.Join(dir, n))
		}
	}
	ops := [][]string{{"commit", "-b", filepath.Join(dir, "base.raw"), top}, {"commit", top}}
	if driverHas(t, "qcow2", canSetBacking) {
		ops = append(ops, []string{"rebase", "-b", "other.raw", "-F", "raw", top})
	} else {
		t.Log("qcow2 has no block.BackingSetter yet: rebase not crash-tested")
	}
	for _, op := range ops {
		killed := 0
		for i := 0; i < 8; i++ {
			restore()
			k := 1 + r.Intn(12)
			res := runIn(t, dir, []string{fmt.Sprintf("GEMU_IMG_TEST_KILL_AFTER_WRITES=%d", k)}, gemuImg, op...)
			if res.code == 0 {
				continue // finished before the k-th write
			}
			killed++
			if got := view(t, dir, top); !reflect.DeepEqual(got, before) {
				t.Fatalf("%v killed after %d writes: the chain's view changed", op, k)
			}
			if q := qemu(t, dir, "check", top); q.code != 0 && q.code != 3 {
				t.Errorf("%v killed after %d writes: qemu-img check exit %d\n%s", op, k, q.code, q.stdout)
			}
		}
		if killed == 0 {
			t.Errorf("%v: never killed mid-way: the test proves nothing", op)
		}
		// Kills at random times also land inside the driver's own metadata updates
		// (header rewrite, emptying), which the write hook cannot reach.
		restore()
		t0 := time.Now()
		ok(t, gemu(t, dir, op...), strings.Join(op, " "))
		full := time.Since(t0)
		for i := 0; i < 6; i++ {
			restore()
			cmd := exec.Command(gemuImg, op...)
			cmd.Dir = dir
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Duration(r.Int63n(int64(full) + 1)))
			cmd.Process.Kill()
			cmd.Wait()
			if got := view(t, dir, top); !reflect.DeepEqual(got, before) {
				t.Fatalf("%v killed at a random time: the chain's view changed", op)
			}
		}
		// And the operation completes cleanly when not interrupted.
		restore()
		ok(t, gemu(t, dir, op...), strings.Join(op, " "))
		if !reflect.DeepEqual(view(t, dir, top), before) {
			t.Errorf("%v changed the view", op)
		}
	}
}

// Committing small top clusters into a base with bigger clusters writes parts of base
// clusters, which must keep the base's own backing data around them.
func TestCommitIntoLargerClusters(t *testing.T) {
	needQemu(t)
	needFormat(t, "qcow2")
	dir := t.TempDir()
	makePattern(t, dir, "base.raw", 6<<20, 23)
	mid := filepath.Join(dir, "mid.qcow2")
	top := filepath.Join(dir, "top.qcow2")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", "-b", "base.raw", "-F", "raw", mid), "create mid")
	qemuIO(t, dir, mid, "qcow2", "write -P 0x31 4M 100k")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b", "mid.qcow2", "-F", "qcow2", top), "create top")
	qemuIO(t, dir, top, "qcow2", "write -P 0x41 1M 8k", "write -P 0x42 4M 4k", "write -z 3M 4k")
	before := view(t, dir, top)
	ok(t, gemu(t, dir, "commit", "-d", top), "gemu-img commit -d")
	if !reflect.DeepEqual(view(t, dir, mid), before) {
		t.Error("mid does not read as the committed view")
	}
	qemuCheckClean(t, dir, mid)
}

// A top with internal snapshots cannot be emptied by recreating it: commit says so
// instead of dropping the snapshots, and the data reaches the base anyway.
func TestCommitKeepsSnapshots(t *testing.T) {
	needQemu(t)
	needFormat(t, "qcow2")
	dir := t.TempDir()
	_, mid, top := chain(t, dir)
	before := view(t, dir, top)
	ok(t, qemu(t, dir, "snapshot", "-c", "keep", top), "snapshot")
	r := gemu(t, dir, "commit", top)
	if !driverHas(t, "qcow2", func(d block.Driver) bool { _, ok := d.(block.Emptier); return ok }) {
		errLine(t, r, "commit of a top with snapshots")
	}
	if l := ok(t, qemu(t, dir, "snapshot", "-l", top), "list").stdout; !strings.Contains(l, "keep") {
		t.Errorf("commit dropped the top's snapshot: %q", l)
	}
	if !reflect.DeepEqual(view(t, dir, top), before) || !reflect.DeepEqual(view(t, dir, mid), before) {
		t.Error("views changed")
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gemu/block"
)

// holdWithQEMU starts a stopped QEMU (no guest code runs) that opens each image as a
// read-write -drive, as a running VM holds its disks, and waits until its locks are
// visible. The process is killed when the test ends.
func holdWithQEMU(t *testing.T, dir string, format string, images ...string) {
	t.Helper()
	needQemu(t)
	bin := ""
	for _, b := range []string{"qemu-system-x86_64", "qemu-system-aarch64"} {
		if _, err := exec.LookPath(b); err == nil {
			bin = b
			break
		}
	}
	if bin == "" {
		t.Skip("no qemu-system-x86_64 or qemu-system-aarch64: nothing to hold the image")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	args := []string{"-machine", "none", "-nodefaults", "-nographic", "-S", "-monitor", "none", "-serial", "none"}
	for _, img := range images {
		args = append(args, "-drive", "file="+img+",if=none,format="+format)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	var se bytes.Buffer
	cmd.Stderr = &se
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		cancel()
	})
	// Wait until QEMU holds the write permission byte (LockPermBase+1) of every image,
	// read from /proc/locks. (Probing with qemu-img info instead raced with QEMU's own
	// startup: info's brief lock made QEMU fail to get "write".)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("%s exited early: %s", bin, se.String())
		default:
		}
		held := true
		for _, img := range images {
			if !slices.Contains(lockBytes(t, filepath.Join(dir, img)), 101) {
				held = false
			}
		}
		if held {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not lock %v within 30s", bin, images)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sameRefusal asserts gemu-img failed with exit 1 and qemu-img's stderr for the same
// command, program name aside.
func sameRefusal(t *testing.T, dir string, args ...string) {
	t.Helper()
	q := qemu(t, dir, args...)
	g := gemu(t, dir, args...)
	if q.code == 0 {
		t.Fatalf("qemu-img %v succeeded against a locked image: the test setup is wrong", args)
	}
	want := strings.ReplaceAll(q.stderr, "qemu-img:", "gemu-img:")
	if g.code != 1 || g.stderr != want {
		t.Errorf("gemu-img %v: exit %d, stderr\n%q\nwant exit 1 and qemu-img's\n%q", args, g.code, g.stderr, want)
	}
}

func TestLockQEMUHoldsImage(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "a.qcow2", "4M"), "create")
	ok(t, runIn(t, dir, nil, "qemu-io", "-c", "write -P 0x5a 0 64k", "a.qcow2"), "qemu-io write")
	before := readFile(t, filepath.Join(dir, "a.qcow2"))
	holdWithQEMU(t, dir, "qcow2", "a.qcow2")

	// Writers are refused with QEMU's message ("write"), readers too ("shared write").
	sameRefusal(t, dir, "resize", "a.qcow2", "8M")
	sameRefusal(t, dir, "snapshot", "-c", "s1", "a.qcow2")
	sameRefusal(t, dir, "snapshot", "-l", "a.qcow2")
	sameRefusal(t, dir, "amend", "-o", "lazy_refcounts=on", "a.qcow2")
	sameRefusal(t, dir, "check", "-r", "all", "a.qcow2")
	sameRefusal(t, dir, "check", "-U", "-r", "all", "a.qcow2")
	sameRefusal(t, dir, "check", "a.qcow2")
	sameRefusal(t, dir, "info", "a.qcow2")
	sameRefusal(t, dir, "map", "a.qcow2")
	sameRefusal(t, dir, "rebase", "-u", "-b", "", "a.qcow2")

	// -U: read-only commands work, as with qemu-img.
	for _, args := range [][]string{
		{"info", "-U", "a.qcow2"},
		{"check", "-U", "a.qcow2"},
		{"map", "-U", "a.qcow2"},
		{"snapshot", "-U", "-l", "a.qcow2"},
		{"compare", "-U", "a.qcow2", "a.qcow2"},
		{"convert", "-U", "-O", "raw", "a.qcow2", "copy.raw"},
	} {
		ok(t, qemu(t, dir, args...), "qemu-img "+strings.Join(args, " "))
		ok(t, gemu(t, dir, args...), "gemu-img "+strings.Join(args, " "))
	}

	// An overlay on the held image: creating it is fine (the backing file is opened with
	// force-share), opening its chain is refused at the backing file.
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", "q.qcow2"), "qemu-img create overlay")
	ok(t, gemu(t, dir, "create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", "o.qcow2"), "gemu-img create overlay")
	sameRefusal(t, dir, "resize", "o.qcow2", "8M")
	sameRefusal(t, dir, "info", "--backing-chain", "o.qcow2")
	sameRefusal(t, dir, "commit", "o.qcow2")
	sameRefusal(t, dir, "convert", "-O", "raw", "o.qcow2", "o.raw")
	ok(t, gemu(t, dir, "info", "o.qcow2"), "gemu-img info of the overlay alone")

	// Creating over the held image is refused before it is truncated.
	g := gemu(t, dir, "create", "-q", "-f", "qcow2", "a.qcow2", "1M")
	if g.code != 1 || !strings.Contains(g.stderr, `Failed to get "write" lock`) {
		t.Errorf("create over a held image: exit %d, %q", g.code, g.stderr)
	}
	if after := readFile(t, filepath.Join(dir, "a.qcow2")); !bytes.Equal(before, after) {
		t.Errorf("the held image changed")
	}
}

func TestLockGemuHoldsImage(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "a.qcow2")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "base.qcow2", "4M"), "create base")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "a.qcow2"), "create overlay")
	d, err := block.Open(img, block.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	for _, args := range [][]string{{"resize", "a.qcow2", "8M"}, {"info", "a.qcow2"}, {"resize", "base.qcow2", "8M"}, {"check", "-r", "all", "base.qcow2"}} {
		q := qemu(t, dir, args...)
		if q.code == 0 || !strings.Contains(q.stderr, "Failed to get") || !strings.Contains(q.stderr, "Is another process using the image") {
			t.Errorf("qemu-img %v while gemu holds the image: exit %d, %q", args, q.code, q.stderr)
		}
	}
	// Reading the backing file alone is fine: gemu opened it read-only.
	ok(t, qemu(t, dir, "info", "base.qcow2"), "qemu-img info base")
	ok(t, qemu(t, dir, "info", "-U", "a.qcow2"), "qemu-img info -U")
	ok(t, gemu(t, dir, "info", "-U", "a.qcow2"), "gemu-img info -U")

	// A second gemu writer, in another process and in this one.
	g := gemu(t, dir, "resize", "a.qcow2", "8M")
	want := "gemu-img: Could not open 'a.qcow2': Failed to get \"write\" lock\nIs another process using the image [a.qcow2]?\n"
	if g.code != 1 || g.stderr != want {
		t.Errorf("second gemu-img writer: exit %d, %q, want %q", g.code, g.stderr, want)
	}
	_, err = block.Open(img, block.OpenOptions{})
	var le *block.LockError
	if !errors.As(err, &le) || le.Msg != `Failed to get "write" lock` {
		t.Errorf("second in-process writer: %v, want a write-lock conflict", err)
	}
	// locking=off lets it through.
	d2, err := block.Open(img, block.OpenOptions{NoLock: true, ReadOnly: true})
	if err != nil {
		t.Errorf("NoLock open: %v", err)
	} else {
		d2.Close()
	}
	d.Close()
	ok(t, qemu(t, dir, "resize", "a.qcow2", "8M"), "qemu-img resize after gemu closed the image")
	ok(t, qemu(t, dir, "check", "a.qcow2"), "qemu-img check")
}

// A raw image held as a guest disk (Unshare write, like QEMU's devices) locks out other
// writers; held as qemu-img holds it (sharing everything) it does not, as in QEMU.
func TestLockRawUnshare(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "r.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := block.Open(img, block.OpenOptions{Format: "raw"})
	if err != nil {
		t.Fatal(err)
	}
	ok(t, qemu(t, dir, "resize", "-f", "raw", "r.raw", "2M"), "qemu-img resize of a shared raw image")
	d.Close()
	d, err = block.Open(img, block.OpenOptions{Format: "raw", Unshare: block.PermWrite})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	q := qemu(t, dir, "resize", "-f", "raw", "r.raw", "3M")
	if q.code == 0 || !strings.Contains(q.stderr, `Failed to get "write" lock`) {
		t.Errorf("qemu-img resize of a raw guest disk: exit %d, %q", q.code, q.stderr)
	}
	ok(t, qemu(t, dir, "info", "-f", "raw", "r.raw"), "qemu-img info of a raw guest disk")
}

// lockBytes lists the bytes of file locked in /proc/locks (OFD locks), sorted.
func lockBytes(t *testing.T, file string) []int {
	t.Helper()
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		t.Skipf("no /proc/locks: %v", err)
	}
	var bytes []int
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || f[1] != "OFDLCK" {
			continue
		}
		dev := strings.Split(f[5], ":")
		if len(dev) != 3 || dev[2] != strconv.FormatUint(ino, 10) {
			continue
		}
		a, _ := strconv.Atoi(f[6])
		b, _ := strconv.Atoi(f[7])
		for i := a; i <= b; i++ {
			bytes = append(bytes, i)
		}
	}
	sort.Ints(bytes)
	return bytes
}

// gemu's read-write qcow2 open locks exactly the bytes a QEMU read-write drive locks.
func TestLockBytesMatchQEMU(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "q.qcow2", "1M"), "create")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "g.qcow2", "1M"), "create")
	holdWithQEMU(t, dir, "qcow2", "q.qcow2")
	d, err := block.Open(filepath.Join(dir, "g.qcow2"), block.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	q, g := lockBytes(t, filepath.Join(dir, "q.qcow2")), lockBytes(t, filepath.Join(dir, "g.qcow2"))
	if fmt.Sprint(q) != fmt.Sprint(g) || len(q) == 0 {
		t.Errorf("locked bytes: QEMU %v, gemu %v", q, g)
	}
}

// VMDK: QEMU holding a monolithic sparse image and a descriptor with a flat extent;
// gemu-img refuses them as qemu-img does, and locks a flat extent as QEMU does.
func TestLockVMDK(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	ok(t, qemu(t, dir, "create", "-q", "-f", "vmdk", "s.vmdk", "4M"), "create sparse")
	ok(t, qemu(t, dir, "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", "f.vmdk", "4M"), "create flat")
	ok(t, qemu(t, dir, "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", "g.vmdk", "4M"), "create flat")
	before := readFile(t, filepath.Join(dir, "s.vmdk"))
	holdWithQEMU(t, dir, "vmdk", "s.vmdk", "f.vmdk")
	for _, img := range []string{"s.vmdk", "f.vmdk"} {
		sameRefusal(t, dir, "info", img)
		sameRefusal(t, dir, "check", "-r", "all", img)
		sameRefusal(t, dir, "convert", "-O", "raw", img, "out.raw")
		ok(t, gemu(t, dir, "info", "-U", img), "gemu-img info -U "+img)
	}
	sameRefusal(t, dir, "create", "-f", "vmdk", "s.vmdk", "1M")
	if after := readFile(t, filepath.Join(dir, "s.vmdk")); !bytes.Equal(before, after) {
		t.Errorf("the held image changed")
	}
	d, err := block.Open(filepath.Join(dir, "g.vmdk"), block.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// Only the descriptor: a -drive without a device takes no write permission, so
	// QEMU's flat extent here has fewer locks than any writer's (block/backend compares
	// extents against QEMU's devices).
	for _, f := range []string{".vmdk"} {
		q, g := lockBytes(t, filepath.Join(dir, "f"+f)), lockBytes(t, filepath.Join(dir, "g"+f))
		if fmt.Sprint(q) != fmt.Sprint(g) || len(q) == 0 {
			t.Errorf("%s: locked bytes: QEMU %v, gemu %v", f, q, g)
		}
	}
}

// Read-only opens lock as qemu-io's read-only opens do, with and without -U.
func TestLockBytesReadOnlyMatchQEMU(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	for _, force := range []bool{false, true} {
		q, g := filepath.Join(dir, fmt.Sprintf("q%v.qcow2", force)), filepath.Join(dir, fmt.Sprintf("g%v.qcow2", force))
		ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", q, "1M"), "create")
		ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", g, "1M"), "create")
		args := []string{"-r", q}
		if force {
			args = append([]string{"-U"}, args...)
		}
		cmd := exec.Command("qemu-io", args...)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(20 * time.Second); len(lockBytes(t, q)) == 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("qemu-io took no lock")
			}
		}
		d, err := block.Open(g, block.OpenOptions{ReadOnly: true, ForceShare: force})
		if err != nil {
			t.Fatal(err)
		}
		if a, b := lockBytes(t, q), lockBytes(t, g); fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("read-only, force-share %v: QEMU locks %v, gemu %v", force, a, b)
		}
		d.Close()
		stdin.Close()
		cmd.Wait()
	}
}

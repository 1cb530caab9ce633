package backend_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gemu/block/backend"
)

// lockBytes lists the bytes of file locked in /proc/locks (OFD locks), sorted.
func lockBytes(t *testing.T, file string) []int {
	t.Helper()
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	ino := strconv.FormatUint(fi.Sys().(*syscall.Stat_t).Ino, 10)
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		t.Skipf("no /proc/locks: %v", err)
	}
	var bs []int
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || f[1] != "OFDLCK" {
			continue
		}
		if dev := strings.Split(f[5], ":"); len(dev) != 3 || dev[2] != ino {
			continue
		}
		a, _ := strconv.Atoi(f[6])
		b, _ := strconv.Atoi(f[7])
		for i := a; i <= b; i++ {
			bs = append(bs, i)
		}
	}
	sort.Ints(bs)
	return bs
}

// Each kind of drive locks exactly the bytes QEMU's drive of the same kind, attached to
// a virtio-blk device, locks: read-write and read-only, raw and qcow2, and the image
// under a snapshot=on overlay.
func TestLockBytesLikeQEMUDevices(t *testing.T) {
	needQemuImg(t)
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed: no oracle for device locks")
	}
	dir := t.TempDir()
	kinds := []struct {
		name, format string
		ro, snapshot bool
		suffixes     []string // further files of the image: "-flat" extent, ".data" file
	}{
		{"rw", "raw", false, false, nil},
		{"rw", "qcow2", false, false, nil},
		{"ro", "raw", true, false, nil},
		{"ro", "qcow2", true, false, nil},
		{"snap", "raw", false, true, nil},
		{"snap", "qcow2", false, true, nil},
		{"rw", "vmdk", false, false, []string{"-flat"}},
		{"ro", "vmdk", true, false, []string{"-flat"}},
		{"df", "qcow2", false, false, []string{".data"}},
		{"dfro", "qcow2", true, false, []string{".data"}},
	}
	args := []string{"-machine", "pc", "-S", "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "none"}
	for i, k := range kinds {
		for _, who := range []string{"q", "g"} {
			// VMDK as a descriptor and a flat extent: two files, two roles.
			name := fmt.Sprintf("%s-%s-%s", who, k.name, k.format)
			o := map[string]string{"raw": "preallocation=off", "qcow2": "compat=1.1", "vmdk": "subformat=monolithicFlat"}[k.format]
			if len(k.suffixes) > 0 && k.suffixes[0] == ".data" {
				o += ",data_file=" + filepath.Join(dir, name+".data") // QEMU 7.2 takes it relative to the working directory
			}
			run(t, dir, "qemu-img", "create", "-q", "-f", k.format, "-o", o, name, "1M")
		}
		opt := ""
		if k.ro {
			opt = ",readonly=on"
		}
		if k.snapshot {
			opt = ",snapshot=on"
		}
		args = append(args, "-drive", fmt.Sprintf("file=q-%s-%s,if=none,id=d%d,format=%s%s", k.name, k.format, i, k.format, opt),
			"-device", fmt.Sprintf("virtio-blk-pci,drive=d%d", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TMPDIR="+dir)
	var se bytes.Buffer
	cmd.Stderr = &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() { cmd.Process.Kill(); <-exited }()
	last := filepath.Join(dir, fmt.Sprintf("q-%s-%s", kinds[len(kinds)-1].name, kinds[len(kinds)-1].format))
	for deadline := time.Now().Add(30 * time.Second); len(lockBytes(t, last)) == 0; {
		select {
		case <-exited:
			t.Fatalf("qemu-system-x86_64 exited: %s", se.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU did not lock its drives within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// QEMU opens every drive, then narrows each one's permissions as its device is realized:
	// wait until the locks of all its files have stayed the same for a second (on a loaded
	// machine a fixed pause read some drives before their final permissions).
	qemuLocks := func() string {
		var all []string
		for _, k := range kinds {
			for _, suffix := range append([]string{""}, k.suffixes...) {
				all = append(all, fmt.Sprint(lockBytes(t, filepath.Join(dir, fmt.Sprintf("q-%s-%s%s", k.name, k.format, suffix)))))
			}
		}
		return fmt.Sprint(all)
	}
	for prev, since, deadline := qemuLocks(), time.Now(), time.Now().Add(30*time.Second); time.Since(since) < time.Second; {
		if time.Now().After(deadline) {
			t.Fatalf("QEMU's drive locks did not settle within 30s")
		}
		time.Sleep(100 * time.Millisecond)
		if cur := qemuLocks(); cur != prev {
			prev, since = cur, time.Now()
		}
	}
	for _, k := range kinds {
		g := filepath.Join(dir, fmt.Sprintf("g-%s-%s", k.name, k.format))
		b, err := backend.Open(backend.Options{File: g, Format: k.format, ReadOnly: k.ro, Snapshot: k.snapshot})
		if err != nil {
			t.Fatalf("%s %s: %v", k.name, k.format, err)
		}
		defer b.Close()
		for _, suffix := range append([]string{""}, k.suffixes...) {
			q := lockBytes(t, filepath.Join(dir, fmt.Sprintf("q-%s-%s%s", k.name, k.format, suffix)))
			if got := lockBytes(t, g+suffix); fmt.Sprint(got) != fmt.Sprint(q) || len(q) == 0 {
				t.Errorf("%s %s%s drive: gemu locks %v, QEMU %v", k.name, k.format, suffix, got, q)
			}
		}
	}
}

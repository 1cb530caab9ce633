package qcow2

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"gemu/block"
)

type crashNow struct{}

// repairCrashingAt runs check -r all on p with our driver, "crashing" (abandoning the
// image without any further write) after the n-th write of the repair. It reports
// whether the crash point was reached.
func repairCrashingAt(t *testing.T, p string, n int) (crashed bool) {
	t.Helper()
	d, err := block.Open(p, block.OpenOptions{Format: "qcow2"})
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	img := d.(*Image)
	count := 0
	checkCrashHook = func() {
		if count++; count == n {
			panic(crashNow{})
		}
	}
	defer func() { checkCrashHook = nil }()
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(crashNow); !ok {
					panic(r)
				}
				crashed = true
			}
		}()
		img.Check(block.RepairAll)
	}()
	if crashed {
		img.closeFiles() // the process died: nothing more reaches the file
		return true
	}
	d.Close()
	return false
}

// qemuRepairedView repairs a copy of p with qemu-img check -r all and returns the
// guest view and the exit status of a following qemu-img check.
func qemuRepairedView(t *testing.T, p string) ([]byte, int) {
	t.Helper()
	c := p + ".qrep"
	b, _ := os.ReadFile(p)
	os.WriteFile(c, b, 0o644)
	exec.Command("qemu-img", "check", "-r", "all", c).Run()
	code := 0
	if err := exec.Command("qemu-img", "check", c).Run(); err != nil {
		code = err.(*exec.ExitError).ExitCode()
	}
	return qemuRaw(t, c), code
}

// TestRepairCrashSafe damages images qemu-img made (refcounts that force a rebuild,
// two L2 entries sharing a cluster, cleared OFLAG_COPIED flags, a refcount block
// named twice, leaks) and
// interrupts our check -r all after each of its writes in turn. Whatever point the
// crash hits, a complete repair of the crashed file afterwards (by qemu-img) gives the
// same guest data, and the same check verdict, as repairing the undamaged-by-crash
// image: the repair never makes things worse than the damage it started from.
func TestRepairCrashSafe(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", base, "8M")
	qemuIO(t, base, "write -P 0x11 0 256k", "write -P 0x22 3M 64k", "write -P 0x33 6M 8k")
	b, _ := os.ReadFile(base)
	l := parseLayout(b)
	cases := map[string]func([]byte){
		"refcount_zero": func(b []byte) { be.PutUint16(b[l.rb+2*(l.data>>12):], 0) },
		"refcount_two":  func(b []byte) { be.PutUint16(b[l.rb+2*(l.data>>12):], 2) },
		"copied_cleared": func(b []byte) {
			be.PutUint64(b[l.l2:], be.Uint64(b[l.l2:])&^flagCopied)
			be.PutUint64(b[l.l1:], be.Uint64(b[l.l1:])&^flagCopied)
		},
		"l2_shared":       func(b []byte) { be.PutUint64(b[l.l2+8*100:], be.Uint64(b[l.l2:])) },
		"refblock_shared": func(b []byte) { be.PutUint64(b[l.rt+8:], uint64(l.rb)) },
		"leak_and_zero": func(b []byte) {
			be.PutUint16(b[l.rb+2*(l.data>>12):], 0)
			be.PutUint16(b[l.rb+2*((int64(len(b))>>12)-1):], 3)
		},
	}
	for name, harm := range cases {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			damaged := filepath.Join(d, "damaged.qcow2")
			img := append([]byte(nil), b...)
			harm(img)
			os.WriteFile(damaged, img, 0o644)
			want, wantCode := qemuRepairedView(t, damaged)
			before, readable := tryQemuRaw(damaged)
			points := 0
			for n := 1; ; n++ {
				c := filepath.Join(d, "crash.qcow2")
				os.WriteFile(c, img, 0o644)
				if !repairCrashingAt(t, c, n) {
					break
				}
				points++
				if now, ok := tryQemuRaw(c); readable && (!ok || !bytes.Equal(now, before)) {
					t.Errorf("crash after write %d: the guest view changed before any repair", n)
				}
				got, code := qemuRepairedView(t, c)
				if !bytes.Equal(got, want) || code != wantCode {
					t.Errorf("crash after write %d: repaired view differs (%v) or check exit %d, want %d",
						n, !bytes.Equal(got, want), code, wantCode)
				}
			}
			if points == 0 {
				t.Error("the repair made no writes: nothing tested")
			}
			t.Logf("%d crash points", points)
		})
	}
}

// tryQemuRaw is the guest view of p as qemu-img converts it, if it can.
func tryQemuRaw(p string) ([]byte, bool) {
	out := p + ".view"
	if err := exec.Command("qemu-img", "convert", "-U", "-O", "raw", p, out).Run(); err != nil {
		return nil, false
	}
	b, err := os.ReadFile(out)
	os.Remove(out)
	return b, err == nil
}

package main

import (
	"encoding/binary"
	"path/filepath"
	"strings"
	"testing"
)

// vmdkDamage damages a copy of a qemu-img-made sparse VMDK (monolithicSparse or
// streamOptimized, both with the grain directory named in the header).
type vmdkDamage struct {
	name string
	harm func(t *testing.T, p string, b []byte, gd, gt int64)
	// qemuClean: qemu-img reads the missing table as zeroes and calls the image clean;
	// gemu's vmdk driver refuses to read a grain directory or table outside the file
	// (its hostile-input rule, block/vmdk), and check agrees with the reads: one
	// "Check failed" or "Could not open" line, exit 1.
	qemuClean bool
}

func vmdkDamages() []vmdkDamage {
	le := binary.LittleEndian
	put32 := func(t *testing.T, p string, off int64, v uint32) {
		var b [4]byte
		le.PutUint32(b[:], v)
		putBytes(t, p, off, b[:])
	}
	return []vmdkDamage{
		{"clean", func(*testing.T, string, []byte, int64, int64) {}, false},
		{"trunc_mid_data", func(t *testing.T, p string, b []byte, gd, gt int64) { truncateTo(t, p, int64(len(b))/2) }, false},
		{"trunc_last_sector", func(t *testing.T, p string, b []byte, gd, gt int64) { truncateTo(t, p, int64(len(b))-512) }, false},
		{"trunc_mid_grain_table", func(t *testing.T, p string, b []byte, gd, gt int64) { truncateTo(t, p, gt+1000) }, false},
		{"trunc_mid_grain_dir", func(t *testing.T, p string, b []byte, gd, gt int64) { truncateTo(t, p, gd+4) }, false},
		{"grain_past_eof", func(t *testing.T, p string, b []byte, gd, gt int64) { put32(t, p, gt+8, 100000) }, false},
		{"grain_dir_entry_past_eof", func(t *testing.T, p string, b []byte, gd, gt int64) { put32(t, p, gd, 100000) }, true},
		{"grain_dir_second_past_eof", func(t *testing.T, p string, b []byte, gd, gt int64) { put32(t, p, gd+4, 100000) }, true},
		{"header_grain_dir_past_eof", func(t *testing.T, p string, b []byte, gd, gt int64) {
			var x [8]byte
			le.PutUint64(x[:], 100000)
			putBytes(t, p, 56, x[:])
		}, true},
	}
}

// TestCheckVmdkDamagedMatchesQemu runs qemu-img check and gemu-img check on damaged
// copies of qemu-img-made monolithicSparse and streamOptimized images: exit status,
// messages and JSON equal, except for the documented cases where qemu-img reads a
// table outside the file as zeroes (see vmdkDamage.qemuClean). -r is refused by both
// (exit 63: QEMU's vmdk check cannot repair).
func TestCheckVmdkDamagedMatchesQemu(t *testing.T) {
	needQemu(t)
	needFormat(t, "vmdk")
	src := t.TempDir()
	ok(t, qemu(t, src, "create", "-q", "-f", "vmdk", "sparse.vmdk", "64M"), "create")
	qemuIO(t, src, "sparse.vmdk", "vmdk", "write -P 1 0 1M", "write -P 2 40M 64k")
	ok(t, qemu(t, src, "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", "sparse.vmdk", "stream.vmdk"), "convert")
	for _, base := range []string{"sparse.vmdk", "stream.vmdk"} {
		for _, c := range vmdkDamages() {
			t.Run(strings.TrimSuffix(base, ".vmdk")+"/"+c.name, func(t *testing.T) {
				gd, qd := t.TempDir(), t.TempDir()
				gp := filepath.Join(gd, "d.vmdk")
				copyFile(t, filepath.Join(src, base), gp)
				b := readFile(t, gp)
				g64 := int64(binary.LittleEndian.Uint64(b[56:])) * 512
				gt := int64(binary.LittleEndian.Uint32(b[g64:])) * 512
				c.harm(t, gp, b, g64, gt)
				copyFile(t, gp, filepath.Join(qd, "d.vmdk"))
				g := gemu(t, gd, "check", "d.vmdk")
				q := qemu(t, qd, "check", "d.vmdk")
				if c.qemuClean {
					if q.code != 0 {
						t.Fatalf("qemu-img check: exit %d, the case expects it clean: %s%s", q.code, q.stdout, q.stderr)
					}
					lines := strings.Split(strings.TrimRight(g.stderr, "\n"), "\n")
					last := lines[len(lines)-1]
					if g.code != 1 || len(lines) > 2 || !(strings.HasPrefix(last, "gemu-img: Check failed") || strings.HasPrefix(last, "gemu-img: Could not open")) {
						t.Errorf("gemu-img check: exit %d stderr %q, want exit 1 and a Check failed / Could not open line", g.code, g.stderr)
					}
					errLine(t, gemu(t, gd, "convert", "-O", "raw", "d.vmdk", "out.raw"), "gemu-img convert (reads agree with check)")
					return
				}
				sameRun(t, "check", g, q)
				sameRun(t, "check --output=json", gemu(t, gd, "check", "--output=json", "d.vmdk"), qemu(t, qd, "check", "--output=json", "d.vmdk"))
				for _, m := range []string{"leaks", "all"} {
					sameRun(t, "check -r "+m, gemu(t, gd, "check", "-r", m, "d.vmdk"), qemu(t, qd, "check", "-r", m, "d.vmdk"))
				}
				if !bytesEqualFiles(t, gp, filepath.Join(qd, "d.vmdk")) {
					t.Error("check changed the image")
				}
			})
		}
	}
}

func bytesEqualFiles(t *testing.T, a, b string) bool {
	t.Helper()
	x, y := readFile(t, a), readFile(t, b)
	return string(x) == string(y)
}

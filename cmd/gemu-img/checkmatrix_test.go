package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// qcowLayout is where a qemu-img-made image keeps its first tables.
type qcowLayout struct {
	cs                     int64
	l1, l1Size, rt, rtSize int64
	rb, l2                 int64
	refBits                int64
	size                   int64
}

func readLayout(t *testing.T, p string) qcowLayout {
	t.Helper()
	b := readFile(t, p)
	g := binary.BigEndian
	l := qcowLayout{cs: 1 << g.Uint32(b[20:]), l1Size: int64(g.Uint32(b[36:])), l1: int64(g.Uint64(b[40:])),
		rt: int64(g.Uint64(b[48:])), refBits: 16, size: int64(len(b))}
	l.rtSize = int64(g.Uint32(b[56:])) * l.cs
	if g.Uint32(b[4:]) >= 3 {
		l.refBits = 1 << g.Uint32(b[96:])
	}
	l.rb = int64(g.Uint64(b[l.rt:]))
	l.l2 = int64(g.Uint64(b[l.l1:]) & 0x00fffffffffffe00)
	return l
}

func u64At(t *testing.T, p string, off int64) uint64 {
	t.Helper()
	return binary.BigEndian.Uint64(readFile(t, p)[off:])
}

func putU64(t *testing.T, p string, off int64, v uint64) {
	t.Helper()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	putBytes(t, p, off, b[:])
}

func putBytes(t *testing.T, p string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func truncateTo(t *testing.T, p string, n int64) {
	t.Helper()
	if err := os.Truncate(p, n); err != nil {
		t.Fatal(err)
	}
}

// setRef16 sets the 16-bit refcount of host cluster k (in the first refcount block).
func setRef16(t *testing.T, p string, l qcowLayout, k int64, v uint16) {
	t.Helper()
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	putBytes(t, p, l.rb+2*k, b[:])
}

type damaged struct {
	name string
	base string                                     // which qemu-img-made image
	harm func(t *testing.T, p string, l qcowLayout) // damages the copy at p
}

// checkBases makes the images the damage matrix starts from, all with qemu-img/qemu-io.
func checkBases(t *testing.T, dir string) map[string]string {
	t.Helper()
	bases := map[string]string{}
	// 64 KiB clusters: data at the start and in the middle.
	p := filepath.Join(dir, "b64k.qcow2")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", p, "64M"), "create")
	qemuIO(t, dir, p, "qcow2", "write -P 0xab 0 2M", "write -P 0xcd 30M 1M", "write -P 0xef 50M 64k")
	bases["64k"] = p
	// 4 KiB clusters, data in two L2 ranges so the second L2 table follows data.
	p = filepath.Join(dir, "b4k.qcow2")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", p, "32M"), "create")
	qemuIO(t, dir, p, "qcow2", "write -P 0x11 0 256k", "write -P 0x22 10M 256k", "write -P 0x33 20M 64k")
	bases["4k"] = p
	// 512-byte clusters: an L1 table of many clusters, and a refcount table that had to
	// grow (several clusters, placed after data).
	p = filepath.Join(dir, "b512.qcow2")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", p, "64M"), "create")
	qemuIO(t, dir, p, "qcow2", "write -P 0x44 0 12M", "write -P 0x55 40M 1M")
	bases["512"] = p
	// Compressed clusters.
	raw := makePattern(t, dir, "c.raw", 8<<20, 21)
	p = filepath.Join(dir, "bcomp.qcow2")
	ok(t, qemu(t, dir, "convert", "-c", "-O", "qcow2", raw, p), "convert -c")
	bases["comp"] = p
	// Extended L2 entries (subclusters), with partly written clusters.
	p = filepath.Join(dir, "bext.qcow2")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", p, "16M"), "create")
	qemuIO(t, dir, p, "qcow2", "write -P 0x61 0 100k", "write -P 0x62 5M 4k", "write -z 8M 64k")
	bases["ext"] = p
	// An internal snapshot: clusters shared between it and the active state.
	p = filepath.Join(dir, "bsnap.qcow2")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", p, "16M"), "create")
	qemuIO(t, dir, p, "qcow2", "write -P 0x71 0 1M", "write -P 0x72 4M 256k")
	ok(t, qemu(t, dir, "snapshot", "-c", "s1", p), "snapshot -c")
	qemuIO(t, dir, p, "qcow2", "write -P 0x73 0 64k", "write -P 0x74 10M 64k")
	bases["snap"] = p
	// One-bit refcounts: a second reference overflows.
	p = filepath.Join(dir, "brb1.qcow2")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "-o", "refcount_bits=1", p, "16M"), "create")
	qemuIO(t, dir, p, "qcow2", "write -P 0x81 0 512k")
	bases["rb1"] = p
	// Version 2 (compat=0.10): no dirty or corrupt bits, no reserved-bit rules for
	// zero clusters.
	p = filepath.Join(dir, "bv2.qcow2")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "-o", "compat=0.10", p, "16M"), "create")
	qemuIO(t, dir, p, "qcow2", "write -P 0x91 0 700k", "write -P 0x92 9M 64k")
	bases["v2"] = p
	return bases
}

// l2EntryOff returns the offset of the first L2 entry (at or after index from) of the
// first L2 table that maps a cluster, as found in the file.
func firstMapped(t *testing.T, p string, l qcowLayout, from int64, want func(uint64) bool) int64 {
	t.Helper()
	b := readFile(t, p)
	for i := from; i < l.cs/8; i++ {
		if e := binary.BigEndian.Uint64(b[l.l2+8*i:]); e != 0 && want(e) {
			return l.l2 + 8*i
		}
	}
	t.Fatalf("no mapped L2 entry in %s", p)
	return 0
}

func isNormal(e uint64) bool     { return e&(1<<62) == 0 && e&0x00fffffffffffe00 != 0 }
func isCompressed(e uint64) bool { return e&(1<<62) != 0 }

func damageMatrix() []damaged {
	return []damaged{
		{"clean_64k", "64k", func(*testing.T, string, qcowLayout) {}},
		{"clean_comp", "comp", func(*testing.T, string, qcowLayout) {}},
		{"trunc_mid_data", "64k", func(t *testing.T, p string, l qcowLayout) { truncateTo(t, p, l.size/2+12345) }},
		{"trunc_cluster_boundary", "64k", func(t *testing.T, p string, l qcowLayout) { truncateTo(t, p, l.size-l.cs) }},
		{"trunc_mid_data_4k", "4k", func(t *testing.T, p string, l qcowLayout) { truncateTo(t, p, l.size-70000) }},
		{"trunc_mid_l2", "4k", func(t *testing.T, p string, l qcowLayout) {
			// The L2 table for 10M was allocated after the first data: cut through it.
			l2 := int64(u64At(t, p, l.l1+8*5) & 0x00fffffffffffe00)
			if l2 == 0 {
				t.Fatal("no L2 table for 10M")
			}
			truncateTo(t, p, l2+l.cs/2)
		}},
		{"trunc_mid_l1", "512", func(t *testing.T, p string, l qcowLayout) {
			if l.l1Size*8 < 4*l.cs {
				t.Fatalf("L1 of %d bytes is too small for the case", l.l1Size*8)
			}
			truncateTo(t, p, l.l1+l.l1Size*4+100)
		}},
		{"trunc_mid_reftable", "512", func(t *testing.T, p string, l qcowLayout) {
			if l.rtSize < 2*l.cs {
				t.Fatalf("refcount table of %d bytes is too small for the case", l.rtSize)
			}
			truncateTo(t, p, l.rt+l.rtSize/2)
		}},
		{"trunc_in_header_cluster", "64k", func(t *testing.T, p string, l qcowLayout) { truncateTo(t, p, 4096) }},
		{"refcount_used_zero", "64k", func(t *testing.T, p string, l qcowLayout) {
			setRef16(t, p, l, int64(u64At(t, p, firstMapped(t, p, l, 0, isNormal))&0x00fffffffffffe00)/l.cs, 0)
		}},
		{"refcount_two", "64k", func(t *testing.T, p string, l qcowLayout) {
			setRef16(t, p, l, int64(u64At(t, p, firstMapped(t, p, l, 0, isNormal))&0x00fffffffffffe00)/l.cs, 2)
		}},
		{"refcount_leak", "64k", func(t *testing.T, p string, l qcowLayout) {
			truncateTo(t, p, l.size+2*l.cs)
			setRef16(t, p, l, l.size/l.cs+1, 1)
		}},
		{"l2_entry_past_eof", "64k", func(t *testing.T, p string, l qcowLayout) {
			putU64(t, p, firstMapped(t, p, l, 0, isNormal), uint64(l.size+10*l.cs)|1<<63)
		}},
		{"l2_entry_unaligned", "64k", func(t *testing.T, p string, l qcowLayout) {
			e := firstMapped(t, p, l, 0, isNormal)
			putU64(t, p, e, u64At(t, p, e)+512)
		}},
		{"l1_entry_unaligned", "64k", func(t *testing.T, p string, l qcowLayout) { putU64(t, p, l.l1, uint64(l.l2+512)|1<<63) }},
		{"l1_entry_past_eof", "64k", func(t *testing.T, p string, l qcowLayout) { putU64(t, p, l.l1, uint64(l.size+100*l.cs)|1<<63) }},
		{"l1_reserved_bits", "64k", func(t *testing.T, p string, l qcowLayout) { putU64(t, p, l.l1, uint64(l.l2)|1<<63|1<<58) }},
		{"l2_shared_cluster", "64k", func(t *testing.T, p string, l qcowLayout) {
			e := firstMapped(t, p, l, 0, isNormal)
			putU64(t, p, e+8, u64At(t, p, e))
		}},
		{"l2_points_at_refblock", "64k", func(t *testing.T, p string, l qcowLayout) {
			putU64(t, p, firstMapped(t, p, l, 0, isNormal), uint64(l.rb)|1<<63)
		}},
		{"l1_points_at_reftable", "64k", func(t *testing.T, p string, l qcowLayout) { putU64(t, p, l.l1, uint64(l.rt)|1<<63) }},
		{"refblock_unaligned", "64k", func(t *testing.T, p string, l qcowLayout) { putU64(t, p, l.rt, uint64(l.rb+512)) }},
		{"refblock_past_eof", "64k", func(t *testing.T, p string, l qcowLayout) { putU64(t, p, l.rt, uint64(l.size+5*l.cs)) }},
		{"copied_flag_cleared", "64k", func(t *testing.T, p string, l qcowLayout) {
			e := firstMapped(t, p, l, 0, isNormal)
			putU64(t, p, e, u64At(t, p, e)&^(1<<63))
		}},
		{"compressed_past_eof", "comp", func(t *testing.T, p string, l qcowLayout) {
			e := firstMapped(t, p, l, 0, isCompressed)
			v := u64At(t, p, e)
			shift := 62 - (uint(binary.BigEndian.Uint32(readFile(t, p)[20:])) - 8)
			putU64(t, p, e, v&^(1<<shift-1)|uint64(l.size+3*l.cs))
		}},
		{"compressed_copied_flag", "comp", func(t *testing.T, p string, l qcowLayout) {
			e := firstMapped(t, p, l, 0, isCompressed)
			putU64(t, p, e, u64At(t, p, e)|1<<63)
		}},
		{"ext_trunc", "ext", func(t *testing.T, p string, l qcowLayout) { truncateTo(t, p, l.size-30000) }},
		{"ext_l2_unaligned", "ext", func(t *testing.T, p string, l qcowLayout) {
			e := firstMapped(t, p, l, 0, isNormal)
			putU64(t, p, e, u64At(t, p, e)+512)
		}},
		{"ext_bitmap_corrupt", "ext", func(t *testing.T, p string, l qcowLayout) {
			e := firstMapped(t, p, l, 0, isNormal)
			putU64(t, p, e+8, 0xffffffffffffffff)
		}},
		{"snap_trunc", "snap", func(t *testing.T, p string, l qcowLayout) { truncateTo(t, p, l.size*3/4) }},
		{"snap_refcount_zero", "snap", func(t *testing.T, p string, l qcowLayout) {
			setRef16(t, p, l, int64(u64At(t, p, firstMapped(t, p, l, 1, isNormal))&0x00fffffffffffe00)/l.cs, 0)
		}},
		{"snap_refcount_one", "snap", func(t *testing.T, p string, l qcowLayout) {
			setRef16(t, p, l, int64(u64At(t, p, firstMapped(t, p, l, 1, isNormal))&0x00fffffffffffe00)/l.cs, 1)
		}},
		{"rb1_shared_overflow", "rb1", func(t *testing.T, p string, l qcowLayout) {
			e := firstMapped(t, p, l, 0, isNormal)
			putU64(t, p, e+8, u64At(t, p, e))
		}},
		{"rb1_trunc", "rb1", func(t *testing.T, p string, l qcowLayout) { truncateTo(t, p, l.size-100000) }},
		{"corrupt_mark", "64k", func(t *testing.T, p string, l qcowLayout) { putU64(t, p, 72, u64At(t, p, 72)|2) }},
		{"corrupt_mark_and_leak", "64k", func(t *testing.T, p string, l qcowLayout) {
			putU64(t, p, 72, u64At(t, p, 72)|2)
			truncateTo(t, p, l.size+2*l.cs)
			setRef16(t, p, l, l.size/l.cs+1, 1)
		}},
		{"dirty_bit_and_leak", "64k", func(t *testing.T, p string, l qcowLayout) {
			putU64(t, p, 72, u64At(t, p, 72)|1)
			truncateTo(t, p, l.size+2*l.cs)
			setRef16(t, p, l, l.size/l.cs+1, 1)
		}},
		{"v2_trunc", "v2", func(t *testing.T, p string, l qcowLayout) { truncateTo(t, p, l.size-100000) }},
		{"v2_refcount_zero", "v2", func(t *testing.T, p string, l qcowLayout) {
			setRef16(t, p, l, int64(u64At(t, p, firstMapped(t, p, l, 0, isNormal))&0x00fffffffffffe00)/l.cs, 0)
		}},
		{"v2_shared", "v2", func(t *testing.T, p string, l qcowLayout) {
			e := firstMapped(t, p, l, 0, isNormal)
			putU64(t, p, e+8*20, u64At(t, p, e))
		}},
		{"trunc_compressed", "comp", func(t *testing.T, p string, l qcowLayout) { truncateTo(t, p, l.size*2/3) }},
	}
}

// TestCheckDamagedMatchesQemu damages images qemu-img made (truncation at several
// points, byte edits of L1/L2 entries, refcounts and refcount table entries) and
// runs qemu-img check and gemu-img check on each: the same exit status, the same
// JSON (field for field) and the same human summary. Then each tool repairs its own
// copy with -r leaks and -r all: the same exit status and JSON again, and qemu-img
// check finds the same on both repaired copies.
func TestCheckDamagedMatchesQemu(t *testing.T) {
	needQemu(t)
	needFormat(t, "qcow2")
	bases := checkBases(t, t.TempDir())
	for _, c := range damageMatrix() {
		t.Run(c.name, func(t *testing.T) {
			gd, qd := t.TempDir(), t.TempDir()
			img := "img.qcow2"
			gp, qp := filepath.Join(gd, img), filepath.Join(qd, img)
			copyFile(t, bases[c.base], gp)
			l := readLayout(t, gp)
			c.harm(t, gp, l)
			copyFile(t, gp, qp)
			g := gemu(t, gd, "check", img)
			q := qemu(t, qd, "check", img)
			if g.code != q.code || g.stdout != q.stdout {
				t.Errorf("check: gemu-img exit %d\n%s%s\nqemu-img exit %d\n%s%s", g.code, g.stdout, tail(g.stderr), q.code, q.stdout, tail(q.stderr))
			}
			gj := gemu(t, gd, "check", "--output=json", img)
			qj := qemu(t, qd, "check", "--output=json", img)
			sameCheckJSON(t, "check --output=json", gj, qj)
			for _, mode := range []string{"leaks", "all"} {
				gr, qr := filepath.Join(gd, mode+".qcow2"), filepath.Join(qd, mode+".qcow2")
				copyFile(t, gp, gr)
				copyFile(t, gp, qr)
				g := gemu(t, gd, "check", "-r", mode, "--output=json", mode+".qcow2")
				q := qemu(t, qd, "check", "-r", mode, "--output=json", mode+".qcow2")
				sameCheckJSON(t, "check -r "+mode, g, q)
				// The human report of the same repair, on fresh copies.
				hg, hq := filepath.Join(gd, "h"+mode+".qcow2"), filepath.Join(qd, "h"+mode+".qcow2")
				copyFile(t, gp, hg)
				copyFile(t, gp, hq)
				if g, q := gemu(t, gd, "check", "-r", mode, "h"+mode+".qcow2"), qemu(t, qd, "check", "-r", mode, "h"+mode+".qcow2"); g.code != q.code || g.stdout != q.stdout {
					t.Errorf("check -r %s: gemu-img exit %d\n%s\nqemu-img exit %d\n%s", mode, g.code, g.stdout, q.code, q.stdout)
				}
				// What the oracle finds on both repaired copies, and their header flags
				// (dirty, corrupt) as qemu-img info shows them.
				ga := qemu(t, gd, "check", "--output=json", mode+".qcow2")
				qa := qemu(t, qd, "check", "--output=json", mode+".qcow2")
				sameCheckJSON(t, "qemu-img check after check -r "+mode, ga, qa)
				gi := qemu(t, gd, "info", "--output=json", mode+".qcow2")
				qi := qemu(t, qd, "info", "--output=json", mode+".qcow2")
				if gi.code == 0 && qi.code == 0 {
					gm, qm := jsonOf(t, gi.stdout).(map[string]any), jsonOf(t, qi.stdout).(map[string]any)
					if !reflect.DeepEqual(gm["format-specific"], qm["format-specific"]) || gm["dirty-flag"] != qm["dirty-flag"] {
						t.Errorf("after check -r %s: header %v dirty %v, qemu-img's %v dirty %v", mode, gm["format-specific"], gm["dirty-flag"], qm["format-specific"], qm["dirty-flag"])
					}
				}
			}
		})
	}
}

func tail(s string) string {
	if len(s) > 600 {
		return "..." + s[len(s)-600:]
	}
	return s
}

// sameCheckJSON compares two check runs: exit status and the parsed JSON, field by field.
func sameCheckJSON(t *testing.T, what string, g, q result) {
	t.Helper()
	if g.code != q.code {
		t.Errorf("%s: gemu-img exit %d, qemu-img exit %d\ngemu-img: %s%s\nqemu-img: %s%s", what, g.code, q.code, g.stdout, tail(g.stderr), q.stdout, tail(q.stderr))
		return
	}
	if (g.stdout == "") != (q.stdout == "") {
		t.Errorf("%s: gemu-img stdout %q, qemu-img stdout %q", what, g.stdout, q.stdout)
		return
	}
	if q.stdout == "" {
		return
	}
	if g.stdout != q.stdout {
		// Same text too: qemu-img's key order (its QDict hash order) included.
		t.Errorf("%s: JSON text differs:\ngemu-img %s\nqemu-img %s", what, g.stdout, q.stdout)
	}
	gj, qj := jsonOf(t, g.stdout).(map[string]any), jsonOf(t, q.stdout).(map[string]any)
	if !reflect.DeepEqual(gj, qj) {
		var diff string
		for k, v := range qj {
			if !reflect.DeepEqual(gj[k], v) {
				diff += fmt.Sprintf(" %s: gemu-img %v qemu-img %v;", k, gj[k], v)
			}
		}
		for k, v := range gj {
			if _, ok := qj[k]; !ok {
				diff += fmt.Sprintf(" %s: gemu-img %v qemu-img absent;", k, v)
			}
		}
		t.Errorf("%s: JSON differs:%s\ngemu-img stderr: %s\nqemu-img stderr: %s", what, diff, tail(g.stderr), tail(q.stderr))
	}
}

package main

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// qemuSources makes a matrix of images with qemu-img from one patterned raw file and
// returns name → (path, format). Formats gemu-img lacks are left out.
func qemuSources(t *testing.T, dir string) map[string][2]string {
	t.Helper()
	pat := makePattern(t, dir, "pattern.raw", 8<<20+64<<10, 1)
	out := map[string][2]string{"raw": {pat, "raw"}}
	add := func(name, fmt string, args ...string) {
		p := filepath.Join(dir, name)
		ok(t, qemu(t, dir, append(append([]string{"convert", "-f", "raw", "-O", fmt}, args...), pat, p)...), "qemu-img convert "+name)
		out[name] = [2]string{p, fmt}
	}
	if haveFormat(t, "qcow2") {
		add("v3.qcow2", "qcow2")
		add("v2.qcow2", "qcow2", "-o", "compat=0.10")
		add("c512.qcow2", "qcow2", "-o", "cluster_size=512")
		add("c2m.qcow2", "qcow2", "-o", "cluster_size=2M")
		add("rc1.qcow2", "qcow2", "-o", "refcount_bits=1")
		add("rc64.qcow2", "qcow2", "-o", "refcount_bits=64")
		add("l2ext.qcow2", "qcow2", "-o", "extended_l2=on")
		add("zlib.qcow2", "qcow2", "-c")
		add("zstd.qcow2", "qcow2", "-c", "-o", "compression_type=zstd")
		add("prealloc.qcow2", "qcow2", "-o", "preallocation=metadata")
		add("datafile.qcow2", "qcow2", "-o", "data_file="+filepath.Join(dir, "datafile.data"))
		add("lazy.qcow2", "qcow2", "-o", "lazy_refcounts=on,cluster_size=4k")
		add("zstd4k.qcow2", "qcow2", "-c", "-o", "compression_type=zstd,cluster_size=4k")
		// A backing chain: top overlays part of the pattern.
		top := filepath.Join(dir, "top.qcow2")
		ok(t, qemu(t, dir, "create", "-f", "qcow2", "-b", "v3.qcow2", "-F", "qcow2", top), "create top")
		ok(t, runQemuIO(t, dir, "-f", "qcow2", "-c", "write -P 0x5a 1M 200k", "-c", "write -z 3M 64k", top), "qemu-io top")
		out["top.qcow2"] = [2]string{top, "qcow2"}
	}
	if haveFormat(t, "vmdk") {
		add("sparse.vmdk", "vmdk")
		add("stream.vmdk", "vmdk", "-o", "subformat=streamOptimized")
		add("flat.vmdk", "vmdk", "-o", "subformat=monolithicFlat")
		add("2gb.vmdk", "vmdk", "-o", "subformat=twoGbMaxExtentSparse")
	}
	return out
}

func runQemuIO(t *testing.T, dir string, args ...string) result {
	t.Helper()
	return runIn(t, dir, nil, "qemu-io", args...)
}

func TestConvertToRawMatchesQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	for name, src := range qemuSources(t, dir) {
		t.Run(name, func(t *testing.T) {
			g := filepath.Join(dir, name+".g.raw")
			q := filepath.Join(dir, name+".q.raw")
			ok(t, gemu(t, dir, "convert", "-f", src[1], "-O", "raw", src[0], g), "gemu-img convert")
			ok(t, qemu(t, dir, "convert", "-f", src[1], "-O", "raw", src[0], q), "qemu-img convert")
			sameBytes(t, g, q)
			// Probing picks the same format as the explicit -f.
			g2 := filepath.Join(dir, name+".g2.raw")
			ok(t, gemu(t, dir, "convert", "-O", "raw", src[0], g2), "gemu-img convert (probed)")
			sameBytes(t, g, g2)
		})
	}
}

func TestInfoMatchesQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	shared := []string{"virtual-size", "filename", "format", "cluster-size", "dirty-flag",
		"backing-filename", "full-backing-filename", "backing-filename-format", "format-specific"}
	for name, src := range qemuSources(t, dir) {
		t.Run(name, func(t *testing.T) {
			for _, args := range [][]string{{"info", "--output=json", src[0]}, {"info", src[0], "--output", "json", "-f", src[1]}} {
				g := jsonOf(t, ok(t, gemu(t, dir, args...), "gemu-img info").stdout).(map[string]any)
				q := jsonOf(t, ok(t, qemu(t, dir, args...), "qemu-img info").stdout).(map[string]any)
				for _, k := range shared {
					if !reflect.DeepEqual(g[k], q[k]) {
						t.Errorf("%v: field %q: gemu-img %v, qemu-img %v", args, k, g[k], q[k])
					}
				}
			}
			// Human output: every line qemu-img prints except disk size.
			g := ok(t, gemu(t, dir, "info", src[0]), "gemu-img info").stdout
			q := ok(t, qemu(t, dir, "info", src[0]), "qemu-img info").stdout
			if dropLines(g, "disk size:") != dropLines(q, "disk size:") {
				t.Errorf("human info differs:\n--- gemu-img\n%s--- qemu-img\n%s", g, q)
			}
		})
	}
}

func dropLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestInfoHumanSizes(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	for _, size := range []int64{0, 512, 1000, 1023 * 1024, 1 << 20, 1536 << 20, 1000 << 30, 5<<40 + 3} {
		p := filepath.Join(dir, fmt.Sprintf("s%d.raw", size))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		g := ok(t, gemu(t, dir, "info", "-f", "raw", p), "gemu-img info").stdout
		q := ok(t, qemu(t, dir, "info", "-f", "raw", p), "qemu-img info").stdout
		if g != q {
			t.Errorf("size %d:\n--- gemu-img\n%s--- qemu-img\n%s", size, g, q)
		}
	}
}

func TestMapMatchesQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	for name, src := range qemuSources(t, dir) {
		if strings.HasSuffix(name, ".vmdk") {
			continue // qemu-img's vmdk map offsets are driver-specific: compared by content elsewhere
		}
		t.Run(name, func(t *testing.T) {
			g := jsonOf(t, ok(t, gemu(t, dir, "map", "--output=json", "-f", src[1], src[0]), "gemu-img map").stdout)
			q := jsonOf(t, ok(t, qemu(t, dir, "map", "--output=json", "-f", src[1], src[0]), "qemu-img map").stdout)
			if !reflect.DeepEqual(g, q) {
				t.Errorf("map differs:\ngemu-img %v\nqemu-img %v", g, q)
			}
			for _, r := range [][]string{{"--start-offset=1M", "--max-length=2M"}, {"--start-offset=4097", "--max-length=100000"}, {"--start-offset=100M"}} {
				args := append(append([]string{"map", "--output=json", "-f", src[1]}, r...), src[0])
				g := jsonOf(t, ok(t, gemu(t, dir, args...), "gemu-img map").stdout)
				q := jsonOf(t, ok(t, qemu(t, dir, args...), "qemu-img map").stdout)
				if !reflect.DeepEqual(g, q) {
					t.Errorf("map %v differs:\ngemu-img %v\nqemu-img %v", r, g, q)
				}
			}
			gh := gemu(t, dir, "map", "-f", src[1], src[0])
			qh := qemu(t, dir, "map", "-f", src[1], src[0])
			if gh.stdout != qh.stdout || gh.code != qh.code {
				t.Errorf("human map differs:\n--- gemu-img (exit %d)\n%s--- qemu-img (exit %d)\n%s", gh.code, gh.stdout, qh.code, qh.stdout)
			}
		})
	}
}

// Images gemu-img writes are read back by qemu-img as identical to their source and
// pass qemu-img check.
func TestGemuOutputAcceptedByQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	pat := makePattern(t, dir, "p.raw", 8<<20+64<<10, 2)
	type tc struct {
		name, fmt string
		args      []string
	}
	cases := []tc{{"out.raw", "raw", nil}, {"full.raw", "raw", []string{"-S", "0"}}}
	if haveFormat(t, "qcow2") {
		cases = append(cases,
			tc{"out.qcow2", "qcow2", nil},
			tc{"v2.qcow2", "qcow2", []string{"-o", "compat=0.10"}},
			tc{"c4k.qcow2", "qcow2", []string{"-o", "cluster_size=4k,refcount_bits=8"}},
			tc{"l2ext.qcow2", "qcow2", []string{"-o", "extended_l2=on"}},
			tc{"zlib.qcow2", "qcow2", []string{"-c"}},
			tc{"zstd.qcow2", "qcow2", []string{"-c", "-o", "compression_type=zstd"}},
			tc{"zstd-m1.qcow2", "qcow2", []string{"-c", "-m", "1", "-o", "compression_type=zstd"}},
		)
	}
	if haveFormat(t, "vmdk") {
		cases = append(cases,
			tc{"sparse.vmdk", "vmdk", nil},
			tc{"stream.vmdk", "vmdk", []string{"-o", "subformat=streamOptimized"}},
			tc{"flat.vmdk", "vmdk", []string{"-o", "subformat=monolithicFlat"}},
		)
	}
	// The same with a size that is not a multiple of any cluster or grain.
	odd := makePattern(t, dir, "odd.raw", 3<<20+1536, 22)
	srcs := map[string]string{}
	for _, c := range cases {
		srcs[c.name] = pat
		c.name = "odd-" + c.name
		srcs[c.name] = odd
		cases = append(cases, c)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if len(c.args) > 0 && c.args[0] == "-c" {
				needCap(t, c.fmt, "block.ClusterCompressor", canCompress)
			}
			pat := srcs[c.name]
			out := filepath.Join(dir, c.name)
			args := append([]string{"convert", "-f", "raw", "-O", c.fmt}, c.args...)
			ok(t, gemu(t, dir, append(args, pat, out)...), "gemu-img convert")
			r := qemu(t, dir, "compare", "-f", "raw", "-F", c.fmt, pat, out)
			if r.code != 0 || strings.TrimSpace(r.stdout) != "Images are identical." {
				t.Fatalf("qemu-img compare: exit %d %s %s", r.code, r.stdout, r.stderr)
			}
			if c.fmt == "qcow2" {
				r := qemu(t, dir, "check", "--output=json", out)
				if r.code != 0 {
					t.Fatalf("qemu-img check: exit %d %s %s", r.code, r.stdout, r.stderr)
				}
			}
			if c.fmt == "raw" {
				ok(t, qemu(t, dir, append(append([]string{"convert", "-f", "raw", "-O", "raw"}, c.args...), pat, out+".q")...), "qemu-img convert")
				sameBytes(t, out, out+".q")
			}
		})
	}
}

// convert output does not depend on -m or -W, and repeated runs give the same bytes.
func TestConvertDeterministic(t *testing.T) {
	dir := t.TempDir()
	pat := makePattern(t, dir, "p.raw", 6<<20, 3)
	fmts := [][]string{{"raw"}}
	if haveFormat(t, "qcow2") {
		fmts = append(fmts, []string{"qcow2"})
		if driverHas(t, "qcow2", canCompress) {
			fmts = append(fmts, []string{"qcow2", "-c"}, []string{"qcow2", "-c", "-o", "compression_type=zstd"})
		} else {
			t.Log("qcow2 driver has no ClusterCompressor yet: compressed determinism not checked")
		}
	}
	if haveFormat(t, "vmdk") {
		fmts = append(fmts, []string{"vmdk", "-o", "subformat=streamOptimized"})
	}
	for _, f := range fmts {
		var first string
		for i, extra := range [][]string{{"-m", "1"}, {"-m", "16", "-W"}, {"-m", "4"}, {"-W"}} {
			// Same base name in different folders: VMDK descriptors name their extent file.
			sub := filepath.Join(dir, fmt.Sprintf("%s%d", f[0], i))
			os.MkdirAll(sub, 0o755)
			out := filepath.Join(sub, "o."+f[0])
			args := append([]string{"convert", "-f", "raw", "-O"}, f...)
			args = append(append(args, extra...), pat, out)
			ok(t, gemu(t, dir, args...), strings.Join(args, " "))
			if f[0] == "vmdk" {
				maskCID(t, out)
			}
			if first == "" {
				first = out
			} else {
				sameBytes(t, first, out)
			}
		}
	}
}

func TestCompareMatchesQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	a := makePattern(t, dir, "a.raw", 4<<20, 4)
	write := func(name string, off int64, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, readFile(t, a), 0o644); err != nil {
			t.Fatal(err)
		}
		f, _ := os.OpenFile(p, os.O_RDWR, 0)
		defer f.Close()
		if b != nil {
			f.WriteAt(b, off)
		}
		return p
	}
	same := write("same.raw", 0, nil)
	diff := write("diff.raw", 70000, []byte{0xff})
	diff2 := write("diff2.raw", 3<<20+5000, []byte("x"))
	big := filepath.Join(dir, "big.raw")
	os.WriteFile(big, readFile(t, a), 0o644)
	os.Truncate(big, 5<<20)
	bigDirty := filepath.Join(dir, "bigdirty.raw")
	os.WriteFile(bigDirty, readFile(t, big), 0o644)
	f, _ := os.OpenFile(bigDirty, os.O_RDWR, 0)
	f.WriteAt([]byte("tail"), 4<<20+777)
	f.Close()
	pairs := [][]string{{a, same}, {a, diff}, {diff, a}, {a, diff2}, {a, big}, {big, a}, {a, bigDirty}, {"-s", a, big}, {"-s", a, same}}
	if haveFormat(t, "qcow2") {
		q := filepath.Join(dir, "a.qcow2")
		ok(t, qemu(t, dir, "convert", "-f", "raw", "-O", "qcow2", diff, q), "qemu-img convert")
		pairs = append(pairs, []string{a, q}, []string{diff, q}, []string{"-f", "raw", "-F", "qcow2", diff2, q})
	}
	for _, p := range pairs {
		g := gemu(t, dir, append([]string{"compare"}, p...)...)
		q := qemu(t, dir, append([]string{"compare"}, p...)...)
		if g.code != q.code || g.stdout != q.stdout {
			t.Errorf("compare %v: gemu-img exit %d %q, qemu-img exit %d %q", p, g.code, g.stdout, q.code, q.stdout)
		}
	}
	r := gemu(t, dir, "compare", a, filepath.Join(dir, "missing"))
	if r.code != 2 {
		t.Errorf("compare with a missing file: exit %d, want 2", r.code)
	}
	errLine(t, r, "compare missing")
}

func TestMeasureMatchesQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	pat := makePattern(t, dir, "p.raw", 8<<20, 5)
	cases := [][]string{{"-O", "raw", "--size", "1G"}, {"-O", "raw", pat}, {"-O", "raw", "--size", "1000"}}
	if haveFormat(t, "qcow2") && !formatIsMeasurer("qcow2") {
		t.Log("qcow2 format does not implement block.Measurer yet: qcow2 cases not checked")
	} else if haveFormat(t, "qcow2") {
		cases = append(cases, []string{"-O", "qcow2", "--size", "10G"}, []string{"-O", "qcow2", pat},
			[]string{"-O", "qcow2", "-o", "cluster_size=4k", pat}, []string{"-O", "qcow2", "-o", "preallocation=full", "--size", "3G"})
		q := filepath.Join(dir, "p.qcow2")
		ok(t, qemu(t, dir, "convert", "-O", "qcow2", pat, q), "convert")
		cases = append(cases, []string{"-O", "qcow2", q}, []string{"-O", "raw", q})
	}
	for _, c := range cases {
		for _, o := range []string{"--output=json", "--output=human"} {
			args := append([]string{"measure", o}, c...)
			g := ok(t, gemu(t, dir, args...), "gemu-img measure")
			q := ok(t, qemu(t, dir, args...), "qemu-img measure")
			if o == "--output=json" {
				if !reflect.DeepEqual(jsonOf(t, g.stdout), jsonOf(t, q.stdout)) {
					t.Errorf("%v: gemu-img %s qemu-img %s", args, g.stdout, q.stdout)
				}
			} else if g.stdout != q.stdout {
				t.Errorf("%v: gemu-img %q qemu-img %q", args, g.stdout, q.stdout)
			}
		}
	}
}

func TestResizeMatchesQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	pat := makePattern(t, dir, "p.raw", 4<<20, 6)
	for i, c := range [][]string{{"+1M"}, {"--shrink", "-1M"}, {"6M"}, {"--shrink", "1000k"}, {"--preallocation=falloc", "+512k"}, {"--preallocation=full", "5M"}} {
		g := filepath.Join(dir, fmt.Sprintf("g%d.raw", i))
		q := filepath.Join(dir, fmt.Sprintf("q%d.raw", i))
		os.WriteFile(g, readFile(t, pat), 0o644)
		os.WriteFile(q, readFile(t, pat), 0o644)
		rg := ok(t, gemu(t, dir, append([]string{"resize", "-f", "raw", g}, c...)...), "gemu-img resize")
		rq := ok(t, qemu(t, dir, append([]string{"resize", "-f", "raw", q}, c...)...), "qemu-img resize")
		if rg.stdout != rq.stdout {
			t.Errorf("resize %v: stdout %q vs %q", c, rg.stdout, rq.stdout)
		}
		sameBytes(t, g, q)
	}
	g := filepath.Join(dir, "shrink.raw")
	os.WriteFile(g, readFile(t, pat), 0o644)
	r := gemu(t, dir, "resize", "-f", "raw", g, "-1M")
	errLine(t, r, "shrink without --shrink")
	if st, _ := os.Stat(g); st.Size() != 4<<20 {
		t.Errorf("refused shrink changed the size to %d", st.Size())
	}
	if haveFormat(t, "qcow2") {
		q := filepath.Join(dir, "r.qcow2")
		ok(t, gemu(t, dir, "convert", "-O", "qcow2", "-f", "raw", pat, q), "convert")
		ok(t, gemu(t, dir, "resize", q, "+3M"), "resize qcow2")
		ok(t, gemu(t, dir, "resize", "--shrink", q, "5M"), "shrink qcow2")
		r := qemu(t, dir, "check", q)
		if r.code != 0 {
			t.Errorf("qemu-img check after resize: %d %s %s", r.code, r.stdout, r.stderr)
		}
		info := jsonOf(t, ok(t, qemu(t, dir, "info", "--output=json", q), "info").stdout).(map[string]any)
		if info["virtual-size"].(float64) != 5<<20 {
			t.Errorf("qcow2 resized to %v, want %d", info["virtual-size"], 5<<20)
		}
	}
}

func TestDDMatchesQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	pat := makePattern(t, dir, "p.raw", 4<<20, 7)
	for i, c := range [][]string{{}, {"bs=4k", "count=10"}, {"bs=1M", "skip=1"}, {"bs=3000", "count=7", "skip=5"}, {"bs=64k", "count=1000"}} {
		g := filepath.Join(dir, fmt.Sprintf("g%d.raw", i))
		q := filepath.Join(dir, fmt.Sprintf("q%d.raw", i))
		ok(t, gemu(t, dir, append([]string{"dd", "-f", "raw", "-O", "raw", "if=" + pat, "of=" + g}, c...)...), "gemu-img dd")
		ok(t, qemu(t, dir, append([]string{"dd", "-f", "raw", "-O", "raw", "if=" + pat, "of=" + q}, c...)...), "qemu-img dd")
		sameBytes(t, g, q)
	}
}

func TestCreateMatchesQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	cases := [][]string{{"-f", "raw", "X", "1536k"}, {"-f", "raw", "-o", "preallocation=full", "X", "1M"}, {"-f", "raw", "-o", "preallocation=falloc", "X", "2M"}}
	if haveFormat(t, "qcow2") {
		cases = append(cases, []string{"-f", "qcow2", "X", "1G"}, []string{"-f", "qcow2", "-o", "cluster_size=4k,lazy_refcounts=on", "X", "100M"},
			[]string{"-f", "qcow2", "-o", "compat=0.10", "X", "1G"}, []string{"-f", "qcow2", "-o", "preallocation=metadata", "X", "16M"},
			[]string{"-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k,refcount_bits=8", "X", "16M"})
	}
	if haveFormat(t, "vmdk") {
		cases = append(cases, []string{"-f", "vmdk", "X", "16M"}, []string{"-f", "vmdk", "-o", "subformat=streamOptimized", "X", "16M"},
			[]string{"-f", "vmdk", "-o", "adapter_type=lsilogic,subformat=monolithicFlat,hwversion=6", "X", "16M"})
	}
	for i, c := range cases {
		g := filepath.Join(dir, fmt.Sprintf("g%d", i))
		q := filepath.Join(dir, fmt.Sprintf("q%d", i))
		ga := append([]string{"create"}, c...)
		qa := append([]string{"create"}, c...)
		ga[len(ga)-2], qa[len(qa)-2] = g, q
		gr := ok(t, gemu(t, dir, ga...), "gemu-img create")
		qr := ok(t, qemu(t, dir, qa...), "qemu-img create")
		if strings.ReplaceAll(gr.stdout, g, "X") != strings.ReplaceAll(qr.stdout, q, "X") {
			t.Errorf("create %v: printed %q, qemu-img %q", c, gr.stdout, qr.stdout)
		}
		gi := jsonOf(t, ok(t, qemu(t, dir, "info", "--output=json", g), "info").stdout).(map[string]any)
		qi := jsonOf(t, ok(t, qemu(t, dir, "info", "--output=json", q), "info").stdout).(map[string]any)
		keys := []string{"virtual-size", "format", "cluster-size", "format-specific"}
		if c[1] == "vmdk" {
			// VMDK's format-specific data holds a random CID and the file names.
			keys = keys[:3]
			gt := gi["format-specific"].(map[string]any)["data"].(map[string]any)["create-type"]
			qt := qi["format-specific"].(map[string]any)["data"].(map[string]any)["create-type"]
			if gt != qt {
				t.Errorf("create %v: create-type %v vs %v", c, gt, qt)
			}
		}
		for _, k := range keys {
			if !reflect.DeepEqual(gi[k], qi[k]) {
				t.Errorf("create %v: %s: %v vs %v", c, k, gi[k], qi[k])
			}
		}
		r := qemu(t, dir, "compare", g, q)
		if r.code != 0 {
			t.Errorf("create %v: contents differ: %s", c, r.stdout)
		}
	}
}

func TestBadArguments(t *testing.T) {
	dir := t.TempDir()
	pat := makePattern(t, dir, "p.raw", 1<<20, 8)
	for _, args := range [][]string{
		{"frobnicate"},
		{"info", "--frob", pat},
		{"info", "-z", pat},
		{"info", filepath.Join(dir, "missing.img")},
		{"info"},
		{"info", "--output=xml", pat},
		{"info", "-f", "nosuchfmt", pat},
		{"convert", "-O", "raw", filepath.Join(dir, "missing"), filepath.Join(dir, "o.raw")},
		{"convert", "-m", "0", pat, filepath.Join(dir, "o.raw")},
		{"convert", "-S", "100", pat, filepath.Join(dir, "o.raw")},
		{"convert", "-c", "-O", "raw", pat, filepath.Join(dir, "o.raw")},
		{"convert", pat},
		{"create", "-f", "raw", filepath.Join(dir, "x.raw"), "12Q"},
		{"create", "-f", "raw", filepath.Join(dir, "x.raw")},
		{"create", "-f", "raw", "-o", "cluster_size=4k", filepath.Join(dir, "x.raw"), "1M"},
		{"resize", pat},
		{"resize", pat, "bogus"},
		{"check", "-r", "sometimes", pat},
		{"commit", "-f", "raw", pat},
		{"amend", "-f", "raw", "-o", "compat=0.10", pat},
		{"dd", "if=" + pat},
		{"dd", "bogus", "if=" + pat, "of=" + filepath.Join(dir, "o")},
		{"map", "--start-offset=zz", pat},
		{"measure", "-O", "raw"},
		{"snapshot", "-l", "-c", "x", pat},
		{"bench", "-c", "-5", pat},
		{"rebase", "-f", "raw", pat},
		{"info", "json:{\"file.filename\":\"" + pat + "\"}"},
		{"create", "-f", "qcow2", "-b", pat, filepath.Join(dir, "nofmt.qcow2")},
		{"convert", "-O", "qcow2", "-B", pat, pat, filepath.Join(dir, "nofmt2.qcow2")},
		{"rebase", "-u", "-b", pat, pat},
	} {
		r := gemu(t, dir, args...)
		errLine(t, r, strings.Join(args, " "))
	}
	r := gemu(t, dir, "check", "-f", "raw", pat)
	if r.code != 63 {
		t.Errorf("check on raw: exit %d, want 63 as qemu-img", r.code)
	}
	if r := gemu(t, dir, "--version"); r.code != 0 || !strings.Contains(r.stdout, "version") {
		t.Errorf("--version: %d %q", r.code, r.stdout)
	}
	if r := gemu(t, dir, "--help"); r.code != 0 || !strings.Contains(r.stdout, "convert") {
		t.Errorf("--help: %d %q", r.code, r.stdout)
	}
}

// Options may follow operands, short options cluster and carry attached values.
func TestArgumentSyntax(t *testing.T) {
	dir := t.TempDir()
	pat := makePattern(t, dir, "p.raw", 2<<20, 9)
	a := ok(t, gemu(t, dir, "info", "--output=json", "-f", "raw", pat), "info").stdout
	for _, args := range [][]string{{"info", pat, "--output=json", "-f", "raw"}, {"info", pat, "--output", "json", "-fraw"}, {"info", "-fraw", "--output", "json", "--", pat}} {
		if b := ok(t, gemu(t, dir, args...), "info").stdout; b != a {
			t.Errorf("%v: %q, want %q", args, b, a)
		}
	}
	out := filepath.Join(dir, "o.raw")
	r := ok(t, gemu(t, dir, "convert", pat, out, "-qpO", "raw", "-fraw"), "clustered options")
	if r.stdout != "" {
		t.Errorf("-q still printed %q", r.stdout)
	}
	sameBytes(t, pat, out)
	// A probed raw target warns as qemu-img does.
	r = ok(t, gemu(t, dir, "resize", out, "+1M"), "resize probed")
	if !strings.Contains(r.stderr, "WARNING: Image format was not specified for '"+out+"' and probing guessed raw.") {
		t.Errorf("no probing warning: %q", r.stderr)
	}
}

func TestProgress(t *testing.T) {
	dir := t.TempDir()
	pat := makePattern(t, dir, "p.raw", 8<<20, 10)
	r := ok(t, gemu(t, dir, "convert", "-p", "-f", "raw", "-O", "raw", pat, filepath.Join(dir, "o.raw")), "convert -p")
	if !strings.HasPrefix(r.stdout, "    (0.00/100%)\r") || !strings.HasSuffix(r.stdout, "    (100.00/100%)\r\n") {
		t.Errorf("progress output %q", r.stdout)
	}
}

// maskCID blanks the random content ID in a VMDK's embedded descriptor (qemu-img picks
// it at random too), so two conversions can be compared byte for byte.
func maskCID(t *testing.T, p string) {
	t.Helper()
	b := readFile(t, p)
	i := bytes.Index(b, []byte("\nCID="))
	if i < 0 {
		t.Fatalf("%s: no CID line in the descriptor", p)
	}
	for j := i + 5; j < len(b) && b[j] != '\n'; j++ {
		b[j] = 'x'
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBenchMatchesQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	pat := makePattern(t, dir, "p.raw", 2<<20, 18)
	g, q := filepath.Join(dir, "g.raw"), filepath.Join(dir, "q.raw")
	copyFile(t, pat, g)
	copyFile(t, pat, q)
	args := []string{"bench", "-f", "raw", "-w", "-c", "40", "-d", "4", "-s", "8k", "-S", "12k", "-o", "4096", "--pattern=171"}
	gr := ok(t, gemu(t, dir, append(args, g)...), "gemu-img bench -w")
	qr := ok(t, qemu(t, dir, append(args, q)...), "qemu-img bench -w")
	sameBytes(t, g, q)
	if first(gr.stdout) != strings.ReplaceAll(first(qr.stdout), "qemu", "gemu") {
		t.Errorf("bench header %q, qemu-img %q", first(gr.stdout), first(qr.stdout))
	}
	r := ok(t, gemu(t, dir, "bench", "-c", "100", "-f", "raw", pat), "gemu-img bench")
	if !strings.Contains(r.stdout, "Run completed in ") {
		t.Errorf("bench output %q", r.stdout)
	}
}

func first(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

// -B, -n, --target-is-zero and several sources behave as in qemu-img: same guest
// views, and with -B only the source's top layer is copied.
func TestConvertOptionsMatchQemu(t *testing.T) {
	needQemu(t)
	needFormat(t, "qcow2")
	dir := t.TempDir()
	_, _, top := chain(t, dir)
	want := view(t, dir, top)

	// -B: the output keeps mid.qcow2 as backing and allocates only what top allocates.
	for _, tool := range []string{"gemu", "qemu", "gemu-c"} {
		out := filepath.Join(dir, tool+"-B.qcow2")
		args := []string{"convert", "-O", "qcow2", "-B", "mid.qcow2", "-F", "qcow2", top, out}
		if tool == "gemu-c" {
			if !driverHas(t, "qcow2", canCompress) {
				continue
			}
			args = append([]string{"convert", "-c"}, args[1:]...)
			tool = "gemu"
		}
		if tool == "gemu" {
			ok(t, gemu(t, dir, args...), "gemu-img convert -B")
		} else {
			ok(t, qemu(t, dir, args...), "qemu-img convert -B")
		}
		if !reflect.DeepEqual(view(t, dir, out), want) {
			t.Errorf("%s convert -B: view differs", tool)
		}
	}
	gm := jsonOf(t, ok(t, qemu(t, dir, "map", "--output=json", "gemu-B.qcow2"), "map").stdout).([]any)
	qm := jsonOf(t, ok(t, qemu(t, dir, "map", "--output=json", "qemu-B.qcow2"), "map").stdout).([]any)
	if depthSpans(gm) != depthSpans(qm) {
		t.Errorf("convert -B allocation differs:\ngemu-img %s\nqemu-img %s", depthSpans(gm), depthSpans(qm))
	}

	// -n onto an existing image, with and without --target-is-zero.
	for _, extra := range [][]string{nil, {"--target-is-zero"}} {
		out := filepath.Join(dir, "n.qcow2")
		ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", out, "6M"), "create")
		if extra == nil {
			qemuIO(t, dir, out, "qcow2", "write -P 0x99 0 6M") // garbage to overwrite
		}
		ok(t, gemu(t, dir, append([]string{"convert", "-n", "-O", "qcow2"}, append(extra, top, out)...)...), "convert -n")
		if !reflect.DeepEqual(view(t, dir, out), want) {
			t.Errorf("convert -n %v: view differs", extra)
		}
		qemuCheckClean(t, dir, out)
	}

	// Several sources are concatenated.
	a := makePattern(t, dir, "a.raw", 1<<20, 19)
	b := makePattern(t, dir, "b.raw", 3<<20, 20)
	g, q := filepath.Join(dir, "cat.g"), filepath.Join(dir, "cat.q")
	ok(t, gemu(t, dir, "convert", "-f", "raw", "-O", "raw", a, b, g), "gemu-img convert a b")
	ok(t, qemu(t, dir, "convert", "-f", "raw", "-O", "raw", a, b, q), "qemu-img convert a b")
	sameBytes(t, g, q)
}

// depthSpans summarises a qemu-img map as "start+length@depth" for allocated ranges.
func depthSpans(m []any) string {
	var s []string
	for _, e := range m {
		e := e.(map[string]any)
		if e["present"] == true {
			s = append(s, fmt.Sprintf("%v+%v@%v/z=%v", e["start"], e["length"], e["depth"], e["zero"]))
		}
	}
	return strings.Join(s, " ")
}

func TestInfoBackingChainMatchesQemu(t *testing.T) {
	needQemu(t)
	needFormat(t, "qcow2")
	dir := t.TempDir()
	_, _, top := chain(t, dir)
	g := jsonOf(t, ok(t, gemu(t, dir, "info", "--backing-chain", "--output=json", top), "gemu-img info").stdout).([]any)
	q := jsonOf(t, ok(t, qemu(t, dir, "info", "--backing-chain", "--output=json", top), "qemu-img info").stdout).([]any)
	if len(g) != len(q) {
		t.Fatalf("chain length %d, qemu-img %d", len(g), len(q))
	}
	for i := range g {
		for _, k := range []string{"filename", "format", "virtual-size", "backing-filename", "full-backing-filename", "backing-filename-format", "format-specific"} {
			if !reflect.DeepEqual(g[i].(map[string]any)[k], q[i].(map[string]any)[k]) {
				t.Errorf("layer %d %s: %v vs %v", i, k, g[i].(map[string]any)[k], q[i].(map[string]any)[k])
			}
		}
	}
	gh := ok(t, gemu(t, dir, "info", "--backing-chain", top), "info").stdout
	qh := ok(t, qemu(t, dir, "info", "--backing-chain", top), "info").stdout
	if dropLines(gh, "disk size") != dropLines(qh, "disk size") {
		t.Errorf("human chain info:\n--- gemu-img\n%s--- qemu-img\n%s", gh, qh)
	}
	// A loop in the chain is an error, not a hang.
	l1, l2 := filepath.Join(dir, "l1.qcow2"), filepath.Join(dir, "l2.qcow2")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", l1, "1M"), "create")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "-b", "l1.qcow2", "-F", "qcow2", l2), "create")
	ok(t, qemu(t, dir, "rebase", "-u", "-b", "l2.qcow2", "-F", "qcow2", l1), "make loop")
	errLine(t, gemu(t, dir, "info", "--backing-chain", l2), "info on a looping chain")
	errLine(t, gemu(t, dir, "convert", "-O", "raw", l2, filepath.Join(dir, "loop.raw")), "convert a looping chain")
}

// check on every clean image of the matrix: same exit status and output as qemu-img.
func TestCheckCleanImagesMatchQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	for name, src := range qemuSources(t, dir) {
		t.Run(name, func(t *testing.T) {
			g := gemu(t, dir, "check", "-f", src[1], src[0])
			q := qemu(t, dir, "check", "-f", src[1], src[0])
			if g.code != q.code || g.stdout != q.stdout {
				t.Errorf("check: gemu-img exit %d %q, qemu-img exit %d %q", g.code, g.stdout, q.code, q.stdout)
			}
			if g.code == 0 {
				gj := jsonOf(t, gemu(t, dir, "check", "--output=json", "-f", src[1], src[0]).stdout)
				qj := jsonOf(t, qemu(t, dir, "check", "--output=json", "-f", src[1], src[0]).stdout)
				if !reflect.DeepEqual(gj, qj) {
					t.Errorf("check json: gemu-img %v, qemu-img %v", gj, qj)
				}
			}
		})
	}
}

// convert's memory does not grow with the image: a fixed number of chunk buffers are
// in flight whatever the size, for plain and compressed targets.
func TestConvertMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 256 MiB image")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "big.raw")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewSource(21))
	buf := make([]byte, 1<<20)
	for i := 0; i < 256; i++ {
		r.Read(buf[:512<<10]) // half random, half zero-free text
		copy(buf[512<<10:], strings.Repeat("memory bound ", 512<<10/13+1))
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	targets := [][]string{{"-O", "raw"}}
	if haveFormat(t, "qcow2") {
		targets = append(targets, []string{"-O", "qcow2"})
		if driverHas(t, "qcow2", canCompress) {
			targets = append(targets, []string{"-O", "qcow2", "-c", "-o", "compression_type=zstd"})
		}
	}
	for _, tg := range targets {
		out := filepath.Join(dir, "out")
		os.Remove(out)
		cmd := exec.Command(gemuImg, append(append([]string{"convert", "-f", "raw"}, tg...), src, out)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("convert %v: %v %s", tg, err, b)
		}
		rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
		t.Logf("convert %v of 256 MiB: peak RSS %d MiB", tg, rss>>20)
		// The pipeline keeps about two 2 MiB chunks (read data and compressed output)
		// per worker, and there are max(8, cores) workers; the rest is runtime, codec
		// state and driver caches.
		if limit := int64(100<<20) + int64(max(8, runtime.NumCPU()))*(8<<20); rss > limit {
			t.Errorf("convert %v of a 256 MiB image peaked at %d MiB RSS (bound %d MiB)", tg, rss>>20, limit>>20)
		}
	}
}

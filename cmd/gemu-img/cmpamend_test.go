package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// sameRun compares a gemu-img run with a qemu-img run of the same arguments: exit
// status, stdout, and stderr with the program name swapped.
func sameRun(t *testing.T, what string, g, q result) {
	t.Helper()
	gerr := strings.ReplaceAll(g.stderr, "gemu-img", "qemu-img")
	if g.code != q.code || g.stdout != q.stdout || gerr != q.stderr {
		t.Errorf("%s:\ngemu-img exit %d stdout %q stderr %q\nqemu-img exit %d stdout %q stderr %q",
			what, g.code, g.stdout, g.stderr, q.code, q.stdout, q.stderr)
	}
}

// TestCompareExitCodesMatchQemu: identical, different, size mismatches (in the
// common part or the tail), strict mode, missing files, a wrong -f, bad usage and
// progress output, each run by both tools: the same exit code (0 identical, 1
// different, 2 error, 1 with a hint for bad usage), stdout and stderr.
func TestCompareExitCodesMatchQemu(t *testing.T) {
	needQemu(t)
	needFormat(t, "qcow2")
	dir := t.TempDir()
	a := makePattern(t, dir, "a.raw", 1<<20, 31)
	put := func(name string, size, at int64, b []byte) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, readFile(t, a), 0o644); err != nil {
			t.Fatal(err)
		}
		if size > 0 {
			truncateTo(t, p, size)
		}
		if b != nil {
			putBytes(t, p, at, b)
		}
	}
	put("same.raw", 0, 0, nil)
	put("diff.raw", 0, 70000, []byte("x"))
	put("big.raw", 2<<20, 0, nil)
	put("bigd.raw", 2<<20, 1500000, []byte("y"))
	put("bighead.raw", 2<<20, 100, []byte("z"))
	ok(t, qemu(t, dir, "convert", "-O", "qcow2", "a.raw", "a.qcow2"), "convert")
	ok(t, qemu(t, dir, "create", "-q", "-f", "qcow2", "z.qcow2", "1M"), "create")
	for _, args := range [][]string{
		{"a.raw", "same.raw"}, {"a.raw", "diff.raw"}, {"a.raw", "big.raw"}, {"-s", "a.raw", "big.raw"},
		{"a.raw", "bigd.raw"}, {"bigd.raw", "a.raw"}, {"a.raw", "bighead.raw"}, {"a.raw", "missing"},
		{"missing", "a.raw"}, {"-f", "qcow2", "a.raw", "same.raw"}, {"-F", "qcow2", "a.raw", "same.raw"},
		{"a.raw"}, {"a.raw", "a.raw", "a.raw"}, {"a.raw", "a.qcow2"}, {"-s", "a.raw", "a.qcow2"},
		{"-s", "a.qcow2", "z.qcow2"}, {"a.qcow2", "z.qcow2"}, {"-q", "a.raw", "diff.raw"},
		{"-f", "raw", "-F", "raw", "a.raw", "a.qcow2"}, {"-s", "-f", "raw", "-F", "qcow2", "a.raw", "a.qcow2"},
		{"-p", "a.raw", "same.raw"}, {"-p", "a.raw", "diff.raw"}, {"-p", "-q", "a.raw", "diff.raw"},
		{"-p", "a.raw", "missing"},
	} {
		sameRun(t, "compare "+strings.Join(args, " "),
			gemu(t, dir, append([]string{"compare"}, args...)...), qemu(t, dir, append([]string{"compare"}, args...)...))
	}
}

// TestAmendRefusalsMatchQemu: amend on copies of the same images with both tools —
// backing file changes refused with qemu-img's two-line message, creation-only and
// unknown options, bad values, size changes, a missing file, a format without amend:
// the same exit status and messages (no doubled prefixes), and the same image after.
func TestAmendRefusalsMatchQemu(t *testing.T) {
	needQemu(t)
	needFormat(t, "qcow2")
	src := t.TempDir()
	ok(t, qemu(t, src, "create", "-q", "-f", "qcow2", "b.qcow2", "1M"), "create")
	ok(t, qemu(t, src, "create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", "t.qcow2"), "create")
	ok(t, qemu(t, src, "create", "-q", "-f", "qcow2", "o.qcow2", "1M"), "create")
	qemuIO(t, src, "o.qcow2", "qcow2", "write -P 5 0 300k")
	for _, args := range [][]string{
		{"-o", "backing_file=o.qcow2", "t.qcow2"}, {"-o", "backing_fmt=raw", "t.qcow2"},
		{"-o", "backing_file=b.qcow2", "t.qcow2"}, {"-o", "backing_file=b.qcow2,backing_fmt=qcow2", "t.qcow2"},
		{"-o", "backing_file=b.qcow2", "o.qcow2"}, {"-o", "compat=0.10,backing_file=x", "t.qcow2"},
		{"-o", "compat=0.10", "o.qcow2"}, {"-o", "size=2M", "o.qcow2"}, {"-o", "size=512k", "o.qcow2"},
		{"-o", "size=abc", "o.qcow2"}, {"-o", "cluster_size=4096", "o.qcow2"}, {"-o", "foo=bar", "o.qcow2"},
		{"-o", "cluster_size=512,foo=1", "o.qcow2"}, {"o.qcow2"}, {"-o", "compat=1.1", "missing.qcow2"},
		{"-f", "raw", "-o", "size=1M", "o.qcow2"}, {"-o", "refcount_bits=3", "o.qcow2"},
		{"-o", "encrypt.format=luks", "o.qcow2"}, {"-o", "data_file=x", "o.qcow2"},
		{"-o", "lazy_refcounts=maybe", "o.qcow2"}, {"-o", "compat=0.9", "o.qcow2"},
		{}, {"-o", "compat=1.1", "o.qcow2", "t.qcow2"},
	} {
		var runs [2]result
		var infos [2]any
		for i, tool := range []func(*testing.T, string, ...string) result{gemu, qemu} {
			d := t.TempDir()
			for _, f := range []string{"b.qcow2", "t.qcow2", "o.qcow2"} {
				copyFile(t, filepath.Join(src, f), filepath.Join(d, f))
			}
			runs[i] = tool(t, d, append([]string{"amend"}, args...)...)
			img := "o.qcow2"
			if len(args) > 0 {
				img = args[len(args)-1]
			}
			if r := qemu(t, d, "info", "--output=json", img); r.code == 0 {
				m := jsonOf(t, r.stdout).(map[string]any)
				delete(m, "actual-size")
				infos[i] = m
			}
		}
		what := "amend " + strings.Join(args, " ")
		sameRun(t, what, runs[0], runs[1])
		if !reflect.DeepEqual(infos[0], infos[1]) {
			t.Errorf("%s: image after gemu-img %v\nafter qemu-img %v", what, infos[0], infos[1])
		}
	}
}

// TestCheckCommitUsageMatchesQemu: argument errors of check and commit (with
// qemu-img's --help hint), a -b that is not in the chain, a layer without a backing
// file, a missing file: the same exit status and messages as qemu-img.
func TestCheckCommitUsageMatchesQemu(t *testing.T) {
	needQemu(t)
	needFormat(t, "qcow2")
	for _, args := range [][]string{
		{"check"}, {"check", "a.qcow2", "b.qcow2"}, {"check", "-r", "foo", "t.qcow2"},
		{"check", "missing.qcow2"}, {"check", "--output=xml", "t.qcow2"},
		{"commit"}, {"commit", "a", "b"}, {"commit", "b.qcow2"}, {"commit", "missing.qcow2"},
		{"commit", "-b", "nothere.qcow2", "t.qcow2"},
	} {
		var runs [2]result
		for i, tool := range []func(*testing.T, string, ...string) result{gemu, qemu} {
			d := t.TempDir()
			ok(t, qemu(t, d, "create", "-q", "-f", "qcow2", "b.qcow2", "1M"), "create")
			ok(t, qemu(t, d, "create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", "t.qcow2"), "create")
			runs[i] = tool(t, d, args...)
		}
		sameRun(t, strings.Join(args, " "), runs[0], runs[1])
	}
}

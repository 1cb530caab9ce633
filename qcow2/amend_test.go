package qcow2

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"gemu/block"
)

func TestAmend(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "a.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
	qemuIO(t, p, "write -P 0x11 0 200k", "write -z 1M 128k", "write -P 0x22 2M 64k", "write -z 2M 64k", "write -c -P 0x33 3M 64k")
	run(t, "qemu-img", "snapshot", "-c", "s", p)
	want := qemuRaw(t, p)
	steps := []map[string]string{
		{"compat": "0.10"},
		{"compat": "1.1", "lazy_refcounts": "on"},
		{"refcount_bits": "4"},
		{"refcount_bits": "64", "lazy_refcounts": "off"},
		{"refcount_bits": "1"},
		{"refcount_bits": "16", "compat": "0.10"},
	}
	for _, opts := range steps {
		d, err := block.Open(p, block.OpenOptions{Format: "qcow2"})
		if err != nil {
			t.Fatal(err)
		}
		if opts["refcount_bits"] == "1" {
			// A snapshot makes refcounts of 2: width 1 must be refused.
			if err := d.(block.Amender).Amend(opts); err == nil {
				t.Fatalf("amend %v: no error with refcounts of 2", opts)
			}
			d.Close()
			continue
		}
		if err := d.(block.Amender).Amend(opts); err != nil {
			t.Fatalf("amend %v: %v", opts, err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		qemuCheckClean(t, p)
		checkInfo(t, p)
		checkMap(t, p)
		if got := qemuRaw(t, p); !bytes.Equal(got, want) {
			t.Fatalf("amend %v changed data at %d", opts, firstDiff(got, want))
		}
	}
}

func TestSetBacking(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	b1, b2, top := filepath.Join(dir, "b1.qcow2"), filepath.Join(dir, "b2.qcow2"), filepath.Join(dir, "top.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", b1, "2M")
	qemuIO(t, b1, "write -P 1 0 2M")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", b2, "2M")
	qemuIO(t, b2, "write -P 2 0 2M")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "b1.qcow2", "-F", "qcow2", top)
	qemuIO(t, top, "write -P 3 64k 64k")
	d, err := block.Open(top, block.OpenOptions{Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.(block.BackingSetter).SetBacking("b2.qcow2", "qcow2"); err != nil {
		t.Fatal(err)
	}
	d.Close()
	qemuCheckClean(t, top)
	checkInfo(t, top)
	checkRead(t, top)
	got := qemuRaw(t, top)
	if got[0] != 2 || got[64<<10] != 3 {
		t.Fatalf("rebased image reads %d/%d", got[0], got[64<<10])
	}
}

func TestMeasure(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "100M")
	qemuIO(t, src, "write -P 1 0 3M", "write -P 2 10M 100k", "write -z 20M 1M", "write -P 3 99M 1k")
	f, _ := block.Lookup("qcow2")
	m := f.(block.Measurer)
	cases := []map[string]string{
		nil,
		{"cluster_size": "512"},
		{"cluster_size": "2M"},
		{"refcount_bits": "1"},
		{"refcount_bits": "64", "extended_l2": "on"},
		{"preallocation": "full"},
	}
	for _, o := range cases {
		args := []string{"measure", "--output=json", "-O", "qcow2"}
		var opt []string
		for k, v := range o {
			opt = append(opt, k+"="+v)
		}
		if len(opt) > 0 {
			args = append(args, "-o", joinComma(opt))
		}
		for _, withSrc := range []bool{false, true} {
			var want struct {
				Required int64 `json:"required"`
				Full     int64 `json:"fully-allocated"`
			}
			var s block.Driver
			a := args
			if withSrc {
				a = append(a, src)
				s = openRO(t, src)
			} else {
				a = append(a, "--size", "7G")
			}
			json.Unmarshal(run(t, "qemu-img", a...), &want)
			req, full, err := m.Measure(7<<30, o, s)
			if s != nil {
				s.Close()
			}
			if err != nil {
				t.Fatal(err)
			}
			if req != want.Required || full != want.Full {
				t.Errorf("measure %v src=%v: got %d/%d want %d/%d", o, withSrc, req, full, want.Required, want.Full)
			}
		}
	}
}

func joinComma(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return fmt.Sprint(out)
}

func TestMakeEmpty(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "4M")
	qemuIO(t, base, "write -P 1 0 4M")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
	qemuIO(t, top, "write -P 2 0 1M", "write -z 2M 64k", "write -c -P 3 3M 64k")
	run(t, "qemu-img", "snapshot", "-c", "s", top)
	qemuIO(t, top, "write -P 4 512k 1M")
	d, err := block.Open(top, block.OpenOptions{Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.(block.Emptier).MakeEmpty(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	qemuCheckClean(t, top)
	checkMap(t, top)
	if !bytes.Equal(qemuRaw(t, top), qemuRaw(t, base)) {
		t.Fatal("emptied image does not read as its backing file")
	}
	// The snapshot still holds its data.
	run(t, "qemu-img", "snapshot", "-a", "s", top)
	if got := qemuRaw(t, top); got[0] != 2 || got[3<<20] != 3 {
		t.Fatalf("snapshot data lost: %d %d", got[0], got[3<<20])
	}
}

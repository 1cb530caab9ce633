package qcow2

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gemu/block"
)

// Tests against the real oracle: images made by qemu-img/qemu-io are read through the
// driver and compared with qemu-img's own raw conversion, map and info; images written
// by the driver must pass qemu-img check and compare.

func needQemu(t *testing.T) {
	t.Helper()
	for _, p := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed (apt-get install qemu-utils)", p)
		}
	}
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out
}

func qemuIO(t *testing.T, file string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := run(t, "qemu-io", append(args, file)...)
	if bytes.Contains(out, []byte("error")) || bytes.Contains(out, []byte("failed")) {
		t.Fatalf("qemu-io %v: %s", cmds, out)
	}
}

func openRO(t *testing.T, path string) block.Driver {
	t.Helper()
	d, err := block.Open(path, block.OpenOptions{ReadOnly: true, Format: "qcow2"})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return d
}

// checkRead compares every guest byte with qemu-img convert -O raw.
func checkRead(t *testing.T, path string) {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "ref.raw")
	run(t, "qemu-img", "convert", "-O", "raw", path, raw)
	want, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	d := openRO(t, path)
	defer d.Close()
	if d.Size() != int64(len(want)) {
		t.Fatalf("%s: size %d, qemu-img %d", path, d.Size(), len(want))
	}
	got := make([]byte, len(want))
	// Read in odd-sized pieces to exercise partial clusters.
	for off := 0; off < len(got); {
		n := min(len(got)-off, 777777)
		if _, err := d.ReadAt(got[off:off+n], int64(off)); err != nil {
			t.Fatalf("%s: read at %d: %v", path, off, err)
		}
		off += n
	}
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: first difference at byte %d: got %#x want %#x", path, i, got[i], want[i])
			}
		}
	}
}

type mapEntry struct {
	Start   int64  `json:"start"`
	Length  int64  `json:"length"`
	Depth   int    `json:"depth"`
	Present bool   `json:"present"`
	Zero    bool   `json:"zero"`
	Data    bool   `json:"data"`
	Offset  *int64 `json:"offset,omitempty"`
}

// ourMap builds qemu-img map's JSON entries from BlockStatus, merging as qemu-img does.
func ourMap(t *testing.T, d block.Driver) []mapEntry {
	var out []mapEntry
	for off := int64(0); off < d.Size(); {
		st, err := d.BlockStatus(off, d.Size()-off)
		if err != nil {
			t.Fatalf("BlockStatus(%d): %v", off, err)
		}
		if st.Length <= 0 {
			t.Fatalf("BlockStatus(%d): length %d", off, st.Length)
		}
		e := mapEntry{Start: off, Length: st.Length, Depth: st.Depth, Present: st.Allocated, Zero: st.Zero, Data: st.Data}
		if st.HostOffset >= 0 {
			h := st.HostOffset
			e.Offset = &h
		}
		if n := len(out); n > 0 {
			p := &out[n-1]
			if p.Depth == e.Depth && p.Present == e.Present && p.Zero == e.Zero && p.Data == e.Data &&
				(p.Offset == nil) == (e.Offset == nil) && (p.Offset == nil || *p.Offset+p.Length == *e.Offset) {
				p.Length += e.Length
				off += st.Length
				continue
			}
		}
		out = append(out, e)
		off += st.Length
	}
	return out
}

func checkMap(t *testing.T, path string) {
	t.Helper()
	var want []mapEntry
	if err := json.Unmarshal(run(t, "qemu-img", "map", "--output=json", path), &want); err != nil {
		t.Fatal(err)
	}
	d := openRO(t, path)
	defer d.Close()
	got := ourMap(t, d)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: map differs\n got: %s\nwant: %s", path, fmtMap(got), fmtMap(want))
	}
}

func fmtMap(m []mapEntry) string {
	var b strings.Builder
	for _, e := range m {
		o := "-"
		if e.Offset != nil {
			o = fmt.Sprint(*e.Offset)
		}
		fmt.Fprintf(&b, "\n  {%d +%d d%d p%v z%v data%v off %s}", e.Start, e.Length, e.Depth, e.Present, e.Zero, e.Data, o)
	}
	return b.String()
}

// checkInfo compares Info with qemu-img info --output=json on the shared fields.
func checkInfo(t *testing.T, path string) {
	t.Helper()
	var want map[string]any
	if err := json.Unmarshal(run(t, "qemu-img", "info", "--output=json", path), &want); err != nil {
		t.Fatal(err)
	}
	d := openRO(t, path)
	defer d.Close()
	info, err := d.(block.Infoer).Info()
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(info.FormatSpecific)
	var fs any
	json.Unmarshal(js, &fs)
	if !reflect.DeepEqual(fs, want["format-specific"]) {
		t.Errorf("%s: format-specific\n got %v\nwant %v", path, fs, want["format-specific"])
	}
	if float64(info.ClusterSize) != want["cluster-size"] {
		t.Errorf("%s: cluster size %d, want %v", path, info.ClusterSize, want["cluster-size"])
	}
	if info.DirtyFlag != want["dirty-flag"] {
		t.Errorf("%s: dirty flag %v, want %v", path, info.DirtyFlag, want["dirty-flag"])
	}
	// actual-size counts the image file only, not an external data file.
	if as, err := d.(block.ActualSizer).ActualSize(); err != nil || float64(as) != want["actual-size"] {
		t.Errorf("%s: actual size %d (%v), want %v", path, as, err, want["actual-size"])
	}
	if float64(d.Size()) != want["virtual-size"] {
		t.Errorf("%s: size %d, want %v", path, d.Size(), want["virtual-size"])
	}
	bf, _ := want["backing-filename"].(string)
	fbf, _ := want["full-backing-filename"].(string)
	bff, _ := want["backing-filename-format"].(string)
	if info.BackingFilename != bf || info.FullBackingFilename != fbf || info.BackingFilenameFormat != bff {
		t.Errorf("%s: backing %q %q %q, want %q %q %q", path, info.BackingFilename, info.FullBackingFilename,
			info.BackingFilenameFormat, bf, fbf, bff)
	}
	ws, _ := want["snapshots"].([]any)
	if len(ws) != len(info.Snapshots) {
		t.Fatalf("%s: %d snapshots, want %d", path, len(info.Snapshots), len(ws))
	}
	for i, w := range ws {
		w := w.(map[string]any)
		s := info.Snapshots[i]
		got := map[string]any{"id": s.ID, "name": s.Name, "vm-state-size": float64(s.VMStateSize),
			"date-sec": float64(s.DateSec), "date-nsec": float64(s.DateNsec),
			"vm-clock-sec": float64(s.VMClockNsec / 1e9), "vm-clock-nsec": float64(s.VMClockNsec % 1e9)}
		if s.ICount >= 0 {
			got["icount"] = float64(s.ICount)
		}
		if !reflect.DeepEqual(got, w) {
			t.Errorf("%s: snapshot %d\n got %v\nwant %v", path, i, got, w)
		}
	}
}

// qemuCheckClean runs qemu-img check and fails on errors or leaks.
func qemuCheckClean(t *testing.T, path string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "check", "--output=json", path).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img check %s: %v\n%s", path, err, out)
	}
}

// imageCase is one qemu-img made image with data written by qemu-io.
type imageCase struct {
	name string
	opts string
	size string
	cmds []string
}

func dataCmds(cluster int64) []string {
	c := func(n int64) string { return fmt.Sprint(n) }
	return []string{
		"write -P 0x11 0 " + c(max(cluster, 65536)),
		"write -P 0x22 " + c(3*cluster+100*512) + " 8k",
		"write -z " + c(min(16*cluster, 4<<20)) + " " + c(2*cluster),
		"write -P 0x33 1M 300k",
		"write -z -u 1M 64k",
		"write -P 0x44 3M 4k",
		"write -z 3M " + c(max(cluster, 65536)),
	}
}

func TestReadMatrix(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	cases := []imageCase{
		{"v3", "", "8M", dataCmds(65536)},
		{"v2", "compat=0.10", "8M", dataCmds(65536)},
		{"c512", "cluster_size=512", "4M", dataCmds(512)},
		{"c4k_rc1", "cluster_size=4096,refcount_bits=1", "6M", dataCmds(4096)},
		{"c2m", "cluster_size=2M", "12M", dataCmds(2 << 20)},
		{"rc2", "refcount_bits=2", "8M", dataCmds(65536)},
		{"rc4", "refcount_bits=4", "8M", dataCmds(65536)},
		{"rc8", "refcount_bits=8", "8M", dataCmds(65536)},
		{"rc32", "refcount_bits=32", "8M", dataCmds(65536)},
		{"rc64", "refcount_bits=64", "8M", dataCmds(65536)},
		{"l2ext", "extended_l2=on", "8M", dataCmds(65536)},
		{"l2ext16k", "extended_l2=on,cluster_size=16k", "8M", dataCmds(16384)},
		{"lazy", "lazy_refcounts=on", "8M", dataCmds(65536)},
		{"zstd", "compression_type=zstd", "8M", []string{"write -c -P 0x55 0 64k", "write -c -P 0x66 4M 256k", "write -P 0x77 6M 64k"}},
		{"zlib", "", "8M", []string{"write -c -P 0x55 0 64k", "write -c -P 0x66 4M 256k", "write -P 0x77 6M 64k", "write -P 0x88 4M 1k"}},
		{"zlib512", "cluster_size=512", "2M", []string{"write -c -P 0x55 0 64k", "write -c -P 0x67 1M 512"}},
		{"zstd2m", "compression_type=zstd,cluster_size=2M", "8M", []string{"write -c -P 0x55 2M 2M", "write -P 0x12 0 4k"}},
		{"prealloc_meta", "preallocation=metadata", "4M", []string{"write -P 0x99 64k 64k"}},
		{"prealloc_falloc", "preallocation=falloc", "4M", []string{"write -P 0x99 64k 64k"}},
		{"prealloc_full", "preallocation=full", "2M", []string{"write -P 0x99 64k 64k"}},
		{"prealloc_l2ext", "preallocation=metadata,extended_l2=on", "4M", []string{"write -P 0x99 64k 4k"}},
		{"datafile", "data_file=DIR/df.raw", "4M", []string{"write -P 0x5a 0 100k", "write -z 1M 64k"}},
		{"datafile_raw", "data_file=DIR/dfr.raw,data_file_raw=on", "4M", []string{"write -P 0x5a 0 100k"}},
		{"datafile_raw_l2ext", "data_file=DIR/dfrx.raw,data_file_raw=on,extended_l2=on", "4M", []string{"write -P 0x5a 8k 100k"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.name+".qcow2")
			args := []string{"create", "-q", "-f", "qcow2"}
			if c.opts != "" {
				args = append(args, "-o", strings.ReplaceAll(c.opts, "DIR", dir))
			}
			run(t, "qemu-img", append(args, p, c.size)...)
			qemuIO(t, p, c.cmds...)
			checkRead(t, p)
			checkMap(t, p)
			checkInfo(t, p)
			d := openRO(t, p)
			defer d.Close()
			r, err := d.(block.Checker).Check(block.RepairNone)
			if err != nil {
				t.Fatal(err)
			}
			compareCheck(t, p, r)
		})
	}
}

// compareCheck compares a CheckResult with qemu-img check --output=json.
func compareCheck(t *testing.T, path string, r *block.CheckResult) {
	t.Helper()
	out, _ := exec.Command("qemu-img", "check", "--output=json", path).Output()
	var want block.CheckResult
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatalf("qemu-img check output: %v: %s", err, out)
	}
	got := *r
	got.Messages = nil
	want.Filename, got.Filename = "", ""
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: check\n got %+v\nwant %+v\nmessages: %q", path, got, want, r.Messages)
	}
}

func TestBackingChain(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	mid := filepath.Join(dir, "mid.qcow2")
	top := filepath.Join(dir, "sub", "top.qcow2")
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "6M")
	qemuIO(t, base, "write -P 0x01 0 2M", "write -P 0x02 4M 1M")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", mid, "8M")
	qemuIO(t, mid, "write -P 0x03 1M 64k", "write -z 4M 64k", "write -P 0x04 7M 4k")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", "-b", "../mid.qcow2", "-F", "qcow2", top, "8M")
	qemuIO(t, top, "write -P 0x05 8k 4k", "write -z 1M 32k")
	for _, p := range []string{mid, top} {
		checkRead(t, p)
		checkMap(t, p)
		checkInfo(t, p)
	}
	// A raw backing file named by format.
	rawb := filepath.Join(dir, "b.raw")
	os.WriteFile(rawb, bytes.Repeat([]byte{0xab}, 1<<20), 0o644)
	ov := filepath.Join(dir, "ov.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "b.raw", "-F", "raw", ov, "2M")
	qemuIO(t, ov, "write -P 0x06 64k 64k")
	checkRead(t, ov)
	checkInfo(t, ov)
	checkMap(t, ov)
	// A backing file shorter than the overlay: past its end reads zeroes at depth 0.
	short := filepath.Join(dir, "short.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", short, "10M")
	qemuIO(t, short, "write -P 0x07 9M 4k")
	checkRead(t, short)
	checkMap(t, short)
}

func TestSnapshotsRead(t *testing.T) {
	needQemu(t)
	p := filepath.Join(t.TempDir(), "s.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
	qemuIO(t, p, "write -P 0x01 0 1M")
	run(t, "qemu-img", "snapshot", "-c", "one", p)
	qemuIO(t, p, "write -P 0x02 512k 1M")
	run(t, "qemu-img", "snapshot", "-c", "two", p)
	qemuIO(t, p, "write -P 0x03 0 64k")
	checkRead(t, p)
	checkMap(t, p)
	checkInfo(t, p)
	d := openRO(t, p)
	defer d.Close()
	r, err := d.(block.Checker).Check(block.RepairNone)
	if err != nil {
		t.Fatal(err)
	}
	compareCheck(t, p, r)
}

// Whole compressed clusters are decoded straight into the caller's buffer; the bytes
// past the requested range (spare capacity of the slice) must stay untouched.
func TestCompressedReadKeepsSpareCapacity(t *testing.T) {
	needQemu(t)
	for _, ct := range []string{"zlib", "zstd"} {
		t.Run(ct, func(t *testing.T) {
			dir := t.TempDir()
			p, raw := filepath.Join(dir, "c.qcow2"), filepath.Join(dir, "src.raw")
			var text []byte
			for i := 0; len(text) < 1<<20; i++ {
				text = fmt.Appendf(text, "line %08d of some compressible text\n", i)
			}
			if err := os.WriteFile(raw, text[:1<<20], 0o644); err != nil {
				t.Fatal(err)
			}
			run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type="+ct, raw, p)
			want := qemuRaw(t, p)
			d := openRO(t, p)
			defer d.Close()
			buf := bytes.Repeat([]byte{0xee}, 3<<16)
			if _, err := d.ReadAt(buf[:64<<10], 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf[:64<<10], want[:64<<10]) {
				t.Fatal("cluster 0 reads wrong")
			}
			for i, c := range buf[64<<10:] {
				if c != 0xee {
					t.Fatalf("decoding wrote past the requested range (at +%d)", i)
				}
			}
		})
	}
}

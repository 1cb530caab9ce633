// Package fmttest holds the test machinery the simple format drivers share: qemu-img
// and qemu-io oracles, patterned data, the interop matrix (qemu-img creates and
// qemu-io writes, gemu reads; gemu creates and writes, qemu-img checks and compares),
// and hostile corpora run in a child process under an address-space limit. Only
// _test.go files import it.
package fmttest

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"gemu/block"
)

// NeedQemu skips the test when a tool is missing.
func NeedQemu(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range append([]string{"qemu-img"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install qemu-utils): no oracle", tool)
		}
	}
}

// Run runs a command in dir and fails the test with its output on error.
func Run(t testing.TB, dir, name string, args ...string) string {
	t.Helper()
	c := exec.Command(name, args...)
	c.Dir = dir
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Patterned returns size bytes mixing text-like, random and zero 64 KiB runs, with
// data straddling run boundaries and in the last bytes.
func Patterned(size int64, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, size)
	const g = 65536
	for off := int64(0); off < size; off += g {
		end := min(off+g, size)
		switch r.IntN(6) {
		case 0, 5: // zero
		case 1:
			for i := off; i < end; i++ {
				b[i] = byte(r.Uint32())
			}
		case 2:
			words := []string{"alpha ", "beta ", "gamma\n", "image ", "block "}
			for i := off; i < end; {
				i += int64(copy(b[i:end], words[r.IntN(len(words))]))
			}
		case 3:
			s := off + int64(r.IntN(g/2))
			for i := s; i < min(s+int64(r.IntN(g/2)+1), end); i++ {
				b[i] = byte(i)
			}
		case 4:
			for range 20 {
				b[off+int64(r.IntN(int(end-off)))] = 0xA5
			}
		}
	}
	if size > 10 {
		b[size-1] = 0x5A
	}
	return b
}

// Open opens path with the named registered format.
func Open(t testing.TB, format, path string, ro bool) block.Driver {
	t.Helper()
	f, err := block.Lookup(format)
	if err != nil {
		t.Fatal(err)
	}
	d, err := f.Open(path, block.OpenOptions{ReadOnly: ro, Format: format})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return d
}

// ToRaw writes the driver's content to a sparse raw file using BlockStatus: ranges
// reported as zero are skipped, so a wrong status makes the comparison fail.
func ToRaw(t testing.TB, d block.Driver, out string) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(d.Size()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < d.Size(); {
		st, err := d.BlockStatus(off, d.Size()-off)
		if err != nil {
			t.Fatalf("BlockStatus(%d): %v", off, err)
		}
		if st.Length <= 0 {
			t.Fatalf("BlockStatus(%d) returned length %d", off, st.Length)
		}
		if !st.Zero {
			for o := off; o < off+st.Length; {
				n := min(int64(len(buf)), off+st.Length-o)
				if _, err := d.ReadAt(buf[:n], o); err != nil {
					t.Fatalf("ReadAt(%d,%d): %v", o, n, err)
				}
				if _, err := f.WriteAt(buf[:n], o); err != nil {
					t.Fatal(err)
				}
				o += n
			}
		}
		off += st.Length
	}
}

// MapEntry is one qemu-img map --output=json entry.
type MapEntry struct {
	Start   int64  `json:"start"`
	Length  int64  `json:"length"`
	Depth   int    `json:"depth"`
	Present bool   `json:"present"`
	Zero    bool   `json:"zero"`
	Data    bool   `json:"data"`
	Offset  *int64 `json:"offset,omitempty"`
}

// OurMap renders BlockStatus runs merged the way qemu-img map merges them.
func OurMap(t testing.TB, d block.Driver) string {
	t.Helper()
	var m []MapEntry
	if d.Size() == 0 {
		m = append(m, MapEntry{}) // qemu-img map prints one empty entry
	}
	for off := int64(0); off < d.Size(); {
		st, err := d.BlockStatus(off, d.Size()-off)
		if err != nil {
			t.Fatal(err)
		}
		e := MapEntry{Start: off, Length: st.Length, Depth: st.Depth, Present: st.Allocated, Zero: st.Zero, Data: st.Data}
		if st.HostOffset >= 0 {
			h := st.HostOffset
			e.Offset = &h
		}
		if n := len(m); n > 0 {
			p := &m[n-1]
			contig := (p.Offset == nil) == (e.Offset == nil) && (p.Offset == nil || *p.Offset+p.Length == *e.Offset)
			if p.Present == e.Present && p.Zero == e.Zero && p.Data == e.Data && p.Depth == e.Depth && contig {
				p.Length += e.Length
				off += st.Length
				continue
			}
		}
		m = append(m, e)
		off += st.Length
	}
	return mapString(m)
}

// QemuMap is qemu-img map --output=json of img.
func QemuMap(t testing.TB, format, img string) string {
	var m []MapEntry
	if err := json.Unmarshal([]byte(Run(t, "", "qemu-img", "map", "-U", "-f", format, "--output=json", img)), &m); err != nil {
		t.Fatal(err)
	}
	return mapString(m)
}

func mapString(m []MapEntry) string {
	b, _ := json.Marshal(m)
	return string(bytes.ReplaceAll(b, []byte("},{"), []byte("},\n{")))
}

// QemuInfo is qemu-img info --output=json of img, decoded.
func QemuInfo(t testing.TB, format, img string) map[string]any {
	var m map[string]any
	if err := json.Unmarshal([]byte(Run(t, "", "qemu-img", "info", "-U", "-f", format, "--output=json", img)), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// CheckInfo compares the driver's info with qemu-img info, field by field.
func CheckInfo(t testing.TB, d block.Driver, format, img string) {
	t.Helper()
	q := QemuInfo(t, format, img)
	var info block.ImageInfo
	if in, ok := d.(block.Infoer); ok {
		p, err := in.Info()
		if err != nil {
			t.Fatal(err)
		}
		info = *p
	}
	num := func(k string) int64 { v, _ := q[k].(float64); return int64(v) }
	str := func(k string) string { v, _ := q[k].(string); return v }
	if num("virtual-size") != d.Size() {
		t.Errorf("virtual-size: qemu %d, ours %d", num("virtual-size"), d.Size())
	}
	if num("cluster-size") != info.ClusterSize {
		t.Errorf("cluster-size: qemu %d, ours %d", num("cluster-size"), info.ClusterSize)
	}
	if str("backing-filename") != info.BackingFilename || str("backing-filename-format") != info.BackingFilenameFormat {
		t.Errorf("backing: qemu %q (%q), ours %q (%q)", str("backing-filename"), str("backing-filename-format"), info.BackingFilename, info.BackingFilenameFormat)
	}
	if df, ok := q["dirty-flag"].(bool); ok && df != info.DirtyFlag {
		t.Errorf("dirty-flag: qemu %v, ours %v", df, info.DirtyFlag)
	}
	a, _ := json.Marshal(q["format-specific"])
	var fs any
	if info.FormatSpecific != nil {
		fs = info.FormatSpecific
	}
	b, _ := json.Marshal(fs)
	if !bytes.Equal(a, b) {
		t.Errorf("format-specific: qemu %s, ours %s", a, b)
	}
	if as, ok := d.(block.ActualSizer); ok {
		n, err := as.ActualSize()
		if err != nil || num("actual-size") != n {
			t.Errorf("actual-size: qemu %d, ours %d (%v)", num("actual-size"), n, err)
		}
	}
}

// CheckLikeQemu compares the driver's Check with qemu-img check --output=json.
func CheckLikeQemu(t testing.TB, d block.Driver, format, img string) {
	t.Helper()
	ck, ok := d.(block.Checker)
	if !ok {
		return
	}
	c := exec.Command("qemu-img", "check", "-U", "-f", format, "--output=json", img)
	out, _ := c.Output()
	var q map[string]any
	if err := json.Unmarshal(out, &q); err != nil {
		t.Fatalf("qemu-img check: %v: %s", err, out)
	}
	r, err := ck.Check(block.RepairNone)
	if err != nil {
		t.Fatal(err)
	}
	ours, _ := json.Marshal(r)
	var o map[string]any
	json.Unmarshal(ours, &o)
	for _, k := range []string{"check-errors", "image-end-offset", "total-clusters", "allocated-clusters", "fragmented-clusters", "corruptions", "leaks", "corruptions-fixed"} {
		if fmt.Sprint(q[k]) != fmt.Sprint(o[k]) {
			t.Errorf("check %s: qemu %v, ours %v", k, q[k], o[k])
		}
	}
}

// ReadCase is one image qemu-img creates and qemu-io writes for gemu to read.
type ReadCase struct {
	Opts string   // -o options ("" for none)
	Size string   // qemu-img size argument
	IO   []string // qemu-io -c commands
	// NoMap skips the map comparison.
	NoMap bool
}

// ReadMatrix: each image qemu-img makes reads through gemu equal to qemu-img convert
// -O raw, and info, map and check agree with qemu-img's.
func ReadMatrix(t *testing.T, format string, cases []ReadCase) {
	NeedQemu(t, "qemu-io")
	dir := t.TempDir()
	for i, c := range cases {
		t.Run(fmt.Sprintf("%d:%s:%s", i, c.Opts, c.Size), func(t *testing.T) {
			img := filepath.Join(dir, fmt.Sprintf("q%d.%s", i, format))
			args := []string{"create", "-q", "-f", format}
			if c.Opts != "" {
				args = append(args, "-o", c.Opts)
			}
			Run(t, dir, "qemu-img", append(args, img, c.Size)...)
			if len(c.IO) > 0 {
				a := []string{"-f", format}
				for _, cmd := range c.IO {
					a = append(a, "-c", cmd)
				}
				Run(t, dir, "qemu-io", append(a, img)...)
			}
			ref := img + ".ref"
			Run(t, dir, "qemu-img", "convert", "-U", "-f", format, "-O", "raw", img, ref)
			d := Open(t, format, img, true)
			defer d.Close()
			ours := img + ".ours"
			ToRaw(t, d, ours)
			Run(t, dir, "qemu-img", "compare", "-f", "raw", "-F", "raw", ref, ours)
			if st, _ := os.Stat(ref); st.Size() != d.Size() {
				t.Errorf("size: qemu %d, ours %d", st.Size(), d.Size())
			}
			if !c.NoMap {
				if a, b := QemuMap(t, format, img), OurMap(t, d); a != b {
					t.Errorf("map differs:\nqemu:\n%s\nours:\n%s", a, b)
				}
			}
			CheckInfo(t, d, format, img)
			CheckLikeQemu(t, d, format, img)
		})
	}
}

// WriteCase is one image gemu creates and fills from patterned raw data.
type WriteCase struct {
	Opts map[string]string
	Size int64
	Seed uint64
	// QemuCheck runs qemu-img check on the result (formats qemu checks).
	QemuCheck bool
}

// WriteMatrix: gemu creates each image and converts patterned raw data into it;
// qemu-img check finds it clean and qemu-img compare finds it equal to the raw data;
// gemu reads it back equal too.
func WriteMatrix(t *testing.T, format string, cases []WriteCase) {
	NeedQemu(t)
	dir := t.TempDir()
	f, err := block.Lookup(format)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("%d:%v:%d", i, c.Opts, c.Size), func(t *testing.T) {
			raw := filepath.Join(dir, fmt.Sprintf("src%d.raw", i))
			if err := os.WriteFile(raw, Patterned(c.Size, c.Seed), 0o644); err != nil {
				t.Fatal(err)
			}
			img := filepath.Join(dir, fmt.Sprintf("g%d.%s", i, format))
			if err := f.Create(img, block.CreateOptions{Size: c.Size, Options: c.Opts}); err != nil {
				t.Fatal(err)
			}
			dst := Open(t, format, img, false)
			src := Open(t, "raw", raw, true)
			if dst.Size() < src.Size() {
				t.Fatalf("created size %d < requested %d", dst.Size(), src.Size())
			}
			if err := block.Convert(src, dst, block.ConvertOptions{Sparse: 4096, TargetIsZero: true}); err != nil {
				t.Fatal(err)
			}
			src.Close()
			if err := dst.Close(); err != nil {
				t.Fatal(err)
			}
			if c.QemuCheck {
				Run(t, dir, "qemu-img", "check", "-f", format, img)
			}
			Run(t, dir, "qemu-img", "compare", "-f", format, "-F", "raw", img, raw)
			d := Open(t, format, img, true)
			defer d.Close()
			back := img + ".back"
			ToRaw(t, d, back)
			Run(t, dir, "qemu-img", "compare", "-f", "raw", "-F", "raw", back, raw)
			q := QemuInfo(t, format, img)
			if int64(q["virtual-size"].(float64)) != d.Size() {
				t.Errorf("virtual-size: qemu %v, ours %d", q["virtual-size"], d.Size())
			}
		})
	}
}

// CreateLikeQemu: for each option set, gemu's create and qemu-img's give the same
// virtual size and cluster size, and qemu-img check finds gemu's image clean.
func CreateLikeQemu(t *testing.T, format string, opts []string, sizes []string, check bool) {
	NeedQemu(t)
	dir := t.TempDir()
	f, _ := block.Lookup(format)
	for _, o := range opts {
		for _, s := range sizes {
			q := filepath.Join(dir, "q."+format)
			g := filepath.Join(dir, "g."+format)
			args := []string{"create", "-q", "-f", format}
			m := map[string]string{}
			if o != "" {
				args = append(args, "-o", o)
				for _, kv := range strings.Split(o, ",") {
					k, v, _ := strings.Cut(kv, "=")
					m[k] = v
				}
			}
			Run(t, dir, "qemu-img", append(args, q, s)...)
			size, err := block.ParseSize(s, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Create(g, block.CreateOptions{Size: size, Options: m}); err != nil {
				t.Fatalf("%s %s: %v", o, s, err)
			}
			qi, gi := QemuInfo(t, format, q), QemuInfo(t, format, g)
			for _, k := range []string{"virtual-size", "cluster-size"} {
				if fmt.Sprint(qi[k]) != fmt.Sprint(gi[k]) {
					t.Errorf("-o %s size %s: %s qemu %v, gemu %v", o, s, k, qi[k], gi[k])
				}
			}
			qs, _ := os.Stat(q)
			gs, _ := os.Stat(g)
			if qs.Size() != gs.Size() {
				t.Errorf("-o %s size %s: file size qemu %d, gemu %d", o, s, qs.Size(), gs.Size())
			}
			if check {
				Run(t, dir, "qemu-img", "check", "-f", format, g)
			}
		}
	}
}

// HostileCase is one crafted image and the error it must give ("" : it must read).
type HostileCase struct {
	Name string
	Want string
	Make func(t testing.TB) []byte
}

var updateHostile = flag.Bool("update-hostile", false, "rewrite testdata/hostile from the hostile cases")

const childEnv = "GEMU_FMTTEST_HOSTILE"

// asLimit is the address-space limit of the child that opens hostile images: an
// image that made the driver allocate by a size field it read would die there.
const asLimit = 2 << 30

// Exercise opens path read-only and reads, maps and checks all of it (up to 64 MiB),
// returning the first error.
func Exercise(format, path string) error {
	f, err := block.Lookup(format)
	if err != nil {
		return err
	}
	d, err := f.Open(path, block.OpenOptions{ReadOnly: true, Format: format})
	if err != nil {
		return err
	}
	defer d.Close()
	if in, ok := d.(block.Infoer); ok {
		if _, err := in.Info(); err != nil {
			return err
		}
	}
	limit := min(d.Size(), 64<<20)
	for off := int64(0); off < limit; {
		st, err := d.BlockStatus(off, limit-off)
		if err != nil {
			return err
		}
		if st.Length <= 0 {
			return errors.New("BlockStatus made no progress")
		}
		off += st.Length
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < limit; off += int64(len(buf)) {
		n := min(int64(len(buf)), limit-off)
		if _, err := d.ReadAt(buf[:n], off); err != nil && err != io.EOF {
			return err
		}
	}
	if ck, ok := d.(block.Checker); ok {
		if _, err := ck.Check(block.RepairNone); err != nil && !errors.Is(err, block.ErrReadOnly) {
			return err
		}
	}
	return nil
}

// HostileChild is called first by each package's TestMain: in the child process it
// exercises the image named by the environment under the address-space limit,
// prints the outcome and exits.
func HostileChild(format string) {
	path := os.Getenv(childEnv)
	if path == "" {
		return
	}
	unix.Setrlimit(unix.RLIMIT_AS, &unix.Rlimit{Cur: asLimit, Max: asLimit})
	err := Exercise(format, path)
	if err != nil {
		fmt.Printf("ERR %s\n", err)
	} else {
		fmt.Printf("OK\n")
	}
	os.Exit(0)
}

// Hostile builds each case and runs it in a child under the address-space limit: it
// must give its one-line error (or read cleanly when Want is ""), without a panic
// or a runtime fatal error. With -update-hostile it also writes the small cases to
// testdata/hostile for cmd/gemu-img's end-to-end corpus test.
func Hostile(t *testing.T, format string, cases []HostileCase) {
	if len(cases) < 15 {
		t.Errorf("%d hostile cases, want at least 15", len(cases))
	}
	dir := t.TempDir()
	if *updateHostile {
		os.RemoveAll("testdata/hostile")
		os.MkdirAll("testdata/hostile", 0o755)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			b := c.Make(t)
			p := filepath.Join(dir, c.Name)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if *updateHostile && len(b) <= 128<<10 {
				os.WriteFile(filepath.Join("testdata/hostile", c.Name), b, 0o644)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"="+p)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("child died: %v\n%.2000s", err, stderr.String())
			}
			res := strings.TrimSuffix(string(out), "\n")
			if c.Want == "" {
				if res != "OK" {
					t.Errorf("want a clean read, got %q", res)
				}
				return
			}
			msg, ok := strings.CutPrefix(res, "ERR ")
			if !ok {
				t.Fatalf("no error, want one containing %q (got %q)", c.Want, res)
			}
			if !strings.Contains(msg, c.Want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q, want one line containing %q", msg, c.Want)
			}
		})
	}
}

// Seeds adds every hostile case (and extra valid images) to a fuzz target.
func Seeds(f *testing.F, cases []HostileCase, extra ...[]byte) {
	for _, c := range cases {
		f.Add(c.Make(f))
	}
	for _, b := range extra {
		f.Add(b)
	}
}

// FuzzImage writes b to a file and exercises it: no panic, bounded work.
func FuzzImage(t *testing.T, format string, b []byte) {
	p := filepath.Join(t.TempDir(), "f."+format)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	err := Exercise(format, p)
	if err != nil && strings.Contains(err.Error(), "\n") {
		t.Fatalf("multi-line error %q", err)
	}
}

// Build creates an image with gemu and returns its bytes after fill ran on it.
func Build(t testing.TB, format string, size int64, opts map[string]string, fill func(block.Driver)) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "base."+format)
	f, err := block.Lookup(format)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Create(p, block.CreateOptions{Size: size, Options: opts}); err != nil {
		t.Fatal(err)
	}
	if fill != nil {
		d := Open(t, format, p, false)
		fill(d)
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// QemuBuild creates an image with qemu-img and qemu-io and returns its bytes.
func QemuBuild(t testing.TB, format, size, opts string, io ...string) []byte {
	t.Helper()
	NeedQemu(t, "qemu-io")
	dir := t.TempDir()
	p := filepath.Join(dir, "base."+format)
	args := []string{"create", "-q", "-f", format}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	Run(t, dir, "qemu-img", append(args, p, size)...)
	if len(io) > 0 {
		a := []string{"-f", format}
		for _, c := range io {
			a = append(a, "-c", c)
		}
		Run(t, dir, "qemu-io", append(a, p)...)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RunErr runs a command and returns its combined output and error.
func RunErr(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

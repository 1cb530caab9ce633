package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"gemu/block"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gemuImg is the binary under test, built once by TestMain.
var gemuImg string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gemu-img-test")
	if err != nil {
		panic(err)
	}
	gemuImg = filepath.Join(dir, "gemu-img")
	cmd := exec.Command("go", "build", "-o", gemuImg, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic("building gemu-img: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

func runIn(t *testing.T, dir string, env []string, bin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %s %v: %v", bin, args, err)
	}
	r := result{so.String(), se.String(), code}
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic:") {
		t.Fatalf("%s %v panicked:\n%s", bin, args, r.stderr)
	}
	return r
}

// gemu runs gemu-img in dir.
func gemu(t *testing.T, dir string, args ...string) result {
	t.Helper()
	return runIn(t, dir, nil, gemuImg, args...)
}

// qemu runs the qemu-img oracle in dir.
func qemu(t *testing.T, dir string, args ...string) result {
	t.Helper()
	needQemu(t)
	return runIn(t, dir, nil, "qemu-img", args...)
}

func needQemu(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img (qemu-utils) is not installed: no oracle")
	}
}

// ok fails the test unless r exited 0.
func ok(t *testing.T, r result, what string) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", what, r.code, r.stdout, r.stderr)
	}
	return r
}

// haveFormat reports whether the gemu-img under test supports format f.
func haveFormat(t *testing.T, f string) bool {
	t.Helper()
	r := gemu(t, ".", "--help")
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(l, "Supported formats:") {
			for _, x := range strings.Fields(strings.TrimPrefix(l, "Supported formats:")) {
				if x == f {
					return true
				}
			}
		}
	}
	return false
}

func needFormat(t *testing.T, f string) {
	t.Helper()
	if !haveFormat(t, f) {
		t.Skipf("format %s is not registered in gemu-img yet", f)
	}
}

// makePattern writes a raw image mixing random data, text, written zeroes and holes at
// unaligned places, and returns its path.
func makePattern(t *testing.T, dir, name string, size int64, seed int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewSource(seed))
	put := func(off int64, b []byte) {
		if off >= size {
			return
		}
		if off+int64(len(b)) > size {
			b = b[:size-off]
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	rnd := func(n int) []byte {
		b := make([]byte, n)
		r.Read(b)
		return b
	}
	text := []byte(strings.Repeat("the quick brown fox jumps over the lazy dog 0123456789\n", 20000))
	put(0, rnd(65536))
	put(1<<20, text[:512<<10])
	put(2<<20, make([]byte, 256<<10)) // allocated zeroes
	put(3<<20+123, rnd(3000))
	put(4<<20-100, rnd(200)) // straddles a cluster boundary
	put(5<<20, text[:100000])
	put(size-4096, rnd(4096))
	return p
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameBytes(t *testing.T, a, b string) {
	t.Helper()
	x, y := readFile(t, a), readFile(t, b)
	if !bytes.Equal(x, y) {
		n := 0
		for n < len(x) && n < len(y) && x[n] == y[n] {
			n++
		}
		t.Fatalf("%s and %s differ (sizes %d, %d; first difference at %d)", a, b, len(x), len(y), n)
	}
}

func jsonOf(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad JSON %q: %v", s, err)
	}
	return v
}

// errLine checks a failure: non-zero exit and a "gemu-img: " message, one line (two
// for usage errors, which add qemu-img's hint line).
func errLine(t *testing.T, r result, what string) {
	t.Helper()
	if r.code == 0 {
		t.Fatalf("%s: expected failure, got exit 0 (stdout %q)", what, r.stdout)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) == 2 && strings.HasPrefix(lines[1], "Try 'gemu-img --help'") {
		lines = lines[:1]
	}
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "gemu-img: ") {
		t.Fatalf("%s: want one 'gemu-img: ...' line on stderr, got %q", what, r.stderr)
	}
}

// driverHas reports whether format's driver (linked into gemu-img, and into this test
// binary through main's imports) offers a capability, by opening a fresh image.
func driverHas(t *testing.T, format string, has func(block.Driver) bool) bool {
	t.Helper()
	if !haveFormat(t, format) {
		return false
	}
	p := filepath.Join(t.TempDir(), "cap."+format)
	ok(t, qemu(t, ".", "create", "-q", "-f", format, p, "1M"), "qemu-img create")
	d, err := block.Open(p, block.OpenOptions{Format: format})
	if err != nil {
		t.Fatalf("opening a fresh %s: %v", format, err)
	}
	defer d.Close()
	return has(d)
}

func canCompress(d block.Driver) bool   { _, ok := d.(block.ClusterCompressor); return ok }
func canSetBacking(d block.Driver) bool { _, ok := d.(block.BackingSetter); return ok }
func canAmend(d block.Driver) bool      { _, ok := d.(block.Amender); return ok }

// needCap skips a sub-case whose capability the format's driver does not offer yet,
// naming it, so the gap shows in -v output rather than as a false failure.
func needCap(t *testing.T, format, what string, has func(block.Driver) bool) {
	t.Helper()
	if !driverHas(t, format, has) {
		t.Skipf("%s driver does not implement %s yet", format, what)
	}
}

func formatIsMeasurer(name string) bool {
	f, err := block.Lookup(name)
	if err != nil {
		return false
	}
	_, ok := f.(block.Measurer)
	return ok
}

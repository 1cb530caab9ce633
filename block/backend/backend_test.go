package backend_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"gemu/block"
	"gemu/block/backend"
	_ "gemu/block/vmdk"
	_ "gemu/qcow2"
)

func needQemuImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed: no oracle")
	}
}

func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func sum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// snapshot=on: the guest sees its writes, the image stays byte-identical and the
// overlay is gone from the temporary folder as soon as the drive is open.
func TestSnapshot(t *testing.T) {
	needQemuImg(t)
	for _, format := range []string{"qcow2", "raw"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			img := filepath.Join(dir, "disk."+format)
			run(t, dir, "qemu-img", "create", "-q", "-f", format, img, "4M")
			run(t, dir, "qemu-io", "-f", format, "-c", "write -P 0x33 0 1M", img)
			before := sum(t, img)
			b, err := backend.Open(backend.Options{File: img, Format: format, Snapshot: true})
			if err != nil {
				t.Fatal(err)
			}
			if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
				t.Errorf("overlay still in the temporary folder after open: %v", ents)
			}
			if b.ReadOnly() {
				t.Errorf("snapshot=on drive reports read-only")
			}
			w := pattern(70000, 9)
			if _, err := b.WriteAt(w, 12345); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 200000)
			if _, err := b.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			want := bytes.Repeat([]byte{0x33}, 200000)
			copy(want[12345:], w)
			if !bytes.Equal(got, want) {
				t.Errorf("reads do not see the writes over the image")
			}
			// The image is locked read-only meanwhile: a writer is refused.
			if _, err := block.Open(img, block.OpenOptions{Format: format}); err == nil || !strings.Contains(err.Error(), "Failed to get") {
				t.Errorf("writer while a snapshot drive holds the image: %v", err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if sum(t, img) != before {
				t.Errorf("snapshot=on changed the image")
			}
			if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
				t.Errorf("temporary folder not empty after close: %v", ents)
			}
		})
	}
}

func TestReadOnly(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "r.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	before := sum(t, img)
	b, err := backend.Open(backend.Options{File: img, Format: "raw", ReadOnly: true, Discard: "unmap"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !b.ReadOnly() {
		t.Errorf("ReadOnly() false")
	}
	if _, err := b.WriteAt([]byte{1}, 0); !errors.Is(err, block.ErrReadOnly) {
		t.Errorf("WriteAt: %v", err)
	}
	if err := b.WriteZeroes(0, 512, true); !errors.Is(err, block.ErrReadOnly) {
		t.Errorf("WriteZeroes: %v", err)
	}
	if err := b.Discard(0, 4096); !errors.Is(err, block.ErrReadOnly) {
		t.Errorf("Discard: %v", err)
	}
	if err := b.Flush(); err != nil {
		t.Errorf("Flush: %v", err)
	}
	if sum(t, img) != before {
		t.Errorf("image changed")
	}
}

// fdFlags returns the open flags of this process's descriptors on path.
func fdFlags(t *testing.T, path string) []int64 {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	var fl []int64
	for _, e := range ents {
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || l != path {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				f, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
				if err == nil {
					fl = append(fl, f)
				}
			}
		}
	}
	return fl
}

func TestCacheModes(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	for _, format := range []string{"raw", "qcow2"} {
		for _, mode := range []string{"writeback", "none", "writethrough", "directsync", "unsafe"} {
			img := filepath.Join(dir, mode+"."+format)
			run(t, dir, "qemu-img", "create", "-q", "-f", format, img, "1M")
			b, err := backend.Open(backend.Options{File: img, Format: format, Cache: mode})
			if err != nil {
				if mode == "none" || mode == "directsync" {
					t.Fatalf("%s %s: %v (does %s refuse O_DIRECT?)", format, mode, err, dir)
				}
				t.Fatalf("%s %s: %v", format, mode, err)
			}
			direct := false
			for _, f := range fdFlags(t, img) {
				if f&syscall.O_DIRECT != 0 {
					direct = true
				}
			}
			wantDirect := format == "raw" && (mode == "none" || mode == "directsync")
			if direct != wantDirect {
				t.Errorf("%s cache=%s: O_DIRECT set %v, want %v", format, mode, direct, wantDirect)
			}
			if b.WriteCache() != (mode != "writethrough" && mode != "directsync") {
				t.Errorf("%s cache=%s: WriteCache %v", format, mode, b.WriteCache())
			}
			// Unaligned offset, length and buffer address: bounced under O_DIRECT.
			buf := make([]byte, 5000)
			w := pattern(4001, 3)
			copy(buf[1:], w)
			if _, err := b.WriteAt(buf[1:4002], 777); err != nil {
				t.Fatalf("%s cache=%s: unaligned write: %v", format, mode, err)
			}
			r := make([]byte, 6001)
			if _, err := b.ReadAt(r[1:], 3); err != nil {
				t.Fatalf("%s cache=%s: unaligned read: %v", format, mode, err)
			}
			want := make([]byte, 6000)
			copy(want[777-3:], w)
			if !bytes.Equal(r[1:], want) {
				t.Errorf("%s cache=%s: read back differs", format, mode)
			}
			// An aligned write from an aligned-size buffer.
			if _, err := b.WriteAt(pattern(8192, 5), 65536); err != nil {
				t.Fatalf("%s cache=%s: aligned write: %v", format, mode, err)
			}
			if err := b.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			// What qemu-io reads is what was written.
			out := run(t, dir, "qemu-io", "-f", format, "-c", "read -P 0x05 65536 1", "-c", fmt.Sprintf("read -P %#x 777 1", w[0]), img)
			if strings.Contains(out, "Pattern verification failed") {
				t.Errorf("%s cache=%s: qemu-io: %s", format, mode, out)
			}
			if format == "qcow2" {
				run(t, dir, "qemu-img", "check", img)
			}
		}
	}
}

type mapEntry struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
	Data   bool  `json:"data"`
	Zero   bool  `json:"zero"`
}

func qemuMap(t *testing.T, dir, format, img string) []mapEntry {
	var m []mapEntry
	if err := json.Unmarshal([]byte(run(t, dir, "qemu-img", "map", "-f", format, "--output=json", img)), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// detect-zeroes=unmap turns an all-zero write into a deallocation qemu-img map sees.
func TestDetectZeroes(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	for _, format := range []string{"raw", "qcow2"} {
		for _, dz := range []string{"off", "unmap"} {
			img := filepath.Join(dir, dz+"."+format)
			run(t, dir, "qemu-img", "create", "-q", "-f", format, img, "4M")
			run(t, dir, "qemu-io", "-f", format, "-c", "write -P 0xaa 0 1M", img)
			b, err := backend.Open(backend.Options{File: img, Format: format, DetectZeroes: dz, Discard: "unmap"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.WriteAt(make([]byte, 256<<10), 256<<10); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			var zeroData bool // is [256k, 512k) reported as data?
			for _, e := range qemuMap(t, dir, format, img) {
				if e.Start <= 256<<10 && e.Start+e.Length >= 512<<10 {
					zeroData = e.Data
					if dz == "unmap" && !e.Zero {
						t.Errorf("%s detect-zeroes=unmap: range not zero in map: %+v", format, e)
					}
				}
			}
			if zeroData != (dz == "off") {
				t.Errorf("%s detect-zeroes=%s: written zeroes allocated as data: %v", format, dz, zeroData)
			}
			out := run(t, dir, "qemu-io", "-f", format, "-c", "read -P 0 256k 256k", "-c", "read -P 0xaa 0 256k", "-c", "read -P 0xaa 512k 512k", img)
			if strings.Contains(out, "Pattern verification failed") {
				t.Errorf("%s detect-zeroes=%s: %s", format, dz, out)
			}
			if format == "qcow2" {
				run(t, dir, "qemu-img", "check", img)
			}
		}
	}
	if _, err := backend.Open(backend.Options{File: filepath.Join(dir, "off.raw"), Format: "raw", DetectZeroes: "unmap"}); err == nil ||
		err.Error() != "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap" {
		t.Errorf("detect-zeroes=unmap without discard=unmap: %v", err)
	}
}

func TestLocking(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "a.qcow2")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
	b, err := backend.Open(backend.Options{File: img, Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	want := "Failed to get \"write\" lock\nIs another process using the image [" + img + "]?"
	if _, err := backend.Open(backend.Options{File: img, Format: "qcow2"}); err == nil || err.Error() != want {
		t.Errorf("second read-write drive: %v, want %q", err, want)
	}
	want = "Failed to get shared \"write\" lock\nIs another process using the image [" + img + "]?"
	if _, err := backend.Open(backend.Options{File: img, Format: "qcow2", ReadOnly: true}); err == nil || err.Error() != want {
		t.Errorf("read-only drive next to a writer: %v, want %q", err, want)
	}
	cmd := exec.Command("qemu-img", "resize", img, "2M")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), `Failed to get "write" lock`) {
		t.Errorf("qemu-img resize next to a drive: %v %s", err, out)
	}
	run(t, dir, "qemu-img", "info", "-U", img)
	b2, err := backend.Open(backend.Options{File: img, Format: "qcow2", Locking: "off", ReadOnly: true})
	if err != nil {
		t.Fatalf("locking=off: %v", err)
	}
	b2.Close()
	if _, err := backend.Open(backend.Options{File: img, Locking: "maybe"}); err == nil {
		t.Errorf("locking=maybe accepted")
	}
	if _, err := backend.Open(backend.Options{File: filepath.Join(dir, "nope"), Format: "raw"}); err == nil ||
		err.Error() != "Could not open '"+filepath.Join(dir, "nope")+"': No such file or directory" {
		t.Errorf("missing file: %v", err)
	}
}

// A qcow2 overlay made by qemu-img on a qcow2 base: many concurrent writes through the
// worker pool, then qemu-img check is clean and the content is what was written.
func TestOverlayConcurrent(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "base.qcow2", "16M")
	run(t, dir, "qemu-io", "-c", "write -P 0x77 0 16M", "base.qcow2")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2")
	model := bytes.Repeat([]byte{0x77}, 16<<20)
	b, err := backend.Open(backend.Options{File: filepath.Join(dir, "top.qcow2")})
	if err != nil {
		t.Fatal(err)
	}
	// Disjoint slots of 4 KiB, 16 to a cluster, in shuffled order, each request writing
	// part of one: concurrent sub-cluster writes into the same unallocated cluster, which
	// need copy-on-write from the base.
	rng := rand.New(rand.NewSource(1))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	// A worker pool of 16, as a device runs requests.
	work := make(chan func())
	for range 16 {
		go func() {
			for f := range work {
				f()
			}
		}()
	}
	defer close(work)
	type request struct {
		op   string
		off  int64
		buf  []byte
		done func(int, error)
	}
	submit := func(r request) {
		work <- func() {
			var n int
			var err error
			switch r.op {
			case "read":
				n, err = b.ReadAt(r.buf, r.off)
			case "write":
				n, err = b.WriteAt(r.buf, r.off)
			case "flush":
				err = b.Flush()
			}
			r.done(n, err)
		}
	}
	for i, slot := range rng.Perm(2048) {
		off := int64(slot)<<12 + int64(rng.Intn(8))*512
		n := (1 + rng.Intn(8)) * 512
		if off+int64(n) > int64(slot+1)<<12 {
			n = int(int64(slot+1)<<12 - off)
		}
		data := pattern(n, byte(slot))
		copy(model[off:], data)
		wg.Add(1)
		submit(request{op: "write", off: off, buf: data, done: func(_ int, err error) {
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			wg.Done()
		}})
		// Reads of neighbouring slots race the writes (results unchecked: only errors
		// and data races count).
		wg.Add(1)
		roff := int64(rng.Intn(2048)) << 12
		submit(request{op: "read", off: roff, buf: make([]byte, 4096), done: func(_ int, err error) {
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			wg.Done()
		}})
		if i%64 == 0 {
			wg.Add(1)
			submit(request{op: "flush", done: func(_ int, err error) { wg.Done() }})
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	got := make([]byte, 16<<20)
	if _, err := b.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Errorf("reads through the backend differ from what was written")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReadAt(got[:1], 0); !errors.Is(err, backend.ErrClosed) {
		t.Errorf("read after Close: %v", err)
	}
	run(t, dir, "qemu-img", "check", "top.qcow2")
	if err := os.WriteFile(filepath.Join(dir, "model.raw"), model, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", "top.qcow2", "model.raw")
}

func TestErrorAction(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "r.raw")
	if err := os.WriteFile(img, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	enospc := fmt.Errorf("write: %w", syscall.ENOSPC)
	eio := fmt.Errorf("write: %w", syscall.EIO)
	for _, c := range []struct {
		werror, rerror string
		err            error
		write          bool
		want           backend.Action
	}{
		{"", "", enospc, true, backend.Stop},
		{"", "", eio, true, backend.Report},
		{"", "", enospc, false, backend.Report},
		{"stop", "", eio, true, backend.Stop},
		{"ignore", "", eio, true, backend.Ignore},
		{"report", "", enospc, true, backend.Report},
		{"", "stop", eio, false, backend.Stop},
		{"", "ignore", eio, false, backend.Ignore},
	} {
		b, err := backend.Open(backend.Options{File: img, Format: "raw", WError: c.werror, RError: c.rerror})
		if err != nil {
			t.Fatal(err)
		}
		if got := b.ErrorAction(c.err, c.write); got != c.want {
			t.Errorf("werror=%q rerror=%q %v write=%v: %v, want %v", c.werror, c.rerror, c.err, c.write, got, c.want)
		}
		b.Close()
	}
	if _, err := backend.Open(backend.Options{File: img, Format: "raw", RError: "enospc"}); err == nil || err.Error() != "'enospc' invalid read error action" {
		t.Errorf("rerror=enospc: %v", err)
	}
	if _, err := backend.Open(backend.Options{File: img, Format: "raw", Cache: "fast"}); err == nil {
		t.Errorf("cache=fast accepted")
	}
	b, err := backend.Open(backend.Options{File: img, Format: "raw"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.ReadAt(make([]byte, 512), 4000); err == nil {
		t.Errorf("read past the end succeeded")
	}
}

// Format "" probes; a probed raw read-write drive gets QEMU's warning, once.
func TestProbeWarning(t *testing.T) {
	img := filepath.Join(t.TempDir(), "p.img")
	if err := os.WriteFile(img, make([]byte, 1<<16), 0o644); err != nil {
		t.Fatal(err)
	}
	var warnings []string
	old := block.Warn
	block.Warn = func(m string) { warnings = append(warnings, m) }
	defer func() { block.Warn = old }()
	b, err := backend.Open(backend.Options{File: img})
	if err != nil {
		t.Fatal(err)
	}
	if b.Driver().Format() != "raw" {
		t.Errorf("probed %s", b.Driver().Format())
	}
	b.Close()
	if len(warnings) != 1 || !strings.Contains(warnings[0], "WARNING: Image format was not specified for '"+img+"' and probing guessed raw.") {
		t.Errorf("warnings %q", warnings)
	}
	warnings = nil
	b, err = backend.Open(backend.Options{File: img, Format: "raw"})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if len(warnings) != 0 {
		t.Errorf("explicit raw warned: %q", warnings)
	}
}

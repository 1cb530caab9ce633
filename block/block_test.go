package block

import (
	"bytes"
	"compress/flate"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{{"512", 512}, {"1k", 1024}, {"1K", 1024}, {"1.5G", 3 << 29}, {"2M", 2 << 20}, {"1T", 1 << 40}, {"0", 0}, {"4b", 4}, {"1E", 1 << 60}} {
		got, err := ParseSize(c.in, 1)
		if err != nil || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "x", "1Q", "-1", "1..5k", "99999999999999999999", "16E"} {
		if v, err := ParseSize(bad, 1); err == nil {
			t.Errorf("ParseSize(%q) = %d, want error", bad, v)
		}
	}
}

// SizeToStr is checked against qemu-img's own rendering in cmd/gemu-img's tests; here
// the unit boundaries, which qemu places at 1000 of a unit, not 1024.
func TestSizeToStrBoundaries(t *testing.T) {
	for _, c := range []struct {
		in   int64
		want string
	}{{0, "0 B"}, {999, "999 B"}, {1000, "0.977 KiB"}, {1536, "1.5 KiB"}, {1 << 30, "1 GiB"}} {
		if got := SizeToStr(c.in); got != c.want {
			t.Errorf("SizeToStr(%d) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestResolveBacking(t *testing.T) {
	for _, c := range []struct{ img, ref, want string }{
		{"a/b.qcow2", "c.qcow2", "a/c.qcow2"},
		{"a/b.qcow2", "../c", "a/../c"},
		{"b.qcow2", "c", "c"},
		{"/x/b.qcow2", "/abs/c", "/abs/c"},
	} {
		got, err := ResolveBacking(c.img, c.ref)
		if err != nil || got != c.want {
			t.Errorf("ResolveBacking(%q, %q) = %q, %v; want %q", c.img, c.ref, got, err, c.want)
		}
	}
	for _, ref := range []string{"json:{\"file.filename\":\"/etc/passwd\"}", "nbd:localhost:10809", "http://x/y", "", "a\x00b"} {
		if got, err := ResolveBacking("img.qcow2", ref); err == nil {
			t.Errorf("ResolveBacking(%q) = %q, want refusal", ref, got)
		}
	}
}

// rawWithHoles makes a raw file with data at the given 64 KiB-aligned ranges.
func rawWithHoles(t *testing.T, size int64, data [][2]int64) (string, []byte) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "r.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(size)
	want := make([]byte, size)
	r := rand.New(rand.NewSource(size))
	for _, d := range data {
		r.Read(want[d[0]:d[1]])
		f.WriteAt(want[d[0]:d[1]], d[0])
	}
	return p, want
}

func openRaw(t *testing.T, p string, ro bool) Driver {
	t.Helper()
	d, err := Open(p, OpenOptions{Format: "raw", ReadOnly: ro})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// BlockStatus agrees with the file's real layout as qemu-img map reports it.
func TestRawBlockStatusMatchesQemuMap(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed: no oracle")
	}
	p, _ := rawWithHoles(t, 4<<20, [][2]int64{{0, 64 << 10}, {1 << 20, 1<<20 + 128<<10}, {3 << 20, 4 << 20}})
	d := openRaw(t, p, true)
	ents, err := Map(d, 0, d.Size())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, fmt.Sprintf("%d+%d data=%t zero=%t off=%d", e.Start, e.Length, e.Data, e.Zero, e.Offset))
	}
	out, err := exec.Command("qemu-img", "map", "--output=json", "-f", "raw", p).Output()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var s, n, off int64
		var data, zero bool
		l = strings.Trim(l, "[],")
		if _, err := fmt.Sscanf(l, `{ "start": %d, "length": %d, "depth": 0, "present": true, "zero": %t, "data": %t, "offset": %d}`, &s, &n, &zero, &data, &off); err != nil {
			t.Fatalf("parsing %q: %v", l, err)
		}
		want = append(want, fmt.Sprintf("%d+%d data=%t zero=%t off=%d", s, n, data, zero, off))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("map:\n%s\nqemu-img:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestRawZeroDiscardResize(t *testing.T) {
	p, want := rawWithHoles(t, 2<<20, [][2]int64{{0, 2 << 20}})
	d := openRaw(t, p, false)
	check := func(what string) {
		t.Helper()
		got := make([]byte, d.Size())
		if err := readFull(d, got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: contents differ", what)
		}
	}
	if err := d.WriteZeroes(1000, 70000, 0); err != nil {
		t.Fatal(err)
	}
	clear(want[1000:71000])
	check("WriteZeroes")
	if err := d.WriteZeroes(1<<20, 256<<10, ZeroMayUnmap); err != nil {
		t.Fatal(err)
	}
	clear(want[1<<20 : 1<<20+256<<10])
	check("WriteZeroes unmap")
	st, err := d.BlockStatus(1<<20, 256<<10)
	if err != nil || !st.Zero || st.Data || st.Length != 256<<10 {
		t.Errorf("after punching, status %+v %v", st, err)
	}
	if err := d.Discard(0, 4096); err != nil {
		t.Fatal(err)
	}
	clear(want[:4096])
	check("Discard")
	if err := d.Resize(1<<20, ResizeOptions{}); err == nil {
		t.Error("shrinking without Shrink succeeded")
	}
	if err := d.Resize(3<<20, ResizeOptions{Preallocation: "full"}); err != nil {
		t.Fatal(err)
	}
	want = append(want, make([]byte, 1<<20)...)
	check("grow")
	if err := d.Resize(1<<20, ResizeOptions{Shrink: true}); err != nil {
		t.Fatal(err)
	}
	want = want[:1<<20]
	check("shrink")
	if _, err := d.WriteAt([]byte{1}, 1<<20); err == nil {
		t.Error("write past the end succeeded")
	}
	ro := openRaw(t, p, true)
	if _, err := ro.WriteAt([]byte{1}, 0); err != ErrReadOnly {
		t.Errorf("write to read-only image: %v", err)
	}
}

// fakeFormat is a test format whose header starts with "FAKE".
type fakeFormat struct{}

func (fakeFormat) Name() string { return "zzfake" }
func (fakeFormat) Probe(b []byte, _ string) int {
	if bytes.HasPrefix(b, []byte("FAKE")) {
		return 100
	}
	return 0
}
func (fakeFormat) Open(string, OpenOptions) (Driver, error) { return nil, fmt.Errorf("fake opened") }
func (fakeFormat) Create(string, CreateOptions) error       { return nil }

var registerFake sync.Once

func TestProbing(t *testing.T) {
	registerFake.Do(func() { Register(fakeFormat{}) })
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake.img")
	os.WriteFile(fake, append([]byte("FAKE"), make([]byte, 1020)...), 0o644)
	if _, err := Open(fake, OpenOptions{ReadOnly: true}); err == nil || err.Error() != "fake opened" {
		t.Errorf("probing did not pick the best-scoring format: %v", err)
	}
	// A named format is never overridden.
	d, err := Open(fake, OpenOptions{Format: "raw", ReadOnly: true})
	if err != nil || d.Format() != "raw" {
		t.Fatalf("named raw: %v", err)
	}
	d.Close()
	// A probed raw image cannot be turned into another format through block 0.
	plain := filepath.Join(dir, "plain.img")
	os.WriteFile(plain, make([]byte, 4096), 0o644)
	var warned string
	old := Warn
	Warn = func(m string) { warned = m }
	defer func() { Warn = old }()
	d, err = Open(plain, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !strings.Contains(warned, "probing guessed raw") {
		t.Errorf("no probing warning: %q", warned)
	}
	if _, err := d.WriteAt([]byte("FAKE"), 0); err == nil {
		t.Error("probed raw accepted a write making block 0 look like another format")
	}
	if _, err := d.WriteAt([]byte("fine"), 0); err != nil {
		t.Errorf("ordinary block-0 write refused: %v", err)
	}
	if _, err := Open("json:{}", OpenOptions{}); err == nil {
		t.Error("json: filename accepted")
	}
}

// memImage is an in-memory Driver with a ClusterCompressor, recording write order.
type memImage struct {
	mu       sync.Mutex
	data     []byte
	unit     int64
	order    []int64
	zeroes   int
	inFlight int
}

func (m *memImage) Format() string   { return "mem" }
func (m *memImage) Filename() string { return "mem" }
func (m *memImage) Size() int64      { return int64(len(m.data)) }
func (m *memImage) ReadAt(p []byte, off int64) (int, error) {
	return copy(p, m.data[off:]), nil
}
func (m *memImage) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.order = append(m.order, off)
	return copy(m.data[off:], p), nil
}
func (m *memImage) WriteZeroes(off, n int64, _ ZeroFlags) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.zeroes++
	clear(m.data[off : off+n])
	return nil
}
func (m *memImage) Discard(int64, int64) error { return nil }
func (m *memImage) Flush() error               { return nil }
func (m *memImage) BlockStatus(off, n int64) (Status, error) {
	return Status{Offset: off, Length: min(n, 64<<10-off%(64<<10)), Data: true, Allocated: true, HostOffset: -1}, nil
}
func (m *memImage) Resize(int64, ResizeOptions) error { return nil }
func (m *memImage) Close() error                      { return nil }
func (m *memImage) CompressionUnit() int64            { return m.unit }
func (m *memImage) CompressCluster(p []byte) ([]byte, error) {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, 1)
	w.Write(p)
	w.Close()
	if b.Len() >= len(p) {
		return nil, nil
	}
	return b.Bytes(), nil
}
func (m *memImage) WriteCompressed(off int64, c, raw []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.order = append(m.order, off)
	copy(m.data[off:], raw)
	if c != nil {
		got, err := readAllFlate(c)
		if err != nil || !bytes.Equal(got, raw) {
			return fmt.Errorf("compressed cluster at %d does not decompress to its data", off)
		}
	}
	return nil
}

func readAllFlate(c []byte) ([]byte, error) {
	r := flate.NewReader(bytes.NewReader(c))
	defer r.Close()
	var b bytes.Buffer
	_, err := b.ReadFrom(r)
	return b.Bytes(), err
}

// The compressed pipeline writes every cluster once, in offset order, with the right
// data, skips zero clusters on a zero target, and does not depend on Workers.
func TestConvertCompressedPipeline(t *testing.T) {
	size := int64(5<<20 + 3*4096) // last cluster partial
	src := &memImage{data: make([]byte, size)}
	r := rand.New(rand.NewSource(1))
	for off := int64(0); off < size; off += 64 << 10 {
		switch (off >> 16) % 4 {
		case 0:
			r.Read(src.data[off:min(off+64<<10, size)])
		case 1:
			copy(src.data[off:min(off+64<<10, size)], bytes.Repeat([]byte("text "), 20000))
		}
	}
	var orders [][]int64
	for _, w := range []int{1, 3, 16} {
		dst := &memImage{data: make([]byte, size), unit: 64 << 10}
		if err := Convert(src, dst, ConvertOptions{Compress: true, Workers: w, Sparse: 4096, TargetIsZero: true, ChunkSize: 256 << 10}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dst.data, src.data) {
			t.Fatalf("workers=%d: output differs", w)
		}
		for i := 1; i < len(dst.order); i++ {
			if dst.order[i] <= dst.order[i-1] {
				t.Fatalf("workers=%d: write at %d after %d", w, dst.order[i], dst.order[i-1])
			}
		}
		if dst.zeroes != 0 {
			t.Errorf("workers=%d: %d zero writes on a zero target", w, dst.zeroes)
		}
		orders = append(orders, dst.order)
	}
	for _, o := range orders[1:] {
		if fmt.Sprint(o) != fmt.Sprint(orders[0]) {
			t.Fatal("write sequence depends on Workers")
		}
	}
}

// Uncompressed convert into a raw file: holes stay holes, zero-filled data becomes
// holes, and -S 0 allocates everything.
func TestConvertRawSparse(t *testing.T) {
	p, want := rawWithHoles(t, 8<<20, [][2]int64{{0, 1 << 20}, {4 << 20, 5 << 20}})
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	f.WriteAt(make([]byte, 512<<10), 6<<20) // allocated zeroes
	f.Close()
	src := openRaw(t, p, true)
	for _, sparse := range []int64{4096, 0} {
		out := filepath.Join(t.TempDir(), "o.raw")
		if err := (rawFormat{}).Create(out, CreateOptions{Size: src.Size()}); err != nil {
			t.Fatal(err)
		}
		dst := openRaw(t, out, false)
		if err := Convert(src, dst, ConvertOptions{Sparse: sparse, TargetIsZero: true, Workers: 4}); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, want) {
			t.Fatalf("sparse=%d: output differs", sparse)
		}
		used, _ := dst.(*rawDriver).ActualSize()
		if sparse != 0 && used > 2<<20+64<<10 {
			t.Errorf("sparse output uses %d bytes, want about 2 MiB", used)
		}
		if sparse == 0 && used < 8<<20 {
			t.Errorf("-S 0 output uses only %d bytes, want fully allocated", used)
		}
	}
}

// countingImage reports status in small pieces and counts the calls.
type countingImage struct {
	memImage
	piece int64
	calls int
}

func (c *countingImage) BlockStatus(off, n int64) (Status, error) {
	c.calls++
	// Mostly data, with a zero piece now and then: long runs of one class.
	zero := (off/c.piece)%4096 == 0
	return Status{Offset: off, Length: min(n, c.piece-off%c.piece), Data: !zero, Zero: zero,
		Allocated: true, HostOffset: -1}, nil
}

// The extent walk asks for each status about once, however small the driver's pieces.
func TestConvertStatusWalkLinear(t *testing.T) {
	size := int64(64 << 20)
	src := &countingImage{memImage: memImage{data: make([]byte, size)}, piece: 4096}
	for _, compress := range []bool{false, true} {
		src.calls = 0
		dst := &memImage{data: make([]byte, size), unit: 64 << 10}
		if err := Convert(src, dst, ConvertOptions{Compress: compress, Sparse: 4096, TargetIsZero: true}); err != nil {
			t.Fatal(err)
		}
		if pieces := int(size / src.piece); src.calls > 2*pieces {
			t.Errorf("compress=%v: %d BlockStatus calls for %d pieces", compress, src.calls, pieces)
		}
	}
}

// BenchmarkConvertPipeline measures the pipeline's own cost per byte: memory source,
// a compressor that declines every cluster, and a memory target.
func BenchmarkConvertPipeline(b *testing.B) {
	size := int64(256 << 20)
	src := &memImage{data: make([]byte, size)}
	rand.New(rand.NewSource(1)).Read(src.data)
	dst := &nullCompressor{memImage: memImage{data: make([]byte, size), unit: 64 << 10}}
	b.SetBytes(size)
	for b.Loop() {
		if err := Convert(src, dst, ConvertOptions{Compress: true, Sparse: 4096, TargetIsZero: true}); err != nil {
			b.Fatal(err)
		}
	}
}

type nullCompressor struct{ memImage }

func (n *nullCompressor) CompressCluster([]byte) ([]byte, error) { return nil, nil }
func (n *nullCompressor) WriteCompressed(off int64, c, raw []byte) error {
	copy(n.data[off:], raw)
	return nil
}

package vmdk

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"

	"gemu/block"
)

var subformats = []string{"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized"}

func needQemu(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range append([]string{"qemu-img"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install qemu-utils)", tool)
		}
	}
}

// run runs a command and fails the test with its output on error.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func vmdkFormatT(t testing.TB) block.Format {
	f, err := block.Lookup("vmdk")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func openT(t testing.TB, path string, ro bool) block.Driver {
	t.Helper()
	d, err := vmdkFormatT(t).Open(path, block.OpenOptions{ReadOnly: ro, Format: "vmdk"})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return d
}

// patterned returns size bytes mixing text-like, random and zero grains, with data
// straddling grain boundaries and in the short last grain.
func patterned(size int64, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, size)
	const g = 65536
	for off := int64(0); off < size; off += g {
		end := min(off+g, size)
		switch r.IntN(5) {
		case 0: // zero grain
		case 1: // random
			for i := off; i < end; i++ {
				b[i] = byte(r.Uint32())
			}
		case 2: // text-like
			words := []string{"alpha ", "beta ", "gamma\n", "vmdk ", "grain "}
			for i := off; i < end; {
				i += int64(copy(b[i:end], words[r.IntN(len(words))]))
			}
		case 3: // partial grain
			s := off + int64(r.IntN(g/2))
			for i := s; i < min(s+int64(r.IntN(g/2)+1), end); i++ {
				b[i] = byte(i)
			}
		case 4: // sparse bytes
			for i := 0; i < 20; i++ {
				b[off+int64(r.IntN(int(end-off)))] = 0xA5
			}
		}
	}
	if size > 10 {
		b[size-1] = 0x5A
	}
	return b
}

// toRaw writes the driver's content to a sparse raw file using BlockStatus: ranges
// reported as zero are skipped, so a wrong status makes the comparison fail.
func toRaw(t testing.TB, d block.Driver, out string) {
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

// mapEntry is one qemu-img map --output=json entry.
type mapEntry struct {
	Start   int64  `json:"start"`
	Length  int64  `json:"length"`
	Depth   int    `json:"depth"`
	Present bool   `json:"present"`
	Zero    bool   `json:"zero"`
	Data    bool   `json:"data"`
	Offset  *int64 `json:"offset,omitempty"`
}

// ourMap renders BlockStatus runs merged the way qemu-img map merges them.
func ourMap(t testing.TB, d block.Driver) []mapEntry {
	t.Helper()
	var m []mapEntry
	for off := int64(0); off < d.Size(); {
		st, err := d.BlockStatus(off, d.Size()-off)
		if err != nil {
			t.Fatal(err)
		}
		e := mapEntry{Start: off, Length: st.Length, Depth: st.Depth, Present: st.Allocated, Zero: st.Zero, Data: st.Data}
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
	return m
}

func qemuMap(t testing.TB, img string) []mapEntry {
	var m []mapEntry
	if err := json.Unmarshal([]byte(run(t, "qemu-img", "map", "-U", "-f", "vmdk", "--output=json", img)), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func mapString(m []mapEntry) string {
	b, _ := json.Marshal(m)
	return string(bytes.ReplaceAll(b, []byte("},{"), []byte("},\n{")))
}

// qemuInfo returns qemu-img info --output=json decoded generically.
func qemuInfo(t testing.TB, img string) map[string]any {
	var m map[string]any
	if err := json.Unmarshal([]byte(run(t, "qemu-img", "info", "-U", "-f", "vmdk", "--output=json", img)), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// checkInfo compares our Info with qemu-img info on the fields both report.
func checkInfo(t testing.TB, d block.Driver, img string) {
	t.Helper()
	q := qemuInfo(t, img)
	info, err := d.(block.Infoer).Info()
	if err != nil {
		t.Fatal(err)
	}
	if int64(q["virtual-size"].(float64)) != d.Size() {
		t.Errorf("virtual-size: qemu %v, ours %d", q["virtual-size"], d.Size())
	}
	qc, _ := q["cluster-size"].(float64)
	if int64(qc) != info.ClusterSize {
		t.Errorf("cluster-size: qemu %v, ours %d", qc, info.ClusterSize)
	}
	ours, _ := json.Marshal(info.FormatSpecific)
	var o any
	json.Unmarshal(ours, &o)
	theirs, _ := json.Marshal(q["format-specific"])
	var th any
	json.Unmarshal(theirs, &th)
	a, _ := json.Marshal(o)
	b, _ := json.Marshal(th)
	if !bytes.Equal(a, b) {
		t.Errorf("format-specific differs:\nqemu: %s\nours: %s", b, a)
	}
	if as, ok := d.(block.ActualSizer); ok {
		n, err := as.ActualSize()
		if err != nil || int64(q["actual-size"].(float64)) != n {
			t.Errorf("actual-size: qemu %v, ours %d (%v)", q["actual-size"], n, err)
		}
	}
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func chdirTemp(t *testing.T) string {
	d := t.TempDir()
	t.Chdir(d)
	return d
}

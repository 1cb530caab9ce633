package vmdk

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"gemu/block"
)

// TestReadQemuImages: images qemu-img makes from patterned raw data read back through
// this driver equal qemu-img convert -O raw; map and info agree with qemu-img.
func TestReadQemuImages(t *testing.T) {
	needQemu(t)
	chdirTemp(t)
	const size = 6<<20 + 7*512
	writeFile(t, "src.raw", patterned(size, 1))
	for _, sf := range subformats {
		t.Run(sf, func(t *testing.T) {
			img := sf + ".vmdk"
			run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat="+sf, "src.raw", img)
			run(t, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", img, img+".ref")
			d := openT(t, img, true)
			defer d.Close()
			toRaw(t, d, img+".ours")
			run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img+".ref", img+".ours")
			if a, b := mapString(qemuMap(t, img)), mapString(ourMap(t, d)); a != b {
				t.Errorf("map differs:\nqemu:\n%s\nours:\n%s", a, b)
			}
			checkInfo(t, d, img)
		})
	}
}

// TestReadQemuIOImages: images written by qemu-io, with zeroed grains, write -z and
// partial grains, read back equal and map equal.
func TestReadQemuIOImages(t *testing.T) {
	needQemu(t, "qemu-io")
	chdirTemp(t)
	for _, opt := range []string{"zeroed_grain=off", "zeroed_grain=on", "subformat=monolithicFlat", "subformat=twoGbMaxExtentSparse,zeroed_grain=on", "subformat=twoGbMaxExtentFlat"} {
		t.Run(opt, func(t *testing.T) {
			img := fmt.Sprintf("io%d.vmdk", len(opt)+len(opt)%7*100)
			run(t, "qemu-img", "create", "-f", "vmdk", "-o", opt, img, "3G")
			run(t, "qemu-io", "-f", "vmdk",
				"-c", "write -P 0x11 0 100k",
				"-c", "write -z 256k 64k",
				"-c", "write -P 0x22 1000k 3k",
				"-c", "write -z 0 64k",
				"-c", "write -P 0x33 2047M 2M",
				"-c", "write -z 2048M 64k",
				"-c", "write -P 0x44 3071M 1M",
				img)
			run(t, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", img, "ref.raw")
			d := openT(t, img, true)
			defer d.Close()
			toRaw(t, d, "ours.raw")
			run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", "ref.raw", "ours.raw")
			if a, b := mapString(qemuMap(t, img)), mapString(ourMap(t, d)); a != b {
				t.Errorf("map differs:\nqemu:\n%s\nours:\n%s", a, b)
			}
			checkInfo(t, d, img)
		})
	}
}

// TestWriteReadByQemu: images this driver creates and writes (random-order chunks,
// WriteZeroes, partial grains) are identical to the source for qemu-img compare,
// clean for qemu-img check, and match its info.
func TestWriteReadByQemu(t *testing.T) {
	needQemu(t)
	chdirTemp(t)
	const size = 5<<20 + 3*512
	src := patterned(size, 2)
	writeFile(t, "src.raw", src)
	opts := []map[string]string{
		{"subformat": "monolithicSparse"},
		{"subformat": "monolithicSparse", "zeroed_grain": "on", "compat6": "on"},
		{"subformat": "monolithicFlat", "adapter_type": "lsilogic", "hwversion": "7"},
		{"subformat": "twoGbMaxExtentSparse", "adapter_type": "buslogic"},
		{"subformat": "twoGbMaxExtentFlat", "adapter_type": "legacyESX"},
		{"subformat": "streamOptimized"},
	}
	for i, o := range opts {
		t.Run(fmt.Sprint(o), func(t *testing.T) {
			img := fmt.Sprintf("w%d.vmdk", i)
			if err := vmdkFormatT(t).Create(img, block.CreateOptions{Size: size, Options: o}); err != nil {
				t.Fatal(err)
			}
			d := openT(t, img, false)
			stream := o["subformat"] == "streamOptimized"
			// Zero a few grains first, then write everything in chunks of odd sizes.
			if !stream {
				if _, err := d.WriteAt(bytes.Repeat([]byte{9}, 200000), 100000); err != nil {
					t.Fatal(err)
				}
				if err := d.WriteZeroes(65536, 3*65536, 0); err != nil {
					t.Fatal(err)
				}
			}
			type chunk struct{ off, n int64 }
			var chunks []chunk
			for off := int64(0); off < size; {
				n := min(int64(12345+off%70000), size-off)
				chunks = append(chunks, chunk{off, n})
				off += n
			}
			if !stream {
				rand.New(rand.NewPCG(3, 3)).Shuffle(len(chunks), func(i, j int) { chunks[i], chunks[j] = chunks[j], chunks[i] })
			}
			for _, c := range chunks {
				if isZero(src[c.off:c.off+c.n]) && !stream {
					if err := d.WriteZeroes(c.off, c.n, 0); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if _, err := d.WriteAt(src[c.off:c.off+c.n], c.off); err != nil {
					t.Fatalf("WriteAt(%d,%d): %v", c.off, c.n, err)
				}
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", "src.raw", img)
			if out, err := exec.Command("qemu-img", "check", "-f", "vmdk", img).CombinedOutput(); err != nil {
				t.Errorf("qemu-img check: %v\n%s", err, out)
			}
			d = openT(t, img, true)
			defer d.Close()
			checkInfo(t, d, img)
			got := make([]byte, size)
			if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, src) {
				t.Errorf("reading back our own image differs (%v)", err)
			}
			if stream {
				checkStreamTail(t, img)
			}
			if o["subformat"] == "monolithicSparse" {
				checkRedundant(t, img)
			}
		})
	}
}

// checkStreamTail verifies the footer marker, footer and end-of-stream marker.
func checkStreamTail(t *testing.T, img string) {
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	tail := b[len(b)-3*sectorSize:]
	if tail[12] != markerFooter || string(tail[512:516]) != "KDMV" || !isZero(tail[1024:]) {
		t.Errorf("streamOptimized image lacks footer marker, footer or EOS marker")
	}
	h, _ := parseHeader(b)
	if h.GDOffset != gdAtEnd {
		t.Errorf("header gd_offset %#x, want GD_AT_END", h.GDOffset)
	}
}

// streamConvert writes src into a new streamOptimized image through the
// ClusterCompressor interface, compressing on workers goroutines.
func streamConvert(t testing.TB, src []byte, img string, workers int) {
	if err := vmdkFormatT(t).Create(img, block.CreateOptions{Size: int64(len(src)), Options: map[string]string{"subformat": "streamOptimized"}}); err != nil {
		t.Fatal(err)
	}
	d := openT(t, img, false)
	cc, ok := d.(block.ClusterCompressor)
	if !ok {
		t.Fatal("streamOptimized driver is not a ClusterCompressor")
	}
	unit := cc.CompressionUnit()
	n := (int64(len(src)) + unit - 1) / unit
	results := make([]chan []byte, n)
	for i := range results {
		results[i] = make(chan []byte, 1)
	}
	var wg sync.WaitGroup
	next := make(chan int64)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				p := src[i*unit : min((i+1)*unit, int64(len(src)))]
				c, err := cc.CompressCluster(p)
				if err != nil {
					t.Error(err)
				}
				results[i] <- c
			}
		}()
	}
	go func() {
		for i := int64(0); i < n; i++ {
			next <- i
		}
		close(next)
	}()
	for i := int64(0); i < n; i++ {
		c := <-results[i]
		p := src[i*unit : min((i+1)*unit, int64(len(src)))]
		if err := cc.WriteCompressed(i*unit, c, p); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStreamCompressor: the parallel path gives images qemu-img reads as identical,
// byte-identical across worker counts.
func TestStreamCompressor(t *testing.T) {
	needQemu(t)
	chdirTemp(t)
	const size = 7<<20 + 512
	src := patterned(size, 4)
	writeFile(t, "src.raw", src)
	os.Mkdir("four", 0o755)
	streamConvert(t, src, "a.vmdk", 1)
	streamConvert(t, src, "four/a.vmdk", 4)
	a, _ := os.ReadFile("a.vmdk")
	b, _ := os.ReadFile("four/a.vmdk")
	if !bytes.Equal(a, b) {
		t.Errorf("stream output differs between 1 and 4 workers")
	}
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", "src.raw", "a.vmdk")
	checkStreamTail(t, "a.vmdk")
	d := openT(t, "a.vmdk", true)
	defer d.Close()
	if a, b := mapString(qemuMap(t, "a.vmdk")), mapString(ourMap(t, d)); a != b {
		t.Errorf("map differs:\nqemu:\n%s\nours:\n%s", a, b)
	}
	// qemu-img's own conversion of our image back to streamOptimized reads the same.
	run(t, "qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", "a.vmdk", "q.vmdk")
	run(t, "qemu-img", "compare", "q.vmdk", "a.vmdk")
}

// TestCreateMatchesQemu: descriptors and headers of empty images agree with qemu-img's
// except for the CID.
func TestCreateMatchesQemu(t *testing.T) {
	needQemu(t)
	chdirTemp(t)
	for i, o := range []string{"subformat=monolithicSparse", "subformat=monolithicFlat,adapter_type=lsilogic", "compat6=on,zeroed_grain=on", "hwversion=8,adapter_type=buslogic", "subformat=twoGbMaxExtentFlat"} {
		q, ours := fmt.Sprintf("q%d.vmdk", i), fmt.Sprintf("o%d.vmdk", i)
		run(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", o, q, "3000M")
		opts := map[string]string{}
		for _, kv := range bytes.Split([]byte(o), []byte(",")) {
			k, v, _ := bytes.Cut(kv, []byte("="))
			opts[string(k)] = string(v)
		}
		if err := vmdkFormatT(t).Create(ours, block.CreateOptions{Size: 3000 << 20, Options: opts}); err != nil {
			t.Fatal(err)
		}
		qi, oi := qemuInfo(t, q), qemuInfo(t, ours)
		qd := qi["format-specific"].(map[string]any)["data"].(map[string]any)
		od := oi["format-specific"].(map[string]any)["data"].(map[string]any)
		if qd["create-type"] != od["create-type"] || fmt.Sprint(len(qd["extents"].([]any))) != fmt.Sprint(len(od["extents"].([]any))) || qi["virtual-size"] != oi["virtual-size"] {
			t.Errorf("%s: info differs:\nqemu %v\nours %v", o, qi, oi)
		}
		qdesc, odesc := descText(t, q), descText(t, ours)
		strip := func(s string) string {
			return string(bytes.Join(filterLines([]byte(s), "CID="), []byte("\n")))
		}
		if a, b := strip(qdesc), strip(odesc); a != b {
			t.Errorf("%s: descriptor differs:\nqemu:\n%s\nours:\n%s", o, a, b)
		}
	}
}

func descText(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b[:4]) == "KDMV" {
		b = b[512 : 21*512]
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func filterLines(b []byte, drop string) [][]byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(l, []byte(drop)) {
			out = append(out, bytes.ReplaceAll(l, []byte("q"), []byte("o")))
		}
	}
	return out
}

// TestWriteAcrossExtents: writes spanning the 2 GiB extent boundary of the split
// subformats land where qemu-img reads them.
func TestWriteAcrossExtents(t *testing.T) {
	needQemu(t)
	chdirTemp(t)
	const size = 4<<30 + 1<<20
	data := patterned(3<<20, 5)
	at := []int64{0, 2<<30 - 1<<20 - 512, 4<<30 - 1<<20}
	for _, sf := range []string{"twoGbMaxExtentSparse", "twoGbMaxExtentFlat"} {
		t.Run(sf, func(t *testing.T) {
			img := sf + ".vmdk"
			if err := vmdkFormatT(t).Create(img, block.CreateOptions{Size: size, Options: map[string]string{"subformat": sf}}); err != nil {
				t.Fatal(err)
			}
			d := openT(t, img, false)
			ref, err := os.Create(sf + ".raw")
			if err != nil {
				t.Fatal(err)
			}
			ref.Truncate(size)
			for _, off := range at {
				n := min(int64(len(data)), size-off)
				if _, err := d.WriteAt(data[:n], off); err != nil {
					t.Fatal(err)
				}
				ref.WriteAt(data[:n], off)
			}
			ref.Close()
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", sf+".raw", img)
			d = openT(t, img, true)
			defer d.Close()
			checkInfo(t, d, img)
			if a, b := mapString(qemuMap(t, img)), mapString(ourMap(t, d)); a != b {
				t.Errorf("map differs:\nqemu:\n%s\nours:\n%s", a, b)
			}
		})
	}
}

// TestConvertCompressedToSparse: like qemu-img convert -c, a monolithicSparse target
// takes the ClusterCompressor path and stores grains uncompressed.
func TestConvertCompressedToSparse(t *testing.T) {
	needQemu(t)
	chdirTemp(t)
	const size = 3<<20 + 512
	src := patterned(size, 30)
	writeFile(t, "src.raw", src)
	if err := vmdkFormatT(t).Create("s.vmdk", block.CreateOptions{Size: size}); err != nil {
		t.Fatal(err)
	}
	d := openT(t, "s.vmdk", false)
	cc, ok := d.(block.ClusterCompressor)
	if !ok {
		t.Fatal("monolithicSparse image is not a ClusterCompressor")
	}
	u := cc.CompressionUnit()
	for off := int64(0); off < size; off += u {
		p := make([]byte, u) // padded last grain, as the pipeline passes it
		copy(p, src[off:])
		c, err := cc.CompressCluster(p)
		if err != nil || c != nil {
			t.Fatalf("CompressCluster = %v, %v; want nil (store uncompressed)", c, err)
		}
		if err := cc.WriteCompressed(off, nil, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", "src.raw", "s.vmdk")
	run(t, "qemu-img", "check", "s.vmdk")
	if err := d.Resize(size*2, block.ResizeOptions{}); !errors.Is(err, block.ErrUnsupported) {
		t.Errorf("Resize: %v, want ErrUnsupported", err)
	}
}

// TestCreateErrorsMatchQemu: bad -o values fail with qemu-img's message.
func TestCreateErrorsMatchQemu(t *testing.T) {
	needQemu(t)
	chdirTemp(t)
	for _, o := range []string{"adapter_type=foo", "subformat=foo", "compat6=on,hwversion=7", "zeroed_grain=maybe", "bogus=1", "preallocation=metadata"} {
		out, err := exec.Command("qemu-img", "create", "-q", "-f", "vmdk", "-o", o, "x.vmdk", "1M").CombinedOutput()
		if err == nil {
			t.Fatalf("qemu-img accepted %s", o)
		}
		opts := map[string]string{}
		for _, kv := range strings.Split(o, ",") {
			k, v, _ := strings.Cut(kv, "=")
			opts[k] = v
		}
		cerr := vmdkFormatT(t).Create("y.vmdk", block.CreateOptions{Size: 1 << 20, Options: opts})
		want := strings.TrimSpace(string(out))
		if cerr == nil || !strings.HasSuffix(want, cerr.Error()) {
			t.Errorf("%s: qemu-img says %q, we say %v", o, want, cerr)
		}
	}
}

// TestStreamManyTables: a streamOptimized image whose data spans several grain tables,
// with whole tables left empty, is read by qemu-img as written, and by us.
func TestStreamManyTables(t *testing.T) {
	needQemu(t)
	chdirTemp(t)
	const size = 300<<20 + 512
	at := []int64{0, 40 << 20, 40<<20 + 65536*3 + 17, 200 << 20, size - 70000}
	data := patterned(70000, 40)
	ref, _ := os.Create("ref.raw")
	ref.Truncate(size)
	if err := vmdkFormatT(t).Create("m.vmdk", block.CreateOptions{Size: size, Options: map[string]string{"subformat": "streamOptimized"}}); err != nil {
		t.Fatal(err)
	}
	d := openT(t, "m.vmdk", false)
	for _, off := range at {
		if _, err := d.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
		ref.WriteAt(data, off)
	}
	ref.Close()
	if _, err := d.WriteAt(data, 0); err == nil {
		t.Errorf("rewriting a grain already streamed out succeeded")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", "ref.raw", "m.vmdk")
	checkStreamTail(t, "m.vmdk")
	d = openT(t, "m.vmdk", true)
	defer d.Close()
	toRaw(t, d, "ours.raw")
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", "ref.raw", "ours.raw")
	if a, b := mapString(qemuMap(t, "m.vmdk")), mapString(ourMap(t, d)); a != b {
		t.Errorf("map differs:\nqemu:\n%s\nours:\n%s", a, b)
	}
}

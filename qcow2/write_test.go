package qcow2

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gemu/block"
)

// model applies the same operations to the image and to a byte slice.
type model struct {
	t   *testing.T
	d   block.Driver
	ref []byte
}

func (m *model) write(off int64, n int, seed byte) {
	m.t.Helper()
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i*7/512)
	}
	if _, err := m.d.WriteAt(p, off); err != nil {
		m.t.Fatalf("WriteAt(%d, %d): %v", off, n, err)
	}
	copy(m.ref[off:], p)
}

func (m *model) zero(off, n int64, flags block.ZeroFlags) {
	m.t.Helper()
	if err := m.d.WriteZeroes(off, n, flags); err != nil {
		m.t.Fatalf("WriteZeroes(%d, %d): %v", off, n, err)
	}
	clear(m.ref[off : off+n])
}

func (m *model) compressed(off int64, seed byte) {
	m.t.Helper()
	cc := m.d.(block.ClusterCompressor)
	unit := cc.CompressionUnit()
	p := bytes.Repeat([]byte{seed, seed + 1, 'x', 'y'}, int(unit/4))
	if off+unit > m.d.Size() {
		p = p[:m.d.Size()-off]
	}
	c, err := cc.CompressCluster(p)
	if err != nil {
		m.t.Fatal(err)
	}
	if c == nil {
		m.t.Fatalf("compressible cluster did not compress")
	}
	if err := cc.WriteCompressed(off, c, p); err != nil {
		m.t.Fatal(err)
	}
	copy(m.ref[off:], p)
}

// batch writes whole clusters at offs through WriteCompressedBatch: odd entries of
// random (incompressible, stored raw) bytes, even ones compressible.
func (m *model) batch(offs []int64, seed int64) {
	m.t.Helper()
	cc := m.d.(block.ClusterCompressor)
	unit := cc.CompressionUnit()
	r := rand.New(rand.NewSource(seed))
	var cl []block.CompressedCluster
	for i, off := range offs {
		p := bytes.Repeat([]byte{byte(seed), byte(i), 'q'}, int(unit))[:unit]
		if i%2 == 1 {
			r.Read(p)
		}
		c, err := cc.CompressCluster(p)
		if err != nil {
			m.t.Fatal(err)
		}
		if (c == nil) != (i%2 == 1) {
			m.t.Fatalf("cluster %d: compressed %v", i, c != nil)
		}
		cl = append(cl, block.CompressedCluster{Off: off, Compressed: c, Raw: p})
		copy(m.ref[off:], p)
	}
	if err := m.d.(block.CompressedBatcher).WriteCompressedBatch(cl); err != nil {
		m.t.Fatal(err)
	}
}

func (m *model) verify(path string) {
	m.t.Helper()
	got := make([]byte, len(m.ref))
	if _, err := m.d.ReadAt(got, 0); err != nil {
		m.t.Fatal(err)
	}
	if !bytes.Equal(got, m.ref) {
		m.t.Fatalf("%s: driver read-back differs from model at %d", path, firstDiff(got, m.ref))
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// qemuRaw returns the guest content as qemu-img sees it.
func qemuRaw(t *testing.T, path string) []byte {
	raw := filepath.Join(t.TempDir(), "out.raw")
	run(t, "qemu-img", "convert", "-O", "raw", path, raw)
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func create(t *testing.T, path string, size int64, opts map[string]string, backing, bfmt string) block.Driver {
	t.Helper()
	f, _ := block.Lookup("qcow2")
	if err := f.Create(path, block.CreateOptions{Size: size, Options: opts, Backing: backing, BackingFormat: bfmt}); err != nil {
		t.Fatalf("Create %v: %v", opts, err)
	}
	qemuCheckClean(t, path)
	d, err := block.Open(path, block.OpenOptions{Format: "qcow2"})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return d
}

// exercise runs a fixed pseudo-random workload.
func exercise(m *model, cluster int64, compress bool) {
	size := int64(len(m.ref))
	r := rand.New(rand.NewSource(int64(cluster)))
	if compress {
		// Batched convert writes into fresh clusters (one pwritev per host run); the
		// workload below then rewrites parts of them.
		m.batch([]int64{14 * cluster, 15 * cluster, 16 * cluster, 17 * cluster}, 7)
	}
	m.write(0, int(2*cluster), 1)
	m.write(cluster/2, 1000, 2)
	m.write(size-cluster-100, int(cluster)+100, 3)
	for i := 0; i < 40; i++ {
		off := r.Int63n(size - 1)
		n := 1 + r.Int63n(min(size-off, 3*cluster))
		switch r.Intn(5) {
		case 0, 1, 2:
			m.write(off, int(n), byte(i+10))
		case 3:
			m.zero(off, n, block.ZeroMayUnmap)
		case 4:
			m.zero(off, n, 0)
		}
	}
	// Big aligned write: the fast path.
	m.write(4*cluster, int(8*cluster), 0x70)
	m.zero(5*cluster, 2*cluster, 0)
	if compress {
		m.compressed(10*cluster, 'a')
		m.compressed(11*cluster, 'c')
		m.compressed(12*cluster, 'e')
		// Overwrite part of a compressed cluster: copy-on-write through decompression.
		m.write(11*cluster+17, 100, 0x55)
		// A batch that overwrites allocated clusters (written one by one).
		m.batch([]int64{4 * cluster, 10 * cluster, 18 * cluster}, 8)
	}
}

func TestWriteMatrix(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	cases := []struct {
		name string
		opts map[string]string
		size int64
	}{
		{"v3", nil, 8 << 20},
		{"v2", map[string]string{"compat": "0.10"}, 8 << 20},
		{"c512", map[string]string{"cluster_size": "512"}, 1 << 20},
		{"c4k_rc1", map[string]string{"cluster_size": "4k", "refcount_bits": "1"}, 2 << 20},
		{"c2m", map[string]string{"cluster_size": "2M"}, 40 << 20},
		{"rc2", map[string]string{"refcount_bits": "2"}, 4<<20 + 512},
		{"odd_size", map[string]string{"cluster_size": "4k"}, 3<<20 + 1536},
		{"rc64", map[string]string{"refcount_bits": "64"}, 4 << 20},
		{"l2ext", map[string]string{"extended_l2": "on"}, 4 << 20},
		{"l2ext16k", map[string]string{"extended_l2": "on", "cluster_size": "16k"}, 4 << 20},
		{"lazy", map[string]string{"lazy_refcounts": "on"}, 4 << 20},
		{"zstd", map[string]string{"compression_type": "zstd"}, 4 << 20},
		{"meta", map[string]string{"preallocation": "metadata"}, 4 << 20},
		{"falloc", map[string]string{"preallocation": "falloc", "cluster_size": "4k"}, 2 << 20},
		{"full", map[string]string{"preallocation": "full"}, 2 << 20},
		{"datafile", map[string]string{"data_file": "df.raw"}, 4 << 20},
		{"datafile_raw", map[string]string{"data_file": "dfr.raw", "data_file_raw": "on"}, 4 << 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.name+".qcow2")
			if df, ok := c.opts["data_file"]; ok {
				c.opts["data_file"] = filepath.Join(dir, df)
			}
			d := create(t, p, c.size, c.opts, "", "")
			info, _ := d.(block.Infoer).Info()
			m := &model{t: t, d: d, ref: make([]byte, c.size)}
			exercise(m, info.ClusterSize, c.opts["data_file"] == "")
			m.verify(p)
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			qemuCheckClean(t, p)
			if got := qemuRaw(t, p); !bytes.Equal(got, m.ref) {
				t.Fatalf("qemu-img reads different data at %d", firstDiff(got, m.ref))
			}
			checkMap(t, p)
			checkInfo(t, p)
			d2 := openRO(t, p)
			r, err := d2.(block.Checker).Check(block.RepairNone)
			d2.Close()
			if err != nil {
				t.Fatal(err)
			}
			compareCheck(t, p, r)
		})
	}
}

func TestWriteBackingCOW(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "3M")
	qemuIO(t, base, "write -P 0x31 0 3M")
	for _, ext := range []string{"off", "on"} {
		p := filepath.Join(dir, "top"+ext+".qcow2")
		d := create(t, p, 4<<20, map[string]string{"extended_l2": ext}, "base.qcow2", "qcow2")
		ref := make([]byte, 4<<20)
		copy(ref, bytes.Repeat([]byte{0x31}, 3<<20))
		m := &model{t: t, d: d, ref: ref}
		m.write(100, 10, 9)
		m.write(70000, 5000, 8)
		m.write(3<<20-10, 20, 7)
		m.zero(1<<20, 64<<10, 0)
		m.zero(2<<20, 64<<10, block.ZeroMayUnmap)
		m.verify(p)
		d.Close()
		qemuCheckClean(t, p)
		if got := qemuRaw(t, p); !bytes.Equal(got, m.ref) {
			t.Fatalf("qemu-img reads different data at %d", firstDiff(got, m.ref))
		}
		checkMap(t, p)
		checkInfo(t, p)
	}
}

func TestSnapshotsWrite(t *testing.T) {
	needQemu(t)
	p := filepath.Join(t.TempDir(), "s.qcow2")
	d := create(t, p, 4<<20, nil, "", "")
	m := &model{t: t, d: d, ref: make([]byte, 4<<20)}
	m.write(0, 1<<20, 1)
	m.compressed(2<<20, 'q')
	s := d.(block.Snapshotter)
	if err := s.CreateSnapshot("first"); err != nil {
		t.Fatal(err)
	}
	snap1 := append([]byte(nil), m.ref...)
	m.write(512<<10, 1<<20, 2)
	m.write(5, 5, 3)
	if err := s.CreateSnapshot("second"); err != nil {
		t.Fatal(err)
	}
	m.write(3<<20, 4096, 4)
	m.verify(p)
	d.Close()
	qemuCheckClean(t, p)
	checkInfo(t, p)
	out := string(run(t, "qemu-img", "snapshot", "-l", p))
	if !strings.Contains(out, "first") || !strings.Contains(out, "second") {
		t.Fatalf("qemu-img snapshot -l: %s", out)
	}
	if got := qemuRaw(t, p); !bytes.Equal(got, m.ref) {
		t.Fatalf("active state differs at %d", firstDiff(got, m.ref))
	}
	// Apply the first snapshot and delete the second.
	d, err := block.Open(p, block.OpenOptions{Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	s = d.(block.Snapshotter)
	if err := s.ApplySnapshot("first"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSnapshot("2"); err != nil {
		t.Fatal(err)
	}
	m = &model{t: t, d: d, ref: append([]byte(nil), snap1...)}
	m.verify(p)
	m.write(4096, 4096, 5)
	d.Close()
	qemuCheckClean(t, p)
	if got := qemuRaw(t, p); !bytes.Equal(got, m.ref) {
		t.Fatalf("after apply: differs at %d", firstDiff(got, m.ref))
	}
	checkInfo(t, p)
	// qemu-img agrees about the snapshot content.
	run(t, "qemu-img", "snapshot", "-a", "first", p)
	if got := qemuRaw(t, p); !bytes.Equal(got, snap1) {
		t.Fatalf("qemu-img apply: differs at %d", firstDiff(got, snap1))
	}
	// A snapshot taken right after opening (nothing written in this session).
	d, _ = block.Open(p, block.OpenOptions{Format: "qcow2"})
	if err := d.(block.Snapshotter).CreateSnapshot("third"); err != nil {
		t.Fatal(err)
	}
	d.Close()
	qemuCheckClean(t, p)
	d, _ = block.Open(p, block.OpenOptions{Format: "qcow2"})
	for _, name := range []string{"first", "third"} {
		if err := d.(block.Snapshotter).DeleteSnapshot(name); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	qemuCheckClean(t, p)
	var info map[string]any
	json.Unmarshal(run(t, "qemu-img", "info", "--output=json", p), &info)
	if info["snapshots"] != nil {
		t.Fatalf("snapshots left: %v", info["snapshots"])
	}
}

// TestCheckAgainstQemu damages images (leaks and corruptions made by editing bytes)
// and compares the check result and repair with qemu-img.
func TestCheckAgainstQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	mk := func(name string) string {
		p := filepath.Join(dir, name)
		run(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
		qemuIO(t, p, "write -P 1 0 256k", "write -P 2 1M 64k")
		return p
	}
	// Leak: bump the refcount of a cluster past the end, and of the header.
	leak := mk("leak.qcow2")
	f, _ := os.OpenFile(leak, os.O_RDWR, 0)
	rb := make([]byte, 8)
	f.ReadAt(rb, 48)
	rtOff := int64(be.Uint64(rb))
	f.ReadAt(rb, rtOff)
	rbOff := int64(be.Uint64(rb))
	f.WriteAt([]byte{0, 1}, rbOff+2*40) // cluster 40: unreferenced, refcount 1
	f.WriteAt([]byte{0, 2}, rbOff)      // header refcount 2
	f.Close()
	// Corruption: drop the refcount of a data cluster to zero... and of the L1 one too low.
	corrupt := mk("corrupt.qcow2")
	f, _ = os.OpenFile(corrupt, os.O_RDWR, 0)
	f.WriteAt([]byte{0, 0}, rbOff+2*5)
	f.Close()
	// Snapshot image: a copied flag set where the refcount is 2, and a data cluster's
	// refcount lowered from 2 to 1.
	snap := mk("snapflags.qcow2")
	run(t, "qemu-img", "snapshot", "-c", "s", snap)
	f, _ = os.OpenFile(snap, os.O_RDWR, 0)
	f.ReadAt(rb, 40)
	l1Off := int64(be.Uint64(rb))
	f.ReadAt(rb, l1Off)
	l2Off := int64(be.Uint64(rb) & l1OffsetMask)
	f.ReadAt(rb, l2Off)
	be.PutUint64(rb, be.Uint64(rb)|flagCopied)
	f.WriteAt(rb, l2Off)
	f.ReadAt(rb, l2Off+8)
	second := int64(be.Uint64(rb) & l2OffsetMask)
	f.ReadAt(rb, 48)
	f.ReadAt(rb, int64(be.Uint64(rb)))
	f.WriteAt([]byte{0, 1}, int64(be.Uint64(rb))+2*(second>>16))
	f.Close()
	for _, p := range []string{leak, corrupt, snap} {
		d := openRO(t, p)
		r, err := d.(block.Checker).Check(block.RepairNone)
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		compareCheck(t, p, r)
		if r.Corruptions+r.Leaks == 0 {
			t.Errorf("%s: damage not detected", p)
		}
		// Compare the message lines with qemu-img's stderr.
		cmd := exec.Command("qemu-img", "check", p)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.Run()
		for _, line := range r.Messages {
			if !strings.Contains(stderr.String(), line) {
				t.Errorf("%s: message %q not in qemu-img output:\n%s", p, line, stderr.String())
			}
		}
		// Repair with our driver; qemu-img must then find it clean.
		cp := p + ".fixed"
		b, _ := os.ReadFile(p)
		os.WriteFile(cp, b, 0o644)
		d, err = block.Open(cp, block.OpenOptions{Format: "qcow2"})
		if err != nil {
			t.Fatal(err)
		}
		r, err = d.(block.Checker).Check(block.RepairAll)
		if err != nil {
			t.Fatal(err)
		}
		if r.LeaksFixed+r.CorruptionsFixed == 0 {
			t.Errorf("%s: nothing repaired: %+v", p, r)
		}
		d.Close()
		qemuCheckClean(t, cp)
		if !bytes.Equal(qemuRaw(t, cp), qemuRaw(t, p)) {
			t.Errorf("%s: repair changed the data", p)
		}
		// Leak repair: the fixed count matches qemu-img check -r leaks.
		ql, gl := p+".ql", p+".gl"
		os.WriteFile(ql, b, 0o644)
		os.WriteFile(gl, b, 0o644)
		out, _ := exec.Command("qemu-img", "check", "-r", "leaks", "--output=json", ql).Output()
		var want block.CheckResult
		json.Unmarshal(out, &want)
		d, err = block.Open(gl, block.OpenOptions{Format: "qcow2"})
		if err != nil {
			t.Fatal(err)
		}
		r, err = d.(block.Checker).Check(block.RepairLeaks)
		d.Close()
		if len(out) == 0 {
			// qemu-img refuses: a refcount of 0 needs a rebuild -r leaks may not do.
			if err == nil || err.Error() != "Input/output error" {
				t.Errorf("%s: -r leaks: err %v, qemu-img failed with Input/output error", p, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if r.LeaksFixed != want.LeaksFixed {
			t.Errorf("%s: -r leaks fixed %d, qemu-img %d", p, r.LeaksFixed, want.LeaksFixed)
		}
	}
}

// TestConcurrent reads from several goroutines while another writes, as the convert
// pipeline and virtual disks do; run with -race to check the locking.
func TestConcurrent(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.qcow2")
	f, _ := block.Lookup("qcow2")
	if err := f.Create(p, block.CreateOptions{Size: 8 << 20, Options: map[string]string{"cluster_size": "4k"}}); err != nil {
		t.Fatal(err)
	}
	d, err := block.Open(p, block.OpenOptions{Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// The first 4 MiB is written before the readers start and never changes.
	ref := make([]byte, 4<<20)
	rand.New(rand.NewSource(3)).Read(ref[:1<<20])
	copy(ref[2<<20:], bytes.Repeat([]byte("abcd"), 1<<18))
	if _, err := d.WriteAt(ref, 0); err != nil {
		t.Fatal(err)
	}
	cc := d.(block.ClusterCompressor)
	for off := int64(2 << 20); off < 3<<20; off += 4096 {
		c, _ := cc.CompressCluster(ref[off : off+4096])
		if err := cc.WriteCompressed(off, c, ref[off:off+4096]); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 4)
	for g := 0; g < 3; g++ {
		go func(g int) {
			r := rand.New(rand.NewSource(int64(g)))
			buf := make([]byte, 64<<10)
			for i := 0; i < 200; i++ {
				off := r.Int63n(int64(len(ref) - len(buf)))
				if _, err := d.ReadAt(buf, off); err != nil {
					done <- err
					return
				}
				if !bytes.Equal(buf, ref[off:off+int64(len(buf))]) {
					done <- fmt.Errorf("reader %d: bad data at %d", g, off)
					return
				}
			}
			done <- nil
		}(g)
	}
	go func() {
		buf := bytes.Repeat([]byte{7}, 10000)
		for i := int64(0); i < 200; i++ {
			if _, err := d.WriteAt(buf, 4<<20+i*17000); err != nil {
				done <- err
				return
			}
		}
		done <- d.Flush()
	}()
	for i := 0; i < 4; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestCrashConsistency abandons images mid-way (no Flush, no Close: what a crash
// leaves on disk) while tiny caches force write-back by eviction; qemu-img check must
// never find a corruption (leaks are allowed), and with lazy refcounts opening
// read-write repairs the image.
func TestCrashConsistency(t *testing.T) {
	needQemu(t)
	for _, lazy := range []string{"off", "on"} {
		dir := t.TempDir()
		p := filepath.Join(dir, "crash.qcow2")
		f, _ := block.Lookup("qcow2")
		if err := f.Create(p, block.CreateOptions{Size: 64 << 20, Options: map[string]string{"cluster_size": "4k", "lazy_refcounts": lazy}}); err != nil {
			t.Fatal(err)
		}
		d, err := open(p, block.OpenOptions{Format: "qcow2"})
		if err != nil {
			t.Fatal(err)
		}
		d.l2.max, d.rc.blocks.max = 2, 2
		r := rand.New(rand.NewSource(5))
		buf := bytes.Repeat([]byte{9}, 6000)
		for i := 0; i < 300; i++ {
			off := r.Int63n(64<<20 - 6000)
			if _, err := d.WriteAt(buf, off); err != nil {
				t.Fatal(err)
			}
			if i%50 == 0 {
				d.Discard(off&^4095, 8192)
			}
			if i == 100 {
				// Later writes copy shared L2 tables and clusters through tiny caches.
				if err := d.CreateSnapshot("mid"); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Abandon: close the files without writing back.
		d.closeFiles()
		out, err := exec.Command("qemu-img", "check", "--output=json", p).Output()
		var res block.CheckResult
		json.Unmarshal(out, &res)
		if res.Corruptions != 0 || res.CheckErrors != 0 {
			if lazy == "off" || err == nil {
				t.Fatalf("lazy=%s: corruption after crash: %v\n%s", lazy, err, out)
			}
		}
		if lazy == "on" {
			// The dirty bit is set: a read-write open rebuilds the refcounts.
			d, err := block.Open(p, block.OpenOptions{Format: "qcow2"})
			if err != nil {
				t.Fatal(err)
			}
			d.Close()
			qemuCheckClean(t, p)
		}
	}
}

func TestResize(t *testing.T) {
	needQemu(t)
	p := filepath.Join(t.TempDir(), "r.qcow2")
	d := create(t, p, 1<<20, map[string]string{"cluster_size": "512"}, "", "")
	m := &model{t: t, d: d, ref: make([]byte, 1<<20)}
	m.write(0, 1<<20, 1)
	// Grow far enough to need a bigger L1 table and refcount table.
	if err := d.Resize(300<<20, block.ResizeOptions{}); err != nil {
		t.Fatal(err)
	}
	m.ref = append(m.ref, make([]byte, 299<<20)...)
	m.write(299<<20, 4096, 2)
	if err := d.Resize(100<<20, block.ResizeOptions{}); err == nil {
		t.Fatal("shrink without Shrink succeeded")
	}
	if err := d.Resize(512<<10+512, block.ResizeOptions{Shrink: true}); err != nil {
		t.Fatal(err)
	}
	m.ref = m.ref[:512<<10+512]
	m.verify(p)
	d.Close()
	qemuCheckClean(t, p)
	if got := qemuRaw(t, p); !bytes.Equal(got, m.ref) {
		t.Fatalf("after resize: differs at %d", firstDiff(got, m.ref))
	}
	checkMap(t, p)
}

// TestRefcountGrowth writes enough 512-byte clusters to outgrow the first refcount
// table (64 entries of 256 clusters) several times, with 1-bit refcounts too.
func TestRefcountGrowth(t *testing.T) {
	needQemu(t)
	for _, rb := range []string{"16", "1"} {
		p := filepath.Join(t.TempDir(), "g.qcow2")
		d := create(t, p, 24<<20, map[string]string{"cluster_size": "512", "refcount_bits": rb}, "", "")
		m := &model{t: t, d: d, ref: make([]byte, 24<<20)}
		for off := int64(0); off < 24<<20; off += 1 << 20 {
			m.write(off, 1<<20-512*(int(off>>20)%3), byte(off>>20))
		}
		m.verify(p)
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		qemuCheckClean(t, p)
		if got := qemuRaw(t, p); !bytes.Equal(got, m.ref) {
			t.Fatalf("refcount_bits=%s: differs at %d", rb, firstDiff(got, m.ref))
		}
		d2 := openRO(t, p)
		r, err := d2.(block.Checker).Check(block.RepairNone)
		d2.Close()
		if err != nil {
			t.Fatal(err)
		}
		compareCheck(t, p, r)
	}
}

func TestResizePrealloc(t *testing.T) {
	needQemu(t)
	for _, mode := range []string{"metadata", "falloc", "full"} {
		p := filepath.Join(t.TempDir(), "rp.qcow2")
		d := create(t, p, 1<<20+512, nil, "", "")
		m := &model{t: t, d: d, ref: make([]byte, 3<<20)}
		m.write(1<<20, 512, 1)
		if err := d.Resize(3<<20, block.ResizeOptions{Preallocation: mode}); err != nil {
			t.Fatal(err)
		}
		m.write(2<<20, 1000, 2)
		d.Close()
		qemuCheckClean(t, p)
		if got := qemuRaw(t, p); !bytes.Equal(got, m.ref) {
			t.Fatalf("%s: differs at %d", mode, firstDiff(got, m.ref))
		}
		checkMap(t, p)
	}
}

// TestSnapshotAcrossResize applies a snapshot taken at a larger size (its L1 table is
// longer than the active one).
func TestSnapshotAcrossResize(t *testing.T) {
	needQemu(t)
	p := filepath.Join(t.TempDir(), "sr.qcow2")
	d := create(t, p, 2<<30, map[string]string{"cluster_size": "4k"}, "", "")
	m := &model{t: t, d: d, ref: make([]byte, 4<<20)}
	m.write(0, 1<<20, 1)
	if _, err := d.WriteAt([]byte("far"), 2<<30-4096); err != nil {
		t.Fatal(err)
	}
	if err := d.(block.Snapshotter).CreateSnapshot("big"); err != nil {
		t.Fatal(err)
	}
	if err := d.(block.Snapshotter).DeleteSnapshot("big"); err != nil {
		t.Fatal(err)
	}
	if err := d.(block.Snapshotter).CreateSnapshot("big"); err != nil {
		t.Fatal(err)
	}
	d.Close()
	// Shrink with our driver (the snapshot keeps the clusters past the new end).
	d, err := block.Open(p, block.OpenOptions{Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Resize(4<<20, block.ResizeOptions{Shrink: true}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	qemuCheckClean(t, p)
	d, err = block.Open(p, block.OpenOptions{Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.(block.Snapshotter).ApplySnapshot("big"); err != nil {
		t.Fatal(err)
	}
	if d.Size() != 2<<30 {
		t.Fatalf("size after apply %d", d.Size())
	}
	buf := make([]byte, 3)
	d.ReadAt(buf, 2<<30-4096)
	d.Close()
	if string(buf) != "far" {
		t.Fatalf("read %q", buf)
	}
	qemuCheckClean(t, p)
	checkInfo(t, p)
}

// TestSubclusterZeroes compares WriteZeroes on subclusters with qemu-io write -z on the
// same image: same data and the same map.
func TestSubclusterZeroes(t *testing.T) {
	needQemu(t)
	for _, ext := range []string{"on", "off"} {
		t.Run("extended_l2="+ext, func(t *testing.T) { zeroesLikeQemu(t, ext) })
	}
}

func zeroesLikeQemu(t *testing.T, ext string) {
	dir := t.TempDir()
	ours, theirs := filepath.Join(dir, "ours.qcow2"), filepath.Join(dir, "theirs.qcow2")
	for _, p := range []string{ours, theirs} {
		run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2="+ext, p, "4M")
		qemuIO(t, p, "write -P 1 0 256k")
	}
	ranges := [][2]int64{{2048, 8192}, {70000, 30000}, {1 << 20, 6144}, {200 << 10, 100 << 10}, {2 << 20, 128 << 10}}
	var cmds []string
	d, err := block.Open(ours, block.OpenOptions{Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ranges {
		if err := d.WriteZeroes(r[0], r[1], 0); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, fmt.Sprintf("write -z %d %d", r[0], r[1]))
	}
	d.Close()
	qemuIO(t, theirs, cmds...)
	qemuCheckClean(t, ours)
	if !bytes.Equal(qemuRaw(t, ours), qemuRaw(t, theirs)) {
		t.Fatal("data differs from qemu-io's")
	}
	var mo, mt []mapEntry
	json.Unmarshal(run(t, "qemu-img", "map", "--output=json", ours), &mo)
	json.Unmarshal(run(t, "qemu-img", "map", "--output=json", theirs), &mt)
	if fmtMap(mo) != fmtMap(mt) {
		t.Errorf("map differs from qemu-io's:\n ours: %s\n qemu: %s", fmtMap(mo), fmtMap(mt))
	}
	checkMap(t, ours)
}

// TestTinyCaches runs writes, a snapshot and copy-on-write with two-entry caches, so
// every step evicts and writes back metadata, and checks data and metadata.
func TestTinyCaches(t *testing.T) {
	needQemu(t)
	p := filepath.Join(t.TempDir(), "tiny.qcow2")
	f, _ := block.Lookup("qcow2")
	if err := f.Create(p, block.CreateOptions{Size: 16 << 20, Options: map[string]string{"cluster_size": "4k"}}); err != nil {
		t.Fatal(err)
	}
	d, err := open(p, block.OpenOptions{Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	d.l2.max, d.rc.blocks.max = 2, 2
	m := &model{t: t, d: d, ref: make([]byte, 16<<20)}
	r := rand.New(rand.NewSource(9))
	var snap []byte
	for i := 0; i < 200; i++ {
		off := r.Int63n(16<<20 - 20000)
		m.write(off, 1+r.Intn(20000), byte(i))
		if i == 100 {
			if err := d.CreateSnapshot("s"); err != nil {
				t.Fatal(err)
			}
			snap = append([]byte(nil), m.ref...)
		}
	}
	m.verify(p)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheckClean(t, p)
	if got := qemuRaw(t, p); !bytes.Equal(got, m.ref) {
		t.Fatalf("differs at %d", firstDiff(got, m.ref))
	}
	run(t, "qemu-img", "snapshot", "-a", "s", p)
	if got := qemuRaw(t, p); !bytes.Equal(got, snap) {
		t.Fatalf("snapshot differs at %d", firstDiff(got, snap))
	}
}

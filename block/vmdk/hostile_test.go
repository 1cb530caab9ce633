package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"gemu/block"
)

var updateHostile = flag.Bool("update-hostile", false, "regenerate testdata/hostile")

const hostileDir = "testdata/hostile"

// hostileCase is one crafted image and the error it must produce.
type hostileCase struct {
	name string
	want string // substring of the one-line error
	make func(t testing.TB) []byte
}

var le = binary.LittleEndian

// sparseBase is a 1 MiB monolithicSparse image with grains 0, 1 and 3 written.
func sparseBase(t testing.TB) []byte {
	return buildImage(t, "monolithicSparse", func(d block.Driver) {
		for _, g := range []int64{0, 1, 3} {
			d.WriteAt(bytes.Repeat([]byte{byte(g + 1)}, 65536), g*65536)
		}
	})
}

// streamBase is a 1 MiB streamOptimized image with grains 0 and 2 written.
func streamBase(t testing.TB) []byte {
	return buildImage(t, "streamOptimized", func(d block.Driver) {
		for _, g := range []int64{0, 2} {
			d.WriteAt(bytes.Repeat([]byte("hostile "), 8192), g*65536)
		}
	})
}

func buildImage(t testing.TB, sf string, fill func(block.Driver)) []byte {
	p := filepath.Join(t.TempDir(), "base.vmdk")
	if err := vmdkFormatT(t).Create(p, block.CreateOptions{Size: 1 << 20, Options: map[string]string{"subformat": sf}}); err != nil {
		t.Fatal(err)
	}
	d := openT(t, p, false)
	fill(d)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// gt0 returns the byte offset of grain table 0 of a sparse base image.
func gt0(b []byte) int {
	gd := int(le.Uint64(b[56:])) * sectorSize
	return int(le.Uint32(b[gd:])) * sectorSize
}

func mutate(base func(testing.TB) []byte, fn func(b []byte) []byte) func(testing.TB) []byte {
	return func(t testing.TB) []byte { return fn(base(t)) }
}

func text(s string) func(testing.TB) []byte {
	return func(testing.TB) []byte { return []byte(s) }
}

const hdesc = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n# Extent description\n"

// bigDir is a sparse extent with a 256 KiB grain directory (and redundant copy),
// shared by the many-extents case.
func bigDir(t testing.TB) []byte {
	b := make([]byte, 1026*512)
	h := header{Version: 1, Flags: flagNLDetect | flagRGD, Capacity: 65536 * 512 * 128, GrainSize: 128,
		NumGTEsPerGT: 512, RGDOffset: 1, GDOffset: 1 + 512, OverHead: 1026}
	h.marshal(b)
	return b
}

func manyExtents(testing.TB) []byte {
	var sb strings.Builder
	sb.WriteString(hdesc)
	for range 300 {
		sb.WriteString("RW 8 SPARSE \"big-directory.vmdk\"\n")
	}
	return []byte(sb.String())
}

var hostileCases = []hostileCase{
	{"big-directory.vmdk", "", bigDir},
	{"many-extents-one-file.vmdk", "grain directories need more than", manyExtents},
	{"bad-version.vmdk", "unsupported sparse extent version", mutate(sparseBase, func(b []byte) []byte { le.PutUint32(b[4:], 9); return b })},
	{"truncated-header.vmdk", "too short", mutate(sparseBase, func(b []byte) []byte { return b[:100] })},
	{"cowd-magic.vmdk", "invalid grain size", mutate(sparseBase, func(b []byte) []byte { copy(b, "COWD"); return b })},
	{"gd-offset-past-eof.vmdk", "grain directory at sector", mutate(sparseBase, func(b []byte) []byte { le.PutUint64(b[56:], 1<<40); return b })},
	{"rgd-offset-past-eof.vmdk", "redundant grain directory", mutate(sparseBase, func(b []byte) []byte { le.PutUint64(b[48:], uint64(len(b)/512)); return b })},
	{"gt-offset-past-eof.vmdk", "grain table 0 at offset", mutate(sparseBase, func(b []byte) []byte {
		le.PutUint32(b[int(le.Uint64(b[56:]))*512:], 0xfffffff0)
		return b
	})},
	{"huge-capacity.vmdk", "grain directory of", mutate(sparseBase, func(b []byte) []byte { le.PutUint64(b[12:], 1<<52); return b })},
	{"capacity-overflow.vmdk", "capacity", mutate(sparseBase, func(b []byte) []byte { le.PutUint64(b[12:], 1<<63); return b })},
	{"num-gtes-absurd.vmdk", "invalid grain table size", mutate(sparseBase, func(b []byte) []byte { le.PutUint32(b[44:], 0xffffffff); return b })},
	{"num-gtes-zero.vmdk", "invalid grain table size", mutate(sparseBase, func(b []byte) []byte { le.PutUint32(b[44:], 0); return b })},
	{"grain-size-not-pow2.vmdk", "invalid grain size", mutate(sparseBase, func(b []byte) []byte { le.PutUint64(b[20:], 100); return b })},
	{"grain-size-huge.vmdk", "invalid grain size", mutate(sparseBase, func(b []byte) []byte { le.PutUint64(b[20:], 1<<40); return b })},
	{"overlapping-grains.vmdk", "overlapping grains", mutate(sparseBase, func(b []byte) []byte {
		g := gt0(b)
		le.PutUint32(b[g+4:], le.Uint32(b[g:])+8)
		return b
	})},
	{"grain-into-metadata.vmdk", "points into metadata", mutate(sparseBase, func(b []byte) []byte {
		g := gt0(b)
		le.PutUint32(b[g+8:], 1)
		return b
	})},
	{"grain-over-grain-table.vmdk", "points into metadata", mutate(sparseBase, func(b []byte) []byte {
		g := gt0(b)
		le.PutUint32(b[g+8:], uint32(g/512))
		return b
	})},
	{"grain-past-eof.vmdk", "past the end of the file", mutate(sparseBase, func(b []byte) []byte {
		le.PutUint32(b[gt0(b)+8:], 0x7fffffff)
		return b
	})},
	{"overhead-past-eof.vmdk", "File truncated", mutate(sparseBase, func(b []byte) []byte { le.PutUint64(b[64:], 1<<30); return b })},
	{"compress-algo-unknown.vmdk", "compression algorithm", mutate(sparseBase, func(b []byte) []byte { le.PutUint16(b[77:], 7); return b })},
	{"embedded-desc-too-large.vmdk", "embedded descriptor of", mutate(sparseBase, func(b []byte) []byte { le.PutUint64(b[36:], 1<<20); return b })},
	{"embedded-desc-past-eof.vmdk", "embedded descriptor at sector", mutate(sparseBase, func(b []byte) []byte { le.PutUint64(b[28:], 1<<33); return b })},
	{"embedded-desc-parent.vmdk", "Could not open backing file", mutate(sparseBase, func(b []byte) []byte {
		copy(b[512:], "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=2\nparentFileNameHint=\"/etc/passwd\"\ncreateType=\"monolithicSparse\"\n")
		return b
	})},
	{"stream-marker-size-overrun.vmdk", "overruns", mutate(streamBase, func(b []byte) []byte { le.PutUint32(b[128*512+8:], 0x7fffffff); return b })},
	{"stream-grain-len-beyond-eof.vmdk", "overruns", mutate(streamBase, func(b []byte) []byte {
		le.PutUint32(b[128*512+8:], uint32(len(b)-128*512))
		return b
	})},
	{"stream-bad-lba.vmdk", "has LBA", mutate(streamBase, func(b []byte) []byte { le.PutUint64(b[128*512:], 999); return b })},
	{"stream-garbage-deflate.vmdk", "compressed grain at offset", mutate(streamBase, func(b []byte) []byte {
		copy(b[128*512+12:], bytes.Repeat([]byte{0xff}, 64))
		return b
	})},
	{"stream-no-footer.vmdk", "footer", mutate(streamBase, func(b []byte) []byte { return b[:len(b)-1024] })},
	{"stream-footer-gd-at-end.vmdk", "footer has no grain directory", mutate(streamBase, func(b []byte) []byte {
		le.PutUint64(b[len(b)-1024+56:], gdAtEnd)
		return b
	})},
	{"stream-footer-gd-past-eof.vmdk", "grain directory at sector", mutate(streamBase, func(b []byte) []byte {
		le.PutUint64(b[len(b)-1024+56:], uint64(len(b)/512))
		return b
	})},
	{"desc-etc-passwd.vmdk", "absolute", text(hdesc + "RW 2048 FLAT \"/etc/passwd\" 0\n")},
	{"desc-dotdot.vmdk", "leaves the descriptor's folder", text(hdesc + "RW 2048 FLAT \"../hostile/x.vmdk\" 0\n")},
	{"desc-dev-zero.vmdk", "absolute", text(hdesc + "RW 2048 FLAT \"/dev/zero\" 0\n")},
	{"desc-json-protocol.vmdk", "forbidden character", text(hdesc + "RW 2048 SPARSE \"json:{'driver':'null-co'}\"\n")},
	{"desc-huge-extent.vmdk", "invalid extent line", text(hdesc + "RW 99999999999999999999 FLAT \"x\" 0\n")},
	{"desc-size-overflow.vmdk", "add up to more than", text(hdesc + "RW 9007199254740992 ZERO\nRW 9007199254740992 ZERO\n")},
	{"desc-sesparse.vmdk", "not supported", text(hdesc + "RW 2048 SESPARSE \"x-sesparse.vmdk\"\n")},
	{"desc-flat-no-offset.vmdk", "invalid extent line", text(hdesc + "RW 2048 FLAT \"x\"\n")},
	{"desc-no-createtype.vmdk", "no createType", text("# Disk DescriptorFile\nversion=1\nRW 2048 FLAT \"x\" 0\n")},
	{"parent-protocol.vmdk", "looks like a protocol", text(strings.Replace(hdesc, "parentCID=ffffffff", "parentCID=1\nparentFileNameHint=\"nbd:localhost:10809\"", 1) + "RW 8 ZERO\n")},
	{"parent-json.vmdk", "not a file path", text(strings.Replace(hdesc, "parentCID=ffffffff", "parentCID=1\nparentFileNameHint=\"json:{}\"", 1) + "RW 8 ZERO\n")},
	{"parent-self-loop.vmdk", "backing chain longer than", text(strings.Replace(hdesc, "parentCID=ffffffff", "parentCID=1\nparentFileNameHint=\"parent-self-loop.vmdk\"", 1) + "RW 8 ZERO\n")},
	{"parent-dev-zero.vmdk", "not a regular file", text(strings.Replace(hdesc, "parentCID=ffffffff", "parentCID=1\nparentFileNameHint=\"/dev/zero\"", 1) + "RW 8 ZERO\n")},
}

// TestGenerateHostile rewrites the corpus with -update-hostile.
func TestGenerateHostile(t *testing.T) {
	if !*updateHostile {
		t.Skip("run with -update-hostile to regenerate testdata/hostile")
	}
	os.RemoveAll(hostileDir)
	if err := os.MkdirAll(hostileDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range hostileCases {
		writeFile(t, filepath.Join(hostileDir, c.name), c.make(t))
	}
}

// exercise opens path and reads and maps all of it, returning the first error.
func exercise(path string) (err error) {
	d, err := vmdkFormat{}.Open(path, block.OpenOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer d.Close()
	if in, ok := d.(block.Infoer); ok {
		if _, err := in.Info(); err != nil {
			return err
		}
	}
	buf := make([]byte, 1<<20)
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
	for off := int64(0); off < limit; off += int64(len(buf)) {
		n := min(int64(len(buf)), limit-off)
		if _, err := d.ReadAt(buf[:n], off); err != nil && err != io.EOF {
			return err
		}
	}
	return nil
}

// TestHostileCorpus: every crafted image gives its one-line error, with bounded
// allocation, and no panic.
func TestHostileCorpus(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(hostileDir, "*"))
	if len(files) < 15 {
		t.Fatalf("hostile corpus has %d files, want >= 15", len(files))
	}
	known := map[string]bool{}
	for _, c := range hostileCases {
		known[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(hostileDir, c.name)
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("%v (regenerate with -update-hostile)", err)
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err := exercise(path)
			runtime.ReadMemStats(&after)
			if c.want == "" {
				return // a valid helper file for another case
			}
			if err == nil {
				t.Fatalf("no error, want one containing %q", c.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q, want one line containing %q", msg, c.want)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 96<<20 {
				t.Errorf("allocated %d MiB", alloc>>20)
			}
		})
	}
	for _, f := range files {
		if !known[filepath.Base(f)] {
			t.Errorf("%s is not in hostileCases", f)
		}
	}
}

// TestHostileTextDescriptorTooLarge: a descriptor file over 1 MiB is refused before
// it is read.
func TestHostileTextDescriptorTooLarge(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.vmdk")
	writeFile(t, p, append([]byte(hdesc), bytes.Repeat([]byte("#"), maxDescBytes)...))
	if err := exercise(p); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("got %v, want descriptor too large", err)
	}
}

var openRO = block.OpenOptions{ReadOnly: true}

// TestCheckAgainstQemu: Check reports what qemu-img check reports on clean images and
// on a grain pointing past the end of the file.
func TestCheckAgainstQemu(t *testing.T) {
	needQemu(t)
	for _, name := range []string{"grain-past-eof.vmdk", "overlapping-grains.vmdk", "stream-bad-lba.vmdk"} {
		path := filepath.Join(hostileDir, name)
		out, qerr := exec.Command("qemu-img", "check", "-f", "vmdk", path).CombinedOutput()
		d, err := vmdkFormat{}.Open(path, openRO)
		if err != nil {
			t.Fatal(err)
		}
		res, cerr := d.(block.Checker).Check(block.RepairNone)
		d.Close()
		if (qerr != nil) != (cerr != nil) {
			t.Errorf("%s: qemu-img check %v, ours %v", name, qerr, cerr)
			continue
		}
		if cerr != nil {
			want := strings.SplitN(string(out), "\n", 2)[0]
			if len(res.Messages) != 1 || res.Messages[0] != want || res.Corruptions != 1 {
				t.Errorf("%s: messages %q, want %q", name, res.Messages, want)
			}
			if !strings.Contains(string(out), "Check failed: "+cerr.Error()) {
				t.Errorf("%s: qemu-img says %q, we fail with %q", name, out, cerr)
			}
		}
	}
}

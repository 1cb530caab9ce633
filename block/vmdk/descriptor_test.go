package vmdk

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"gemu/block"
)

// descHead precedes extent lines with a comment: qemu-img's parser reads an extent
// line twice when a blank line comes right before it.
const descHead = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n# Extent description\n"

// TestMultiExtentDescriptor: FLAT (with offset), ZERO, SPARSE and RDONLY extents in
// one descriptor read as the concatenation of their pieces.
func TestMultiExtentDescriptor(t *testing.T) {
	needQemu(t)
	chdirTemp(t)
	a := patterned(1<<20, 10)
	big := patterned(3<<20, 11)
	s := patterned(2<<20, 12)
	writeFile(t, "a.raw", a)
	writeFile(t, "big.raw", big)
	writeFile(t, "s.raw", s)
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "s.raw", "s.vmdk")
	writeFile(t, "d.vmdk", []byte(descHead+"RW 2048 FLAT \"a.raw\" 0\nRW 1024 ZERO\nRW 4096 SPARSE \"s.vmdk\"\nRDONLY 2048 FLAT \"big.raw\" 2048\n"))
	want := append(append(append(append([]byte{}, a...), make([]byte, 512<<10)...), s...), big[1<<20:2<<20]...)
	d := openT(t, "d.vmdk", false)
	defer d.Close()
	if d.Size() != int64(len(want)) {
		t.Fatalf("size %d, want %d", d.Size(), len(want))
	}
	got := make([]byte, len(want))
	if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("content differs (%v)", err)
	}
	toRaw(t, d, "out.raw")
	if b, _ := os.ReadFile("out.raw"); !bytes.Equal(b, want) {
		t.Errorf("BlockStatus-guided copy differs")
	}
	if st, err := d.BlockStatus(1<<20, 1<<20); err != nil || !st.Zero || st.Data || st.Length != 512<<10 {
		t.Errorf("ZERO extent status %+v %v", st, err)
	}
	if _, err := d.WriteAt([]byte{1}, int64(len(want))-10); err == nil {
		t.Errorf("write into an RDONLY extent succeeded")
	}
	if _, err := d.WriteAt([]byte{1}, 1<<20+5); err == nil {
		t.Errorf("data write into a ZERO extent succeeded")
	}
	// Writing across the FLAT/ZERO/SPARSE pieces with zeroes in the ZERO part works.
	p := make([]byte, 2<<20)
	copy(p, patterned(512<<10, 13))
	copy(p[1<<20+512<<10:], patterned(512<<10, 14))
	if _, err := d.WriteAt(p, 512<<10); err != nil {
		t.Fatal(err)
	}
	copy(want[512<<10:], p)
	if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("content after write differs (%v)", err)
	}
}

// TestDescriptorReadByQemu: a FLAT+SPARSE descriptor this driver writes through is
// read by qemu-img as the same data.
func TestDescriptorReadByQemu(t *testing.T) {
	needQemu(t)
	chdirTemp(t)
	writeFile(t, "a.raw", make([]byte, 1<<20))
	run(t, "qemu-img", "create", "-q", "-f", "vmdk", "s.vmdk", "2M")
	writeFile(t, "d.vmdk", []byte(descHead+"RW 2048 FLAT \"a.raw\" 0\nRW 4096 SPARSE \"s.vmdk\"\n"))
	d := openT(t, "d.vmdk", false)
	data := patterned(3<<20, 20)
	if _, err := d.WriteAt(data[100:], 100); err != nil {
		t.Fatal(err)
	}
	d.Close()
	copy(data[:100], make([]byte, 100))
	writeFile(t, "want.raw", data)
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", "want.raw", "d.vmdk")
	run(t, "qemu-img", "check", "s.vmdk")
	d = openT(t, "d.vmdk", true)
	defer d.Close()
	checkInfo(t, d, "d.vmdk")
	if a, b := mapString(qemuMap(t, "d.vmdk")), mapString(ourMap(t, d)); a != b {
		t.Errorf("map differs:\nqemu:\n%s\nours:\n%s", a, b)
	}
}

// TestExtentPathConfinement: extent names cannot leave the descriptor's folder.
func TestExtentPathConfinement(t *testing.T) {
	dir := chdirTemp(t)
	writeFile(t, "a.raw", make([]byte, 1<<20))
	os.Mkdir("sub", 0o755)
	writeFile(t, "sub/b.raw", make([]byte, 1<<20))
	os.Symlink("/etc/passwd", "evil")
	os.Symlink("a.raw", "good")
	os.Symlink("/etc", "etclink")
	os.Symlink(dir+"/sub", "sublink")
	cases := []struct{ name, err string }{
		{"/etc/passwd", "absolute"},
		{"../x", "leaves"},
		{"sub/../../x", "leaves"},
		{"sub/../a.raw", "leaves"},
		{"/dev/zero", "absolute"},
		{"evil", "outside"},
		{"etclink/passwd", "outside"},
		{"json:{}", "forbidden"},
		{"nbd://host/x", "forbidden"},
		{"missing.raw", "could not open"},
		{"sub", "not a regular file"},
		{"good", ""},
		{"sub/b.raw", ""},
		{"sublink/b.raw", ""},
	}
	f := vmdkFormatT(t)
	for _, c := range cases {
		writeFile(t, "d.vmdk", []byte(descHead+"RW 2048 FLAT \""+c.name+"\" 0\n"))
		d, err := f.Open("d.vmdk", block.OpenOptions{ReadOnly: true})
		if c.err == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			} else {
				d.Close()
			}
			continue
		}
		if err == nil {
			d.Close()
			t.Errorf("%s: opened, want error containing %q", c.name, c.err)
		} else if !strings.Contains(err.Error(), c.err) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %q, want one line containing %q", c.name, err, c.err)
		}
	}
}

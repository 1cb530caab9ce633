package vmdk

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"gemu/block"
)

// TestParentChain: a chain base <- mid (made and written by this driver) <- top (made
// and written by qemu-img/qemu-io) reads, maps and reports info as qemu-img does.
func TestParentChain(t *testing.T) {
	needQemu(t, "qemu-io")
	chdirTemp(t)
	run(t, "qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", "4M")
	run(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 3M 64k", "base.vmdk")

	f := vmdkFormatT(t)
	if err := f.Create("mid.vmdk", block.CreateOptions{Backing: "base.vmdk", BackingFormat: "vmdk", Options: map[string]string{"zeroed_grain": "on"}}); err != nil {
		t.Fatal(err)
	}
	d := openT(t, "mid.vmdk", false)
	if d.Size() != 4<<20 {
		t.Fatalf("size %d, want the parent's", d.Size())
	}
	d.WriteAt(bytes.Repeat([]byte{0x33}, 4096), 512<<10)    // partial grain over parent data
	d.WriteAt(bytes.Repeat([]byte{0x44}, 100), 2<<20+100)   // partial grain over a hole
	if err := d.WriteZeroes(3<<20, 64<<10, 0); err != nil { // whole zeroed grain
		t.Fatal(err)
	}
	if err := d.WriteZeroes(100, 1000, 0); err != nil { // partial zeroes over parent data
		t.Fatal(err)
	}
	d.Close()
	run(t, "qemu-img", "check", "mid.vmdk")

	run(t, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "mid.vmdk", "-F", "vmdk", "top.vmdk", "6M")
	run(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x55 700k 8k", "-c", "write -P 0x66 5M 4k", "top.vmdk")

	for _, img := range []string{"mid.vmdk", "top.vmdk"} {
		run(t, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", img, img+".ref")
		d := openT(t, img, true)
		toRaw(t, d, img+".ours")
		run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img+".ref", img+".ours")
		if a, b := mapString(qemuMap(t, img)), mapString(ourMap(t, d)); a != b {
			t.Errorf("%s: map differs:\nqemu:\n%s\nours:\n%s", img, a, b)
		}
		checkInfo(t, d, img)
		q := qemuInfo(t, img)
		info, _ := d.(block.Infoer).Info()
		if q["backing-filename"] != info.BackingFilename || q["full-backing-filename"] != info.FullBackingFilename || q["backing-filename-format"] != info.BackingFilenameFormat {
			t.Errorf("%s: backing fields: qemu %v %v %v, ours %q %q %q", img, q["backing-filename"], q["full-backing-filename"], q["backing-filename-format"],
				info.BackingFilename, info.FullBackingFilename, info.BackingFilenameFormat)
		}
		if d.(block.Backed).Backing() == nil {
			t.Errorf("%s: no backing driver", img)
		}
		d.Close()
	}

	// NoBacking opens the top alone.
	nb, err := f.Open("top.vmdk", block.OpenOptions{ReadOnly: true, NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	if nb.(block.Backed).Backing() != nil {
		t.Errorf("NoBacking opened the parent")
	}
	nb.Close()

	// A parent whose CID changed no longer backs the child, as with qemu-img.
	b, _ := os.ReadFile("base.vmdk")
	desc := b[512 : 21*512]
	i := bytes.Index(desc, []byte("\nCID=")) + 5
	j := i + bytes.IndexByte(desc[i:], '\n')
	nd := append(append(append([]byte{}, desc[:i]...), "0badc1d0"...), desc[j:]...)
	copy(desc, nd)
	writeFile(t, "base.vmdk", b)
	qout, qerr := exec.Command("qemu-img", "convert", "-O", "raw", "mid.vmdk", "x.raw").CombinedOutput()
	d = openT(t, "mid.vmdk", true)
	defer d.Close()
	_, err = d.ReadAt(make([]byte, 4096), 65536)
	if qerr == nil || err == nil || !strings.Contains(err.Error(), "CID") {
		t.Errorf("CID mismatch: qemu-img %v %s; ours %v", qerr, qout, err)
	}
}

// TestCreateBackingErrors: create -b refusals match qemu-img's messages.
func TestCreateBackingErrors(t *testing.T) {
	needQemu(t)
	chdirTemp(t)
	run(t, "qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", "1M")
	for _, c := range [][]string{
		{"base.vmdk", "raw", "monolithicSparse"},
		{"base.vmdk", "vmdk", "monolithicFlat"},
		{"missing.vmdk", "vmdk", "monolithicSparse"},
	} {
		args := []string{"create", "-q", "-f", "vmdk", "-b", c[0], "-o", "subformat=" + c[2]}
		if c[1] != "" {
			args = append(args, "-F", c[1])
		}
		out, qerr := exec.Command("qemu-img", append(args, "x.vmdk")...).CombinedOutput()
		err := vmdkFormatT(t).Create("y.vmdk", block.CreateOptions{Backing: c[0], BackingFormat: c[1], Options: map[string]string{"subformat": c[2]}})
		first := strings.SplitN(string(out), "\n", 2)[0]
		if qerr == nil || err == nil || !strings.HasSuffix(first, err.Error()) {
			t.Errorf("%v: qemu-img %v %q; ours %v", c, qerr, out, err)
		}
	}
}

// TestWriteChangesCID: the first write after opening gives the image a new CID, so a
// child made on the old content stops reading through it (for qemu-img and for us).
func TestWriteChangesCID(t *testing.T) {
	needQemu(t)
	chdirTemp(t)
	for _, sf := range []string{"monolithicSparse", "twoGbMaxExtentSparse"} {
		base, child := sf+".vmdk", sf+"-child.vmdk"
		if err := vmdkFormatT(t).Create(base, block.CreateOptions{Size: 1 << 20, Options: map[string]string{"subformat": sf}}); err != nil {
			t.Fatal(err)
		}
		run(t, "qemu-img", "create", "-q", "-f", "vmdk", "-b", base, "-F", "vmdk", child)
		run(t, "qemu-img", "convert", "-O", "raw", child, "ok.raw")
		before := qemuInfo(t, base)["format-specific"].(map[string]any)["data"].(map[string]any)["cid"]
		d := openT(t, base, false)
		d.WriteAt([]byte{1}, 0)
		d.WriteAt([]byte{2}, 70000)
		d.Close()
		after := qemuInfo(t, base)["format-specific"].(map[string]any)["data"].(map[string]any)["cid"]
		if before == after {
			t.Errorf("%s: CID unchanged after a write (%v)", sf, after)
		}
		if out, err := exec.Command("qemu-img", "convert", "-O", "raw", child, "bad.raw").CombinedOutput(); err == nil {
			t.Errorf("%s: qemu-img still reads the child through a changed parent: %s", sf, out)
		}
		c := openT(t, child, true)
		if _, err := c.ReadAt(make([]byte, 512), 0); err == nil {
			t.Errorf("%s: child still reads through a changed parent", sf)
		}
		c.Close()
	}
}

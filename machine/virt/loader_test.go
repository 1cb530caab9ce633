package virt

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeImage builds an arm64 Image header with an EFI PE stub whose one section's raw data
// ends at fileSize.
func fakeImage(fileSize int, textOffset, imageSize uint64) []byte {
	d := make([]byte, fileSize)
	copy(d, "MZ")
	le := binary.LittleEndian
	le.PutUint64(d[8:], textOffset)
	le.PutUint64(d[16:], imageSize)
	le.PutUint32(d[imageMagicOff:], imageMagic)
	le.PutUint32(d[0x3c:], 0x40)
	copy(d[0x40:], "PE\x00\x00")
	le.PutUint16(d[0x40+6:], 1)  // one section
	le.PutUint16(d[0x40+20:], 0) // no optional header
	sec := d[0x40+24:]
	le.PutUint32(sec[16:], uint32(fileSize-0x1000)) // SizeOfRawData
	le.PutUint32(sec[20:], 0x1000)                  // PointerToRawData
	return d
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func TestAArch64Image(t *testing.T) {
	img := fakeImage(0x10000, 0, 0x20000)
	k, err := loadAArch64Image(img, RAMBase, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	// text_offset 0 is below QEMU's 4 KiB boot stub: the Image goes 2 MiB up.
	if k.entry != RAMBase+2<<20 || k.size != 0x20000 || !k.linux || !bytes.Equal(k.segs[0].data, img) {
		t.Fatalf("entry %#x size %#x", k.entry, k.size)
	}
	if k, err := loadAArch64Image(fakeImage(0x10000, 0x80000, 0x20000), RAMBase, 64<<20); err != nil || k.entry != RAMBase+0x80000 {
		t.Fatalf("text_offset 0x80000: %v", err)
	}
	// image_size 0 (before 3.17): text_offset ignored, 0x80000.
	if k, err := loadAArch64Image(fakeImage(0x10000, 0x1000, 0), RAMBase, 64<<20); err != nil || k.entry != RAMBase+0x80000 || k.size != 0x10000 {
		t.Fatalf("old Image: %v", err)
	}
	if k, err := loadAArch64Image(gz(t, img), RAMBase, 64<<20); err != nil || !bytes.Equal(k.segs[0].data, img) {
		t.Fatalf("gzip Image: %v", err)
	}
	// Decompression is bounded by guest RAM.
	if _, err := loadAArch64Image(gz(t, img), RAMBase, 0x8000); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("unbounded decompression: %v", err)
	}
}

func TestBzImageWarned(t *testing.T) {
	bz := make([]byte, 0x1000)
	copy(bz[0x202:], "HdrS")
	var warned string
	k, err := loadKernelFile(writeTemp(t, "bzImage", bz), RAMBase, 64<<20, func(s string) { warned = s })
	if err != nil || k.format != "raw binary" || !strings.Contains(warned, "x86 bzImage") {
		t.Fatalf("%+v %v %q", k, err, warned)
	}
}

func TestRawBinary(t *testing.T) {
	bz := make([]byte, 0x1000) // an x86 bzImage is just bytes to QEMU's arm loader
	copy(bz[0x202:], "HdrS")
	k, err := loadAArch64Image(bz, RAMBase, 64<<20)
	if err != nil || k.entry != RAMBase+0x80000 || !k.linux || k.format != "raw binary" {
		t.Fatalf("raw: %+v %v", k, err)
	}
	if _, err := loadAArch64Image(make([]byte, 3<<20), RAMBase, 2<<20); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("raw larger than RAM: %v", err)
	}
}

func TestImageRejects(t *testing.T) {
	g := gz(t, fakeImage(0x10000, 0, 0x20000))
	cases := map[string]struct {
		data []byte
		want string
	}{
		"truncated": {fakeImage(0x10000, 0, 0x20000)[:0x8000], "truncated arm64 Image"},
		"badgzip":   {g[:len(g)/2], "corrupt gzip"},
		"toolarge":  {fakeImage(0x10000, 0, 1<<30), "too large"},
	}
	for name, c := range cases {
		_, err := loadAArch64Image(c.data, RAMBase, 64<<20)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", name, err, c.want)
		}
	}
}

func uimage(typ, comp, os byte, load, ep uint32, payload []byte) []byte {
	h := make([]byte, uimageHeaderSize)
	be := binary.BigEndian
	be.PutUint32(h, uimageMagic)
	be.PutUint32(h[uimageSizeOff:], uint32(len(payload)))
	be.PutUint32(h[uimageLoadOff:], load)
	be.PutUint32(h[uimageEntryOff:], ep)
	h[uimageOSOff], h[uimageTypeOff], h[uimageCompOff] = os, typ, comp
	return append(h, payload...)
}

func writeTemp(t *testing.T, name string, data []byte) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUImage(t *testing.T) {
	payload := []byte("kernel payload bytes")
	var warned []string
	warn := func(s string) { warned = append(warned, s) }
	k, err := loadKernelFile(writeTemp(t, "u", uimage(uimageTypeKernel, uimageCompNone, uimageOSLinux, 0x40100000, 0x40100008, payload)), RAMBase, 64<<20, warn)
	if err != nil || k.format != "uImage" || k.entry != 0x40100008 || k.segs[0].addr != 0x40100000 || !bytes.Equal(k.segs[0].data, payload) || !k.linux {
		t.Fatalf("uImage: %+v %v", k, err)
	}
	k, err = loadKernelFile(writeTemp(t, "u", uimage(uimageTypeKernel, uimageCompGzip, 0 /* not Linux */, 0x40200000, 0x40200000, gz(t, payload))), RAMBase, 64<<20, warn)
	if err != nil || !bytes.Equal(k.segs[0].data, payload) || k.linux {
		t.Fatalf("gzip uImage: %+v %v", k, err)
	}
	// kernel_noload: the payload goes where the header would be at RAM base + 0x10000.
	k, err = loadKernelFile(writeTemp(t, "u", uimage(uimageTypeNoload, uimageCompNone, uimageOSLinux, 0, 0x10, payload)), RAMBase, 64<<20, warn)
	if err != nil || k.segs[0].addr != RAMBase+kernelLoadAddr+64 || k.entry != RAMBase+kernelLoadAddr+64+0x10 {
		t.Fatalf("noload uImage: %+v %v", k, err)
	}
	if len(warned) != 0 {
		t.Fatalf("warnings %q", warned)
	}
	// Unsupported compression: QEMU says so and loads the file as a raw binary.
	k, err = loadKernelFile(writeTemp(t, "u", uimage(uimageTypeKernel, 3, uimageOSLinux, 0x40100000, 0x40100000, payload)), RAMBase, 64<<20, warn)
	if err != nil || k.format != "raw binary" || k.entry != RAMBase+0x80000 || len(warned) != 1 || !strings.Contains(warned[0], "compression type 3") {
		t.Fatalf("lzma uImage: %+v %v %q", k, err, warned)
	}
}

func TestBootLayout(t *testing.T) {
	k, _ := loadAArch64Image(fakeImage(0x10000, 0, 0x20000), RAMBase, 512<<20)
	rd := writeTemp(t, "initrd", make([]byte, 3<<20))
	// 512 MiB: initrd at 128 MiB, DTB at the next 2 MiB boundary after it.
	b, err := layout(k, rd, RAMBase, 512<<20, 0x10000, nil)
	if err != nil || b.initrdStart != RAMBase+128<<20 || b.dtbAddr != RAMBase+132<<20 || b.x0 != b.dtbAddr {
		t.Fatalf("512M: %+v %v", b, err)
	}
	// 64 MiB: initrd at half of RAM.
	k, _ = loadAArch64Image(fakeImage(0x10000, 0, 0x20000), RAMBase, 64<<20)
	if b, err := layout(k, "", RAMBase, 64<<20, 0x10000, nil); err != nil || b.initrdStart != RAMBase+32<<20 || b.dtbAddr != RAMBase+32<<20 {
		t.Fatalf("64M: %+v %v", b, err)
	}
	// A kernel reaching past the halfway mark pushes the initrd after it.
	k, _ = loadAArch64Image(fakeImage(0x10000, 0, 40<<20), RAMBase, 64<<20)
	if b, err := layout(k, "", RAMBase, 64<<20, 0x10000, nil); err != nil || b.initrdStart != RAMBase+42<<20 {
		t.Fatalf("big kernel: %+v %v", b, err)
	}
	if _, err := layout(k, writeTemp(t, "big", make([]byte, 30<<20)), RAMBase, 64<<20, 0x10000, nil); err == nil || !strings.Contains(err.Error(), "too big to fit into RAM after the kernel") {
		t.Fatalf("oversized initrd: %v", err)
	}
	if _, err := layout(k, filepath.Join(t.TempDir(), "nope"), RAMBase, 64<<20, 0x10000, nil); err == nil || !strings.Contains(err.Error(), "could not load initrd") {
		t.Fatalf("missing initrd: %v", err)
	}
	// Not Linux: no initrd, the DTB at RAM base when it fits below the image.
	elfK := &kernelLoad{format: "ELF", low: RAMBase + 0x80000, high: RAMBase + 0x90000}
	var warned string
	b, err = layout(elfK, rd, RAMBase, 64<<20, 0x10000, func(s string) { warned = s })
	if err != nil || b.dtbAddr != RAMBase || b.x0 != 0 || b.initrd != nil || !strings.Contains(warned, "-initrd ignored") {
		t.Fatalf("ELF: %+v %v %q", b, err, warned)
	}
	if b, _ := layout(elfK, "", RAMBase, 64<<20, 0x100000, nil); b.dtbAddr != 0 {
		t.Fatal("a DTB larger than the room below the image was placed")
	}
}

func TestKernelErrors(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]struct {
		path, want string
	}{
		"missing": {filepath.Join(dir, "nope"), "could not load kernel '" + filepath.Join(dir, "nope") + "': no such file or directory"},
		"dir":     {dir, "not a regular file"},
		"x86 elf": {"/bin/true", "not AArch64"},
		"uimage outside RAM": {writeTemp(t, "u", uimage(uimageTypeKernel, uimageCompNone, uimageOSLinux, 0x1000, 0x1000, []byte("x"))),
			"uImage load address 0x1000-0x1001 lies outside RAM"},
	}
	for name, c := range cases {
		_, err := New(Config{RAMSize: 64 << 20, SMP: 1, GICVersion: 2, Kernel: c.path})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "could not load kernel '") {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

// FuzzKernelFile: any -kernel file resolves or fails with an error, within bounded
// memory (RAM is 4 MiB here).
func FuzzKernelFile(f *testing.F) {
	f.Add(uimage(uimageTypeKernel, uimageCompNone, uimageOSLinux, 0x40100000, 0x40100000, []byte("x")))
	f.Add(fakeImage(0x2000, 0, 0x4000))
	f.Add([]byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"))
	f.Add(gzBytes(fakeImage(0x2000, 0, 0x4000)))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "k")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		k, err := loadKernelFile(p, RAMBase, 4<<20, func(string) {})
		if err != nil {
			return
		}
		if _, err := layout(k, "", RAMBase, 4<<20, 0x1000, nil); err != nil {
			return
		}
	})
}

func gzBytes(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

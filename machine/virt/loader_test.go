package virt

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
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

func TestParseImage(t *testing.T) {
	img := fakeImage(0x10000, 0, 0x20000)
	k, err := parseImage(img, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if k.textOffset != 0 || k.size != 0x20000 || len(k.data) != 0x10000 {
		t.Fatalf("%+v", k)
	}
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(img)
	w.Close()
	if k, err := parseImage(gz.Bytes(), 64<<20); err != nil || !bytes.Equal(k.data, img) {
		t.Fatalf("gzip Image: %v", err)
	}
	// Decompression is bounded by guest RAM.
	if _, err := parseImage(gz.Bytes(), 0x8000); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("unbounded decompression: %v", err)
	}
	if _, err := parseImage(gz.Bytes()[:gz.Len()/2], 64<<20); err == nil {
		t.Fatal("truncated gzip accepted")
	}
}

func TestParseImageRejects(t *testing.T) {
	bz := make([]byte, 0x1000)
	copy(bz[0x202:], "HdrS")
	bz[0x1fe], bz[0x1ff] = 0x55, 0xaa
	cases := map[string]struct {
		data []byte
		want string
	}{
		"bzImage":   {bz, "x86 bzImage"},
		"tiny":      {[]byte("ARM"), "truncated"},
		"elf":       {append([]byte("\x7fELF"), make([]byte, 100)...), "ELF"},
		"nomagic":   {make([]byte, 4096), "not an arm64 Image"},
		"truncated": {fakeImage(0x10000, 0, 0x20000)[:0x8000], "truncated arm64 Image"},
		"oversize":  {fakeImage(0x10000, 0, 0x8000), "image_size"},
		"textoff":   {fakeImage(0x10000, 0x123, 0x20000), "text_offset"},
	}
	for name, c := range cases {
		_, err := parseImage(c.data, 64<<20)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", name, err, c.want)
		}
	}
}

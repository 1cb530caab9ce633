package vmdk

import (
	"bytes"
	"encoding/binary"
	"testing"

	"gemu/block"
)

// cowdImage builds a vmfsSparse (COWD) extent: capacity sectors, grain of gran
// sectors, one directory entry, with the grains in data written.
func cowdImage(capacity, gran uint32, data map[uint32]byte) []byte {
	le := binary.LittleEndian
	const gdSector, gtSector, firstGrain = 4, 8, 64
	b := make([]byte, firstGrain*512)
	copy(b, "COWD")
	le.PutUint32(b[4:], 1)
	le.PutUint32(b[8:], 3)
	le.PutUint32(b[12:], capacity)
	le.PutUint32(b[16:], gran)
	le.PutUint32(b[20:], gdSector)
	le.PutUint32(b[24:], 1)
	le.PutUint32(b[gdSector*512:], gtSector)
	// qemu-img reads a CID at offset 512 of any sparse file it opens directly.
	copy(b[512:], "CID=12345678\nparentCID=ffffffff\n")
	next := uint32(firstGrain)
	for g := uint32(0); g*gran < capacity; g++ {
		v, ok := data[g]
		if !ok {
			continue
		}
		le.PutUint32(b[gtSector*512+4*g:], next)
		b = append(b, bytes.Repeat([]byte{v}, int(gran)*512)...)
		next += gran
	}
	return b
}

// TestReadCOWD: a vmfsSparse extent, alone and behind a descriptor, reads and maps as
// qemu-img reads it; writes are refused.
func TestReadCOWD(t *testing.T) {
	needQemu(t)
	chdirTemp(t)
	writeFile(t, "x-delta.vmdk", cowdImage(4096, 16, map[uint32]byte{0: 0x11, 3: 0x22, 100: 0x33, 255: 0x44}))
	writeFile(t, "x.vmdk", []byte("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfsSparse\"\n\n# Extent description\nRW 4096 VMFSSPARSE \"x-delta.vmdk\"\n"))
	for _, img := range []string{"x-delta.vmdk", "x.vmdk"} {
		run(t, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", img, img+".ref")
		d := openT(t, img, false)
		toRaw(t, d, img+".ours")
		run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img+".ref", img+".ours")
		if a, b := mapString(qemuMap(t, img)), mapString(ourMap(t, d)); a != b {
			t.Errorf("%s: map differs:\nqemu:\n%s\nours:\n%s", img, a, b)
		}
		if img == "x.vmdk" {
			checkInfo(t, d, img)
		}
		if _, err := d.WriteAt([]byte{1}, 0); err == nil {
			t.Errorf("%s: write to a COWD extent succeeded", img)
		}
		d.Close()
	}
	if _, err := vmdkFormatT(t).Open("x.vmdk", block.OpenOptions{ReadOnly: true}); err != nil {
		t.Error(err)
	}
}

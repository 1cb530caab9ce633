package virt

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// arm64 Image header (Documentation/arch/arm64/booting.rst): code0/1, text_offset at 8,
// image_size at 16, flags at 24, magic "ARM\x64" at 0x38.
const (
	imageHeaderSize = 64
	imageMagicOff   = 0x38
	imageMagic      = 0x644d5241
	oldTextOffset   = 0x80000 // kernels before 3.17 with image_size 0
)

// kernelImage is a validated arm64 Image, decompressed.
type kernelImage struct {
	data       []byte
	textOffset uint64
	size       uint64 // image_size: memory the kernel occupies, including BSS
}

// readBounded reads a whole file of at most limit bytes.
func readBounded(path, what string, limit uint64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot open %s %q: %w", what, path, unwrapPath(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %q is not a regular file", what, path)
	}
	if uint64(st.Size()) > limit {
		return nil, fmt.Errorf("%s %q (%d bytes) does not fit in guest RAM", what, path, st.Size())
	}
	return io.ReadAll(f)
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parseImage validates a kernel file: gzip is decompressed (bounded by limit), x86
// bzImages and other non-arm64 files are refused, and an EFI-stub Image shorter than
// its PE section table says is reported as truncated.
func parseImage(data []byte, limit uint64) (*kernelImage, error) {
	if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("corrupt gzip-compressed kernel: %w", err)
		}
		out, err := io.ReadAll(io.LimitReader(zr, int64(limit)+1))
		if err != nil {
			return nil, fmt.Errorf("truncated or corrupt gzip-compressed kernel: %w", err)
		}
		if uint64(len(out)) > limit {
			return nil, fmt.Errorf("decompressed kernel exceeds guest RAM (%d MiB)", limit>>20)
		}
		data = out
	}
	if len(data) >= 0x206 && string(data[0x202:0x206]) == "HdrS" {
		return nil, errors.New("not an arm64 Image: this is an x86 bzImage (boot protocol header \"HdrS\")")
	}
	if len(data) < imageHeaderSize {
		return nil, fmt.Errorf("truncated arm64 Image: %d bytes, shorter than its 64-byte header", len(data))
	}
	le := binary.LittleEndian
	if le.Uint32(data[imageMagicOff:]) != imageMagic {
		if string(data[:4]) == "\x7fELF" {
			return nil, errors.New("not an arm64 Image: this is an ELF file (pass the Image or vmlinuz, not vmlinux)")
		}
		return nil, errors.New("not an arm64 Image: no \"ARM\\x64\" magic at offset 0x38")
	}
	k := &kernelImage{data: data, textOffset: le.Uint64(data[8:]), size: le.Uint64(data[16:])}
	if k.size == 0 {
		k.textOffset, k.size = oldTextOffset, uint64(len(data))
	}
	if uint64(len(data)) > k.size {
		return nil, fmt.Errorf("corrupt arm64 Image: file is %d bytes but image_size is %d", len(data), k.size)
	}
	if end, ok := peRawEnd(data); ok && end > uint64(len(data)) {
		return nil, fmt.Errorf("truncated arm64 Image: %d bytes, its PE/EFI section table needs %d", len(data), end)
	}
	if k.textOffset%4096 != 0 || k.textOffset >= 2<<20 {
		return nil, fmt.Errorf("corrupt arm64 Image: text_offset %#x", k.textOffset)
	}
	return k, nil
}

// peRawEnd returns the end of the last section's raw data of the PE/COFF header an
// EFI-stub kernel carries ("MZ" at 0, PE offset at 0x3c).
func peRawEnd(d []byte) (uint64, bool) {
	le := binary.LittleEndian
	if len(d) < 0x40 || string(d[:2]) != "MZ" {
		return 0, false
	}
	pe := uint64(le.Uint32(d[0x3c:]))
	if pe+24 > uint64(len(d)) || string(d[pe:pe+4]) != "PE\x00\x00" {
		return 0, false
	}
	nsec := uint64(le.Uint16(d[pe+6:]))
	optSize := uint64(le.Uint16(d[pe+20:]))
	sec := pe + 24 + optSize
	if sec+nsec*40 > uint64(len(d)) {
		return sec + nsec*40, true
	}
	var end uint64
	for i := range nsec {
		s := d[sec+40*i:]
		end = max(end, uint64(le.Uint32(s[20:]))+uint64(le.Uint32(s[16:]))) // PointerToRawData + SizeOfRawData
	}
	return end, true
}

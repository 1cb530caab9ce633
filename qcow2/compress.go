package qcow2

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
)

// Compressed clusters. QEMU stores a raw deflate stream (window 12 bits) or one zstd
// frame, and records the length only in 512-byte sectors, so the slice we read may
// carry trailing bytes of the next compressed cluster: decoders stop once the cluster
// is full and ignore what follows.

var errDecompress = errors.New("qcow2: could not decompress cluster")

type flateReader struct {
	r  io.ReadCloser
	br bytes.Reader
}

var flateReaders = sync.Pool{New: func() any { return new(flateReader) }}

func inflateCluster(dst, src []byte) error {
	fr := flateReaders.Get().(*flateReader)
	defer flateReaders.Put(fr)
	fr.br.Reset(src)
	if fr.r == nil {
		fr.r = flate.NewReader(&fr.br)
	} else if err := fr.r.(flate.Resetter).Reset(&fr.br, nil); err != nil {
		return errDecompress
	}
	if _, err := io.ReadFull(fr.r, dst); err != nil {
		return errDecompress
	}
	return nil
}

var (
	zstdDecOnce sync.Once
	zstdDec     *zstd.Decoder
	zstdDecErr  error
)

func zstdDecoder() (*zstd.Decoder, error) {
	zstdDecOnce.Do(func() {
		zstdDec, zstdDecErr = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(64<<20), zstd.WithDecoderMaxWindow(8<<20))
	})
	return zstdDec, zstdDecErr
}

// zstdFrameLen walks one zstd frame's block headers and returns its exact length, so the
// sector padding after it can be cut off before a one-shot decode.
func zstdFrameLen(b []byte) (int, error) {
	if len(b) < 6 {
		return 0, errDecompress
	}
	m := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
	if m&0xfffffff0 == 0x184d2a50 { // skippable frame
		if len(b) < 8 {
			return 0, errDecompress
		}
		n := int(uint32(b[4]) | uint32(b[5])<<8 | uint32(b[6])<<16 | uint32(b[7])<<24)
		if n > len(b)-8 {
			return 0, errDecompress
		}
		return 8 + n, nil
	}
	if m != 0xfd2fb528 {
		return 0, errDecompress
	}
	fhd := b[4]
	pos := 5
	single := fhd&0x20 != 0
	if !single {
		pos++ // window descriptor
	}
	pos += [4]int{0, 1, 2, 4}[fhd&3]
	fcs := [4]int{0, 2, 4, 8}[fhd>>6]
	if fcs == 0 && single {
		fcs = 1
	}
	pos += fcs
	for {
		if pos+3 > len(b) {
			return 0, errDecompress
		}
		bh := int(b[pos]) | int(b[pos+1])<<8 | int(b[pos+2])<<16
		pos += 3
		size := bh >> 3
		switch (bh >> 1) & 3 {
		case 1: // RLE
			size = 1
		case 3:
			return 0, errDecompress
		}
		pos += size
		if pos > len(b) {
			return 0, errDecompress
		}
		if bh&1 != 0 {
			break
		}
	}
	if fhd&4 != 0 {
		pos += 4
	}
	if pos > len(b) {
		return 0, errDecompress
	}
	return pos, nil
}

func unzstdCluster(dst, src []byte) error {
	d, err := zstdDecoder()
	if err != nil {
		return err
	}
	out := dst[:0]
	for len(out) < len(dst) {
		n, err := zstdFrameLen(src)
		if err != nil {
			return err
		}
		res, err := d.DecodeAll(src[:n], out)
		if err != nil || len(res) > len(dst) || (len(res) > 0 && &res[0] != &dst[0]) {
			return errDecompress
		}
		if len(res) == len(out) && n == len(src) {
			return errDecompress
		}
		out = res
		src = src[n:]
	}
	return nil
}

// Compression for writing: deterministic for a given input and type.

// Levels are chosen to keep output no larger than qemu-img's (QEMU 7.2 deflates at
// Z_DEFAULT_COMPRESSION with a 4 KiB window, raw; zstd at its default level 3 through
// ZSTD_compressStream2). Measured per 64 KiB cluster against zlib and libzstd
// themselves (payload bytes relative to QEMU's) on three samples: 256 MiB of this host's
// /usr/bin and /usr/lib (as bench-img uses), another 256 MiB cut of them, and 32 MiB of
// source text:
//
//	flate level 4 +2.6% / -1.0% / -6.4%, level 5 +0.5% / -3.4% / -11.1%,
//	level 6 -0.5% / -4.4% / -12.6%
//	zstd SpeedDefault +1.5% on binaries, +0.6% on text; SpeedBetterCompression
//	-0.1% / -4.5%
//
// Level 6 is the cheapest deflate level not larger on any of them; our 32 KiB window
// keeps it ahead of zlib's level 6 at 4 KiB. klauspost's zstd SpeedDefault, though
// modelled on level 3, loses about 1.5% on binaries, so zstd clusters use
// SpeedBetterCompression, at about three times libzstd's CPU per byte (its tables are
// sized for large windows and miss the cache on 64 KiB inputs, where libzstd shrinks
// its own). TestCompressedSizeVsQemuImg holds both to 0.5%.
const deflateLevel = 6

var flateWriters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, deflateLevel)
	return w
}}

type limitedBuf struct {
	b   []byte
	max int
}

var errTooBig = errors.New("did not shrink")

func (l *limitedBuf) Write(p []byte) (int, error) {
	if len(l.b)+len(p) > l.max {
		return 0, errTooBig
	}
	l.b = append(l.b, p...)
	return len(p), nil
}

// deflateCluster returns the raw deflate stream of src, or nil if it is not smaller
// than limit bytes. The stream is built in a pooled buffer and copied out at its exact
// size: a fresh cluster-sized buffer per cluster cost more (allocation and clearing)
// than the copy.
func deflateCluster(src []byte, limit int) ([]byte, error) {
	w := flateWriters.Get().(*flate.Writer)
	defer flateWriters.Put(w)
	lb := getLimitedBuf(limit)
	defer limitedBufs.Put(lb)
	w.Reset(lb)
	if _, err := w.Write(src); err != nil {
		if err == errTooBig {
			return nil, nil
		}
		return nil, err
	}
	if err := w.Close(); err != nil {
		if err == errTooBig {
			return nil, nil
		}
		return nil, err
	}
	return bytes.Clone(lb.b), nil
}

var limitedBufs sync.Pool

func getLimitedBuf(limit int) *limitedBuf {
	lb, _ := limitedBufs.Get().(*limitedBuf)
	if lb == nil || cap(lb.b) < limit {
		lb = &limitedBuf{b: make([]byte, 0, limit)}
	}
	lb.b, lb.max = lb.b[:0], limit
	return lb
}

var (
	zstdEncOnce sync.Once
	zstdEnc     *zstd.Encoder
	zstdEncErr  error
)

// zstdDst holds pooled output buffers for zstdCluster.
var zstdDst sync.Pool

// zstdCluster returns one zstd frame of src, or nil if it is not smaller than limit
// bytes. Like deflateCluster it encodes into a pooled buffer and copies the frame out.
func zstdCluster(src []byte, limit int) ([]byte, error) {
	zstdEncOnce.Do(func() {
		zstdEnc, zstdEncErr = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithEncoderCRC(false), zstd.WithEncoderLevel(zstd.SpeedBetterCompression),
			zstd.WithLowerEncoderMem(true))
	})
	if zstdEncErr != nil {
		return nil, zstdEncErr
	}
	bp, _ := zstdDst.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer zstdDst.Put(bp)
	// Room for the worst case so EncodeAll never grows (and reallocates) the buffer.
	if need := len(src) + len(src)/128 + 64; cap(*bp) < need {
		*bp = make([]byte, 0, need)
	}
	out := zstdEnc.EncodeAll(src, (*bp)[:0])
	*bp = out[:0]
	if len(out) > limit {
		return nil, nil
	}
	return bytes.Clone(out), nil
}

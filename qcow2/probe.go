package qcow2

import "encoding/binary"

// Early abort for incompressible clusters.
//
// Disk images carry a lot of data that no compressor can shrink: compressed archives,
// media, encrypted volumes. QEMU runs the full encoder over every such cluster and then
// stores it raw because the output did not shrink; for zstd that wasted pass costs a
// quarter to a third of a level-3 encode of text. Like the early-abort heuristics of
// btrfs and ZFS, looksRandom inspects a sample first and skips the encoder only when the
// sample shows none of the structure an LZ compressor exploits:
//
//   - the byte histogram of the sample passes a chi-square test for uniformity (any
//     skew, such as text, zero padding or a small alphabet, fails it);
//   - no sampled window is a run of one byte;
//   - no two sampled windows are equal (a random block repeated at a period that is
//     a multiple of the stride is caught here).
//
// The decision only changes how a cluster is stored (raw instead of compressed), never
// what a reader sees, and it depends only on the cluster's bytes, so output stays
// deterministic. A cluster whose only redundancy is a long repeat at an alignment the
// sample misses, with a uniform byte histogram, is stored raw where QEMU would have
// saved some bytes; the cost of that rare miss is space, not correctness.

const (
	probeStride = 256 // one window every probeStride bytes
	probeWindow = 16  // bytes per window
	// Chi-square limit over 256 bins (255 degrees of freedom: mean 255, sd 22.6): a
	// uniform sample stays below it with overwhelming probability, while any real
	// skew (a byte 3x more frequent than the rest over a 4 KiB sample) exceeds it.
	probeChiLimit = 255 + 6*23
)

// looksRandom reports whether p is very likely incompressible (see above). It reads
// at most 4 KiB of p and costs a few microseconds for a 64 KiB cluster.
func looksRandom(p []byte) bool {
	stride := max(probeStride, len(p)/256) // at most 256 windows: the set below stays half empty
	n := len(p) / stride
	if n < 64 {
		return false // too small to judge: let the encoder decide
	}
	var hist, hist2 [256]uint32
	var seen [512]uint64 // open-addressed set of window hashes (0 = empty)
	for i := 0; i < n; i++ {
		w := p[i*stride : i*stride+probeWindow]
		a, b := binary.LittleEndian.Uint64(w), binary.LittleEndian.Uint64(w[8:])
		// A run of one byte: both halves equal to the first byte repeated.
		if rep := uint64(byte(a)) * 0x0101010101010101; a == rep && b == rep {
			return false
		}
		// Unrolled, two tables: no variable shifts, shorter store-to-load chains.
		hist[byte(a)]++
		hist2[byte(b)]++
		hist[byte(a>>8)]++
		hist2[byte(b>>8)]++
		hist[byte(a>>16)]++
		hist2[byte(b>>16)]++
		hist[byte(a>>24)]++
		hist2[byte(b>>24)]++
		hist[byte(a>>32)]++
		hist2[byte(b>>32)]++
		hist[byte(a>>40)]++
		hist2[byte(b>>40)]++
		hist[byte(a>>48)]++
		hist2[byte(b>>48)]++
		hist[byte(a>>56)]++
		hist2[byte(b>>56)]++
		if i == 63 {
			// Early out for structured data, the common case: 1 KiB of random bytes
			// shows about 251 distinct values, text or code well under 150.
			distinct := 0
			for k, c := range hist {
				if c+hist2[k] != 0 {
					distinct++
				}
			}
			if distinct < 220 {
				return false
			}
		}
		h := (a*0x9E3779B97F4A7C15 ^ b*0xC2B2AE3D27D4EB4F) | 1
		for j := h >> 55; ; j = (j + 1) & 511 {
			if seen[j] == 0 {
				seen[j] = h
				break
			}
			if seen[j] == h {
				return false // a repeated window: leave it to the encoder
			}
		}
	}
	// chi2 = sum((c-E)^2)/E with E = total/256; compare sum((c-E)^2) against limit*E
	// in integers scaled by 256 to stay exact.
	total := uint64(n * probeWindow)
	var sum uint64
	for k, c := range hist {
		d := int64(c+hist2[k])*256 - int64(total)
		sum += uint64(d * d)
	}
	// sum/(256^2) / (total/256) < limit  <=>  sum < limit * total * 256
	return sum < probeChiLimit*total*256
}

package arm

// The ARMv8.0 Cryptographic Extension (AES, SHA1, SHA256, 64-bit PMULL), which
// Cortex-A57 implements and Linux uses (aes-ce, sha1-ce, sha2-ce, ghash-ce)
// when ID_AA64ISAR0_EL1 advertises it.

import "math/bits"

// hostCrypto says which groups run as host instructions (fpsimd_crypto_amd64.go);
// the decoders choose at decode time, so tests can switch it to compare the paths.
var hostCrypto struct{ aes, pmull, sha bool }

var aesSbox, aesInvSbox [256]byte

func init() {
	// S-box from the multiplicative inverse in GF(2^8) and the affine map.
	p, q := byte(1), byte(1)
	for {
		// p walks the multiplicative group by 3, q by its inverse 1/3.
		p = p ^ p<<1 ^ byte(int8(p)>>7)&0x1b
		q ^= q << 1
		q ^= q << 2
		q ^= q << 4
		if q&0x80 != 0 {
			q ^= 0x09
		}
		x := q ^ bits.RotateLeft8(q, 1) ^ bits.RotateLeft8(q, 2) ^ bits.RotateLeft8(q, 3) ^ bits.RotateLeft8(q, 4) ^ 0x63
		aesSbox[p] = x
		aesInvSbox[x] = p
		if p == 1 {
			break
		}
	}
	aesSbox[0] = 0x63
	aesInvSbox[0x63] = 0
}

func gmul(a, b byte) byte {
	var r byte
	for b != 0 {
		if b&1 != 0 {
			r ^= a
		}
		a = a<<1 ^ byte(int8(a)>>7)&0x1b
		b >>= 1
	}
	return r
}

func toBytes(v [2]uint64) (b [16]byte) {
	putBytes(b[:], v)
	return
}

func fromBytes(b [16]byte) (v [2]uint64) {
	for i := 0; i < 16; i++ {
		v[i>>3] |= uint64(b[i]) << (8 * uint(i&7))
	}
	return
}

// aesRound is AESE (inverse=false) or AESD: AddRoundKey, (Inv)ShiftRows,
// (Inv)SubBytes on the state held column-major in the 16 bytes.
func aesRound(st [16]byte, inverse bool) (out [16]byte) {
	for c := 0; c < 4; c++ {
		for r := 0; r < 4; r++ {
			if inverse {
				out[r+4*c] = aesInvSbox[st[r+4*((c-r+4)%4)]]
			} else {
				out[r+4*c] = aesSbox[st[r+4*((c+r)%4)]]
			}
		}
	}
	return
}

func aesMix(st [16]byte, inverse bool) (out [16]byte) {
	m := [4]byte{2, 3, 1, 1}
	if inverse {
		m = [4]byte{14, 11, 13, 9}
	}
	for c := 0; c < 4; c++ {
		for r := 0; r < 4; r++ {
			var x byte
			for k := 0; k < 4; k++ {
				x ^= gmul(st[(r+k)%4+4*c], m[k])
			}
			out[r+4*c] = x
		}
	}
	return
}

func decodeAES(insn uint32) func(*State) {
	d, n := int(fld(insn, 0, 5)), int(fld(insn, 5, 5))
	switch fld(insn, 12, 5) {
	case 0b00100, 0b00101: // AESE, AESD
		inv := insn>>12&1 != 0
		if hostCrypto.aes {
			if inv {
				return func(s *State) { aesdHW(&s.V[d], &s.V[n]) }
			}
			return func(s *State) { aeseHW(&s.V[d], &s.V[n]) }
		}
		return func(s *State) {
			x := [2]uint64{s.V[d][0] ^ s.V[n][0], s.V[d][1] ^ s.V[n][1]}
			s.V[d] = fromBytes(aesRound(toBytes(x), inv))
		}
	case 0b00110, 0b00111: // AESMC, AESIMC
		inv := insn>>12&1 != 0
		if hostCrypto.aes {
			if inv {
				return func(s *State) { aesimcHW(&s.V[d], &s.V[n]) }
			}
			return func(s *State) { aesmcHW(&s.V[d], &s.V[n]) }
		}
		return func(s *State) { s.V[d] = fromBytes(aesMix(toBytes(s.V[n]), inv)) }
	}
	return nil
}

func words(v [2]uint64) [4]uint32 {
	return [4]uint32{uint32(v[0]), uint32(v[0] >> 32), uint32(v[1]), uint32(v[1] >> 32)}
}

func fromWords(w [4]uint32) [2]uint64 {
	return [2]uint64{uint64(w[0]) | uint64(w[1])<<32, uint64(w[2]) | uint64(w[3])<<32}
}

// sha1RoundK is the round constant SHA1RNDS4 adds for function 0, 1 and 2, which
// the host path takes out of A64's W+K words.
var sha1RoundK = [3]uint32{0x5a827999, 0x6ed9eba1, 0x8f1bbcdc}

func shaChoose(x, y, z uint32) uint32   { return (y^z)&x ^ z }
func shaParity(x, y, z uint32) uint32   { return x ^ y ^ z }
func shaMajority(x, y, z uint32) uint32 { return x&y | (x|y)&z }

func sha256Hash(x, y, w [4]uint32, part1 bool) [4]uint32 {
	for e := 0; e < 4; e++ {
		chs := shaChoose(y[0], y[1], y[2])
		maj := shaMajority(x[0], x[1], x[2])
		s1 := bits.RotateLeft32(y[0], -6) ^ bits.RotateLeft32(y[0], -11) ^ bits.RotateLeft32(y[0], -25)
		t1 := y[3] + s1 + chs + w[e]
		x[3] += t1
		s0 := bits.RotateLeft32(x[0], -2) ^ bits.RotateLeft32(x[0], -13) ^ bits.RotateLeft32(x[0], -22)
		y[3] = t1 + s0 + maj
		// ROL(Y:X, 32)
		x, y = [4]uint32{y[3], x[0], x[1], x[2]}, [4]uint32{x[3], y[0], y[1], y[2]}
	}
	if part1 {
		return x
	}
	return y
}

// decodeSHA3 decodes the three-register SHA instructions.
func decodeSHA3(insn uint32) func(*State) {
	d, n, m := int(fld(insn, 0, 5)), int(fld(insn, 5, 5)), int(fld(insn, 16, 5))
	opc := fld(insn, 12, 3)
	switch opc {
	case 0, 1, 2: // SHA1C, SHA1P, SHA1M
		if hostCrypto.sha {
			f := int(opc)
			k := sha1RoundK[opc]
			return func(s *State) {
				w, e := s.V[m], uint32(s.V[n][0])
				wk := [2]uint64{uint64(uint32(w[0])-k+e) | uint64(uint32(w[0]>>32)-k)<<32,
					uint64(uint32(w[1])-k) | uint64(uint32(w[1]>>32)-k)<<32}
				sha1HW(&s.V[d], &wk, f)
			}
		}
		f := [3]func(x, y, z uint32) uint32{shaChoose, shaParity, shaMajority}[opc]
		return func(s *State) {
			x := words(s.V[d])
			y := uint32(s.V[n][0])
			w := words(s.V[m])
			for e := 0; e < 4; e++ {
				t := f(x[1], x[2], x[3])
				y += bits.RotateLeft32(x[0], 5) + t + w[e]
				x[1] = bits.RotateLeft32(x[1], 30)
				x, y = [4]uint32{y, x[0], x[1], x[2]}, x[3]
			}
			s.V[d] = fromWords(x)
		}
	case 3: // SHA1SU0
		return func(s *State) {
			a, b, c := s.V[d], s.V[n], s.V[m]
			s.V[d] = [2]uint64{a[1] ^ a[0] ^ c[0], b[0] ^ a[1] ^ c[1]}
		}
	case 4, 5: // SHA256H, SHA256H2
		part1 := opc == 4
		if hostCrypto.sha {
			if part1 {
				return func(s *State) {
					x, y, w := s.V[d], s.V[n], s.V[m]
					sha256hHW(&x, &y, &w)
					s.V[d] = x
				}
			}
			return func(s *State) {
				x, y, w := s.V[n], s.V[d], s.V[m]
				sha256hHW(&x, &y, &w)
				s.V[d] = y
			}
		}
		return func(s *State) {
			x, y, w := words(s.V[d]), words(s.V[n]), words(s.V[m])
			if !part1 {
				x, y = y, x
			}
			s.V[d] = fromWords(sha256Hash(x, y, w, part1))
		}
	case 6: // SHA256SU1
		if hostCrypto.sha {
			return func(s *State) { sha256su1HW(&s.V[d], &s.V[n], &s.V[m]) }
		}
		return func(s *State) {
			o1, o2, o3 := words(s.V[d]), words(s.V[n]), words(s.V[m])
			t0 := [4]uint32{o2[1], o2[2], o2[3], o3[0]}
			sig := func(x uint32) uint32 {
				return bits.RotateLeft32(x, -17) ^ bits.RotateLeft32(x, -19) ^ x>>10
			}
			var r [4]uint32
			r[0] = sig(o3[2]) + o1[0] + t0[0]
			r[1] = sig(o3[3]) + o1[1] + t0[1]
			r[2] = sig(r[0]) + o1[2] + t0[2]
			r[3] = sig(r[1]) + o1[3] + t0[3]
			s.V[d] = fromWords(r)
		}
	}
	return nil
}

// decodeSHA2 decodes the two-register SHA instructions.
func decodeSHA2(insn uint32) func(*State) {
	d, n := int(fld(insn, 0, 5)), int(fld(insn, 5, 5))
	switch fld(insn, 12, 5) {
	case 0: // SHA1H
		return func(s *State) { s.V[d] = [2]uint64{uint64(bits.RotateLeft32(uint32(s.V[n][0]), 30)), 0} }
	case 1: // SHA1SU1
		return func(s *State) {
			o1, o2 := s.V[d], s.V[n]
			t := words([2]uint64{o1[0] ^ (o2[0]>>32 | o2[1]<<32), o1[1] ^ o2[1]>>32})
			r := [4]uint32{bits.RotateLeft32(t[0], 1), bits.RotateLeft32(t[1], 1), bits.RotateLeft32(t[2], 1),
				bits.RotateLeft32(t[3], 1) ^ bits.RotateLeft32(t[0], 2)}
			s.V[d] = fromWords(r)
		}
	case 2: // SHA256SU0
		if hostCrypto.sha {
			return func(s *State) { sha256su0HW(&s.V[d], &s.V[n]) }
		}
		return func(s *State) {
			o1, o2 := words(s.V[d]), words(s.V[n])
			t := [4]uint32{o1[1], o1[2], o1[3], o2[0]}
			var r [4]uint32
			for e := 0; e < 4; e++ {
				x := t[e]
				r[e] = (bits.RotateLeft32(x, -7) ^ bits.RotateLeft32(x, -18) ^ x>>3) + o1[e]
			}
			s.V[d] = fromWords(r)
		}
	}
	return nil
}

// clmul64 is the 128-bit carry-less product of a and b.
func clmul64(a, b uint64) (lo, hi uint64) {
	for i := uint(0); i < 64; i++ {
		if b>>i&1 != 0 {
			lo ^= a << i
			if i > 0 {
				hi ^= a >> (64 - i)
			}
		}
	}
	return
}

// decodePMULL64 decodes PMULL/PMULL2 with 64-bit elements.
func decodePMULL64(insn uint32) func(*State) {
	d, n, m := int(fld(insn, 0, 5)), int(fld(insn, 5, 5)), int(fld(insn, 16, 5))
	h := int(insn >> 30 & 1)
	if hostCrypto.pmull {
		return func(s *State) { s.V[d][0], s.V[d][1] = clmulHW(s.V[n][h], s.V[m][h]) }
	}
	return func(s *State) {
		lo, hi := clmul64(s.V[n][h], s.V[m][h])
		s.V[d] = [2]uint64{lo, hi}
	}
}

package arm

import "math/bits"

// ARMv8.2 FEAT_SHA512 (SHA512H, SHA512H2, SHA512SU0, SHA512SU1) and FEAT_SHA3 (EOR3,
// RAX1, XAR, BCAX), and the dispatch of the ARMv8.2 cryptographic encodings (insn
// bits 31:24 = 0xce), SM3/SM4 included (sm.go).

// decodeCryptoExt decodes the 0xce cryptographic encodings of the extensions in f.
func decodeCryptoExt(insn uint32, f isaFeat) func(*State) {
	d, n, m := int(fld(insn, 0, 5)), int(fld(insn, 5, 5)), int(fld(insn, 16, 5))
	switch {
	case insn&0xffe0b000 == 0xce608000: // three register SHA512, RAX1, SM3PARTW*, SM4EKEY
		switch opc := fld(insn, 14, 1)<<2 | fld(insn, 10, 2); {
		case opc <= 2 && f&featSHA512 != 0:
			return sha512Op3(d, n, m, opc)
		case opc == 3 && f&featSHA3 != 0: // RAX1
			return vec64Op2(d, n, m, func(x, y uint64) uint64 { return x ^ bits.RotateLeft64(y, 1) })
		case (opc == 4 || opc == 5) && f&featSM3 != 0:
			return sm3PartW(d, n, m, opc == 5)
		case opc == 6 && f&featSM4 != 0:
			return sm4Op(d, n, m, true)
		}
	case insn&0xfffff000 == 0xcec08000: // two register SHA512SU0, SM4E
		switch fld(insn, 10, 2) {
		case 0:
			if f&featSHA512 != 0 {
				return sha512su0(d, n)
			}
		case 1:
			if f&featSM4 != 0 {
				return sm4Op(d, n, d, false)
			}
		}
	case insn&0xff808000 == 0xce000000: // four register EOR3, BCAX, SM3SS1
		ra := int(fld(insn, 10, 5))
		switch fld(insn, 21, 2) {
		case 0:
			if f&featSHA3 != 0 {
				return func(s *State) {
					x, y, z := s.V[n], s.V[m], s.V[ra]
					s.V[d] = [2]uint64{x[0] ^ y[0] ^ z[0], x[1] ^ y[1] ^ z[1]}
				}
			}
		case 1:
			if f&featSHA3 != 0 {
				return func(s *State) {
					x, y, z := s.V[n], s.V[m], s.V[ra]
					s.V[d] = [2]uint64{x[0] ^ y[0]&^z[0], x[1] ^ y[1]&^z[1]}
				}
			}
		case 2:
			if f&featSM3 != 0 {
				return sm3ss1(d, n, m, ra)
			}
		}
	case insn&0xffe00000 == 0xce800000: // XAR
		if f&featSHA3 != 0 {
			rot := int(fld(insn, 10, 6))
			return vec64Op2(d, n, m, func(x, y uint64) uint64 { return bits.RotateLeft64(x^y, -rot) })
		}
	case insn&0xffe0c000 == 0xce408000: // SM3TT1A, SM3TT1B, SM3TT2A, SM3TT2B
		if f&featSM3 != 0 {
			return sm3tt(d, n, m, int(fld(insn, 12, 2)), fld(insn, 10, 2))
		}
	}
	return nil
}

// vec64Op2 applies g to both 64-bit lanes of Vn and Vm.
func vec64Op2(d, n, m int, g func(x, y uint64) uint64) func(*State) {
	return func(s *State) {
		x, y := s.V[n], s.V[m]
		s.V[d] = [2]uint64{g(x[0], y[0]), g(x[1], y[1])}
	}
}

func sha512Sigma1(x uint64) uint64 {
	return bits.RotateLeft64(x, -14) ^ bits.RotateLeft64(x, -18) ^ bits.RotateLeft64(x, -41)
}

func sha512Sigma0(x uint64) uint64 {
	return bits.RotateLeft64(x, -28) ^ bits.RotateLeft64(x, -34) ^ bits.RotateLeft64(x, -39)
}

// sha512Op3 is SHA512H (opc 0), SHA512H2 (1) or SHA512SU1 (2): Vd from Vd (W), Vn (X)
// and Vm (Y), lane 1 being <127:64>.
func sha512Op3(d, n, m int, opc uint32) func(*State) {
	return func(s *State) {
		w, x, y := s.V[d], s.V[n], s.V[m]
		var r [2]uint64
		switch opc {
		case 0: // SHA512H
			r[1] = (y[1] & x[0]) ^ (^y[1] & x[1])
			r[1] += sha512Sigma1(y[1]) + w[1]
			t := r[1] + y[0]
			r[0] = (t & y[1]) ^ (^t & x[0])
			r[0] += sha512Sigma1(t) + w[0]
		case 1: // SHA512H2
			r[1] = (x[0] & y[1]) ^ (x[0] & y[0]) ^ (y[1] & y[0])
			r[1] += sha512Sigma0(y[0]) + w[1]
			r[0] = (r[1] & y[0]) ^ (r[1] & y[1]) ^ (y[1] & y[0])
			r[0] += sha512Sigma0(r[1]) + w[0]
		default: // SHA512SU1
			sig1 := func(v uint64) uint64 { return bits.RotateLeft64(v, -19) ^ bits.RotateLeft64(v, -61) ^ v>>6 }
			r[1] = w[1] + sig1(x[1]) + y[1]
			r[0] = w[0] + sig1(x[0]) + y[0]
		}
		s.V[d] = r
	}
}

// sha512su0 is SHA512SU0 Vd.2D, Vn.2D.
func sha512su0(d, n int) func(*State) {
	sig0 := func(v uint64) uint64 { return bits.RotateLeft64(v, -1) ^ bits.RotateLeft64(v, -8) ^ v>>7 }
	return func(s *State) {
		w, x := s.V[d], s.V[n]
		s.V[d] = [2]uint64{w[0] + sig0(w[1]), w[1] + sig0(x[0])}
	}
}

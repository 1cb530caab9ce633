package arm

import "math/bits"

// ARMv8.2 FEAT_SM3 (SM3SS1, SM3TT1A/1B/2A/2B, SM3PARTW1/2) and FEAT_SM4 (SM4E,
// SM4EKEY): the Chinese national hash and block cipher steps, as the Arm ARM's
// pseudocode defines them (decoded by decodeCryptoExt in sha512.go).

// sm4Sbox is SM4's S-box, built from its algebraic form (GB/T 32907): an affine map,
// the inverse in GF(2^8) modulo x^8+x^7+x^6+x^5+x^4+x^2+1, the same affine map.
var sm4Sbox = func() (s [256]byte) {
	gmul := func(a, b uint) uint {
		var r uint
		for ; b != 0; b >>= 1 {
			if b&1 != 0 {
				r ^= a
			}
			if a <<= 1; a&0x100 != 0 {
				a ^= 0x1f5
			}
		}
		return r
	}
	affine := func(x uint) uint {
		var o uint
		for i := 0; i < 8; i++ {
			row := uint(bits.RotateLeft8(0xa7, i))
			o |= uint(bits.OnesCount(row&x)&1) << i
		}
		return o ^ 0xd3
	}
	var inv [256]uint
	for x := uint(1); x < 256; x++ {
		for y := uint(1); y < 256; y++ {
			if gmul(x, y) == 1 {
				inv[x] = y
				break
			}
		}
	}
	for x := range s {
		s[x] = byte(affine(inv[affine(uint(x))]))
	}
	return
}()

func sm4Tau(x uint32) uint32 {
	return uint32(sm4Sbox[x>>24])<<24 | uint32(sm4Sbox[x>>16&0xff])<<16 | uint32(sm4Sbox[x>>8&0xff])<<8 | uint32(sm4Sbox[x&0xff])
}

// sm4Op is SM4E (ekey false: Vd's state through four rounds keyed by Vn's words) or
// SM4EKEY (Vn's key words through four rounds with Vm's constants), into Vd.
func sm4Op(d, n, m int, ekey bool) func(*State) {
	return func(s *State) {
		st, keys := words(s.V[d]), words(s.V[n])
		if ekey {
			st, keys = words(s.V[n]), words(s.V[m])
		}
		for i := 0; i < 4; i++ {
			t := sm4Tau(st[3] ^ st[2] ^ st[1] ^ keys[i])
			if ekey {
				t ^= bits.RotateLeft32(t, 13) ^ bits.RotateLeft32(t, 23)
			} else {
				t ^= bits.RotateLeft32(t, 2) ^ bits.RotateLeft32(t, 10) ^ bits.RotateLeft32(t, 18) ^ bits.RotateLeft32(t, 24)
			}
			st = [4]uint32{st[1], st[2], st[3], t ^ st[0]}
		}
		s.V[d] = fromWords(st)
	}
}

func sm3P1(x uint32) uint32 { return x ^ bits.RotateLeft32(x, 15) ^ bits.RotateLeft32(x, 23) }

// sm3PartW is SM3PARTW1 (two false) or SM3PARTW2.
func sm3PartW(d, n, m int, two bool) func(*State) {
	return func(s *State) {
		vd, vn, vm := words(s.V[d]), words(s.V[n]), words(s.V[m])
		var r [4]uint32
		if !two {
			for i := 0; i < 3; i++ {
				r[i] = vd[i] ^ vn[i] ^ bits.RotateLeft32(vm[i+1], 15)
			}
			r[3] = vd[3] ^ vn[3] ^ bits.RotateLeft32(sm3P1(r[0]), 15)
			for i := 0; i < 3; i++ {
				r[i] = sm3P1(r[i])
			}
			r[3] = sm3P1(r[3])
		} else {
			var t [4]uint32
			for i := range t {
				t[i] = vn[i] ^ bits.RotateLeft32(vm[i], 7)
				r[i] = vd[i] ^ t[i]
			}
			t2 := bits.RotateLeft32(t[0], 15)
			r[3] ^= t2 ^ bits.RotateLeft32(t2, 15) ^ bits.RotateLeft32(t2, 23)
		}
		s.V[d] = fromWords(r)
	}
}

// sm3ss1 is SM3SS1: the top word ROL(ROL(Vn[3], 12) + Vm[3] + Va[3], 7), the rest zero.
func sm3ss1(d, n, m, a int) func(*State) {
	return func(s *State) {
		vn, vm, va := words(s.V[n]), words(s.V[m]), words(s.V[a])
		s.V[d] = fromWords([4]uint32{0, 0, 0, bits.RotateLeft32(bits.RotateLeft32(vn[3], 12)+vm[3]+va[3], 7)})
	}
}

// sm3tt is SM3TT1A (op 0), SM3TT1B (1), SM3TT2A (2), SM3TT2B (3) with Vm.S[imm2].
func sm3tt(d, n, m, imm2 int, op uint32) func(*State) {
	return func(s *State) {
		vd, vn := words(s.V[d]), words(s.V[n])
		wj := words(s.V[m])[imm2]
		var t uint32
		switch op {
		case 0, 2:
			t = vd[1] ^ vd[3] ^ vd[2]
		case 1:
			t = vd[3]&vd[1] | vd[3]&vd[2] | vd[1]&vd[2]
		case 3:
			t = vd[3]&vd[2] | ^vd[3]&vd[1]
		}
		var r [4]uint32
		if op < 2 {
			ss2 := vn[3] ^ bits.RotateLeft32(vd[3], 12)
			t += vd[0] + ss2 + wj
			r = [4]uint32{vd[1], bits.RotateLeft32(vd[2], 9), vd[3], t}
		} else {
			t += vd[0] + vn[3] + wj
			r = [4]uint32{vd[1], bits.RotateLeft32(vd[2], 19), vd[3], t ^ bits.RotateLeft32(t, 9) ^ bits.RotateLeft32(t, 17)}
		}
		s.V[d] = fromWords(r)
	}
}

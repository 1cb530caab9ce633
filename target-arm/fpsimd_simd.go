package arm

// Advanced SIMD: element access, vector runners and the per-class decoders.

import (
	"math"
	"math/bits"
)

// eget returns element i of size 8<<size bits, zero-extended.
func eget(v *[2]uint64, i int, size uint) uint64 {
	n := uint(8) << size
	pos := uint(i) * n
	w := v[pos>>6] >> (pos & 63)
	if n < 64 {
		w &= 1<<n - 1
	}
	return w
}

func eset(v *[2]uint64, i int, size uint, x uint64) {
	n := uint(8) << size
	pos := uint(i) * n
	if n == 64 {
		v[pos>>6] = x
		return
	}
	m := uint64(1)<<n - 1
	sh := pos & 63
	v[pos>>6] = v[pos>>6]&^(m<<sh) | (x&m)<<sh
}

func sext(x uint64, size uint) int64 {
	sh := 64 - (8 << size)
	return int64(x<<sh) >> sh
}

func emask(size uint) uint64 { return math.MaxUint64 >> (64 - (8 << size)) }

// laneFn computes one destination element from elements of the first and
// second operands and the old destination element.
type laneFn func(a, b, d uint64, s *State) uint64

// vecOp applies f lane-wise over elems elements; the rest of Vd is zeroed
// (which is also what scalar forms need, with elems = 1).
func vecOp(d, n, m, elems int, size uint, f laneFn) func(*State) {
	switch size {
	case 3:
		return func(s *State) {
			a, b, dd := s.V[n], s.V[m], s.V[d]
			var r [2]uint64
			for i := 0; i < elems; i++ {
				r[i] = f(a[i], b[i], dd[i], s)
			}
			s.V[d] = r
		}
	case 2:
		return func(s *State) {
			a, b, dd := s.V[n], s.V[m], s.V[d]
			var r [2]uint64
			for i := 0; i < elems; i++ {
				sh := uint(i&1) * 32
				x := f(a[i>>1]>>sh&0xffffffff, b[i>>1]>>sh&0xffffffff, dd[i>>1]>>sh&0xffffffff, s)
				r[i>>1] |= (x & 0xffffffff) << sh
			}
			s.V[d] = r
		}
	}
	esize := uint(8) << size
	lg := 3 - size // log2 of the lanes per 64-bit word
	mask := emask(size)
	return func(s *State) {
		a, b, dd := s.V[n], s.V[m], s.V[d]
		var r [2]uint64
		for i := 0; i < elems; i++ {
			w := i >> lg
			sh := uint(i&(1<<lg-1)) * esize
			r[w] |= (f(a[w]>>sh&mask, b[w]>>sh&mask, dd[w]>>sh&mask, s) & mask) << sh
		}
		s.V[d] = r
	}
}

// vecPairOp applies f to adjacent pairs of the concatenation Vm:Vn.
func vecPairOp(d, n, m, elems int, size uint, f laneFn) func(*State) {
	return func(s *State) {
		a, b := s.V[n], s.V[m]
		var r [2]uint64
		h := elems / 2
		for i := 0; i < h; i++ {
			eset(&r, i, size, f(eget(&a, 2*i, size), eget(&a, 2*i+1, size), 0, s))
			eset(&r, h+i, size, f(eget(&b, 2*i, size), eget(&b, 2*i+1, size), 0, s))
		}
		s.V[d] = r
	}
}

func boolMask(c bool) uint64 {
	if c {
		return math.MaxUint64
	}
	return 0
}

// ---- saturation helpers ----

func satS(v int64, size uint, s *State) uint64 {
	n := uint(8) << size
	max := int64(1)<<(n-1) - 1
	min := -max - 1
	if v > max {
		s.FPSR |= fpQC
		v = max
	} else if v < min {
		s.FPSR |= fpQC
		v = min
	}
	return uint64(v) & emask(size)
}

func satU(v int64, size uint, s *State) uint64 {
	max := int64(emask(size))
	if v > max {
		s.FPSR |= fpQC
		return uint64(max)
	}
	if v < 0 {
		s.FPSR |= fpQC
		return 0
	}
	return uint64(v)
}

func sqadd(a, b uint64, size uint, s *State) uint64 {
	if size < 3 {
		return satS(sext(a, size)+sext(b, size), size, s)
	}
	r := int64(a) + int64(b)
	if (int64(a) >= 0) == (int64(b) >= 0) && (r >= 0) != (int64(a) >= 0) {
		s.FPSR |= fpQC
		if int64(a) < 0 {
			return 1 << 63
		}
		return 1<<63 - 1
	}
	return uint64(r)
}

func sqsub(a, b uint64, size uint, s *State) uint64 {
	if size < 3 {
		return satS(sext(a, size)-sext(b, size), size, s)
	}
	r := int64(a) - int64(b)
	if (int64(a) >= 0) != (int64(b) >= 0) && (r >= 0) != (int64(a) >= 0) {
		s.FPSR |= fpQC
		if int64(a) < 0 {
			return 1 << 63
		}
		return 1<<63 - 1
	}
	return uint64(r)
}

func uqadd(a, b uint64, size uint, s *State) uint64 {
	r, c := bits.Add64(a, b, 0)
	if c != 0 || r > emask(size) {
		s.FPSR |= fpQC
		return emask(size)
	}
	return r
}

func uqsub(a, b uint64, s *State) uint64 {
	if b > a {
		s.FPSR |= fpQC
		return 0
	}
	return a - b
}

// shiftReg is [SU][R]SHL and [SU]Q[R]SHL (register): shift by the signed low
// byte of b; negative shifts go right (with rounding if rnd).
func shiftReg(a, b uint64, size uint, signed, rnd, sat bool, s *State) uint64 {
	n := int(8) << size
	sh := int(int8(b))
	if signed {
		v := sext(a, size)
		if sh >= 0 {
			if sh >= 64 {
				sh = 64
			}
			r := v << uint(sh)
			if sat {
				if sh >= n && v != 0 || (sh < 64 && r>>uint(sh) != v) || sext(uint64(r), size) != r {
					s.FPSR |= fpQC
					if v < 0 {
						return emask(size)>>1 + 1
					}
					return emask(size) >> 1
				}
			}
			if sh >= n {
				return 0
			}
			return uint64(r) & emask(size)
		}
		rs := -sh
		if rs > 64 {
			rs = 64
		}
		r := v >> uint(rs)
		if rnd && rs <= 64 {
			r += (v >> uint(rs-1)) & 1
		}
		return uint64(r) & emask(size)
	}
	if sh >= 0 {
		if sh >= 64 {
			sh = 64
		}
		r := a << uint(sh)
		if sat && a != 0 && (sh >= n || r>>uint(sh) != a || r&^emask(size) != 0) {
			s.FPSR |= fpQC
			return emask(size)
		}
		if sh >= n {
			return 0
		}
		return r & emask(size)
	}
	rs := -sh
	if rs > 65 {
		rs = 65
	}
	r := a >> uint(rs)
	if rnd {
		r += (a >> uint(rs-1)) & 1
	}
	return r & emask(size)
}

// sqdmulh is SQDMULH/SQRDMULH for 16- and 32-bit elements.
func sqdmulh(a, b uint64, size uint, round bool, s *State) uint64 {
	n := uint(8) << size
	x, y := sext(a, size), sext(b, size)
	minv := -int64(1) << (n - 1)
	if x == minv && y == minv {
		s.FPSR |= fpQC
		return uint64(-minv-1) & emask(size)
	}
	p := x * y // fits: |p| < 2^62
	var r int64
	if round {
		r = (p + int64(1)<<(n-2)) >> (n - 1)
	} else {
		r = p >> (n - 1)
	}
	return uint64(r) & emask(size)
}

func absDiff(a, b uint64, size uint, signed bool) uint64 {
	if signed {
		x, y := sext(a, size), sext(b, size)
		if x > y {
			return uint64(x - y)
		}
		return uint64(y - x)
	}
	if a > b {
		return a - b
	}
	return b - a
}

func pmul8(a, b uint64) uint64 {
	var r uint64
	for i := uint(0); i < 8; i++ {
		if b>>i&1 != 0 {
			r ^= a << i
		}
	}
	return r
}

// intSameOp returns the lane function of an integer "three same" opcode.
func intSameOp(opc, u uint32, size uint) laneFn {
	signed := u == 0
	m := emask(size)
	switch opc {
	case 0b00000, 0b00010, 0b00100: // [SU]HADD, [SU]RHADD, [SU]HSUB
		if size == 3 {
			return nil
		}
		rnd := int64(0)
		if opc == 2 {
			rnd = 1
		}
		sub := opc == 4
		return func(a, b, _ uint64, _ *State) uint64 {
			var x, y int64
			if signed {
				x, y = sext(a, size), sext(b, size)
			} else {
				x, y = int64(a), int64(b)
			}
			if sub {
				return uint64((x-y)>>1) & m
			}
			return uint64((x+y+rnd)>>1) & m
		}
	case 0b00001:
		if signed {
			return func(a, b, _ uint64, s *State) uint64 { return sqadd(a, b, size, s) }
		}
		return func(a, b, _ uint64, s *State) uint64 { return uqadd(a, b, size, s) }
	case 0b00101:
		if signed {
			return func(a, b, _ uint64, s *State) uint64 { return sqsub(a, b, size, s) }
		}
		return func(a, b, _ uint64, s *State) uint64 { return uqsub(a, b, s) }
	case 0b00110: // CMGT, CMHI
		if signed {
			return func(a, b, _ uint64, _ *State) uint64 { return boolMask(sext(a, size) > sext(b, size)) }
		}
		return func(a, b, _ uint64, _ *State) uint64 { return boolMask(a > b) }
	case 0b00111: // CMGE, CMHS
		if signed {
			return func(a, b, _ uint64, _ *State) uint64 { return boolMask(sext(a, size) >= sext(b, size)) }
		}
		return func(a, b, _ uint64, _ *State) uint64 { return boolMask(a >= b) }
	case 0b01000, 0b01001, 0b01010, 0b01011: // [SU]SHL, [SU]QSHL, [SU]RSHL, [SU]QRSHL
		sat := opc&1 != 0
		rnd := opc&2 != 0
		return func(a, b, _ uint64, s *State) uint64 { return shiftReg(a, b, size, signed, rnd, sat, s) }
	case 0b01100, 0b01101: // [SU]MAX, [SU]MIN
		if size == 3 {
			return nil
		}
		return minMaxLane(signed, opc == 0b01100, size)
	case 0b01110: // [SU]ABD
		if size == 3 {
			return nil
		}
		return func(a, b, _ uint64, _ *State) uint64 { return absDiff(a, b, size, signed) & m }
	case 0b01111: // [SU]ABA
		if size == 3 {
			return nil
		}
		return func(a, b, d uint64, _ *State) uint64 { return (d + absDiff(a, b, size, signed)) & m }
	case 0b10000:
		if signed {
			return func(a, b, _ uint64, _ *State) uint64 { return (a + b) & m }
		}
		return func(a, b, _ uint64, _ *State) uint64 { return (a - b) & m }
	case 0b10001:
		if signed { // CMTST
			return func(a, b, _ uint64, _ *State) uint64 { return boolMask(a&b != 0) }
		}
		return func(a, b, _ uint64, _ *State) uint64 { return boolMask(a == b) }
	case 0b10010: // MLA, MLS
		if size == 3 {
			return nil
		}
		if signed {
			return func(a, b, d uint64, _ *State) uint64 { return (d + a*b) & m }
		}
		return func(a, b, d uint64, _ *State) uint64 { return (d - a*b) & m }
	case 0b10011: // MUL, PMUL
		if size == 3 || (!signed && size != 0) {
			return nil
		}
		if signed {
			return func(a, b, _ uint64, _ *State) uint64 { return (a * b) & m }
		}
		return func(a, b, _ uint64, _ *State) uint64 { return pmul8(a, b) & m }
	case 0b10110: // SQDMULH, SQRDMULH
		if size == 0 || size == 3 {
			return nil
		}
		return func(a, b, _ uint64, s *State) uint64 { return sqdmulh(a, b, size, !signed, s) }
	}
	return nil
}

func minMaxLane(signed, isMax bool, size uint) laneFn {
	if signed {
		return func(a, b, _ uint64, _ *State) uint64 {
			if (sext(a, size) > sext(b, size)) == isMax {
				return a
			}
			return b
		}
	}
	return func(a, b, _ uint64, _ *State) uint64 {
		if (a > b) == isMax {
			return a
		}
		return b
	}
}

// fpSameOp returns the lane function of an FP "three same" opcode (U, size<1>).
func fpSameOp(opc, u, a uint32, sz int) (f laneFn, pairwise bool) {
	bin := func(g fpBinFn) laneFn {
		return func(x, y, _ uint64, s *State) uint64 { return g(x, y, s.FPCR, &s.FPSR) }
	}
	key := opc<<2 | u<<1 | a
	switch key {
	case 0b11000_0_0, 0b11000_0_1, 0b11000_1_0, 0b11000_1_1: // FMAXNM, FMINNM, FMAXNMP, FMINNMP
		return bin(fp2Op(6+a, sz)), u == 1
	case 0b11001_0_0: // FMLA
		return func(x, y, d uint64, s *State) uint64 { return fpMulAdd(sz, d, x, y, s.FPCR, &s.FPSR) }, false
	case 0b11001_0_1: // FMLS
		sb := fpSignBit(sz)
		return func(x, y, d uint64, s *State) uint64 { return fpMulAdd(sz, d, x^sb, y, s.FPCR, &s.FPSR) }, false
	case 0b11010_0_0, 0b11010_0_1: // FADD, FSUB
		sub := a == 1
		return func(x, y, _ uint64, s *State) uint64 { return fpAddSub(sz, x, y, sub, s.FPCR, &s.FPSR) }, false
	case 0b11010_1_0: // FADDP
		return bin(fp2Op(2, sz)), true
	case 0b11010_1_1: // FABD
		sb := fpSignBit(sz)
		return func(x, y, _ uint64, s *State) uint64 { return fpAddSub(sz, x, y, true, s.FPCR, &s.FPSR) &^ sb }, false
	case 0b11011_0_0: // FMULX
		return func(x, y, _ uint64, s *State) uint64 { return fpMulX(sz, x, y, s.FPCR, &s.FPSR) }, false
	case 0b11011_1_0: // FMUL
		return func(x, y, _ uint64, s *State) uint64 { return fpMul(sz, x, y, s.FPCR, &s.FPSR) }, false
	case 0b11100_0_0, 0b11100_1_0, 0b11100_1_1, 0b11101_1_0, 0b11101_1_1: // FCMEQ, FCMGE, FCMGT, FACGE, FACGT
		kind := cmpEQ
		if u == 1 {
			kind = cmpGE + int(a)
		}
		abs := opc == 0b11101
		return func(x, y, _ uint64, s *State) uint64 {
			return boolMask(fpCompareVec(sz, x, y, kind, abs, s.FPCR, &s.FPSR))
		}, false
	case 0b11110_0_0, 0b11110_0_1, 0b11110_1_0, 0b11110_1_1: // FMAX, FMIN, FMAXP, FMINP
		return bin(fp2Op(4+a, sz)), u == 1
	case 0b11111_0_0, 0b11111_0_1: // FRECPS, FRSQRTS
		rs := a == 1
		return func(x, y, _ uint64, s *State) uint64 { return fpRecipStep(sz, x, y, rs, s.FPCR, &s.FPSR) }, false
	case 0b11111_1_0: // FDIV
		return func(x, y, _ uint64, s *State) uint64 { return fpDiv(sz, x, y, s.FPCR, &s.FPSR) }, false
	}
	return nil, false
}

func decodeSIMDVector(insn uint32) func(*State) {
	q := insn >> 30 & 1
	u := insn >> 29 & 1
	d, n, m := int(fld(insn, 0, 5)), int(fld(insn, 5, 5)), int(fld(insn, 16, 5))
	if insn>>24&1 != 0 {
		if insn>>10&1 == 0 {
			return decodeIndexed(insn, false)
		}
		if insn>>23&1 != 0 {
			return nil
		}
		if fld(insn, 19, 4) == 0 {
			return decodeModImm(insn)
		}
		return decodeShiftImm(insn, false)
	}
	if insn>>21&1 != 0 {
		switch {
		case insn>>10&1 != 0:
			return decodeThreeSame(insn, false)
		case fld(insn, 10, 2) == 0:
			return decodeThreeDiff(insn)
		case fld(insn, 17, 4) == 0:
			return decodeTwoMisc(insn, false)
		case fld(insn, 17, 4) == 0b1000:
			return decodeAcross(insn)
		}
		return nil
	}
	if insn>>15&1 != 0 {
		return nil
	}
	if insn>>10&1 != 0 {
		if fld(insn, 21, 3) != 0 {
			return nil
		}
		return decodeCopy(insn, false)
	}
	size := uint(fld(insn, 22, 2))
	switch {
	case insn>>11&1 != 0 && u == 0:
		return decodePermute(d, n, m, q, size, fld(insn, 12, 3))
	case u == 1 && size == 0: // EXT
		imm := uint(fld(insn, 11, 4))
		if q == 0 && imm >= 8 {
			return nil
		}
		nb := uint(8) << q
		return func(s *State) {
			var src [32]byte
			putBytes(src[:16], s.V[n])
			putBytes(src[nb:nb+16], s.V[m])
			var r [2]uint64
			for i := uint(0); i < nb; i++ {
				eset(&r, int(i), 0, uint64(src[imm+i]))
			}
			s.V[d] = r
		}
	case insn>>11&1 == 0 && u == 0 && size == 0: // TBL, TBX
		regs := int(fld(insn, 13, 2)) + 1
		tbx := insn>>12&1 != 0
		nb := 8 << q
		return func(s *State) {
			var tab [64]byte
			for i := 0; i < regs; i++ {
				putBytes(tab[16*i:16*i+16], s.V[(n+i)%32])
			}
			idx, old := s.V[m], s.V[d]
			var r [2]uint64
			for i := 0; i < nb; i++ {
				x := eget(&idx, i, 0)
				switch {
				case x < uint64(16*regs):
					eset(&r, i, 0, uint64(tab[x]))
				case tbx:
					eset(&r, i, 0, eget(&old, i, 0))
				}
			}
			s.V[d] = r
		}
	}
	return nil
}

func putBytes(b []byte, v [2]uint64) {
	for i := 0; i < 16; i++ {
		b[i] = byte(v[i>>3] >> (8 * uint(i&7)))
	}
}

func decodePermute(d, n, m int, q uint32, size uint, opc uint32) func(*State) {
	if size == 3 && q == 0 {
		return nil
	}
	elems := (8 << q) >> size
	h := elems / 2
	part := int(opc >> 2)
	switch opc & 3 {
	case 1: // UZP1/2
		return func(s *State) {
			a, b := s.V[n], s.V[m]
			var r [2]uint64
			for i := 0; i < h; i++ {
				eset(&r, i, size, eget(&a, 2*i+part, size))
				eset(&r, h+i, size, eget(&b, 2*i+part, size))
			}
			s.V[d] = r
		}
	case 2: // TRN1/2
		return func(s *State) {
			a, b := s.V[n], s.V[m]
			var r [2]uint64
			for p := 0; p < h; p++ {
				eset(&r, 2*p, size, eget(&a, 2*p+part, size))
				eset(&r, 2*p+1, size, eget(&b, 2*p+part, size))
			}
			s.V[d] = r
		}
	case 3: // ZIP1/2
		base := part * h
		return func(s *State) {
			a, b := s.V[n], s.V[m]
			var r [2]uint64
			for p := 0; p < h; p++ {
				eset(&r, 2*p, size, eget(&a, base+p, size))
				eset(&r, 2*p+1, size, eget(&b, base+p, size))
			}
			s.V[d] = r
		}
	}
	return nil
}

// decodeCopy decodes AdvSIMD copy (vector and, with scalar, the scalar DUP).
func decodeCopy(insn uint32, scalar bool) func(*State) {
	q := insn >> 30 & 1
	op := insn >> 29 & 1
	d, n := int(fld(insn, 0, 5)), int(fld(insn, 5, 5))
	imm5 := fld(insn, 16, 5)
	imm4 := fld(insn, 11, 4)
	if imm5&0xf == 0 {
		return nil
	}
	size := uint(bits.TrailingZeros32(imm5))
	idx := int(imm5 >> (size + 1))
	if scalar {
		if op != 0 || imm4 != 0 {
			return nil
		}
		return func(s *State) {
			v := s.V[n]
			s.V[d] = [2]uint64{eget(&v, idx, size), 0}
		}
	}
	if op == 1 {
		if q == 0 {
			return nil
		}
		src := int(imm4 >> size)
		return func(s *State) {
			v := s.V[n]
			eset(&s.V[d], idx, size, eget(&v, src, size))
		}
	}
	elems := (8 << q) >> size
	switch imm4 {
	case 0, 1: // DUP (element), DUP (general)
		if size == 3 && q == 0 {
			return nil
		}
		gen := imm4 == 1
		return func(s *State) {
			var x uint64
			if gen {
				x = getX(s, n)
			} else {
				v := s.V[n]
				x = eget(&v, idx, size)
			}
			var r [2]uint64
			for i := 0; i < elems; i++ {
				eset(&r, i, size, x)
			}
			s.V[d] = r
		}
	case 3: // INS (general)
		if q == 0 {
			return nil
		}
		return func(s *State) { eset(&s.V[d], idx, size, getX(s, n)) }
	case 5: // SMOV
		if size == 3 || (q == 0 && size == 2) {
			return nil
		}
		return func(s *State) {
			v := s.V[n]
			x := uint64(sext(eget(&v, idx, size), size))
			if q == 0 {
				x = uint64(uint32(x))
			}
			setX(s, d, x)
		}
	case 7: // UMOV
		if (q == 1) != (size == 3) {
			return nil
		}
		return func(s *State) {
			v := s.V[n]
			setX(s, d, eget(&v, idx, size))
		}
	}
	return nil
}

// advSIMDExpandImm is AdvSIMDExpandImm; ok is false for unallocated forms.
func advSIMDExpandImm(op, cmode uint32, imm8 uint64) (uint64, bool) {
	rep2 := func(x uint64) uint64 { return x | x<<32 }
	rep4 := func(x uint64) uint64 { return x * 0x0001000100010001 }
	switch cmode >> 1 {
	case 0:
		return rep2(imm8), true
	case 1:
		return rep2(imm8 << 8), true
	case 2:
		return rep2(imm8 << 16), true
	case 3:
		return rep2(imm8 << 24), true
	case 4:
		return rep4(imm8), true
	case 5:
		return rep4(imm8 << 8), true
	case 6:
		if cmode&1 == 0 {
			return rep2(imm8<<8 | 0xff), true
		}
		return rep2(imm8<<16 | 0xffff), true
	}
	switch {
	case cmode&1 == 0 && op == 0:
		return imm8 * 0x0101010101010101, true
	case cmode&1 == 0:
		var r uint64
		for i := uint(0); i < 8; i++ {
			if imm8>>i&1 != 0 {
				r |= 0xff << (8 * i)
			}
		}
		return r, true
	case op == 0:
		return rep2(vfpExpandImm(fpS, uint32(imm8))), true
	}
	return vfpExpandImm(fpD, uint32(imm8)), true
}

func decodeModImm(insn uint32) func(*State) {
	q := insn >> 30 & 1
	op := insn >> 29 & 1
	cmode := fld(insn, 12, 4)
	d := int(fld(insn, 0, 5))
	if insn>>11&1 != 0 {
		return nil
	}
	if cmode == 0xf && op == 1 && q == 0 {
		return nil
	}
	imm8 := uint64(fld(insn, 16, 3)<<5 | fld(insn, 5, 5))
	imm, _ := advSIMDExpandImm(op, cmode, imm8)
	hi := imm
	if q == 0 {
		hi = 0
	}
	logic := cmode < 12 && cmode&1 == 1
	hm := ^uint64(0) * uint64(q)
	switch {
	case logic && op == 0: // ORR
		return func(s *State) { s.V[d] = [2]uint64{s.V[d][0] | imm, (s.V[d][1] | imm) & hm} }
	case logic: // BIC
		return func(s *State) { s.V[d] = [2]uint64{s.V[d][0] &^ imm, (s.V[d][1] &^ imm) & hm} }
	case op == 1 && cmode < 14: // MVNI
		imm = ^imm
		hi = imm & hm
	}
	return func(s *State) { s.V[d] = [2]uint64{imm, hi} }
}

// decodeThreeSame decodes AdvSIMD (scalar) three same.
func decodeThreeSame(insn uint32, scalar bool) func(*State) {
	q := insn >> 30 & 1
	u := insn >> 29 & 1
	size := uint(fld(insn, 22, 2))
	opc := fld(insn, 11, 5)
	d, n, m := int(fld(insn, 0, 5)), int(fld(insn, 5, 5)), int(fld(insn, 16, 5))
	if opc >= 0b11000 {
		sz := uint(size & 1)
		if !scalar && sz == 1 && q == 0 {
			return nil
		}
		f, pair := fpSameOp(opc, u, uint32(size>>1), fpS+int(sz))
		if f == nil {
			return nil
		}
		esize := 2 + sz
		if scalar {
			if pair {
				return nil
			}
			switch opc {
			case 0b11010, 0b11011, 0b11100, 0b11101, 0b11111: // FABD, FMULX, FCM*, FAC*, FRECPS, FRSQRTS
				if (opc == 0b11010 && u == 0) || (opc == 0b11011 && u == 1) || (opc == 0b11111 && u == 1) {
					return nil
				}
			default:
				return nil
			}
			return vecOp(d, n, m, 1, esize, f)
		}
		elems := (8 << q) >> esize
		if pair {
			return vecPairOp(d, n, m, elems, esize, f)
		}
		return vecOp(d, n, m, elems, esize, f)
	}
	if opc == 0b00011 { // logical
		if scalar {
			return nil
		}
		var f func(a, b, c uint64) uint64
		switch u<<2 | uint32(size) {
		case 0:
			f = func(a, b, _ uint64) uint64 { return a & b }
		case 1:
			f = func(a, b, _ uint64) uint64 { return a &^ b }
		case 2:
			f = func(a, b, _ uint64) uint64 { return a | b }
		case 3:
			f = func(a, b, _ uint64) uint64 { return a | ^b }
		case 4:
			f = func(a, b, _ uint64) uint64 { return a ^ b }
		case 5: // BSL
			f = func(a, b, c uint64) uint64 { return c&a | ^c&b }
		case 6: // BIT
			f = func(a, b, c uint64) uint64 { return c&^b | a&b }
		case 7: // BIF
			f = func(a, b, c uint64) uint64 { return c&b | a&^b }
		}
		hm := ^uint64(0) * uint64(q)
		return func(s *State) {
			a, b, c := s.V[n], s.V[m], s.V[d]
			s.V[d] = [2]uint64{f(a[0], b[0], c[0]), f(a[1], b[1], c[1]) & hm}
		}
	}
	if scalar {
		switch opc {
		case 0b00001, 0b00101, 0b01001, 0b01011: // saturating add/sub/shift: any size
		case 0b10110: // SQDMULH, SQRDMULH
		case 0b00110, 0b00111, 0b01000, 0b01010, 0b10000, 0b10001:
			if size != 3 {
				return nil
			}
		default:
			return nil
		}
		f := intSameOp(opc, u, size)
		if f == nil {
			return nil
		}
		return vecOp(d, n, m, 1, size, f)
	}
	if size == 3 && q == 0 {
		return nil
	}
	elems := (8 << q) >> size
	switch opc {
	case 0b10100, 0b10101: // [SU]MAXP, [SU]MINP
		if size == 3 {
			return nil
		}
		signed, isMax := u == 0, opc == 0b10100
		return vecPair64Op(d, n, m, q, size, func(e, o uint64) uint64 { return swarMinMax(e, o, size, signed, isMax) })
	case 0b10111: // ADDP
		if u != 0 {
			return nil
		}
		if size == 3 {
			return vecPairOp(d, n, m, elems, size, func(a, b, _ uint64, _ *State) uint64 { return a + b })
		}
		return vecPair64Op(d, n, m, q, size, func(e, o uint64) uint64 { return e + o })
	}
	if g := swarSameOp(opc, u, size); g != nil {
		return vec64Op(d, n, m, q, g)
	}
	f := intSameOp(opc, u, size)
	if f == nil {
		return nil
	}
	return vecOp(d, n, m, elems, size, f)
}

// vec64Op applies g to each 64-bit half (the upper one only when q = 1);
// g works on all lanes of a half at once.
func vec64Op(d, n, m int, q uint32, g func(a, b uint64) uint64) func(*State) {
	if q == 0 {
		return func(s *State) { s.V[d] = [2]uint64{g(s.V[n][0], s.V[m][0]), 0} }
	}
	return func(s *State) {
		a, b := s.V[n], s.V[m]
		s.V[d] = [2]uint64{g(a[0], b[0]), g(a[1], b[1])}
	}
}

// laneHigh has the top bit of every lane of the given size set.
func laneHigh(size uint) uint64 {
	return [4]uint64{0x8080808080808080, 0x8000800080008000, 0x8000000080000000, 0x8000000000000000}[size]
}

// swarZeroLanes returns all-ones lanes where the lane of x is zero.
func swarZeroLanes(x uint64, size uint) uint64 {
	h := laneHigh(size)
	nz := ((x &^ h) + ^h | x) & h // lane top bit set iff lane nonzero
	return (^nz & h) >> ((8 << size) - 1) * emask(size)
}

// swarSameOp returns whole-half (SIMD within a register) versions of the
// most frequent integer three-same operations: ADD, SUB, CMEQ, CMTST.
func swarSameOp(opc, u uint32, size uint) func(a, b uint64) uint64 {
	h := laneHigh(size)
	switch opc<<1 | u {
	case 0b10000_0:
		return func(a, b uint64) uint64 { return (a&^h + b&^h) ^ (a^b)&h }
	case 0b10000_1:
		return func(a, b uint64) uint64 { return (a | h - b&^h) ^ (a^^b)&h }
	case 0b10001_1:
		return func(a, b uint64) uint64 { return swarZeroLanes(a^b, size) }
	case 0b10001_0:
		return func(a, b uint64) uint64 { return ^swarZeroLanes(a&b, size) }
	}
	return nil
}

// packEven gathers the low lanes of the double-width containers of x (lane
// size 8<<size) into the low 32 bits.
func packEven(x uint64, size uint) uint64 {
	switch size {
	case 0:
		x &= 0x00ff00ff00ff00ff
		x = (x | x>>8) & 0x0000ffff0000ffff
		x |= x >> 16
	case 1:
		x &= 0x0000ffff0000ffff
		x |= x >> 16
	}
	return x & 0xffffffff
}

// vecPair64Op computes a pairwise operation with SWAR: g receives the even
// and odd lanes of one 64-bit half, each zero-extended into containers of
// twice the lane size, and returns per-container results whose low lane-size
// bits are kept.
func vecPair64Op(d, n, m int, q uint32, size uint, g func(e, o uint64) uint64) func(*State) {
	esize := uint(8) << size
	lowMask := packMaskLow(size)
	half := func(w uint64) uint64 { return packEven(g(w&lowMask, w>>esize&lowMask), size) }
	if q == 0 {
		return func(s *State) { s.V[d] = [2]uint64{half(s.V[n][0]) | half(s.V[m][0])<<32, 0} }
	}
	return func(s *State) {
		a, b := s.V[n], s.V[m]
		s.V[d] = [2]uint64{half(a[0]) | half(a[1])<<32, half(b[0]) | half(b[1])<<32}
	}
}

// packMaskLow selects the low lane of every double-width container.
func packMaskLow(size uint) uint64 {
	return [3]uint64{0x00ff00ff00ff00ff, 0x0000ffff0000ffff, 0x00000000ffffffff}[size]
}

// swarMinMax returns per container the maximum (or minimum) of the lanes in
// e and o, which hold one zero-extended lane per double-width container.
func swarMinMax(e, o uint64, size uint, signed, isMax bool) uint64 {
	esize := uint(8) << size
	low := packMaskLow(size)
	top := low &^ (low >> 1) // top bit of each lane
	if signed {
		// Offset binary: unsigned order of the flipped lanes is signed order.
		e ^= top
		o ^= top
	}
	hb := (low << 1) &^ low   // bit esize of each container
	ge := ((e | hb) - o) & hb // set where e >= o
	mask := (ge >> esize) * emask(size)
	if !isMax {
		mask = ^mask & low
	}
	r := o ^ (e^o)&mask
	if signed {
		r ^= top
	}
	return r
}

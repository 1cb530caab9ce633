package arm

// Advanced SIMD: two-register misc, across lanes, three different, shift by
// immediate, by element, and the scalar class dispatcher.

import (
	"math/bits"
)

type unFn func(a uint64, s *State) uint64

func vecUn(d, n, elems int, size uint, f unFn) func(*State) {
	return vecOp(d, n, n, elems, size, func(a, _, _ uint64, s *State) uint64 { return f(a, s) })
}

// narrowOp writes f of each 2*size-bit element of Vn as a size-bit element to
// the lower half of Vd (upper half zeroed) or, for the "2" forms (q=1), to the
// upper half (lower half kept). elems = 1 gives the scalar form.
func narrowOp(d, n int, q uint32, elems int, size uint, f unFn) func(*State) {
	return func(s *State) {
		a := s.V[n]
		var r [2]uint64
		for i := 0; i < elems; i++ {
			eset(&r, i, size, f(eget(&a, i, size+1), s))
		}
		if q == 0 {
			s.V[d] = [2]uint64{r[0], 0}
		} else {
			s.V[d][1] = r[0]
		}
	}
}

// widenOp writes f of each size-bit element of the lower (q=0) or upper half
// of Vn as a 2*size-bit element of Vd.
func widenOp(d, n int, q uint32, size uint, f unFn) func(*State) {
	elems := 64 >> (size + 3)
	off := int(q) * elems
	return func(s *State) {
		a := s.V[n]
		var r [2]uint64
		for i := 0; i < elems; i++ {
			eset(&r, i, size+1, f(eget(&a, off+i, size), s))
		}
		s.V[d] = r
	}
}

func satUu(v uint64, size uint, s *State) uint64 {
	if v > emask(size) {
		s.FPSR |= fpQC
		return emask(size)
	}
	return v
}

func fpUnOp(f func(a, fpcr uint64, fl *uint64) uint64) unFn {
	return func(a uint64, s *State) uint64 { return f(a, s.FPCR, &s.FPSR) }
}

// fpMiscOp returns the FP two-register misc operation (a = size<1>).
func fpMiscOp(opc, u, a uint32, sz int) unFn {
	cmpZero := func(kind int, swap bool) unFn {
		return func(x uint64, s *State) uint64 {
			if swap {
				return boolMask(fpCompareVec(sz, 0, x, kind, false, s.FPCR, &s.FPSR))
			}
			return boolMask(fpCompareVec(sz, x, 0, kind, false, s.FPCR, &s.FPSR))
		}
	}
	width := uint(16) << sz
	cvt := func(rm int, unsigned bool) unFn {
		return func(x uint64, s *State) uint64 {
			return fpToFixed(sz, x, 0, unsigned, width, rm, s.FPCR, &s.FPSR)
		}
	}
	frint := func(rm int, exact bool) unFn {
		return func(x uint64, s *State) uint64 {
			r := rm
			if r < 0 {
				r = fpcrRMode(s.FPCR)
			}
			return fpRoundInt(sz, x, r, exact, s.FPCR, &s.FPSR)
		}
	}
	sb := fpSignBit(sz)
	switch opc<<2 | a<<1 | u {
	case 0b11000_0_0:
		return frint(rmNearest, false)
	case 0b11000_0_1:
		return frint(rmAway, false)
	case 0b11001_0_0:
		return frint(rmMinusInf, false)
	case 0b11001_0_1:
		return frint(-1, true)
	case 0b11000_1_0:
		return frint(rmPlusInf, false)
	case 0b11001_1_0:
		return frint(rmZero, false)
	case 0b11001_1_1:
		return frint(-1, false)
	case 0b11010_0_0, 0b11010_0_1:
		return cvt(rmNearest, u == 1)
	case 0b11011_0_0, 0b11011_0_1:
		return cvt(rmMinusInf, u == 1)
	case 0b11100_0_0, 0b11100_0_1:
		return cvt(rmAway, u == 1)
	case 0b11010_1_0, 0b11010_1_1:
		return cvt(rmPlusInf, u == 1)
	case 0b11011_1_0, 0b11011_1_1:
		return cvt(rmZero, u == 1)
	case 0b11101_0_0, 0b11101_0_1: // SCVTF, UCVTF
		unsigned := u == 1
		return func(x uint64, s *State) uint64 {
			if !unsigned && sz == fpS {
				x = uint64(int64(int32(uint32(x))))
			} else if !unsigned && sz == fpH {
				x = uint64(int64(int16(uint16(x))))
			}
			return fixedToFP(sz, x, unsigned, 0, s.FPCR, &s.FPSR)
		}
	case 0b01100_1_0:
		return cmpZero(cmpGT, false)
	case 0b01100_1_1:
		return cmpZero(cmpGE, false)
	case 0b01101_1_0:
		return cmpZero(cmpEQ, false)
	case 0b01101_1_1: // FCMLE: 0 >= x
		return cmpZero(cmpGE, true)
	case 0b01110_1_0: // FCMLT: 0 > x
		return cmpZero(cmpGT, true)
	case 0b01111_1_0:
		return func(x uint64, _ *State) uint64 { return x &^ sb }
	case 0b01111_1_1:
		return func(x uint64, _ *State) uint64 { return x ^ sb }
	case 0b11101_1_0:
		return fpUnOp(func(x, fpcr uint64, fl *uint64) uint64 { return fpRecipEstimate(sz, x, fpcr, fl) })
	case 0b11101_1_1:
		return fpUnOp(func(x, fpcr uint64, fl *uint64) uint64 { return fpRSqrtEstimate(sz, x, fpcr, fl) })
	case 0b11111_1_0: // FRECPX
		fb := fmtFbits[sz]
		emask := uint64(1)<<fmtEbits[sz] - 1
		return func(x uint64, s *State) uint64 {
			t, _, _ := fpUnpack(sz, x, s.FPCR, &s.FPSR)
			if t >= fpQNaN {
				return fpProcessNaN(sz, t, x, s.FPCR, &s.FPSR)
			}
			exp := x >> fb & emask
			if exp == 0 {
				exp = emask - 1
			} else {
				exp = ^exp & emask
			}
			return x&sb | exp<<fb
		}
	case 0b11111_1_1:
		return fpUnOp(func(x, fpcr uint64, fl *uint64) uint64 { return fpSqrt(sz, x, fpcr, fl) })
	}
	return nil
}

// decodeTwoMisc decodes AdvSIMD (scalar) two-register miscellaneous.
func decodeTwoMisc(insn uint32, scalar bool) func(*State) {
	q := insn >> 30 & 1
	u := insn >> 29 & 1
	size := uint(fld(insn, 22, 2))
	opc := fld(insn, 12, 5)
	d, n := int(fld(insn, 0, 5)), int(fld(insn, 5, 5))
	elems := (8 << q) >> size
	if scalar {
		elems = 1
	}
	m := emask(size)

	// Narrowing and widening forms.
	switch {
	case opc == 0b10010 || opc == 0b10100: // XTN, SQXTUN, SQXTN, UQXTN
		if size == 3 || (scalar && opc == 0b10010 && u == 0) {
			return nil
		}
		ne := 64 >> (size + 3)
		if scalar {
			ne = 1
			q = 0
		}
		var f unFn
		switch {
		case opc == 0b10010 && u == 0:
			f = func(a uint64, _ *State) uint64 { return a & m }
		case opc == 0b10010: // SQXTUN
			f = func(a uint64, s *State) uint64 { return satU(sext(a, size+1), size, s) }
		case u == 0:
			f = func(a uint64, s *State) uint64 { return satS(sext(a, size+1), size, s) }
		default:
			f = func(a uint64, s *State) uint64 { return satUu(a, size, s) }
		}
		return narrowOp(d, n, q, ne, size, f)
	case opc == 0b10011 && u == 1 && !scalar: // SHLL
		if size == 3 {
			return nil
		}
		sh := uint(8) << size
		return widenOp(d, n, q, size, func(a uint64, _ *State) uint64 { return a << sh })
	case opc == 0b10110 && size < 2: // FCVTN, FCVTXN
		if u == 0 && scalar || u == 1 && size == 0 {
			return nil
		}
		from := fpD - int(1-size)
		to := from - 1
		ne := 2 << (1 - size)
		if scalar {
			ne, q = 1, 0
		}
		if u == 1 { // FCVTXN: round to odd
			return narrowOp(d, n, q, ne, 2, func(a uint64, s *State) uint64 {
				return fpConvertR(fpD, fpS, a, rmOdd, s.FPCR, &s.FPSR)
			})
		}
		return narrowOp(d, n, q, ne, uint(to+1), func(a uint64, s *State) uint64 {
			return fpConvert(from, to, a, s.FPCR, &s.FPSR)
		})
	case opc == 0b10111 && size < 2 && u == 0 && !scalar: // FCVTL
		to := fpS + int(size)
		from := to - 1
		return widenOp(d, n, q, uint(from+1), func(a uint64, s *State) uint64 {
			return fpConvert(from, to, a, s.FPCR, &s.FPSR)
		})
	}

	// FP forms.
	if opc >= 0b11000 || (opc >= 0b01100 && opc <= 0b01111 && size >= 2) {
		if opc == 0b11100 && size >= 2 { // URECPE, URSQRTE
			if size != 2 || scalar {
				return nil
			}
			if u == 0 {
				return vecUn(d, n, elems, 2, func(a uint64, _ *State) uint64 { return uint64(urecpe(uint32(a))) })
			}
			return vecUn(d, n, elems, 2, func(a uint64, _ *State) uint64 { return uint64(ursqrte(uint32(a))) })
		}
		sz := uint(size & 1)
		if !scalar && sz == 1 && q == 0 {
			return nil
		}
		if scalar {
			switch opc {
			case 0b11000, 0b11001, 0b01111: // FRINT*, FABS/FNEG, FSQRT have no scalar AdvSIMD form
				return nil
			case 0b11111:
				if u == 1 {
					return nil
				}
			}
		} else if opc == 0b11111 && u == 0 {
			return nil // FRECPX is scalar only
		}
		f := fpMiscOp(opc, u, uint32(size>>1), fpS+int(sz))
		if f == nil {
			return nil
		}
		es := 2 + sz
		ne := (8 << q) >> es
		if scalar {
			ne = 1
		}
		return vecUn(d, n, ne, es, f)
	}

	if scalar {
		switch opc {
		case 0b00011, 0b00111: // SUQADD/USQADD, SQABS/SQNEG
		case 0b01000, 0b01001, 0b01010, 0b01011:
			if size != 3 {
				return nil
			}
		default:
			return nil
		}
	} else if size == 3 && q == 0 {
		return nil
	}
	switch opc<<1 | u {
	case 0b00000_0, 0b00000_1, 0b00001_0: // REV64, REV32, REV16
		grp := uint(3 - (opc<<1 | u)) // log2 bytes of the container: 3, 2, 1
		if size >= grp {
			return nil
		}
		per := 1 << (grp - size)
		return func(s *State) {
			a := s.V[n]
			var r [2]uint64
			for i := 0; i < elems; i++ {
				base := i &^ (per - 1)
				eset(&r, base+(per-1-(i-base)), size, eget(&a, i, size))
			}
			s.V[d] = r
		}
	case 0b00010_0, 0b00010_1, 0b00110_0, 0b00110_1: // [SU]ADDLP, [SU]ADALP
		if size == 3 {
			return nil
		}
		acc := opc == 0b00110
		signed := u == 0
		m2 := emask(size + 1)
		ne := elems / 2
		return func(s *State) {
			a, old := s.V[n], s.V[d]
			var r [2]uint64
			for i := 0; i < ne; i++ {
				x, y := eget(&a, 2*i, size), eget(&a, 2*i+1, size)
				if signed {
					x, y = uint64(sext(x, size)), uint64(sext(y, size))
				}
				v := x + y
				if acc {
					v += eget(&old, i, size+1)
				}
				eset(&r, i, size+1, v&m2)
			}
			s.V[d] = r
		}
	case 0b00011_0: // SUQADD: signed saturating Vd + unsigned Vn
		return vecOp(d, n, d, elems, size, func(a, b, _ uint64, s *State) uint64 {
			x := sext(b, size)
			if size < 3 {
				return satS(x+int64(a), size, s)
			}
			r := uint64(x) + a
			// Vd + Vn exceeds INT64_MAX: for Vd >= 0 the sum wraps or passes it; for
			// Vd < 0 it does when Vn > INT64_MAX + |Vd| (which fits in 64 bits).
			if x >= 0 && (r < a || r > 1<<63-1) || x < 0 && a > 1<<63-1+uint64(-x) {
				s.FPSR |= fpQC
				return 1<<63 - 1
			}
			return r
		})
	case 0b00011_1: // USQADD: unsigned saturating Vd + signed Vn
		return vecOp(d, n, d, elems, size, func(a, b, _ uint64, s *State) uint64 {
			x := sext(a, size)
			if size < 3 {
				return satU(int64(b)+x, size, s)
			}
			if x < 0 {
				if uint64(-x) > b {
					s.FPSR |= fpQC
					return 0
				}
				return b - uint64(-x)
			}
			r := b + uint64(x)
			if r < b {
				s.FPSR |= fpQC
				return ^uint64(0)
			}
			return r
		})
	case 0b00100_0: // CLS
		if size == 3 {
			return nil
		}
		return vecUn(d, n, elems, size, func(a uint64, _ *State) uint64 {
			x := uint64(sext(a, size))
			if int64(x) < 0 {
				x = ^x
			}
			return uint64(bits.LeadingZeros64(x) - 1 - (64 - (8 << size)))
		})
	case 0b00100_1: // CLZ
		if size == 3 {
			return nil
		}
		return vecUn(d, n, elems, size, func(a uint64, _ *State) uint64 {
			return uint64(bits.LeadingZeros64(a) - (64 - (8 << size)))
		})
	case 0b00101_0: // CNT
		if size != 0 {
			return nil
		}
		return vecUn(d, n, elems, 0, func(a uint64, _ *State) uint64 { return uint64(bits.OnesCount64(a)) })
	case 0b00101_1: // NOT, RBIT
		switch size {
		case 0:
			hm := ^uint64(0) * uint64(q)
			return func(s *State) { s.V[d] = [2]uint64{^s.V[n][0], ^s.V[n][1] & hm} }
		case 1:
			return vecUn(d, n, 8<<q, 0, func(a uint64, _ *State) uint64 { return uint64(bits.Reverse8(uint8(a))) })
		}
		return nil
	case 0b00111_0, 0b00111_1: // SQABS, SQNEG
		neg := u == 1
		return vecUn(d, n, elems, size, func(a uint64, s *State) uint64 {
			x := sext(a, size)
			if neg || x < 0 {
				if x == -1<<((8<<size)-1) {
					s.FPSR |= fpQC
					return m >> 1
				}
				return uint64(-x) & m
			}
			return a
		})
	case 0b01000_0:
		return vecUn(d, n, elems, size, func(a uint64, _ *State) uint64 { return boolMask(sext(a, size) > 0) })
	case 0b01000_1:
		return vecUn(d, n, elems, size, func(a uint64, _ *State) uint64 { return boolMask(sext(a, size) >= 0) })
	case 0b01001_0: // CMEQ #0
		if scalar {
			return func(s *State) { s.V[d] = [2]uint64{swarZeroLanes(s.V[n][0], 3), 0} }
		}
		return vec64Op(d, n, n, q, func(a, _ uint64) uint64 { return swarZeroLanes(a, size) })
	case 0b01001_1:
		return vecUn(d, n, elems, size, func(a uint64, _ *State) uint64 { return boolMask(sext(a, size) <= 0) })
	case 0b01010_0:
		return vecUn(d, n, elems, size, func(a uint64, _ *State) uint64 { return boolMask(sext(a, size) < 0) })
	case 0b01011_0: // ABS
		return vecUn(d, n, elems, size, func(a uint64, _ *State) uint64 {
			if x := sext(a, size); x < 0 {
				return uint64(-x) & m
			}
			return a
		})
	case 0b01011_1: // NEG
		return vecUn(d, n, elems, size, func(a uint64, _ *State) uint64 { return -a & m })
	}
	return nil
}

// fpReduce applies f pairwise as a balanced tree, as Reduce() does.
func fpReduce(v *[2]uint64, lo, cnt int, size uint, f laneFn, s *State) uint64 {
	if cnt == 1 {
		return eget(v, lo, size)
	}
	h := cnt / 2
	return f(fpReduce(v, lo, h, size, f, s), fpReduce(v, lo+h, h, size, f, s), 0, s)
}

func decodeAcross(insn uint32) func(*State) {
	q := insn >> 30 & 1
	u := insn >> 29 & 1
	size := uint(fld(insn, 22, 2))
	opc := fld(insn, 12, 5)
	d, n := int(fld(insn, 0, 5)), int(fld(insn, 5, 5))
	if opc == 0b01100 || opc == 0b01111 { // FMAXNMV, FMINNMV, FMAXV, FMINV
		if u != 1 || q != 1 || size&1 != 0 {
			return nil
		}
		isMax := size>>1 == 0
		numeric := opc == 0b01100
		f := func(a, b, _ uint64, s *State) uint64 { return fpMinMax(fpS, a, b, isMax, numeric, s.FPCR, &s.FPSR) }
		return func(s *State) {
			v := s.V[n]
			s.V[d] = [2]uint64{fpReduce(&v, 0, 4, 2, f, s), 0}
		}
	}
	if size == 3 || (size == 2 && q == 0) {
		return nil
	}
	elems := (8 << q) >> size
	signed := u == 0
	switch opc {
	case 0b00011: // SADDLV, UADDLV
		m := emask(size + 1)
		return func(s *State) {
			v := s.V[n]
			var sum uint64
			for i := 0; i < elems; i++ {
				x := eget(&v, i, size)
				if signed {
					x = uint64(sext(x, size))
				}
				sum += x
			}
			s.V[d] = [2]uint64{sum & m, 0}
		}
	case 0b11011: // ADDV
		if u != 0 {
			return nil
		}
		m := emask(size)
		return func(s *State) {
			v := s.V[n]
			var sum uint64
			for i := 0; i < elems; i++ {
				sum += eget(&v, i, size)
			}
			s.V[d] = [2]uint64{sum & m, 0}
		}
	case 0b01010, 0b11010: // [SU]MAXV, [SU]MINV
		f := minMaxLane(signed, opc == 0b01010, size)
		return func(s *State) {
			v := s.V[n]
			r := eget(&v, 0, size)
			for i := 1; i < elems; i++ {
				r = f(r, eget(&v, i, size), 0, s)
			}
			s.V[d] = [2]uint64{r, 0}
		}
	}
	return nil
}

// decodeThreeDiff decodes AdvSIMD three different (long, wide and narrow-high).
func decodeThreeDiff(insn uint32) func(*State) {
	q := insn >> 30 & 1
	u := insn >> 29 & 1
	size := uint(fld(insn, 22, 2))
	opc := fld(insn, 12, 4)
	d, n, m := int(fld(insn, 0, 5)), int(fld(insn, 5, 5)), int(fld(insn, 16, 5))
	if size == 3 {
		return nil
	}
	signed := u == 0
	ext := func(x uint64) uint64 {
		if signed {
			return uint64(sext(x, size))
		}
		return x
	}
	wm := emask(size + 1)
	elems := 64 >> (size + 3)
	off := int(q) * elems
	if opc == 0b0100 || opc == 0b0110 { // ADDHN, RADDHN, SUBHN, RSUBHN
		sub := opc == 0b0110
		var rnd uint64
		if u == 1 {
			rnd = 1 << ((8 << size) - 1)
		}
		sh := uint(8) << size
		return func(s *State) {
			a, b := s.V[n], s.V[m]
			var r [2]uint64
			for i := 0; i < elems; i++ {
				x, y := eget(&a, i, size+1), eget(&b, i, size+1)
				if sub {
					y = -y
				}
				eset(&r, i, size, ((x+y+rnd)&wm)>>sh)
			}
			if q == 0 {
				s.V[d] = [2]uint64{r[0], 0}
			} else {
				s.V[d][1] = r[0]
			}
		}
	}
	if opc == 0b1001 || opc == 0b1011 || opc == 0b1101 { // SQDMLAL, SQDMLSL, SQDMULL
		if u != 0 || size == 0 {
			return nil
		}
		return sqdmlOp(d, n, m, -1, off, elems, size, opc)
	}
	var f func(x, y, acc uint64) uint64
	wide := false
	switch opc {
	case 0b0000: // [SU]ADDL
		f = func(x, y, _ uint64) uint64 { return ext(x) + ext(y) }
	case 0b0001: // [SU]ADDW
		wide = true
		f = func(x, y, _ uint64) uint64 { return x + ext(y) }
	case 0b0010: // [SU]SUBL
		f = func(x, y, _ uint64) uint64 { return ext(x) - ext(y) }
	case 0b0011: // [SU]SUBW
		wide = true
		f = func(x, y, _ uint64) uint64 { return x - ext(y) }
	case 0b0101: // [SU]ABAL
		f = func(x, y, acc uint64) uint64 { return acc + absDiff(x, y, size, signed) }
	case 0b0111: // [SU]ABDL
		f = func(x, y, _ uint64) uint64 { return absDiff(x, y, size, signed) }
	case 0b1000: // [SU]MLAL
		f = func(x, y, acc uint64) uint64 { return acc + ext(x)*ext(y) }
	case 0b1010: // [SU]MLSL
		f = func(x, y, acc uint64) uint64 { return acc - ext(x)*ext(y) }
	case 0b1100: // [SU]MULL
		f = func(x, y, _ uint64) uint64 { return ext(x) * ext(y) }
	case 0b1110: // PMULL (8-bit)
		if u != 0 || size != 0 {
			return nil
		}
		f = func(x, y, _ uint64) uint64 { return pmul8(x, y) }
	default:
		return nil
	}
	return func(s *State) {
		a, b, old := s.V[n], s.V[m], s.V[d]
		var r [2]uint64
		for i := 0; i < elems; i++ {
			var x uint64
			if wide {
				x = eget(&a, i, size+1)
			} else {
				x = eget(&a, off+i, size)
			}
			eset(&r, i, size+1, f(x, eget(&b, off+i, size), eget(&old, i, size+1))&wm)
		}
		s.V[d] = r
	}
}

// sqdmull is the saturating doubling long multiply of two size-bit elements.
func sqdmull(a, b uint64, size uint, s *State) uint64 {
	x, y := sext(a, size), sext(b, size)
	minv := -int64(1) << ((8 << size) - 1)
	if x == minv && y == minv {
		s.FPSR |= fpQC
		return emask(size+1) >> 1
	}
	return uint64(2*x*y) & emask(size+1)
}

// sqdmlOp runs SQDMULL, SQDMLAL or SQDMLSL (opc 1101, 1001, 1011) over elems
// elements starting at element off of Vn and Vm (or element idx of Vm when
// idx >= 0).
func sqdmlOp(d, n, m, idx, off, elems int, size uint, opc uint32) func(*State) {
	return func(s *State) {
		a, b, old := s.V[n], s.V[m], s.V[d]
		var r [2]uint64
		for i := 0; i < elems; i++ {
			j := off + i
			if idx >= 0 {
				j = idx
			}
			p := sqdmull(eget(&a, off+i, size), eget(&b, j, size), size, s)
			switch opc & 0b0110 {
			case 0b0000: // SQDMLAL
				p = sqadd(eget(&old, i, size+1), p, size+1, s)
			case 0b0010: // SQDMLSL
				p = sqsub(eget(&old, i, size+1), p, size+1, s)
			}
			eset(&r, i, size+1, p)
		}
		s.V[d] = r
	}
}

// shrRound is a right shift by sh (1..64) of a value of the given size,
// arithmetic when signed, optionally rounding.
func shrRound(a uint64, sh uint, size uint, signed, rnd bool) uint64 {
	if signed {
		v := sext(a, size)
		r := v >> sh
		if rnd {
			r += (v >> (sh - 1)) & 1
		}
		return uint64(r)
	}
	r := a >> sh
	if rnd {
		r += (a >> (sh - 1)) & 1
	}
	return r
}

// decodeShiftImm decodes AdvSIMD (scalar) shift by immediate.
func decodeShiftImm(insn uint32, scalar bool) func(*State) {
	q := insn >> 30 & 1
	u := insn >> 29 & 1
	immh := fld(insn, 19, 4)
	immhb := uint(fld(insn, 16, 7))
	opc := fld(insn, 11, 5)
	d, n := int(fld(insn, 0, 5)), int(fld(insn, 5, 5))
	size := uint(bits.Len32(immh) - 1)
	esize := uint(8) << size
	shr := 2*esize - immhb
	shl := immhb - esize
	signed := u == 0
	m := emask(size)
	elems := (8 << q) >> size
	if scalar {
		elems = 1
	}
	narrow := opc >= 0b10000 && opc <= 0b10011
	if narrow {
		if size == 3 {
			return nil
		}
		ne := 64 >> (size + 3)
		if scalar {
			ne, q = 1, 0
		}
		rnd := opc&1 != 0
		var f unFn
		switch {
		case opc <= 0b10001 && u == 0: // SHRN, RSHRN
			if scalar {
				return nil
			}
			if !rnd {
				return shrnOp(d, n, q, size, shr)
			}
			f = func(a uint64, _ *State) uint64 { return shrRound(a, shr, size+1, false, rnd) & m }
		case opc <= 0b10001: // SQSHRUN, SQRSHRUN
			f = func(a uint64, s *State) uint64 {
				v := int64(shrRound(a, shr, size+1, true, rnd))
				return satU(v, size, s)
			}
		case signed: // SQSHRN, SQRSHRN
			f = func(a uint64, s *State) uint64 {
				return satS(int64(shrRound(a, shr, size+1, true, rnd)), size, s)
			}
		default: // UQSHRN, UQRSHRN
			f = func(a uint64, s *State) uint64 { return satUu(shrRound(a, shr, size+1, false, rnd), size, s) }
		}
		return narrowOp(d, n, q, ne, size, f)
	}
	if opc == 0b10100 { // SSHLL, USHLL
		if scalar || size == 3 {
			return nil
		}
		return widenOp(d, n, q, size, func(a uint64, _ *State) uint64 {
			if signed {
				a = uint64(sext(a, size))
			}
			return a << shl
		})
	}
	if !scalar && size == 3 && q == 0 {
		return nil
	}
	switch opc {
	case 0b11100, 0b11111: // SCVTF/UCVTF, FCVTZS/FCVTZU (fixed-point)
		if size < 2 {
			return nil
		}
		sz := fpS + int(size-2)
		fbits := shr
		if opc == 0b11100 {
			return vecUn(d, n, elems, size, func(a uint64, s *State) uint64 {
				if signed {
					a = uint64(sext(a, size))
				}
				return fixedToFP(sz, a, !signed, fbits, s.FPCR, &s.FPSR)
			})
		}
		return vecUn(d, n, elems, size, func(a uint64, s *State) uint64 {
			return fpToFixed(sz, a, fbits, !signed, esize, rmZero, s.FPCR, &s.FPSR)
		})
	case 0b01100, 0b01110: // SQSHLU, SQSHL/UQSHL (immediate)
		if opc == 0b01100 && u == 0 {
			return nil
		}
		toU := opc == 0b01100 || u == 1
		srcSigned := opc == 0b01100 || u == 0
		return vecUn(d, n, elems, size, func(a uint64, s *State) uint64 {
			if srcSigned {
				v := sext(a, size)
				if toU && v < 0 {
					s.FPSR |= fpQC
					return 0
				}
				if toU {
					r := uint64(v) << shl
					if r>>shl != uint64(v) || r > m {
						s.FPSR |= fpQC
						return m
					}
					return r
				}
				r := v << shl
				if r>>shl != v || sext(uint64(r)&m, size) != r {
					s.FPSR |= fpQC
					switch {
					case v < 0:
						return (m >> 1) + 1
					}
					return m >> 1
				}
				return uint64(r) & m
			}
			r := a << shl
			if r>>shl != a || r > m {
				s.FPSR |= fpQC
				return m
			}
			return r
		})
	}
	if scalar && size != 3 {
		return nil
	}
	switch opc<<1 | u {
	case 0b00000_0, 0b00000_1, 0b00100_0, 0b00100_1: // [SU]SHR, [SU]RSHR
		rnd := opc == 0b00100
		return vecUn(d, n, elems, size, func(a uint64, _ *State) uint64 { return shrRound(a, shr, size, signed, rnd) & m })
	case 0b00010_0, 0b00010_1, 0b00110_0, 0b00110_1: // [SU]SRA, [SU]RSRA
		rnd := opc == 0b00110
		return vecOp(d, n, d, elems, size, func(a, _, acc uint64, _ *State) uint64 {
			return (acc + shrRound(a, shr, size, signed, rnd)) & m
		})
	case 0b01000_1: // SRI
		mask := m >> shr
		return vecOp(d, n, d, elems, size, func(a, _, acc uint64, _ *State) uint64 {
			return acc&^mask | (a>>shr)&mask
		})
	case 0b01010_0: // SHL
		return vecUn(d, n, elems, size, func(a uint64, _ *State) uint64 { return (a << shl) & m })
	case 0b01010_1: // SLI
		mask := (m << shl) & m
		return vecOp(d, n, d, elems, size, func(a, _, acc uint64, _ *State) uint64 {
			return acc&^mask | (a<<shl)&mask
		})
	}
	return nil
}

// decodeIndexed decodes AdvSIMD (scalar) x indexed element.
func decodeIndexed(insn uint32, scalar bool) func(*State) {
	q := insn >> 30 & 1
	u := insn >> 29 & 1
	size := uint(fld(insn, 22, 2))
	opc := fld(insn, 12, 4)
	d, n := int(fld(insn, 0, 5)), int(fld(insn, 5, 5))
	h, l, mbit := fld(insn, 11, 1), fld(insn, 21, 1), fld(insn, 20, 1)
	var f laneFn
	if opc == 0b0001 || opc == 0b0101 || opc == 0b1001 { // FMLA, FMLS, FMUL, FMULX
		if size < 2 || (opc != 0b1001 && u == 1) {
			return nil
		}
		sz := int(size & 1)
		idx := int(h<<1 | l)
		if sz == 1 {
			if l != 0 || (q == 0 && !scalar) {
				return nil
			}
			idx = int(h)
		}
		fs := fpS + sz
		es := uint(2 + sz)
		m := int(fld(insn, 16, 5))
		switch {
		case opc == 0b0001:
			f = func(a, b, acc uint64, s *State) uint64 { return fpMulAdd(fs, acc, a, b, s.FPCR, &s.FPSR) }
		case opc == 0b0101:
			sb := fpSignBit(fs)
			f = func(a, b, acc uint64, s *State) uint64 { return fpMulAdd(fs, acc, a^sb, b, s.FPCR, &s.FPSR) }
		case u == 1:
			f = func(a, b, _ uint64, s *State) uint64 { return fpMulX(fs, a, b, s.FPCR, &s.FPSR) }
		default:
			f = func(a, b, _ uint64, s *State) uint64 { return fpMul(fs, a, b, s.FPCR, &s.FPSR) }
		}
		elems := (8 << q) >> es
		if scalar {
			elems = 1
		}
		return byElement(d, n, m, idx, elems, es, f)
	}
	var idx, m int
	switch size {
	case 1:
		idx, m = int(h<<2|l<<1|mbit), int(fld(insn, 16, 4))
	case 2:
		idx, m = int(h<<1|l), int(fld(insn, 16, 5))
	default:
		return nil
	}
	mask := emask(size)
	signed := u == 0
	if opc == 0b1100 || opc == 0b1101 { // SQDMULH, SQRDMULH
		if u != 0 {
			return nil
		}
		rnd := opc == 0b1101
		elems := (8 << q) >> size
		if scalar {
			elems = 1
		}
		return byElement(d, n, m, idx, elems, size, func(a, b, _ uint64, s *State) uint64 { return sqdmulh(a, b, size, rnd, s) })
	}
	if (opc == 0b0011 || opc == 0b0111 || opc == 0b1011) && u == 0 { // SQDMLAL, SQDMLSL, SQDMULL (by element)
		elems := 64 >> (size + 3)
		off := int(q) * elems
		if scalar {
			elems, off = 1, 0
		}
		// Map to the three-different opcodes SQDMLAL 1001, SQDMLSL 1011, SQDMULL 1101.
		return sqdmlOp(d, n, m, idx, off, elems, size, 0b1001+2*(opc>>2))
	}
	if scalar {
		return nil
	}
	switch opc<<1 | u {
	case 0b1000_0: // MUL
		f = func(a, b, _ uint64, _ *State) uint64 { return (a * b) & mask }
	case 0b0000_1: // MLA
		f = func(a, b, acc uint64, _ *State) uint64 { return (acc + a*b) & mask }
	case 0b0100_1: // MLS
		f = func(a, b, acc uint64, _ *State) uint64 { return (acc - a*b) & mask }
	}
	if f != nil {
		return byElement(d, n, m, idx, (8<<q)>>size, size, f)
	}
	var g func(x, y, acc uint64) uint64
	ext := func(x uint64) uint64 {
		if signed {
			return uint64(sext(x, size))
		}
		return x
	}
	switch opc {
	case 0b1010: // [SU]MULL
		g = func(x, y, _ uint64) uint64 { return ext(x) * ext(y) }
	case 0b0010: // [SU]MLAL
		g = func(x, y, acc uint64) uint64 { return acc + ext(x)*ext(y) }
	case 0b0110: // [SU]MLSL
		g = func(x, y, acc uint64) uint64 { return acc - ext(x)*ext(y) }
	default:
		return nil
	}
	elems := 64 >> (size + 3)
	off := int(q) * elems
	wm := emask(size + 1)
	return func(s *State) {
		a, b, old := s.V[n], s.V[m], s.V[d]
		y := eget(&b, idx, size)
		var r [2]uint64
		for i := 0; i < elems; i++ {
			eset(&r, i, size+1, g(eget(&a, off+i, size), y, eget(&old, i, size+1))&wm)
		}
		s.V[d] = r
	}
}

func byElement(d, n, m, idx, elems int, size uint, f laneFn) func(*State) {
	return func(s *State) {
		a, b, old := s.V[n], s.V[m], s.V[d]
		y := eget(&b, idx, size)
		var r [2]uint64
		for i := 0; i < elems; i++ {
			eset(&r, i, size, f(eget(&a, i, size), y, eget(&old, i, size), s))
		}
		s.V[d] = r
	}
}

// decodeSIMDScalar decodes the AdvSIMD scalar classes (insn bits 31:30 = 01).
func decodeSIMDScalar(insn uint32) func(*State) {
	d, n := int(fld(insn, 0, 5)), int(fld(insn, 5, 5))
	if insn>>24&1 != 0 {
		if insn>>10&1 == 0 {
			return decodeIndexed(insn, true)
		}
		if insn>>23&1 != 0 || fld(insn, 19, 4) == 0 {
			return nil
		}
		return decodeShiftImm(insn, true)
	}
	if insn>>21&1 != 0 {
		switch {
		case insn>>10&1 != 0:
			return decodeThreeSame(insn, true)
		case fld(insn, 10, 2) == 0b10 && fld(insn, 17, 4) == 0:
			return decodeTwoMisc(insn, true)
		case fld(insn, 10, 2) == 0b10 && fld(insn, 17, 4) == 0b1000:
			return decodeScalarPair(insn, d, n)
		case fld(insn, 10, 2) == 0: // SQDMLAL, SQDMLSL, SQDMULL (scalar)
			size := uint(fld(insn, 22, 2))
			opc := fld(insn, 12, 4)
			if insn>>29&1 != 0 || size == 0 || size == 3 || (opc != 0b1001 && opc != 0b1011 && opc != 0b1101) {
				return nil
			}
			return sqdmlOp(d, n, int(fld(insn, 16, 5)), -1, 0, 1, size, opc)
		}
		return nil
	}
	if fld(insn, 21, 3) == 0 && insn>>15&1 == 0 && insn>>10&1 != 0 {
		return decodeCopy(insn, true)
	}
	return nil
}

func decodeScalarPair(insn uint32, d, n int) func(*State) {
	u := insn >> 29 & 1
	size := uint(fld(insn, 22, 2))
	opc := fld(insn, 12, 5)
	if u == 0 {
		if opc != 0b11011 || size != 3 { // ADDP
			return nil
		}
		return func(s *State) { s.V[d] = [2]uint64{s.V[n][0] + s.V[n][1], 0} }
	}
	sz := int(size & 1)
	var f fpBinFn
	fs := fpS + sz
	switch opc<<1 | uint32(size>>1) {
	case 0b01100_0:
		f = fp2Op(6, fs) // FMAXNMP
	case 0b01100_1:
		f = fp2Op(7, fs) // FMINNMP
	case 0b01101_0:
		f = fp2Op(2, fs) // FADDP
	case 0b01111_0:
		f = fp2Op(4, fs) // FMAXP
	case 0b01111_1:
		f = fp2Op(5, fs) // FMINP
	default:
		return nil
	}
	es := uint(2 + sz)
	return func(s *State) {
		v := s.V[n]
		s.V[d] = [2]uint64{f(eget(&v, 0, es), eget(&v, 1, es), s.FPCR, &s.FPSR), 0}
	}
}

// shrnOp is SHRN/SHRN2 with SWAR: shift every double-width lane right and keep
// its low half.
func shrnOp(d, n int, q uint32, size uint, sh uint) func(*State) {
	half := func(w uint64) uint64 { return packEven(w>>sh, size) }
	if q == 0 {
		return func(s *State) { s.V[d] = [2]uint64{half(s.V[n][0]) | half(s.V[n][1])<<32, 0} }
	}
	return func(s *State) { s.V[d][1] = half(s.V[n][0]) | half(s.V[n][1])<<32 }
}

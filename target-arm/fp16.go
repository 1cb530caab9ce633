package arm

// ARMv8.2 FEAT_FP16: half-precision arithmetic, scalar and AdvSIMD, on models whose
// ID_AA64PFR0.FP/AdvSIMD fields are 1. The operations are the single/double ones of
// fpsimd*.go at format fpH, run through fp16Arith, which presents FPCR as the FP16
// arithmetic sees it: AHP ignored (it applies to conversions only) and FZ16 as the
// flush-to-zero control (inputs flushed without IDC, outputs with UFC).

const (
	fpcrFZ16 = 1 << 19
	// fpcrFlush16 is an internal FPCR bit (never architectural: MSR FPCR masks it) by
	// which fp16Arith passes FZ16 to the soft-float code.
	fpcrFlush16 = 1 << 63
)

// pfr0FP16 are the ID_AA64PFR0_EL1 FP and AdvSIMD fields for FP16 arithmetic.
const pfr0FP16 = 1<<16 | 1<<20

func (m *Model) hasFP16() bool { return m.PFR0>>16&0xf == 1 }

// fp16Arith wraps an FP16 arithmetic closure (nil stays nil).
func fp16Arith(f func(*State)) func(*State) {
	if f == nil {
		return nil
	}
	return func(s *State) {
		fpcr := s.FPCR
		s.FPCR = fpcr &^ fpcrAHP
		if fpcr&fpcrFZ16 != 0 {
			s.FPCR |= fpcrFlush16
		}
		f(s)
		s.FPCR = fpcr
	}
}

// decodeFP16 decodes the FEAT_FP16 encodings (nil: not one of them).
func decodeFP16(insn uint32) func(*State) {
	q := insn >> 30 & 1
	u := insn >> 29 & 1
	a := insn >> 23 & 1
	d, n, m := int(fld(insn, 0, 5)), int(fld(insn, 5, 5)), int(fld(insn, 16, 5))
	scalar := insn>>28&1 != 0
	elems := 4 << q
	if scalar {
		elems = 1
	}
	switch {
	case insn&0x5f200000 == 0x1e200000 && fld(insn, 22, 2) == 3 || insn&0x5f000000 == 0x1e000000 && fld(insn, 22, 2) == 3 && insn>>21&1 == 0:
		// Scalar FP, half precision (data processing 1/2 source, compare, select,
		// immediate, integer and fixed-point conversions); FCVT from half is ARMv8.0's.
		if g := decodeFPScalar(insn); g != nil {
			return g
		}
		return fp16Arith(decodeFPScalarH(insn, true))
	case insn&0x5f000000 == 0x1f000000 && fld(insn, 22, 2) == 3: // FMADD, FMSUB, FNMADD, FNMSUB
		return fp16Arith(decodeFP3SrcH(insn, true))
	case insn&0x9f60c400 == 0x0e400400, insn&0xdf60c400 == 0x5e400400: // three same
		opc := 0b11000 | fld(insn, 11, 3)
		f, pair := fpSameOp(opc, u, a, fpH)
		if f == nil {
			return nil
		}
		if scalar {
			if pair || opc == 0b11010 && u == 0 || opc == 0b11011 && u == 1 || opc == 0b11111 && u == 1 ||
				opc == 0b11000 || opc == 0b11001 || opc == 0b11110 {
				return nil
			}
			return fp16Arith(vecOp(d, n, m, 1, 1, f))
		}
		if pair {
			return fp16Arith(vecPairOp(d, n, m, elems, 1, f))
		}
		return fp16Arith(vecOp(d, n, m, elems, 1, f))
	case insn&0x9f7e0c00 == 0x0e780800, insn&0xdf7e0c00 == 0x5e780800: // two-register misc
		opc := fld(insn, 12, 5)
		if scalar {
			switch {
			case opc == 0b11000, opc == 0b11001, opc == 0b01111, opc == 0b11111 && u == 1:
				return nil
			}
		} else if opc == 0b11111 && u == 0 {
			return nil // FRECPX is scalar only
		}
		f := fpMiscOp(opc, u, a, fpH)
		if f == nil {
			return nil
		}
		return fp16Arith(vecUn(d, n, elems, 1, f))
	case insn&0xbf7e0c00 == 0x0e300800: // FMAXNMV, FMINNMV, FMAXV, FMINV (half)
		opc := fld(insn, 12, 5)
		if opc != 0b01100 && opc != 0b01111 {
			return nil
		}
		isMax, numeric := a == 0, opc == 0b01100
		f := func(x, y, _ uint64, s *State) uint64 { return fpMinMax(fpH, x, y, isMax, numeric, s.FPCR, &s.FPSR) }
		return fp16Arith(func(s *State) {
			v := s.V[n]
			s.V[d] = [2]uint64{fpReduce(&v, 0, elems, 1, f, s), 0}
		})
	case insn&0xff7e0c00 == 0x5e300800: // FMAXNMP, FADDP, FMAXP, FMINNMP, FMINP (scalar, half)
		var op uint32
		switch fld(insn, 12, 5)<<1 | a {
		case 0b01100_0:
			op = 6
		case 0b01100_1:
			op = 7
		case 0b01101_0:
			op = 2
		case 0b01111_0:
			op = 4
		case 0b01111_1:
			op = 5
		default:
			return nil
		}
		f := fp2Op(op, fpH)
		return fp16Arith(func(s *State) {
			v := s.V[n]
			s.V[d] = [2]uint64{f(eget(&v, 0, 1), eget(&v, 1, 1), s.FPCR, &s.FPSR), 0}
		})
	case insn&0x9fc00400 == 0x0f000000, insn&0xdfc00400 == 0x5f000000: // by element, size 00
		opc := fld(insn, 12, 4)
		if opc != 0b0001 && opc != 0b0101 && opc != 0b1001 || opc != 0b1001 && u == 1 {
			return nil
		}
		idx := int(fld(insn, 11, 1)<<2 | fld(insn, 21, 1)<<1 | fld(insn, 20, 1))
		var f laneFn
		switch {
		case opc == 0b0001:
			f = func(x, y, acc uint64, s *State) uint64 { return fpMulAdd(fpH, acc, x, y, s.FPCR, &s.FPSR) }
		case opc == 0b0101:
			f = func(x, y, acc uint64, s *State) uint64 { return fpMulAdd(fpH, acc, x^0x8000, y, s.FPCR, &s.FPSR) }
		case u == 1:
			f = func(x, y, _ uint64, s *State) uint64 { return fpMulX(fpH, x, y, s.FPCR, &s.FPSR) }
		default:
			f = func(x, y, _ uint64, s *State) uint64 { return fpMul(fpH, x, y, s.FPCR, &s.FPSR) }
		}
		return fp16Arith(byElement(d, n, int(fld(insn, 16, 4)), idx, elems, 1, f))
	case (insn&0x9f800400 == 0x0f000400 || insn&0xdf800400 == 0x5f000400) && fld(insn, 20, 3) == 1:
		// SCVTF/UCVTF, FCVTZS/FCVTZU (fixed-point), immh 001x: half precision
		opc := fld(insn, 11, 5)
		fbits := 32 - uint(fld(insn, 16, 7))
		unsigned := u == 1
		switch opc {
		case 0b11100:
			return fp16Arith(vecUn(d, n, elems, 1, func(x uint64, s *State) uint64 {
				if !unsigned {
					x = uint64(sext(x, 1))
				}
				return fixedToFP(fpH, x, unsigned, fbits, s.FPCR, &s.FPSR)
			}))
		case 0b11111:
			return fp16Arith(vecUn(d, n, elems, 1, func(x uint64, s *State) uint64 {
				return fpToFixed(fpH, x, fbits, unsigned, 16, rmZero, s.FPCR, &s.FPSR)
			}))
		}
	case insn&0xbff8fc00 == 0x0f00fc00: // FMOV (vector, immediate), half precision
		imm := vfpExpandImm(fpH, fld(insn, 16, 3)<<5|fld(insn, 5, 5)) * 0x0001000100010001
		hi := imm * uint64(q)
		return func(s *State) { s.V[d] = [2]uint64{imm, hi} }
	}
	return nil
}

package arm

// A64 scalar floating-point and Advanced SIMD data processing (fpsimd*.go).
//
// decodeFPSIMD turns one instruction word into a closure over its decoded
// fields; the closure only reads and writes State.X, V, FPCR, FPSR and NZCV.
// SIMD&FP loads and stores are not here (they belong to the load/store
// decoder). The Cryptographic Extension is included (fpsimd_crypto.go); the
// post-v8.0 additions (RDM, DotProd, SHA512/SHA3/SM3/SM4, FP16) decode as nil here
// and are decodeFPSIMDFeat's, for the models that have them (isaext.go).

import "math"

// decodeFPSIMD decodes one A64 instruction of the "data processing -- scalar
// floating-point and Advanced SIMD" group (insn bits 28:25 = x111) into a closure
// that executes it on a State. It returns nil for encodings that are unallocated
// or not implemented, which the caller turns into an UNDEF exception.
func decodeFPSIMD(insn uint32) func(s *State) {
	op := insn >> 24 & 0x1f
	switch {
	case insn&0xfffe0c00 == 0x4e280800:
		return decodeAES(insn)
	case insn&0xffe08c00 == 0x5e000000:
		return decodeSHA3(insn)
	case insn&0xfffe0c00 == 0x5e280800:
		return decodeSHA2(insn)
	case insn&0xbfe0fc00 == 0x0ee0e000:
		return decodePMULL64(insn)
	case insn>>30&1 == 0 && op == 0x1e:
		return decodeFPScalar(insn)
	case insn>>30&1 == 0 && op == 0x1f:
		return decodeFP3Src(insn)
	case insn>>31 == 0 && (op == 0x0e || op == 0x0f):
		return decodeSIMDVector(insn)
	case insn>>30 == 1 && (op == 0x1e || op == 0x1f):
		return decodeSIMDScalar(insn)
	}
	return nil
}

func fld(insn uint32, lo, n uint) uint32 { return insn >> lo & (1<<n - 1) }

func getX(s *State, r int) uint64 {
	if r == 31 {
		return 0
	}
	return s.X[r]
}

func setX(s *State, r int, v uint64) {
	if r != 31 {
		s.X[r] = v
	}
}

// ftypeSize maps the scalar FP "type" field to a format (-1: unallocated).
func ftypeSize(t uint32) int {
	switch t {
	case 0:
		return fpS
	case 1:
		return fpD
	case 3:
		return fpH
	}
	return -1
}

func fpMask(sz int) uint64 {
	switch sz {
	case fpH:
		return 0xffff
	case fpS:
		return 0xffffffff
	}
	return math.MaxUint64
}

func decodeFPScalar(insn uint32) func(*State) { return decodeFPScalarH(insn, false) }

// decodeFPScalarH is decodeFPScalar, with the half-precision arithmetic and
// conversions of ARMv8.2 FEAT_FP16 if fp16 (fp16.go wraps them).
func decodeFPScalarH(insn uint32, fp16 bool) func(*State) {
	if insn>>29&1 != 0 {
		return nil
	}
	d, n, m := int(fld(insn, 0, 5)), int(fld(insn, 5, 5)), int(fld(insn, 16, 5))
	if insn&0xfffefc00 == 0x9eae0000 { // FMOV Xd, Vn.D[1] / FMOV Vd.D[1], Xn
		if insn>>16&1 != 0 {
			return func(s *State) { s.V[d][1] = getX(s, n) }
		}
		return func(s *State) { setX(s, d, s.V[n][1]) }
	}
	sz := ftypeSize(fld(insn, 22, 2))
	if sz < 0 {
		return nil
	}
	if sz == fpH && !fp16 && insn&0x801e7c00 != 0x00024000 {
		// ARMv8.0 has no FP16 arithmetic: only FCVT from half precision.
		return nil
	}
	if insn>>21&1 == 0 {
		return decodeFPFixed(insn, sz, d, n, fp16)
	}
	if insn>>31 != 0 && fld(insn, 10, 6) != 0 {
		return nil
	}
	switch fld(insn, 10, 2) {
	case 1: // FCCMP, FCCMPE
		cond := fld(insn, 12, 4)
		nzcv := uint64(fld(insn, 0, 4)) << 28
		signal := insn>>4&1 != 0
		return func(s *State) {
			if condHolds(cond, s.NZCV) {
				s.NZCV = fpCompare(sz, s.V[n][0]&fpMask(sz), s.V[m][0]&fpMask(sz), signal, s.FPCR, &s.FPSR) << 28
			} else {
				s.NZCV = nzcv
			}
		}
	case 2:
		return decodeFP2Src(insn, sz, d, n, m)
	case 3: // FCSEL
		cond := fld(insn, 12, 4)
		mask := fpMask(sz)
		return func(s *State) {
			if condHolds(cond, s.NZCV) {
				s.V[d] = [2]uint64{s.V[n][0] & mask, 0}
			} else {
				s.V[d] = [2]uint64{s.V[m][0] & mask, 0}
			}
		}
	}
	switch {
	case fld(insn, 10, 3) == 0b100: // FMOV (scalar, immediate)
		if fld(insn, 5, 5) != 0 {
			return nil
		}
		v := vfpExpandImm(sz, fld(insn, 13, 8))
		return func(s *State) { s.V[d] = [2]uint64{v, 0} }
	case fld(insn, 10, 4) == 0b1000: // FCMP, FCMPE
		if fld(insn, 14, 2) != 0 || fld(insn, 0, 3) != 0 {
			return nil
		}
		signal := insn>>4&1 != 0
		mask := fpMask(sz)
		if insn>>3&1 != 0 {
			return func(s *State) {
				s.NZCV = fpCompare(sz, s.V[n][0]&mask, 0, signal, s.FPCR, &s.FPSR) << 28
			}
		}
		return func(s *State) {
			s.NZCV = fpCompare(sz, s.V[n][0]&mask, s.V[m][0]&mask, signal, s.FPCR, &s.FPSR) << 28
		}
	case fld(insn, 10, 5) == 0b10000:
		return decodeFP1Src(insn, sz, d, n)
	case fld(insn, 10, 6) == 0:
		return decodeFPInt(insn, sz, d, n, fp16)
	}
	return nil
}

// condHolds evaluates an A64 condition code against NZCV (bits 31:28).
func condHolds(cond uint32, nzcv uint64) bool {
	nf := nzcv>>31&1 != 0
	zf := nzcv>>30&1 != 0
	cf := nzcv>>29&1 != 0
	vf := nzcv>>28&1 != 0
	var r bool
	switch cond >> 1 {
	case 0:
		r = zf
	case 1:
		r = cf
	case 2:
		r = nf
	case 3:
		r = vf
	case 4:
		r = cf && !zf
	case 5:
		r = nf == vf
	case 6:
		r = nf == vf && !zf
	default:
		return true
	}
	if cond&1 != 0 {
		return !r
	}
	return r
}

// vfpExpandImm is VFPExpandImm: the 8-bit FMOV immediate as a value of format sz.
func vfpExpandImm(sz int, imm8 uint32) uint64 {
	e := fmtEbits[sz]
	f := fmtFbits[sz]
	sign := uint64(imm8 >> 7)
	b6 := uint64(imm8>>6) & 1
	exp := (1-b6)<<(e-1) | (b6*(1<<(e-3)-1))<<2 | uint64(imm8>>4)&3
	frac := uint64(imm8&15) << (f - 4)
	return sign<<(e+f) | exp<<f | frac
}

func decodeFP1Src(insn uint32, sz, d, n int) func(*State) {
	opc := fld(insn, 15, 6)
	mask := fpMask(sz)
	unary := func(f func(a, fpcr uint64, fl *uint64) uint64) func(*State) {
		return func(s *State) {
			s.V[d] = [2]uint64{f(s.V[n][0]&mask, s.FPCR, &s.FPSR), 0}
		}
	}
	switch opc {
	case 0: // FMOV register
		return func(s *State) { s.V[d] = [2]uint64{s.V[n][0] & mask, 0} }
	case 1: // FABS
		sb := fpSignBit(sz)
		return func(s *State) { s.V[d] = [2]uint64{s.V[n][0] & mask &^ sb, 0} }
	case 2: // FNEG
		sb := fpSignBit(sz)
		return func(s *State) { s.V[d] = [2]uint64{(s.V[n][0] & mask) ^ sb, 0} }
	case 3:
		return unary(func(a, fpcr uint64, fl *uint64) uint64 { return fpSqrt(sz, a, fpcr, fl) })
	case 4, 5, 7: // FCVT
		to := ftypeSize(opc & 3)
		if to == sz {
			return nil
		}
		return unary(func(a, fpcr uint64, fl *uint64) uint64 { return fpConvert(sz, to, a, fpcr, fl) })
	case 8, 9, 10, 11, 12, 14, 15: // FRINTN/P/M/Z/A/X/I
		rm := int(opc & 7)
		exact := rm == 6
		switch rm {
		case 4:
			rm = rmAway
		case 6, 7:
			rm = -1
		}
		return unary(func(a, fpcr uint64, fl *uint64) uint64 {
			r := rm
			if r < 0 {
				r = fpcrRMode(fpcr)
			}
			return fpRoundInt(sz, a, r, exact, fpcr, fl)
		})
	}
	return nil
}

func decodeFP2Src(insn uint32, sz, d, n, m int) func(*State) {
	f := fp2Op(fld(insn, 12, 4), sz)
	if f == nil {
		return nil
	}
	mask := fpMask(sz)
	return func(s *State) {
		s.V[d] = [2]uint64{f(s.V[n][0]&mask, s.V[m][0]&mask, s.FPCR, &s.FPSR), 0}
	}
}

type fpBinFn func(a, b, fpcr uint64, fl *uint64) uint64

// fp2Op returns the operation of the scalar FP data-processing (2 source) opcode.
func fp2Op(opc uint32, sz int) fpBinFn {
	switch opc {
	case 0:
		return func(a, b, fpcr uint64, fl *uint64) uint64 { return fpMul(sz, a, b, fpcr, fl) }
	case 1:
		return func(a, b, fpcr uint64, fl *uint64) uint64 { return fpDiv(sz, a, b, fpcr, fl) }
	case 2:
		return func(a, b, fpcr uint64, fl *uint64) uint64 { return fpAddSub(sz, a, b, false, fpcr, fl) }
	case 3:
		return func(a, b, fpcr uint64, fl *uint64) uint64 { return fpAddSub(sz, a, b, true, fpcr, fl) }
	case 4:
		return func(a, b, fpcr uint64, fl *uint64) uint64 { return fpMinMax(sz, a, b, true, false, fpcr, fl) }
	case 5:
		return func(a, b, fpcr uint64, fl *uint64) uint64 { return fpMinMax(sz, a, b, false, false, fpcr, fl) }
	case 6:
		return func(a, b, fpcr uint64, fl *uint64) uint64 { return fpMinMax(sz, a, b, true, true, fpcr, fl) }
	case 7:
		return func(a, b, fpcr uint64, fl *uint64) uint64 { return fpMinMax(sz, a, b, false, true, fpcr, fl) }
	case 8: // FNMUL
		sb := fpSignBit(sz)
		return func(a, b, fpcr uint64, fl *uint64) uint64 { return fpMul(sz, a, b, fpcr, fl) ^ sb }
	}
	return nil
}

func decodeFP3Src(insn uint32) func(*State) { return decodeFP3SrcH(insn, false) }

// decodeFP3SrcH is decodeFP3Src, with half precision if fp16.
func decodeFP3SrcH(insn uint32, fp16 bool) func(*State) {
	if insn>>29&7 != 0 {
		return nil
	}
	sz := ftypeSize(fld(insn, 22, 2))
	if sz < 0 || sz == fpH && !fp16 {
		return nil
	}
	d, n, m, a := int(fld(insn, 0, 5)), int(fld(insn, 5, 5)), int(fld(insn, 16, 5)), int(fld(insn, 10, 5))
	sb := fpSignBit(sz)
	var negA, negN uint64
	switch insn>>21&1<<1 | insn>>15&1 {
	case 1: // FMSUB
		negN = sb
	case 2: // FNMADD
		negA, negN = sb, sb
	case 3: // FNMSUB
		negA = sb
	}
	mask := fpMask(sz)
	return func(s *State) {
		r := fpMulAdd(sz, (s.V[a][0]&mask)^negA, (s.V[n][0]&mask)^negN, s.V[m][0]&mask, s.FPCR, &s.FPSR)
		s.V[d] = [2]uint64{r, 0}
	}
}

// decodeFPInt decodes conversions between FP and integer and FMOV (general).
func decodeFPInt(insn uint32, sz, d, n int, fp16 bool) func(*State) {
	sf := insn>>31 != 0
	width := uint(32)
	if sf {
		width = 64
	}
	rmode := fld(insn, 19, 2)
	opc := fld(insn, 16, 3)
	mask := fpMask(sz)
	switch {
	case opc == 6 || opc == 7: // FMOV
		toFP := opc == 7
		if rmode != 0 || sz == fpS && sf || sz == fpD && !sf || sz == fpH && !fp16 {
			return nil
		}
		if toFP {
			return func(s *State) { s.V[d] = [2]uint64{getX(s, n) & mask, 0} }
		}
		return func(s *State) { setX(s, d, s.V[n][0]&mask) }
	case rmode != 0 && opc >= 2 && opc <= 5:
		return nil
	case sz == fpH && !fp16:
		return nil
	case opc == 2 || opc == 3: // SCVTF, UCVTF
		unsigned := opc == 3
		return func(s *State) {
			x := getX(s, n)
			if !sf {
				if unsigned {
					x = uint64(uint32(x))
				} else {
					x = uint64(int64(int32(x)))
				}
			}
			s.V[d] = [2]uint64{fixedToFP(sz, x, unsigned, 0, s.FPCR, &s.FPSR), 0}
		}
	}
	// FCVT[NPMZ][SU], FCVTA[SU]
	unsigned := opc&1 != 0
	rm := int(rmode)
	if opc == 4 || opc == 5 {
		rm = rmAway
	}
	return func(s *State) {
		setX(s, d, fpToFixed(sz, s.V[n][0]&mask, 0, unsigned, width, rm, s.FPCR, &s.FPSR))
	}
}

// decodeFPFixed decodes conversions between FP and fixed-point.
func decodeFPFixed(insn uint32, sz, d, n int, fp16 bool) func(*State) {
	if sz == fpH && !fp16 {
		return nil
	}
	sf := insn>>31 != 0
	scale := fld(insn, 10, 6)
	if !sf && scale < 32 {
		return nil
	}
	fbits := 64 - uint(scale)
	width := uint(32)
	if sf {
		width = 64
	}
	switch fld(insn, 16, 5) {
	case 0b00010, 0b00011: // SCVTF, UCVTF
		unsigned := insn>>16&1 != 0
		return func(s *State) {
			x := getX(s, n)
			if !sf {
				if unsigned {
					x = uint64(uint32(x))
				} else {
					x = uint64(int64(int32(x)))
				}
			}
			s.V[d] = [2]uint64{fixedToFP(sz, x, unsigned, fbits, s.FPCR, &s.FPSR), 0}
		}
	case 0b11000, 0b11001: // FCVTZS, FCVTZU
		unsigned := insn>>16&1 != 0
		mask := fpMask(sz)
		return func(s *State) {
			setX(s, d, fpToFixed(sz, s.V[n][0]&mask, fbits, unsigned, width, rmZero, s.FPCR, &s.FPSR))
		}
	}
	return nil
}

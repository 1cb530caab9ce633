package arm

// Floating-point arithmetic with Arm semantics (FPCR rounding mode, FZ, DN; NaN
// propagation per FPProcessNaNs; cumulative FPSR exception flags).
//
// Values are passed as raw bit patterns of half (fpH), single (fpS) or double
// (fpD) precision. Every finite value of those formats is exactly representable
// as a float64, so operands are unpacked to float64. The common case (round to
// nearest, normal results) is computed with Go's float64 hardware arithmetic;
// the residual of each operation (exact via FMA / two-sum) tells whether it was
// inexact and lets single-precision results be rounded to odd first so that the
// final float32 rounding is a correct single rounding. Everything else (other
// rounding modes, overflow, tiny results, half precision) takes an exact path
// on math/big and one rounding in fpRound, mirroring the FPRound pseudocode
// (tininess detected before rounding, as Arm does).

import (
	"math"
	"math/big"
)

// Floating-point formats.
const (
	fpH = 0
	fpS = 1
	fpD = 2
)

// FPSR cumulative flags and FPCR controls.
const (
	fpIOC = 1 << 0
	fpDZC = 1 << 1
	fpOFC = 1 << 2
	fpUFC = 1 << 3
	fpIXC = 1 << 4
	fpIDC = 1 << 7
	fpQC  = 1 << 27

	fpcrFZ  = 1 << 24
	fpcrDN  = 1 << 25
	fpcrAHP = 1 << 26
)

// Rounding modes: the FPCR.RMode values, then the two extra ones the
// architecture uses for FRINTA/FCVTA* (ties away) and FCVTXN (round to odd).
const (
	rmNearest  = 0
	rmPlusInf  = 1
	rmMinusInf = 2
	rmZero     = 3
	rmAway     = 4
	rmOdd      = 5
)

func fpcrRMode(fpcr uint64) int { return int(fpcr>>22) & 3 }

var (
	fmtFbits = [3]uint{10, 23, 52}
	fmtEbits = [3]uint{5, 8, 11}
	fmtEmin  = [3]int{-14, -126, -1022}
)

// Operand classes as FPUnpack returns them.
const (
	fpZero   = iota
	fpNormal // nonzero finite, including denormals that were not flushed
	fpInf
	fpQNaN
	fpSNaN
)

func fpSignBit(sz int) uint64 { return 1 << (fmtFbits[sz] + fmtEbits[sz]) }

func fpDefaultNaN(sz int) uint64 {
	switch sz {
	case fpH:
		return 0x7e00
	case fpS:
		return 0x7fc00000
	}
	return 0x7ff8000000000000
}

func fpInfBits(sz int, neg bool) uint64 {
	e := uint64(1)<<fmtEbits[sz] - 1
	b := e << fmtFbits[sz]
	if neg {
		b |= fpSignBit(sz)
	}
	return b
}

func fpZeroBits(sz int, neg bool) uint64 {
	if neg {
		return fpSignBit(sz)
	}
	return 0
}

func fpMaxNormal(sz int, neg bool) uint64 { return fpInfBits(sz, neg) - 1 }

// fpUnpack classifies op and returns its value; denormals are flushed to zero
// (setting IDC) when FPCR.FZ is set, except for half precision.
func fpUnpack(sz int, op uint64, fpcr uint64, fl *uint64) (typ int, neg bool, v float64) {
	fb := fmtFbits[sz]
	eb := fmtEbits[sz]
	frac := op & (1<<fb - 1)
	exp := (op >> fb) & (1<<eb - 1)
	neg = op>>(fb+eb)&1 != 0
	switch {
	case exp == 0:
		if frac == 0 {
			return fpZero, neg, math.Copysign(0, signF(neg))
		}
		if fpcr&fpcrFZ != 0 && sz != fpH {
			*fl |= fpIDC
			return fpZero, neg, math.Copysign(0, signF(neg))
		}
		if fpcr&fpcrFlush16 != 0 && sz == fpH { // FZ16 flushes without IDC
			return fpZero, neg, math.Copysign(0, signF(neg))
		}
	case exp == 1<<eb-1 && !(sz == fpH && fpcr&fpcrAHP != 0):
		// (The alternative half-precision format has no infinities or NaNs.)
		if frac == 0 {
			return fpInf, neg, math.Inf(int(signF(neg)))
		}
		if frac>>(fb-1) != 0 {
			return fpQNaN, neg, 0
		}
		return fpSNaN, neg, 0
	}
	switch sz {
	case fpD:
		v = math.Float64frombits(op)
	case fpS:
		v = float64(math.Float32frombits(uint32(op)))
	default:
		if exp == 0 {
			v = math.Ldexp(float64(frac), -24)
		} else {
			v = math.Ldexp(float64(frac|1<<10), int(exp)-25)
		}
		if neg {
			v = -v
		}
	}
	return fpNormal, neg, v
}

func signF(neg bool) float64 {
	if neg {
		return -1
	}
	return 1
}

// fpPackExact packs v, which must be exactly representable in format sz.
func fpPackExact(sz int, v float64) uint64 {
	switch sz {
	case fpD:
		return math.Float64bits(v)
	case fpS:
		return uint64(math.Float32bits(float32(v)))
	}
	b := math.Float64bits(v)
	sign := (b >> 48) & 0x8000
	a := math.Abs(v)
	switch {
	case math.IsInf(a, 0):
		return sign | 0x7c00
	case a == 0:
		return sign
	case a < 0x1p-14:
		return sign | uint64(math.Ldexp(a, 24))
	}
	m, e := math.Frexp(a) // a = m * 2^e, m in [0.5,1)
	return sign | uint64(e+14)<<10 | (uint64(math.Ldexp(m, 11)) & 0x3ff)
}

// fpProcessNaN returns the quieted NaN (or the default NaN under FPCR.DN),
// signalling IOC for a signalling NaN.
func fpProcessNaN(sz int, typ int, op uint64, fpcr uint64, fl *uint64) uint64 {
	if typ == fpSNaN {
		*fl |= fpIOC
		op |= 1 << (fmtFbits[sz] - 1)
	}
	if fpcr&fpcrDN != 0 {
		return fpDefaultNaN(sz)
	}
	return op
}

// fpProcessNaNs2 implements FPProcessNaNs; ok reports that one operand was a NaN.
func fpProcessNaNs2(sz int, t1, t2 int, op1, op2 uint64, fpcr uint64, fl *uint64) (uint64, bool) {
	switch {
	case t1 == fpSNaN:
		return fpProcessNaN(sz, t1, op1, fpcr, fl), true
	case t2 == fpSNaN:
		return fpProcessNaN(sz, t2, op2, fpcr, fl), true
	case t1 == fpQNaN:
		return fpProcessNaN(sz, t1, op1, fpcr, fl), true
	case t2 == fpQNaN:
		return fpProcessNaN(sz, t2, op2, fpcr, fl), true
	}
	return 0, false
}

func fpProcessNaNs3(sz int, t1, t2, t3 int, op1, op2, op3 uint64, fpcr uint64, fl *uint64) (uint64, bool) {
	switch {
	case t1 == fpSNaN:
		return fpProcessNaN(sz, t1, op1, fpcr, fl), true
	case t2 == fpSNaN:
		return fpProcessNaN(sz, t2, op2, fpcr, fl), true
	case t3 == fpSNaN:
		return fpProcessNaN(sz, t3, op3, fpcr, fl), true
	case t1 == fpQNaN:
		return fpProcessNaN(sz, t1, op1, fpcr, fl), true
	case t2 == fpQNaN:
		return fpProcessNaN(sz, t2, op2, fpcr, fl), true
	case t3 == fpQNaN:
		return fpProcessNaN(sz, t3, op3, fpcr, fl), true
	}
	return 0, false
}

// fpRound rounds x (nonzero, finite) to format sz. When sticky is set, the true
// value lies strictly between x and the next value of larger magnitude at x's
// (much higher than sz's) precision.
func fpRound(sz int, x *big.Float, sticky bool, rmode int, fpcr uint64, fl *uint64) uint64 {
	neg := x.Signbit()
	fb := fmtFbits[sz]
	emin := fmtEmin[sz]
	ax := new(big.Float).SetPrec(x.Prec()).Abs(x)
	e := ax.MantExp(nil) - 1 // ax in [2^e, 2^(e+1))
	if e < emin && (fpcr&fpcrFZ != 0 && sz != fpH || fpcr&fpcrFlush16 != 0 && sz == fpH) {
		*fl |= fpUFC
		return fpZeroBits(sz, neg)
	}
	biased := e - emin + 1
	unit := e - int(fb)
	if biased <= 0 {
		biased = 0
		unit = emin - int(fb)
	}
	y := new(big.Float).SetPrec(ax.Prec()).SetMantExp(ax, -unit)
	m, _ := y.Uint64() // truncated toward zero; < 2^(fb+2)
	frac := new(big.Float).SetPrec(y.Prec()).Sub(y, new(big.Float).SetUint64(m))
	half := frac.Cmp(big.NewFloat(0.5))
	inexact := frac.Sign() != 0 || sticky
	up := false
	switch rmode {
	case rmNearest:
		up = half > 0 || (half == 0 && (sticky || m&1 != 0))
	case rmAway:
		up = half > 0 || half == 0
	case rmPlusInf:
		up = inexact && !neg
	case rmMinusInf:
		up = inexact && neg
	case rmOdd:
		if inexact {
			m |= 1
		}
	}
	if up {
		m++
	}
	var b uint64
	if biased == 0 {
		b = m // may carry into the lowest exponent bit, giving the minimum normal
	} else {
		b = uint64(biased-1)<<fb + m
	}
	maxExp := uint64(1)<<fmtEbits[sz] - 1
	if sz == fpH && fpcr&fpcrAHP != 0 {
		if b>>fb > maxExp {
			// Alternative half precision saturates with Invalid Operation.
			*fl |= fpIOC
			return fpSignBit(sz)*b2u(neg) | 0x7fff
		}
	} else if b>>fb >= maxExp {
		*fl |= fpOFC | fpIXC
		toInf := rmode == rmNearest || rmode == rmAway || (rmode == rmPlusInf && !neg) || (rmode == rmMinusInf && neg)
		if toInf {
			return fpInfBits(sz, neg)
		}
		return fpMaxNormal(sz, neg)
	}
	if inexact {
		*fl |= fpIXC
		if biased == 0 {
			*fl |= fpUFC
		}
	}
	if neg {
		b |= fpSignBit(sz)
	}
	return b
}

// fpRoundFloat rounds a float64 value (any finite value, including zero) to sz.
func fpRoundFloat(sz int, v float64, rmode int, fpcr uint64, fl *uint64) uint64 {
	if v == 0 {
		return fpZeroBits(sz, math.Signbit(v))
	}
	if sz == fpD && (math.Abs(v) >= 0x1p-1022 || fpcr&fpcrFZ == 0) {
		return math.Float64bits(v)
	}
	if sz == fpS && float64(float32(v)) == v && (math.Abs(v) >= 0x1p-126 || fpcr&fpcrFZ == 0) {
		return uint64(math.Float32bits(float32(v)))
	}
	return fpRound(sz, new(big.Float).SetFloat64(v), false, rmode, fpcr, fl)
}

type fpOp uint8

const (
	opAdd fpOp = iota
	opMul
	opDiv
	opSqrt
	opFMA // x*y + z
)

// fpCompute returns op(x, y, z) * 2^scale rounded to format sz. Operands are
// finite; a zero exact result gets the sign the rounding mode gives it (callers
// handle zero-by-zero cases whose sign depends on the operands).
func fpCompute(sz int, op fpOp, x, y, z float64, scale int, fpcr uint64, fl *uint64) uint64 {
	rmode := fpcrRMode(fpcr)
	if rmode == rmNearest && sz != fpH {
		if b, ok := fpComputeFast(sz, op, x, y, z, scale, fl); ok {
			return b
		}
	}
	return fpComputeExact(sz, op, x, y, z, scale, rmode, fpcr, fl)
}

func inSafeRange(v float64) bool {
	a := math.Abs(v)
	return a == 0 || (a >= 0x1p-900 && a <= 0x1p900)
}

func twoSumErr(a, b, s float64) float64 {
	bb := s - a
	return (a - (s - bb)) + (b - bb)
}

func fpComputeFast(sz int, op fpOp, x, y, z float64, scale int, fl *uint64) (uint64, bool) {
	if sz == fpD && !(inSafeRange(x) && inSafeRange(y) && inSafeRange(z)) {
		return 0, false
	}
	var r, e float64
	switch op {
	case opAdd:
		r = x + y
		e = twoSumErr(x, y, r)
	case opMul:
		r = x * y
		e = math.FMA(x, y, -r)
	case opDiv:
		r = x / y
		e = math.FMA(-r, y, x)
		if y < 0 {
			e = -e
		}
	case opSqrt:
		r = math.Sqrt(x)
		e = math.FMA(-r, r, x)
	case opFMA:
		if sz == fpS {
			p := x * y // exact: 48 significant bits
			r = p + z
			e = twoSumErr(p, z, r)
		} else {
			// The residual of a double FMA is not cheaply available; it
			// only matters for the IXC flag, so take the exact path unless
			// IXC is already set.
			if *fl&fpIXC == 0 {
				return 0, false
			}
			r = math.FMA(x, y, z)
		}
	}
	if r == 0 || math.IsInf(r, 0) || math.IsNaN(r) {
		return 0, false
	}
	if scale != 0 {
		r = math.Ldexp(r, scale)
	}
	if sz == fpD {
		if a := math.Abs(r); a < 0x1p-900 || a > 0x1p900 {
			return 0, false
		}
		if e != 0 {
			*fl |= fpIXC
		}
		return math.Float64bits(r), true
	}
	if e != 0 && math.Float64bits(r)&1 == 0 {
		// Round to odd so that the single-precision rounding below is exact
		// (and r compares with 2^-126 as the exact result does).
		if e > 0 {
			r = math.Nextafter(r, math.Inf(1))
		} else {
			r = math.Nextafter(r, math.Inf(-1))
		}
	}
	if a := math.Abs(r); a < 0x1p-126 || a > 0x1p127 {
		return 0, false
	}
	t := float32(r)
	if math.IsInf(float64(t), 0) {
		return 0, false
	}
	if e != 0 || float64(t) != r {
		*fl |= fpIXC
	}
	return uint64(math.Float32bits(t)), true
}

func fpComputeExact(sz int, op fpOp, x, y, z float64, scale int, rmode int, fpcr uint64, fl *uint64) uint64 {
	bx := new(big.Float).SetFloat64(x)
	by := new(big.Float).SetFloat64(y)
	r := new(big.Float)
	sticky := false
	switch op {
	case opAdd:
		r.SetPrec(2300).Add(bx, by)
	case opMul:
		r.SetPrec(128).Mul(bx, by)
	case opDiv:
		r.SetPrec(200).SetMode(big.ToZero).Quo(bx, by)
		sticky = r.Acc() != big.Exact
	case opSqrt:
		r.SetPrec(200).SetMode(big.ToZero).Sqrt(bx)
		sq := new(big.Float).SetPrec(500).Mul(r, r)
		switch sq.Cmp(bx) {
		case 1:
			// Sqrt may have rounded up: step down one unit at 200 bits.
			ulp := new(big.Float).SetMantExp(big.NewFloat(1), r.MantExp(nil)-200)
			r.Sub(r, ulp)
			sticky = true
		case -1:
			sticky = true
		}
	case opFMA:
		p := new(big.Float).SetPrec(128).Mul(bx, by)
		r.SetPrec(4600).Add(p, new(big.Float).SetFloat64(z))
	}
	if r.Sign() == 0 {
		return fpZeroBits(sz, rmode == rmMinusInf)
	}
	if scale != 0 {
		r.SetMantExp(r, scale)
	}
	return fpRound(sz, r, sticky, rmode, fpcr, fl)
}

// ---- Arithmetic operations (FPAdd, FPSub, FPMul, FPDiv, FPMulAdd, FPSqrt) ----

// fpQuick reports whether op is a normal number whose float64 value is far
// from overflow and underflow (for doubles: 2^-900..2^900), so that an
// operation on such operands under round-to-nearest can go straight to
// fpComputeFast without classification.
func fpQuick(sz int, op uint64) bool {
	switch sz {
	case fpD:
		return (op>>52&0x7ff)-124 < 1800
	case fpS:
		return (op>>23&0xff)-1 < 254
	}
	return false
}

func fpF64(sz int, op uint64) float64 {
	if sz == fpD {
		return math.Float64frombits(op)
	}
	return float64(math.Float32frombits(uint32(op)))
}

func fpAddSub(sz int, a, b uint64, sub bool, fpcr uint64, fl *uint64) uint64 {
	if fpcr&(3<<22) == 0 && fpQuick(sz, a) && fpQuick(sz, b) {
		y := fpF64(sz, b)
		if sub {
			y = -y
		}
		if r, ok := fpComputeFast(sz, opAdd, fpF64(sz, a), y, 0, 0, fl); ok {
			return r
		}
	}
	t1, s1, v1 := fpUnpack(sz, a, fpcr, fl)
	t2, s2, v2 := fpUnpack(sz, b, fpcr, fl)
	if r, ok := fpProcessNaNs2(sz, t1, t2, a, b, fpcr, fl); ok {
		return r
	}
	if sub {
		s2 = !s2
		v2 = -v2
	}
	switch {
	case t1 == fpInf && t2 == fpInf && s1 != s2:
		*fl |= fpIOC
		return fpDefaultNaN(sz)
	case t1 == fpInf:
		return fpInfBits(sz, s1)
	case t2 == fpInf:
		return fpInfBits(sz, s2)
	case t1 == fpZero && t2 == fpZero:
		if s1 == s2 {
			return fpZeroBits(sz, s1)
		}
		return fpZeroBits(sz, fpcrRMode(fpcr) == rmMinusInf)
	}
	return fpCompute(sz, opAdd, v1, v2, 0, 0, fpcr, fl)
}

func fpMul(sz int, a, b uint64, fpcr uint64, fl *uint64) uint64 {
	if fpcr&(3<<22) == 0 && fpQuick(sz, a) && fpQuick(sz, b) {
		if r, ok := fpComputeFast(sz, opMul, fpF64(sz, a), fpF64(sz, b), 0, 0, fl); ok {
			return r
		}
	}
	t1, s1, v1 := fpUnpack(sz, a, fpcr, fl)
	t2, s2, v2 := fpUnpack(sz, b, fpcr, fl)
	if r, ok := fpProcessNaNs2(sz, t1, t2, a, b, fpcr, fl); ok {
		return r
	}
	switch {
	case (t1 == fpInf && t2 == fpZero) || (t1 == fpZero && t2 == fpInf):
		*fl |= fpIOC
		return fpDefaultNaN(sz)
	case t1 == fpInf || t2 == fpInf:
		return fpInfBits(sz, s1 != s2)
	case t1 == fpZero || t2 == fpZero:
		return fpZeroBits(sz, s1 != s2)
	}
	return fpCompute(sz, opMul, v1, v2, 0, 0, fpcr, fl)
}

// fpMulX is FMULX: like FMUL but infinity times zero gives ±2.0.
func fpMulX(sz int, a, b uint64, fpcr uint64, fl *uint64) uint64 {
	t1, s1, _ := fpUnpack(sz, a, fpcr, fl)
	t2, s2, _ := fpUnpack(sz, b, fpcr, fl)
	if (t1 == fpInf && t2 == fpZero) || (t1 == fpZero && t2 == fpInf) {
		return fpPackExact(sz, 2*signF(s1 != s2))
	}
	return fpMul(sz, a, b, fpcr, fl)
}

func fpDiv(sz int, a, b uint64, fpcr uint64, fl *uint64) uint64 {
	if fpcr&(3<<22) == 0 && fpQuick(sz, a) && fpQuick(sz, b) {
		if r, ok := fpComputeFast(sz, opDiv, fpF64(sz, a), fpF64(sz, b), 0, 0, fl); ok {
			return r
		}
	}
	t1, s1, v1 := fpUnpack(sz, a, fpcr, fl)
	t2, s2, v2 := fpUnpack(sz, b, fpcr, fl)
	if r, ok := fpProcessNaNs2(sz, t1, t2, a, b, fpcr, fl); ok {
		return r
	}
	switch {
	case (t1 == fpInf && t2 == fpInf) || (t1 == fpZero && t2 == fpZero):
		*fl |= fpIOC
		return fpDefaultNaN(sz)
	case t1 == fpInf || t2 == fpZero:
		if t1 != fpInf {
			*fl |= fpDZC
		}
		return fpInfBits(sz, s1 != s2)
	case t1 == fpZero || t2 == fpInf:
		return fpZeroBits(sz, s1 != s2)
	}
	return fpCompute(sz, opDiv, v1, v2, 0, 0, fpcr, fl)
}

// fpMulAdd is FPMulAdd: addend + op1*op2 with a single rounding.
func fpMulAdd(sz int, addend, op1, op2 uint64, fpcr uint64, fl *uint64) uint64 {
	if fpcr&(3<<22) == 0 && fpQuick(sz, addend) && fpQuick(sz, op1) && fpQuick(sz, op2) {
		if r, ok := fpComputeFast(sz, opFMA, fpF64(sz, op1), fpF64(sz, op2), fpF64(sz, addend), 0, fl); ok {
			return r
		}
	}
	ta, sa, va := fpUnpack(sz, addend, fpcr, fl)
	t1, s1, v1 := fpUnpack(sz, op1, fpcr, fl)
	t2, s2, v2 := fpUnpack(sz, op2, fpcr, fl)
	inf1, inf2 := t1 == fpInf, t2 == fpInf
	zero1, zero2 := t1 == fpZero, t2 == fpZero
	infZero := (inf1 && zero2) || (zero1 && inf2)
	if r, ok := fpProcessNaNs3(sz, ta, t1, t2, addend, op1, op2, fpcr, fl); ok {
		if ta == fpQNaN && infZero {
			*fl |= fpIOC
			return fpDefaultNaN(sz)
		}
		return r
	}
	sp := s1 != s2
	infP := inf1 || inf2
	zeroP := zero1 || zero2
	switch {
	case infZero || (ta == fpInf && infP && sa != sp):
		*fl |= fpIOC
		return fpDefaultNaN(sz)
	case ta == fpInf:
		return fpInfBits(sz, sa)
	case infP:
		return fpInfBits(sz, sp)
	case ta == fpZero && zeroP:
		if sa == sp {
			return fpZeroBits(sz, sa)
		}
		return fpZeroBits(sz, fpcrRMode(fpcr) == rmMinusInf)
	case zeroP:
		return fpCompute(sz, opAdd, va, 0, 0, 0, fpcr, fl)
	}
	return fpCompute(sz, opFMA, v1, v2, va, 0, fpcr, fl)
}

func fpSqrt(sz int, a uint64, fpcr uint64, fl *uint64) uint64 {
	t, s, v := fpUnpack(sz, a, fpcr, fl)
	switch {
	case t >= fpQNaN:
		return fpProcessNaN(sz, t, a, fpcr, fl)
	case t == fpZero:
		return fpZeroBits(sz, s)
	case s:
		*fl |= fpIOC
		return fpDefaultNaN(sz)
	case t == fpInf:
		return fpInfBits(sz, false)
	}
	return fpCompute(sz, opSqrt, v, 0, 0, 0, fpcr, fl)
}

// fpRecipStep is FRECPS (2 - a*b) and, with rsqrt, FRSQRTS ((3 - a*b)/2).
func fpRecipStep(sz int, a, b uint64, rsqrt bool, fpcr uint64, fl *uint64) uint64 {
	a ^= fpSignBit(sz) // FPNeg(op1) comes before NaN processing
	t1, s1, v1 := fpUnpack(sz, a, fpcr, fl)
	t2, s2, v2 := fpUnpack(sz, b, fpcr, fl)
	if r, ok := fpProcessNaNs2(sz, t1, t2, a, b, fpcr, fl); ok {
		return r
	}
	c, scale := 2.0, 0
	if rsqrt {
		c, scale = 3.0, -1
	}
	switch {
	case (t1 == fpInf && t2 == fpZero) || (t1 == fpZero && t2 == fpInf):
		return fpPackExact(sz, c*math.Ldexp(1, scale))
	case t1 == fpInf || t2 == fpInf:
		return fpInfBits(sz, s1 != s2)
	case t1 == fpZero || t2 == fpZero:
		return fpPackExact(sz, c*math.Ldexp(1, scale))
	}
	return fpCompute(sz, opFMA, v1, v2, c, scale, fpcr, fl)
}

// ---- Min/max and comparisons ----

func fpMinMax(sz int, a, b uint64, isMax, numeric bool, fpcr uint64, fl *uint64) uint64 {
	t1, s1, v1 := fpUnpack(sz, a, fpcr, fl)
	t2, s2, v2 := fpUnpack(sz, b, fpcr, fl)
	if numeric {
		if t1 == fpQNaN && t2 != fpQNaN {
			t1, s1, v1 = fpInf, isMax, math.Inf(int(signF(isMax)))
			a = fpInfBits(sz, isMax)
		} else if t2 == fpQNaN && t1 != fpQNaN {
			t2, s2, v2 = fpInf, isMax, math.Inf(int(signF(isMax)))
			b = fpInfBits(sz, isMax)
		}
	}
	if r, ok := fpProcessNaNs2(sz, t1, t2, a, b, fpcr, fl); ok {
		return r
	}
	var neg bool
	var v float64
	if (v1 > v2) == isMax {
		neg, v = s1, v1
	} else {
		neg, v = s2, v2
	}
	if t1 == fpZero && t2 == fpZero {
		if isMax {
			neg = s1 && s2
		} else {
			neg = s1 || s2
		}
		return fpZeroBits(sz, neg)
	}
	if v1 == v2 {
		neg, v = s1, v1
	}
	if math.IsInf(v, 0) {
		return fpInfBits(sz, neg)
	}
	return fpRoundFloat(sz, v, fpcrRMode(fpcr), fpcr, fl)
}

// fpCompare returns NZCV (in bits 3:0) for FCMP/FCMPE.
func fpCompare(sz int, a, b uint64, signalAll bool, fpcr uint64, fl *uint64) uint64 {
	t1, _, v1 := fpUnpack(sz, a, fpcr, fl)
	t2, _, v2 := fpUnpack(sz, b, fpcr, fl)
	if t1 >= fpQNaN || t2 >= fpQNaN {
		if signalAll || t1 == fpSNaN || t2 == fpSNaN {
			*fl |= fpIOC
		}
		return 0b0011
	}
	switch {
	case v1 == v2:
		return 0b0110
	case v1 < v2:
		return 0b1000
	}
	return 0b0010
}

// Vector comparison kinds.
const (
	cmpEQ = iota
	cmpGE
	cmpGT
)

// fpCompareVec implements FPCompareEQ/GE/GT (abs for FACGE/FACGT).
func fpCompareVec(sz int, a, b uint64, kind int, abs bool, fpcr uint64, fl *uint64) bool {
	t1, _, v1 := fpUnpack(sz, a, fpcr, fl)
	t2, _, v2 := fpUnpack(sz, b, fpcr, fl)
	if t1 >= fpQNaN || t2 >= fpQNaN {
		if kind != cmpEQ || t1 == fpSNaN || t2 == fpSNaN {
			*fl |= fpIOC
		}
		return false
	}
	if abs {
		v1, v2 = math.Abs(v1), math.Abs(v2)
	}
	switch kind {
	case cmpEQ:
		return v1 == v2
	case cmpGE:
		return v1 >= v2
	}
	return v1 > v2
}

// ---- Rounding to integral and conversions ----

func roundIntF(v float64, rmode int) float64 {
	switch rmode {
	case rmNearest:
		return math.RoundToEven(v)
	case rmPlusInf:
		return math.Ceil(v)
	case rmMinusInf:
		return math.Floor(v)
	case rmAway:
		return math.Round(v)
	}
	return math.Trunc(v)
}

// fpRoundInt is FRINT*: round to an integral value in the same format.
func fpRoundInt(sz int, a uint64, rmode int, exact bool, fpcr uint64, fl *uint64) uint64 {
	t, s, v := fpUnpack(sz, a, fpcr, fl)
	switch t {
	case fpQNaN, fpSNaN:
		return fpProcessNaN(sz, t, a, fpcr, fl)
	case fpInf:
		return fpInfBits(sz, s)
	case fpZero:
		return fpZeroBits(sz, s)
	}
	r := roundIntF(v, rmode)
	if exact && r != v {
		*fl |= fpIXC
	}
	if r == 0 {
		return fpZeroBits(sz, s)
	}
	return fpPackExact(sz, r)
}

// fpToFixed converts to a (un)signed integer of width 32 or 64 with fbits
// fraction bits, saturating (NaN gives 0) and setting IOC on saturation.
func fpToFixed(sz int, a uint64, fbits uint, unsigned bool, width uint, rmode int, fpcr uint64, fl *uint64) uint64 {
	t, _, v := fpUnpack(sz, a, fpcr, fl)
	if t >= fpQNaN {
		*fl |= fpIOC
		return 0
	}
	v = math.Ldexp(v, int(fbits))
	r := roundIntF(v, rmode)
	var lo, hi float64
	if unsigned {
		lo, hi = 0, math.Ldexp(1, int(width))
	} else {
		lo, hi = -math.Ldexp(1, int(width)-1), math.Ldexp(1, int(width)-1)
	}
	mask := uint64(math.MaxUint64) >> (64 - width)
	switch {
	case r >= hi:
		*fl |= fpIOC
		if unsigned {
			return mask
		}
		return mask >> 1
	case r < lo:
		*fl |= fpIOC
		if unsigned {
			return 0
		}
		return (mask >> 1) + 1
	}
	if r != v {
		*fl |= fpIXC
	}
	if unsigned {
		return uint64(r)
	}
	return uint64(int64(r)) & mask
}

// fixedToFP converts a 64-bit integer (value with fbits fraction bits) to sz.
func fixedToFP(sz int, x uint64, unsigned bool, fbits uint, fpcr uint64, fl *uint64) uint64 {
	rmode := fpcrRMode(fpcr)
	neg := !unsigned && int64(x) < 0
	mag := x
	if neg {
		mag = -x
	}
	if mag == 0 {
		return 0
	}
	if mag < 1<<53 {
		v := math.Ldexp(float64(mag), -int(fbits))
		if neg {
			v = -v
		}
		return fpRoundFloat(sz, v, rmode, fpcr, fl)
	}
	b := new(big.Float).SetUint64(mag)
	b.SetMantExp(b, -int(fbits))
	if neg {
		b.Neg(b)
	}
	return fpRound(sz, b, false, rmode, fpcr, fl)
}

// fpConvert is FCVT between precisions.
func fpConvert(from, to int, a uint64, fpcr uint64, fl *uint64) uint64 {
	return fpConvertR(from, to, a, fpcrRMode(fpcr), fpcr, fl)
}

func fpConvertR(from, to int, a uint64, rmode int, fpcr uint64, fl *uint64) uint64 {
	t, s, v := fpUnpack(from, a, fpcr, fl)
	if to == fpH && fpcr&fpcrAHP != 0 {
		switch t {
		case fpQNaN, fpSNaN:
			*fl |= fpIOC
			return fpZeroBits(to, s)
		case fpInf:
			*fl |= fpIOC
			return fpSignBit(to)*b2u(s) | 0x7fff
		}
	}
	switch t {
	case fpQNaN, fpSNaN:
		if t == fpSNaN {
			*fl |= fpIOC
		}
		if fpcr&fpcrDN != 0 {
			return fpDefaultNaN(to)
		}
		frac := a & (1<<fmtFbits[from] - 1)
		ff, tf := fmtFbits[from], fmtFbits[to]
		if tf > ff {
			frac <<= tf - ff
		} else {
			frac >>= ff - tf
		}
		return fpInfBits(to, s) | frac | 1<<(tf-1)
	case fpInf:
		return fpInfBits(to, s)
	case fpZero:
		return fpZeroBits(to, s)
	}
	if to == fpH {
		// Half-precision results ignore FZ (FPRoundCV).
		fpcr &^= fpcrFZ
	}
	return fpRoundFloat(to, v, rmode, fpcr, fl)
}

// ---- Estimates ----

func recipEstimate(a uint64) uint64 {
	a = a*2 + 1
	b := (uint64(1) << 19) / a
	return (b + 1) / 2
}

func recipSqrtEstimate(a uint64) uint64 {
	if a < 256 {
		a = a*2 + 1
	} else {
		a = (a >> 1) << 1
		a = (a + 1) * 2
	}
	b := uint64(512)
	for a*(b+1)*(b+1) < 1<<28 {
		b++
	}
	return (b + 1) / 2
}

// fpRecipEstimate is FRECPE for single and double precision.
func fpRecipEstimate(sz int, a uint64, fpcr uint64, fl *uint64) uint64 {
	t, s, v := fpUnpack(sz, a, fpcr, fl)
	switch {
	case t >= fpQNaN:
		return fpProcessNaN(sz, t, a, fpcr, fl)
	case t == fpInf:
		return fpZeroBits(sz, s)
	case t == fpZero:
		*fl |= fpDZC
		return fpInfBits(sz, s)
	case (sz == fpS && math.Abs(v) < 0x1p-128) || (sz == fpD && math.Abs(v) < 0x1p-1024) || (sz == fpH && math.Abs(v) < 0x1p-16):
		rm := fpcrRMode(fpcr)
		*fl |= fpOFC | fpIXC
		if rm == rmNearest || (rm == rmPlusInf && !s) || (rm == rmMinusInf && s) {
			return fpInfBits(sz, s)
		}
		return fpMaxNormal(sz, s)
	case fpcr&fpcrFZ != 0 && ((sz == fpS && math.Abs(v) >= 0x1p126) || (sz == fpD && math.Abs(v) >= 0x1p1022)),
		fpcr&fpcrFlush16 != 0 && sz == fpH && math.Abs(v) >= 0x1p14:
		*fl |= fpUFC
		return fpZeroBits(sz, s)
	}
	var frac uint64
	var exp int
	if sz == fpH {
		frac = (a & (1<<10 - 1)) << 42
		exp = int(a>>10) & 0x1f
	} else if sz == fpS {
		frac = (a & (1<<23 - 1)) << 29
		exp = int(a>>23) & 0xff
	} else {
		frac = a & (1<<52 - 1)
		exp = int(a>>52) & 0x7ff
	}
	if exp == 0 {
		if frac>>51&1 == 0 {
			exp = -1
			frac = (frac << 2) & (1<<52 - 1)
		} else {
			frac = (frac << 1) & (1<<52 - 1)
		}
	}
	scaled := 1<<8 | frac>>44
	resultExp := 253 - exp
	if sz == fpD {
		resultExp = 2045 - exp
	} else if sz == fpH {
		resultExp = 29 - exp
	}
	est := recipEstimate(scaled)
	frac = (est & 0xff) << 44
	if resultExp == 0 {
		frac = 1<<51 | frac>>1
	} else if resultExp == -1 {
		frac = 1<<50 | frac>>2
		resultExp = 0
	}
	var r uint64
	if sz == fpH {
		r = uint64(resultExp&0x1f)<<10 | frac>>42
	} else if sz == fpS {
		r = uint64(resultExp&0xff)<<23 | frac>>29
	} else {
		r = uint64(resultExp&0x7ff)<<52 | frac
	}
	if s {
		r |= fpSignBit(sz)
	}
	return r
}

// fpRSqrtEstimate is FRSQRTE for single and double precision.
func fpRSqrtEstimate(sz int, a uint64, fpcr uint64, fl *uint64) uint64 {
	t, s, _ := fpUnpack(sz, a, fpcr, fl)
	switch {
	case t >= fpQNaN:
		return fpProcessNaN(sz, t, a, fpcr, fl)
	case t == fpZero:
		*fl |= fpDZC
		return fpInfBits(sz, s)
	case s:
		*fl |= fpIOC
		return fpDefaultNaN(sz)
	case t == fpInf:
		return 0
	}
	var frac uint64
	var exp int
	if sz == fpH {
		frac = (a & (1<<10 - 1)) << 42
		exp = int(a>>10) & 0x1f
	} else if sz == fpS {
		frac = (a & (1<<23 - 1)) << 29
		exp = int(a>>23) & 0xff
	} else {
		frac = a & (1<<52 - 1)
		exp = int(a>>52) & 0x7ff
	}
	if exp == 0 {
		for frac>>51&1 == 0 {
			frac = (frac << 1) & (1<<52 - 1)
			exp--
		}
		frac = (frac << 1) & (1<<52 - 1)
	}
	var scaled uint64
	if exp&1 == 0 {
		scaled = 1<<8 | frac>>44
	} else {
		scaled = 1<<7 | frac>>45
	}
	var resultExp int
	switch sz {
	case fpH:
		resultExp = (44 - exp) / 2
	case fpS:
		resultExp = (380 - exp) / 2
	default:
		resultExp = (3068 - exp) / 2
	}
	est := recipSqrtEstimate(scaled)
	if sz == fpH {
		return uint64(resultExp&0x1f)<<10 | (est&0xff)<<2
	}
	if sz == fpS {
		return uint64(resultExp&0xff)<<23 | (est&0xff)<<15
	}
	return uint64(resultExp&0x7ff)<<52 | (est&0xff)<<44
}

// urecpe/ursqrte: unsigned 32-bit estimates (URECPE, URSQRTE).
func urecpe(a uint32) uint32 {
	if a>>31 == 0 {
		return 0xffffffff
	}
	return uint32(recipEstimate(uint64(a>>23))) << 23
}

func ursqrte(a uint32) uint32 {
	if a>>30 == 0 {
		return 0xffffffff
	}
	return uint32(recipSqrtEstimate(uint64(a>>23))) << 23
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

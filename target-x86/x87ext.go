package x86

import (
	"encoding/binary"
	"math"
	"math/big"
)

// 80-bit extended precision for the x87 instructions where it differs from float64:
// loads and stores of m80, register moves, FILD/FIST of 64-bit integers, FCHS/FABS, the
// constants, and FADD/FSUB/FMUL/FDIV/FSQRT/FRNDINT at the precision (24, 53 or 64
// bits) and rounding the FCW selects, and compares of the exact values. A register's
// exact value lives in sseState.raw80 when its float64 (x87.go's st) cannot hold it;
// these helpers read and write the exact value and keep the float64 beside it.
// Arithmetic on finite operands goes through math/big at the target precision; NaN,
// infinity and division by zero keep x87.go's float64 rules.

func (r rawReg) exp() int      { return int(r.se & 0x7fff) }
func (r rawReg) neg() bool     { return r.se&0x8000 != 0 }
func (r rawReg) special() bool { return r.exp() == 0x7fff } // infinity or NaN
func (r rawReg) zero() bool    { return r.mant == 0 && r.exp() == 0 }

// extOf is the exact 80-bit value of f.
func extOf(f float64) rawReg {
	var b [10]byte
	putExt80(b[:], f)
	return rawReg{mant: binary.LittleEndian.Uint64(b[:]), se: binary.LittleEndian.Uint16(b[8:])}
}

// extAt is physical register p's exact value.
func (c *CPU) extAt(p uint8) rawReg {
	if c.sse.rawValid&(1<<p) != 0 {
		return c.sse.raw80[p]
	}
	return extOf(c.sse.st[p])
}

// setExtAt sets physical register p to r (the float64 to r rounded).
func (c *CPU) setExtAt(p uint8, r rawReg) {
	f := raw80Float(r.mant, r.se)
	c.sse.st[p] = f
	if extOf(f) == r {
		c.sse.rawValid &^= 1 << p
		return
	}
	c.sse.raw80[p] = r
	c.sse.rawValid |= 1 << p
}

func (c *CPU) extI(i byte) rawReg       { return c.extAt((c.sse.top + i) & 7) }
func (c *CPU) setExtI(i byte, r rawReg) { c.setExtAt((c.sse.top+i)&7, r) }

// fpushExt pushes r exactly (stack overflow as fpush).
func (c *CPU) fpushExt(r rawReg) {
	c.fpush(0)
	if c.sse.fsw&fswSF != 0 && c.sse.st[c.sse.top] != c.sse.st[c.sse.top] {
		return // overflow: fpush stored the default NaN
	}
	c.setExtI(0, r)
}

// extBig is r as a big.Float (r finite).
func extBig(r rawReg) *big.Float {
	f := new(big.Float).SetPrec(64)
	if r.mant == 0 {
		if r.neg() {
			f.Neg(f)
		}
		return f
	}
	e := r.exp()
	if e == 0 {
		e = 1 // denormal
	}
	f.SetMantExp(new(big.Float).SetUint64(r.mant), e-16383-63)
	if r.neg() {
		f.Neg(f)
	}
	return f
}

// bigExt is f (rounded already to at most 64 bits) as an 80-bit value; out of the
// exponent range it overflows to infinity or flushes to a denormal/zero.
func bigExt(f *big.Float) rawReg {
	var sign uint16
	if f.Signbit() {
		sign = 0x8000
	}
	if f.Sign() == 0 {
		return rawReg{se: sign}
	}
	m := new(big.Float)
	e := f.MantExp(m) // f = m * 2^e, 0.5 <= |m| < 1
	m.Abs(m)
	m.SetMantExp(m, 64) // an integer below 2^64
	mant, _ := m.Uint64()
	be := e - 1 + 16383
	switch {
	case be >= 0x7fff:
		return rawReg{mant: 1 << 63, se: sign | 0x7fff}
	case be <= 0:
		sh := uint(1 - be)
		if sh >= 64 {
			return rawReg{se: sign}
		}
		return rawReg{mant: mant >> sh, se: sign}
	}
	return rawReg{mant: mant, se: sign | uint16(be)}
}

// roundMode is the FCW rounding control as a big.Float mode.
func (c *CPU) roundMode() big.RoundingMode {
	return [4]big.RoundingMode{big.ToNearestEven, big.ToNegativeInf, big.ToPositiveInf, big.ToZero}[c.sse.fcw>>10&3]
}

// precision is the FCW precision control in mantissa bits (PC 01, reserved, as 64).
func (c *CPU) precision() uint {
	switch c.sse.fcw >> 8 & 3 {
	case 0:
		return 24
	case 2:
		return 53
	}
	return 64
}

// farithExt is farith (x87.go) on exact values at the FCW's precision and rounding.
func (c *CPU) farithExt(n byte, a, b rawReg) rawReg {
	if nan, ok := nanResult(a, b); ok {
		return nan
	}
	if a.special() || b.special() || (n == 6 && b.zero()) || (n == 7 && a.zero()) {
		return extOf(farith(n, raw80Float(a.mant, a.se), raw80Float(b.mant, b.se)))
	}
	x, y := extBig(a), extBig(b)
	r := new(big.Float).SetPrec(c.precision()).SetMode(c.roundMode())
	switch n {
	case 0:
		r.Add(x, y)
	case 1:
		r.Mul(x, y)
	case 4: // x + (-y): big's Sub with a zero operand rounds before negating, wrong
		// under directed rounding (measured)
		r.Add(x, new(big.Float).Neg(y))
	case 5:
		r.Add(y, new(big.Float).Neg(x))
	case 6:
		r.Quo(x, y)
	case 7:
		r.Quo(y, x)
	}
	if r.Sign() == 0 && (n == 0 || n == 4 || n == 5) {
		// An exact zero sum: -0 + -0 (after the subtraction's negation) is -0;
		// otherwise +0, or -0 when rounding toward -inf (IEEE 754; big gives +0).
		ex, ey := a.neg(), b.neg()
		switch n {
		case 4:
			ey = !ey
		case 5:
			ex = !ex
		}
		if a.zero() && b.zero() && ex == ey {
			return rawReg{se: map[bool]uint16{true: 0x8000}[ex]}
		}
		return rawReg{se: map[bool]uint16{true: 0x8000}[c.roundMode() == big.ToNegativeInf]}
	}
	return bigExt(r)
}

func (r rawReg) nan() bool { return r.special() && r.mant<<1 != 0 }

// defaultNaN is the x87's real indefinite.
var defaultNaN = rawReg{mant: 0xc000000000000000, se: 0xffff}

// nanResult applies the x87 NaN rules to an operation on a and b: one NaN operand gives
// it quieted; two give the one with the larger significand (the positive one when the
// significands are equal, as measured on the host).
func nanResult(a, b rawReg) (rawReg, bool) {
	const quiet = 1 << 62
	switch {
	case a.nan() && b.nan():
		switch {
		case a.mant|quiet > b.mant|quiet, a.mant|quiet == b.mant|quiet && !a.neg():
			b = a
		}
		b.mant |= quiet
		return b, true
	case a.nan():
		a.mant |= quiet
		return a, true
	case b.nan():
		b.mant |= quiet
		return b, true
	}
	return rawReg{}, false
}

// fsqrtExt is FSQRT on the exact value.
func (c *CPU) fsqrtExt(a rawReg) rawReg {
	if a.nan() {
		a.mant |= 1 << 62
		return a
	}
	if a.neg() && !a.zero() {
		return defaultNaN // invalid operation, masked
	}
	if a.special() || a.zero() || a.neg() {
		return extOf(math.Sqrt(raw80Float(a.mant, a.se)))
	}
	prec, mode := c.precision(), c.roundMode()
	x := extBig(a)
	r := new(big.Float).SetPrec(prec).SetMode(mode).Sqrt(x)
	// big's Sqrt is not always correctly rounded (measured: one ulp off rounding down
	// against the host); fix r by comparing exact squares with x.
	ulp := new(big.Float).SetMantExp(big.NewFloat(1), r.MantExp(nil)-int(prec))
	sq := func(v *big.Float) *big.Float { return new(big.Float).SetPrec(2*prec+8).Mul(v, v) }
	step := func(v *big.Float, k float64) *big.Float {
		d := new(big.Float).SetPrec(prec+8).Mul(ulp, big.NewFloat(k))
		return new(big.Float).SetPrec(prec+8).Add(v, d)
	}
	for i := 0; i < 2; i++ {
		switch mode {
		case big.ToNearestEven:
			if x.Cmp(sq(step(r, -0.5))) < 0 {
				r = step(r, -1)
			} else if x.Cmp(sq(step(r, 0.5))) > 0 {
				r = step(r, 1)
			}
		case big.ToPositiveInf:
			if sq(r).Cmp(x) < 0 {
				r = step(r, 1)
			} else if sq(step(r, -1)).Cmp(x) >= 0 {
				r = step(r, -1)
			}
		default: // toward zero and toward -inf agree for a positive root
			if sq(r).Cmp(x) > 0 {
				r = step(r, -1)
			} else if sq(step(r, 1)).Cmp(x) <= 0 {
				r = step(r, 1)
			}
		}
	}
	return bigExt(new(big.Float).SetPrec(prec).SetMode(mode).Set(r))
}

// roundIntExt rounds a finite a to an integer per the FCW rounding control (trunc:
// toward zero) and returns it as a big.Int.
func (c *CPU) roundIntExt(a rawReg, trunc bool) *big.Int {
	f := extBig(a)
	i, acc := f.Int(nil) // toward zero
	if acc == big.Exact || trunc {
		return i
	}
	fr := new(big.Float).Sub(f, new(big.Float).SetInt(i)) // the fraction, sign of f
	half := big.NewFloat(0.5)
	one := big.NewInt(1)
	switch c.sse.fcw >> 10 & 3 {
	case 0: // nearest even
		cmp := new(big.Float).Abs(fr).Cmp(half)
		if cmp > 0 || cmp == 0 && i.Bit(0) == 1 {
			if f.Signbit() {
				i.Sub(i, one)
			} else {
				i.Add(i, one)
			}
		}
	case 1: // down
		if f.Signbit() {
			i.Sub(i, one)
		}
	case 2: // up
		if !f.Signbit() {
			i.Add(i, one)
		}
	}
	return i
}

// frndintExt is FRNDINT on the exact value.
func (c *CPU) frndintExt(a rawReg) rawReg {
	if a.special() || a.zero() || a.exp() >= 16383+63 {
		return a
	}
	i := c.roundIntExt(a, false)
	if i.Sign() == 0 {
		return rawReg{se: a.se & 0x8000}
	}
	return bigExt(new(big.Float).SetPrec(64).SetInt(i))
}

// fistExt converts a to a size-byte integer (FIST/FISTP/FISTTP); NaN, infinity and out
// of range give the integer indefinite value and set IE.
func (c *CPU) fistExt(a rawReg, size int, trunc bool) uint64 {
	indef := uint64(1) << (8*size - 1)
	if a.special() {
		c.sse.fsw |= fswIE
		return indef
	}
	if a.zero() {
		return 0
	}
	i := c.roundIntExt(a, trunc)
	lim := new(big.Int).Lsh(big.NewInt(1), uint(8*size-1))
	if i.Cmp(lim) >= 0 || i.Cmp(new(big.Int).Neg(lim)) < 0 {
		c.sse.fsw |= fswIE
		return indef
	}
	return uint64(i.Int64()) & sizeMask(size)
}

// extInt64 is v exactly (FILD m64).
func extInt64(v int64) rawReg {
	if v == 0 {
		return rawReg{}
	}
	return bigExt(new(big.Float).SetPrec(64).SetInt64(v))
}

// fcompareExt is fcompare (x87.go) on exact values.
func (c *CPU) fcompareExt(a, b rawReg, unordered, setEFLAGS bool) {
	if a.special() || b.special() {
		c.fcompare(raw80Float(a.mant, a.se), raw80Float(b.mant, b.se), unordered, setEFLAGS)
		return
	}
	c.fcompare(float64(extBig(a).Cmp(extBig(b))), 0, unordered, setEFLAGS)
}

// x87Const are FLD1, FLDL2T, FLDL2E, FLDPI, FLDLG2, FLDLN2, FLDZ as the hardware holds
// them (64-bit mantissas, rounded to nearest).
var x87Const = [7]rawReg{
	{1 << 63, 0x3fff},
	{0xd49a784bcd1b8afe, 0x4000},
	{0xb8aa3b295c17f0bc, 0x3fff},
	{0xc90fdaa22168c235, 0x4000},
	{0x9a209a84fbcff799, 0x3ffd},
	{0xb17217f7d1cf79ac, 0x3ffe},
	{0, 0},
}

// extStoreReal is the m32/m64 image of a (FST/FSTP), rounded from the exact value per
// the FCW rounding control (overflow goes to infinity whatever the mode).
func (c *CPU) extStoreReal(a rawReg, size int) uint64 {
	if a.special() || a.zero() {
		f := raw80Float(a.mant, a.se)
		if size == 4 {
			return uint64(math.Float32bits(float32(f)))
		}
		return math.Float64bits(f)
	}
	prec, minExp := 53, -1074
	if size == 4 {
		prec, minExp = 24, -149
	}
	x, mode := extBig(a), c.roundMode()
	// A denormal result has fewer bits: those down to 2^minExp (big's Float32/Float64
	// would round it to nearest whatever the mode).
	if p := x.MantExp(nil) - minExp; p < prec {
		if p <= 0 {
			up := false
			switch mode {
			case big.ToNearestEven:
				half := new(big.Float).SetMantExp(big.NewFloat(1), minExp-1)
				up = p == 0 && new(big.Float).Abs(x).Cmp(half) > 0
			case big.ToPositiveInf:
				up = !x.Signbit()
			case big.ToNegativeInf:
				up = x.Signbit()
			}
			var bits uint64
			if up {
				bits = 1
			}
			if x.Signbit() {
				bits |= 1 << (8*uint(size) - 1)
			}
			return bits
		}
		prec = p
	}
	b := new(big.Float).SetPrec(uint(prec)).SetMode(mode).Set(x)
	if size == 4 {
		f, _ := b.Float32()
		return uint64(math.Float32bits(f))
	}
	f, _ := b.Float64()
	return math.Float64bits(f)
}

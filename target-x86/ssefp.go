package x86

import (
	"math"
)

// SSE/SSE2 floating point: arithmetic (ADD, SUB, MUL, DIV, SQRT, MIN, MAX in PS, PD,
// SS and SD forms), compares (CMPcc, COMIS, UCOMIS), conversions between single,
// double and 32/64-bit integers, SHUFPS/SHUFPD and MOVMSKPS/PD. NaN results follow the
// SDM (the first operand's NaN, quieted, else the second's; invalid operations give the
// negative default QNaN); results are rounded to nearest even, and MXCSR's exception
// flags are not updated (nor are unmasked SIMD exceptions raised): rounding control,
// DAZ and FTZ other than the reset value are not implemented.

const (
	defNaN64 = 0xfff8000000000000
	defNaN32 = 0xffc00000
)

func nan64(a, b uint64, r float64) uint64 {
	fa, fb := math.Float64frombits(a), math.Float64frombits(b)
	switch {
	case math.IsNaN(fa):
		return a | 1<<51
	case math.IsNaN(fb):
		return b | 1<<51
	case math.IsNaN(r):
		return defNaN64
	}
	return math.Float64bits(r)
}

func nan32(a, b uint32, r float32) uint32 {
	fa, fb := math.Float32frombits(a), math.Float32frombits(b)
	switch {
	case fa != fa:
		return a | 1<<22
	case fb != fb:
		return b | 1<<22
	case r != r:
		return defNaN32
	}
	return math.Float32bits(r)
}

// fpOp64 and fpOp32 perform arithmetic opcode o (0x51 sqrt, 0x58 add, 0x59 mul, 0x5c
// sub, 0x5d min, 0x5e div, 0x5f max) on raw lane bits.
func fpOp64(o byte, a, b uint64) uint64 {
	x, y := math.Float64frombits(a), math.Float64frombits(b)
	switch o {
	case 0x51:
		return nan64(b, b, math.Sqrt(y))
	case 0x58:
		return nan64(a, b, x+y)
	case 0x59:
		return nan64(a, b, x*y)
	case 0x5c:
		return nan64(a, b, x-y)
	case 0x5e:
		return nan64(a, b, x/y)
	case 0x5d:
		if x < y {
			return a
		}
		return b
	case 0x5f:
		if x > y {
			return a
		}
		return b
	}
	return 0
}

func fpOp32(o byte, a, b uint32) uint32 {
	x, y := math.Float32frombits(a), math.Float32frombits(b)
	switch o {
	case 0x51:
		return nan32(b, b, float32(math.Sqrt(float64(y))))
	case 0x58:
		return nan32(a, b, x+y)
	case 0x59:
		return nan32(a, b, x*y)
	case 0x5c:
		return nan32(a, b, x-y)
	case 0x5e:
		return nan32(a, b, x/y)
	case 0x5d:
		if x < y {
			return a
		}
		return b
	case 0x5f:
		if x > y {
			return a
		}
		return b
	}
	return 0
}

func cmpPred(p uint64, x, y float64) bool {
	un := x != x || y != y
	switch p & 7 {
	case 0:
		return x == y
	case 1:
		return x < y
	case 2:
		return x <= y
	case 3:
		return un
	case 4:
		return !(x == y)
	case 5:
		return !(x < y)
	case 6:
		return !(x <= y)
	}
	return !un
}

// cvtToInt converts f to a size-byte signed integer (truncating or rounding to
// nearest even); NaN and out-of-range values give the integer indefinite value.
func cvtToInt(f float64, size int, trunc bool) uint64 {
	if trunc {
		f = math.Trunc(f)
	} else {
		f = math.RoundToEven(f)
	}
	if size == 4 {
		if f != f || f >= 1<<31 || f < -(1<<31) {
			return 0x80000000
		}
		return uint64(uint32(int32(f)))
	}
	if f != f || f >= 1<<63 || f < -(1<<63) {
		return 1 << 63
	}
	return uint64(int64(f))
}

func lo32(v uint64) uint32 { return uint32(v) }

// translateSSEFP returns the helper of an SSE floating-point instruction, or nil.
func (c *CPU) translateSSEFP(in *insn, form int) op {
	o := in.opc
	reg := in.reg
	// src reads the r/m operand: a full register, or memory of the form's width.
	src := func(c *CPU, width int) ([2]uint64, bool) {
		if !in.hasMem {
			return c.sse.xmm[in.rm], true
		}
		ea := c.ea(in)
		switch width {
		case 4, 8:
			v, ok := c.ld(ea, width)
			return [2]uint64{v, 0}, ok
		}
		if ea&15 != 0 {
			c.raise(excGP, 0)
			return [2]uint64{}, false
		}
		lo, ok := c.ld(ea, 8)
		if !ok {
			return [2]uint64{}, false
		}
		hi, ok := c.ld(ea+8, 8)
		return [2]uint64{lo, hi}, ok
	}
	width := map[int]int{ssePS: 16, ssePD: 16, sseSS: 4, sseSD: 8}[form]
	wrap := func(h func(c *CPU) bool) op { return func(c *CPU) bool { return c.sseOK() && h(c) } }
	switch o {
	case 0x51, 0x58, 0x59, 0x5c, 0x5d, 0x5e, 0x5f:
		return wrap(func(c *CPU) bool {
			b, ok := src(c, width)
			if !ok {
				return false
			}
			d := &c.sse.xmm[reg]
			switch form {
			case sseSD:
				d[0] = fpOp64(o, d[0], b[0])
			case sseSS:
				d[0] = d[0]&^0xffffffff | uint64(fpOp32(o, lo32(d[0]), lo32(b[0])))
			case ssePD:
				d[0], d[1] = fpOp64(o, d[0], b[0]), fpOp64(o, d[1], b[1])
			default:
				for h := 0; h < 2; h++ {
					l := fpOp32(o, lo32(d[h]), lo32(b[h]))
					u := fpOp32(o, uint32(d[h]>>32), uint32(b[h]>>32))
					d[h] = uint64(l) | uint64(u)<<32
				}
			}
			return true
		})
	case 0x2e, 0x2f: // UCOMIS/COMIS
		if form >= sseSS {
			return nil
		}
		return wrap(func(c *CPU) bool {
			w := 4
			if form == ssePD {
				w = 8
			}
			b, ok := src(c, w)
			if !ok {
				return false
			}
			var x, y float64
			if w == 8 {
				x, y = math.Float64frombits(c.sse.xmm[reg][0]), math.Float64frombits(b[0])
			} else {
				x, y = float64(math.Float32frombits(lo32(c.sse.xmm[reg][0]))), float64(math.Float32frombits(lo32(b[0])))
			}
			var f uint64
			switch {
			case x != x || y != y:
				f = flagZF | flagPF | flagCF
			case x < y:
				f = flagCF
			case x == y:
				f = flagZF
			}
			c.setArith(f, flagsArith)
			return true
		})
	case 0xc2: // CMPPS/PD/SS/SD
		p := in.imm
		return wrap(func(c *CPU) bool {
			b, ok := src(c, width)
			if !ok {
				return false
			}
			d := &c.sse.xmm[reg]
			m64 := func(a, b uint64) uint64 {
				if cmpPred(p, math.Float64frombits(a), math.Float64frombits(b)) {
					return ^uint64(0)
				}
				return 0
			}
			m32 := func(a, b uint32) uint64 {
				if cmpPred(p, float64(math.Float32frombits(a)), float64(math.Float32frombits(b))) {
					return 0xffffffff
				}
				return 0
			}
			switch form {
			case sseSD:
				d[0] = m64(d[0], b[0])
			case sseSS:
				d[0] = d[0]&^0xffffffff | m32(lo32(d[0]), lo32(b[0]))
			case ssePD:
				d[0], d[1] = m64(d[0], b[0]), m64(d[1], b[1])
			default:
				for h := 0; h < 2; h++ {
					d[h] = m32(lo32(d[h]), lo32(b[h])) | m32(uint32(d[h]>>32), uint32(b[h]>>32))<<32
				}
			}
			return true
		})
	case 0x2a: // CVTSI2SS/SD
		if form != sseSS && form != sseSD {
			return nil
		}
		size := 4
		if in.rex&8 != 0 {
			size = 8
		}
		return wrap(func(c *CPU) bool {
			v, _, ok := c.readRM(in, size)
			if !ok {
				return false
			}
			iv := int64(sext(v, size))
			d := &c.sse.xmm[reg]
			if form == sseSD {
				d[0] = math.Float64bits(float64(iv))
			} else {
				d[0] = d[0]&^0xffffffff | uint64(math.Float32bits(float32(iv)))
			}
			return true
		})
	case 0x2c, 0x2d: // CVTTSS2SI/CVTTSD2SI, CVTSS2SI/CVTSD2SI
		if form != sseSS && form != sseSD {
			return nil
		}
		size := 4
		if in.rex&8 != 0 {
			size = 8
		}
		trunc := o == 0x2c
		return wrap(func(c *CPU) bool {
			b, ok := src(c, width)
			if !ok {
				return false
			}
			var f float64
			if form == sseSD {
				f = math.Float64frombits(b[0])
			} else {
				f = float64(math.Float32frombits(lo32(b[0])))
			}
			c.setReg(reg, size, in.rex, cvtToInt(f, size, trunc))
			return true
		})
	case 0x5a: // CVTSS2SD, CVTSD2SS, CVTPS2PD, CVTPD2PS
		return wrap(func(c *CPU) bool {
			w := width
			if form == ssePS {
				w = 8
			}
			b, ok := src(c, w)
			if !ok {
				return false
			}
			d := &c.sse.xmm[reg]
			f2d := func(v uint32) uint64 {
				f := math.Float32frombits(v)
				if f != f {
					return uint64(v>>31)<<63 | 0x7ff8000000000000 | uint64(v&0x3fffff)<<29
				}
				return math.Float64bits(float64(f))
			}
			d2f := func(v uint64) uint32 {
				f := math.Float64frombits(v)
				if f != f {
					return uint32(v>>63)<<31 | 0x7fc00000 | uint32(v>>29&0x3fffff)
				}
				return math.Float32bits(float32(f))
			}
			switch form {
			case sseSS:
				d[0] = f2d(lo32(b[0]))
			case sseSD:
				d[0] = d[0]&^0xffffffff | uint64(d2f(b[0]))
			case ssePS:
				d[0], d[1] = f2d(lo32(b[0])), f2d(uint32(b[0]>>32))
			default:
				d[0], d[1] = uint64(d2f(b[0]))|uint64(d2f(b[1]))<<32, 0
			}
			return true
		})
	case 0x5b: // CVTDQ2PS (none), CVTPS2DQ (66), CVTTPS2DQ (F3)
		if form == sseSD {
			return nil
		}
		return wrap(func(c *CPU) bool {
			b, ok := src(c, 16)
			if !ok {
				return false
			}
			var r [2]uint64
			for h := 0; h < 2; h++ {
				for k := uint(0); k < 64; k += 32 {
					v := uint32(b[h] >> k)
					var out uint32
					if form == ssePS {
						out = math.Float32bits(float32(int32(v)))
					} else {
						out = uint32(cvtToInt(float64(math.Float32frombits(v)), 4, form == sseSS))
					}
					r[h] |= uint64(out) << k
				}
			}
			c.sse.xmm[reg] = r
			return true
		})
	case 0xe6: // CVTDQ2PD (F3), CVTTPD2DQ (66), CVTPD2DQ (F2)
		if form == ssePS {
			return nil
		}
		return wrap(func(c *CPU) bool {
			w := 16
			if form == sseSS {
				w = 8
			}
			b, ok := src(c, w)
			if !ok {
				return false
			}
			if form == sseSS {
				c.sse.xmm[reg] = [2]uint64{math.Float64bits(float64(int32(b[0]))), math.Float64bits(float64(int32(b[0] >> 32)))}
				return true
			}
			t := form == ssePD
			l := cvtToInt(math.Float64frombits(b[0]), 4, t)
			u := cvtToInt(math.Float64frombits(b[1]), 4, t)
			c.sse.xmm[reg] = [2]uint64{l | u<<32, 0}
			return true
		})
	case 0xc6: // SHUFPS, SHUFPD
		if form >= sseSS {
			return nil
		}
		imm := in.imm
		return wrap(func(c *CPU) bool {
			b, ok := src(c, 16)
			if !ok {
				return false
			}
			a := c.sse.xmm[reg]
			if form == ssePD {
				c.sse.xmm[reg] = [2]uint64{a[imm&1], b[imm>>1&1]}
				return true
			}
			w := func(v [2]uint64, i uint64) uint64 { return v[i>>1] >> (32 * (i & 1)) & 0xffffffff }
			c.sse.xmm[reg] = [2]uint64{w(a, imm&3) | w(a, imm>>2&3)<<32, w(b, imm>>4&3) | w(b, imm>>6&3)<<32}
			return true
		})
	case 0x50: // MOVMSKPS/PD
		if form >= sseSS || in.hasMem {
			return nil
		}
		return wrap(func(c *CPU) bool {
			v := c.sse.xmm[in.rm]
			var m uint64
			if form == ssePD {
				m = v[0]>>63 | v[1]>>63<<1
			} else {
				m = v[0]>>31&1 | v[0]>>63<<1 | v[1]>>31&1<<2 | v[1]>>63<<3
			}
			c.R[reg] = m
			return true
		})
	}
	return nil
}

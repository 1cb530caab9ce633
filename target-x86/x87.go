package x86

import (
	"encoding/binary"
	"math"
	"math/bits"
)

// x87: the register stack, control/status/tag words, loads and stores of 32/64/80-bit
// reals and 16/32/64-bit integers, arithmetic, compares (FCOM*, FUCOM*, FCOMI*,
// FUCOMI*, FTST, FXAM), constants, FXCH, FCMOVcc, FCHS/FABS/FSQRT/FRNDINT/FSCALE,
// FNSTENV/FLDENV, FNSTSW, FNINIT/FNCLEX, FFREE and FISTTP (SSE3). The registers hold
// float64 values, with the exact 80-bit value beside them when a float64 cannot hold
// it (x87ext.go): m80 loads and stores, register moves, FILD/FIST of 64-bit integers,
// the constants, FADD/FSUB/FMUL/FDIV/FSQRT/FRNDINT at the FCW's precision and
// rounding, compares and the NaN rules are extended precision; FSCALE and FXAM work on
// the float64. Transcendental instructions (FSIN, FPTAN, FYL2X, ...) and FSAVE/FRSTOR
// raise #UD.

// ext80 converts an 80-bit extended real to float64.
func ext80(b []byte) float64 {
	mant := binary.LittleEndian.Uint64(b)
	se := binary.LittleEndian.Uint16(b[8:])
	sign := se >> 15
	exp := int(se & 0x7fff)
	var f float64
	switch {
	case exp == 0x7fff:
		if mant<<1 == 0 {
			f = math.Inf(1)
		} else {
			return math.Float64frombits(uint64(sign)<<63 | 0x7ff8000000000000 | mant<<1>>12)
		}
	case mant == 0:
		f = 0
	default:
		f = math.Ldexp(float64(mant), exp-16383-63)
	}
	if sign != 0 {
		f = -f
	}
	return f
}

// putExt80 stores f as an 80-bit extended real.
func putExt80(b []byte, f float64) {
	u := math.Float64bits(f)
	sign := uint16(u >> 63)
	exp := int(u >> 52 & 0x7ff)
	frac := u & (1<<52 - 1)
	var mant uint64
	var e uint16
	switch {
	case exp == 0x7ff:
		e, mant = 0x7fff, 1<<63|frac<<11
	case exp == 0 && frac == 0:
	case exp == 0: // denormal double: normalise
		n := bits.LeadingZeros64(frac) - 11
		mant = frac << (11 + n)
		e = uint16(1 - 1023 - n + 16383)
	default:
		mant, e = 1<<63|frac<<11, uint16(exp-1023+16383)
	}
	binary.LittleEndian.PutUint64(b, mant)
	binary.LittleEndian.PutUint16(b[8:], sign<<15|e)
}

const (
	fswIE = 1 << 0
	fswSF = 1 << 6
	fswES = 1 << 7
	fswC0 = 1 << 8
	fswC1 = 1 << 9
	fswC2 = 1 << 10
	fswC3 = 1 << 14
)

func (c *CPU) fswValue() uint16 { return c.sse.fsw&^0x3800 | uint16(c.sse.top)<<11 }

// stI returns ST(i) for reading or writing; from then on the float64 is the register's
// value (exact 80-bit contents an MMX write or FXRSTOR left are dropped: mmx.go).
func (c *CPU) stI(i byte) *float64 {
	p := (c.sse.top + i) & 7
	c.sse.rawValid &^= 1 << p
	return &c.sse.st[p]
}

func (c *CPU) fpush(v float64) {
	c.sse.top = (c.sse.top - 1) & 7
	if c.sse.ftw&(1<<c.sse.top) != 0 {
		c.sse.fsw |= fswIE | fswSF | fswC1 // stack overflow
		v = math.Float64frombits(defNaN64)
	}
	c.sse.st[c.sse.top] = v
	c.sse.rawValid &^= 1 << c.sse.top
	c.sse.ftw |= 1 << c.sse.top
}

// fchk records a stack underflow (IE, SF; C1 clear) if any of the ST(i) is empty.
func (c *CPU) fchk(regs ...byte) {
	for _, i := range regs {
		if c.sse.ftw&(1<<((c.sse.top+i)&7)) == 0 {
			c.sse.fsw = c.sse.fsw&^fswC1 | fswIE | fswSF
		}
	}
}

func (c *CPU) fpop() {
	c.sse.ftw &^= 1 << c.sse.top
	c.sse.top = (c.sse.top + 1) & 7
}

func (c *CPU) fcompare(a, b float64, unordered, setEFLAGS bool) {
	var cc uint16
	var f uint64
	switch {
	case a != a || b != b:
		cc, f = fswC0|fswC2|fswC3, flagZF|flagPF|flagCF
	case a < b:
		cc, f = fswC0, flagCF
	case a == b:
		cc, f = fswC3, flagZF
	}
	if setEFLAGS {
		c.setArith(f, flagsArith)
		c.sse.fsw &^= fswC1
		return
	}
	c.sse.fsw = c.sse.fsw&^(fswC0|fswC1|fswC2|fswC3) | cc
}

// farith performs arithmetic op n (FADD FMUL FCOM FCOMP FSUB FSUBR FDIV FDIVR) of a
// and b, returning a op b.
func farith(n byte, a, b float64) float64 {
	var r float64
	switch n {
	case 0:
		r = a + b
	case 1:
		r = a * b
	case 4:
		r = a - b
	case 5:
		r = b - a
	case 6:
		r = a / b
	case 7:
		r = b / a
	}
	if r != r && a == a && b == b {
		return math.Float64frombits(defNaN64)
	}
	return r
}

func (c *CPU) translateX87(in *insn, flags uint64) (op, bool) {
	o := in.opc
	n := in.reg & 7
	rm := in.rm & 7
	wrap := func(h func(c *CPU) bool) (op, bool) {
		return func(c *CPU) bool {
			if c.CR0&(cr0EM|cr0TS) != 0 {
				c.raise(excNM, -1)
				return false
			}
			return h(c)
		}, false
	}
	ldReal := func(c *CPU, size int) (float64, bool) {
		ea := c.ea(in)
		switch size {
		case 4:
			v, ok := c.ld(ea, 4)
			return float64(math.Float32frombits(uint32(v))), ok
		case 8:
			v, ok := c.ld(ea, 8)
			return math.Float64frombits(v), ok
		}
		lo, ok := c.ld(ea, 8)
		if !ok {
			return 0, false
		}
		hi, ok := c.ld(ea+8, 2)
		var b [10]byte
		binary.LittleEndian.PutUint64(b[:], lo)
		binary.LittleEndian.PutUint16(b[8:], uint16(hi))
		return ext80(b[:]), ok
	}
	ldInt := func(c *CPU, size int) (float64, bool) {
		v, ok := c.ld(c.ea(in), size)
		return float64(int64(sext(v, size))), ok
	}
	if in.hasMem {
		switch {
		case o == 0xd8 || o == 0xdc || o == 0xda || o == 0xde: // arithmetic with memory
			load := func(c *CPU) (float64, bool) {
				switch o {
				case 0xd8:
					return ldReal(c, 4)
				case 0xdc:
					return ldReal(c, 8)
				case 0xda:
					return ldInt(c, 4)
				}
				return ldInt(c, 2)
			}
			return wrap(func(c *CPU) bool {
				v, ok := load(c)
				if !ok {
					return false
				}
				if n == 2 || n == 3 {
					c.fcompareExt(c.extI(0), extOf(v), false, false)
					if n == 3 {
						c.fpop()
					}
					return true
				}
				c.setExtI(0, c.farithExt(n, c.extI(0), extOf(v)))
				return true
			})
		case o == 0xd9 && n == 0, o == 0xdd && n == 0, o == 0xdb && n == 5: // FLD m32/m64/m80
			size := map[byte]int{0xd9: 4, 0xdd: 8, 0xdb: 10}[o]
			return wrap(func(c *CPU) bool {
				if size == 10 { // exact (x87ext.go)
					ea := c.ea(in)
					lo, ok := c.ld(ea, 8)
					if !ok {
						return false
					}
					hi, ok := c.ld(ea+8, 2)
					if ok {
						c.fpushExt(rawReg{mant: lo, se: uint16(hi)})
					}
					return ok
				}
				v, ok := ldReal(c, size)
				if ok {
					c.fpush(v)
				}
				return ok
			})
		case o == 0xdb && n == 0, o == 0xdf && n == 0, o == 0xdf && n == 5: // FILD
			size := 4
			if o == 0xdf {
				size = 2
				if n == 5 {
					size = 8
				}
			}
			return wrap(func(c *CPU) bool {
				if size == 8 { // every int64 exactly (x87ext.go)
					v, ok := c.ld(c.ea(in), 8)
					if ok {
						c.fpushExt(extInt64(int64(v)))
					}
					return ok
				}
				v, ok := ldInt(c, size)
				if ok {
					c.fpush(v)
				}
				return ok
			})
		case (o == 0xd9 || o == 0xdd) && (n == 2 || n == 3), o == 0xdb && n == 7: // FST/FSTP
			size := map[byte]int{0xd9: 4, 0xdd: 8, 0xdb: 10}[o]
			pop := n != 2
			return wrap(func(c *CPU) bool {
				a, ea := c.extI(0), c.ea(in)
				ok := false
				if size == 10 {
					ok = c.st(ea+8, 2, uint64(a.se)) && c.st(ea, 8, a.mant)
				} else {
					ok = c.st(ea, size, c.extStoreReal(a, size))
				}
				if !ok {
					return false
				}
				if pop {
					c.fpop()
				}
				return true
			})
		case (o == 0xdb || o == 0xdd || o == 0xdf) && n >= 1 && n <= 3, o == 0xdf && n == 7: // FIST(P), FISTTP
			size := map[byte]int{0xdb: 4, 0xdd: 8, 0xdf: 2}[o]
			if o == 0xdf && n == 7 {
				size = 8
			}
			trunc, pop := n == 1, n != 2
			return wrap(func(c *CPU) bool {
				if !c.st(c.ea(in), size, c.fistExt(c.extI(0), size, trunc)) {
					return false
				}
				if pop {
					c.fpop()
				}
				return true
			})
		case o == 0xd9 && n == 5: // FLDCW
			return wrap(func(c *CPU) bool {
				v, ok := c.ld(c.ea(in), 2)
				if ok {
					c.sse.fcw = uint16(v)
				}
				return ok
			})
		case o == 0xd9 && n == 7: // FNSTCW
			return wrap(func(c *CPU) bool { return c.st(c.ea(in), 2, uint64(c.sse.fcw)) })
		case o == 0xdd && n == 7: // FNSTSW m16
			return wrap(func(c *CPU) bool { return c.st(c.ea(in), 2, uint64(c.fswValue())) })
		case o == 0xd9 && n == 6: // FNSTENV (32-bit protected-mode layout, 28 bytes)
			return wrap(func(c *CPU) bool {
				ea := c.ea(in)
				tag := uint64(0)
				for i := 0; i < 8; i++ {
					if c.sse.ftw&(1<<i) == 0 {
						tag |= 3 << (2 * i)
					}
				}
				vals := []uint64{uint64(c.sse.fcw) | 0xffff0000, uint64(c.fswValue()) | 0xffff0000, tag | 0xffff0000, 0, 0, 0, 0xffff0000}
				for i, v := range vals {
					if !c.st(ea+uint64(4*i), 4, v) {
						return false
					}
				}
				c.sse.fcw |= 0x3f // FNSTENV masks all exceptions
				return true
			})
		case o == 0xd9 && n == 4: // FLDENV
			return wrap(func(c *CPU) bool {
				ea := c.ea(in)
				cw, ok1 := c.ld(ea, 2)
				sw, ok2 := c.ld(ea+4, 2)
				tw, ok3 := c.ld(ea+8, 2)
				if !ok1 || !ok2 || !ok3 {
					return false
				}
				c.sse.fcw = uint16(cw)
				c.sse.fsw, c.sse.top = uint16(sw)&^0x3800, uint8(sw>>11&7)
				c.sse.ftw = 0
				for i := 0; i < 8; i++ {
					if tw>>(2*i)&3 != 3 {
						c.sse.ftw |= 1 << i
					}
				}
				return true
			})
		}
		return ud, true
	}
	sti := in.rm & 7
	switch o {
	case 0xd8: // ST0 = ST0 op ST(i); FCOM/FCOMP ST(i)
		return wrap(func(c *CPU) bool {
			if n == 2 || n == 3 {
				c.fcompareExt(c.extI(0), c.extI(sti), false, false)
				c.fchk(0, sti)
				if n == 3 {
					c.fpop()
				}
				return true
			}
			c.setExtI(0, c.farithExt(n, c.extI(0), c.extI(sti)))
			return true
		})
	case 0xdc, 0xde: // ST(i) = ST(i) op ST0 (DE: and pop)
		if o == 0xde && n == 3 {
			if sti != 1 {
				return ud, true
			}
			return wrap(func(c *CPU) bool { // FCOMPP
				c.fcompareExt(c.extI(0), c.extI(1), false, false)
				c.fpop()
				c.fpop()
				return true
			})
		}
		if n == 2 || n == 3 {
			return ud, true
		}
		// Register forms swap the roles: /4 is ST(i) = ST0 - ST(i) (FSUBR), /5 FSUB, ...
		m := n
		switch n {
		case 4:
			m = 5
		case 5:
			m = 4
		case 6:
			m = 7
		case 7:
			m = 6
		}
		pop := o == 0xde
		return wrap(func(c *CPU) bool {
			c.setExtI(sti, c.farithExt(m, c.extI(sti), c.extI(0)))
			if pop {
				c.fpop()
			}
			return true
		})
	case 0xd9:
		switch {
		case n == 0: // FLD ST(i)
			return wrap(func(c *CPU) bool { c.fpushExt(c.extI(sti)); return true })
		case n == 1: // FXCH
			return wrap(func(c *CPU) bool {
				a, b := c.extI(0), c.extI(sti)
				c.setExtI(0, b)
				c.setExtI(sti, a)
				return true
			})
		case in.rm&7 == 0 && n == 2: // FNOP
			return wrap(func(c *CPU) bool { return true })
		case n == 4:
			switch rm {
			case 0:
				return wrap(func(c *CPU) bool { a := c.extI(0); a.se ^= 0x8000; c.setExtI(0, a); return true })
			case 1:
				return wrap(func(c *CPU) bool { a := c.extI(0); a.se &^= 0x8000; c.setExtI(0, a); return true })
			case 4: // FTST
				return wrap(func(c *CPU) bool {
					c.fcompareExt(c.extI(0), rawReg{}, false, false)
					c.fchk(0)
					return true
				})
			case 5: // FXAM
				return wrap(func(c *CPU) bool {
					f := *c.stI(0)
					var cc uint16
					switch {
					case c.sse.ftw&(1<<c.sse.top) == 0:
						cc = fswC3 | fswC0
					case f != f:
						cc = fswC0
					case math.IsInf(f, 0):
						cc = fswC2 | fswC0
					case f == 0:
						cc = fswC3
					default:
						cc = fswC2
					}
					if math.Signbit(f) {
						cc |= fswC1
					}
					c.sse.fsw = c.sse.fsw&^(fswC0|fswC1|fswC2|fswC3) | cc
					return true
				})
			}
		case n == 5 && rm != 7: // constants
			k := x87Const[rm]
			return wrap(func(c *CPU) bool { c.fpushExt(k); return true })
		case n == 7:
			switch rm {
			case 2: // FSQRT
				return wrap(func(c *CPU) bool { c.setExtI(0, c.fsqrtExt(c.extI(0))); return true })
			case 4: // FRNDINT
				return wrap(func(c *CPU) bool { c.setExtI(0, c.frndintExt(c.extI(0))); return true })
			case 5: // FSCALE
				return wrap(func(c *CPU) bool {
					*c.stI(0) = math.Ldexp(*c.stI(0), int(math.Trunc(*c.stI(1))))
					return true
				})
			}
		}
		return ud, true
	case 0xda, 0xdb: // FCMOVcc, FUCOMPP, FNCLEX, FNINIT, FUCOMI, FCOMI
		switch {
		case o == 0xda && n == 5 && sti == 1: // FUCOMPP
			return wrap(func(c *CPU) bool {
				c.fcompareExt(c.extI(0), c.extI(1), true, false)
				c.fpop()
				c.fpop()
				return true
			})
		case n < 4:
			cc := [4]byte{2, 4, 6, 0xa}[n] // B, E, BE, P
			if o == 0xdb {
				cc |= 1 // NB, NE, NBE, NP
			}
			return wrap(func(c *CPU) bool {
				if cond(c.RFLAGS, cc) {
					c.setExtI(0, c.extI(sti))
				}
				return true
			})
		case o == 0xdb && n == 4 && rm == 2: // FNCLEX
			return wrap(func(c *CPU) bool { c.sse.fsw &^= 0x80ff; return true })
		case o == 0xdb && n == 4 && rm == 3: // FNINIT
			return wrap(func(c *CPU) bool {
				c.sse.fcw, c.sse.fsw, c.sse.ftw, c.sse.top = 0x37f, 0, 0, 0
				return true
			})
		case o == 0xdb && (n == 5 || n == 6):
			return wrap(func(c *CPU) bool { c.fcompareExt(c.extI(0), c.extI(sti), n == 5, true); return true })
		}
		return ud, true
	case 0xdd:
		switch n {
		case 0: // FFREE
			return wrap(func(c *CPU) bool { c.sse.ftw &^= 1 << ((c.sse.top + sti) & 7); return true })
		case 2, 3: // FST/FSTP ST(i)
			return wrap(func(c *CPU) bool {
				c.setExtI(sti, c.extI(0))
				if n == 3 {
					c.fpop()
				}
				return true
			})
		case 4, 5: // FUCOM/FUCOMP
			return wrap(func(c *CPU) bool {
				c.fcompareExt(c.extI(0), c.extI(sti), true, false)
				if n == 5 {
					c.fpop()
				}
				return true
			})
		}
		return ud, true
	case 0xdf:
		switch {
		case n == 4 && rm == 0: // FNSTSW AX
			return wrap(func(c *CPU) bool { c.setReg(0, 2, 1, uint64(c.fswValue())); return true })
		case n == 5 || n == 6: // FUCOMIP, FCOMIP
			return wrap(func(c *CPU) bool {
				c.fcompareExt(c.extI(0), c.extI(sti), n == 5, true)
				c.fpop()
				return true
			})
		}
	}
	return ud, true
}

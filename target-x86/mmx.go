package x86

import "math"

// MMX and the SSE/SSE2 instructions on MMX registers (the 0F 6x/7x/Cx/Dx-Fx forms with
// no mandatory prefix): moves (MOVD/MOVQ to and from GPRs and memory, MOVNTQ,
// MASKMOVQ), integer arithmetic, compares, logic, shifts, packs and unpacks, PSHUFW,
// PINSRW/PEXTRW, PMOVMSKB, PSADBW, PADDQ/PSUBQ/PMULUDQ. The 64-bit lane operations
// reuse the SSE2 ones (sse.go, sse3.go) on the low half of a 128-bit value.
//
// The eight MMX registers are the mantissas of the x87 physical registers R0-R7: an
// MMX write stores the value with sign and exponent all ones (SDM vol. 1 9.5.1); every
// MMX instruction but EMMS makes TOP 0 and all eight tags valid. The x87 registers are
// float64 here (x87.go), which cannot hold such an 80-bit value, so a register written
// by MMX (or restored by FXRSTOR with a value a float64 cannot hold) keeps its exact
// 80 bits in sseState.raw80 beside the float64 the x87 instructions see; MMX reads and
// FXSAVE use the exact bits. An x87 instruction that reads or writes the register
// drops them (x87.go's stI and fpush): from then on its float64 is the value.

// rawReg is a physical x87 register's exact 80-bit contents.
type rawReg struct {
	mant uint64
	se   uint16 // sign and exponent
}

// mmxOK checks CR0.EM and CR0.TS for an instruction on MMX registers.
func (c *CPU) mmxOK() bool {
	if c.CR0&cr0EM != 0 {
		c.raise(excUD, -1)
		return false
	}
	if c.CR0&cr0TS != 0 {
		c.raise(excNM, -1)
		return false
	}
	return true
}

// mmxEnter is an MMX instruction's effect on the x87 state: TOP 0, every tag valid.
func (c *CPU) mmxEnter() {
	c.sse.top, c.sse.ftw = 0, 0xff
}

// mmReg returns MMX register n: physical register n's mantissa.
func (c *CPU) mmReg(n byte) uint64 {
	n &= 7
	if c.sse.rawValid&(1<<n) != 0 {
		return c.sse.raw80[n].mant
	}
	var b [10]byte
	putExt80(b[:], c.sse.st[n])
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// setMM writes MMX register n: mantissa v, sign and exponent all ones.
func (c *CPU) setMM(n byte, v uint64) {
	n &= 7
	c.sse.raw80[n] = rawReg{mant: v, se: 0xffff}
	c.sse.rawValid |= 1 << n
	c.sse.st[n] = raw80Float(v, 0xffff)
}

// raw80Float is the float64 an x87 instruction sees for the 80-bit value (mant, se).
func raw80Float(mant uint64, se uint16) float64 {
	var b [10]byte
	for i := 0; i < 8; i++ {
		b[i] = byte(mant >> (8 * i))
	}
	b[8], b[9] = byte(se), byte(se>>8)
	return ext80(b[:])
}

// loadExt80 sets physical register p from an 80-bit image (FXRSTOR), keeping the exact
// bits when the float64 does not hold them.
func (c *CPU) loadExt80(p int, b []byte) {
	f := ext80(b)
	c.sse.st[p] = f
	var back [10]byte
	putExt80(back[:], f)
	if string(back[:]) == string(b[:10]) {
		c.sse.rawValid &^= 1 << p
		return
	}
	var mant uint64
	for i := 7; i >= 0; i-- {
		mant = mant<<8 | uint64(b[i])
	}
	c.sse.raw80[p] = rawReg{mant: mant, se: uint16(b[8]) | uint16(b[9])<<8}
	c.sse.rawValid |= 1 << p
}

// storeExt80 writes physical register p as an 80-bit image (FXSAVE).
func (c *CPU) storeExt80(p int, b []byte) {
	if c.sse.rawValid&(1<<p) == 0 {
		putExt80(b, c.sse.st[p])
		return
	}
	r := c.sse.raw80[p]
	for i := 0; i < 8; i++ {
		b[i] = byte(r.mant >> (8 * i))
	}
	b[8], b[9] = byte(r.se), byte(r.se>>8)
}

// isMMXOpcode reports whether the no-prefix 0F opcode o is an instruction on MMX
// registers.
func isMMXOpcode(o byte) bool {
	switch {
	case o >= 0x60 && o <= 0x76 && o != 0x6c && o != 0x6d, o == 0x7e, o == 0x7f, o == 0xc4, o == 0xc5:
		return true
	case o >= 0xd1 && o <= 0xfe:
		return o != 0xd6 && o != 0xe6 && o != 0xf0
	}
	return false
}

// translateMMX returns the helper for an instruction on MMX registers (no mandatory
// prefix), or nil when in is not one.
func (c *CPU) translateMMX(in *insn) op {
	o := in.opc
	if in.mapn != 1 || in.pfx66 || in.rep != 0 || !isMMXOpcode(o) {
		return nil
	}
	reg := in.reg & 7
	wrap := func(h func(c *CPU) bool) op {
		return func(c *CPU) bool {
			if !c.mmxOK() {
				return false
			}
			c.mmxEnter()
			return h(c)
		}
	}
	// src reads the mm/m64 operand (m32 for the low unpacks).
	size := 8
	if o >= 0x60 && o <= 0x62 {
		size = 4
	}
	src := func(c *CPU) (uint64, bool) {
		if in.hasMem {
			return c.ld(c.ea(in), size)
		}
		return c.mmReg(in.rm), true
	}
	binop := func(f func(a, b uint64) uint64) op {
		return wrap(func(c *CPU) bool {
			b, ok := src(c)
			if ok {
				c.setMM(reg, f(c.mmReg(reg), b))
			}
			return ok
		})
	}
	// low applies a 128-bit SSE2 operation to the 64-bit operands in the low halves.
	low := func(f func(a, b [2]uint64) [2]uint64) op {
		return binop(func(a, b uint64) uint64 { return f([2]uint64{a}, [2]uint64{b})[0] })
	}
	switch {
	case o >= 0x60 && o <= 0x62: // PUNPCKLBW/WD/DQ
		return low(sseIntOp(o))
	case o >= 0x68 && o <= 0x6a: // PUNPCKHBW/WD/DQ: the high halves of the 128-bit interleave
		f := sseIntOp(o - 8)
		return binop(func(a, b uint64) uint64 { return f([2]uint64{a}, [2]uint64{b})[1] })
	case o == 0x63 || o == 0x67 || o == 0x6b: // PACKSSWB, PACKUSWB, PACKSSDW
		f := sse2MoreOp(o)
		return binop(func(a, b uint64) uint64 { return f([2]uint64{a, b}, [2]uint64{})[0] })
	case o == 0x6e: // MOVD/MOVQ mm, r/m
		sz := 4
		if in.rex&8 != 0 {
			sz = 8
		}
		return wrap(func(c *CPU) bool {
			v, _, ok := c.readRM(in, sz)
			if ok {
				c.setMM(reg, v)
			}
			return ok
		})
	case o == 0x7e: // MOVD/MOVQ r/m, mm
		sz := 4
		if in.rex&8 != 0 {
			sz = 8
		}
		return wrap(func(c *CPU) bool {
			var ea uint64
			if in.hasMem {
				ea = c.ea(in)
			}
			return c.writeRM(in, sz, ea, c.mmReg(reg)&sizeMask(sz))
		})
	case o == 0x6f: // MOVQ mm, mm/m64
		return binop(func(_, b uint64) uint64 { return b })
	case o == 0x7f || o == 0xe7: // MOVQ mm/m64, mm; MOVNTQ m64, mm
		if o == 0xe7 && !in.hasMem {
			return ud
		}
		return wrap(func(c *CPU) bool {
			v := c.mmReg(reg)
			if in.hasMem {
				return c.st(c.ea(in), 8, v)
			}
			c.setMM(in.rm, v)
			return true
		})
	case o == 0x70: // PSHUFW
		imm := in.imm
		return binop(func(_, b uint64) uint64 {
			var r uint64
			for i := uint(0); i < 4; i++ {
				r |= (b >> (16 * (imm >> (2 * i) & 3)) & 0xffff) << (16 * i)
			}
			return r
		})
	case o >= 0x71 && o <= 0x73: // shifts by immediate
		n := in.reg & 7
		if in.hasMem || !(n == 2 || n == 6 || n == 4 && o != 0x73) {
			return ud
		}
		w := int(1) << (o - 0x70) // 2, 4, 8
		cnt := in.imm & 0xff
		dst := in.rm
		return wrap(func(c *CPU) bool {
			c.setMM(dst, laneShift([2]uint64{c.mmReg(dst)}, w, n, cnt)[0])
			return true
		})
	case o == 0xd1 || o == 0xd2 || o == 0xd3 || o == 0xe1 || o == 0xe2 || o == 0xf1 || o == 0xf2 || o == 0xf3:
		w := [4]int{0, 2, 4, 8}[o&3]
		n := map[byte]byte{0xd0: 2, 0xe0: 4, 0xf0: 6}[o&0xf0]
		return binop(func(a, b uint64) uint64 { return laneShift([2]uint64{a}, w, n, b)[0] })
	case o == 0xc4: // PINSRW mm, r32/m16, imm8
		sh := 16 * (in.imm & 3)
		return wrap(func(c *CPU) bool {
			v, _, ok := c.readRM(in, 2)
			if ok {
				c.setMM(reg, c.mmReg(reg)&^(0xffff<<sh)|(v&0xffff)<<sh)
			}
			return ok
		})
	case o == 0xc5: // PEXTRW r32, mm, imm8
		if !in.hasMem {
			sh := 16 * (in.imm & 3)
			return wrap(func(c *CPU) bool {
				c.R[in.reg] = c.mmReg(in.rm) >> sh & 0xffff
				return true
			})
		}
	case o == 0xd7: // PMOVMSKB r32, mm
		if !in.hasMem {
			return wrap(func(c *CPU) bool {
				v := c.mmReg(in.rm)
				var m uint64
				for i := uint(0); i < 8; i++ {
					m |= v >> (8*i + 7) & 1 << i
				}
				c.R[in.reg] = m
				return true
			})
		}
	case o == 0xf7: // MASKMOVQ mm1, mm2: the bytes of mm1 whose mask byte in mm2 is set, to [rDI]
		if !in.hasMem {
			return wrap(func(c *CPU) bool { return c.maskMovQ(in) })
		}
	default:
		if f := sseIntOp(o); f != nil {
			return low(f)
		}
		if f := sse2MoreOp(o); f != nil {
			return low(f)
		}
	}
	return ud
}

// maskMovQ stores the selected bytes of MMX register in.reg at DS:rDI (address size of
// the instruction), one byte at a time as the hardware may.
func (c *CPU) maskMovQ(in *insn) bool {
	v, mask := c.mmReg(in.reg), c.mmReg(in.rm)
	ea := c.linear(in, c.R[7], false)
	for i := uint(0); i < 8; i++ {
		if mask>>(8*i+7)&1 != 0 {
			if !c.st(ea+uint64(i), 1, v>>(8*i)&0xff) {
				return false
			}
		}
	}
	return true
}

// translateMMXConv returns the helper of an SSE/SSE2 instruction between XMM and MMX
// registers — CVTPI2PS/PD, CVT(T)PS2PI, CVT(T)PD2PI, MOVQ2DQ, MOVDQ2Q — or nil. They
// need SSE enabled (sseOK) and, reading or writing an MMX register, make the MMX
// transition; CVTPI2PS/PD from memory do not (SDM). Rounding is to nearest even, as the
// other SSE conversions here (ssefp.go).
func (c *CPU) translateMMXConv(in *insn) op {
	o := in.opc
	if in.mapn != 1 {
		return nil
	}
	form := sseForm(in)
	reg := in.reg
	cvtLanes := func(f0, f1 float64, trunc bool) uint64 {
		return cvtToInt(f0, 4, trunc) | cvtToInt(f1, 4, trunc)<<32
	}
	switch {
	case o == 0x2a && (form == ssePS || form == ssePD): // CVTPI2PS, CVTPI2PD xmm, mm/m64
		return func(c *CPU) bool {
			if !c.sseOK() {
				return false
			}
			var v uint64
			if in.hasMem {
				var ok bool
				if v, ok = c.ld(c.ea(in), 8); !ok {
					return false
				}
			} else {
				c.mmxEnter()
				v = c.mmReg(in.rm)
			}
			lo, hi := int32(v), int32(v>>32)
			d := &c.sse.xmm[reg]
			if form == ssePD {
				d[0], d[1] = math.Float64bits(float64(lo)), math.Float64bits(float64(hi))
			} else {
				d[0] = uint64(math.Float32bits(float32(lo))) | uint64(math.Float32bits(float32(hi)))<<32
			}
			return true
		}
	case (o == 0x2c || o == 0x2d) && (form == ssePS || form == ssePD): // CVT(T)PS2PI, CVT(T)PD2PI mm, xmm/m
		trunc := o == 0x2c
		return func(c *CPU) bool {
			if !c.sseOK() {
				return false
			}
			var v [2]uint64
			switch {
			case !in.hasMem:
				v = c.sse.xmm[in.rm]
			case form == ssePD:
				var ok bool
				if v, ok = c.xmmRM(in, true); !ok {
					return false
				}
			default:
				var ok bool
				if v[0], ok = c.ld(c.ea(in), 8); !ok {
					return false
				}
			}
			c.mmxEnter()
			if form == ssePD {
				c.setMM(reg, cvtLanes(math.Float64frombits(v[0]), math.Float64frombits(v[1]), trunc))
			} else {
				c.setMM(reg, cvtLanes(float64(math.Float32frombits(uint32(v[0]))), float64(math.Float32frombits(uint32(v[0]>>32))), trunc))
			}
			return true
		}
	case o == 0xd6 && (form == sseSS || form == sseSD): // MOVQ2DQ xmm, mm; MOVDQ2Q mm, xmm
		if in.hasMem {
			return ud
		}
		return func(c *CPU) bool {
			if !c.sseOK() {
				return false
			}
			c.mmxEnter()
			if form == sseSS {
				c.sse.xmm[reg] = [2]uint64{c.mmReg(in.rm), 0}
			} else {
				c.setMM(reg, c.sse.xmm[in.rm][0])
			}
			return true
		}
	}
	return nil
}

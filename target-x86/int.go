package x86

import "math/bits"

// Integer instruction semantics: the one-byte opcode map.

// alu performs ALU operation n (ADD OR ADC SBB AND SUB XOR CMP) and sets the flags; it
// returns the result and whether it is written back (not for CMP).
func (c *CPU) alu(n byte, a, b uint64, size int) (uint64, bool) {
	var r, f uint64
	cf := c.RFLAGS & flagCF
	switch n {
	case 0:
		r, f = addFlags(a, b, 0, size)
	case 1:
		r = (a | b) & sizeMask(size)
		f = logicFlags(r, size)
	case 2:
		r, f = addFlags(a, b, cf, size)
	case 3:
		r, f = subFlags(a, b, cf, size)
	case 4:
		r = a & b & sizeMask(size)
		f = logicFlags(r, size)
	case 5, 7:
		r, f = subFlags(a, b, 0, size)
	case 6:
		r = (a ^ b) & sizeMask(size)
		f = logicFlags(r, size)
	}
	c.setArith(f, flagsArith)
	return r, n != 7
}

func (c *CPU) translate1(in *insn, flags uint64) (op, bool) {
	o := in.opc
	m64 := in.mode64
	switch {
	case o < 0x40 && o&7 < 6:
		if m64 && (o&7 >= 6) {
			return ud, true
		}
		n := o >> 3
		switch o & 7 {
		case 0, 1: // op r/m, reg
			size := opSize8(in)
			return func(c *CPU) bool {
				b := c.getReg(in.reg, size, in.rex)
				return c.rmw(in, size, in.lock, func(a uint64) (uint64, bool) { return c.alu(n, a, b, size) })
			}, false
		case 2, 3: // op reg, r/m
			size := opSize8(in)
			return func(c *CPU) bool {
				b, _, ok := c.readRM(in, size)
				if !ok {
					return false
				}
				if r, w := c.alu(n, c.getReg(in.reg, size, in.rex), b, size); w {
					c.setReg(in.reg, size, in.rex, r)
				}
				return true
			}, false
		case 4, 5: // op AL/eAX, imm
			size := opSize8(in)
			return func(c *CPU) bool {
				if r, w := c.alu(n, c.getReg(0, size, 1), in.imm, size); w {
					c.setReg(0, size, 1, r)
				}
				return true
			}, false
		}
	case o < 0x20 && (o&7 == 6 || o&7 == 7) && !m64 && o != 0x0f:
		sreg := int(o >> 3)
		size := in.opsz
		if o&1 == 0 { // PUSH ES/CS/SS/DS
			return func(c *CPU) bool { return c.push(in, size, uint64(c.Seg[sreg].Selector)) }, false
		}
		return func(c *CPU) bool { // POP ES/SS/DS
			sp := c.R[4]
			v, ok := c.pop(in, size)
			if !ok {
				return false
			}
			if !c.loadSeg(sreg, uint16(v)) {
				c.R[4] = sp
				return false
			}
			c.RIP = in.next
			return false
		}, true
	case o < 0x40:
		return ud, true // BCD adjust; prefixes were consumed by the decoder
	case o >= 0x40 && o < 0x50: // INC/DEC r (legacy modes; REX was consumed in 64-bit)
		reg, dec := o&7, o&8 != 0
		return func(c *CPU) bool {
			c.setReg(reg, in.opsz, 1, c.incdec(c.getReg(reg, in.opsz, 1), dec, in.opsz))
			return true
		}, false
	case o >= 0x50 && o < 0x58:
		reg := o&7 | (in.rex&1)<<3
		size := stackOpSize(in)
		return func(c *CPU) bool { return c.push(in, size, c.R[reg]&sizeMask(size)) }, false
	case o >= 0x58 && o < 0x60:
		reg := o&7 | (in.rex&1)<<3
		size := stackOpSize(in)
		return func(c *CPU) bool {
			v, ok := c.pop(in, size)
			if ok {
				c.setReg(reg, size, 1, v)
			}
			return ok
		}, false
	case o == 0x63:
		if !m64 {
			return ud, true // ARPL
		}
		return func(c *CPU) bool { // MOVSXD
			v, _, ok := c.readRM(in, 4)
			if ok {
				c.setReg(in.reg, in.opsz, in.rex, sext(v, 4))
			}
			return ok
		}, false
	case o == 0x68 || o == 0x6a:
		size := stackOpSize(in)
		return func(c *CPU) bool { return c.push(in, size, in.imm&sizeMask(size)) }, false
	case o == 0x69 || o == 0x6b:
		return func(c *CPU) bool {
			a, _, ok := c.readRM(in, in.opsz)
			if ok {
				c.setReg(in.reg, in.opsz, in.rex, c.imul2(a, in.imm, in.opsz))
			}
			return ok
		}, false
	case o >= 0x6c && o <= 0x6f:
		return c.translateString(in)
	case o >= 0x70 && o < 0x80:
		cc := o & 0xf
		target := c.branchTarget(in, in.next+in.imm)
		return func(c *CPU) bool {
			if cond(c.RFLAGS, cc) {
				c.RIP = target
			} else {
				c.RIP = in.next
			}
			return false
		}, true
	case o >= 0x80 && o <= 0x83:
		if o == 0x82 && m64 {
			return ud, true
		}
		n := in.reg & 7
		size := opSize8(in)
		return func(c *CPU) bool {
			return c.rmw(in, size, in.lock, func(a uint64) (uint64, bool) { return c.alu(n, a, in.imm, size) })
		}, false
	case o == 0x84 || o == 0x85:
		size := opSize8(in)
		return func(c *CPU) bool {
			a, _, ok := c.readRM(in, size)
			if ok {
				c.setArith(logicFlags(a&c.getReg(in.reg, size, in.rex), size), flagsArith)
			}
			return ok
		}, false
	case o == 0x86 || o == 0x87:
		size := opSize8(in)
		return func(c *CPU) bool {
			r := c.getReg(in.reg, size, in.rex)
			var old uint64
			if !c.rmw(in, size, true, func(a uint64) (uint64, bool) { old = a; return r, true }) {
				return false
			}
			c.setReg(in.reg, size, in.rex, old)
			return true
		}, false
	case o >= 0x88 && o <= 0x8b:
		size := opSize8(in)
		if o < 0x8a {
			return func(c *CPU) bool {
				v := c.getReg(in.reg, size, in.rex)
				var ea uint64
				if in.hasMem {
					ea = c.ea(in)
				}
				return c.writeRM(in, size, ea, v)
			}, false
		}
		return func(c *CPU) bool {
			v, _, ok := c.readRM(in, size)
			if ok {
				c.setReg(in.reg, size, in.rex, v)
			}
			return ok
		}, false
	case o == 0x8c: // MOV r/m, Sreg
		s := in.reg & 7
		if s > 5 {
			return ud, true
		}
		return func(c *CPU) bool {
			size := in.opsz
			var ea uint64
			if in.hasMem {
				size, ea = 2, c.ea(in)
			}
			return c.writeRM(in, size, ea, uint64(c.Seg[s].Selector))
		}, false
	case o == 0x8d:
		if !in.hasMem {
			return ud, true
		}
		return func(c *CPU) bool {
			a := in.disp
			if !in.ripRel {
				if in.base >= 0 {
					a += c.R[in.base]
				}
				if in.index >= 0 {
					a += c.R[in.index] << in.scale
				}
			}
			c.setReg(in.reg, in.opsz, in.rex, a&sizeMask(in.adsz))
			return true
		}, false
	case o == 0x8e: // MOV Sreg, r/m
		s := in.reg & 7
		if s == segCS || s > 5 {
			return ud, true
		}
		return func(c *CPU) bool {
			v, _, ok := c.readRM(in, 2)
			return ok && c.loadSeg(int(s), uint16(v))
		}, true
	case o == 0x8f:
		if in.reg&7 != 0 {
			return ud, true
		}
		size := stackOpSize(in)
		return func(c *CPU) bool {
			sp := c.R[4]
			v, ok := c.pop(in, size)
			if !ok {
				return false
			}
			var ea uint64
			if in.hasMem {
				ea = c.ea(in) // computed with the incremented RSP, as the SDM says
			}
			if !c.writeRM(in, size, ea, v) {
				c.R[4] = sp
				return false
			}
			return true
		}, false
	case o == 0x90 && in.rex&1 == 0:
		if in.rep == 0xf3 {
			return func(c *CPU) bool { return true }, false // PAUSE
		}
		return func(c *CPU) bool { return true }, false
	case o >= 0x90 && o < 0x98:
		reg := o&7 | (in.rex&1)<<3
		return func(c *CPU) bool {
			a, b := c.getReg(0, in.opsz, 1), c.getReg(reg, in.opsz, 1)
			c.setReg(0, in.opsz, 1, b)
			c.setReg(reg, in.opsz, 1, a)
			return true
		}, false
	case o == 0x98:
		return func(c *CPU) bool {
			c.setReg(0, in.opsz, 1, sext(c.R[0], in.opsz/2))
			return true
		}, false
	case o == 0x99:
		return func(c *CPU) bool {
			v := uint64(0)
			if c.R[0]&signBit(in.opsz) != 0 {
				v = ^uint64(0)
			}
			c.setReg(2, in.opsz, 1, v)
			return true
		}, false
	case o == 0x9b:
		return func(c *CPU) bool { return true }, false // FWAIT
	case o == 0x9c:
		size := stackOpSize(in)
		return func(c *CPU) bool {
			return c.push(in, size, c.RFLAGS&^(flagRF|flagVM)&sizeMask(size))
		}, false
	case o == 0x9d:
		size := stackOpSize(in)
		return func(c *CPU) bool {
			v, ok := c.pop(in, size)
			if !ok {
				return false
			}
			c.writeFlags(v, size)
			c.RIP = in.next
			return false
		}, true
	case o == 0x9e: // SAHF
		return func(c *CPU) bool {
			c.setArith(c.R[0]>>8, flagCF|flagPF|flagAF|flagZF|flagSF)
			return true
		}, false
	case o == 0x9f: // LAHF
		return func(c *CPU) bool {
			c.R[0] = c.R[0]&^0xff00 | (c.RFLAGS&0xd7|2)<<8
			return true
		}, false
	case o >= 0xa0 && o <= 0xa3:
		size := opSize8(in)
		load := o < 0xa2
		return func(c *CPU) bool {
			ea := c.linear(in, in.imm, false)
			if load {
				v, ok := c.ld(ea, size)
				if ok {
					c.setReg(0, size, 1, v)
				}
				return ok
			}
			return c.st(ea, size, c.getReg(0, size, 1))
		}, false
	case o == 0xa8 || o == 0xa9:
		size := opSize8(in)
		return func(c *CPU) bool {
			c.setArith(logicFlags(c.R[0]&in.imm, size), flagsArith)
			return true
		}, false
	case o >= 0xa4 && o <= 0xaf:
		return c.translateString(in)
	case o >= 0xb0 && o < 0xb8:
		reg := o&7 | (in.rex&1)<<3
		return func(c *CPU) bool { c.setReg(reg, 1, in.rex, in.imm); return true }, false
	case o >= 0xb8 && o < 0xc0:
		reg := o&7 | (in.rex&1)<<3
		return func(c *CPU) bool { c.setReg(reg, in.opsz, 1, in.imm); return true }, false
	case o == 0xc0 || o == 0xc1 || o >= 0xd0 && o <= 0xd3:
		size := opSize8(in)
		n := in.reg & 7
		return func(c *CPU) bool {
			var cnt uint64
			switch {
			case o <= 0xc1:
				cnt = in.imm
			case o <= 0xd1:
				cnt = 1
			default:
				cnt = c.R[1]
			}
			return c.rmw(in, size, false, func(a uint64) (uint64, bool) { return c.shift(n, a, cnt, size), true })
		}, false
	case o == 0xc2 || o == 0xc3:
		size := stackOpSize(in)
		return func(c *CPU) bool {
			sp := c.R[4]
			v, ok := c.pop(in, size)
			if !ok {
				return false
			}
			if !c.jumpOK(in, v) {
				c.R[4] = sp
				return false
			}
			if o == 0xc2 {
				ss := c.stackSize(in)
				c.R[4] = c.R[4]&^sizeMask(ss) | (c.R[4]+in.imm)&sizeMask(ss)
			}
			c.RIP = c.codeLinear(in, v)
			return false
		}, true
	case o == 0xca || o == 0xcb: // RETF (same privilege)
		size := in.opsz
		return func(c *CPU) bool {
			sp := c.R[4]
			ip, ok1 := c.pop(in, size)
			cs, ok2 := c.pop(in, size)
			if !ok1 || !ok2 {
				c.R[4] = sp
				return false
			}
			if o == 0xca {
				ss := c.stackSize(in)
				c.R[4] = c.R[4]&^sizeMask(ss) | (c.R[4]+in.imm)&sizeMask(ss)
			}
			if uint64(cs)&3 != c.cpl && c.CR0&CR0_PE != 0 {
				c.R[4] = sp
				c.raise(excGP, int64(cs&^3)) // returns to another privilege level: not implemented
				return false
			}
			c.farTransfer(&insn{opsz: size, mode64: in.mode64, csBase: in.csBase, next: in.next}, uint16(cs), ip, false)
			return false
		}, true
	case o == 0xc6 || o == 0xc7:
		if in.reg&7 != 0 {
			return ud, true
		}
		size := opSize8(in)
		return func(c *CPU) bool {
			var ea uint64
			if in.hasMem {
				ea = c.ea(in)
			}
			return c.writeRM(in, size, ea, in.imm)
		}, false
	case o == 0xc8:
		return c.enter(in), false
	case o == 0xc9:
		size := stackOpSize(in)
		return func(c *CPU) bool {
			sp := c.R[4]
			c.R[4] = c.R[5]
			v, ok := c.pop(in, size)
			if !ok {
				c.R[4] = sp
				return false
			}
			c.setReg(5, size, 1, v)
			return true
		}, false
	case o == 0xcc:
		return func(c *CPU) bool { c.deliver(excBP, -1, intSoft, in.next); return false }, true
	case o == 0xcd:
		v := int(in.imm & 0xff)
		return func(c *CPU) bool { c.deliver(v, -1, intSoft, in.next); return false }, true
	case o == 0xcf:
		return c.iret(in), true
	case o == 0xd7: // XLAT
		return func(c *CPU) bool {
			v, ok := c.ld(c.linear(in, c.R[3]+c.R[0]&0xff, false), 1)
			if ok {
				c.setReg(0, 1, 1, v)
			}
			return ok
		}, false
	case o >= 0xd8 && o <= 0xdf:
		return c.translateX87(in, flags)
	case o >= 0xe0 && o <= 0xe3:
		target := c.branchTarget(in, in.next+in.imm)
		return func(c *CPU) bool {
			m := sizeMask(in.adsz)
			var take bool
			if o == 0xe3 {
				take = c.R[1]&m == 0
			} else {
				cx := (c.R[1] - 1) & m
				c.R[1] = c.R[1]&^m | cx
				if in.adsz == 4 {
					c.R[1] = cx
				}
				take = cx != 0
				if o == 0xe0 {
					take = take && c.RFLAGS&flagZF == 0
				} else if o == 0xe1 {
					take = take && c.RFLAGS&flagZF != 0
				}
			}
			if take {
				c.RIP = target
			} else {
				c.RIP = in.next
			}
			return false
		}, true
	case o >= 0xe4 && o <= 0xe7 || o >= 0xec && o <= 0xef:
		return c.translateIO(in), false
	case o == 0xe8:
		target := c.branchTarget(in, in.next+in.imm)
		size := stackOpSize(in)
		return func(c *CPU) bool {
			if !c.push(in, size, in.eip(in.next)) {
				return false
			}
			c.RIP = target
			return false
		}, true
	case (o == 0xea || o == 0x9a) && !m64: // JMP/CALL ptr16:16/32
		call := o == 0x9a
		return func(c *CPU) bool { return c.farTransfer(in, uint16(in.imm2), in.imm, call) }, true
	case o == 0xe9 || o == 0xeb:
		target := c.branchTarget(in, in.next+in.imm)
		return func(c *CPU) bool { c.RIP = target; return false }, true
	case o == 0xf1:
		return func(c *CPU) bool { c.deliver(excDB, -1, intHW, in.next); return false }, true
	case o == 0xf4:
		return func(c *CPU) bool {
			if c.cpl != 0 {
				c.raise(excGP, 0)
				return false
			}
			c.RIP = in.next
			c.halted.Store(true)
			c.v.Request(reqPower)
			return false
		}, true
	case o == 0xf5:
		return func(c *CPU) bool { c.RFLAGS ^= flagCF; return true }, false
	case o == 0xf6 || o == 0xf7:
		return c.group3(in), false
	case o == 0xf8:
		return func(c *CPU) bool { c.RFLAGS &^= flagCF; return true }, false
	case o == 0xf9:
		return func(c *CPU) bool { c.RFLAGS |= flagCF; return true }, false
	case o == 0xfa:
		return func(c *CPU) bool {
			if !c.iopl() {
				c.raise(excGP, 0)
				return false
			}
			c.RFLAGS &^= RFLAGS_IF
			return true
		}, false
	case o == 0xfb:
		// STI: the interrupt shadow is the next instruction, which this block runs
		// before any interrupt check (the block ends after it).
		return func(c *CPU) bool {
			if !c.iopl() {
				c.raise(excGP, 0)
				return false
			}
			c.RFLAGS |= RFLAGS_IF
			c.v.Request(reqIRQ)
			return true
		}, false
	case o == 0xfc:
		return func(c *CPU) bool { c.RFLAGS &^= flagDF; return true }, false
	case o == 0xfd:
		return func(c *CPU) bool { c.RFLAGS |= flagDF; return true }, false
	case o == 0xfe:
		if in.reg&7 > 1 {
			return ud, true
		}
		dec := in.reg&7 == 1
		return func(c *CPU) bool {
			return c.rmw(in, 1, in.lock, func(a uint64) (uint64, bool) { return c.incdec(a, dec, 1), true })
		}, false
	case o == 0xff:
		return c.group5(in)
	}
	return ud, true
}

// jumpOK checks a computed branch target: a non-canonical one raises #GP(0) at the
// branch (in 64-bit mode), as the SDM says, rather than at the fetch.
func (c *CPU) jumpOK(in *insn, t uint64) bool {
	if in.mode64 && !canonical(t) {
		c.raise(excGP, 0)
		return false
	}
	return true
}

// branchTarget returns the linear target of a relative branch to linear address t:
// outside 64-bit mode the EIP/IP wraps at the operand size.
func (c *CPU) branchTarget(in *insn, t uint64) uint64 {
	if in.mode64 {
		return t
	}
	return in.csBase + (t-in.csBase)&sizeMask(in.opsz)
}

// eip returns the instruction pointer (offset in CS) of linear address lin, as pushed
// by CALL and found in frames.
func (in *insn) eip(lin uint64) uint64 {
	if in.mode64 {
		return lin
	}
	return (lin - in.csBase) & sizeMask(in.opsz)
}

// codeLinear returns the linear address of an instruction-pointer value (a popped or
// loaded branch target) in the current code segment.
func (c *CPU) codeLinear(in *insn, ip uint64) uint64 {
	if in.mode64 {
		return ip
	}
	return c.Seg[segCS].Base + ip&sizeMask(in.opsz)
}

func (c *CPU) iopl() bool { return c.CR0&CR0_PE == 0 || c.cpl <= c.RFLAGS>>12&3 }

// writeFlags implements POPF's rules: IOPL changes only at CPL 0, IF only when CPL <=
// IOPL; VM and RF are never set by it.
func (c *CPU) writeFlags(v uint64, size int) {
	mask := uint64(flagsArith | flagTF | flagDF | flagNT | flagAC | flagID)
	if c.cpl == 0 || c.CR0&CR0_PE == 0 {
		mask |= flagIOPL
	}
	if c.iopl() {
		mask |= RFLAGS_IF
	}
	mask &= sizeMask(size)
	old := c.RFLAGS
	c.RFLAGS = c.RFLAGS&^mask | v&mask | RFLAGS_RESERVED
	if c.RFLAGS&^old&RFLAGS_IF != 0 {
		c.v.Request(reqIRQ)
	}
}

func (c *CPU) incdec(a uint64, dec bool, size int) uint64 {
	var r, f uint64
	if dec {
		r, f = subFlags(a, 1, 0, size)
	} else {
		r, f = addFlags(a, 1, 0, size)
	}
	c.setArith(f, flagsArith&^flagCF)
	return r
}

// shift performs group-2 operation n (ROL ROR RCL RCR SHL SHR SAL SAR) of a by cnt.
func (c *CPU) shift(n byte, a, cnt uint64, size int) uint64 {
	bitsN := uint64(8 * size)
	if size == 8 {
		cnt &= 63
	} else {
		cnt &= 31
	}
	m := sizeMask(size)
	a &= m
	if cnt == 0 {
		return a
	}
	sb := signBit(size)
	var r, f uint64
	fl := c.RFLAGS
	switch n {
	case 0, 1: // ROL, ROR: CF and OF only
		k := cnt % bitsN
		if n == 0 {
			r = (a<<k | a>>(bitsN-k)) & m
			f = r & 1
			if (r&sb != 0) != (f != 0) {
				f |= flagOF
			}
		} else {
			r = (a>>k | a<<(bitsN-k)) & m
			if r&sb != 0 {
				f = flagCF
			}
			if (r&sb != 0) != (r&(sb>>1) != 0) {
				f |= flagOF
			}
		}
		c.setArith(f, flagCF|flagOF)
		return r
	case 2, 3: // RCL, RCR through CF
		k := cnt % (bitsN + 1)
		cf := fl & flagCF
		r = a
		for ; k > 0; k-- {
			if n == 2 {
				out := r & sb
				r = (r<<1 | cf) & m
				cf = 0
				if out != 0 {
					cf = 1
				}
			} else {
				out := r & 1
				r = r>>1 | cf*sb
				cf = out
			}
		}
		f = cf
		if n == 2 {
			if (r&sb != 0) != (cf != 0) {
				f |= flagOF
			}
		} else if (r&sb != 0) != (r&(sb>>1) != 0) {
			f |= flagOF
		}
		c.setArith(f, flagCF|flagOF)
		return r
	case 4, 6: // SHL
		if cnt > bitsN {
			r = 0
			f = 0
		} else {
			r = a << cnt & m
			f = a >> (bitsN - cnt) & 1
		}
		if (r&sb != 0) != (f != 0) {
			f |= flagOF
		}
	case 5: // SHR
		r = a >> cnt
		f = a >> (cnt - 1) & 1
		if a&sb != 0 {
			f |= flagOF
		}
	case 7: // SAR
		s := 64 - bitsN
		sa := int64(a<<s) >> s
		if cnt >= bitsN {
			cnt = bitsN - 1
			r = uint64(sa>>cnt) & m
			f = uint64(sa>>cnt) & 1
		} else {
			r = uint64(sa>>cnt) & m
			f = uint64(sa>>(cnt-1)) & 1
		}
	}
	f |= szp(r, size)
	c.setArith(f, flagsArith)
	return r
}

// imul2 is the two- and three-operand IMUL: the low size bytes of a*b; CF=OF=the
// product does not fit (SF, ZF, PF from the result: undefined by the SDM).
func (c *CPU) imul2(a, b uint64, size int) uint64 {
	sa, sb := int64(sext(a, size)), int64(sext(b, size))
	hi, lo := bits.Mul64(uint64(sa), uint64(sb))
	if sa < 0 {
		hi -= uint64(sb)
	}
	if sb < 0 {
		hi -= uint64(sa)
	}
	r := lo & sizeMask(size)
	var fits bool
	if size == 8 {
		fits = hi == uint64(int64(lo)>>63)
	} else {
		fits = sext(r, size) == lo
	}
	f := szp(r, size)
	if !fits {
		f |= flagCF | flagOF
	}
	c.setArith(f, flagsArith)
	return r
}

func (c *CPU) group3(in *insn) op {
	size := opSize8(in)
	switch in.reg & 7 {
	case 0, 1: // TEST r/m, imm
		return func(c *CPU) bool {
			a, _, ok := c.readRM(in, size)
			if ok {
				c.setArith(logicFlags(a&in.imm, size), flagsArith)
			}
			return ok
		}
	case 2: // NOT
		return func(c *CPU) bool {
			return c.rmw(in, size, in.lock, func(a uint64) (uint64, bool) { return ^a & sizeMask(size), true })
		}
	case 3: // NEG
		return func(c *CPU) bool {
			return c.rmw(in, size, in.lock, func(a uint64) (uint64, bool) {
				r, f := subFlags(0, a, 0, size)
				c.setArith(f, flagsArith)
				return r, true
			})
		}
	}
	n := in.reg & 7
	return func(c *CPU) bool {
		src, _, ok := c.readRM(in, size)
		if !ok {
			return false
		}
		return c.muldiv(n, src, size)
	}
}

// muldiv implements MUL, IMUL (one operand), DIV and IDIV of rDX:rAX (AX for bytes).
func (c *CPU) muldiv(n byte, src uint64, size int) bool {
	m := sizeMask(size)
	var lo, hi uint64 // the double-width rDX:rAX operand / result halves
	if size == 1 {
		lo, hi = c.R[0]&0xff, c.R[0]>>8&0xff
	} else {
		lo, hi = c.R[0]&m, c.R[2]&m
	}
	set := func(l, h uint64) {
		if size == 1 {
			c.R[0] = c.R[0]&^0xffff | l&0xff | (h&0xff)<<8
		} else {
			c.setReg(0, size, 1, l)
			c.setReg(2, size, 1, h)
		}
	}
	bitsN := uint(8 * size)
	switch n {
	case 4: // MUL
		h, l := bits.Mul64(lo, src&m)
		if size < 8 {
			h, l = l>>bitsN, l&m
		}
		set(l, h)
		f := szp(l, size)
		if h != 0 {
			f |= flagCF | flagOF
		}
		c.setArith(f, flagsArith)
	case 5: // IMUL
		a, b := int64(sext(lo, size)), int64(sext(src, size))
		var l, h uint64
		var over bool
		if size < 8 {
			full := a * b
			l, h = uint64(full)&m, uint64(full>>bitsN)&m
			over = full != int64(sext(l, size))
		} else {
			h, l = bits.Mul64(uint64(a), uint64(b))
			if a < 0 {
				h -= uint64(b)
			}
			if b < 0 {
				h -= uint64(a)
			}
			over = h != uint64(int64(l)>>63)
		}
		set(l, h)
		f := szp(l, size)
		if over {
			f |= flagCF | flagOF
		}
		c.setArith(f, flagsArith)
	case 6: // DIV
		d := src & m
		if d == 0 || hi >= d {
			c.raise(excDE, -1)
			return false
		}
		var q, r uint64
		if size == 8 {
			q, r = bits.Div64(hi, lo, d)
		} else {
			x := hi<<bitsN | lo
			q, r = x/d, x%d
		}
		set(q, r)
	case 7: // IDIV
		d := int64(sext(src, size))
		if d == 0 {
			c.raise(excDE, -1)
			return false
		}
		neg := int64(sext(hi, size)) < 0
		// |dividend| as a 128-bit value.
		dh, dl := hi, lo
		if size < 8 {
			x := int64(sext(hi<<bitsN|lo, 2*size))
			if size == 4 {
				x = int64(hi<<32 | lo)
			}
			if x == -1<<63 && d == -1 {
				c.raise(excDE, -1)
				return false
			}
			q, r := x/d, x%d
			if q != int64(sext(uint64(q), size)) {
				c.raise(excDE, -1)
				return false
			}
			set(uint64(q)&m, uint64(r)&m)
			return true
		}
		if neg {
			dl = -lo
			dh = ^hi
			if lo == 0 {
				dh++
			}
		}
		ad := uint64(d)
		if d < 0 {
			ad = uint64(-d)
		}
		if dh >= ad {
			c.raise(excDE, -1)
			return false
		}
		q, r := bits.Div64(dh, dl, ad)
		qneg := neg != (d < 0)
		if qneg && q > 1<<63 || !qneg && q >= 1<<63 {
			c.raise(excDE, -1)
			return false
		}
		if qneg {
			q = -q
		}
		if neg {
			r = -r
		}
		set(q, r)
	}
	return true
}

func (c *CPU) group5(in *insn) (op, bool) {
	switch in.reg & 7 {
	case 0, 1:
		dec := in.reg&7 == 1
		return func(c *CPU) bool {
			return c.rmw(in, in.opsz, in.lock, func(a uint64) (uint64, bool) { return c.incdec(a, dec, in.opsz), true })
		}, false
	case 2: // CALL near indirect
		size := stackOpSize(in)
		return func(c *CPU) bool {
			t, _, ok := c.readRM(in, size)
			if !ok || !c.jumpOK(in, t) || !c.push(in, size, in.eip(in.next)) {
				return false
			}
			c.RIP = c.codeLinear(in, t)
			return false
		}, true
	case 4: // JMP near indirect
		size := stackOpSize(in)
		return func(c *CPU) bool {
			t, _, ok := c.readRM(in, size)
			if ok && c.jumpOK(in, t) {
				c.RIP = c.codeLinear(in, t)
			}
			return false
		}, true
	case 3, 5: // far CALL/JMP through memory
		if !in.hasMem {
			return ud, true
		}
		call := in.reg&7 == 3
		return func(c *CPU) bool { return c.farIndirect(in, call) }, true
	case 6:
		size := stackOpSize(in)
		return func(c *CPU) bool {
			v, _, ok := c.readRM(in, size)
			return ok && c.push(in, size, v)
		}, false
	}
	return ud, true
}

func (c *CPU) enter(in *insn) op {
	size := stackOpSize(in)
	return func(c *CPU) bool {
		alloc, level := in.imm&0xffff, in.imm2&31
		save := c.R
		if !c.push(in, size, c.R[5]&sizeMask(size)) {
			return false
		}
		frame := c.R[4]
		bp := c.R[5]
		for i := uint64(1); i < level; i++ {
			bp -= uint64(size)
			a := bp & sizeMask(c.stackSize(in))
			if !in.mode64 {
				a += c.Seg[segSS].Base
			}
			v, ok := c.ld(a, size)
			if !ok || !c.push(in, size, v) {
				c.R = save
				return false
			}
		}
		if level > 0 && !c.push(in, size, frame) {
			c.R = save
			return false
		}
		c.setReg(5, size, 1, frame)
		ss := c.stackSize(in)
		c.R[4] = c.R[4]&^sizeMask(ss) | (c.R[4]-alloc)&sizeMask(ss)
		return true
	}
}

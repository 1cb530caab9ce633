package arm

import (
	"hash/crc32"
	"math/bits"
)

// Data-processing instructions (immediate and register classes).

func signExt(v uint64, n uint) uint64 { return uint64(int64(v<<(64-n)) >> (64 - n)) }

func decodeDPImm(insn uint32, pc uint64) (op, bool) {
	rd := insn & 31
	rn := insn >> 5 & 31
	sf := insn>>31 == 1
	mask := ^uint64(0)
	if !sf {
		mask = 0xffffffff
	}
	switch insn >> 23 & 7 {
	case 0, 1: // ADR, ADRP
		imm := signExt(uint64(insn>>5&0x7ffff)<<2|uint64(insn>>29&3), 21)
		var v uint64
		if insn>>31 == 1 {
			v = pc&^0xfff + imm<<12
		} else {
			v = pc + imm
		}
		return func(c *CPU) bool { c.w(rd, v); return true }, false
	case 2: // ADD/SUB immediate
		imm := uint64(insn >> 10 & 0xfff)
		if insn>>22&1 == 1 {
			imm <<= 12
		}
		sub := insn>>30&1 == 1
		setf := insn>>29&1 == 1
		if setf {
			y, carry := imm, uint64(0)
			if sub {
				y, carry = ^imm, 1
			}
			if sf {
				return func(c *CPU) bool {
					r, f := add64(c.rsp(rn), y, carry)
					c.NZCV = f
					c.w(rd, r)
					return true
				}, false
			}
			return func(c *CPU) bool {
				r, f := add32(c.rsp(rn), y, carry)
				c.NZCV = f
				c.w(rd, r)
				return true
			}, false
		}
		if sub {
			imm = -imm
		}
		if rn != 31 && rd != 31 {
			return func(c *CPU) bool { c.State.X[rd] = (c.State.X[rn] + imm) & mask; return true }, false
		}
		return func(c *CPU) bool { c.wsp(rd, (c.rsp(rn)+imm)&mask); return true }, false
	case 4: // logical immediate
		n := insn >> 22 & 1
		if !sf && n == 1 {
			return undefOp(pc), true
		}
		ds := uint32(32)
		if sf {
			ds = 64
		}
		imm, _, ok := decodeBitMasks(n, insn>>10&0x3f, insn>>16&0x3f, true, ds)
		if !ok {
			return undefOp(pc), true
		}
		switch insn >> 29 & 3 {
		case 0:
			return func(c *CPU) bool { c.wsp(rd, c.r(rn)&imm); return true }, false
		case 1:
			if rn == 31 && rd != 31 {
				return func(c *CPU) bool { c.State.X[rd] = imm; return true }, false
			}
			return func(c *CPU) bool { c.wsp(rd, (c.r(rn)|imm)&mask); return true }, false
		case 2:
			return func(c *CPU) bool { c.wsp(rd, (c.r(rn)^imm)&mask); return true }, false
		default:
			return func(c *CPU) bool {
				r := c.r(rn) & imm
				c.NZCV = logicFlags(sf, r)
				c.w(rd, r)
				return true
			}, false
		}
	case 5: // move wide
		hw := insn >> 21 & 3
		if !sf && hw >= 2 {
			return undefOp(pc), true
		}
		sh := hw * 16
		imm := uint64(insn>>5&0xffff) << sh
		switch insn >> 29 & 3 {
		case 0: // MOVN
			v := ^imm & mask
			return func(c *CPU) bool { c.w(rd, v); return true }, false
		case 2: // MOVZ
			return func(c *CPU) bool { c.w(rd, imm); return true }, false
		case 3: // MOVK
			keep := ^(uint64(0xffff) << sh) & mask
			return func(c *CPU) bool { c.w(rd, c.r(rd)&keep|imm); return true }, false
		}
	case 6: // bitfield
		n := insn >> 22 & 1
		if sf != (n == 1) {
			return undefOp(pc), true
		}
		ds := uint32(32)
		if sf {
			ds = 64
		}
		immr, imms := insn>>16&0x3f, insn>>10&0x3f
		if !sf && (immr >= 32 || imms >= 32) {
			return undefOp(pc), true
		}
		wmask, tmask, ok := decodeBitMasks(n, imms, immr, false, ds)
		if !ok {
			return undefOp(pc), true
		}
		r := int(immr)
		rot := func(v uint64) uint64 {
			if sf {
				return bits.RotateLeft64(v, -r)
			}
			return uint64(bits.RotateLeft32(uint32(v), -r))
		}
		switch insn >> 29 & 3 {
		case 0: // SBFM
			return func(c *CPU) bool {
				src := c.r(rn)
				bot := rot(src) & wmask
				var top uint64
				if src>>imms&1 != 0 {
					top = mask
				}
				c.w(rd, (top&^tmask|bot&tmask)&mask)
				return true
			}, false
		case 1: // BFM
			return func(c *CPU) bool {
				dst := c.r(rd)
				bot := dst&^wmask | rot(c.r(rn))&wmask
				c.w(rd, (dst&^tmask|bot&tmask)&mask)
				return true
			}, false
		case 2: // UBFM
			m := wmask & tmask
			if sf && imms+1 == immr && imms != 63 { // LSL
				sh := 63 - imms
				return func(c *CPU) bool { c.w(rd, c.r(rn)<<sh); return true }, false
			}
			if sf && imms == 63 { // LSR
				return func(c *CPU) bool { c.w(rd, c.r(rn)>>immr); return true }, false
			}
			return func(c *CPU) bool { c.w(rd, rot(c.r(rn))&m); return true }, false
		}
	case 7: // EXTR
		n := insn >> 22 & 1
		if sf != (n == 1) || insn>>29&3 != 0 || insn>>21&1 != 0 {
			return undefOp(pc), true
		}
		rm := insn >> 16 & 31
		lsb := insn >> 10 & 0x3f
		if !sf && lsb >= 32 {
			return undefOp(pc), true
		}
		if sf {
			if lsb == 0 {
				return func(c *CPU) bool { c.w(rd, c.r(rm)); return true }, false
			}
			return func(c *CPU) bool { c.w(rd, c.r(rm)>>lsb|c.r(rn)<<(64-lsb)); return true }, false
		}
		return func(c *CPU) bool {
			v := uint64(uint32(c.r(rn)))<<32 | uint64(uint32(c.r(rm)))
			c.w(rd, uint64(uint32(v>>lsb)))
			return true
		}, false
	}
	return undefOp(pc), true
}

func decodeDPReg(insn uint32, pc uint64) (op, bool) {
	rd := insn & 31
	rn := insn >> 5 & 31
	rm := insn >> 16 & 31
	sf := insn>>31 == 1
	mask := ^uint64(0)
	if !sf {
		mask = 0xffffffff
	}
	op1 := insn >> 28 & 1
	op2 := insn >> 21 & 15
	if op1 == 0 {
		if op2&8 == 0 { // logical shifted register
			typ, amt := insn>>22&3, insn>>10&0x3f
			if !sf && amt >= 32 {
				return undefOp(pc), true
			}
			inv := insn>>21&1 == 1
			opc := insn >> 29 & 3
			if opc == 1 && !inv && amt == 0 && rn == 31 { // MOV
				return func(c *CPU) bool { c.w(rd, c.r(rm)&mask); return true }, false
			}
			if !inv && opc != 3 && (amt == 0 || typ == 0) {
				// Unrotated AND/ORR/EOR, or with LSL: the common forms.
				switch opc {
				case 0:
					return func(c *CPU) bool { c.w(rd, (c.r(rn)&(c.r(rm)<<amt))&mask); return true }, false
				case 1:
					return func(c *CPU) bool { c.w(rd, (c.r(rn)|(c.r(rm)<<amt))&mask); return true }, false
				case 2:
					return func(c *CPU) bool { c.w(rd, (c.r(rn)^(c.r(rm)<<amt))&mask); return true }, false
				}
			}
			return func(c *CPU) bool {
				b := aluShift(sf, c.r(rm), typ, amt)
				if inv {
					b = ^b
				}
				a := c.r(rn)
				var r uint64
				switch opc {
				case 0, 3:
					r = a & b
				case 1:
					r = a | b
				case 2:
					r = a ^ b
				}
				r &= mask
				if opc == 3 {
					c.NZCV = logicFlags(sf, r)
				}
				c.w(rd, r)
				return true
			}, false
		}
		sub := insn>>30&1 == 1
		setf := insn>>29&1 == 1
		if op2&1 == 0 { // add/sub shifted register
			typ, amt := insn>>22&3, insn>>10&0x3f
			if typ == 3 || (!sf && amt >= 32) {
				return undefOp(pc), true
			}
			if !setf {
				if amt == 0 && sf {
					if sub {
						return func(c *CPU) bool { c.w(rd, c.r(rn)-c.r(rm)); return true }, false
					}
					return func(c *CPU) bool { c.w(rd, c.r(rn)+c.r(rm)); return true }, false
				}
				if sub {
					return func(c *CPU) bool { c.w(rd, (c.r(rn)-aluShift(sf, c.r(rm), typ, amt))&mask); return true }, false
				}
				return func(c *CPU) bool { c.w(rd, (c.r(rn)+aluShift(sf, c.r(rm), typ, amt))&mask); return true }, false
			}
			if sf && amt == 0 {
				carry := uint64(0)
				if sub {
					carry = 1
				}
				if sub {
					return func(c *CPU) bool {
						r, f := add64(c.r(rn), ^c.r(rm), carry)
						c.NZCV = f
						c.w(rd, r)
						return true
					}, false
				}
				return func(c *CPU) bool {
					r, f := add64(c.r(rn), c.r(rm), carry)
					c.NZCV = f
					c.w(rd, r)
					return true
				}, false
			}
			return func(c *CPU) bool {
				b, carry := aluShift(sf, c.r(rm), typ, amt), uint64(0)
				if sub {
					b, carry = ^b, 1
				}
				r, f := addWithCarry(sf, c.r(rn), b, carry)
				c.NZCV = f
				c.w(rd, r)
				return true
			}, false
		}
		// add/sub extended register
		option, sh := insn>>13&7, insn>>10&7
		if sh > 4 || insn>>22&3 != 0 {
			return undefOp(pc), true
		}
		return func(c *CPU) bool {
			b, carry := aluExtend(c.r(rm), option, sh), uint64(0)
			if sub {
				b, carry = ^b, 1
			}
			r, f := addWithCarry(sf, c.rsp(rn), b, carry)
			if setf {
				c.NZCV = f
				c.w(rd, r)
			} else {
				c.wsp(rd, r)
			}
			return true
		}, false
	}
	switch {
	case op2 == 0: // ADC/SBC
		if insn>>10&0x3f != 0 {
			return undefOp(pc), true
		}
		sub := insn>>30&1 == 1
		setf := insn>>29&1 == 1
		return func(c *CPU) bool {
			b := c.r(rm)
			if sub {
				b = ^b
			}
			r, f := addWithCarry(sf, c.r(rn), b, c.NZCV>>29&1)
			if setf {
				c.NZCV = f
			}
			c.w(rd, r)
			return true
		}, false
	case op2 == 2: // CCMN/CCMP
		if insn>>29&1 == 0 || insn>>10&1 != 0 || insn>>4&1 != 0 {
			return undefOp(pc), true
		}
		cond := insn >> 12 & 15
		nzcv := uint64(insn&15) << 28
		sub := insn>>30&1 == 1
		imm := insn>>11&1 == 1
		return func(c *CPU) bool {
			if !c.cond(cond) {
				c.NZCV = nzcv
				return true
			}
			b := uint64(rm)
			if !imm {
				b = c.r(rm)
			}
			carry := uint64(0)
			if sub {
				b, carry = ^b, 1
			}
			_, c.NZCV = addWithCarry(sf, c.r(rn), b, carry)
			return true
		}, false
	case op2 == 4: // conditional select
		if insn>>29&1 != 0 || insn>>11&1 != 0 {
			return undefOp(pc), true
		}
		cond := insn >> 12 & 15
		switch insn>>30&1<<1 | insn>>10&1 {
		case 0: // CSEL
			return func(c *CPU) bool {
				if c.cond(cond) {
					c.w(rd, c.r(rn)&mask)
				} else {
					c.w(rd, c.r(rm)&mask)
				}
				return true
			}, false
		case 1: // CSINC
			return func(c *CPU) bool {
				if c.cond(cond) {
					c.w(rd, c.r(rn)&mask)
				} else {
					c.w(rd, (c.r(rm)+1)&mask)
				}
				return true
			}, false
		case 2: // CSINV
			return func(c *CPU) bool {
				if c.cond(cond) {
					c.w(rd, c.r(rn)&mask)
				} else {
					c.w(rd, ^c.r(rm)&mask)
				}
				return true
			}, false
		default: // CSNEG
			return func(c *CPU) bool {
				if c.cond(cond) {
					c.w(rd, c.r(rn)&mask)
				} else {
					c.w(rd, -c.r(rm)&mask)
				}
				return true
			}, false
		}
	case op2 == 6:
		if insn>>29&1 != 0 {
			return undefOp(pc), true
		}
		if insn&0xffe0fc00 == 0x9ac03000 { // PACGA (pauth.go)
			return pacga(rd, rn, rm, pc), false
		}
		if insn>>30&1 == 0 {
			return decodeDP2(insn, pc, sf, rd, rn, rm, mask)
		}
		if insn&0xffff0000 == 0xdac10000 { // PAC, AUT, XPAC (pauth.go)
			return decodePAC1(insn, pc)
		}
		return decodeDP1(insn, pc, sf, rd, rn)
	case op2&8 != 0:
		return decodeDP3(insn, pc, sf, rd, rn, rm, mask)
	}
	return undefOp(pc), true
}

func decodeDP2(insn uint32, pc uint64, sf bool, rd, rn, rm uint32, mask uint64) (op, bool) {
	opc := insn >> 10 & 0x3f
	switch opc {
	case 2: // UDIV
		return func(c *CPU) bool {
			a, b := c.r(rn)&mask, c.r(rm)&mask
			if b == 0 {
				c.w(rd, 0)
			} else {
				c.w(rd, a/b)
			}
			return true
		}, false
	case 3: // SDIV
		return func(c *CPU) bool {
			if sf {
				a, b := int64(c.r(rn)), int64(c.r(rm))
				switch {
				case b == 0:
					c.w(rd, 0)
				case b == -1:
					c.w(rd, uint64(-a))
				default:
					c.w(rd, uint64(a/b))
				}
				return true
			}
			a, b := int32(c.r(rn)), int32(c.r(rm))
			switch {
			case b == 0:
				c.w(rd, 0)
			case b == -1:
				c.w(rd, uint64(uint32(-a)))
			default:
				c.w(rd, uint64(uint32(a/b)))
			}
			return true
		}, false
	case 8, 9, 10, 11: // LSLV, LSRV, ASRV, RORV
		typ := opc & 3
		m := uint64(63)
		if !sf {
			m = 31
		}
		return func(c *CPU) bool { c.w(rd, aluShift(sf, c.r(rn), typ, uint32(c.r(rm)&m))&mask); return true }, false
	case 16, 17, 18, 19, 20, 21, 22, 23: // CRC32{B,H,W,X}, CRC32C{B,H,W,X}
		sz := opc & 3
		if (sz == 3) != sf {
			return undefOp(pc), true
		}
		tab := crc32.IEEETable
		if opc&4 != 0 {
			tab = crc32.MakeTable(crc32.Castagnoli)
		}
		n := 1 << sz
		return func(c *CPU) bool {
			v := c.r(rm)
			var b [8]byte
			for i := 0; i < n; i++ {
				b[i] = byte(v >> (8 * i))
			}
			// The instruction has no pre/post inversion; crc32.Update inverts both.
			acc := ^crc32.Update(^uint32(c.r(rn)), tab, b[:n])
			c.w(rd, uint64(acc))
			return true
		}, false
	}
	return undefOp(pc), true
}

func decodeDP1(insn uint32, pc uint64, sf bool, rd, rn uint32) (op, bool) {
	if insn>>16&31 != 0 {
		return undefOp(pc), true
	}
	switch insn >> 10 & 0x3f {
	case 0: // RBIT
		if sf {
			return func(c *CPU) bool { c.w(rd, bits.Reverse64(c.r(rn))); return true }, false
		}
		return func(c *CPU) bool { c.w(rd, uint64(bits.Reverse32(uint32(c.r(rn))))); return true }, false
	case 1: // REV16
		return func(c *CPU) bool {
			v := c.r(rn)
			v = (v>>8)&0x00ff00ff00ff00ff | (v&0x00ff00ff00ff00ff)<<8
			if !sf {
				v &= 0xffffffff
			}
			c.w(rd, v)
			return true
		}, false
	case 2: // REV32 (64-bit) or REV (32-bit)
		return func(c *CPU) bool {
			v := c.r(rn)
			v = uint64(bits.ReverseBytes32(uint32(v>>32)))<<32 | uint64(bits.ReverseBytes32(uint32(v)))
			if !sf {
				v &= 0xffffffff
			}
			c.w(rd, v)
			return true
		}, false
	case 3:
		if !sf {
			return undefOp(pc), true
		}
		return func(c *CPU) bool { c.w(rd, bits.ReverseBytes64(c.r(rn))); return true }, false
	case 4: // CLZ
		if sf {
			return func(c *CPU) bool { c.w(rd, uint64(bits.LeadingZeros64(c.r(rn)))); return true }, false
		}
		return func(c *CPU) bool { c.w(rd, uint64(bits.LeadingZeros32(uint32(c.r(rn))))); return true }, false
	case 5: // CLS
		if sf {
			return func(c *CPU) bool {
				v := c.r(rn)
				c.w(rd, uint64(bits.LeadingZeros64(v^v<<1|1)))
				return true
			}, false
		}
		return func(c *CPU) bool {
			v := uint32(c.r(rn))
			c.w(rd, uint64(bits.LeadingZeros32(v^v<<1|1)))
			return true
		}, false
	}
	return undefOp(pc), true
}

func decodeDP3(insn uint32, pc uint64, sf bool, rd, rn, rm uint32, mask uint64) (op, bool) {
	ra := insn >> 10 & 31
	sub := insn>>15&1 == 1
	op31 := insn >> 21 & 7
	if insn>>29&3 != 0 {
		return undefOp(pc), true
	}
	switch op31 {
	case 0: // MADD/MSUB
		if sub {
			return func(c *CPU) bool { c.w(rd, (c.r(ra)-c.r(rn)*c.r(rm))&mask); return true }, false
		}
		return func(c *CPU) bool { c.w(rd, (c.r(ra)+c.r(rn)*c.r(rm))&mask); return true }, false
	}
	if !sf {
		return undefOp(pc), true
	}
	switch op31 {
	case 1: // SMADDL/SMSUBL
		return func(c *CPU) bool {
			p := uint64(int64(int32(c.r(rn))) * int64(int32(c.r(rm))))
			if sub {
				c.w(rd, c.r(ra)-p)
			} else {
				c.w(rd, c.r(ra)+p)
			}
			return true
		}, false
	case 5: // UMADDL/UMSUBL
		return func(c *CPU) bool {
			p := uint64(uint32(c.r(rn))) * uint64(uint32(c.r(rm)))
			if sub {
				c.w(rd, c.r(ra)-p)
			} else {
				c.w(rd, c.r(ra)+p)
			}
			return true
		}, false
	case 2: // SMULH
		if sub {
			break
		}
		return func(c *CPU) bool {
			a, b := int64(c.r(rn)), int64(c.r(rm))
			hi, _ := bits.Mul64(uint64(a), uint64(b))
			// Signed correction of the unsigned high product.
			if a < 0 {
				hi -= uint64(b)
			}
			if b < 0 {
				hi -= uint64(a)
			}
			c.w(rd, hi)
			return true
		}, false
	case 6: // UMULH
		if sub {
			break
		}
		return func(c *CPU) bool {
			hi, _ := bits.Mul64(c.r(rn), c.r(rm))
			c.w(rd, hi)
			return true
		}, false
	}
	return undefOp(pc), true
}

package arm

// Instruction fusion: a flag-setting add/subtract (CMP/CMN, or ADDS/SUBS such as a
// loop counter's "subs x1, x1, #1"; immediate or unshifted register) followed by B.cond
// is the commonest block ending; translating the pair as one helper saves a dispatch
// and keeps the flags in registers between the two.

// fuseCmpBranch returns a helper for the ADDS/SUBS at pc followed by the B.cond in next,
// or nil when the pair is not of the fused forms.
func fuseCmpBranch(insn, next uint32, pc uint64) op {
	if next>>24 != 0x54 || next>>4&1 != 0 {
		return nil
	}
	cond := next & 15
	target := pc + 4 + signExt(uint64(next>>5&0x7ffff)<<2, 21)
	fall := pc + 8
	rn := insn >> 5 & 31
	rd := insn & 31
	sf := insn>>31 == 1
	sub := insn>>30&1 == 1
	carry := uint64(0)
	if sub {
		carry = 1
	}
	switch {
	case insn>>23&0x3f == 0x22 && insn>>29&1 == 1: // ADDS/SUBS (immediate)
		imm := uint64(insn >> 10 & 0xfff)
		if insn>>22&1 == 1 {
			imm <<= 12
		}
		if sub {
			imm = ^imm
		}
		if sf {
			return func(c *CPU) bool {
				r, f := add64(c.rsp(rn), imm, carry)
				c.w(rd, r)
				c.NZCV = f
				c.PC = branchIf(f, cond, target, fall)
				return false
			}
		}
		return func(c *CPU) bool {
			r, f := add32(c.rsp(rn), imm, carry)
			c.w(rd, r)
			c.NZCV = f
			c.PC = branchIf(f, cond, target, fall)
			return false
		}
	case insn>>24&0x1f == 0x0b && insn>>29&1 == 1 && insn>>21&7 == 0 && insn>>10&0x3f == 0: // ADDS/SUBS (register, LSL #0)
		rm := insn >> 16 & 31
		inv := uint64(0)
		if sub {
			inv = ^uint64(0)
		}
		if sf {
			return func(c *CPU) bool {
				r, f := add64(c.r(rn), c.r(rm)^inv, carry)
				c.w(rd, r)
				c.NZCV = f
				c.PC = branchIf(f, cond, target, fall)
				return false
			}
		}
		return func(c *CPU) bool {
			r, f := add32(c.r(rn), c.r(rm)^inv, carry)
			c.w(rd, r)
			c.NZCV = f
			c.PC = branchIf(f, cond, target, fall)
			return false
		}
	}
	return nil
}

func branchIf(nzcv uint64, cond uint32, target, fall uint64) uint64 {
	if condMask[cond]>>(nzcv>>28&15)&1 != 0 {
		return target
	}
	return fall
}

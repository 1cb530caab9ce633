package arm

import (
	"unsafe"

	"gemu/tcg"
)

// Scalar FP arithmetic as tcg.OpFloat: the host's SSE/FMA instruction for ordinary
// operands, the exact helper (fpAddSub, fpMul, fpDiv, fpMulAdd) for the rest. In make
// bench-tcg FMADD, FMUL, FMSUB, FADD, FSUB and FDIV were 17% of all helper calls.

var (
	offFPCR = unsafe.Offsetof(CPU{}.State) + unsafe.Offsetof(State{}.FPCR)
	offFPSR = unsafe.Offsetof(CPU{}.State) + unsafe.Offsetof(State{}.FPSR)
)

// lowerFP lowers FADD, FSUB, FMUL, FDIV and FMADD, FMSUB, FNMADD, FNMSUB of S and D
// registers; the caller has checked that FP is enabled.
func lowerFP(b *tcg.Builder[CPU], insn uint32) bool {
	d, n, m := insn&31, insn>>5&31, insn>>16&31
	var sz, size int
	switch insn >> 22 & 3 {
	case 0:
		sz, size = fpS, 4
	case 1:
		sz, size = fpD, 8
	default:
		return false
	}
	mask := fpMask(sz)
	switch {
	case insn&0xff200c00 == 0x1e200800 && insn>>12&15 < 4: // FMUL, FDIV, FADD, FSUB (scalar)
		opc := insn >> 12 & 15
		f := fp2Op(opc, sz)
		fop := [4]tcg.FloatOp{tcg.FloatMul, tcg.FloatDiv, tcg.FloatAdd, tcg.FloatSub}[opc]
		b.Float(fop, t1, vreg(n, 0), vreg(m, 0), size, offFPCR, func(c *CPU) bool {
			c.temps[1] = f(c.V[n][0]&mask, c.V[m][0]&mask, c.FPCR, &c.FPSR)
			return true
		})
	case insn&0xff000000 == 0x1f000000: // FMADD, FMSUB, FNMADD, FNMSUB
		ra := insn >> 10 & 31
		sb := fpSignBit(sz)
		var negA, negN uint64
		switch insn>>21&1<<1 | insn>>15&1 {
		case 1: // FMSUB: Ra - Rn*Rm
			negN = sb
		case 2: // FNMADD: -Ra - Rn*Rm
			negA, negN = sb, sb
		case 3: // FNMSUB: -Ra + Rn*Rm
			negA = sb
		}
		b.Mov(t1, vreg(ra, 0))
		if negA != 0 {
			b.Bin(tcg.OpXor, t1, t1, tcg.Imm(negA))
		}
		x := vreg(n, 0)
		if negN != 0 {
			b.Bin(tcg.OpXor, t2, x, tcg.Imm(negN))
			x = t2
		}
		b.Float(tcg.FloatMulAdd, t1, x, vreg(m, 0), size, offFPCR, func(c *CPU) bool {
			c.temps[1] = fpMulAdd(sz, (c.V[ra][0]&mask)^negA, (c.V[n][0]&mask)^negN, c.V[m][0]&mask, c.FPCR, &c.FPSR)
			return true
		})
	default:
		return false
	}
	b.Mov(vreg(d, 0), t1)
	b.Mov(vreg(d, 1), tcg.Imm(0))
	return true
}

package arm

import "gemu/tcg"

// AdvSIMD integer three-same operations as tcg.OpVec (one SSE2 instruction each on the
// host): in make bench-tcg ADD (4S) and EOR (16B) were 6.1% and 5.3% of all helper
// calls and MOV (ORR of one register) 2.3% (chacha20, aes-gcm's GHASH and CTR).

// lowerVec lowers ADD, SUB, AND, BIC, ORR (MOV) and EOR (vector); the caller has
// checked that FP is enabled.
func lowerVec(b *tcg.Builder[CPU], insn uint32) bool {
	if insn&0x9f200400 != 0x0e200400 {
		return false
	}
	q, u, size, opc := insn>>30&1, insn>>29&1, insn>>22&3, insn>>11&31
	d, n, m := insn&31, insn>>5&31, insn>>16&31
	width := 8 << q
	var op tcg.VecOp
	lane := 1 << size
	switch {
	case opc == 0b10000 && (size != 3 || q == 1): // ADD, SUB
		op = [2]tcg.VecOp{tcg.VecAdd, tcg.VecSub}[u]
	case opc == 0b00011 && u == 0 && size < 3: // AND, BIC, ORR
		op = [3]tcg.VecOp{tcg.VecAnd, tcg.VecAndNot, tcg.VecOr}[size]
		lane = 8
	case opc == 0b00011 && u == 1 && size == 0: // EOR
		op, lane = tcg.VecXor, 8
	default:
		return false
	}
	b.Vec(op, vreg(d, 0), vreg(n, 0), vreg(m, 0), lane, width)
	return true
}

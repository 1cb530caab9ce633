package tcg

// emitVec compiles OpVec (vec.go): both operands into XMM0 and XMM1 (MOVDQU, or MOVQ
// for an 8-byte width, which zeroes the high half), one SSE2 instruction, MOVDQU of
// XMM0 to D (the high half of an 8-byte result is the op on zeros: zero).
func emitVec[E any](a *emitter, op *Op[E]) bool {
	if !vecOK(op) {
		return false
	}
	x, y := uintptr(op.A.v), uintptr(op.B.v)
	vop := VecOp(op.Mode)
	if vop == VecAndNot { // PANDN is ^XMM0 & XMM1: B into XMM0, A into XMM1
		x, y = y, x
	}
	for k, off := range []uintptr{x, y} {
		if op.Off == 16 {
			a.bytes(0xf3)
			a.env(false, k, off, 0x0f, 0x6f) // movdqu xmmK, [off]
		} else {
			a.bytes(0xf3)
			a.env(false, k, off, 0x0f, 0x7e) // movq xmmK, [off]
		}
	}
	var opc byte
	switch vop {
	case VecAdd:
		opc = [...]byte{1: 0xfc, 2: 0xfd, 4: 0xfe, 8: 0xd4}[op.Size] // paddb/w/d/q
	case VecSub:
		opc = [...]byte{1: 0xf8, 2: 0xf9, 4: 0xfa, 8: 0xfb}[op.Size] // psubb/w/d/q
	case VecAnd:
		opc = 0xdb // pand
	case VecOr:
		opc = 0xeb // por
	case VecXor:
		opc = 0xef // pxor
	case VecAndNot:
		opc = 0xdf // pandn
	}
	a.bytes(0x66, 0x0f, opc, 0xc1) // op xmm0, xmm1
	a.bytes(0xf3)
	a.env(false, 0, uintptr(op.D.v), 0x0f, 0x7f) // movdqu [D], xmm0
	return true
}

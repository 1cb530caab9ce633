package tcg

import (
	"fmt"
	"unsafe"
)

// 128-bit vector operations on guest SIMD registers. A vector operand is a global: the
// 16 bytes at its offset (low 64 bits first, the target's layout for a 128-bit
// register in two little-endian words). Lanes are Op.Size bytes (1, 2, 4 or 8); Op.Off
// is the width, 16 bytes or 8 (the low half; D's high half is then zeroed).

// OpVec computes D = A op B lane by lane, op being VecOp(Op.Mode). Natively one SSE2
// instruction on XMM registers.
const OpVec Opcode = OpFloat + 1

// VecOp is the Op.Mode of OpVec.
type VecOp uint8

const (
	VecAdd    VecOp = iota + 1 // wrapping add per lane
	VecSub                     // wrapping subtract per lane
	VecAnd                     // bitwise (lane size irrelevant)
	VecOr                      //
	VecXor                     //
	VecAndNot                  // A & ^B
)

// Vec emits an OpVec: D = A op B on width (8 or 16) bytes in lanes of lane bytes.
func (b *Builder[E]) Vec(op VecOp, d, a, x Arg, lane, width int) {
	b.emit(Op[E]{Opc: OpVec, D: d, A: a, B: x, Size: uint8(lane), Off: uint64(width), Mode: uint8(op)})
}

func vecOK[E any](op *Op[E]) bool {
	return op.D.kind == argGlobal && op.A.kind == argGlobal && op.B.kind == argGlobal &&
		(op.Size == 1 || op.Size == 2 || op.Size == 4 || op.Size == 8) && (op.Off == 8 || op.Off == 16) &&
		op.Mode >= uint8(VecAdd) && op.Mode <= uint8(VecAndNot)
}

// vecWord computes one 64-bit word of OpVec: lanes whose top bits are h.
func vecWord(op VecOp, a, b, h uint64) uint64 {
	switch op {
	case VecAdd: // the low bits of each lane added, the top bit as a carry-less sum
		return (a&^h + b&^h) ^ (a^b)&h
	case VecSub:
		return (a | h - b&^h) ^ (a^^b)&h
	case VecAnd:
		return a & b
	case VecOr:
		return a | b
	case VecXor:
		return a ^ b
	}
	return a &^ b
}

// laneTops has the top bit of every lane of size 1, 2, 4 or 8 bytes.
func laneTops(size uint8) uint64 {
	switch size {
	case 1:
		return 0x8080808080808080
	case 2:
		return 0x8000800080008000
	case 4:
		return 0x8000000080000000
	}
	return 0x8000000000000000
}

func compileVec[E any](t *Target[E], op *Op[E]) (func(*E) bool, error) {
	if !vecOK(op) {
		return nil, fmt.Errorf("tcg: malformed IR op %v", op)
	}
	d, a, b := uintptr(op.D.v), uintptr(op.A.v), uintptr(op.B.v)
	vop, h, wide := VecOp(op.Mode), laneTops(op.Size), op.Off == 16
	return func(e *E) bool {
		p := unsafe.Pointer(e)
		lo := vecWord(vop, *word(p, a), *word(p, b), h)
		hi := uint64(0)
		if wide {
			hi = vecWord(vop, *word(p, a+8), *word(p, b+8), h)
		}
		*word(p, d), *word(p, d+8) = lo, hi
		return true
	}, nil
}

package tcg

import "fmt"

// Floating-point arithmetic with a host fast path. Guest FP semantics (NaN
// propagation, flush-to-zero, rounding modes, exception flags) differ between
// architectures and from the host's in the corner cases, but not for ordinary
// operands: round-to-nearest on normal numbers giving a normal result is IEEE 754's
// one answer everywhere, and the only exception it can raise is inexact. OpFloat is
// that common case as one op, with the frontend's exact Go implementation (Op.Helper)
// for everything else.

// OpFloat computes D from A and B (and D itself for FloatMulAdd) as IEEE binary32
// (Size 4, on the low 32 bits; D's upper half zeroed) or binary64 (Size 8), rounded
// to nearest even, when all of these hold: the control word at Op.Off is zero, the
// status word at Target.FPStatus has a bit of Target.FPInexact set, every input is a
// normal number, and the result is a normal number above the smallest exponent.
// Otherwise the backend calls Op.Helper, which computes D (and whatever flags) by the
// guest's rules; it must give the same D in the common case, and may read the inputs
// from anywhere (D still holds its input value then) but write only D and guest
// registers. The op is FloatOp(Op.Mode).
const OpFloat Opcode = OpFlagsAddC + 1

// FloatOp is the Op.Mode of OpFloat.
type FloatOp uint8

const (
	FloatAdd    FloatOp = iota + 1 // D = A + B
	FloatSub                       // D = A - B
	FloatMul                       // D = A * B
	FloatDiv                       // D = A / B
	FloatMulAdd                    // D = D + A * B, fused (one rounding)
)

// Float emits an OpFloat.
func (b *Builder[E]) Float(op FloatOp, d, a, x Arg, size int, control uintptr, slow func(env *E) bool) {
	b.emit(Op[E]{Opc: OpFloat, D: d, A: a, B: x, Size: uint8(size), Mode: uint8(op), Off: uint64(control), Helper: slow, Pure: true})
}

func floatOK[E any](t *Target[E], op *Op[E]) bool {
	return (op.Size == 4 || op.Size == 8) && op.Mode >= uint8(FloatAdd) && op.Mode <= uint8(FloatMulAdd) &&
		op.Helper != nil && t.FPStatus != 0 && t.FPInexact != 0
}

// compileFloat is the closure backend's OpFloat: the helper, which is exact for every
// input.
func compileFloat[E any](t *Target[E], op *Op[E]) (func(*E) bool, error) {
	_, okd := loc(t, op.D)
	a, b := mkOperand(t, op.A), mkOperand(t, op.B)
	if !okd || !a.valid || !b.valid || !floatOK(t, op) {
		return nil, fmt.Errorf("tcg: malformed IR op %v", op)
	}
	return op.Helper, nil
}

// floatFast reports whether OpFloat's fast path applies to inputs xs and result r
// (size 4 or 8 bytes), and is what the native code checks.
func floatFast(size int, r uint64, xs ...uint64) bool {
	exp := func(v uint64) uint64 {
		if size == 4 {
			return v >> 23 & 0xff
		}
		return v >> 52 & 0x7ff
	}
	max := uint64(0x7fe)
	if size == 4 {
		max = 0xfe
	}
	for _, x := range xs {
		if exp(x)-1 > max-1 {
			return false
		}
	}
	return exp(r)-2 <= max-2
}

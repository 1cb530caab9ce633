package tcg

import (
	"fmt"
	"math/bits"
	"sync/atomic"
	"unsafe"
)

// The first backend: each IR op becomes a Go closure specialised for its operands
// (offsets and immediates captured as constants), and a block is the slice of those
// closures run in order until one ends the block. Helper calls are the target's own
// closures, called directly without a wrapper.

// compileClosure compiles a block's IR with the closure backend. The returned function
// runs the block on env. The IR must end with an exit (or a helper that ends the block).
func compileClosure[E any](t *Target[E], ops []Op[E]) (func(env *E), error) {
	fs, err := closureFuncs(t, ops)
	if err != nil {
		return nil, err
	}
	return unroll(fs), nil
}

// closureFuncs compiles ops into closures, fusing common sequences; each returns false
// when it ended the block.
func closureFuncs[E any](t *Target[E], ops []Op[E]) ([]func(*E) bool, error) {
	fs := make([]func(*E) bool, 0, len(ops))
	for i := 0; i < len(ops); i++ {
		if f, n := fuse(t, ops[i:]); n > 0 {
			fs = append(fs, f)
			i += n - 1
			continue
		}
		f, err := compileOp(t, &ops[i])
		if err != nil {
			return nil, err
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// unroll joins a block's closures into the block function.
func unroll[E any](fs []func(*E) bool) func(*E) {
	// Short blocks (most of them) get straight-line closures: no loop state to keep
	// across the calls, and one call site per position.
	switch len(fs) {
	case 1:
		f0 := fs[0]
		return func(e *E) { f0(e) }
	case 2:
		f0, f1 := fs[0], fs[1]
		return func(e *E) { _ = f0(e) && f1(e) }
	case 3:
		f0, f1, f2 := fs[0], fs[1], fs[2]
		return func(e *E) { _ = f0(e) && f1(e) && f2(e) }
	case 4:
		f0, f1, f2, f3 := fs[0], fs[1], fs[2], fs[3]
		return func(e *E) { _ = f0(e) && f1(e) && f2(e) && f3(e) }
	case 5:
		f0, f1, f2, f3, f4 := fs[0], fs[1], fs[2], fs[3], fs[4]
		return func(e *E) { _ = f0(e) && f1(e) && f2(e) && f3(e) && f4(e) }
	case 6:
		f0, f1, f2, f3, f4, f5 := fs[0], fs[1], fs[2], fs[3], fs[4], fs[5]
		return func(e *E) { _ = f0(e) && f1(e) && f2(e) && f3(e) && f4(e) && f5(e) }
	case 7:
		f0, f1, f2, f3, f4, f5, f6 := fs[0], fs[1], fs[2], fs[3], fs[4], fs[5], fs[6]
		return func(e *E) { _ = f0(e) && f1(e) && f2(e) && f3(e) && f4(e) && f5(e) && f6(e) }
	case 8:
		f0, f1, f2, f3, f4, f5, f6, f7 := fs[0], fs[1], fs[2], fs[3], fs[4], fs[5], fs[6], fs[7]
		return func(e *E) { _ = f0(e) && f1(e) && f2(e) && f3(e) && f4(e) && f5(e) && f6(e) && f7(e) }
	}
	return func(e *E) {
		for _, f := range fs {
			if !f(e) {
				return
			}
		}
	}
}

// loc returns the environment offset of a global or temporary.
func loc[E any](t *Target[E], a Arg) (uintptr, bool) {
	switch a.kind {
	case argGlobal:
		return uintptr(a.v), true
	case argTemp:
		if a.v < MaxTemps {
			return t.Temps + 8*uintptr(a.v), true
		}
	}
	return 0, false
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func word(p unsafe.Pointer, off uintptr) *uint64 { return (*uint64)(unsafe.Add(p, off)) }

// operand returns a reader for an argument: immediates become constants.
type operand struct {
	imm   bool
	v     uint64
	off   uintptr
	valid bool
}

func mkOperand[E any](t *Target[E], a Arg) operand {
	if v, ok := a.IsImm(); ok {
		return operand{imm: true, v: v, valid: true}
	}
	off, ok := loc(t, a)
	return operand{off: off, valid: ok}
}

func (o operand) read(p unsafe.Pointer) uint64 {
	if o.imm {
		return o.v
	}
	return *word(p, o.off)
}

func compileOp[E any](t *Target[E], op *Op[E]) (func(*E) bool, error) {
	bad := func() (func(*E) bool, error) { return nil, fmt.Errorf("tcg: malformed IR op %v", op) }
	switch op.Opc {
	case OpCall:
		if op.Helper == nil {
			return bad()
		}
		return op.Helper, nil
	case OpExit:
		a := mkOperand(t, op.A)
		if !a.valid {
			return bad()
		}
		pcOff := t.PC
		if a.imm {
			v := a.v
			return func(e *E) bool { *word(unsafe.Pointer(e), pcOff) = v; return false }, nil
		}
		return func(e *E) bool { p := unsafe.Pointer(e); *word(p, pcOff) = a.read(p); return false }, nil
	case OpExitZ, OpExitNZ:
		a := mkOperand(t, op.A)
		target, ok := op.B.IsImm()
		if !a.valid || !ok {
			return bad()
		}
		nz := op.Opc == OpExitNZ
		pcOff := t.PC
		return func(e *E) bool {
			p := unsafe.Pointer(e)
			if (a.read(p) != 0) == nz {
				*word(p, pcOff) = target
				return false
			}
			return true
		}, nil
	case OpLoad:
		return compileLoad(t, op)
	case OpStore:
		return compileStore(t, op)
	case OpFlagsAdd, OpFlagsSub, OpFlagsLogic:
		return compileSized(t, op, flagsValue)
	case OpFlagsAddC:
		return compileFlagsAddC(t, op)
	case OpFloat:
		return compileFloat(t, op)
	case OpVec:
		return compileVec(t, op)
	case OpUdiv, OpSdiv:
		return compileSized(t, op, divValue)
	case OpFence:
		// Any locked read-modify-write is a full barrier on the hosts Go supports
		// with sequentially consistent atomics; adding 0 to the vCPU's own first
		// temporary changes nothing and touches no shared cache line.
		tw := t.Temps
		return func(e *E) bool { atomic.AddUint32((*uint32)(unsafe.Add(unsafe.Pointer(e), tw)), 0); return true }, nil
	}
	d, okd := loc(t, op.D)
	a := mkOperand(t, op.A)
	if !okd || !a.valid {
		return bad()
	}
	switch op.Opc {
	case OpMov:
		if a.imm {
			v := a.v
			return func(e *E) bool { *word(unsafe.Pointer(e), d) = v; return true }, nil
		}
		s := a.off
		return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = *word(p, s); return true }, nil
	case OpZext32:
		return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = uint64(uint32(a.read(p))); return true }, nil
	case OpSext32:
		return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = uint64(int64(int32(a.read(p)))); return true }, nil
	case OpBswap:
		return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = bits.ReverseBytes64(a.read(p)); return true }, nil
	case OpClz:
		return func(e *E) bool {
			p := unsafe.Pointer(e)
			*word(p, d) = uint64(bits.LeadingZeros64(a.read(p)))
			return true
		}, nil
	}
	b := mkOperand(t, op.B)
	if !b.valid || a.imm {
		return bad()
	}
	s := a.off
	if b.imm {
		v := b.v
		switch op.Opc {
		case OpAdd:
			return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = *word(p, s) + v; return true }, nil
		case OpSub:
			return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = *word(p, s) - v; return true }, nil
		case OpAnd:
			return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = *word(p, s) & v; return true }, nil
		case OpOr:
			return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = *word(p, s) | v; return true }, nil
		case OpXor:
			return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = *word(p, s) ^ v; return true }, nil
		case OpShl:
			v &= 63
			return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = *word(p, s) << v; return true }, nil
		case OpShr:
			v &= 63
			return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = *word(p, s) >> v; return true }, nil
		case OpSar:
			v &= 63
			return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = uint64(int64(*word(p, s)) >> v); return true }, nil
		case OpMul:
			return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = *word(p, s) * v; return true }, nil
		case OpSetEq:
			return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = b2u(*word(p, s) == v); return true }, nil
		case OpSetLtu:
			return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = b2u(*word(p, s) < v); return true }, nil
		case OpMulHu, OpMulHs:
			signed := op.Opc == OpMulHs
			return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = mulHigh(*word(p, s), v, signed); return true }, nil
		}
		return bad()
	}
	x := b.off
	switch op.Opc {
	case OpAdd:
		return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = *word(p, s) + *word(p, x); return true }, nil
	case OpSub:
		return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = *word(p, s) - *word(p, x); return true }, nil
	case OpAnd:
		return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = *word(p, s) & *word(p, x); return true }, nil
	case OpOr:
		return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = *word(p, s) | *word(p, x); return true }, nil
	case OpXor:
		return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = *word(p, s) ^ *word(p, x); return true }, nil
	case OpShl:
		return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = *word(p, s) << (*word(p, x) & 63); return true }, nil
	case OpShr:
		return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = *word(p, s) >> (*word(p, x) & 63); return true }, nil
	case OpSar:
		return func(e *E) bool {
			p := unsafe.Pointer(e)
			*word(p, d) = uint64(int64(*word(p, s)) >> (*word(p, x) & 63))
			return true
		}, nil
	case OpMul:
		return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = *word(p, s) * *word(p, x); return true }, nil
	case OpSetEq:
		return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = b2u(*word(p, s) == *word(p, x)); return true }, nil
	case OpSetLtu:
		return func(e *E) bool { p := unsafe.Pointer(e); *word(p, d) = b2u(*word(p, s) < *word(p, x)); return true }, nil
	case OpMulHu, OpMulHs:
		signed := op.Opc == OpMulHs
		return func(e *E) bool {
			p := unsafe.Pointer(e)
			*word(p, d) = mulHigh(*word(p, s), *word(p, x), signed)
			return true
		}, nil
	}
	return bad()
}

// mulHigh is the high half of the 128-bit product of a and b (OpMulHu, OpMulHs).
func mulHigh(a, b uint64, signed bool) uint64 {
	hi, _ := bits.Mul64(a, b)
	if signed { // the two's complement correction of each negative operand
		hi -= a & uint64(int64(b)>>63)
		hi -= b & uint64(int64(a)>>63)
	}
	return hi
}

// flagsAddCValue computes OpFlagsAddC: the NZCV flags of a + b + (the C bit of old) on
// size bytes.
func flagsAddCValue(a, b, old uint64, size int) uint64 {
	cin := old >> 29 & 1
	var r, c, v uint64
	if size == 4 {
		s := uint64(uint32(a)) + uint64(uint32(b)) + cin
		r, c = s<<32, s>>32
		v = ((a ^ s) & (b ^ s)) >> 31 & 1
	} else {
		r, c = bits.Add64(a, b, cin)
		v = ((a ^ r) & (b ^ r)) >> 63
	}
	return r>>63<<31 | b2u(r == 0)<<30 | c<<29 | v<<28
}

func compileFlagsAddC[E any](t *Target[E], op *Op[E]) (func(*E) bool, error) {
	d, okd := loc(t, op.D)
	a, b := mkOperand(t, op.A), mkOperand(t, op.B)
	if !okd || !a.valid || !b.valid || op.Size != 4 && op.Size != 8 || !op.modeOK() {
		return nil, fmt.Errorf("tcg: malformed IR op %v", op)
	}
	size := int(op.Size)
	return func(e *E) bool {
		p := unsafe.Pointer(e)
		*word(p, d) = flagsAddCValue(a.read(p), b.read(p), *word(p, d), size)
		return true
	}, nil
}

func compileLoad[E any](t *Target[E], op *Op[E]) (func(*E) bool, error) {
	d, okd := loc(t, op.D)
	a := mkOperand(t, op.A)
	if _, _, _, ok := t.memPath(op); !okd || !a.valid || !ok {
		return nil, fmt.Errorf("tcg: malformed IR op %v", op)
	}
	switch op.Size {
	case 1:
		return loadOp[E, uint8](t, op, d, a), nil
	case 2:
		return loadOp[E, uint16](t, op, d, a), nil
	case 4:
		return loadOp[E, uint32](t, op, d, a), nil
	case 8:
		return loadOp[E, uint64](t, op, d, a), nil
	}
	return nil, fmt.Errorf("tcg: bad load size in %v", op)
}

func loadOp[E any, T uint8 | uint16 | uint32 | uint64](t *Target[E], op *Op[E], d uintptr, a operand) func(*E) bool {
	size := int(unsafe.Sizeof(T(0)))
	align := uint64(size - 1)
	tlbOff, slow, _, _ := t.memPath(op)
	off, pc, pcOff := op.Off, op.PC, t.PC
	shift := 64 - 8*uint(size)
	signed := op.Signed && size < 8
	// load performs the access at va: TLB fast path, else the target's slow path.
	load := func(p unsafe.Pointer, e *E, va uint64) bool {
		tlb := *(**TLB)(unsafe.Add(p, tlbOff))
		ent := &tlb.E[(va>>PageBits)&(1<<TLBBits-1)]
		var v uint64
		if ent.Read == va&(PageMask|align) {
			v = uint64(*(*T)(unsafe.Add(ent.Host, va&(PageSize-1))))
		} else {
			*word(p, pcOff) = pc
			var ok bool
			if v, ok = slow(e, va, size); !ok {
				return false
			}
		}
		if signed {
			v = uint64(int64(v<<shift) >> shift)
		}
		*word(p, d) = v
		return true
	}
	if a.imm { // absolute address (PC-relative literal)
		va := a.v + off
		return func(e *E) bool { return load(unsafe.Pointer(e), e, va) }
	}
	base := a.off
	if size == 8 {
		// The commonest case, written out so that the fast path has no calls.
		return func(e *E) bool {
			p := unsafe.Pointer(e)
			va := *word(p, base) + off
			tlb := *(**TLB)(unsafe.Add(p, tlbOff))
			ent := &tlb.E[(va>>PageBits)&(1<<TLBBits-1)]
			if ent.Read == va&(PageMask|7) {
				*word(p, d) = *(*uint64)(unsafe.Add(ent.Host, va&(PageSize-1)))
				return true
			}
			return load(p, e, va)
		}
	}
	return func(e *E) bool {
		p := unsafe.Pointer(e)
		return load(p, e, *word(p, base)+off)
	}
}

func compileStore[E any](t *Target[E], op *Op[E]) (func(*E) bool, error) {
	a := mkOperand(t, op.A)
	v := mkOperand(t, op.B)
	if _, _, _, ok := t.memPath(op); !a.valid || !v.valid || !ok {
		return nil, fmt.Errorf("tcg: malformed IR op %v", op)
	}
	switch op.Size {
	case 1:
		return storeOp[E, uint8](t, op, a, v), nil
	case 2:
		return storeOp[E, uint16](t, op, a, v), nil
	case 4:
		return storeOp[E, uint32](t, op, a, v), nil
	case 8:
		return storeOp[E, uint64](t, op, a, v), nil
	}
	return nil, fmt.Errorf("tcg: bad store size in %v", op)
}

func storeOp[E any, T uint8 | uint16 | uint32 | uint64](t *Target[E], op *Op[E], a, v operand) func(*E) bool {
	size := int(unsafe.Sizeof(T(0)))
	align := uint64(size - 1)
	tlbOff, _, slow, _ := t.memPath(op)
	off, pc, pcOff := op.Off, op.PC, t.PC
	if !a.imm && !v.imm {
		base, src := a.off, v.off
		return func(e *E) bool {
			p := unsafe.Pointer(e)
			va := *word(p, base) + off
			val := *word(p, src)
			tlb := *(**TLB)(unsafe.Add(p, tlbOff))
			ent := &tlb.E[(va>>PageBits)&(1<<TLBBits-1)]
			if ent.Write == va&(PageMask|align) && atomic.LoadUint32(ent.Code)&CodeBit == 0 {
				*(*T)(unsafe.Add(ent.Host, va&(PageSize-1))) = T(val)
				return true
			}
			*word(p, pcOff) = pc
			return slow(e, va, size, val)
		}
	}
	return func(e *E) bool {
		p := unsafe.Pointer(e)
		va := a.read(p) + off
		val := v.read(p)
		tlb := *(**TLB)(unsafe.Add(p, tlbOff))
		ent := &tlb.E[(va>>PageBits)&(1<<TLBBits-1)]
		if ent.Write == va&(PageMask|align) && atomic.LoadUint32(ent.Code)&CodeBit == 0 {
			*(*T)(unsafe.Add(ent.Host, va&(PageSize-1))) = T(val)
			return true
		}
		*word(p, pcOff) = pc
		return slow(e, va, size, val)
	}
}

// fuse recognises short IR sequences that one closure can run (saving dispatches) and
// returns that closure and the number of ops it covers, or n=0.
func fuse[E any](t *Target[E], ops []Op[E]) (f func(*E) bool, n int) {
	if len(ops) < 2 {
		return nil, 0
	}
	a, b := &ops[0], &ops[1]
	pcOff := t.PC
	// Two-way conditional exit: ExitZ/ExitNZ x, taken; Exit fall.
	if (a.Opc == OpExitZ || a.Opc == OpExitNZ) && b.Opc == OpExit {
		x := mkOperand(t, a.A)
		taken, ok1 := a.B.IsImm()
		fall, ok2 := b.A.IsImm()
		if x.valid && !x.imm && ok1 && ok2 {
			src, nz := x.off, a.Opc == OpExitNZ
			return func(e *E) bool {
				p := unsafe.Pointer(e)
				if (*word(p, src) != 0) == nz {
					*word(p, pcOff) = taken
				} else {
					*word(p, pcOff) = fall
				}
				return false
			}, 2
		}
	}
	// Link and jump: Mov g, imm; Exit imm.
	if a.Opc == OpMov && b.Opc == OpExit {
		d, okd := loc(t, a.D)
		v, ok1 := a.A.IsImm()
		target, ok2 := b.A.IsImm()
		if okd && ok1 && ok2 {
			return func(e *E) bool {
				p := unsafe.Pointer(e)
				*word(p, d) = v
				*word(p, pcOff) = target
				return false
			}, 2
		}
	}
	// Insert a field: And g, g, mask; Or g, g, bits.
	if a.Opc == OpAnd && b.Opc == OpOr && a.D == a.A && b.D == a.D && b.A == a.D {
		d, okd := loc(t, a.D)
		mask, ok1 := a.B.IsImm()
		bits, ok2 := b.B.IsImm()
		if okd && ok1 && ok2 {
			return func(e *E) bool {
				p := unsafe.Pointer(e)
				*word(p, d) = *word(p, d)&mask | bits
				return true
			}, 2
		}
	}
	// Test a bit and branch: Shr t, x, bit; And t, t, 1; ExitZ/NZ t, taken; Exit fall.
	if len(ops) >= 4 && a.Opc == OpShr && b.Opc == OpAnd && b.D == a.D && b.A == a.D &&
		(ops[2].Opc == OpExitZ || ops[2].Opc == OpExitNZ) && ops[2].A == a.D && ops[3].Opc == OpExit {
		x := mkOperand(t, a.A)
		bit, ok1 := a.B.IsImm()
		one, ok2 := b.B.IsImm()
		taken, ok3 := ops[2].B.IsImm()
		fall, ok4 := ops[3].A.IsImm()
		tmp, okt := loc(t, a.D)
		if x.valid && !x.imm && ok1 && ok2 && one == 1 && ok3 && ok4 && okt {
			src, nz, sh := x.off, ops[2].Opc == OpExitNZ, bit&63
			return func(e *E) bool {
				p := unsafe.Pointer(e)
				v := *word(p, src) >> sh & 1
				*word(p, tmp) = v
				if (v != 0) == nz {
					*word(p, pcOff) = taken
				} else {
					*word(p, pcOff) = fall
				}
				return false
			}, 4
		}
	}
	return nil, 0
}

// flagsValue computes the flags ops' result (see OpFlagsAdd) for a op b on size bytes.
func flagsValue(opc Opcode, a, b uint64, size int) uint64 {
	sh := uint(64 - 8*size) // the operands' top bit moves to bit 63
	a, b = a<<sh, b<<sh
	var r, c, v uint64
	switch opc {
	case OpFlagsAdd:
		r = a + b
		c = b2u(r < a)
		v = ((a ^ r) & (b ^ r)) >> 63
	case OpFlagsSub:
		r = a - b
		c = b2u(a >= b)
		v = ((a ^ b) & (a ^ r)) >> 63
	default:
		r = a
	}
	return r>>63<<31 | b2u(r == 0)<<30 | c<<29 | v<<28
}

// compileSized compiles an op computed on the low Size (4 or 8) bytes of A and B by
// value (the flags and division ops). OpFlagsLogic has no B.
func compileSized[E any](t *Target[E], op *Op[E], value func(opc Opcode, a, b uint64, size int) uint64) (func(*E) bool, error) {
	d, okd := loc(t, op.D)
	a, b := mkOperand(t, op.A), mkOperand(t, op.B)
	if op.Opc == OpFlagsLogic {
		b = operand{imm: true, valid: true}
	}
	if !okd || !a.valid || !b.valid || op.Size != 4 && op.Size != 8 || !op.modeOK() {
		return nil, fmt.Errorf("tcg: malformed IR op %v", op)
	}
	opc, size := op.Opc, int(op.Size)
	return func(e *E) bool {
		p := unsafe.Pointer(e)
		*word(p, d) = value(opc, a.read(p), b.read(p), size)
		return true
	}, nil
}

// divValue computes OpUdiv and OpSdiv on size bytes.
func divValue(opc Opcode, a, b uint64, size int) uint64 {
	if size == 4 {
		if opc == OpUdiv {
			a, b = uint64(uint32(a)), uint64(uint32(b))
		} else {
			a, b = uint64(int64(int32(a))), uint64(int64(int32(b)))
		}
	}
	var q uint64
	switch {
	case b == 0:
	case opc == OpUdiv:
		q = a / b
	case int64(b) == -1:
		q = -a
	default:
		q = uint64(int64(a) / int64(b))
	}
	if size == 4 {
		q = uint64(uint32(q))
	}
	return q
}

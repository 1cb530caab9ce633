package tcg

import "golang.org/x/sys/cpu"

// hostFMA: the host has FMA3 (VFMADD231SD/SS), which FloatMulAdd's fast path needs.
var hostFMA = cpu.X86.HasFMA && cpu.X86.HasAVX

// emitFloat compiles OpFloat (float.go): the guards, the operands into XMM0, XMM1
// (and XMM2, the addend), one SSE or FMA instruction, the result check; any failed
// check jumps to an out-of-line exit that calls the op's helper, which computes D,
// and resumes after the op.
func emitFloat[E any](a *emitter, t *Target[E], op *Op[E], i int) bool {
	if !floatOK(t, op) {
		return false
	}
	w := op.Size == 8
	fop := FloatOp(op.Mode)
	x, y := a.src(op.A), a.src(op.B)
	var acc nop
	if fop == FloatMulAdd {
		acc = a.src(op.D)
	}
	d := a.opnd(op.D)
	a.stubs = append(a.stubs, stub{exit: int(a.exit(exCall, i)) - 1, spill: a.dirty, budget: true})
	s := &a.stubs[len(a.stubs)-1]
	slow := func(cc byte) { s.patch = append(s.patch, a.jcc(cc)) }
	if fop == FloatMulAdd && !hostFMA {
		s.patch = append(s.patch, a.jmp())
	}
	a.env(true, 7, uintptr(op.Off), 0x83) // cmp qword [control], 0
	a.bytes(0)
	slow(0x85)                        // jne
	a.env(false, 0, t.FPStatus, 0xf7) // test dword [status], inexact
	a.u32(uint32(t.FPInexact))        //
	slow(0x84)                        // jz: the helper raises IXC first
	for k, o := range []nop{x, y, acc}[:2+b2i(fop == FloatMulAdd)] {
		a.load(rAX, o)
		a.checkExp(w, 1, slow)
		a.bytes(0x66) // movq xmmK, rax / movd xmmK, eax
		a.rex(w, k, rAX)
		a.bytes(0x0f, 0x6e, 0xc0|byte(k)<<3)
	}
	pre := byte(0xf3) // ss
	if w {
		pre = 0xf2 // sd
	}
	res := 0
	switch fop {
	case FloatAdd:
		a.bytes(pre, 0x0f, 0x58, 0xc1) // addsX xmm0, xmm1
	case FloatSub:
		a.bytes(pre, 0x0f, 0x5c, 0xc1) // subsX xmm0, xmm1
	case FloatMul:
		a.bytes(pre, 0x0f, 0x59, 0xc1) // mulsX xmm0, xmm1
	case FloatDiv:
		a.bytes(pre, 0x0f, 0x5e, 0xc1) // divsX xmm0, xmm1
	case FloatMulAdd:
		vw := byte(0x79) // VEX.W0.LIG.66.0F38, vvvv = xmm0
		if w {
			vw = 0xf9 // W1
		}
		a.bytes(0xc4, 0xe2, vw, 0xb9, 0xd1) // vfmadd231sX xmm2, xmm0, xmm1: xmm2 += xmm0*xmm1
		res = 2
	}
	a.bytes(0x66) // movq rax, xmmR / movd eax, xmmR (zero-extends)
	a.rex(w, res, rAX)
	a.bytes(0x0f, 0x7e, 0xc0|byte(res)<<3)
	a.checkExp(w, 2, slow)
	a.put(d)
	x2 := &a.exits[len(a.exits)-1]
	x2.resume, x2.reload = len(a.b), a.inReg // the helper wrote D to the environment
	return true
}

// checkExp jumps through slow unless the exponent field of the FP value in RAX (binary64
// with w, else binary32) is between min and the largest finite one (uses RCX).
func (a *emitter) checkExp(w bool, min uint32, slow func(cc byte)) {
	a.bytes(0x48, 0x89, 0xc1) // mov rcx, rax
	sh, max := byte(23), uint32(0xfe)
	if w {
		sh, max = 52, 0x7fe
	}
	a.bytes(0x48, 0xc1, 0xe9, sh) // shr rcx, sh
	a.bytes(0x81, 0xe1)           // and ecx, exponent mask
	a.u32(max | 1)
	a.bytes(0x81, 0xe9) // sub ecx, min
	a.u32(min)
	a.bytes(0x81, 0xf9) // cmp ecx, max-min
	a.u32(max - min)
	slow(0x87) // ja
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

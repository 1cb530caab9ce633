package x86

import (
	"os"
	"unsafe"

	"gemu/tcg"
)

// Lowering to IR: the commonest instructions that neither read nor write arithmetic
// flags beyond a condition test, in 64-bit mode, are emitted as tcg IR ops instead of
// helper calls: MOV between 32/64-bit registers and memory (loads and stores through
// the softmmu TLB fast path, faults precise through the backends' PC store), MOV of
// immediates, LEA, PUSH/POP of 64-bit registers, NOPs, JMP/CALL rel and Jcc (the
// condition computed from the materialized RFLAGS). On the native backend a run of
// them is one machine-code segment, and the block exits to constant PCs are chained
// directly. Everything else stays a helper. The differential tests run every lowered
// form through translateBlock, so lowered and helper paths are checked alike.

// lowerALUOn selects lowering flag-setting ALU instructions (lowerALU). Only the
// native backend gains from it: there the ops become one machine-code segment, while
// the closure backend would run some thirty closures instead of one helper.
var lowerALUOn = tcg.SelectedBackend() == tcg.BackendNative && os.Getenv("GEMU_X86_LOWER_ALU") != "0"

var (
	offR      = unsafe.Offsetof(CPU{}.R)
	offRFLAGS = unsafe.Offsetof(CPU{}.RFLAGS)
)

func greg(n byte) tcg.Arg { return tcg.Global(offR + 8*uintptr(n)) }

var rflagsArg = tcg.Global(offRFLAGS)

// lowerEA emits the effective address of a memory operand into d; ok=false when the
// form is not lowered (32-bit addressing, segment overrides).
func lowerEA(b *tcg.Builder[CPU], in *insn, d tcg.Arg) bool {
	if in.adsz != 8 || in.seg >= 0 {
		return false
	}
	switch {
	case in.ripRel:
		b.Mov(d, tcg.Imm(in.disp))
	case in.base >= 0 && in.index >= 0:
		b.Bin(tcg.OpShl, d, greg(byte(in.index)), tcg.Imm(uint64(in.scale)))
		b.Bin(tcg.OpAdd, d, d, greg(byte(in.base)))
		if in.disp != 0 {
			b.Bin(tcg.OpAdd, d, d, tcg.Imm(in.disp))
		}
	case in.base >= 0:
		b.Bin(tcg.OpAdd, d, greg(byte(in.base)), tcg.Imm(in.disp))
	case in.index >= 0:
		b.Bin(tcg.OpShl, d, greg(byte(in.index)), tcg.Imm(uint64(in.scale)))
		b.Bin(tcg.OpAdd, d, d, tcg.Imm(in.disp))
	default:
		b.Mov(d, tcg.Imm(in.disp))
	}
	return true
}

// setReg32or64 emits reg = v (zero-extending a 32-bit result).
func setReg32or64(b *tcg.Builder[CPU], reg byte, size int, v tcg.Arg) {
	if size == 4 {
		b.Un(tcg.OpZext32, greg(reg), v)
	} else {
		b.Mov(greg(reg), v)
	}
}

// lower emits in as IR if it is one of the lowered forms; end says the block ends.
func lower(b *tcg.Builder[CPU], in *insn) (handled, end bool) {
	if !in.mode64 || in.lock || in.rep != 0 && !(in.mapn == 1 && in.opc == 0x1f) {
		return false, false
	}
	t0, t1, t2 := tcg.Temp(0), tcg.Temp(1), tcg.Temp(2)
	wide := in.opsz == 8 || in.opsz == 4
	o := in.opc
	if in.mapn == 1 {
		switch {
		case o == 0x1f: // NOP r/m
			return true, false
		case o >= 0x80 && o <= 0x8f:
			lowerJcc(b, in, o&0xf, in.next+in.imm)
			return true, true
		}
		return false, false
	}
	if in.mapn != 0 {
		return false, false
	}
	if lowerALUOn && lowerALU(b, in) {
		return true, false
	}
	switch {
	case (o == 0x89 || o == 0x8b) && wide:
		if !in.hasMem {
			if o == 0x89 {
				setReg32or64(b, in.rm, in.opsz, greg(in.reg))
			} else {
				setReg32or64(b, in.reg, in.opsz, greg(in.rm))
			}
			return true, false
		}
		if !lowerEA(b, in, t0) {
			return false, false
		}
		if o == 0x89 {
			b.Store(t0, 0, greg(in.reg), in.opsz)
		} else {
			b.Load(t1, t0, 0, in.opsz, false)
			b.Mov(greg(in.reg), t1)
		}
		return true, false
	case o == 0xc7 && in.reg&7 == 0 && wide:
		v := in.imm
		if in.opsz == 4 {
			v &= 0xffffffff
		}
		if !in.hasMem {
			b.Mov(greg(in.rm), tcg.Imm(v))
			return true, false
		}
		if !lowerEA(b, in, t0) {
			return false, false
		}
		b.Store(t0, 0, tcg.Imm(v), in.opsz)
		return true, false
	case o >= 0xb8 && o <= 0xbf && wide:
		reg := o&7 | (in.rex&1)<<3
		v := in.imm
		if in.opsz == 4 {
			v &= 0xffffffff
		}
		b.Mov(greg(reg), tcg.Imm(v))
		return true, false
	case o == 0x8d && wide && in.hasMem:
		if in.adsz != 8 {
			return false, false
		}
		save := in.seg
		in.seg = -1 // LEA ignores segments
		ok := lowerEA(b, in, t0)
		in.seg = save
		if !ok {
			return false, false
		}
		setReg32or64(b, in.reg, in.opsz, t0)
		return true, false
	case o >= 0x50 && o <= 0x57 && !in.pfx66:
		reg := o&7 | (in.rex&1)<<3
		b.Bin(tcg.OpSub, t0, greg(4), tcg.Imm(8))
		b.Store(t0, 0, greg(reg), 8)
		b.Mov(greg(4), t0)
		return true, false
	case o >= 0x58 && o <= 0x5f && !in.pfx66:
		reg := o&7 | (in.rex&1)<<3
		b.Load(t1, greg(4), 0, 8, false)
		b.Bin(tcg.OpAdd, greg(4), greg(4), tcg.Imm(8))
		b.Mov(greg(reg), t1)
		return true, false
	case o == 0x90 && in.rex&1 == 0:
		return true, false
	case o == 0xe9 || o == 0xeb:
		b.Exit(tcg.Imm(in.next + in.imm))
		return true, true
	case o == 0xe8 && !in.pfx66:
		b.Bin(tcg.OpSub, t2, greg(4), tcg.Imm(8))
		b.Store(t2, 0, tcg.Imm(in.next), 8)
		b.Mov(greg(4), t2)
		b.Exit(tcg.Imm(in.next + in.imm))
		return true, true
	case o >= 0x70 && o <= 0x7f:
		lowerJcc(b, in, o&0xf, in.next+in.imm)
		return true, true
	}
	return false, false
}

// lowerJcc emits "if cc { exit to target } else { exit to next }".
func lowerJcc(b *tcg.Builder[CPU], in *insn, cc byte, target uint64) {
	t := tcg.Temp(3)
	u := tcg.Temp(4)
	switch cc >> 1 {
	case 0:
		b.Bin(tcg.OpAnd, t, rflagsArg, tcg.Imm(flagOF))
	case 1:
		b.Bin(tcg.OpAnd, t, rflagsArg, tcg.Imm(flagCF))
	case 2:
		b.Bin(tcg.OpAnd, t, rflagsArg, tcg.Imm(flagZF))
	case 3:
		b.Bin(tcg.OpAnd, t, rflagsArg, tcg.Imm(flagCF|flagZF))
	case 4:
		b.Bin(tcg.OpAnd, t, rflagsArg, tcg.Imm(flagSF))
	case 5:
		b.Bin(tcg.OpAnd, t, rflagsArg, tcg.Imm(flagPF))
	case 6, 7: // SF != OF (or ZF): OF moved onto SF's bit
		b.Bin(tcg.OpShr, t, rflagsArg, tcg.Imm(4))
		b.Bin(tcg.OpXor, t, t, rflagsArg)
		b.Bin(tcg.OpAnd, t, t, tcg.Imm(flagSF))
		if cc>>1 == 7 {
			b.Bin(tcg.OpAnd, u, rflagsArg, tcg.Imm(flagZF))
			b.Bin(tcg.OpOr, t, t, u)
		}
	}
	b.ExitIf(t, cc&1 == 0, target)
	b.Exit(tcg.Imm(in.next))
}

// lowerALU emits ADD, OR, AND, SUB, XOR, CMP and TEST on 32/64-bit registers and
// immediates (register destinations only) as IR, flags included: the result and the
// six arithmetic flags are computed with generic ops and merged into RFLAGS.
func lowerALU(b *tcg.Builder[CPU], in *insn) bool {
	if in.mapn != 0 || in.opsz < 4 || in.hasMem || in.lock {
		return false
	}
	o := in.opc
	var n byte // 0 add 1 or 4 and 5 sub 6 xor 7 cmp 8 test
	var dst byte
	var src tcg.Arg
	size := in.opsz
	m := sizeMask(size)
	switch {
	case o < 0x40 && (o&7 == 1 || o&7 == 3):
		n = o >> 3
		if o&7 == 1 {
			dst, src = in.rm, greg(in.reg)
		} else {
			dst, src = in.reg, greg(in.rm)
		}
	case o < 0x40 && o&7 == 5:
		n, dst, src = o>>3, 0, tcg.Imm(in.imm&m)
	case o == 0x81 || o == 0x83:
		n, dst, src = in.reg&7, in.rm, tcg.Imm(in.imm&m)
	case o == 0x85:
		n, dst, src = 8, in.rm, greg(in.reg)
	case o == 0xa9:
		n, dst, src = 8, 0, tcg.Imm(in.imm&m)
	default:
		return false
	}
	if n == 2 || n == 3 { // ADC, SBB: helpers
		return false
	}
	a, bb, r, f, t := tcg.Temp(0), tcg.Temp(1), tcg.Temp(2), tcg.Temp(3), tcg.Temp(4)
	if size == 4 {
		b.Un(tcg.OpZext32, a, greg(dst))
		if _, imm := src.IsImm(); imm {
			b.Mov(bb, src)
		} else {
			b.Un(tcg.OpZext32, bb, src)
		}
	} else {
		b.Mov(a, greg(dst))
		b.Mov(bb, src)
	}
	sh := uint64(8*size - 1)
	switch n {
	case 0:
		b.Bin(tcg.OpAdd, r, a, bb)
		if size == 4 {
			b.Bin(tcg.OpShr, f, r, tcg.Imm(32)) // CF: bit 32 of the 33-bit sum
			b.Un(tcg.OpZext32, r, r)
		} else {
			b.Bin(tcg.OpSetLtu, f, r, a)
		}
		// OF = ((a^r) & (b^r)) >> sh
		b.Bin(tcg.OpXor, t, a, r)
		b.Bin(tcg.OpXor, a, bb, r) // a is free from here on
		b.Bin(tcg.OpAnd, t, t, a)
	case 5, 7:
		b.Bin(tcg.OpSub, r, a, bb)
		if size == 4 {
			b.Un(tcg.OpZext32, r, r)
		}
		b.Bin(tcg.OpSetLtu, f, a, bb)
		// OF = ((a^b) & (a^r)) >> sh
		b.Bin(tcg.OpXor, t, a, bb)
		b.Bin(tcg.OpXor, a, a, r)
		b.Bin(tcg.OpAnd, t, t, a)
	default:
		opc := map[byte]tcg.Opcode{1: tcg.OpOr, 4: tcg.OpAnd, 6: tcg.OpXor, 8: tcg.OpAnd}[n]
		b.Bin(opc, r, a, bb)
		b.Mov(f, tcg.Imm(0))
		b.Mov(t, tcg.Imm(0))
	}
	// f = CF | OF<<11
	b.Bin(tcg.OpShr, t, t, tcg.Imm(sh))
	b.Bin(tcg.OpAnd, t, t, tcg.Imm(1))
	b.Bin(tcg.OpShl, t, t, tcg.Imm(11))
	b.Bin(tcg.OpOr, f, f, t)
	// AF (arithmetic only): (a^b^r) & 0x10, recomputed from the original operands.
	if n == 0 || n == 5 || n == 7 {
		if size == 4 {
			b.Un(tcg.OpZext32, a, greg(dst))
		} else {
			b.Mov(a, greg(dst))
		}
		b.Bin(tcg.OpXor, t, a, bb)
		b.Bin(tcg.OpXor, t, t, r)
		b.Bin(tcg.OpAnd, t, t, tcg.Imm(flagAF))
		b.Bin(tcg.OpOr, f, f, t)
	}
	// ZF
	b.Bin(tcg.OpSetEq, t, r, tcg.Imm(0))
	b.Bin(tcg.OpShl, t, t, tcg.Imm(6))
	b.Bin(tcg.OpOr, f, f, t)
	// SF
	b.Bin(tcg.OpShr, t, r, tcg.Imm(sh))
	b.Bin(tcg.OpShl, t, t, tcg.Imm(7))
	b.Bin(tcg.OpOr, f, f, t)
	// PF: even parity of the low byte
	b.Bin(tcg.OpAnd, t, r, tcg.Imm(0xff))
	b.Bin(tcg.OpShr, a, t, tcg.Imm(4))
	b.Bin(tcg.OpXor, t, t, a)
	b.Bin(tcg.OpShr, a, t, tcg.Imm(2))
	b.Bin(tcg.OpXor, t, t, a)
	b.Bin(tcg.OpShr, a, t, tcg.Imm(1))
	b.Bin(tcg.OpXor, t, t, a)
	b.Bin(tcg.OpAnd, t, t, tcg.Imm(1))
	b.Bin(tcg.OpXor, t, t, tcg.Imm(1))
	b.Bin(tcg.OpShl, t, t, tcg.Imm(2))
	b.Bin(tcg.OpOr, f, f, t)
	// RFLAGS = RFLAGS &^ arith | f
	b.Bin(tcg.OpAnd, t, rflagsArg, tcg.Imm(^uint64(flagsArith)))
	b.Bin(tcg.OpOr, rflagsArg, t, f)
	if n != 7 && n != 8 {
		b.Mov(greg(dst), r) // r is already zero-extended for 32-bit results
	}
	return true
}

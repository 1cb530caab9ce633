package x86

import (
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

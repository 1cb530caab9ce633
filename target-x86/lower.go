package x86

import (
	"os"
	"unsafe"

	"gemu/tcg"
)

// Lowering to IR: the commonest integer instructions in 64-bit mode are emitted as tcg
// IR ops instead of helper calls (lowerInt, lower0F): MOV/MOVZX/MOVSX/MOVSXD/LEA of
// every size with register and memory operands (loads and stores through the softmmu
// TLB fast path, faults precise through the backends' PC store: nothing of the
// instruction is committed before its last access), the ALU group with its flags,
// TEST/INC/DEC/NEG/NOT, shifts and rotates by an immediate count, IMUL, SETcc/CMOVcc,
// PUSH/POP, CALL/RET/JMP direct and indirect, Jcc (conditions computed from the
// materialized RFLAGS) and NOPs. On the native backend a run of them is one
// machine-code segment, and the block exits to constant PCs are chained directly.
// Everything else (LOCK, REP, 32-bit addressing, segment overrides other than FS/GS,
// the edge counts of shifts) stays a helper. The differential tests run every lowered
// form through translateBlock, so lowered and helper paths are checked alike.

// lowerALUOn selects lowering flag-setting instructions. Only the native backend gains
// from it: there the ops become one machine-code segment, while the closure backend
// would run some thirty closures instead of one helper.
var lowerALUOn = tcg.SelectedBackend() == tcg.BackendNative && os.Getenv("GEMU_X86_LOWER_ALU") != "0"

var (
	offR      = unsafe.Offsetof(CPU{}.R)
	offRFLAGS = unsafe.Offsetof(CPU{}.RFLAGS)
	offSeg    = unsafe.Offsetof(CPU{}.Seg)
	segSize   = unsafe.Sizeof(Segment{})
)

func greg(n byte) tcg.Arg { return tcg.Global(offR + 8*uintptr(n)) }

var rflagsArg = tcg.Global(offRFLAGS)

// The lazy-flag state (flags.go) as IR globals.
var (
	offCC                  = unsafe.Offsetof(CPU{}.cc)
	ccOpArg                = tcg.Global(offCC + unsafe.Offsetof(ccState{}.op))
	ccAArg, ccBArg, ccRArg = tcg.Global(offCC + unsafe.Offsetof(ccState{}.a)), tcg.Global(offCC + unsafe.Offsetof(ccState{}.b)), tcg.Global(offCC + unsafe.Offsetof(ccState{}.r))
	ccCArg                 = tcg.Global(offCC + unsafe.Offsetof(ccState{}.c))
	ccRCArg, ccROArg       = tcg.Global(offCC + unsafe.Offsetof(ccState{}.rc)), tcg.Global(offCC + unsafe.Offsetof(ccState{}.ro))
)

// lowerState is what the translator knows while lowering a block: the kind and size
// of the lazy flags pending in CPU.cc (ccState.op's encoding), or 0 when RFLAGS holds
// the flags.
type lowerState struct {
	pend uint64
}

// setLazy emits the lazy-flag record of a flag-setting instruction (after its last
// memory access, so that a fault leaves the previous instruction's flags): a, b, r
// and c are stored unless none.
func setLazy(b *bld, st *lowerState, kind uint64, size int, a, x, r, c tcg.Arg) {
	for _, p := range [][2]tcg.Arg{{ccAArg, a}, {ccBArg, x}, {ccRArg, r}, {ccCArg, c}} {
		if p[1] != (tcg.Arg{}) {
			b.Mov(p[0], p[1])
		}
	}
	st.pend = kind<<4 | uint64(size)
	b.Mov(ccOpArg, tcg.Imm(st.pend))
}

// flush emits the materialization of pending lazy flags into RFLAGS (and op = 0).
func flush(b *bld, st *lowerState) {
	if st.pend == 0 {
		return
	}
	kind, size, rot := st.pend>>4&0xff, int(st.pend&0xf), st.pend&ccRot != 0
	st.pend = 0
	sh := uint64(8*size - 1)
	gA, gB, gR, gC := ccAArg, ccBArg, ccRArg, ccCArg
	switch kind { // CF
	case ccAdd, ccAdc:
		b.Bin(tcg.OpSetLtu, tF, gR, gA)
		if kind == ccAdc {
			b.Bin(tcg.OpSetEq, tS, gR, gA)
			b.Bin(tcg.OpAnd, tS, tS, gC)
			b.Bin(tcg.OpOr, tF, tF, tS)
		}
	case ccSub, ccSbb:
		b.Bin(tcg.OpSetLtu, tF, gA, gB)
		if kind == ccSbb {
			b.Bin(tcg.OpSetEq, tS, gA, gB)
			b.Bin(tcg.OpAnd, tS, tS, gC)
			b.Bin(tcg.OpOr, tF, tF, tS)
		}
	case ccLogic:
		b.Mov(tF, tcg.Imm(0))
	default:
		b.Bin(tcg.OpAnd, tF, gC, tcg.Imm(1))
	}
	switch kind { // OF, AF
	case ccAdd, ccAdc, ccInc, ccSub, ccSbb, ccDec:
		if kind == ccAdd || kind == ccAdc || kind == ccInc {
			b.Bin(tcg.OpXor, tS, gA, gR)
			b.Bin(tcg.OpXor, tU, gB, gR)
		} else {
			b.Bin(tcg.OpXor, tS, gA, gB)
			b.Bin(tcg.OpXor, tU, gA, gR)
		}
		b.Bin(tcg.OpAnd, tS, tS, tU)
		b.Bin(tcg.OpShr, tS, tS, tcg.Imm(sh))
		b.Bin(tcg.OpAnd, tS, tS, tcg.Imm(1))
		b.Bin(tcg.OpShl, tS, tS, tcg.Imm(11))
		b.Bin(tcg.OpOr, tF, tF, tS)
		b.Bin(tcg.OpXor, tS, gA, gB)
		b.Bin(tcg.OpXor, tS, tS, gR)
		b.Bin(tcg.OpAnd, tS, tS, tcg.Imm(flagAF))
		b.Bin(tcg.OpOr, tF, tF, tS)
	case ccShift:
		b.Bin(tcg.OpShl, tS, gB, tcg.Imm(11))
		b.Bin(tcg.OpOr, tF, tF, tS)
	case ccImul:
		b.Bin(tcg.OpShl, tS, tF, tcg.Imm(11))
		b.Bin(tcg.OpOr, tF, tF, tS)
	}
	if rot {
		b.Bin(tcg.OpAnd, tF, tF, tcg.Imm(^uint64(flagCF|flagOF)))
		b.Bin(tcg.OpOr, tF, tF, ccRCArg)
		b.Bin(tcg.OpShl, tS, ccROArg, tcg.Imm(11))
		b.Bin(tcg.OpOr, tF, tF, tS)
	}
	emitSZP(b, size, gR, tF, true)
	b.Bin(tcg.OpAnd, tS, rflagsArg, tcg.Imm(^uint64(flagsArith)))
	b.Bin(tcg.OpOr, rflagsArg, tS, tF)
	b.Mov(ccOpArg, tcg.Imm(0))
}

// carryIn emits d = CF as it stands (pending lazy flags or RFLAGS); scratch tV.
func carryIn(b *bld, st *lowerState, d tcg.Arg) {
	gA, gB, gR, gC := ccAArg, ccBArg, ccRArg, ccCArg
	if st.pend&ccRot != 0 {
		b.Mov(d, ccRCArg)
		return
	}
	switch st.pend >> 4 {
	case 0:
		b.Bin(tcg.OpAnd, d, rflagsArg, tcg.Imm(flagCF))
	case ccAdd, ccAdc:
		b.Bin(tcg.OpSetLtu, d, gR, gA)
		if st.pend>>4 == ccAdc {
			b.Bin(tcg.OpSetEq, tV, gR, gA)
			b.Bin(tcg.OpAnd, tV, tV, gC)
			b.Bin(tcg.OpOr, d, d, tV)
		}
	case ccSub, ccSbb:
		b.Bin(tcg.OpSetLtu, d, gA, gB)
		if st.pend>>4 == ccSbb {
			b.Bin(tcg.OpSetEq, tV, gA, gB)
			b.Bin(tcg.OpAnd, tV, tV, gC)
			b.Bin(tcg.OpOr, d, d, tV)
		}
	case ccLogic:
		b.Mov(d, tcg.Imm(0))
	default:
		b.Bin(tcg.OpAnd, d, gC, tcg.Imm(1))
	}
}

type bld = tcg.Builder[CPU]

// Temporaries of the lowered forms: the memory operand's address, the destination
// operand, the source operand, the result, the flags being built, and scratch (t0..t4
// live in host registers on the native backend).
var (
	tEA, tA, tX, tR, tF = tcg.Temp(0), tcg.Temp(1), tcg.Temp(2), tcg.Temp(3), tcg.Temp(4)
	tS, tU, tV          = tcg.Temp(0), tcg.Temp(5), tcg.Temp(6)
)

// eaLowered reports whether the memory operand's address is one lowerEA emits.
func eaLowered(in *insn) bool {
	return in.adsz == 8 && (in.seg < 0 || in.seg == segFS || in.seg == segGS || !in.hasMem)
}

// lowerEA emits the linear address of a memory operand into d (eaLowered(in) holds):
// 64-bit addressing, FS/GS bases added, other segments' bases being zero.
func lowerEA(b *bld, in *insn, d tcg.Arg) {
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
	if in.seg == segFS || in.seg == segGS {
		b.Bin(tcg.OpAdd, d, d, tcg.Global(offSeg+uintptr(in.seg)*segSize))
	}
}

// highByte reports whether register n of an 8-bit operand is AH, CH, DH or BH.
func highByte(n byte, size int, rex byte) bool { return size == 1 && rex == 0 && n >= 4 && n < 8 }

// regRead emits d = register n of size bytes, zero-extended.
func regRead(b *bld, n byte, size int, rex byte, d tcg.Arg) {
	switch {
	case size == 8:
		b.Mov(d, greg(n))
	case size == 4:
		b.Un(tcg.OpZext32, d, greg(n))
	case highByte(n, size, rex):
		b.Bin(tcg.OpShr, d, greg(n-4), tcg.Imm(8))
		b.Bin(tcg.OpAnd, d, d, tcg.Imm(0xff))
	default:
		b.Bin(tcg.OpAnd, d, greg(n), tcg.Imm(sizeMask(size)))
	}
}

// regWrite emits register n of size bytes = v: 32-bit writes zero-extend, 8- and
// 16-bit ones merge (s is scratch, may be v).
func regWrite(b *bld, n byte, size int, rex byte, v, s tcg.Arg) {
	switch {
	case size == 8:
		b.Mov(greg(n), v)
	case size == 4:
		b.Un(tcg.OpZext32, greg(n), v)
	case highByte(n, size, rex):
		g := greg(n - 4)
		if _, imm := v.IsImm(); imm {
			b.Mov(s, v)
			v = s
		}
		b.Bin(tcg.OpAnd, s, v, tcg.Imm(0xff))
		b.Bin(tcg.OpShl, s, s, tcg.Imm(8))
		b.Bin(tcg.OpAnd, g, g, tcg.Imm(^uint64(0xff00)))
		b.Bin(tcg.OpOr, g, g, s)
	default:
		m := sizeMask(size)
		g := greg(n)
		if iv, imm := v.IsImm(); imm {
			b.Bin(tcg.OpAnd, g, g, tcg.Imm(^m))
			b.Bin(tcg.OpOr, g, g, tcg.Imm(iv&m))
			return
		}
		b.Bin(tcg.OpAnd, s, v, tcg.Imm(m))
		b.Bin(tcg.OpAnd, g, g, tcg.Imm(^m))
		b.Bin(tcg.OpOr, g, g, s)
	}
}

// rmRead emits d = the r/m operand (zero-extended; signed: sign-extended), the address
// of a memory operand left in tEA.
func rmRead(b *bld, in *insn, size int, signed bool, d tcg.Arg) {
	if in.hasMem {
		lowerEA(b, in, tEA)
		b.Load(d, tEA, 0, size, signed)
		return
	}
	regRead(b, in.rm, size, in.rex, d)
	if signed {
		sextTo64(b, d, d, size)
	}
}

// rmWrite emits the r/m operand = v (a memory operand's address in tEA when addr is
// false, computed here when true).
func rmWrite(b *bld, in *insn, size int, v tcg.Arg, addr bool) {
	if in.hasMem {
		if addr {
			lowerEA(b, in, tEA)
		}
		b.Store(tEA, 0, v, size)
		return
	}
	regWrite(b, in.rm, size, in.rex, v, tS)
}

// sextTo64 emits d = a sign-extended from size bytes.
func sextTo64(b *bld, d, a tcg.Arg, size int) {
	switch size {
	case 8:
		if d != a {
			b.Mov(d, a)
		}
	case 4:
		b.Un(tcg.OpSext32, d, a)
	default:
		sh := uint64(64 - 8*size)
		b.Bin(tcg.OpShl, d, a, tcg.Imm(sh))
		b.Bin(tcg.OpSar, d, d, tcg.Imm(sh))
	}
}

// lower emits in as IR if it is one of the lowered forms; end says the block ends.
// An instruction it declines leaves no ops behind.
func lower(b *bld, in *insn, st *lowerState) (handled, end bool) {
	if !in.mode64 || in.lock || in.rep != 0 && !(in.mapn == 1 && in.opc == 0x1f) || !eaLowered(in) {
		return false, false
	}
	n0, st0 := len(b.Ops), *st
	switch in.mapn {
	case 0:
		handled, end = lowerInt(b, in, st)
	case 1:
		handled, end = lower0F(b, in, st)
	}
	if !handled {
		b.Ops = b.Ops[:n0]
		*st = st0
	}
	return handled, end
}

func lower0F(b *bld, in *insn, st *lowerState) (handled, end bool) {
	o := in.opc
	switch {
	case o == 0x1f: // NOP r/m
		return true, false
	case o >= 0x80 && o <= 0x8f:
		flush(b, st)
		lowerJcc(b, in, o&0xf, in.next+in.imm)
		return true, true
	case o == 0xb6 || o == 0xb7 || o == 0xbe || o == 0xbf: // MOVZX, MOVSX
		rmRead(b, in, int(o&1)+1, o >= 0xbe, tA)
		regWrite(b, in.reg, in.opsz, in.rex, tA, tS)
		return true, false
	case o >= 0x40 && o <= 0x4f: // CMOVcc: the source is read, the destination written, either way
		size := in.opsz
		flush(b, st)
		rmRead(b, in, size, false, tX)
		emitCond(b, o&0xf, tU)
		regRead(b, in.reg, size, in.rex, tA)
		b.Bin(tcg.OpSub, tU, tU, tcg.Imm(1)) // 0 when taken, all ones when not
		b.Bin(tcg.OpXor, tR, tX, tA)
		b.Bin(tcg.OpAnd, tR, tR, tU)
		b.Bin(tcg.OpXor, tR, tR, tX)
		regWrite(b, in.reg, size, in.rex, tR, tS)
		return true, false
	case o >= 0x90 && o <= 0x9f: // SETcc
		flush(b, st)
		emitCond(b, o&0xf, tR)
		rmWrite(b, in, 1, tR, true)
		return true, false
	case o == 0xaf && lowerALUOn: // IMUL r, r/m
		if in.opsz == 2 {
			return false, false
		}
		rmRead(b, in, in.opsz, false, tX)
		regRead(b, in.reg, in.opsz, in.rex, tA)
		emitImul(b, st, in.opsz)
		regWrite(b, in.reg, in.opsz, in.rex, tR, tS)
		return true, false
	}
	return false, false
}

func lowerInt(b *bld, in *insn, st *lowerState) (handled, end bool) {
	o := in.opc
	if lowerALUOn {
		if ok := lowerALU(b, in, st); ok {
			return true, false
		}
	}
	switch {
	case o >= 0x88 && o <= 0x8b: // MOV
		size := opSize8(in)
		if o < 0x8a {
			if in.hasMem && !highByte(in.reg, size, in.rex) {
				lowerEA(b, in, tEA)
				b.Store(tEA, 0, greg(in.reg), size)
				return true, false
			}
			regRead(b, in.reg, size, in.rex, tA)
			rmWrite(b, in, size, tA, true)
			return true, false
		}
		if !in.hasMem && size >= 4 {
			regWrite(b, in.reg, size, in.rex, greg(in.rm), tS)
			return true, false
		}
		rmRead(b, in, size, false, tA)
		regWrite(b, in.reg, size, in.rex, tA, tS)
		return true, false
	case o == 0xc6 || o == 0xc7: // MOV r/m, imm
		if in.reg&7 != 0 {
			return false, false
		}
		size := opSize8(in)
		rmWrite(b, in, size, tcg.Imm(in.imm&sizeMask(size)), true)
		return true, false
	case o >= 0xb0 && o <= 0xbf: // MOV r, imm
		reg := o&7 | (in.rex&1)<<3
		size := in.opsz
		if o < 0xb8 {
			size = 1
		}
		regWrite(b, reg, size, in.rex, tcg.Imm(in.imm&sizeMask(size)), tS)
		return true, false
	case o == 0x63: // MOVSXD
		if in.opsz == 2 {
			return false, false
		}
		rmRead(b, in, 4, in.opsz == 8, tA)
		regWrite(b, in.reg, in.opsz, in.rex, tA, tS)
		return true, false
	case o == 0x8d: // LEA (segments ignored)
		if !in.hasMem {
			return false, false
		}
		save := in.seg
		in.seg = -1
		lowerEA(b, in, tEA)
		in.seg = save
		regWrite(b, in.reg, in.opsz, in.rex, tEA, tS)
		return true, false
	case o == 0x98: // CBW/CWDE/CDQE
		sextTo64(b, tA, greg(0), in.opsz/2)
		regWrite(b, 0, in.opsz, 1, tA, tS)
		return true, false
	case o == 0x99: // CWD/CDQ/CQO
		sextTo64(b, tA, greg(0), in.opsz)
		b.Bin(tcg.OpSar, tA, tA, tcg.Imm(63))
		regWrite(b, 2, in.opsz, 1, tA, tS)
		return true, false
	case o >= 0x50 && o <= 0x57 && !in.pfx66:
		reg := o&7 | (in.rex&1)<<3
		b.Bin(tcg.OpSub, tEA, greg(4), tcg.Imm(8))
		b.Store(tEA, 0, greg(reg), 8)
		b.Mov(greg(4), tEA)
		return true, false
	case o >= 0x58 && o <= 0x5f && !in.pfx66:
		reg := o&7 | (in.rex&1)<<3
		b.Load(tA, greg(4), 0, 8, false)
		b.Bin(tcg.OpAdd, greg(4), greg(4), tcg.Imm(8))
		b.Mov(greg(reg), tA)
		return true, false
	case (o == 0x68 || o == 0x6a) && !in.pfx66: // PUSH imm
		b.Bin(tcg.OpSub, tEA, greg(4), tcg.Imm(8))
		b.Store(tEA, 0, tcg.Imm(in.imm), 8)
		b.Mov(greg(4), tEA)
		return true, false
	case o == 0x90 && in.rex&1 == 0:
		return true, false
	case (o == 0x69 || o == 0x6b) && lowerALUOn && in.opsz != 2: // IMUL r, r/m, imm
		rmRead(b, in, in.opsz, false, tA)
		b.Mov(tX, tcg.Imm(in.imm))
		emitImul(b, st, in.opsz)
		regWrite(b, in.reg, in.opsz, in.rex, tR, tS)
		return true, false
	case o == 0xe9 || o == 0xeb:
		flush(b, st)
		b.Exit(tcg.Imm(in.next + in.imm))
		return true, true
	case o == 0xe8 && !in.pfx66:
		flush(b, st)
		b.Bin(tcg.OpSub, tEA, greg(4), tcg.Imm(8))
		b.Store(tEA, 0, tcg.Imm(in.next), 8)
		b.Mov(greg(4), tEA)
		b.Exit(tcg.Imm(in.next + in.imm))
		return true, true
	case o >= 0x70 && o <= 0x7f:
		flush(b, st)
		lowerJcc(b, in, o&0xf, in.next+in.imm)
		return true, true
	case o == 0xc3 && !in.pfx66: // RET
		flush(b, st)
		b.Load(tA, greg(4), 0, 8, false)
		canonicalCheck(b, tA, greg(4)) // the address just read from
		b.Bin(tcg.OpAdd, greg(4), greg(4), tcg.Imm(8))
		b.Exit(tA)
		return true, true
	case o == 0xff && !in.pfx66 && (in.reg&7 == 2 || in.reg&7 == 4 || in.reg&7 == 6):
		if in.reg&7 != 6 {
			flush(b, st)
		}
		rmRead(b, in, 8, false, tA)
		switch in.reg & 7 {
		case 6: // PUSH r/m
			b.Bin(tcg.OpSub, tEA, greg(4), tcg.Imm(8))
			b.Store(tEA, 0, tA, 8)
			b.Mov(greg(4), tEA)
			return true, false
		case 2: // CALL r/m
			canonicalCheck(b, tA, tcg.Imm(in.pc)) // the code being run is readable
			b.Bin(tcg.OpSub, tEA, greg(4), tcg.Imm(8))
			b.Store(tEA, 0, tcg.Imm(in.next), 8)
			b.Mov(greg(4), tEA)
		default: // JMP r/m
			canonicalCheck(b, tA, tcg.Imm(in.pc))
		}
		b.Exit(tA)
		return true, true
	}
	return false, false
}

// canonicalCheck makes a branch to the non-canonical target t raise #GP(0) at the
// branch, as the SDM says (before the stack changes): it loads from t when t is not
// canonical, from the known-good address ok otherwise, and the slow path of the load
// raises the fault.
func canonicalCheck(b *bld, t, ok tcg.Arg) {
	b.Bin(tcg.OpShl, tU, t, tcg.Imm(16))
	b.Bin(tcg.OpSar, tU, tU, tcg.Imm(16))
	b.Bin(tcg.OpXor, tU, tU, t)
	b.Bin(tcg.OpSetEq, tU, tU, tcg.Imm(0))
	b.Bin(tcg.OpSub, tU, tU, tcg.Imm(1)) // all ones when not canonical
	b.Bin(tcg.OpXor, tV, t, ok)
	b.Bin(tcg.OpAnd, tV, tV, tU)
	b.Bin(tcg.OpXor, tV, tV, ok)
	b.Load(tV, tV, 0, 1, false)
}

// emitCond emits d = 1 if condition cc (of Jcc/SETcc/CMOVcc) holds in RFLAGS, else 0.
func emitCond(b *bld, cc byte, d tcg.Arg) {
	bit := func(n uint64) {
		b.Bin(tcg.OpShr, d, rflagsArg, tcg.Imm(n))
		b.Bin(tcg.OpAnd, d, d, tcg.Imm(1))
	}
	switch cc >> 1 {
	case 0:
		bit(11)
	case 1:
		b.Bin(tcg.OpAnd, d, rflagsArg, tcg.Imm(1))
	case 2:
		bit(6)
	case 3:
		b.Bin(tcg.OpAnd, d, rflagsArg, tcg.Imm(flagCF|flagZF))
		b.Bin(tcg.OpSetEq, d, d, tcg.Imm(0))
		b.Bin(tcg.OpXor, d, d, tcg.Imm(1))
	case 4:
		bit(7)
	case 5:
		bit(2)
	case 6, 7: // SF != OF (or ZF): OF moved onto SF's bit
		b.Bin(tcg.OpShr, d, rflagsArg, tcg.Imm(4))
		b.Bin(tcg.OpXor, d, d, rflagsArg)
		b.Bin(tcg.OpAnd, d, d, tcg.Imm(flagSF))
		if cc>>1 == 7 {
			b.Bin(tcg.OpAnd, tV, rflagsArg, tcg.Imm(flagZF))
			b.Bin(tcg.OpOr, d, d, tV)
		}
		b.Bin(tcg.OpSetEq, d, d, tcg.Imm(0))
		b.Bin(tcg.OpXor, d, d, tcg.Imm(1))
	}
	if cc&1 != 0 {
		b.Bin(tcg.OpXor, d, d, tcg.Imm(1))
	}
}

// lowerJcc emits "if cc { exit to target } else { exit to next }".
func lowerJcc(b *bld, in *insn, cc byte, target uint64) {
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

// ALU operations of lowerALU: the ALU group's encoding order, then the others.
const (
	aluAdd = iota
	aluOr
	aluAdc
	aluSbb
	aluAnd
	aluSub
	aluXor
	aluCmp
	aluTest
	aluInc
	aluDec
	aluNeg
	aluNot
)

// lowerALU emits the ALU group (00-3D, 80-83), TEST, INC, DEC, NEG and NOT on register
// and memory operands of every size, and the shifts and rotates by an immediate count.
func lowerALU(b *bld, in *insn, st *lowerState) bool {
	o := in.opc
	size := opSize8(in)
	m := sizeMask(size)
	n := -1
	dstRM := true // the destination is r/m (else the ModRM reg, or rAX for acc)
	acc := false
	var src tcg.Arg // the source: a register, an immediate, or the r/m operand (srcRM)
	srcRM := false
	switch {
	case o < 0x40 && o&7 < 6:
		n = int(o >> 3)
		switch o & 7 {
		case 0, 1:
			src = greg(in.reg)
		case 2, 3:
			dstRM, srcRM = false, true
		default:
			dstRM, acc, src = false, true, tcg.Imm(in.imm&m)
		}
	case o >= 0x80 && o <= 0x83 && o != 0x82:
		n, src = int(in.reg&7), tcg.Imm(in.imm&m)
	case o == 0x84 || o == 0x85:
		n, src = aluTest, greg(in.reg)
	case o == 0xa8 || o == 0xa9:
		n, dstRM, acc, src = aluTest, false, true, tcg.Imm(in.imm&m)
	case o == 0xf6 || o == 0xf7:
		switch in.reg & 7 {
		case 0, 1:
			n, src = aluTest, tcg.Imm(in.imm&m)
		case 2:
			n = aluNot
		case 3:
			n = aluNeg
		default:
			return false
		}
	case o == 0xfe || o == 0xff:
		if in.reg&7 > 1 {
			return false
		}
		n = aluInc + int(in.reg&7)
	case o == 0xc0 || o == 0xc1 || o >= 0xd0 && o <= 0xd1:
		return lowerShift(b, in, st)
	case o == 0xd2 || o == 0xd3:
		return lowerShiftCL(b, in, st)
	default:
		return false
	}
	// Operands: tA the destination's value, tX the source's (zero-extended).
	switch {
	case acc:
		regRead(b, 0, size, 1, tA)
	case dstRM:
		rmRead(b, in, size, false, tA)
	default:
		regRead(b, in.reg, size, in.rex, tA)
	}
	switch {
	case srcRM:
		rmRead(b, in, size, false, tX)
	case n == aluInc || n == aluDec:
		b.Mov(tX, tcg.Imm(1))
	case n == aluNeg:
		b.Mov(tX, tA)
		b.Mov(tA, tcg.Imm(0))
	case n == aluNot:
	default:
		if v, imm := src.IsImm(); imm {
			b.Mov(tX, tcg.Imm(v))
		} else if highByte(in.reg, size, in.rex) || size < 8 {
			regRead(b, in.reg, size, in.rex, tX)
		} else {
			b.Mov(tX, src)
		}
	}
	if n == aluNot {
		b.Bin(tcg.OpXor, tR, tA, tcg.Imm(m))
	} else {
		emitResult(b, st, n, size)
	}
	if n != aluCmp && n != aluTest {
		switch {
		case acc:
			regWrite(b, 0, size, 1, tR, tS)
		case dstRM:
			rmWrite(b, in, size, tR, false)
		default:
			regWrite(b, in.reg, size, in.rex, tR, tS)
		}
	}
	if n != aluNot {
		lazyALU(b, st, n, size)
	}
	return true
}

// emitResult emits tR = tA op tX (size bytes, both zero-extended; the result
// truncated); ADC and SBB add the carry in, INC and DEC keep the carry, in tU.
func emitResult(b *bld, st *lowerState, n, size int) {
	m := sizeMask(size)
	switch n {
	case aluAdd, aluAdc, aluInc, aluSub, aluSbb, aluCmp, aluDec, aluNeg:
		opc := tcg.OpSub
		if n == aluAdd || n == aluAdc || n == aluInc {
			opc = tcg.OpAdd
		}
		b.Bin(opc, tR, tA, tX)
		if n == aluAdc || n == aluSbb || n == aluInc || n == aluDec {
			carryIn(b, st, tU)
		}
		if n == aluAdc || n == aluSbb {
			b.Bin(opc, tR, tR, tU)
		}
		if size < 8 {
			b.Bin(tcg.OpAnd, tR, tR, tcg.Imm(m))
		}
	case aluOr:
		b.Bin(tcg.OpOr, tR, tA, tX)
	case aluAnd, aluTest:
		b.Bin(tcg.OpAnd, tR, tA, tX)
	case aluXor:
		b.Bin(tcg.OpXor, tR, tA, tX)
	}
}

// lazyALU records the lazy flags of ALU operation n (emitResult's operands).
func lazyALU(b *bld, st *lowerState, n, size int) {
	none := tcg.Arg{}
	switch n {
	case aluAdd:
		setLazy(b, st, ccAdd, size, tA, tX, tR, none)
	case aluAdc:
		setLazy(b, st, ccAdc, size, tA, tX, tR, tU)
	case aluSub, aluCmp, aluNeg:
		setLazy(b, st, ccSub, size, tA, tX, tR, none)
	case aluSbb:
		setLazy(b, st, ccSbb, size, tA, tX, tR, tU)
	case aluInc:
		setLazy(b, st, ccInc, size, tA, tX, tR, tU)
	case aluDec:
		setLazy(b, st, ccDec, size, tA, tX, tR, tU)
	default:
		setLazy(b, st, ccLogic, size, none, none, tR, none)
	}
}

// emitSZP emits ZF, SF and PF of r (truncated to size) into f (or'ed in when merge,
// else f is set); scratch tS, tU.
func emitSZP(b *bld, size int, r, f tcg.Arg, merge bool) {
	sh := uint64(8*size - 1)
	if merge {
		b.Bin(tcg.OpSetEq, tS, r, tcg.Imm(0))
		b.Bin(tcg.OpShl, tS, tS, tcg.Imm(6))
		b.Bin(tcg.OpOr, f, f, tS)
	} else {
		b.Bin(tcg.OpSetEq, f, r, tcg.Imm(0))
		b.Bin(tcg.OpShl, f, f, tcg.Imm(6))
	}
	b.Bin(tcg.OpShr, tS, r, tcg.Imm(sh))
	b.Bin(tcg.OpShl, tS, tS, tcg.Imm(7))
	b.Bin(tcg.OpOr, f, f, tS)
	// PF: even parity of the low byte, looked up in a 16-entry bit table after folding
	// the byte's halves.
	b.Bin(tcg.OpShr, tS, r, tcg.Imm(4))
	b.Bin(tcg.OpXor, tS, tS, r)
	b.Bin(tcg.OpAnd, tS, tS, tcg.Imm(0xf))
	b.Mov(tU, tcg.Imm(0x9669))
	b.Bin(tcg.OpShr, tU, tU, tS)
	b.Bin(tcg.OpAnd, tU, tU, tcg.Imm(1))
	b.Bin(tcg.OpShl, tU, tU, tcg.Imm(2))
	b.Bin(tcg.OpOr, f, f, tU)
}

// lowerShift emits ROL, ROR, SHL, SHR and SAR by an immediate count (C0, C1, D0, D1)
// with the helpers' flags; a masked count of zero, counts of at least the width for
// 8- and 16-bit operands, and RCL/RCR stay helpers.
func lowerShift(b *bld, in *insn, st *lowerState) bool {
	size := opSize8(in)
	n := in.reg & 7
	cnt := uint64(1)
	if in.opc <= 0xc1 {
		cnt = in.imm
	}
	if size == 8 {
		cnt &= 63
	} else {
		cnt &= 31
	}
	bitsN := uint64(8 * size)
	sh := bitsN - 1
	m := sizeMask(size)
	if cnt == 0 || n == 2 || n == 3 || cnt >= bitsN && (n >= 4 || cnt%bitsN == 0) {
		return false
	}
	rmRead(b, in, size, false, tA)
	mask := uint64(flagCF | flagOF)
	switch n {
	case 0, 1:
		k := cnt % bitsN
		l, r := k, bitsN-k
		if n == 1 {
			l, r = r, l
		}
		b.Bin(tcg.OpShl, tR, tA, tcg.Imm(l))
		b.Bin(tcg.OpShr, tX, tA, tcg.Imm(r))
		b.Bin(tcg.OpOr, tR, tR, tX)
		if size < 8 {
			b.Bin(tcg.OpAnd, tR, tR, tcg.Imm(m))
		}
	case 4, 6:
		b.Bin(tcg.OpShl, tR, tA, tcg.Imm(cnt))
		if size < 8 {
			b.Bin(tcg.OpAnd, tR, tR, tcg.Imm(m))
		}
	case 5:
		b.Bin(tcg.OpShr, tR, tA, tcg.Imm(cnt))
	case 7:
		sextTo64(b, tX, tA, size)
		b.Bin(tcg.OpSar, tR, tX, tcg.Imm(cnt))
		if size < 8 {
			b.Bin(tcg.OpAnd, tR, tR, tcg.Imm(m))
		}
	}
	rmWrite(b, in, size, tR, false)
	// tF = CF, then OF, then (shifts) SZP.
	switch n {
	case 0: // CF = r bit 0, OF = MSB(r) ^ CF
		b.Bin(tcg.OpAnd, tF, tR, tcg.Imm(1))
		b.Bin(tcg.OpShr, tS, tR, tcg.Imm(sh))
		b.Bin(tcg.OpXor, tS, tS, tF)
	case 1: // CF = MSB(r), OF = MSB(r) ^ r bit width-2
		b.Bin(tcg.OpShr, tF, tR, tcg.Imm(sh))
		b.Bin(tcg.OpShr, tS, tR, tcg.Imm(sh-1))
		b.Bin(tcg.OpXor, tS, tS, tF)
		b.Bin(tcg.OpAnd, tS, tS, tcg.Imm(1))
	case 4, 6: // CF = last bit out, OF = MSB(r) ^ CF
		b.Bin(tcg.OpShr, tF, tA, tcg.Imm(bitsN-cnt))
		b.Bin(tcg.OpAnd, tF, tF, tcg.Imm(1))
		b.Bin(tcg.OpShr, tS, tR, tcg.Imm(sh))
		b.Bin(tcg.OpXor, tS, tS, tF)
	case 5: // OF = MSB(a)
		b.Bin(tcg.OpShr, tF, tA, tcg.Imm(cnt-1))
		b.Bin(tcg.OpAnd, tF, tF, tcg.Imm(1))
		b.Bin(tcg.OpShr, tS, tA, tcg.Imm(sh))
	case 7: // OF = 0
		b.Bin(tcg.OpShr, tF, tX, tcg.Imm(cnt-1))
		b.Bin(tcg.OpAnd, tF, tF, tcg.Imm(1))
		b.Mov(tS, tcg.Imm(0))
	}
	if n >= 4 {
		setLazy(b, st, ccShift, size, tcg.Arg{}, tS, tR, tF)
		return true
	}
	if st.pend != 0 { // a rotate keeps the pending record, overriding its CF and OF
		b.Mov(ccRCArg, tF)
		b.Mov(ccROArg, tS)
		st.pend |= ccRot
		b.Mov(ccOpArg, tcg.Imm(st.pend))
		return true
	}
	b.Bin(tcg.OpShl, tS, tS, tcg.Imm(11))
	b.Bin(tcg.OpOr, tF, tF, tS)
	b.Bin(tcg.OpAnd, tS, rflagsArg, tcg.Imm(^mask))
	b.Bin(tcg.OpOr, rflagsArg, tS, tF)
	return true
}

// emitImul emits tR = tA * tX (size 4 or 8) with the helper's flags: CF = OF = the
// signed product does not fit, ZF/SF/PF of the result, AF clear.
func emitImul(b *bld, st *lowerState, size int) {
	if size == 4 {
		b.Un(tcg.OpSext32, tA, tA)
		b.Un(tcg.OpSext32, tX, tX)
		b.Bin(tcg.OpMul, tV, tA, tX)
		b.Un(tcg.OpZext32, tR, tV)
		b.Un(tcg.OpSext32, tU, tV)
		b.Bin(tcg.OpXor, tF, tU, tV) // non-zero when the 64-bit product does not fit
	} else {
		// The 128-bit product fits in 64 bits iff (a*b)/a == b, except a = -1 with b
		// the most negative value; a = 0 always fits.
		b.Bin(tcg.OpMul, tR, tA, tX)
		b.Div(tcg.OpSdiv, tV, tR, tA, 8, tcg.DivZeroIsZero)
		b.Bin(tcg.OpXor, tF, tV, tX)
		b.Bin(tcg.OpSetEq, tU, tA, tcg.Imm(0))
		b.Bin(tcg.OpSub, tU, tU, tcg.Imm(1)) // all ones when a != 0
		b.Bin(tcg.OpAnd, tF, tF, tU)
		b.Bin(tcg.OpSetEq, tU, tA, tcg.Imm(^uint64(0)))
		b.Bin(tcg.OpSetEq, tV, tX, tcg.Imm(1<<63))
		b.Bin(tcg.OpAnd, tU, tU, tV)
		b.Bin(tcg.OpOr, tF, tF, tU)
	}
	b.Bin(tcg.OpSetEq, tF, tF, tcg.Imm(0))
	b.Bin(tcg.OpXor, tF, tF, tcg.Imm(1))
	setLazy(b, st, ccImul, size, tcg.Arg{}, tcg.Arg{}, tR, tF)
}

// lowerShiftCL emits SHL, SHR and SAR by CL (D2, D3) with the helpers' flags. A
// masked count of zero leaves the flags alone (the operand is still written back, as
// the helper does), so the flags are computed eagerly and selected by the count.
func lowerShiftCL(b *bld, in *insn, st *lowerState) bool {
	size := opSize8(in)
	n := in.reg & 7
	if n < 4 {
		return false
	}
	flush(b, st)
	bitsN := uint64(8 * size)
	sh := bitsN - 1
	m := sizeMask(size)
	cm := uint64(31)
	if size == 8 {
		cm = 63
	}
	rmRead(b, in, size, false, tA)
	b.Bin(tcg.OpAnd, tV, greg(1), tcg.Imm(cm))
	switch n {
	case 4, 6: // CF: the last bit shifted out
		b.Bin(tcg.OpShl, tR, tA, tV)
		if size < 8 {
			b.Bin(tcg.OpShr, tF, tR, tcg.Imm(bitsN))
			b.Bin(tcg.OpAnd, tR, tR, tcg.Imm(m))
		} else {
			b.Mov(tU, tcg.Imm(64))
			b.Bin(tcg.OpSub, tU, tU, tV)
			b.Bin(tcg.OpShr, tF, tA, tU)
		}
	case 5:
		b.Bin(tcg.OpShr, tR, tA, tV)
		b.Bin(tcg.OpSub, tU, tV, tcg.Imm(1))
		b.Bin(tcg.OpShr, tF, tA, tU)
	case 7:
		sextTo64(b, tX, tA, size)
		b.Bin(tcg.OpSar, tR, tX, tV)
		if size < 8 {
			b.Bin(tcg.OpAnd, tR, tR, tcg.Imm(m))
		}
		b.Bin(tcg.OpSub, tU, tV, tcg.Imm(1))
		b.Bin(tcg.OpShr, tF, tX, tU)
	}
	b.Bin(tcg.OpAnd, tF, tF, tcg.Imm(1))
	rmWrite(b, in, size, tR, false)
	switch n { // OF
	case 4, 6:
		b.Bin(tcg.OpShr, tS, tR, tcg.Imm(sh))
		b.Bin(tcg.OpXor, tS, tS, tF)
		b.Bin(tcg.OpShl, tS, tS, tcg.Imm(11))
		b.Bin(tcg.OpOr, tF, tF, tS)
	case 5:
		b.Bin(tcg.OpShr, tS, tA, tcg.Imm(sh))
		b.Bin(tcg.OpShl, tS, tS, tcg.Imm(11))
		b.Bin(tcg.OpOr, tF, tF, tS)
	}
	emitSZP(b, size, tR, tF, true)
	b.Bin(tcg.OpAnd, tS, rflagsArg, tcg.Imm(^uint64(flagsArith)))
	b.Bin(tcg.OpOr, tF, tF, tS) // the new RFLAGS
	b.Bin(tcg.OpXor, tF, tF, rflagsArg)
	b.Bin(tcg.OpSetEq, tU, tV, tcg.Imm(0))
	b.Bin(tcg.OpSub, tU, tU, tcg.Imm(1)) // all ones when the count is not zero
	b.Bin(tcg.OpAnd, tF, tF, tU)
	b.Bin(tcg.OpXor, rflagsArg, rflagsArg, tF)
	return true
}

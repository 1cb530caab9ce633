package arm

import (
	"math/bits"
	"unsafe"

	"gemu/tcg"
)

// The A64 frontend emits tcg IR. Common instructions are lowered to IR operations on
// the State registers (so a future native backend compiles them directly); the rest
// become helper calls to the closure the decoder builds for the instruction.

var (
	offX      = unsafe.Offsetof(CPU{}.State) + unsafe.Offsetof(State{}.X)
	offSPEL0  = unsafe.Offsetof(CPU{}.State) + unsafe.Offsetof(State{}.SP_EL0)
	offSPEL1  = unsafe.Offsetof(CPU{}.State) + unsafe.Offsetof(State{}.SP_EL1)
	offPC     = unsafe.Offsetof(CPU{}.State) + unsafe.Offsetof(State{}.PC)
	offTemps  = unsafe.Offsetof(CPU{}.temps)
	offTLBPtr = unsafe.Offsetof(CPU{}.mmu)
)

// irTarget describes CPU to tcg backends (the run loop's exit-request word, last exit
// and jump table are in CPU.v: newIRTarget adds them).
var irTarget = newIRTarget(tcg.Target[CPU]{
	PC:    offPC,
	TLB:   offTLBPtr,
	Temps: offTemps,
	Flags: unsafe.Offsetof(CPU{}.flags),
	LoadSlow: func(c *CPU, va uint64, size int) (uint64, bool) {
		return c.ldSlow(va, size, c.midx)
	},
	StoreSlow: func(c *CPU, va uint64, size int, v uint64) bool {
		return c.stSlow(va, size, v, c.midx)
	},
	UserTLB: unsafe.Offsetof(CPU{}.utlb),
	UserLoadSlow: func(c *CPU, va uint64, size int) (uint64, bool) {
		return c.ldSlow(va, size, c.uidx)
	},
	UserStoreSlow: func(c *CPU, va uint64, size int, v uint64) bool {
		return c.stSlow(va, size, v, c.uidx)
	},
	FPStatus:  offFPSR,
	FPInexact: fpIXC,
})

func newIRTarget(t tcg.Target[CPU]) *tcg.Target[CPU] {
	t.SetVCPU(unsafe.Offsetof(CPU{}.v))
	return &t
}

// TB flag bits (see tbFlags).
const (
	flagEL1   = 1 << 0
	flagFP    = 1 << 1
	flagSPSel = 1 << 2
	flagPMU   = 1 << 3 // the translator counts instructions and branches (pmu.go)
	flagBP    = 1 << 4 // check hardware breakpoints before each instruction (debug.go)
	flagSS    = 1 << 5 // software step active (debug.go)
	flagPSS   = 1 << 6 // PSTATE.SS, with flagSS
)

func xreg(n uint32) tcg.Arg { return tcg.Global(offX + 8*uintptr(n)) }

// spreg returns the stack pointer selected by the translation flags.
func spreg(flags uint64) tcg.Arg {
	if flags&flagEL1 != 0 && flags&flagSPSel != 0 {
		return tcg.Global(offSPEL1)
	}
	return tcg.Global(offSPEL0)
}

// xsp returns register n, where 31 is the stack pointer.
func xsp(n uint32, flags uint64) tcg.Arg {
	if n == 31 {
		return spreg(flags)
	}
	return xreg(n)
}

var t0 = tcg.Temp(0)

// lower emits IR for insn if it is one of the lowered forms; handled=false means the
// caller must fall back to a helper call.
func lower(b *tcg.Builder[CPU], insn uint32, pc uint64, flags uint64) (handled, end bool) {
	if handled, end = lowerBase(b, insn, pc, flags); handled || !wideLowering {
		return handled, end
	}
	if insn>>25&0x3f == 0x1a && insn>>31 == 0 && insn&31 != 31 { // CBZ, CBNZ (32-bit)
		b.Un(tcg.OpZext32, t0, xreg(insn&31))
		b.ExitIf(t0, insn>>24&1 == 1, pc+signExt(uint64(insn>>5&0x7ffff)<<2, 21))
		b.Exit(tcg.Imm(pc + 4))
		return true, true
	}
	if insn&0xff000010 == 0x54000000 { // B.cond
		lowerCond(b, insn&15, t0)
		b.ExitIf(t0, true, pc+signExt(uint64(insn>>5&0x7ffff)<<2, 21))
		b.Exit(tcg.Imm(pc + 4))
		return true, true
	}
	if insn&0xfffff01f == 0xd503301f { // barriers (CRm: domain and kind, ignored)
		switch insn >> 5 & 7 {
		case 4, 5: // DSB, DMB: a full host fence, as the helper does
			b.Fence()
			return true, false
		case 6: // ISB: end the block so later instructions see new system state
			b.Exit(tcg.Imm(pc + 4))
			return true, true
		}
	}
	// MSR DAIFSet, #imm at EL1; setting D while software step is active changes the
	// block flags, which only the helper recomputes.
	if insn&0xfffff0ff == 0xd50340df && flags&flagEL1 != 0 && (insn&(1<<11) == 0 || flags&flagSS == 0) {
		// Masking more can make no pending interrupt takeable, so unlike the helper
		// (shared with DAIFClr) it neither ends the block nor asks for a check.
		b.Bin(tcg.OpOr, tcg.Global(offDAIF), tcg.Global(offDAIF), tcg.Imm(uint64(insn>>8&15)<<6))
		return true, false
	}
	if insn&0xfff8f000 == 0xd5087000 && flags&flagEL1 != 0 { // SYS, CRn 7, at EL1 (EL0 has trap checks)
		op1, crm, op2, rt := insn>>16&7, insn>>8&15, insn>>5&7, insn&31
		switch {
		case op1 == 3 && crm == 4 && op2 == 1: // DC ZVA: zero the 64-byte block (DCZID_EL0)
			b.Mov(t0, xzr(rt))
			b.Bin(tcg.OpAnd, t0, t0, tcg.Imm(^uint64(63)))
			for i := uint64(0); i < 64; i += 8 {
				b.Store(t0, i, tcg.Imm(0), 8)
			}
			return true, false
		case op1 == 0 && (crm == 1 || crm == 5) && op2 == 0, op1 == 3 && crm == 5 && op2 == 1,
			op1 == 0 && crm == 8 && op2 < 4, op1 == 0 && crm == 9 && op2 < 2: // IC, AT: helpers
		default: // the other DC operations: no caches to maintain
			return true, false
		}
	}
	if insn>>27&7 == 3 && insn>>24&3 == 0 && insn>>30 != 3 { // LDR (literal), LDRSW (literal)
		addr := pc + signExt(uint64(insn>>5&0x7ffff)<<2, 21)
		size := 4 << (insn >> 30 & 1)
		if insn>>26&1 == 0 {
			return emitLdSt(b, true, insn>>30 == 2, false, size, insn&31, tcg.Imm(addr), 0, func() {}), false
		}
		if flags&flagFP == 0 {
			return false, false
		}
		emitLdStV(b, true, 4<<(insn>>30), insn&31, tcg.Imm(addr), 0, func() {})
		return true, false
	}
	if insn>>24&0xfe == 0x1e && flags&flagFP != 0 && lowerFP(b, insn) { // FP data processing
		return true, false
	}
	if insn>>24&0x9f == 0x0e && flags&flagFP != 0 && lowerVec(b, insn) { // AdvSIMD three-same
		return true, false
	}
	return lowerWide(b, insn, flags), false
}

func lowerBase(b *tcg.Builder[CPU], insn uint32, pc uint64, flags uint64) (handled, end bool) {
	rd := insn & 31
	rn := insn >> 5 & 31
	switch {
	case insn>>22 == 0x354 && insn>>20&1 == 1: // MSR, MRS (register)
		return lowerSysReg(b, insn, flags), false
	case insn>>23&0x3f == 0x25 && insn>>31 == 1: // MOVN/MOVZ/MOVK, 64-bit
		if rd == 31 {
			return false, false
		}
		sh := insn >> 21 & 3 * 16
		imm := uint64(insn>>5&0xffff) << sh
		switch insn >> 29 & 3 {
		case 0:
			b.Mov(xreg(rd), tcg.Imm(^imm))
		case 2:
			b.Mov(xreg(rd), tcg.Imm(imm))
		case 3:
			b.Bin(tcg.OpAnd, xreg(rd), xreg(rd), tcg.Imm(^(uint64(0xffff) << sh)))
			b.Bin(tcg.OpOr, xreg(rd), xreg(rd), tcg.Imm(imm))
		default:
			return false, false
		}
		return true, false
	case insn>>24&0x1f == 0x10: // ADR, ADRP
		if rd == 31 {
			return false, false
		}
		imm := signExt(uint64(insn>>5&0x7ffff)<<2|uint64(insn>>29&3), 21)
		v := pc + imm
		if insn>>31 == 1 {
			v = pc&^0xfff + imm<<12
		}
		b.Mov(xreg(rd), tcg.Imm(v))
		return true, false
	case insn>>23&0xff == 0x22 && insn>>29&3 == 0 || insn>>23&0xff == 0xa2: // ADD/SUB imm, 64-bit, no flags
		imm := uint64(insn >> 10 & 0xfff)
		if insn>>22&1 == 1 {
			imm <<= 12
		}
		if insn>>30&1 == 1 {
			imm = -imm
		}
		if insn>>29&1 == 1 || insn>>31 == 0 {
			return false, false
		}
		if imm == 0 {
			b.Mov(xsp(rd, flags), xsp(rn, flags))
		} else {
			b.Bin(tcg.OpAdd, xsp(rd, flags), xsp(rn, flags), tcg.Imm(imm))
		}
		return true, false
	case insn>>24 == 0xaa && insn>>21&1 == 0 && insn>>22&3 == 0 && rn == 31 && insn>>10&0x3f == 0: // MOV Xd, Xm
		rm := insn >> 16 & 31
		if rd == 31 {
			return false, false
		}
		if rm == 31 {
			b.Mov(xreg(rd), tcg.Imm(0))
		} else {
			b.Mov(xreg(rd), xreg(rm))
		}
		return true, false
	case insn>>21&0x7ff == 0x458 || insn>>21&0x7ff == 0x658: // ADD/SUB Xd, Xn, Xm, LSL #amt
		rm := insn >> 16 & 31
		if rd == 31 || rn == 31 || rm == 31 {
			return false, false
		}
		opc := tcg.OpAdd
		if insn>>30&1 == 1 {
			opc = tcg.OpSub
		}
		if amt := insn >> 10 & 0x3f; amt != 0 {
			b.Bin(tcg.OpShl, t0, xreg(rm), tcg.Imm(uint64(amt)))
			b.Bin(opc, xreg(rd), xreg(rn), t0)
		} else {
			b.Bin(opc, xreg(rd), xreg(rn), xreg(rm))
		}
		return true, false
	case insn>>22&0x3ff == 0x3e5 || insn>>22&0x3ff == 0x2e5 || insn>>22&0x3ff == 0x1e5 || insn>>22&0x3ff == 0x0e5: // LDR (unsigned offset), zero-extending
		size := 1 << (insn >> 30)
		if rd == 31 {
			return false, false
		}
		off := uint64(insn>>10&0xfff) * uint64(size)
		b.Load(xreg(rd), xsp(rn, flags), off, size, false)
		return true, false
	case insn>>22&0x3ff == 0x3e4 || insn>>22&0x3ff == 0x2e4 || insn>>22&0x3ff == 0x1e4 || insn>>22&0x3ff == 0x0e4: // STR (unsigned offset)
		size := 1 << (insn >> 30)
		off := uint64(insn>>10&0xfff) * uint64(size)
		v := xreg(rd)
		if rd == 31 {
			v = tcg.Imm(0)
		}
		b.Store(xsp(rn, flags), off, v, size)
		return true, false
	case insn>>22&0x3ff == 0x2e6: // LDRSW (unsigned offset)
		if rd == 31 {
			return false, false
		}
		b.Load(xreg(rd), xsp(rn, flags), uint64(insn>>10&0xfff)*4, 4, true)
		return true, false
	case insn>>26&0x1f == 5: // B, BL
		target := pc + signExt(uint64(insn&0x3ffffff)<<2, 28)
		if insn>>31 == 1 {
			b.Mov(xreg(30), tcg.Imm(pc+4))
		}
		b.Exit(tcg.Imm(target))
		return true, true
	case insn&0xfffffc1f == 0xd61f0000 || insn&0xfffffc1f == 0xd65f0000: // BR, RET
		if rn == 31 {
			b.Exit(tcg.Imm(0))
		} else {
			b.Exit(xreg(rn))
		}
		return true, true
	case insn&0xfffffc1f == 0xd63f0000: // BLR
		if rn == 31 {
			return false, false
		}
		b.Mov(t0, xreg(rn))
		b.Mov(xreg(30), tcg.Imm(pc+4))
		b.Exit(t0)
		return true, true
	case insn>>25&0x3f == 0x1a && insn>>31 == 1: // CBZ, CBNZ (64-bit)
		if rd == 31 {
			return false, false
		}
		target := pc + signExt(uint64(insn>>5&0x7ffff)<<2, 21)
		b.ExitIf(xreg(rd), insn>>24&1 == 1, target)
		b.Exit(tcg.Imm(pc + 4))
		return true, true
	case insn>>25&0x3f == 0x1b: // TBZ, TBNZ
		if rd == 31 {
			return false, false
		}
		target := pc + signExt(uint64(insn>>5&0x3fff)<<2, 16)
		bit := insn>>31<<5 | insn>>19&31
		b.Bin(tcg.OpShr, t0, xreg(rd), tcg.Imm(uint64(bit)))
		b.Bin(tcg.OpAnd, t0, t0, tcg.Imm(1))
		b.ExitIf(t0, insn>>24&1 == 1, target)
		b.Exit(tcg.Imm(pc + 4))
		return true, true
	}
	return false, false
}

// wideLowering lowers more instructions (lowerWide) when the native backend is
// selected: there a run of IR ops becomes one stretch of machine code, while the
// closure backend runs a helper closure faster than the several IR ops it expands to.
var wideLowering = tcg.SelectedBackend() == tcg.BackendNative

var t1, t2, t3, t4, t5, t6, t7 = tcg.Temp(1), tcg.Temp(2), tcg.Temp(3), tcg.Temp(4), tcg.Temp(5), tcg.Temp(6), tcg.Temp(7)

var offNZCV = unsafe.Offsetof(CPU{}.State) + unsafe.Offsetof(State{}.NZCV)

var nzcv = tcg.Global(offNZCV)

// xzr returns register n as a source operand where 31 is XZR.
func xzr(n uint32) tcg.Arg {
	if n == 31 {
		return tcg.Imm(0)
	}
	return xreg(n)
}

func ones64(n uint32) uint64 {
	if n >= 64 {
		return ^uint64(0)
	}
	return 1<<n - 1
}

// lowerWide emits IR for the further instruction forms lowered for the native backend:
// loads and stores with write-back, register offsets or pairs, logical immediates and
// shifted registers, 32-bit moves and add/sub immediates, bitfield moves and
// multiply-add. It never ends the block; false means use the helper.
func lowerWide(b *tcg.Builder[CPU], insn uint32, flags uint64) bool {
	rd, rn := insn&31, insn>>5&31
	sf := insn>>31 == 1
	switch {
	case insn>>23&0x3f == 0x22 && insn>>29&1 == 1: // ADDS/SUBS (immediate): CMN, CMP
		imm := uint64(insn >> 10 & 0xfff)
		if insn>>22&1 == 1 {
			imm <<= 12
		}
		lowerAddSubFlags(b, sf, insn>>30&1 == 1, xsp(rn, flags), tcg.Imm(imm), rd)
		return true
	case insn>>24&0x1f == 0x0b && insn>>21&1 == 0: // ADD/SUB/ADDS/SUBS/NEG/CMP (shifted register)
		typ, amt, rm := insn>>22&3, insn>>10&63, insn>>16&31
		setFlags := insn>>29&1 == 1
		if typ == 3 || !sf && amt >= 32 || rd == 31 && !setFlags {
			return false
		}
		b.Mov(t7, xzr(rm))
		if amt != 0 {
			if !sf && typ != 0 {
				if typ == 2 {
					b.Un(tcg.OpSext32, t7, t7)
				} else {
					b.Un(tcg.OpZext32, t7, t7)
				}
			}
			b.Bin([3]tcg.Opcode{tcg.OpShl, tcg.OpShr, tcg.OpSar}[typ], t7, t7, tcg.Imm(uint64(amt)))
		}
		a := xreg(rn)
		if rn == 31 {
			b.Mov(t6, tcg.Imm(0))
			a = t6
		}
		if setFlags {
			lowerAddSubFlags(b, sf, insn>>30&1 == 1, a, t7, rd)
			return true
		}
		lowerAddSub(b, sf, insn>>30&1 == 1, xreg(rd), a, t7)
		return true
	case insn>>24&0x1f == 0x0b && insn>>21&7 == 1: // ADD/SUB/ADDS/SUBS/CMP (extended register)
		option, amt, rm := insn>>13&7, insn>>10&7, insn>>16&31
		setFlags := insn>>29&1 == 1
		if amt > 4 {
			return false
		}
		b.Mov(t7, xzr(rm))
		switch option {
		case 0:
			b.Bin(tcg.OpAnd, t7, t7, tcg.Imm(0xff))
		case 1:
			b.Bin(tcg.OpAnd, t7, t7, tcg.Imm(0xffff))
		case 2:
			b.Un(tcg.OpZext32, t7, t7)
		case 4, 5:
			sh := uint64(56)
			if option == 5 {
				sh = 48
			}
			b.Bin(tcg.OpShl, t7, t7, tcg.Imm(sh))
			b.Bin(tcg.OpSar, t7, t7, tcg.Imm(sh))
		case 6:
			b.Un(tcg.OpSext32, t7, t7)
		}
		if amt != 0 {
			b.Bin(tcg.OpShl, t7, t7, tcg.Imm(uint64(amt)))
		}
		if setFlags {
			lowerAddSubFlags(b, sf, insn>>30&1 == 1, xsp(rn, flags), t7, rd)
			return true
		}
		lowerAddSub(b, sf, insn>>30&1 == 1, xsp(rd, flags), xsp(rn, flags), t7)
		return true
	case insn>>22&0x3ff == 0x3e6: // PRFM (immediate): a hint
		return true
	case insn&0xfffff01f == 0xd503201f && (insn>>5&0x7f == 0 || insn>>5&0x7f > 3): // NOP and hints other than YIELD, WFE, WFI
		return true
	case insn>>21&0x3ff == 0xd6 && insn>>12&0xf == 2 && insn>>10&3 != 3: // LSLV, LSRV, ASRV
		rm := insn >> 16 & 31
		if rd == 31 || rn == 31 || rm == 31 {
			return false
		}
		typ := insn >> 10 & 3
		if sf {
			b.Bin([3]tcg.Opcode{tcg.OpShl, tcg.OpShr, tcg.OpSar}[typ], xreg(rd), xreg(rn), xreg(rm))
			return true
		}
		b.Bin(tcg.OpAnd, t1, xreg(rm), tcg.Imm(31))
		switch typ {
		case 0:
			b.Bin(tcg.OpShl, t0, xreg(rn), t1)
		case 1:
			b.Un(tcg.OpZext32, t0, xreg(rn))
			b.Bin(tcg.OpShr, t0, t0, t1)
		case 2:
			b.Un(tcg.OpSext32, t0, xreg(rn))
			b.Bin(tcg.OpSar, t0, t0, t1)
		}
		b.Un(tcg.OpZext32, xreg(rd), t0)
		return true
	case insn>>21&0x3ff == 0xd6 && insn>>10&0x3f == 0x0b: // RORV
		rm := insn >> 16 & 31
		if rd == 31 || rn == 31 || rm == 31 {
			return false
		}
		// x>>s | (x<<1)<<(width-1-s), with width-1-s computed as s^(width-1): the
		// two-step left shift is right for s == 0, where it shifts everything out.
		if sf {
			b.Bin(tcg.OpShr, t0, xreg(rn), xreg(rm))
			b.Bin(tcg.OpXor, t1, xreg(rm), tcg.Imm(63))
			b.Bin(tcg.OpShl, t2, xreg(rn), tcg.Imm(1))
			b.Bin(tcg.OpShl, t2, t2, t1)
			b.Bin(tcg.OpOr, xreg(rd), t0, t2)
			return true
		}
		b.Bin(tcg.OpAnd, t1, xreg(rm), tcg.Imm(31))
		b.Un(tcg.OpZext32, t0, xreg(rn))
		b.Bin(tcg.OpShr, t2, t0, t1)
		b.Bin(tcg.OpXor, t1, t1, tcg.Imm(31))
		b.Bin(tcg.OpShl, t0, t0, tcg.Imm(1))
		b.Bin(tcg.OpShl, t0, t0, t1)
		b.Bin(tcg.OpOr, t0, t0, t2)
		b.Un(tcg.OpZext32, xreg(rd), t0)
		return true
	case insn&0x7fffe000 == 0x5ac00000: // REV16, REV32, REV, CLZ (RBIT, CLS: helpers)
		if rd == 31 || rn == 31 {
			return false
		}
		switch opc := insn >> 10 & 7; {
		case opc == 1: // REV16: swap the bytes of each halfword
			m := uint64(0x00ff00ff00ff00ff)
			if !sf {
				m = 0x00ff00ff
			}
			b.Bin(tcg.OpShr, t0, xreg(rn), tcg.Imm(8))
			b.Bin(tcg.OpAnd, t0, t0, tcg.Imm(m))
			b.Bin(tcg.OpAnd, t1, xreg(rn), tcg.Imm(m))
			b.Bin(tcg.OpShl, t1, t1, tcg.Imm(8))
			b.Bin(tcg.OpOr, xreg(rd), t0, t1)
		case opc == 3 && sf: // REV
			b.Un(tcg.OpBswap, xreg(rd), xreg(rn))
		case opc == 2 && !sf: // REV (32-bit)
			b.Un(tcg.OpZext32, t0, xreg(rn))
			b.Un(tcg.OpBswap, t0, t0)
			b.Bin(tcg.OpShr, xreg(rd), t0, tcg.Imm(32))
		case opc == 2: // REV32: the bytes of each word
			b.Un(tcg.OpBswap, t0, xreg(rn))
			b.Bin(tcg.OpShr, t1, t0, tcg.Imm(32))
			b.Bin(tcg.OpShl, t0, t0, tcg.Imm(32))
			b.Bin(tcg.OpOr, xreg(rd), t0, t1)
		case opc == 4 && sf: // CLZ
			b.Un(tcg.OpClz, xreg(rd), xreg(rn))
		case opc == 4:
			b.Un(tcg.OpZext32, t0, xreg(rn))
			b.Un(tcg.OpClz, t0, t0)
			b.Bin(tcg.OpSub, xreg(rd), t0, tcg.Imm(32))
		default:
			return false
		}
		return true
	case insn>>23&0xff == 0x27 && insn>>21&1 == 0: // EXTR, ROR (immediate)
		rm, lsb := insn>>16&31, uint64(insn>>10&63)
		if rd == 31 || rn == 31 || rm == 31 || (insn>>22&1 == 1) != sf || !sf && lsb >= 32 {
			return false
		}
		switch {
		case sf && lsb == 0:
			b.Mov(xreg(rd), xreg(rm))
		case sf:
			b.Bin(tcg.OpShr, t0, xreg(rm), tcg.Imm(lsb))
			b.Bin(tcg.OpShl, t1, xreg(rn), tcg.Imm(64-lsb))
			b.Bin(tcg.OpOr, xreg(rd), t0, t1)
		case lsb == 0:
			b.Un(tcg.OpZext32, xreg(rd), xreg(rm))
		default:
			b.Un(tcg.OpZext32, t0, xreg(rm))
			b.Bin(tcg.OpShr, t0, t0, tcg.Imm(lsb))
			b.Bin(tcg.OpShl, t1, xreg(rn), tcg.Imm(32-lsb))
			b.Bin(tcg.OpOr, t0, t0, t1)
			b.Un(tcg.OpZext32, xreg(rd), t0)
		}
		return true
	case insn>>21&0xff == 0xd2 && insn>>29&1 == 1 && insn>>10&1 == 0 && insn>>4&1 == 0: // CCMN, CCMP
		if rn == 31 {
			return false
		}
		x := xzr(insn >> 16 & 31)
		if insn>>11&1 == 1 {
			x = tcg.Imm(uint64(insn >> 16 & 31))
		}
		lowerCond(b, insn>>12&15, t6) // on the flags before the compare
		lowerAddSubFlags(b, sf, insn>>30&1 == 1, xreg(rn), x, 31)
		b.Bin(tcg.OpXor, t6, t6, tcg.Imm(1))
		b.Bin(tcg.OpAdd, t6, t6, tcg.Imm(^uint64(0))) // all ones if the condition held
		b.Bin(tcg.OpXor, t7, t6, tcg.Imm(^uint64(0)))
		b.Bin(tcg.OpAnd, t7, t7, tcg.Imm(uint64(insn&15)<<28))
		b.Bin(tcg.OpAnd, nzcv, nzcv, t6)
		b.Bin(tcg.OpOr, nzcv, nzcv, t7)
		return true
	case insn&0x1fe0fc00 == 0x1a000000: // ADC, SBC, ADCS, SBCS
		setFlags := insn>>29&1 == 1
		if rd == 31 && !setFlags {
			return true // writes XZR only
		}
		b.Mov(t1, xzr(insn>>16&31))
		if insn>>30&1 == 1 { // SBC(S): Rn + NOT(Rm) + C
			b.Bin(tcg.OpXor, t1, t1, tcg.Imm(^uint64(0)))
		}
		if rd != 31 { // computed first: rd may be an operand, and the flags are an input
			b.Bin(tcg.OpShr, t0, nzcv, tcg.Imm(29))
			b.Bin(tcg.OpAnd, t0, t0, tcg.Imm(1))
			b.Bin(tcg.OpAdd, t0, t0, xzr(rn))
			b.Bin(tcg.OpAdd, t0, t0, t1)
			if !sf {
				b.Un(tcg.OpZext32, t0, t0)
			}
		}
		if setFlags {
			size := 8
			if !sf {
				size = 4
			}
			b.Flags(tcg.OpFlagsAddC, nzcv, xzr(rn), t1, size, tcg.FlagsNZCV)
		}
		if rd != 31 {
			b.Mov(xreg(rd), t0)
		}
		return true
	case insn&0xff60fc00 == 0x9b407c00: // UMULH, SMULH
		rm := insn >> 16 & 31
		switch {
		case rd == 31:
		case rn == 31 || rm == 31:
			b.Mov(xreg(rd), tcg.Imm(0))
		case insn>>23&1 == 1:
			b.Bin(tcg.OpMulHu, xreg(rd), xreg(rn), xreg(rm))
		default:
			b.Bin(tcg.OpMulHs, xreg(rd), xreg(rn), xreg(rm))
		}
		return true
	case insn>>21&0xff == 0xd4 && insn>>29&1 == 0 && insn>>11&1 == 0: // CSEL, CSINC, CSINV, CSNEG
		rm := insn >> 16 & 31
		if rd == 31 {
			return false
		}
		lowerCond(b, insn>>12&15, t0) // t0 = 1 if the condition holds
		b.Mov(t1, xzr(rm))
		switch insn>>30&1<<1 | insn>>10&1 {
		case 1: // CSINC
			b.Bin(tcg.OpAdd, t1, t1, tcg.Imm(1))
		case 2: // CSINV
			b.Bin(tcg.OpXor, t1, t1, tcg.Imm(^uint64(0)))
		case 3: // CSNEG
			b.Bin(tcg.OpXor, t1, t1, tcg.Imm(^uint64(0)))
			b.Bin(tcg.OpAdd, t1, t1, tcg.Imm(1))
		}
		// rd = t1 ^ ((rn ^ t1) * cond): a branch-free select.
		b.Mov(t2, xzr(rn))
		b.Bin(tcg.OpXor, t2, t2, t1)
		b.Bin(tcg.OpMul, t2, t2, t0)
		if sf {
			b.Bin(tcg.OpXor, xreg(rd), t1, t2)
		} else {
			b.Bin(tcg.OpXor, t1, t1, t2)
			b.Un(tcg.OpZext32, xreg(rd), t1)
		}
		return true
	case insn>>27&7 == 5 && insn>>25&3 == 0: // LDP/STP/LDNP/STNP (GP), offset/pre/post
		return lowerPair(b, insn, flags)
	case insn>>27&7 == 5 && insn>>25&3 == 2 && insn>>30 != 3 && flags&flagFP != 0: // LDP/STP/LDNP/STNP (S, D, Q)
		return lowerPairV(b, insn, flags)
	case insn>>27&7 == 7 && insn>>24&3 == 0 && (insn>>26&1 == 0 || flags&flagFP != 0): // LDR/STR (GP, SIMD&FP), unscaled/pre/post/register
		return lowerLdSt(b, insn, flags)
	case insn>>27&7 == 7 && insn>>24&3 == 1 && insn>>26&1 == 1 && flags&flagFP != 0: // LDR/STR (SIMD&FP), unsigned offset
		size, load, ok := vecLdStKind(insn)
		if !ok {
			return false
		}
		emitLdStV(b, load, size, insn&31, xsp(insn>>5&31, flags), uint64(insn>>10&0xfff)*uint64(size), func() {})
		return true
	case insn>>27&7 == 7 && insn>>24&3 == 1 && insn>>26&1 == 0 && insn>>30 < 2 && insn>>23&1 == 1: // LDRSB, LDRSH (unsigned offset)
		size := 1 << (insn >> 30)
		return emitLdSt(b, true, true, insn>>22&1 == 1, size, insn&31, xsp(insn>>5&31, flags), uint64(insn>>10&0xfff)*uint64(size), func() {})
	case insn>>23&0x3f == 0x24 && insn>>29&3 == 3: // ANDS (immediate), TST
		n := insn >> 22 & 1
		size := uint32(32)
		if sf {
			size = 64
		}
		mask, _, ok := decodeBitMasks(n, insn>>10&63, insn>>16&63, true, size)
		if !ok || !sf && n == 1 {
			return false
		}
		b.Mov(t0, xzr(rn))
		b.Bin(tcg.OpAnd, t0, t0, tcg.Imm(mask))
		lowerLogicFlags(b, sf, rd)
		return true
	case insn>>23&0x3f == 0x24: // AND/ORR/EOR (immediate)
		n := insn >> 22 & 1
		if !sf && n == 1 {
			return false
		}
		size := uint32(32)
		if sf {
			size = 64
		}
		mask, _, ok := decodeBitMasks(n, insn>>10&63, insn>>16&63, true, size)
		if !ok {
			return false
		}
		d := xsp(rd, flags)
		opc := [3]tcg.Opcode{tcg.OpAnd, tcg.OpOr, tcg.OpXor}[insn>>29&3]
		if rn == 31 {
			v := mask // ORR, EOR with XZR
			if opc == tcg.OpAnd {
				v = 0
			}
			b.Mov(d, tcg.Imm(v))
			return true
		}
		if sf {
			b.Bin(opc, d, xreg(rn), tcg.Imm(mask))
		} else {
			b.Bin(opc, t0, xreg(rn), tcg.Imm(mask))
			b.Un(tcg.OpZext32, d, t0)
		}
		return true
	case insn>>24&0x1f == 0x0a: // AND/ORR/EOR/BIC/ORN/EON/ANDS/BICS (shifted register)
		typ, amt, rm := insn>>22&3, insn>>10&63, insn>>16&31
		setFlags := insn>>29&3 == 3
		if rd == 31 && !setFlags || !sf && amt >= 32 {
			return false
		}
		b.Mov(t0, xzr(rm))
		if !sf && typ != 0 {
			if typ == 2 {
				b.Un(tcg.OpSext32, t0, t0)
			} else {
				b.Un(tcg.OpZext32, t0, t0)
			}
		}
		switch {
		case amt == 0:
		case typ == 3: // ROR (hashes: SHA-2, MD5 rounds): bits above 32 are cleared below
			width := uint64(64)
			if !sf {
				width = 32
			}
			b.Bin(tcg.OpShl, t1, t0, tcg.Imm(width-uint64(amt)))
			b.Bin(tcg.OpShr, t0, t0, tcg.Imm(uint64(amt)))
			b.Bin(tcg.OpOr, t0, t0, t1)
			if !sf {
				b.Un(tcg.OpZext32, t0, t0)
			}
		default:
			b.Bin([3]tcg.Opcode{tcg.OpShl, tcg.OpShr, tcg.OpSar}[typ], t0, t0, tcg.Imm(uint64(amt)))
		}
		if insn>>21&1 == 1 {
			b.Bin(tcg.OpXor, t0, t0, tcg.Imm(^uint64(0)))
		}
		opc := [4]tcg.Opcode{tcg.OpAnd, tcg.OpOr, tcg.OpXor, tcg.OpAnd}[insn>>29&3]
		switch {
		case rn != 31:
			b.Bin(opc, t0, xreg(rn), t0)
		case opc == tcg.OpAnd:
			b.Mov(t0, tcg.Imm(0))
		}
		if setFlags {
			if !sf {
				b.Un(tcg.OpZext32, t0, t0)
			}
			lowerLogicFlags(b, sf, rd)
			return true
		}
		if sf {
			b.Mov(xreg(rd), t0)
		} else {
			b.Un(tcg.OpZext32, xreg(rd), t0)
		}
		return true
	case !sf && (insn>>23&0xff == 0x22 || insn>>23&0xff == 0xa2): // ADD/SUB (immediate), 32-bit, no flags
		imm := uint64(insn >> 10 & 0xfff)
		if insn>>22&1 == 1 {
			imm <<= 12
		}
		if insn>>30&1 == 1 {
			imm = -imm
		}
		b.Bin(tcg.OpAdd, t0, xsp(rn, flags), tcg.Imm(imm))
		b.Un(tcg.OpZext32, xsp(rd, flags), t0)
		return true
	case insn>>23&0x3f == 0x25 && !sf && insn>>22&1 == 0: // MOVN/MOVZ/MOVK, 32-bit
		if rd == 31 {
			return false
		}
		sh := insn >> 21 & 3 * 16
		imm := uint64(insn>>5&0xffff) << sh
		switch insn >> 29 & 3 {
		case 0:
			b.Mov(xreg(rd), tcg.Imm(uint64(uint32(^imm))))
		case 2:
			b.Mov(xreg(rd), tcg.Imm(imm))
		case 3:
			b.Bin(tcg.OpAnd, xreg(rd), xreg(rd), tcg.Imm(uint64(^(uint32(0xffff) << sh))))
			b.Bin(tcg.OpOr, xreg(rd), xreg(rd), tcg.Imm(imm))
		default:
			return false
		}
		return true
	case insn>>23&0x3f == 0x26 && insn>>29&1 == 0: // SBFM/UBFM
		immr, imms := insn>>16&63, insn>>10&63
		if rd == 31 || rn == 31 || (insn>>22&1 == 1) != sf || !sf && (immr >= 32 || imms >= 32) {
			return false
		}
		x := xreg(rn)
		size := uint32(64)
		if !sf {
			size = 32
		}
		if insn>>29&3 == 2 { // UBFM
			if imms >= immr { // LSR, UBFX, UXTB/H
				if sf {
					b.Mov(t0, x)
				} else {
					b.Un(tcg.OpZext32, t0, x)
				}
				b.Bin(tcg.OpShr, t0, t0, tcg.Imm(uint64(immr)))
				b.Bin(tcg.OpAnd, xreg(rd), t0, tcg.Imm(ones64(imms-immr+1)))
				return true
			}
			b.Bin(tcg.OpAnd, t0, x, tcg.Imm(ones64(imms+1))) // LSL, UBFIZ
			b.Bin(tcg.OpShl, t0, t0, tcg.Imm(uint64(size-immr)))
		} else { // SBFM: ASR, SBFX, SXTB/H/W, SBFIZ
			b.Bin(tcg.OpShl, t0, x, tcg.Imm(uint64(63-imms)))
			if imms >= immr {
				b.Bin(tcg.OpSar, t0, t0, tcg.Imm(uint64(63-imms+immr)))
			} else {
				b.Bin(tcg.OpSar, t0, t0, tcg.Imm(uint64(63-imms)))
				b.Bin(tcg.OpShl, t0, t0, tcg.Imm(uint64(size-immr)))
			}
		}
		if sf {
			b.Mov(xreg(rd), t0)
		} else {
			b.Un(tcg.OpZext32, xreg(rd), t0)
		}
		return true
	case insn&0x7fe0f800 == 0x1ac00800: // UDIV, SDIV
		if rd == 31 {
			return false
		}
		opc, size := tcg.OpUdiv, 4
		if insn>>10&1 == 1 {
			opc = tcg.OpSdiv
		}
		if sf {
			size = 8
		}
		b.Div(opc, xreg(rd), xzr(rn), xzr(insn>>16&31), size, tcg.DivZeroIsZero)
		return true
	case insn>>23&0x3f == 0x26 && insn>>29&3 == 1: // BFM: BFI, BFXIL
		immr, imms := insn>>16&63, insn>>10&63
		if rd == 31 || (insn>>22&1 == 1) != sf || !sf && (immr >= 32 || imms >= 32) {
			return false
		}
		size := uint32(64)
		if !sf {
			size = 32
		}
		var width, lsb uint32
		b.Mov(t0, xzr(rn))
		if imms >= immr { // BFXIL: bits imms..immr of Rn to the bottom of Rd
			width = imms - immr + 1
			b.Bin(tcg.OpShr, t0, t0, tcg.Imm(uint64(immr)))
			b.Bin(tcg.OpAnd, t0, t0, tcg.Imm(ones64(width)))
		} else { // BFI: bits imms..0 of Rn to bit size-immr of Rd
			width, lsb = imms+1, size-immr
			b.Bin(tcg.OpAnd, t0, t0, tcg.Imm(ones64(width)))
			b.Bin(tcg.OpShl, t0, t0, tcg.Imm(uint64(lsb)))
		}
		b.Bin(tcg.OpAnd, t1, xreg(rd), tcg.Imm(^(ones64(width) << lsb)))
		b.Bin(tcg.OpOr, t0, t0, t1)
		if sf {
			b.Mov(xreg(rd), t0)
		} else {
			b.Un(tcg.OpZext32, xreg(rd), t0)
		}
		return true
	case insn>>24&0x7f == 0x1b && insn>>21&7 == 0: // MADD/MSUB
		rm, ra := insn>>16&31, insn>>10&31
		if rd == 31 || rn == 31 || rm == 31 {
			return false
		}
		b.Bin(tcg.OpMul, t0, xreg(rn), xreg(rm))
		switch {
		case ra != 31 && insn>>15&1 == 0:
			b.Bin(tcg.OpAdd, t0, xreg(ra), t0)
		case ra != 31:
			b.Bin(tcg.OpSub, t0, xreg(ra), t0)
		case insn>>15&1 == 1: // MNEG
			b.Bin(tcg.OpXor, t0, t0, tcg.Imm(^uint64(0)))
			b.Bin(tcg.OpAdd, t0, t0, tcg.Imm(1))
		}
		if sf {
			b.Mov(xreg(rd), t0)
		} else {
			b.Un(tcg.OpZext32, xreg(rd), t0)
		}
		return true
	}
	return false
}

var (
	offDAIF   = unsafe.Offsetof(CPU{}.daif)
	offTPIDR0 = unsafe.Offsetof(CPU{}.sr) + unsafe.Offsetof(sysRegs{}.tpidr0)
	offTPIDR1 = unsafe.Offsetof(CPU{}.sr) + unsafe.Offsetof(sysRegs{}.tpidr1)
	offTPIDRR = unsafe.Offsetof(CPU{}.sr) + unsafe.Offsetof(sysRegs{}.tpidrro)
)

// lowerSysReg lowers MRS and MSR of the system registers the kernel and libc touch
// most (per-CPU and thread pointers, current's SP_EL0, flags) where the access is
// a plain move with no trap, side effect or mode change, as readSys and writeSys
// implement them: at EL1 (where none of these trap), and at EL0 only for the thread
// registers and NZCV, which EL0 may always use. Anything else stays a helper.
func lowerSysReg(b *tcg.Builder[CPU], insn uint32, flags uint64) bool {
	rt := insn & 31
	read := insn>>21&1 == 1
	k := sysKey(insn>>19&3, insn>>16&7, insn>>12&15, insn>>8&15, insn>>5&7)
	el1 := flags&flagEL1 != 0
	var off uintptr
	switch {
	case k == kTPIDR_EL0:
		off = offTPIDR0
	case k == kTPIDRRO_EL0 && (read || el1):
		off = offTPIDRR
	case k == kNZCV:
		switch {
		case !read && rt == 31:
			b.Mov(nzcv, tcg.Imm(0))
		case !read:
			b.Bin(tcg.OpAnd, nzcv, xreg(rt), tcg.Imm(0xf0000000))
		case rt == 31:
			return false
		default:
			b.Bin(tcg.OpAnd, xreg(rt), nzcv, tcg.Imm(0xf0000000))
		}
		return true
	case !el1:
		return false
	case k == kTPIDR_EL1:
		off = offTPIDR1
	case k == kSP_EL0 && flags&flagSPSel != 0: // with SPSel=0 SP_EL0 is the current SP
		off = offSPEL0
	case k == kCurrentEL && read:
		if rt == 31 {
			return false
		}
		b.Mov(xreg(rt), tcg.Imm(1<<2))
		return true
	case k == kDAIF && read:
		off = offDAIF
	default:
		return false
	}
	if read {
		if rt == 31 {
			return false
		}
		b.Mov(xreg(rt), tcg.Global(off))
	} else {
		b.Mov(tcg.Global(off), xzr(rt))
	}
	return true
}

// lowerPair lowers LDP/STP/LDPSW of general-purpose registers. Loads go to temporaries
// first, so a fault on the second access leaves every register unchanged.
func lowerPair(b *tcg.Builder[CPU], insn uint32, flags uint64) bool {
	opc, load := insn>>30, insn>>22&1 == 1
	rt, rt2 := insn&31, insn>>10&31
	size, signed := 8, false
	switch {
	case opc == 0:
		size = 4
	case opc == 1 && load:
		size, signed = 4, true
	case opc == 2:
	default:
		return false
	}
	addr, disp, writeback := pairAddr(b, insn, flags, uint64(size))
	if load {
		b.Load(t1, addr, disp, size, signed)
		b.Load(t2, addr, disp+uint64(size), size, signed)
	} else {
		b.Store(addr, disp, xzr(rt), size)
		b.Store(addr, disp+uint64(size), xzr(rt2), size)
	}
	writeback()
	if load {
		if rt != 31 {
			b.Mov(xreg(rt), t1)
		}
		if rt2 != 31 {
			b.Mov(xreg(rt2), t2)
		}
	}
	return true
}

// pairAddr decodes the addressing of a load/store pair whose registers are size bytes
// each: the address to access (addr+disp; t0 holds it for the pre- and post-index
// forms) and the base write-back to emit after the accesses.
func pairAddr(b *tcg.Builder[CPU], insn uint32, flags uint64, size uint64) (addr tcg.Arg, disp uint64, writeback func()) {
	off := signExt(uint64(insn>>15&0x7f), 7) * size
	base := xsp(insn>>5&31, flags)
	switch insn >> 23 & 3 { // 0 no-allocate offset, 1 post-index, 2 offset, 3 pre-index
	case 1:
		b.Mov(t0, base)
		return t0, 0, func() { b.Bin(tcg.OpAdd, base, t0, tcg.Imm(off)) }
	case 3:
		b.Bin(tcg.OpAdd, t0, base, tcg.Imm(off))
		return t0, 0, func() { b.Mov(base, t0) }
	}
	return base, off, func() {}
}

// vreg returns half (0 low, 1 high) of SIMD&FP register n.
func vreg(n, half uint32) tcg.Arg {
	return tcg.Global(unsafe.Offsetof(CPU{}.State) + unsafe.Offsetof(State{}.V) + 16*uintptr(n) + 8*uintptr(half))
}

// lowerPairV lowers LDP/STP (and the non-temporal LDNP/STNP) of 32-, 64- and 128-bit
// SIMD&FP registers as the helper performs them: 4- or 8-byte accesses in address
// order (a Q register as two 8-byte halves); loads go to temporaries first so a fault
// leaves every register unchanged (memcpy, copy_page), and a loaded S or D register
// has the rest of its V register cleared.
func lowerPairV(b *tcg.Builder[CPU], insn uint32, flags uint64) bool {
	load := insn>>22&1 == 1
	rt, rt2 := insn&31, insn>>10&31
	size := uint64(4) << (insn >> 30)
	addr, disp, writeback := pairAddr(b, insn, flags, size)
	if size == 16 {
		regs := [4]tcg.Arg{vreg(rt, 0), vreg(rt, 1), vreg(rt2, 0), vreg(rt2, 1)}
		tmps := [4]tcg.Arg{t1, t2, t3, t4}
		for i := range regs {
			if load {
				b.Load(tmps[i], addr, disp+8*uint64(i), 8, false)
			} else {
				b.Store(addr, disp+8*uint64(i), regs[i], 8)
			}
		}
		writeback()
		if load {
			for i := range regs {
				b.Mov(regs[i], tmps[i])
			}
		}
		return true
	}
	if !load {
		b.Store(addr, disp, vreg(rt, 0), int(size))
		b.Store(addr, disp+size, vreg(rt2, 0), int(size))
		writeback()
		return true
	}
	b.Load(t1, addr, disp, int(size), false)
	b.Load(t2, addr, disp+size, int(size), false)
	writeback()
	b.Mov(vreg(rt, 0), t1)
	b.Mov(vreg(rt, 1), tcg.Imm(0))
	b.Mov(vreg(rt2, 0), t2)
	b.Mov(vreg(rt2, 1), tcg.Imm(0))
	return true
}

// vecLdStKind decodes the size (1 to 16 bytes) and direction of a single-register
// SIMD&FP LDR/STR; ok is false for the unallocated size/opc combinations.
func vecLdStKind(insn uint32) (size int, load, ok bool) {
	size, load = 1<<(insn>>30), insn>>22&1 == 1
	if insn>>23&1 == 1 { // the 128-bit forms
		if insn>>30 != 0 {
			return 0, false, false
		}
		size = 16
	}
	return size, load, true
}

// emitLdStV emits a SIMD&FP register load or store as the helper performs it: a Q
// register as two 8-byte accesses (low half first), a loaded B/H/S/D register with the
// rest of its V register cleared; the access comes first, then wb (the base
// write-back), then the register write, so that a fault changes nothing.
func emitLdStV(b *tcg.Builder[CPU], load bool, size int, rt uint32, addr tcg.Arg, disp uint64, wb func()) {
	switch {
	case !load && size == 16:
		b.Store(addr, disp, vreg(rt, 0), 8)
		b.Store(addr, disp+8, vreg(rt, 1), 8)
	case !load:
		b.Store(addr, disp, vreg(rt, 0), size)
	case size == 16:
		b.Load(t1, addr, disp, 8, false)
		b.Load(t2, addr, disp+8, 8, false)
	default:
		b.Load(t1, addr, disp, size, false)
		b.Mov(t2, tcg.Imm(0))
	}
	wb()
	if load {
		b.Mov(vreg(rt, 0), t1)
		b.Mov(vreg(rt, 1), t2)
	}
}

// lowerLdSt lowers LDR/STR/LDRS* of general-purpose registers with an unscaled
// immediate, pre/post-index write-back or a register offset.
func lowerLdSt(b *tcg.Builder[CPU], insn uint32, flags uint64) bool {
	size := 1 << (insn >> 30)
	opc := insn >> 22 & 3
	rt, rn := insn&31, insn>>5&31
	signed, to32 := false, false
	vec := insn>>26&1 == 1
	switch {
	case vec:
		var ok bool
		if size, _, ok = vecLdStKind(insn); !ok {
			return false
		}
		opc &= 1
	case opc == 2 && size < 8:
		signed = true
	case opc == 3 && size < 4:
		signed, to32 = true, true
	case opc == 2 && size == 8 && insn>>21&1 == 1 && insn>>10&3 == 2 && insn>>13&2 != 0,
		opc == 2 && size == 8 && insn>>21&1 == 0 && insn>>10&3 == 0:
		return true // PRFM (register), PRFUM: prefetches are hints, never fault
	case opc >= 2:
		return false // prefetch with write-back (unallocated), or reserved
	}
	load := opc != 0
	base := xsp(rn, flags)
	var addr tcg.Arg
	var disp uint64
	post, wback := false, false
	switch {
	case insn>>21&1 == 0:
		imm := signExt(uint64(insn>>12&0x1ff), 9)
		switch insn >> 10 & 3 {
		case 0: // LDUR/STUR
			addr, disp = base, imm
		case 1:
			post, wback = true, true
		case 2: // unprivileged (LDTR/STTR): EL0's permissions when run at EL1
			if vec {
				return false // unallocated
			}
			n := len(b.Ops)
			emitLdSt(b, load, signed, to32, size, rt, base, imm, func() {})
			if flags&flagEL1 != 0 {
				b.Unprivileged(n)
			}
			return true
		case 3:
			wback = true
		}
		if wback {
			if post {
				b.Mov(t0, base)
			} else {
				b.Bin(tcg.OpAdd, t0, base, tcg.Imm(imm))
			}
			addr = t0
		}
		disp = imm
		if addr == t0 {
			disp = 0
		}
		return emitLdStAny(b, vec, load, signed, to32, size, rt, addr, disp, func() {
			if wback {
				if post {
					b.Bin(tcg.OpAdd, base, t0, tcg.Imm(imm))
				} else {
					b.Mov(base, t0)
				}
			}
		})
	case insn>>10&3 == 2: // register offset
		rm, option := insn>>16&31, insn>>13&7
		if option&2 == 0 || rm == 31 {
			return false
		}
		switch option {
		case 2:
			b.Un(tcg.OpZext32, t0, xreg(rm))
		case 6:
			b.Un(tcg.OpSext32, t0, xreg(rm))
		default:
			b.Mov(t0, xreg(rm))
		}
		if insn>>12&1 == 1 && size > 1 {
			b.Bin(tcg.OpShl, t0, t0, tcg.Imm(uint64(bits.TrailingZeros(uint(size)))))
		}
		b.Bin(tcg.OpAdd, t0, base, t0)
		return emitLdStAny(b, vec, load, signed, to32, size, rt, t0, 0, func() {})
	}
	return false
}

// emitLdStAny is emitLdSt for a general-purpose register, emitLdStV for a SIMD&FP one.
func emitLdStAny(b *tcg.Builder[CPU], vec, load, signed, to32 bool, size int, rt uint32, addr tcg.Arg, disp uint64, wb func()) bool {
	if vec {
		emitLdStV(b, load, size, rt, addr, disp, wb)
		return true
	}
	return emitLdSt(b, load, signed, to32, size, rt, addr, disp, wb)
}

// emitLdSt emits the access, then wb (the base write-back), then the loaded register's
// write, so that a loaded value wins over the write-back of the same register.
func emitLdSt(b *tcg.Builder[CPU], load, signed, to32 bool, size int, rt uint32, addr tcg.Arg, disp uint64, wb func()) bool {
	if !load {
		b.Store(addr, disp, xzr(rt), size)
		wb()
		return true
	}
	b.Load(t1, addr, disp, size, signed)
	wb()
	if rt != 31 {
		if to32 {
			b.Un(tcg.OpZext32, xreg(rt), t1)
		} else {
			b.Mov(xreg(rt), t1)
		}
	}
	return true
}

// lowerAddSub emits d = a ± x (32-bit results zero-extended), without flags.
func lowerAddSub(b *tcg.Builder[CPU], sf, sub bool, d, a, x tcg.Arg) {
	opc := tcg.OpAdd
	if sub {
		opc = tcg.OpSub
	}
	if sf {
		b.Bin(opc, d, a, x)
		return
	}
	b.Bin(opc, t0, a, x)
	b.Un(tcg.OpZext32, d, t0)
}

// lowerAddSubFlags emits Rd = A ± B setting NZCV (ADDS, SUBS, CMP, CMN); a is not an
// immediate, neither a nor x is t0, and rd 31 discards the result. The flags are one
// IR op (tcg.OpFlagsAdd/Sub on 4 or 8 bytes).
func lowerAddSubFlags(b *tcg.Builder[CPU], sf, sub bool, a, x tcg.Arg, rd uint32) {
	size, res, flags := 8, tcg.OpAdd, tcg.OpFlagsAdd
	if !sf {
		size = 4
	}
	if sub {
		res, flags = tcg.OpSub, tcg.OpFlagsSub
	}
	if rd != 31 { // computed first: rd may be one of the operands
		b.Bin(res, t0, a, x)
		if !sf {
			b.Un(tcg.OpZext32, t0, t0)
		}
	}
	b.Flags(flags, nzcv, a, x, size, tcg.FlagsNZCV)
	if rd != 31 {
		b.Mov(xreg(rd), t0)
	}
}

// lowerLogicFlags sets NZCV from the logical result in t0 (C and V clear) and writes it
// to rd unless rd is 31.
func lowerLogicFlags(b *tcg.Builder[CPU], sf bool, rd uint32) {
	size := 8
	if !sf {
		size = 4
	}
	b.Flags(tcg.OpFlagsLogic, nzcv, t0, tcg.Imm(0), size, tcg.FlagsNZCV)
	if rd != 31 {
		b.Mov(xreg(rd), t0)
	}
}

// lowerCond sets d to 1 when condition cond holds for NZCV, else 0 (uses t3).
func lowerCond(b *tcg.Builder[CPU], cond uint32, d tcg.Arg) {
	bit := func(dst tcg.Arg, n uint64) {
		b.Bin(tcg.OpShr, dst, nzcv, tcg.Imm(n))
		b.Bin(tcg.OpAnd, dst, dst, tcg.Imm(1))
	}
	switch cond >> 1 {
	case 0: // EQ: Z
		bit(d, 30)
	case 1: // CS: C
		bit(d, 29)
	case 2: // MI: N
		bit(d, 31)
	case 3: // VS: V
		bit(d, 28)
	case 4: // HI: C and not Z
		bit(d, 30)
		bit(t3, 29)
		b.Bin(tcg.OpSetLtu, d, d, t3)
	case 5, 6: // GE: N == V; GT: not Z and N == V
		b.Bin(tcg.OpShr, d, nzcv, tcg.Imm(3))
		b.Bin(tcg.OpXor, d, d, nzcv)
		b.Bin(tcg.OpShr, d, d, tcg.Imm(28))
		b.Bin(tcg.OpAnd, d, d, tcg.Imm(1)) // N != V: LT
		if cond>>1 == 6 {
			bit(t3, 30)
			b.Bin(tcg.OpOr, d, d, t3) // LE
		}
		if cond&1 == 0 { // GE, GT: the inverse
			b.Bin(tcg.OpXor, d, d, tcg.Imm(1))
		}
		return
	default: // AL, NV
		b.Mov(d, tcg.Imm(1))
		return
	}
	if cond&1 == 1 {
		b.Bin(tcg.OpXor, d, d, tcg.Imm(1))
	}
}

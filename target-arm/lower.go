package arm

import (
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

// irTarget describes CPU to tcg backends.
var irTarget = &tcg.Target[CPU]{
	PC:    offPC,
	TLB:   offTLBPtr,
	Temps: offTemps,
	LoadSlow: func(c *CPU, va uint64, size int) (uint64, bool) {
		return c.ldSlow(va, size, c.el)
	},
	StoreSlow: func(c *CPU, va uint64, size int, v uint64) bool {
		return c.stSlow(va, size, v, c.el)
	},
}

// TB flag bits (see tbFlags).
const (
	flagEL1   = 1 << 0
	flagFP    = 1 << 1
	flagSPSel = 1 << 2
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
	rd := insn & 31
	rn := insn >> 5 & 31
	switch {
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

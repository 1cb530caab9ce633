package x86

import (
	"encoding/binary"
	"fmt"
	"math/big"
	"math/rand"
	"testing"
)

// The random generator of valid instruction forms: each form picks an opcode, an
// operand size (66, REX.W or neither; a plain REX sometimes, which changes what byte
// registers 4-7 mean), a register or memory ModRM operand (base+disp8, SIB with an
// index, or RIP-relative, all pointing into the data page) and immediates, and says
// which RFLAGS bits the SDM defines for it.

type gen struct {
	r *rand.Rand
	s *dtState
}

// operand encodes a ModRM operand. regField is the ModRM.reg value (0-15). mem forces
// (1), forbids (-1) or allows (0) a memory operand. It returns the REX bits, the ModRM
// bytes, whether the operand is memory and, for RIP-relative forms, the offset of the
// disp32 within the ModRM bytes and the target (patched by finish).
type modrmEnc struct {
	rex     byte
	bytes   []byte
	mem     bool
	ripOff  int // -1: not RIP-relative
	ripDest uint64
	rm      int
}

func (g *gen) modrm(regField int, mem int, align uint64) modrmEnc {
	e := modrmEnc{ripOff: -1}
	if regField >= 8 {
		e.rex |= 4
	}
	useMem := mem > 0 || mem == 0 && g.r.Intn(2) == 0
	if !useMem {
		rm := g.r.Intn(16)
		e.rm = rm
		if rm >= 8 {
			e.rex |= 1
		}
		e.bytes = []byte{0xc0 | byte(regField&7)<<3 | byte(rm&7)}
		return e
	}
	e.mem = true
	addr := func() uint64 { return dtData + 0x400 + uint64(g.r.Intn(0x300))&^(align-1) }
	disp := func() byte {
		d := int8(g.r.Intn(128) - 64)
		return byte(d) &^ byte(align-1)
	}
	switch g.r.Intn(3) {
	case 0: // [base + disp8]
		var b int
		for b = g.r.Intn(16); b&7 == 4; b = g.r.Intn(16) {
		}
		if b >= 8 {
			e.rex |= 1
		}
		g.s.R[b] = addr()
		e.bytes = []byte{0x40 | byte(regField&7)<<3 | byte(b&7), disp()}
	case 1: // [base + index*scale + disp8]
		b, idx := g.r.Intn(16), g.r.Intn(16)
		for idx == 4 || idx == b {
			idx = g.r.Intn(16)
		}
		if b >= 8 {
			e.rex |= 1
		}
		if idx >= 8 {
			e.rex |= 2
		}
		sc := g.r.Intn(4)
		if b != 4 {
			g.s.R[b] = addr()
		}
		g.s.R[idx] = uint64(g.r.Intn(32)) * align
		e.bytes = []byte{0x44 | byte(regField&7)<<3, byte(sc<<6 | (idx&7)<<3 | b&7), disp()}
	case 2: // [rip + disp32]
		e.bytes = []byte{0x05 | byte(regField&7)<<3, 0, 0, 0, 0}
		e.ripOff, e.ripDest = 1, dtData+0x400+uint64(g.r.Intn(0x300))&^(align-1)
	}
	return e
}

// insnBuilder assembles one instruction.
type insnBuilder struct {
	prefixes []byte
	rex      byte
	forceRex bool
	opcode   []byte
	m        *modrmEnc
	imm      []byte
}

func (b *insnBuilder) bytes() []byte {
	var out []byte
	out = append(out, b.prefixes...)
	rex := b.rex
	if b.m != nil {
		rex |= b.m.rex
	}
	if rex != 0 || b.forceRex {
		out = append(out, 0x40|rex)
	}
	out = append(out, b.opcode...)
	mpos := len(out)
	if b.m != nil {
		out = append(out, b.m.bytes...)
	}
	out = append(out, b.imm...)
	if b.m != nil && b.m.ripOff >= 0 {
		next := dtStart + uint64(len(out))
		binary.LittleEndian.PutUint32(out[mpos+b.m.ripOff:], uint32(b.m.ripDest-next))
	}
	return out
}

func immBytes(v uint64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
	return b
}

// size picks an operand size: 1 (if byte forms exist), 2, 4 or 8, and sets the prefix.
func (g *gen) size(b *insnBuilder, allowByte bool) int {
	n := 4
	if allowByte {
		n = 5
	}
	switch g.r.Intn(n) {
	case 0:
		b.prefixes = append(b.prefixes, 0x66)
		return 2
	case 1, 2:
		b.rex |= 8
		return 8
	case 3:
		return 4
	}
	return 1
}

func (g *gen) maybeRex(b *insnBuilder) {
	if g.r.Intn(3) == 0 {
		b.forceRex = true
	}
}

func immSizeFor(size int) int {
	if size == 2 {
		return 2
	}
	if size == 1 {
		return 1
	}
	return 4
}

type genForm struct {
	name string
	// gen builds the instruction into the state and returns it with the flag mask;
	// fault is the vector the SDM says it raises (-1 none).
	gen func(g *gen) (code []byte, mask uint64, fault int)
}

func byteOp(op byte, size int) byte {
	if size == 1 {
		return op
	}
	return op | 1
}

// shiftMask returns the defined flags after group-2 operation n with raw count cnt.
func shiftMask(n int, cnt uint64, size int) uint64 {
	if size == 8 {
		cnt &= 63
	} else {
		cnt &= 31
	}
	if cnt == 0 {
		return flagsArith
	}
	m := uint64(flagsArith)
	if n < 4 { // rotates touch only CF and OF
		if cnt != 1 {
			m &^= flagOF
		}
		return m
	}
	m &^= flagAF
	if cnt != 1 {
		m &^= flagOF
	}
	if cnt >= uint64(8*size) {
		m &^= flagCF // SHL/SHR by the width or more (8/16-bit): CF undefined
	}
	return m
}

var genForms = []genForm{
	{"alu r/m,reg", func(g *gen) ([]byte, uint64, int) {
		n := g.r.Intn(8)
		b := &insnBuilder{}
		size := g.size(b, true)
		g.maybeRex(b)
		dir := byte(g.r.Intn(2)) * 2
		m := g.modrm(g.r.Intn(16), 0, 1)
		if m.mem && n != 7 && dir == 0 && g.r.Intn(3) == 0 {
			b.prefixes = append(b.prefixes, 0xf0) // LOCK
		}
		b.opcode = []byte{byteOp(byte(n)<<3|dir, size)}
		b.m = &m
		return b.bytes(), aluMask(n), -1
	}},
	{"alu acc,imm", func(g *gen) ([]byte, uint64, int) {
		n := g.r.Intn(8)
		b := &insnBuilder{}
		size := g.size(b, true)
		b.opcode = []byte{byteOp(byte(n)<<3|4, size)}
		b.imm = immBytes(g.r.Uint64(), immSizeFor(size))
		return b.bytes(), aluMask(n), -1
	}},
	{"group1 r/m,imm", func(g *gen) ([]byte, uint64, int) {
		n := g.r.Intn(8)
		b := &insnBuilder{}
		size := g.size(b, true)
		g.maybeRex(b)
		m := g.modrm(n, 0, 1)
		if m.mem && n != 7 && g.r.Intn(3) == 0 {
			b.prefixes = append(b.prefixes, 0xf0)
		}
		b.m = &m
		if size != 1 && g.r.Intn(2) == 0 {
			b.opcode = []byte{0x83}
			b.imm = immBytes(g.r.Uint64(), 1)
		} else {
			b.opcode = []byte{byteOp(0x80, size)}
			b.imm = immBytes(g.r.Uint64(), immSizeFor(size))
		}
		return b.bytes(), aluMask(n), -1
	}},
	{"test", func(g *gen) ([]byte, uint64, int) {
		b := &insnBuilder{}
		size := g.size(b, true)
		g.maybeRex(b)
		switch g.r.Intn(3) {
		case 0:
			m := g.modrm(g.r.Intn(16), 0, 1)
			b.m, b.opcode = &m, []byte{byteOp(0x84, size)}
		case 1:
			m := g.modrm(0, 0, 1)
			b.m, b.opcode = &m, []byte{byteOp(0xf6, size)}
			b.imm = immBytes(g.r.Uint64(), immSizeFor(size))
		default:
			b.opcode = []byte{byteOp(0xa8, size)}
			b.imm = immBytes(g.r.Uint64(), immSizeFor(size))
		}
		return b.bytes(), flagsArith &^ flagAF, -1
	}},
	{"inc/dec/not/neg", func(g *gen) ([]byte, uint64, int) {
		b := &insnBuilder{}
		size := g.size(b, true)
		g.maybeRex(b)
		var m modrmEnc
		if g.r.Intn(2) == 0 {
			m = g.modrm(g.r.Intn(2), 0, 1)
			b.opcode = []byte{byteOp(0xfe, size)}
		} else {
			m = g.modrm(2+g.r.Intn(2), 0, 1)
			b.opcode = []byte{byteOp(0xf6, size)}
		}
		if m.mem && g.r.Intn(3) == 0 {
			b.prefixes = append(b.prefixes, 0xf0)
		}
		b.m = &m
		return b.bytes(), flagsArith, -1
	}},
	{"shift/rotate", func(g *gen) ([]byte, uint64, int) {
		n := g.r.Intn(8)
		if n == 6 {
			n = 4 // SAL is SHL's alias encoding; hardware accepts both, keep the canonical one
		}
		b := &insnBuilder{}
		size := g.size(b, true)
		g.maybeRex(b)
		m := g.modrm(n, 0, 1)
		b.m = &m
		var cnt uint64
		switch g.r.Intn(3) {
		case 0:
			b.opcode = []byte{byteOp(0xd0, size)}
			cnt = 1
		case 1:
			b.opcode = []byte{byteOp(0xc0, size)}
			cnt = uint64(g.r.Intn(72))
			b.imm = []byte{byte(cnt)}
		default:
			b.opcode = []byte{byteOp(0xd2, size)}
			cnt = uint64(g.r.Intn(72))
			g.s.R[1] = g.s.R[1]&^0xff | cnt
			if m.mem || m.rm != 1 {
				break
			}
			cnt = g.s.R[1] // shifting CL by CL
		}
		return b.bytes(), shiftMask(n, cnt, size), -1
	}},
	{"shld/shrd", func(g *gen) ([]byte, uint64, int) {
		b := &insnBuilder{}
		size := g.size(b, false)
		g.maybeRex(b)
		m := g.modrm(g.r.Intn(16), 0, 1)
		b.m = &m
		base := byte(0xa4)
		if g.r.Intn(2) == 0 {
			base = 0xac
		}
		var cnt uint64
		if g.r.Intn(2) == 0 {
			cnt = uint64(g.r.Intn(64))
			b.opcode = []byte{0x0f, base}
			b.imm = []byte{byte(cnt)}
		} else {
			cnt = uint64(g.r.Intn(64))
			b.opcode = []byte{0x0f, base + 1}
			g.s.R[1] = g.s.R[1]&^0xff | cnt
			if !m.mem && m.rm == 1 {
				return nil, 0, -1
			}
		}
		mc := cnt & 31
		if size == 8 {
			mc = cnt & 63
		}
		if size == 2 && mc > 16 {
			return nil, 0, -1 // result undefined
		}
		mask := uint64(flagsArith)
		if mc != 0 {
			mask &^= flagAF
			if mc != 1 {
				mask &^= flagOF
			}
		}
		return b.bytes(), mask, -1
	}},
	{"mul/imul/div/idiv", func(g *gen) ([]byte, uint64, int) {
		n := 4 + g.r.Intn(4)
		b := &insnBuilder{}
		size := g.size(b, true)
		g.maybeRex(b)
		m := g.modrm(n, 0, 1)
		b.m = &m
		b.opcode = []byte{byteOp(0xf6, size)}
		code := b.bytes()
		if n < 6 {
			return code, flagCF | flagOF, -1
		}
		if g.r.Intn(2) == 0 { // make the dividend small so most divisions succeed
			g.s.R[2] = uint64(g.r.Intn(4))
			if n == 7 && g.r.Intn(2) == 0 {
				g.s.R[2] = ^uint64(0)
			}
		}
		return code, 0, -2 // fault decided by divFaults
	}},
	{"imul r,r/m(,imm)", func(g *gen) ([]byte, uint64, int) {
		b := &insnBuilder{}
		size := g.size(b, false)
		g.maybeRex(b)
		m := g.modrm(g.r.Intn(16), 0, 1)
		b.m = &m
		switch g.r.Intn(3) {
		case 0:
			b.opcode = []byte{0x0f, 0xaf}
		case 1:
			b.opcode = []byte{0x6b}
			b.imm = immBytes(g.r.Uint64(), 1)
		default:
			b.opcode = []byte{0x69}
			b.imm = immBytes(g.r.Uint64(), immSizeFor(size))
		}
		return b.bytes(), flagCF | flagOF, -1
	}},
	{"movzx/movsx/movsxd", func(g *gen) ([]byte, uint64, int) {
		b := &insnBuilder{}
		g.size(b, false)
		g.maybeRex(b)
		m := g.modrm(g.r.Intn(16), 0, 1)
		b.m = &m
		switch g.r.Intn(5) {
		case 4:
			b.opcode = []byte{0x63}
		default:
			b.opcode = []byte{0x0f, []byte{0xb6, 0xb7, 0xbe, 0xbf}[g.r.Intn(4)]}
		}
		return b.bytes(), flagsArith, -1
	}},
	{"mov/lea", func(g *gen) ([]byte, uint64, int) {
		b := &insnBuilder{}
		size := g.size(b, true)
		g.maybeRex(b)
		switch g.r.Intn(5) {
		case 0, 1:
			m := g.modrm(g.r.Intn(16), 0, 1)
			b.m, b.opcode = &m, []byte{byteOp(0x88, size) | byte(g.r.Intn(2))*2}
		case 2:
			m := g.modrm(0, 0, 1)
			b.m, b.opcode = &m, []byte{byteOp(0xc6, size)}
			b.imm = immBytes(g.r.Uint64(), immSizeFor(size))
		case 3:
			reg := g.r.Intn(16)
			if reg >= 8 {
				b.rex |= 1
			}
			if size == 1 {
				b.opcode = []byte{0xb0 + byte(reg&7)}
				b.imm = immBytes(g.r.Uint64(), 1)
			} else {
				b.opcode = []byte{0xb8 + byte(reg&7)}
				n := size
				if n == 8 && g.r.Intn(2) == 0 {
					b.rex &^= 8 // mov r32, imm32
					n = 4
				}
				b.imm = immBytes(g.r.Uint64(), n)
			}
		default:
			if size == 1 {
				b.rex |= 8
			}
			m := g.modrm(g.r.Intn(16), 1, 1)
			b.m, b.opcode = &m, []byte{0x8d}
		}
		return b.bytes(), flagsArith, -1
	}},
	{"xchg/bswap/xadd/cmpxchg", func(g *gen) ([]byte, uint64, int) {
		b := &insnBuilder{}
		size := g.size(b, true)
		g.maybeRex(b)
		switch g.r.Intn(4) {
		case 0:
			m := g.modrm(g.r.Intn(16), 0, 1)
			b.m, b.opcode = &m, []byte{byteOp(0x86, size)}
		case 1:
			if size <= 2 {
				size = 4
				b.prefixes = nil
			}
			reg := g.r.Intn(16)
			if reg >= 8 {
				b.rex |= 1
			}
			b.opcode = []byte{0x0f, 0xc8 + byte(reg&7)}
		case 2:
			m := g.modrm(g.r.Intn(16), 0, 1)
			if m.mem && g.r.Intn(2) == 0 {
				b.prefixes = append(b.prefixes, 0xf0)
			}
			b.m, b.opcode = &m, []byte{0x0f, byteOp(0xc0, size)}
		default:
			m := g.modrm(g.r.Intn(16), 0, 1)
			if m.mem && g.r.Intn(2) == 0 {
				b.prefixes = append(b.prefixes, 0xf0)
			}
			b.m, b.opcode = &m, []byte{0x0f, byteOp(0xb0, size)}
			if g.r.Intn(2) == 0 { // make the compare succeed sometimes
				return b.bytes(), flagsArith, -3
			}
		}
		return b.bytes(), flagsArith, -1
	}},
	{"cmovcc/setcc", func(g *gen) ([]byte, uint64, int) {
		b := &insnBuilder{}
		cc := byte(g.r.Intn(16))
		if g.r.Intn(2) == 0 {
			g.size(b, false)
			g.maybeRex(b)
			m := g.modrm(g.r.Intn(16), 0, 1)
			b.m, b.opcode = &m, []byte{0x0f, 0x40 | cc}
		} else {
			g.maybeRex(b)
			m := g.modrm(0, 0, 1)
			b.m, b.opcode = &m, []byte{0x0f, 0x90 | cc}
		}
		return b.bytes(), flagsArith, -1
	}},
	{"bt/bts/btr/btc", func(g *gen) ([]byte, uint64, int) {
		b := &insnBuilder{}
		g.size(b, false)
		g.maybeRex(b)
		k := g.r.Intn(4)
		if g.r.Intn(2) == 0 {
			m := g.modrm(4+k, 0, 1)
			b.m, b.opcode = &m, []byte{0x0f, 0xba}
			b.imm = []byte{byte(g.r.Intn(256))}
			if m.mem && k > 0 && g.r.Intn(2) == 0 {
				b.prefixes = append(b.prefixes, 0xf0)
			}
		} else {
			reg := g.r.Intn(16)
			m := g.modrm(reg, 0, 8)
			if m.mem {
				if reg == 4 {
					return nil, 0, -1 // the offset register is RSP: too far
				}
				g.s.R[reg] = uint64(int64(g.r.Intn(512) - 256))
				if k > 0 && g.r.Intn(2) == 0 {
					b.prefixes = append(b.prefixes, 0xf0)
				}
			}
			b.m, b.opcode = &m, []byte{0x0f, []byte{0xa3, 0xab, 0xb3, 0xbb}[k]}
			code := b.bytes()
			return code, flagCF | flagZF, -4 // -4: check the offset register did not alias the address
		}
		return b.bytes(), flagCF | flagZF, -1
	}},
	{"bsf/bsr", func(g *gen) ([]byte, uint64, int) {
		b := &insnBuilder{}
		g.size(b, false)
		g.maybeRex(b)
		m := g.modrm(g.r.Intn(16), 0, 1)
		if !m.mem && g.r.Intn(4) == 0 {
			g.s.R[m.rm] = 0
		}
		b.m, b.opcode = &m, []byte{0x0f, 0xbc + byte(g.r.Intn(2))}
		return b.bytes(), flagZF, -1
	}},
	{"popcnt/lzcnt/tzcnt", func(g *gen) ([]byte, uint64, int) {
		b := &insnBuilder{}
		g.size(b, false)
		b.prefixes = append([]byte{0xf3}, b.prefixes...)
		g.maybeRex(b)
		m := g.modrm(g.r.Intn(16), 0, 1)
		if !m.mem && g.r.Intn(4) == 0 {
			g.s.R[m.rm] = 0
		}
		op := []byte{0xb8, 0xbc, 0xbd}[g.r.Intn(3)]
		b.m, b.opcode = &m, []byte{0x0f, op}
		mask := uint64(flagsArith)
		if op != 0xb8 {
			mask = flagCF | flagZF
		}
		return b.bytes(), mask, -1
	}},
	{"cbw/cwd/lahf/sahf/cmc/clc/stc", func(g *gen) ([]byte, uint64, int) {
		b := &insnBuilder{}
		op := []byte{0x98, 0x99, 0x9e, 0x9f, 0xf5, 0xf8, 0xf9}[g.r.Intn(7)]
		if op == 0x98 || op == 0x99 {
			g.size(b, false)
		}
		b.opcode = []byte{op}
		return b.bytes(), flagsArith, -1
	}},
	{"push/pop", func(g *gen) ([]byte, uint64, int) {
		b := &insnBuilder{}
		if g.r.Intn(4) == 0 {
			b.prefixes = []byte{0x66}
		}
		reg := g.r.Intn(16)
		if reg == 4 {
			reg = 0
		}
		if reg >= 8 {
			b.rex |= 1
		}
		switch g.r.Intn(5) {
		case 0:
			b.opcode = []byte{0x50 + byte(reg&7)}
		case 1:
			b.opcode = []byte{0x58 + byte(reg&7)}
		case 2:
			b.rex = 0
			if g.r.Intn(2) == 0 {
				b.opcode, b.imm = []byte{0x6a}, immBytes(g.r.Uint64(), 1)
			} else {
				n := 4
				if len(b.prefixes) > 0 {
					n = 2
				}
				b.opcode, b.imm = []byte{0x68}, immBytes(g.r.Uint64(), n)
			}
		case 3:
			b.rex = 0
			m := g.modrm(6, 0, 1)
			b.m, b.opcode = &m, []byte{0xff}
		default:
			b.rex = 0
			m := g.modrm(0, 0, 1)
			if !m.mem && m.rm == 4 {
				return nil, 0, -1
			}
			b.m, b.opcode = &m, []byte{0x8f}
		}
		return b.bytes(), flagsArith, -1
	}},
	{"cmpxchg8b/16b", func(g *gen) ([]byte, uint64, int) {
		b := &insnBuilder{}
		align := uint64(8)
		if g.r.Intn(2) == 0 {
			b.rex |= 8
			align = 16
		}
		if g.r.Intn(2) == 0 {
			b.prefixes = []byte{0xf0}
		}
		m := g.modrm(1, 1, align)
		b.m, b.opcode = &m, []byte{0x0f, 0xc7}
		return b.bytes(), flagZF, -5
	}},
}

func aluMask(n int) uint64 {
	if n == 1 || n == 4 || n == 6 {
		return flagsArith &^ flagAF
	}
	return flagsArith
}

// divFault reports, from math/big, whether DIV/IDIV of the state would raise #DE.
func divFault(code []byte, s *dtState, h *gemuHarness, t *testing.T) bool {
	// Decode with the translator's decoder to find the operand (a cross-check of the
	// length is done by x86asm in TestDiffRandom).
	in, _ := decodeBytes(code)
	size := 1
	if in.opc&1 != 0 {
		size = in.opsz
	}
	var src uint64
	if in.hasMem {
		ea := in.disp
		if !in.ripRel {
			if in.base >= 0 {
				ea += s.R[in.base]
			}
			if in.index >= 0 {
				ea += s.R[in.index] << in.scale
			}
		}
		off := ea - dtData
		for i := 0; i < size; i++ {
			src |= uint64(s.Data[off+uint64(i)]) << (8 * i)
		}
	} else {
		src = h.c.getRegFrom(&s.R, in.rm, size, in.rex)
	}
	bitsN := uint(8 * size)
	var hi, lo uint64
	if size == 1 {
		hi, lo = s.R[0]>>8&0xff, s.R[0]&0xff
	} else {
		hi, lo = s.R[2]&sizeMask(size), s.R[0]&sizeMask(size)
	}
	dividend := new(big.Int).Lsh(new(big.Int).SetUint64(hi), bitsN)
	dividend.Or(dividend, new(big.Int).SetUint64(lo))
	divisor := new(big.Int).SetUint64(src & sizeMask(size))
	signed := in.reg&7 == 7
	if signed {
		if hi>>(bitsN-1)&1 != 0 {
			dividend.Sub(dividend, new(big.Int).Lsh(big.NewInt(1), 2*bitsN))
		}
		if src>>(bitsN-1)&1 != 0 {
			divisor.Sub(divisor, new(big.Int).Lsh(big.NewInt(1), bitsN))
		}
	}
	if divisor.Sign() == 0 {
		return true
	}
	q := new(big.Int).Quo(dividend, divisor)
	if signed {
		lim := new(big.Int).Lsh(big.NewInt(1), bitsN-1)
		return q.Cmp(lim) >= 0 || q.Cmp(new(big.Int).Neg(lim)) < 0
	}
	return q.BitLen() > int(bitsN)
}

func (c *CPU) getRegFrom(r *[16]uint64, n byte, size int, rex byte) uint64 {
	save := c.R
	c.R = *r
	v := c.getReg(n, size, rex)
	c.R = save
	return v
}

func decodeBytes(code []byte) (insn, bool) {
	page := make([]byte, 4096)
	copy(page[dtStart&0xfff:], code)
	r := &byteReader{va: dtStart, page: dtStart &^ 0xfff, host: page}
	return decode(r, true, false)
}

func TestDiffRandom(t *testing.T) {
	// Once with the lowered IR forms (lower.go), once with every instruction a helper.
	for _, ir := range []bool{true, false} {
		name := "ir"
		if !ir {
			name = "helpers"
		}
		t.Run(name, func(t *testing.T) {
			defer func(v bool) { lowerIR = v }(lowerIR)
			lowerIR = ir
			diffRandom(t)
		})
	}
}

func diffRandom(t *testing.T) {
	model := Qemu64.WithBitOps()
	h := newGemuHarness(t, &model)
	seed := int64(20261204)
	r := rand.New(rand.NewSource(seed))
	const perForm = 400
	total, faults := 0, 0
	for _, f := range genForms {
		pass := 0
		for i := 0; i < perForm; i++ {
			s := randomState(r)
			g := &gen{r: r, s: &s}
			code, mask, fault := f.gen(g)
			if code == nil {
				continue
			}
			// Length cross-check with x86asm.
			in, ok := decodeBytes(code)
			if !ok || in.length != len(code) {
				t.Errorf("%s: decoder length %d (ok %v) for [% x] %s", f.name, in.length, ok, code, disasm(code))
				continue
			}
			if in.hasMem {
				if ea := addrOf(&in, &s); ea < dtData || ea > dtData+0x1000-16 {
					continue // a later register choice overwrote the base register
				}
			}
			tc := &dtCase{name: fmt.Sprintf("%s #%d", f.name, i), code: code, in: s, mask: mask}
			switch fault {
			case -2: // DIV/IDIV
				if divFault(code, &s, h, t) {
					res := h.run(t, code, &s)
					if res.vector != excDE || res.err != -1 {
						t.Errorf("%s [% x] %s: want #DE, got vector %d err %d", tc.name, code, disasm(code), res.vector, res.err)
						continue
					}
					faults++
					pass++
					continue
				}
			case -3: // CMPXCHG: make the accumulator equal the destination
				m := in
				size := 1
				if in.opc&1 != 0 {
					size = in.opsz
				}
				var v uint64
				if m.hasMem {
					ea := addrOf(&m, &s)
					for k := 0; k < size; k++ {
						v |= uint64(s.Data[ea-dtData+uint64(k)]) << (8 * k)
					}
				} else {
					v = h.c.getRegFrom(&s.R, m.rm, size, m.rex)
				}
				if size == 1 {
					s.R[0] = s.R[0]&^0xff | v
				} else {
					s.R[0] = s.R[0]&^sizeMask(size) | v
				}
				tc.in = s
				if in.hasMem {
					if ea := addrOf(&m, &s); ea < dtData || ea >= dtData+0xff0 {
						continue // the accumulator was the base register
					}
				}
			case -4: // BT with a register offset: the offset register may be the base
				if in.hasMem {
					if ea := addrOf(&in, &s); ea < dtData+0x100 || ea >= dtData+0xf00 {
						continue
					}
				}
			case -5: // CMPXCHG8B/16B: make the compare succeed half the time
				if in.hasMem && r.Intn(2) == 0 {
					ea := addrOf(&in, &s) - dtData
					s.R[0] = binary.LittleEndian.Uint64(s.Data[ea:])
					s.R[2] = binary.LittleEndian.Uint64(s.Data[ea+8:])
					if in.rex&8 == 0 {
						s.R[2] = s.R[0] >> 32
					}
					tc.in = s
				}
				if ea := addrOf(&in, &s); ea < dtData || ea >= dtData+0xff0 {
					continue
				}
			}
			if compare(t, h, tc) {
				pass++
			}
			total++
		}
		t.Logf("%-32s %d passed", f.name, pass)
		if t.Failed() && testing.Short() {
			return
		}
	}
	t.Logf("random: %d cases compared with the host CPU, %d #DE cases checked against math/big (seed %d)", total, faults, seed)
}

func addrOf(in *insn, s *dtState) uint64 {
	ea := in.disp
	if !in.ripRel {
		if in.base >= 0 {
			ea += s.R[in.base]
		}
		if in.index >= 0 {
			ea += s.R[in.index] << in.scale
		}
	}
	return ea
}

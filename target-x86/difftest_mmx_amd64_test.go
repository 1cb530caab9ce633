package x86

import (
	"encoding/binary"
	"math/rand"
	"testing"
)

// MMX against the host CPU. The harness compares GPRs, flags, XMM0-3 and the data page,
// so each case brings its MMX state in and out through the data page: FNINIT, MOVQ of
// data[0..63] into MM0-MM7, the code under test, FXSAVE to data[0xc00] (FCW, FSW with
// TOP, the abridged tag byte and the eight physical registers as 80-bit values: sign
// and exponent all ones after an MMX write) with the fields neither side controls
// zeroed (FOP/FIP/FDP, MXCSR and its mask, the XMM registers and the rest of the
// image), then MOVQ of MM0-MM7 to data[0x40..0x7f].

const (
	mmxSave  = 0xc00 // data-page offset of the FXSAVE image
	mmxMXCSR = 0x7f0 // data-page offset of the MXCSR value each case loads
	rspOff   = 0x800 // the harness's RSP is data+0x800
)

// rspMem is the ModRM/SIB/disp32 of [rsp+d] with register field reg, where d is a
// data-page offset.
func rspMem(reg byte, off int) []byte {
	b := []byte{0x84 | reg<<3, 0x24, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(b[2:], uint32(int32(off-rspOff)))
	return b
}

func mmxCase(body []byte) []byte {
	code := []byte{0xdb, 0xe3} // fninit
	// ldmxcsr [data+0x7f0] (0x1f80, mmxState): earlier cases may leave the host's
	// rounding mode changed
	code = append(append(code, 0x0f, 0xae), rspMem(2, mmxMXCSR)...)
	for i := byte(0); i < 8; i++ {
		code = append(append(code, 0x0f, 0x6f), rspMem(i, 8*int(i))...) // movq mmI, [data+8i]
	}
	code = append(code, body...)
	code = append(append(code, 0x0f, 0xae), rspMem(0, mmxSave)...) // fxsave [data+0xc00]
	zero := func(off, size int) {
		if size == 2 {
			code = append(append(code, 0x66, 0xc7), rspMem(0, mmxSave+off)...)
			code = append(code, 0, 0)
			return
		}
		code = append(append(code, 0x48, 0xc7), rspMem(0, mmxSave+off)...) // mov qword [..], 0
		code = append(code, 0, 0, 0, 0)
	}
	zero(6, 2)
	for off := 8; off < 32; off += 8 {
		zero(off, 8)
	}
	for off := 160; off < 512; off += 8 {
		zero(off, 8)
	}
	for i := byte(0); i < 8; i++ { // last: these MOVQs make every tag valid again
		code = append(append(code, 0x0f, 0x7f), rspMem(i, 0x40+8*int(i))...) // movq [data+0x40+8i], mmI
	}
	code = append(code, 0x0f, 0x77) // emms: the host's x87 stack empty for later tests
	return code
}

// mmxOps are the no-prefix opcodes on MMX registers the generator draws from, with
// what their operands are.
type mmxOp struct {
	op     byte
	imm    bool
	gprReg bool // reg field is a GPR (PEXTRW, PMOVMSKB)
	gprRM  bool // r/m is a GPR or memory (MOVD, PINSRW)
	regRM  bool // r/m must be a register
	memRM  bool // r/m must be memory
	group  bool // reg field is an opcode extension (shift groups)
}

var mmxOps = func() []mmxOp {
	var ops []mmxOp
	for _, o := range []byte{0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6f,
		0x74, 0x75, 0x76, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf,
		0xe0, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe8, 0xe9, 0xea, 0xeb, 0xec, 0xed, 0xee, 0xef,
		0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0x7f} {
		ops = append(ops, mmxOp{op: o})
	}
	return append(ops,
		mmxOp{op: 0x70, imm: true},
		mmxOp{op: 0x71, imm: true, regRM: true, group: true}, mmxOp{op: 0x72, imm: true, regRM: true, group: true},
		mmxOp{op: 0x73, imm: true, regRM: true, group: true},
		mmxOp{op: 0x6e, gprRM: true}, mmxOp{op: 0x7e, gprRM: true},
		mmxOp{op: 0xc4, imm: true, gprRM: true}, mmxOp{op: 0xc5, imm: true, gprReg: true, regRM: true},
		mmxOp{op: 0xd7, gprReg: true, regRM: true}, mmxOp{op: 0xe7, memRM: true}, mmxOp{op: 0xf7, regRM: true},
	)
}()

// gen encodes one random instance of f.
func (f mmxOp) gen(r *rand.Rand) []byte {
	var rex byte
	reg := byte(r.Intn(8))
	if f.group {
		reg = []byte{2, 4, 6}[r.Intn(3)]
		if f.op == 0x73 {
			reg = []byte{2, 6}[r.Intn(2)]
		}
	}
	if f.gprReg {
		reg = byte(r.Intn(16))
		for reg == 4 {
			reg = byte(r.Intn(16))
		}
		rex |= reg >> 3 << 2
		reg &= 7
	} else if r.Intn(4) == 0 {
		rex |= 4 // REX.R: ignored for an MMX register
	}
	if (f.op == 0x6e || f.op == 0x7e) && r.Intn(2) == 0 {
		rex |= 8 // MOVQ with a 64-bit GPR
	}
	mem := !f.regRM && (f.memRM || r.Intn(3) == 0)
	var modrm []byte
	if mem {
		modrm = rspMem(reg, 0x100+8*r.Intn(0x80)+r.Intn(2)*r.Intn(8))
	} else {
		rm := byte(r.Intn(8))
		if f.gprRM {
			rm = byte(r.Intn(16))
			for rm == 4 && f.op == 0x7e {
				rm = byte(r.Intn(16)) // never write RSP
			}
			rex |= rm >> 3
			rm &= 7
		} else if r.Intn(4) == 0 {
			rex |= 1 // REX.B: ignored for an MMX register
		}
		modrm = []byte{0xc0 | reg<<3 | rm}
	}
	var b []byte
	if rex != 0 {
		b = append(b, 0x40|rex)
	}
	b = append(append(b, 0x0f, f.op), modrm...)
	if f.imm {
		b = append(b, byte(r.Intn(256)))
	}
	return b
}

func mmxState(r *rand.Rand) dtState {
	s := randomState(r)
	s.R[7] = dtData + 0x600 // MASKMOVQ's destination
	binary.LittleEndian.PutUint32(s.Data[mmxMXCSR:], 0x1f80)
	for i := 0; i < 64; i += 8 { // some lanes at the saturation and sign edges
		if r.Intn(3) == 0 {
			v := []uint64{0x7f7f7f7f7f7f7f7f, 0x8080808080808080, 0x7fff80007fff8000, 0xffffffffffffffff, 0, 0x00ff00ff00ff00ff}[r.Intn(6)]
			binary.LittleEndian.PutUint64(s.Data[i:], v)
		}
	}
	return s
}

// TestDiffMMX runs random instances of every MMX (and SSE-on-MMX) form with register
// and memory operands, REX bits that MMX ignores, and every shift count.
func TestDiffMMX(t *testing.T) {
	h := newGemuHarness(t, nil)
	r := rand.New(rand.NewSource(7))
	fails := 0
	for _, f := range mmxOps {
		for i := 0; i < 60 && fails < 20; i++ {
			s := mmxState(r)
			tc := &dtCase{name: "mmx", code: mmxCase(f.gen(r)), in: s, mask: flagsArith, xmm: true}
			if !compareLong(t, h, tc) {
				fails++
			}
		}
	}
}

// TestDiffMMXx87 checks the x87 side of the aliasing: EMMS empties the tags, an x87
// load after MMX overflows the full stack, x87 values read as MMX registers (the
// mantissa), MMX values seen by x87 compares and stores.
func TestDiffMMXx87(t *testing.T) {
	h := newGemuHarness(t, nil)
	r := rand.New(rand.NewSource(8))
	cases := map[string][]byte{
		"emms":                 {0x0f, 0x77},
		"movq then fld1":       {0xd9, 0xe8},                                     // stack overflow: every tag valid
		"emms fld1":            {0x0f, 0x77, 0xd9, 0xe8},                         // R7 = 1.0, then the MOVQs read it as MM7
		"emms fld1 fld1 faddp": {0x0f, 0x77, 0xd9, 0xe8, 0xd9, 0xe8, 0xde, 0xc1}, // x87 results read as MMX
		"emms fld1 fstp mem":   append([]byte{0x0f, 0x77, 0xd9, 0xe8, 0xdd, 0x9c}, rspMem(0, 0x300)[1:]...),
		"emms fild fistp":      append(append([]byte{0x0f, 0x77, 0xdf, 0xac}, rspMem(0, 0x308)[1:]...), append([]byte{0xdf, 0xbc}, rspMem(0, 0x310)[1:]...)...),
		"pxor then fxrstor":    append([]byte{0x0f, 0xef, 0xc9, 0x0f, 0xae, 0x8c}, rspMem(0, 0xa00)[1:]...),
	}
	for name, body := range cases {
		for i := 0; i < 5; i++ {
			s := mmxState(r)
			// An integer a float64 holds: values that need the 64-bit mantissa are
			// the 80-bit x87 tests' business.
			binary.LittleEndian.PutUint64(s.Data[0x308:], uint64(r.Int63n(1<<53)-1<<52))
			if name == "pxor then fxrstor" { // a saved x87/MMX image with 80-bit values: FCW, FSW, FTW, registers
				img := s.Data[0xa00:0xc00]
				clear(img[:32])
				binary.LittleEndian.PutUint16(img[0:], 0x37f)
				img[4] = byte(r.Intn(256))
				binary.LittleEndian.PutUint32(img[24:], 0x1f80)
				clear(img[160+4*16:]) // XMM4-15 zero: the host's X15 is Go's zero register
			}
			compareLong(t, h, &dtCase{name: name, code: mmxCase(body), in: s, mask: flagsArith, xmm: true})
		}
	}
}

// TestDiffMMXConv runs the conversions and moves between XMM and MMX registers
// (CVTPI2PS/PD, CVT(T)PS2PI, CVT(T)PD2PI, MOVQ2DQ, MOVDQ2Q) with register and memory
// operands and special floating-point values; XMM0-3 and the MMX state are compared.
func TestDiffMMXConv(t *testing.T) {
	h := newGemuHarness(t, nil)
	r := rand.New(rand.NewSource(9))
	type conv struct {
		pfx, op   byte
		regXMM    bool // reg names an XMM register (else MMX)
		rmXMM     bool // a register r/m names an XMM register
		mem, regs bool // memory / register r/m allowed
	}
	for _, f := range []conv{
		{0, 0x2a, true, false, true, true}, {0x66, 0x2a, true, false, true, true},
		{0, 0x2c, false, true, true, true}, {0, 0x2d, false, true, true, true},
		{0x66, 0x2c, false, true, true, true}, {0x66, 0x2d, false, true, true, true},
		{0xf3, 0xd6, true, false, false, true}, {0xf2, 0xd6, false, true, false, true},
	} {
		for i := 0; i < 80; i++ {
			s := mmxState(r)
			for n := range s.XMM {
				s.XMM[n] = [2]uint64{fpValue(r), fpValue(r)}
			}
			off := 0x100 + 16*r.Intn(0x40)
			binary.LittleEndian.PutUint64(s.Data[off:], fpValue(r))
			binary.LittleEndian.PutUint64(s.Data[off+8:], fpValue(r))
			reg := byte(r.Intn(8))
			if f.regXMM {
				reg = byte(r.Intn(4))
			}
			var b []byte
			if r.Intn(2) == 0 {
				b = append(b, 0x0f, 0x77) // EMMS first: does the conversion make the MMX transition?
			}
			if f.pfx != 0 {
				b = append(b, f.pfx)
			}
			b = append(b, 0x0f, f.op)
			if f.mem && (!f.regs || r.Intn(2) == 0) {
				b = append(b, rspMem(reg, off)...)
			} else {
				rm := byte(r.Intn(8))
				if f.rmXMM {
					rm = byte(r.Intn(4))
				}
				b = append(b, 0xc0|reg<<3|rm)
			}
			compareLong(t, h, &dtCase{name: "mmx conv", code: mmxCase(b), in: s, mask: flagsArith, xmm: true})
		}
	}
}

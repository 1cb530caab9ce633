package x86

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

// Random SSE/SSE2 floating-point forms, with operands mixing random bit patterns and
// special values (signed zeros, infinities, quiet and signalling NaNs, denormals,
// extremes), compared with the host CPU (XMM0-3 and RFLAGS for COMIS/UCOMIS).

var fpSpecials64 = []uint64{0, 1 << 63, math.Float64bits(1.5), math.Float64bits(-2.25), 0x7ff0000000000000,
	0xfff0000000000000, 0x7ff8000000000123, 0x7ff0000000000456, 1, math.Float64bits(1e300),
	math.Float64bits(-1e-300), math.Float64bits(3e9), math.Float64bits(-9.5e18), math.Float64bits(2.5)}

var fpSpecials32 = []uint32{0, 1 << 31, math.Float32bits(1.5), math.Float32bits(-2.25), 0x7f800000, 0xff800000,
	0x7fc00123, 0x7f800456, 1, math.Float32bits(3e38), math.Float32bits(2.5e9), math.Float32bits(-0.5)}

func fpValue(r *rand.Rand) uint64 {
	switch r.Intn(4) {
	case 0:
		return fpSpecials64[r.Intn(len(fpSpecials64))]
	case 1:
		return uint64(fpSpecials32[r.Intn(len(fpSpecials32))]) | uint64(fpSpecials32[r.Intn(len(fpSpecials32))])<<32
	case 2:
		return math.Float64bits(r.NormFloat64() * 1000)
	}
	return uint64(math.Float32bits(float32(r.NormFloat64()*100))) | uint64(math.Float32bits(float32(r.NormFloat64())))<<32
}

func TestDiffSSEFloat(t *testing.T) {
	h := newGemuHarness(t, nil)
	r := rand.New(rand.NewSource(99))
	type fpForm struct {
		op     byte
		forms  []byte // mandatory prefixes allowed (0 none)
		toGPR  bool   // reg field is a GPR
		fromRM int    // r/m is a GPR of this size class (CVTSI2S*)
		imm    bool
		flags  bool
	}
	forms := []fpForm{
		{op: 0x58, forms: []byte{0, 0x66, 0xf3, 0xf2}}, {op: 0x59, forms: []byte{0, 0x66, 0xf3, 0xf2}},
		{op: 0x5c, forms: []byte{0, 0x66, 0xf3, 0xf2}}, {op: 0x5e, forms: []byte{0, 0x66, 0xf3, 0xf2}},
		{op: 0x51, forms: []byte{0, 0x66, 0xf3, 0xf2}}, {op: 0x5d, forms: []byte{0, 0x66, 0xf3, 0xf2}},
		{op: 0x5f, forms: []byte{0, 0x66, 0xf3, 0xf2}},
		{op: 0x2e, forms: []byte{0, 0x66}, flags: true}, {op: 0x2f, forms: []byte{0, 0x66}, flags: true},
		{op: 0xc2, forms: []byte{0, 0x66, 0xf3, 0xf2}, imm: true},
		{op: 0x2a, forms: []byte{0xf3, 0xf2}, fromRM: 1},
		{op: 0x2c, forms: []byte{0xf3, 0xf2}, toGPR: true}, {op: 0x2d, forms: []byte{0xf3, 0xf2}, toGPR: true},
		{op: 0x5a, forms: []byte{0, 0x66, 0xf3, 0xf2}}, {op: 0x5b, forms: []byte{0, 0x66, 0xf3}},
		{op: 0xe6, forms: []byte{0x66, 0xf3, 0xf2}}, {op: 0xc6, forms: []byte{0, 0x66}, imm: true},
		{op: 0x50, forms: []byte{0, 0x66}, toGPR: true},
	}
	total := 0
	for _, f := range forms {
		pass := 0
		for i := 0; i < 250; i++ {
			s := randomState(r)
			for n := range s.XMM {
				s.XMM[n] = [2]uint64{fpValue(r), fpValue(r)}
			}
			for k := 0; k < 32; k++ { // some special values in memory too
				v := fpValue(r)
				off := 0x300 + 8*r.Intn(0x100)
				for j := 0; j < 8; j++ {
					s.Data[off+j] = byte(v >> (8 * j))
				}
			}
			g := &gen{r: r, s: &s}
			pfx := f.forms[r.Intn(len(f.forms))]
			b := &insnBuilder{}
			if pfx != 0 {
				b.prefixes = []byte{pfx}
			}
			regField := r.Intn(4)
			if f.toGPR {
				regField = r.Intn(16)
			}
			var m modrmEnc
			switch {
			case f.fromRM != 0:
				if r.Intn(2) == 0 {
					b.rex |= 8
				}
				m = g.modrm(regField, 0, 8)
			case f.op == 0x50:
				m = modrmEnc{rex: byte(regField>>3) << 2, bytes: []byte{0xc0 | byte(regField&7)<<3 | byte(r.Intn(4))}, ripOff: -1}
			case r.Intn(2) == 0:
				m = modrmEnc{bytes: []byte{0xc0 | byte(regField&7)<<3 | byte(r.Intn(4))}, ripOff: -1}
				if regField >= 8 {
					m.rex = 4
				}
			default:
				m = g.modrm(regField, 1, 16)
			}
			if f.toGPR && r.Intn(2) == 0 {
				b.rex |= 8
			}
			b.m = &m
			b.opcode = []byte{0x0f, f.op}
			if f.imm {
				b.imm = []byte{byte(r.Intn(8))}
				if f.op == 0xc6 {
					b.imm = []byte{byte(r.Intn(256))}
				}
			}
			code := b.bytes()
			in, ok := decodeBytes(code)
			if !ok || in.length != len(code) {
				t.Errorf("decoder length %d for [% x] %s", in.length, code, disasm(code))
				continue
			}
			if in.hasMem {
				if ea := addrOf(&in, &s); ea < dtData || ea > dtData+0x1000-16 {
					continue
				}
			}
			mask := uint64(flagsArith)
			tc := &dtCase{name: fmt.Sprintf("sse fp %#x #%d", f.op, i), code: code, in: s, mask: mask, xmm: true}
			if compare(t, h, tc) {
				pass++
			}
			total++
		}
		t.Logf("0f %02x: %d passed", f.op, pass)
	}
	t.Logf("sse fp: %d cases compared with the host CPU", total)
}

// TestDiffSSEInt runs random 66-prefixed SSE2 integer and SSE3 forms (register and
// aligned memory operands) against the host CPU.
func TestDiffSSEInt(t *testing.T) {
	h := newGemuHarness(t, nil)
	r := rand.New(rand.NewSource(5))
	type f struct {
		pfx, op byte
		imm     bool
		gpr     bool // reg is a GPR (PEXTRW), rm a GPR (PINSRW: gprRM)
		gprRM   bool
		regOnly bool
	}
	var forms []f
	for _, o := range []byte{0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
		0x74, 0x75, 0x76, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf,
		0xe0, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe8, 0xe9, 0xea, 0xeb, 0xec, 0xed, 0xee, 0xef,
		0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0x7c, 0x7d, 0xd0} {
		forms = append(forms, f{pfx: 0x66, op: o})
	}
	forms = append(forms, f{pfx: 0xf2, op: 0x12}, f{pfx: 0xf3, op: 0x12}, f{pfx: 0xf3, op: 0x16},
		f{pfx: 0xf2, op: 0x7c}, f{pfx: 0xf2, op: 0x7d}, f{pfx: 0xf2, op: 0xd0},
		f{pfx: 0x66, op: 0xc4, imm: true, gprRM: true}, f{pfx: 0x66, op: 0xc5, imm: true, gpr: true, regOnly: true},
		f{pfx: 0x66, op: 0x70, imm: true}, f{pfx: 0xf3, op: 0x70, imm: true}, f{pfx: 0xf2, op: 0x70, imm: true})
	total := 0
	for _, fm := range forms {
		for i := 0; i < 60; i++ {
			s := randomState(r)
			if fm.op >= 0x7c && fm.op <= 0x7d || fm.op == 0xd0 {
				for n := range s.XMM {
					s.XMM[n] = [2]uint64{fpValue(r), fpValue(r)}
				}
			}
			g := &gen{r: r, s: &s}
			b := &insnBuilder{prefixes: []byte{fm.pfx}, opcode: []byte{0x0f, fm.op}}
			regField := r.Intn(4)
			if fm.gpr {
				regField = r.Intn(16)
			}
			var m modrmEnc
			switch {
			case fm.gprRM:
				m = g.modrm(regField, 0, 2)
			case fm.regOnly || r.Intn(2) == 0:
				m = modrmEnc{bytes: []byte{0xc0 | byte(regField&7)<<3 | byte(r.Intn(4))}, ripOff: -1}
				if regField >= 8 {
					m.rex = 4
				}
			default:
				m = g.modrm(regField, 1, 16)
			}
			b.m = &m
			if fm.imm {
				b.imm = []byte{byte(r.Intn(256))}
			}
			code := b.bytes()
			in, ok := decodeBytes(code)
			if !ok || in.length != len(code) {
				t.Errorf("decoder length %d for [% x] %s", in.length, code, disasm(code))
				continue
			}
			if in.hasMem {
				if ea := addrOf(&in, &s); ea < dtData || ea > dtData+0x1000-16 {
					continue
				}
			}
			compare(t, h, &dtCase{name: fmt.Sprintf("sse int %02x %02x #%d", fm.pfx, fm.op, i), code: code, in: s, mask: flagsArith, xmm: true})
			total++
		}
	}
	t.Logf("sse int/sse3: %d cases over %d forms compared with the host CPU", total, len(forms))
}

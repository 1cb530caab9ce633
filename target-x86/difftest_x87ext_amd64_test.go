package x86

import (
	"encoding/binary"
	"math"
	"math/rand"
	"testing"
)

// 80-bit x87 against the host CPU: random sequences of loads (m80, m64, m32, FILD of
// 16/32/64-bit integers), arithmetic in every register and memory form, FSQRT,
// FRNDINT, FCHS/FABS, FXCH, FLD ST(i), compares (FCOMI's EFLAGS), stores (m80, m64, m32,
// FIST/FISTP/FISTTP) under random precision and rounding control, compared through the
// data page and an FXSAVE of the x87 state (FCW, TOP and C0/C2/C3 of FSW, tags, the
// eight 80-bit registers). The exception flags and C1 (round-up) are masked out: gemu
// does not keep PE/UE/OE or C1. A third of the cases run with random precision control
// (24, 53, 64 bits) as well as rounding.

const (
	x87Vals = 0x100 // data-page offset of 16 m80 operands (16 bytes apart)
	x87Out  = 0x300 // results stored here, 16 bytes per store
	x87CW   = 0x7f8 // the FCW the case loads
)

// compareLong is compare for code longer than one translation block (64 instructions):
// the harness writes each case at the same address without telling the translator, so
// a chained later block could be an earlier case's; marking the page written drops them.
func compareLong(t *testing.T, h *gemuHarness, tc *dtCase) bool {
	t.Helper()
	h.ram.Written(dtRAMPA, 0x1000)
	return compare(t, h, tc)
}

func x87Case(body []byte) []byte {
	// fninit; 8 x fldz; fninit: every physical register 0, the stack empty (FNINIT
	// leaves the registers' contents, which an earlier case set)
	code := []byte{0xdb, 0xe3, 0xd9, 0xee, 0xd9, 0xee, 0xd9, 0xee, 0xd9, 0xee, 0xd9, 0xee, 0xd9, 0xee, 0xd9, 0xee, 0xd9, 0xee, 0xdb, 0xe3}
	code = append(append(code, 0x0f, 0xae), rspMem(2, mmxMXCSR)...) // ldmxcsr
	code = append(append(code, 0xd9), rspMem(5, x87CW)...)          // fldcw
	code = append(code, body...)
	code = append(append(code, 0x0f, 0xae), rspMem(0, mmxSave)...) // fxsave
	code = append(append(code, 0x66, 0x81), rspMem(4, mmxSave+2)...)
	code = append(code, 0x00, 0x7d) // and word [fsw], 0x7d00: TOP, C0, C2, C3 (C1, the round-up bit, is not kept)
	zero := func(off int) {
		code = append(append(code, 0x48, 0xc7), rspMem(0, mmxSave+off)...)
		code = append(code, 0, 0, 0, 0)
	}
	code = append(append(code, 0x66, 0xc7), rspMem(0, mmxSave+6)...)
	code = append(code, 0, 0)
	for off := 8; off < 32; off += 8 {
		zero(off)
	}
	for off := 160; off < 512; off += 8 {
		zero(off)
	}
	return append(code, 0xdb, 0xe3) // fninit: the host's stack empty for later tests
}

// x87Value is a random 80-bit operand: mostly normal numbers whose mantissas need all
// 64 bits, sometimes zero or infinity.
func x87Value(r *rand.Rand) rawReg {
	sign := uint16(r.Intn(2)) << 15
	switch r.Intn(12) {
	case 0:
		return rawReg{se: sign}
	case 1:
		return rawReg{mant: 1 << 63, se: sign | 0x7fff}
	case 2: // a small integer
		return extInt64(int64(r.Intn(2000) - 1000))
	}
	return rawReg{mant: 1<<63 | r.Uint64(), se: sign | uint16(0x3fff+r.Intn(80)-40)}
}

func x87Gen(r *rand.Rand, depth int) []byte {
	var b []byte
	mem := func(reg byte, off int) []byte { return rspMem(reg, off) }
	val := func() int { return x87Vals + 16*r.Intn(16) }
	out := func() int { return x87Out + 16*r.Intn(32) }
	n := 0 // stack depth
	for n < depth {
		switch r.Intn(6) {
		case 0, 1, 2:
			b = append(append(b, 0xdb), mem(5, val())...) // fld m80
		case 3:
			b = append(append(b, 0xdd), mem(0, val()+2)...) // fld m64 (bytes of an operand)
		case 4:
			b = append(append(b, 0xdf), mem(5, val())...) // fild m64
		default:
			b = append(append(b, []byte{0xd9, 0xdb, 0xdf}[r.Intn(3)]), mem(0, val())...) // fld m32, fild m32, fild m16
		}
		n++
	}
	for k := 0; k < 6; k++ {
		i := byte(r.Intn(n))
		switch r.Intn(14) {
		case 0, 1, 2: // fop st0, st(i)
			b = append(b, 0xd8, 0xc0|[]byte{0, 1, 4, 5, 6, 7}[r.Intn(6)]<<3|i)
		case 3, 4: // fop st(i), st0, maybe popping
			op := []byte{0, 1, 4, 5, 6, 7}[r.Intn(6)]
			if n > 1 && r.Intn(2) == 0 {
				b = append(b, 0xde, 0xc0|op<<3|1)
				n--
			} else {
				b = append(b, 0xdc, 0xc0|op<<3|i)
			}
		case 5: // fop st0, m64/m32
			b = append(append(b, []byte{0xdc, 0xd8}[r.Intn(2)]), mem([]byte{0, 1, 4, 5, 6, 7}[r.Intn(6)], val()+2)...)
		case 6:
			b = append(b, 0xd9, []byte{0xfa, 0xfc, 0xe0, 0xe1}[r.Intn(4)]) // fsqrt frndint fchs fabs
		case 7:
			b = append(b, 0xd9, 0xc8|i) // fxch
		case 8:
			if n < 8 {
				b = append(b, 0xd9, 0xc0|i) // fld st(i)
				n++
			}
		case 9:
			b = append(b, 0xdb, []byte{0xf0, 0xe8}[r.Intn(2)]|i) // fcomi, fucomi
		case 10: // fst m80 via fld st0; fstp m80
			b = append(b, 0xd9, 0xc0)
			b = append(append(b, 0xdb), mem(7, out())...)
		case 11:
			b = append(append(b, []byte{0xdd, 0xd9}[r.Intn(2)]), mem(2, out())...) // fst m64/m32
		case 12: // fist m32/m16, fisttp m64 of a copy
			if r.Intn(2) == 0 {
				b = append(append(b, []byte{0xdb, 0xdf}[r.Intn(2)]), mem(2, out())...)
			} else {
				b = append(b, 0xd9, 0xc0)
				b = append(append(b, 0xdd), mem(1, out())...)
			}
		case 13:
			b = append(b, 0xd9, 0xc0) // fistp m64 of a copy
			b = append(append(b, 0xdf), mem(7, out())...)
		}
	}
	return b
}

func TestDiffX87Extended(t *testing.T) {
	h := newGemuHarness(t, nil)
	r := rand.New(rand.NewSource(80))
	fails := 0
	for i := 0; i < 1500 && fails < 15; i++ {
		s := randomState(r)
		binary.LittleEndian.PutUint32(s.Data[mmxMXCSR:], 0x1f80)
		cw := uint16(0x37f) // extended precision, nearest
		if i%3 == 0 {
			cw = 0x7f | uint16(r.Intn(4))<<8 | uint16(r.Intn(4))<<10 // any precision and rounding
		}
		binary.LittleEndian.PutUint16(s.Data[x87CW:], cw)
		for k := 0; k < 16; k++ {
			v := x87Value(r)
			binary.LittleEndian.PutUint64(s.Data[x87Vals+16*k:], v.mant)
			binary.LittleEndian.PutUint16(s.Data[x87Vals+16*k+8:], v.se)
			// bytes 2..9 double as an m64 operand: keep it finite
			f := math.Float64frombits(binary.LittleEndian.Uint64(s.Data[x87Vals+16*k+2:]))
			if math.IsNaN(f) || math.IsInf(f, 0) {
				s.Data[x87Vals+16*k+9] &^= 0x40
			}
			for _, o := range []int{0, 2} { // m32 operands at +0 and +2
				if f32 := math.Float32frombits(binary.LittleEndian.Uint32(s.Data[x87Vals+16*k+o:])); f32 != f32 || math.IsInf(float64(f32), 0) {
					s.Data[x87Vals+16*k+o+3] &^= 0x40
				}
			}
		}
		tc := &dtCase{name: "x87", code: x87Case(x87Gen(r, 2+r.Intn(4))), in: s, mask: flagsArith, xmm: true}
		if !compareLong(t, h, tc) {
			fails++
		}
	}
}

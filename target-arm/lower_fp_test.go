package arm

import (
	"math"
	"math/rand"
	"testing"

	"gemu/tcg"
)

// TestLowerFPMatchesHelpers runs the scalar FP arithmetic lowerFP handles (FADD, FSUB,
// FMUL, FDIV, FMADD, FMSUB, FNMADD, FNMSUB on S and D) both as the decoder's helper
// (checked against qemu-aarch64 by the FP/SIMD differential tests) and as lowered IR
// with the selected backend, and compares the whole state: results, FPSR flags and the
// cleared upper halves. Operands mix ordinary numbers (the host fast path) with zeros,
// denormals, infinities, NaNs and values whose result over- or underflows; FPCR is
// mostly zero, sometimes another rounding mode, FZ or DN, and FPSR.IXC is sometimes
// clear (the helper must then run and set it).
func TestLowerFPMatchesHelpers(t *testing.T) {
	r := rand.New(rand.NewSource(5))
	defer func(w bool) { wideLowering = w }(wideLowering)
	wideLowering = true
	special := []float64{0, math.Copysign(0, -1), 1, -2.5, math.Inf(1), math.Inf(-1), math.NaN(), 5e-324, 2.2250738585072014e-308,
		1.7976931348623157e308, 1e-300, 1e300, 3}
	val := func(single bool) uint64 {
		f := r.NormFloat64() * math.Pow(2, float64(r.Intn(60)-30))
		if r.Intn(4) == 0 {
			f = special[r.Intn(len(special))]
		}
		if r.Intn(8) == 0 { // a signalling NaN
			return 0x7ff4000000000001 >> (32 * b2u(single))
		}
		if single {
			return uint64(math.Float32bits(float32(f))) | r.Uint64()<<32 // stale upper bits
		}
		return math.Float64bits(f)
	}
	forms := []struct {
		name       string
		mask, bits uint32
	}{
		{"fp2src", 0xff200c00 | 0xc000, 0x1e200800}, // opcode < 4
		{"fp3src", 0xff000000, 0x1f000000},
	}
	lowered := 0
	for _, fm := range forms {
		for i := 0; i < 3000; i++ {
			insn := r.Uint32()&^fm.mask | fm.bits
			insn &^= 1 << 23 // S or D
			var b tcg.Builder[CPU]
			if h, _ := lower(&b, insn, 0x1000, flagEL1|flagFP); !h {
				t.Fatalf("%s %#08x not lowered", fm.name, insn)
			}
			lowered++
			var st State
			single := insn>>22&1 == 0
			for k := range st.V {
				st.V[k] = [2]uint64{val(single), r.Uint64()}
			}
			if r.Intn(6) == 0 {
				st.FPCR = uint64(r.Intn(4))<<22 | uint64(r.Intn(2))<<24 | uint64(r.Intn(2))<<25
			}
			if r.Intn(4) != 0 {
				st.FPSR = fpIXC
			}
			a, c := helperAndLowered(t, &b, insn, st)
			if a.State != c.State {
				t.Fatalf("%s %#08x: FPCR %#x FPSR %#x\nhelper  V=%#x FPSR=%#x\nlowered V=%#x FPSR=%#x",
					fm.name, insn, a.State.FPCR, a.State.FPSR, a.State.V, a.State.FPSR, c.State.V, c.State.FPSR)
			}
		}
	}
	if lowered < 5000 {
		t.Errorf("only %d instructions lowered", lowered)
	}
}

// TestLowerVecMatchesHelpers runs the AdvSIMD three-same forms lowerVec handles (ADD,
// SUB, AND, BIC, ORR, EOR; every arrangement, 64- and 128-bit) both as the decoder's
// helper and as lowered IR, on random register values, and compares the whole state
// (a 64-bit form clears the destination's upper half).
func TestLowerVecMatchesHelpers(t *testing.T) {
	r := rand.New(rand.NewSource(6))
	defer func(w bool) { wideLowering = w }(wideLowering)
	wideLowering = true
	lowered := map[uint32]int{}
	for i := 0; i < 20000; i++ {
		insn := r.Uint32()&^0x9f20fc00 | 0x0e200400 | [2]uint32{0b10000, 0b00011}[r.Intn(2)]<<11
		var b tcg.Builder[CPU]
		if h, _ := lower(&b, insn, 0x1000, flagEL1|flagFP); !h {
			continue
		}
		lowered[insn>>11&31|insn>>29&1<<5]++
		var st State
		for k := range st.V {
			st.V[k] = [2]uint64{r.Uint64(), r.Uint64() >> uint(r.Intn(64))}
		}
		a, c := helperAndLowered(t, &b, insn, st)
		if a.State != c.State {
			t.Fatalf("%#08x:\nhelper  V=%#x\nlowered V=%#x", insn, a.State.V, c.State.V)
		}
	}
	for _, k := range []uint32{0b10000, 0b10000 | 1<<5, 0b00011, 0b00011 | 1<<5} {
		if lowered[k] < 500 {
			t.Errorf("opcode/U %#x: only %d instructions lowered", k, lowered[k])
		}
	}
}

// helperAndLowered runs insn at 0x1000 at EL1 with FP enabled from state st, once as
// the decoder's helper and once as the IR in b (lowered by the caller) compiled with the
// selected backend, and returns both CPUs.
func helperAndLowered(t *testing.T, b *tcg.Builder[CPU], insn uint32, st State) (helper, lowered *CPU) {
	t.Helper()
	b.Exit(tcg.Imm(0x1004))
	f, err := tcg.Compile(irTarget, b.Ops)
	if err != nil {
		t.Fatal(err)
	}
	a, c := &CPU{}, &CPU{}
	a.State, a.PC, a.el = st, 0x1000, 1
	a.modeChanged()
	c.State, c.el = a.State, 1
	c.modeChanged()
	h, _ := a.decode(insn, 0x1000, flagEL1|flagFP)
	if h(a) {
		a.PC = 0x1004
	}
	f(c)
	return a, c
}

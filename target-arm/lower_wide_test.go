package arm

import (
	"math/rand"
	"testing"

	"gemu/tcg"
)

// TestLowerWideMatchesHelpers runs each data-processing form lowerWide handles both as
// the decoder's helper and as lowered IR, on random register values, and compares.
func TestLowerWideMatchesHelpers(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	classes := []struct {
		name       string
		mask, bits uint32
	}{
		{"logical-imm", 0x1f800000, 0x12000000},
		{"logical-shifted", 0x1f000000, 0x0a000000},
		{"addsub-imm32", 0xbf800000, 0x11000000},
		{"mov-wide32", 0x9f800000, 0x12800000},
		{"bitfield", 0x1f800000, 0x13000000},
		{"madd", 0x7fe00000, 0x1b000000},
	}
	for _, cl := range classes {
		n := 0
		for i := 0; i < 20000 && n < 2000; i++ {
			insn := r.Uint32()&^cl.mask | cl.bits
			var b tcg.Builder[CPU]
			if !lowerWide(&b, insn, flagEL1|flagSPSel) {
				continue
			}
			n++
			for _, o := range b.Ops {
				if o.Opc == tcg.OpLoad || o.Opc == tcg.OpStore {
					t.Fatalf("%s %#08x lowered to a memory access", cl.name, insn)
				}
			}
			b.Exit(tcg.Imm(0x1004))
			f, err := tcg.Compile(irTarget, b.Ops)
			if err != nil {
				t.Fatal(err)
			}
			a, c := &CPU{}, &CPU{}
			for k := range a.State.X {
				a.State.X[k] = r.Uint64() >> uint(r.Intn(64))
			}
			a.SP_EL1 = r.Uint64()
			a.el, a.spsel = 1, 1
			a.modeChanged()
			c.State, c.el, c.spsel = a.State, 1, 1
			c.modeChanged()
			h, _ := a.decode(insn, 0x1000, flagEL1|flagSPSel)
			if !h(a) {
				continue // UNDEFINED
			}
			f(c)
			if a.State.X != c.State.X || a.SP_EL1 != c.SP_EL1 {
				t.Fatalf("%s %#08x: helper X=%#x SP=%#x\nlowered X=%#x SP=%#x", cl.name, insn, a.State.X, a.SP_EL1, c.State.X, c.SP_EL1)
			}
		}
		if n < 100 {
			t.Errorf("%s: only %d instructions lowered", cl.name, n)
		}
	}
}

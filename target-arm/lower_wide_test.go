package arm

import (
	"math/rand"
	"testing"

	"gemu/tcg"
)

// TestLowerWideMatchesHelpers runs each data-processing and branch form the wide
// lowering handles both as the decoder's helper and as lowered IR (with the selected
// backend), on random register and flag values, and compares the whole state.
func TestLowerWideMatchesHelpers(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	defer func(w bool) { wideLowering = w }(wideLowering)
	wideLowering = true
	classes := []struct {
		name       string
		mask, bits uint32
	}{
		{"logical-imm", 0x1f800000, 0x12000000},
		{"logical-shifted", 0x1f000000, 0x0a000000},
		{"addsub-imm32", 0xbf800000, 0x11000000},
		{"mov-wide32", 0x9f800000, 0x12800000},
		{"bitfield", 0x1f800000, 0x13000000},
		{"bfm", 0x7f800000, 0x33000000},
		{"div", 0x7fe0f800, 0x1ac00800},
		{"madd", 0x7fe00000, 0x1b000000},
		{"addsub-imm-flags", 0x3f800000, 0x31000000},
		{"addsub-shifted-flags", 0x3f200000, 0x2b000000},
		{"ands-imm", 0x7f800000, 0x72000000},
		{"csel", 0x3fe00800, 0x1a800000},
		{"b.cond", 0xff000010, 0x54000000},
		{"addsub-shifted", 0x1f200000, 0x0b000000},
		{"addsub-extended", 0x1fe00000, 0x0b200000},
		{"hint", 0xfffff01f, 0xd503201f},
		{"shiftv", 0x7fe0f000, 0x1ac02000},
		{"ccmp", 0x3fe00410, 0x3a400000},
		{"adc-sbc", 0x3fe0fc00, 0x1a000000},
		{"adcs-sbcs", 0x3fe0fc00, 0x3a000000},
		{"umulh-smulh", 0xff60fc00, 0x9b407c00},
		{"cbz32", 0xfe000000, 0x34000000},
		{"prfm", 0xffc00000, 0xf9800000},
		{"extr", 0x7fa00000, 0x13800000},
		{"rorv", 0x7fe0fc00, 0x1ac02c00},
		{"rev-clz", 0x7fffe000, 0x5ac00000},
		{"barrier", 0xfffff01f, 0xd503301f},
		{"daifset", 0xfffff0ff, 0xd50340df},
		{"dc-el1", 0xfffff000, 0xd5087000}, // op1 0: set/way forms, IC and AT (not lowered)
	}
	for _, cl := range classes {
		n := 0
		for i := 0; i < 20000 && n < 2000; i++ {
			insn := r.Uint32()&^cl.mask | cl.bits
			var b tcg.Builder[CPU]
			if h, _ := lower(&b, insn, 0x1000, flagEL1|flagSPSel); !h {
				continue
			}
			n++
			for _, o := range b.Ops {
				if o.Opc == tcg.OpLoad || o.Opc == tcg.OpStore {
					t.Fatalf("%s %#08x lowered to a memory access", cl.name, insn)
				}
			}
			b.Exit(tcg.Imm(0x1004))
			a, c := &CPU{}, &CPU{}
			a.PC = 0x1000
			f, err := tcg.Compile(irTarget, b.Ops)
			if err != nil {
				t.Fatal(err)
			}
			for k := range a.State.X {
				a.State.X[k] = r.Uint64() >> uint(r.Intn(64))
			}
			a.SP_EL1 = r.Uint64()
			a.NZCV = uint64(r.Intn(16)) << 28
			a.daif = uint64(r.Intn(16)) << 6
			if r.Intn(4) == 0 { // equal operands
				a.State.X[insn>>5&31%31] = a.State.X[insn>>16&31%31]
			}
			a.el, a.spsel = 1, 1
			a.modeChanged()
			c.State, c.el, c.spsel, c.daif = a.State, 1, 1, a.daif
			c.modeChanged()
			h, _ := a.decode(insn, 0x1000, flagEL1|flagSPSel)
			if h(a) {
				a.PC = 0x1004
			}
			f(c)
			if a.State != c.State || a.daif != c.daif {
				t.Fatalf("%s %#08x: helper X=%#x SP=%#x NZCV=%#x PC=%#x DAIF=%#x\nlowered X=%#x SP=%#x NZCV=%#x PC=%#x DAIF=%#x",
					cl.name, insn, a.State.X, a.SP_EL1, a.NZCV, a.PC, a.daif, c.State.X, c.SP_EL1, c.NZCV, c.PC, c.daif)
			}
		}
		if n < 100 {
			t.Errorf("%s: only %d instructions lowered", cl.name, n)
		}
	}
}

// TestLowerSysRegMatchesHelpers runs each MRS/MSR form lowerSysReg handles, in every
// mode the translation flags distinguish, both as the decoder's helper and as lowered
// IR, and compares the registers, system registers and PSTATE.DAIF.
func TestLowerSysRegMatchesHelpers(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	keys := []uint32{kTPIDR_EL0, kTPIDRRO_EL0, kNZCV, kTPIDR_EL1, kSP_EL0, kCurrentEL, kDAIF, kSCTLR, kFPCR}
	lowered := map[uint32]bool{}
	for _, k := range keys {
		for _, mode := range []struct{ el, spsel uint64 }{{0, 0}, {1, 0}, {1, 1}} {
			for _, l := range []uint32{0, 1} {
				for _, rt := range []uint32{0, 7, 30, 31} {
					insn := 0xd5000000 | l<<21 | k>>14&3<<19 | k>>11&7<<16 | k>>7&15<<12 | k>>3&15<<8 | k&7<<5 | rt
					a, c := &CPU{}, &CPU{}
					a.el, a.spsel = mode.el, mode.spsel
					a.modeChanged()
					var b tcg.Builder[CPU]
					if h, end := lower(&b, insn, 0x1000, a.flags); !h || end {
						continue
					}
					lowered[k] = true
					b.Exit(tcg.Imm(0x1004))
					f, err := tcg.Compile(irTarget, b.Ops)
					if err != nil {
						t.Fatal(err)
					}
					for i := range a.State.X {
						a.State.X[i] = r.Uint64()
					}
					a.SP_EL0, a.SP_EL1, a.PC = r.Uint64(), r.Uint64(), 0x1000
					a.NZCV = uint64(r.Intn(16)) << 28
					a.daif = uint64(r.Intn(16)) << 6
					a.sr.tpidr0, a.sr.tpidr1, a.sr.tpidrro = r.Uint64(), r.Uint64(), r.Uint64()
					c.State, c.sr, c.daif, c.el, c.spsel = a.State, a.sr, a.daif, a.el, a.spsel
					c.modeChanged()
					h, _ := a.decode(insn, 0x1000, a.flags)
					if h(a) {
						a.PC = 0x1004
					}
					f(c)
					if a.State != c.State || a.sr != c.sr || a.daif != c.daif {
						t.Fatalf("%#08x at EL%d SPSel=%d: helper X=%#x SP_EL0=%#x NZCV=%#x PC=%#x sr=%+v\nlowered X=%#x SP_EL0=%#x NZCV=%#x PC=%#x sr=%+v",
							insn, mode.el, mode.spsel, a.State.X, a.SP_EL0, a.NZCV, a.PC, a.sr, c.State.X, c.SP_EL0, c.NZCV, c.PC, c.sr)
					}
				}
			}
		}
	}
	for _, k := range keys[:7] {
		if !lowered[k] {
			t.Errorf("system register key %#x never lowered", k)
		}
	}
}

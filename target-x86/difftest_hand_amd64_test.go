package x86

import (
	"encoding/binary"
	"math/rand"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

// handCase is a hand-picked sequence (handpicked_amd64_test.go, generated from GNU as
// by testdata/handpicked.py).
type handCase struct {
	asm  string
	code []byte
	mask uint64 // RFLAGS bits compared
	xmm  bool   // compare XMM0-3
	// vector >= 0: a faulting case run only in the translator, which must deliver this
	// vector with error code err (-1: none pushed), CR2 = 0x1000 if cr2, and the saved
	// RIP at the last instruction (trap: at the end of the code; jump: at 0x1000, the
	// target whose fetch faulted).
	vector int
	err    int64
	cr2    bool
	trap   bool
	jump   bool
}

// lastInsn returns the offset of the last instruction of code.
func lastInsn(code []byte) uint64 {
	var off, last int
	for off < len(code) {
		in, err := x86asm.Decode(code[off:], 64)
		if err != nil {
			return uint64(off)
		}
		last = off
		off += in.Len
	}
	return uint64(last)
}

func TestDiffHandPicked(t *testing.T) {
	// Once with the lowered IR forms (lower.go), once with every instruction a helper.
	for _, ir := range []bool{true, false} {
		name := "ir"
		if !ir {
			name = "helpers"
		}
		t.Run(name, func(t *testing.T) {
			defer func(v bool) { lowerIR = v }(lowerIR)
			lowerIR = ir
			diffHandPicked(t)
		})
	}
}

func diffHandPicked(t *testing.T) {
	model := Qemu64.WithBitOps()
	h := newGemuHarness(t, &model)
	r := rand.New(rand.NewSource(7))
	native, faults := 0, 0
	for _, hc := range handpicked {
		for rep := 0; rep < 8; rep++ {
			s := randomState(r)
			if hc.vector >= 0 {
				res := h.run(t, hc.code, &s)
				if res.vector != hc.vector || res.err != hc.err {
					t.Errorf("%s: got vector %d err %#x, want vector %d err %#x", hc.asm, res.vector, res.err, hc.vector, hc.err)
					break
				}
				if hc.cr2 && res.cr2 != 0x1000 {
					t.Errorf("%s: CR2 %#x, want 0x1000", hc.asm, res.cr2)
				}
				// The frame on the IST1 stack: RIP, CS, RFLAGS, RSP, SS above the error code.
				top := uint64(dtRAMPA + 0x4000)
				frame := top - 40
				if hc.err >= 0 {
					errv, _ := h.ram.Read64(frame - 8)
					if int64(errv) != hc.err {
						t.Errorf("%s: pushed error code %#x, want %#x", hc.asm, errv, hc.err)
					}
				}
				rip, _ := h.ram.Read64(frame)
				want := dtStart + lastInsn(hc.code)
				switch {
				case hc.trap:
					want = dtStart + uint64(len(hc.code))
				case hc.jump:
					want = 0x1000
				}
				if rip != want {
					t.Errorf("%s: saved RIP %#x, want %#x", hc.asm, rip, want)
				}
				// With a flags mask, the RFLAGS pushed must be the host's after the code
				// before the faulting instruction (lazy flags settled at the fault).
				if last := lastInsn(hc.code); hc.mask != 0 && !hc.trap && !hc.jump && last > 0 {
					n := runNative(t, hc.code[:last], &s)
					if fl, _ := h.ram.Read64(frame + 16); (fl^n.Flags)&hc.mask != 0 {
						t.Errorf("%s: pushed RFLAGS %#x, want %#x (mask %#x)", hc.asm, fl&hc.mask, n.Flags&hc.mask, hc.mask)
					}
				}
				if cs, _ := h.ram.Read64(frame + 8); cs != 8 {
					t.Errorf("%s: saved CS %#x", hc.asm, cs)
				}
				if rsp, _ := h.ram.Read64(frame + 24); rep == 0 && hc.asm != "cmpxchg16b 8(%rsp)" && rsp != s.R[4] && !hc.trap && hc.asm[:4] != "mov " {
					t.Errorf("%s: saved RSP %#x, want %#x", hc.asm, rsp, s.R[4])
				}
				faults++
				continue
			}
			if compare(t, h, &dtCase{name: hc.asm, code: hc.code, in: s, mask: hc.mask, xmm: hc.xmm}) {
				native++
			}
		}
	}
	t.Logf("hand-picked: %d sequences; %d runs matched the host CPU, %d fault runs matched the SDM", len(handpicked), native, faults)
}

var _ = binary.LittleEndian

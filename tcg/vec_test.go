package tcg

import (
	"math/rand"
	"testing"
	"unsafe"
)

type vecEnv struct {
	PC    uint64
	V     [4][2]uint64
	tlb   *TLB
	temps [MaxTemps]uint64
}

// TestVecOps checks OpVec on both backends against a lane-by-lane computation: every
// op, lane size and width (an 8-byte op zeroes D's high half), destinations aliasing a
// source, and lanes on the carry and borrow boundaries.
func TestVecOps(t *testing.T) { forBackends(t, testVecOps) }

func testVecOps(t *testing.T, be Backend) {
	var e vecEnv
	tgt := &Target[vecEnv]{PC: unsafe.Offsetof(e.PC), TLB: unsafe.Offsetof(e.tlb), Temps: unsafe.Offsetof(e.temps),
		LoadSlow:  func(*vecEnv, uint64, int) (uint64, bool) { return 0, false },
		StoreSlow: func(*vecEnv, uint64, int, uint64) bool { return false }}
	vreg := func(n int) Arg { return Global(unsafe.Offsetof(e.V) + 16*uintptr(n)) }
	r := rand.New(rand.NewSource(6))
	word := func() uint64 {
		switch r.Intn(4) {
		case 0:
			return 0xffffffffffffffff
		case 1:
			return 0x8080808080808080 >> uint(r.Intn(8))
		}
		return r.Uint64()
	}
	lane := func(op VecOp, a, b uint64, bits uint) uint64 {
		m := uint64(1)<<bits - 1
		if bits == 64 {
			m = ^uint64(0)
		}
		switch op {
		case VecAdd:
			return (a + b) & m
		case VecSub:
			return (a - b) & m
		case VecAnd:
			return a & b & m
		case VecOr:
			return (a | b) & m
		case VecXor:
			return (a ^ b) & m
		}
		return a &^ b & m
	}
	for i := 0; i < 2000; i++ {
		op := VecOp(1 + r.Intn(6))
		size, width := 1<<r.Intn(4), 8<<r.Intn(2)
		dn, an, bn := r.Intn(4), r.Intn(4), r.Intn(4)
		var b Builder[vecEnv]
		b.SetPC(0x1000)
		b.Vec(op, vreg(dn), vreg(an), vreg(bn), size, width)
		b.Vec(VecOr, vreg(3), vreg(3), vreg(3), 8, 16) // a second op: a native segment
		b.Exit(Imm(0x2000))
		f, _, err := compileWith(be, tgt, b.Ops)
		if err != nil {
			t.Fatal(err)
		}
		env := &vecEnv{}
		for k := range env.V {
			env.V[k] = [2]uint64{word(), word()}
		}
		want := env.V
		var res [2]uint64
		bits := uint(8 * size)
		for w := 0; w < width/8; w++ {
			for l := uint(0); l < 64; l += bits {
				x, y := want[an][w]>>l, want[bn][w]>>l
				res[w] |= lane(op, x, y, bits) << l
			}
		}
		want[dn] = res
		f(env)
		if env.V != want {
			t.Fatalf("op %d lane %d width %d v%d = v%d, v%d: got %#x, want %#x", op, size, width, dn, an, bn, env.V, want)
		}
	}
}

package tcg

import (
	"math"
	"math/big"
	"math/rand"
	"testing"
	"unsafe"
)

type floatEnv struct {
	PC         uint64
	R          [4]uint64
	tlb        *TLB
	temps      [MaxTemps]uint64
	ctl, sts   uint64
	slow, want uint64 // helper calls; the value the helper computes
}

// TestFloatFastPath checks OpFloat on both backends against Go's IEEE 754 arithmetic
// (round to nearest even; math.FMA for the fused multiply-add): D is always the IEEE
// result (the test helper computes it too, counting its calls), and natively the
// helper runs exactly when floatFast says the fast path does not apply or a guard
// fails (control word non-zero, no inexact flag yet): special values, denormals,
// overflow and underflow included. The D register's stale upper half must not leak
// into a binary32 result.
func TestFloatFastPath(t *testing.T) { forBackends(t, testFloatFastPath) }

func testFloatFastPath(t *testing.T, be Backend) {
	var e floatEnv
	tgt := &Target[floatEnv]{PC: unsafe.Offsetof(e.PC), TLB: unsafe.Offsetof(e.tlb), Temps: unsafe.Offsetof(e.temps),
		FPStatus: unsafe.Offsetof(e.sts), FPInexact: 0x10,
		LoadSlow:  func(*floatEnv, uint64, int) (uint64, bool) { return 0, false },
		StoreSlow: func(*floatEnv, uint64, int, uint64) bool { return false }}
	r := rand.New(rand.NewSource(4))
	special64 := []float64{0, math.Copysign(0, -1), 1, -1.5, math.Inf(1), math.Inf(-1), math.NaN(), 5e-324, 2.2250738585072014e-308,
		1.7976931348623157e308, 1e308, 1e-308, 3, 1.0 / 3}
	pick := func(size int) uint64 {
		if r.Intn(3) == 0 {
			v := special64[r.Intn(len(special64))]
			if size == 4 {
				return uint64(math.Float32bits(float32(v))) | r.Uint64()<<32
			}
			return math.Float64bits(v)
		}
		if size == 4 {
			return uint64(math.Float32bits(float32(r.NormFloat64()*math.Pow(2, float64(r.Intn(300)-150))))) | r.Uint64()<<32
		}
		return math.Float64bits(r.NormFloat64() * math.Pow(2, float64(r.Intn(2200)-1100)))
	}
	native := 0
	for i := 0; i < 3000; i++ {
		size := 4 << r.Intn(2)
		fop := FloatOp(1 + r.Intn(5))
		a, x, acc := pick(size), pick(size), pick(size)
		ieee := func() uint64 {
			if size == 4 {
				fa, fx, fc := math.Float32frombits(uint32(a)), math.Float32frombits(uint32(x)), math.Float32frombits(uint32(acc))
				var v float32
				switch fop {
				case FloatAdd:
					v = fa + fx
				case FloatSub:
					v = fa - fx
				case FloatMul:
					v = fa * fx
				case FloatDiv:
					v = fa / fx
				case FloatMulAdd: // one rounding of the exact value (float64 FMA would round twice)
					v = float32(math.FMA(float64(fa), float64(fx), float64(fc)))
					if !math.IsInf(float64(v), 0) && !math.IsNaN(float64(v)) && !math.IsInf(float64(fa*fx), 0) {
						p := new(big.Float).SetPrec(2000).Mul(big.NewFloat(float64(fa)), big.NewFloat(float64(fx)))
						v, _ = p.Add(p, big.NewFloat(float64(fc))).Float32()
					}
				}
				return uint64(math.Float32bits(v))
			}
			fa, fx, fc := math.Float64frombits(a), math.Float64frombits(x), math.Float64frombits(acc)
			switch fop {
			case FloatAdd:
				return math.Float64bits(fa + fx)
			case FloatSub:
				return math.Float64bits(fa - fx)
			case FloatMul:
				return math.Float64bits(fa * fx)
			case FloatDiv:
				return math.Float64bits(fa / fx)
			}
			return math.Float64bits(math.FMA(fa, fx, fc))
		}
		want := ieee()
		var b Builder[floatEnv]
		b.SetPC(0x1000)
		b.Mov(Temp(1), reg(2)) // the addend (and the result)
		b.Float(fop, Temp(1), reg(0), reg(1), size, unsafe.Offsetof(e.ctl), func(e *floatEnv) bool {
			e.slow++
			e.temps[1] = e.want
			return true
		})
		b.Mov(reg(3), Temp(1))
		b.Exit(Imm(0x2000))
		f, _, err := compileWith(be, tgt, b.Ops) // reg(n): floatEnv's R is where testEnv's is
		if err != nil {
			t.Fatal(err)
		}
		env := &floatEnv{R: [4]uint64{a, x, acc, 0}, want: want}
		if r.Intn(8) == 0 {
			env.ctl = 1 << 22 // a rounding mode: the helper's
		}
		if r.Intn(8) != 0 {
			env.sts = 0x10
		}
		f(env)
		if env.R[3] != want {
			t.Fatalf("op %d size %d: %#x, %#x, %#x gave %#x, want %#x", fop, size, a, x, acc, env.R[3], want)
		}
		if be == BackendNative {
			ins := []uint64{a, x}
			if fop == FloatMulAdd {
				ins = append(ins, acc)
			}
			fast := env.ctl == 0 && env.sts&0x10 != 0 && floatFast(size, want, ins...) && (fop != FloatMulAdd || hostFMA)
			if fast == (env.slow != 0) {
				t.Fatalf("op %d size %d: %#x, %#x, %#x -> %#x: helper calls %d, fast path expected %v", fop, size, a, x, acc, want, env.slow, fast)
			}
			if fast {
				native++
			}
		}
	}
	if be == BackendNative && native < 500 {
		t.Errorf("only %d fast-path results", native)
	}
}

package arm

import (
	"math"
	"math/rand"
	"testing"
)

// The hardware fast path (round to nearest) and the exact math/big path must
// agree bit for bit, flags included, and agree with Go's own IEEE arithmetic.
func TestFPSIMDFastPathMatchesExact(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	randF := func(sz int) float64 {
		if sz == fpS {
			b := uint32(r.Intn(2))<<31 | uint32(1+r.Intn(254))<<23 | uint32(r.Intn(1<<23))
			if r.Intn(3) == 0 {
				b &^= uint32(r.Intn(1 << 23)) // fewer mantissa bits: more exact results
			}
			return float64(math.Float32frombits(b))
		}
		b := uint64(r.Intn(2))<<63 | uint64(1+r.Intn(2046))<<52 | r.Uint64()>>12
		if r.Intn(2) == 0 {
			b = b&^(0x7ff<<52) | uint64(1023-60+r.Intn(120))<<52
		}
		return math.Float64frombits(b)
	}
	n := 200000
	if testing.Short() {
		n = 20000
	}
	checked := 0
	for i := 0; i < n; i++ {
		sz := fpS + r.Intn(2)
		op := fpOp(r.Intn(5))
		x, y, z := randF(sz), randF(sz), randF(sz)
		if op == opSqrt {
			x = math.Abs(x)
		}
		var flFast uint64
		if r.Intn(2) == 0 {
			flFast = fpIXC // lets the double FMA take the fast path
		}
		flExact := flFast
		fast, ok := fpComputeFast(sz, op, x, y, z, 0, &flFast)
		if !ok {
			continue
		}
		exact := fpComputeExact(sz, op, x, y, z, 0, rmNearest, 0, &flExact)
		if fast != exact || flFast != flExact {
			t.Fatalf("sz=%d op=%d x=%g y=%g z=%g: fast %#x flags %#x, exact %#x flags %#x", sz, op, x, y, z, fast, flFast, exact, flExact)
		}
		// Go's arithmetic as a third, independent opinion on the value.
		var want float64
		switch op {
		case opAdd:
			want = x + y
		case opMul:
			want = x * y
		case opDiv:
			want = x / y
		case opSqrt:
			want = math.Sqrt(x)
		case opFMA:
			want = math.FMA(x, y, z)
		}
		wantBits := math.Float64bits(want)
		if sz == fpS {
			switch op {
			case opAdd:
				wantBits = uint64(math.Float32bits(float32(x) + float32(y)))
			case opMul:
				wantBits = uint64(math.Float32bits(float32(x) * float32(y)))
			case opDiv:
				wantBits = uint64(math.Float32bits(float32(x) / float32(y)))
			case opSqrt:
				wantBits = uint64(math.Float32bits(float32(math.Sqrt(x))))
			default:
				continue // Go has no single-precision FMA
			}
		}
		if fast != wantBits {
			t.Fatalf("sz=%d op=%d x=%g y=%g z=%g: got %#x, Go computes %#x", sz, op, x, y, z, fast, wantBits)
		}
		checked++
	}
	if checked < n/4 {
		t.Fatalf("only %d of %d cases took the fast path", checked, n)
	}
}

// Register 31 is XZR for general-register operands, and scalar writes clear
// the upper bits of the vector register.
func TestFPSIMDZeroRegisterAndScalarWrites(t *testing.T) {
	var s State
	s.V[0] = [2]uint64{0x1111, 0x2222}
	decodeFPSIMD(0x1e2703e0)(&s) // fmov s0, wzr
	if s.V[0] != [2]uint64{0, 0} {
		t.Fatalf("fmov s0, wzr: V0 = %x", s.V[0])
	}
	s.V[1] = [2]uint64{0x3ff0000000000000, 0x4000000000000000}
	decodeFPSIMD(0x9eae003f)(&s) // fmov xzr, v1.d[1]: result discarded
	decodeFPSIMD(0x9e660020)(&s) // fmov x0, d1
	if s.X[0] != 0x3ff0000000000000 {
		t.Fatalf("fmov x0, d1: X0 = %x", s.X[0])
	}
	decodeFPSIMD(0x9eaf0001)(&s) // fmov v1.d[1], x0: low half kept
	if s.V[1] != [2]uint64{0x3ff0000000000000, 0x3ff0000000000000} {
		t.Fatalf("fmov v1.d[1], x0: V1 = %x", s.V[1])
	}
	for _, w := range []uint32{0x1ee22820 /* fadd h0,h1,h2 (FP16) */, 0x6e808400 /* sqrdmlah (v8.1) */, 0x00000000} {
		if decodeFPSIMD(w) != nil {
			t.Errorf("%08x decoded; gemu does not implement it", w)
		}
	}
}

func benchInsn(b *testing.B, word uint32) {
	f := decodeFPSIMD(word)
	if f == nil {
		b.Fatalf("%08x not decoded", word)
	}
	var s State
	for i := range s.V {
		s.V[i] = [2]uint64{0x3ff8000040100000 + uint64(i), 0x4004000040400000}
	}
	s.FPSR = fpIXC
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f(&s)
	}
}

func BenchmarkFPSIMDFaddD(b *testing.B)    { benchInsn(b, 0x1e622820) } // fadd d0, d1, d2
func BenchmarkFPSIMDFmaddD(b *testing.B)   { benchInsn(b, 0x1f420c20) } // fmadd d0, d1, d2, d3
func BenchmarkFPSIMDFmul4S(b *testing.B)   { benchInsn(b, 0x6e22dc20) } // fmul v0.4s, v1.4s, v2.4s
func BenchmarkFPSIMDAdd16B(b *testing.B)   { benchInsn(b, 0x4e228420) } // add v0.16b, v1.16b, v2.16b
func BenchmarkFPSIMDEor16B(b *testing.B)   { benchInsn(b, 0x6e221c20) } // eor v0.16b, v1.16b, v2.16b
func BenchmarkFPSIMDFcvtzsXD(b *testing.B) { benchInsn(b, 0x9e780020) } // fcvtzs x0, d1

// Every encoding of the group (all values of bits 31:10, with random register
// fields) must decode without panicking, and every decoded closure must run
// without panicking on arbitrary register contents.
func TestFPSIMDAllEncodingsDecodeAndRun(t *testing.T) {
	r := rand.New(rand.NewSource(4))
	var s State
	step := uint32(1)
	if testing.Short() {
		step = 7
	}
	decoded := 0
	for hi := uint32(0); hi < 1<<19; hi += step {
		// bits 31:28 and 24:10 from hi; bits 27:25 = 111; Rn, Rd random
		w := (hi>>15)<<28 | 7<<25 | (hi&0x7fff)<<10 | uint32(r.Intn(1<<10))
		f := decodeFPSIMD(w)
		if f == nil {
			continue
		}
		decoded++
		for i := range s.V {
			s.V[i] = [2]uint64{r.Uint64(), r.Uint64()}
		}
		for i := range s.X {
			s.X[i] = r.Uint64()
		}
		s.FPCR = uint64(r.Intn(16)) << 22
		func() {
			defer func() {
				if e := recover(); e != nil {
					t.Fatalf("%08x: panic: %v", w, e)
				}
			}()
			f(&s)
		}()
	}
	if decoded == 0 {
		t.Fatal("nothing decoded")
	}
	t.Logf("%d encodings decoded", decoded)
}

package tcg

import (
	"math/big"
	"math/rand"
	"testing"
)

// TestMulHighAndAddCarry checks OpMulHu, OpMulHs and OpFlagsAddC on both backends
// against math/big arithmetic: the high half of the exact 128-bit product, and the
// NZCV of the exact sum a + b + carry-in on 4 and 8 bytes (C: the sum does not fit
// unsigned; V: the signed sum does not fit), with the carry-in taken from the flags
// word's bit 29 and the other bits of that word ignored.
func TestMulHighAndAddCarry(t *testing.T) { forBackends(t, testMulHighAndAddCarry) }

func testMulHighAndAddCarry(t *testing.T, be Backend) {
	r := rand.New(rand.NewSource(3))
	pick := func() uint64 {
		if r.Intn(3) == 0 {
			return interestingImms[r.Intn(len(interestingImms))]
		}
		return r.Uint64()
	}
	for i := 0; i < 400; i++ {
		a, x, old := pick(), pick(), pick()
		if r.Intn(2) == 0 { // a + x is all ones or zero: the carry-in decides C and Z
			x = -a - uint64(r.Intn(2))
		}
		size := 4 << r.Intn(2)
		var b Builder[testEnv]
		b.SetPC(0x1000)
		b.Bin(OpMulHu, reg(2), reg(0), reg(1))
		b.Bin(OpMulHs, reg(3), reg(0), Imm(x))
		b.Mov(Temp(1), Imm(old))
		b.Flags(OpFlagsAddC, Temp(1), reg(0), reg(1), size, FlagsNZCV)
		b.Mov(reg(1), Temp(1))
		b.Exit(Imm(0x2000))
		f, _, err := compileWith(be, testTarget(), b.Ops)
		if err != nil {
			t.Fatal(err)
		}
		env := &testEnv{}
		env.R[0], env.R[1] = a, x
		f(env)

		ba, bx := new(big.Int).SetUint64(a), new(big.Int).SetUint64(x)
		hu := new(big.Int).Rsh(new(big.Int).Mul(ba, bx), 64).Uint64()
		sa, sx := big.NewInt(int64(a)), big.NewInt(int64(x))
		hs := new(big.Int).Rsh(new(big.Int).Mul(sa, sx), 64).Int64()
		if env.R[2] != hu || env.R[3] != uint64(hs) {
			t.Fatalf("%#x * %#x: mulhu %#x mulhs %#x, want %#x %#x", a, x, env.R[2], env.R[3], hu, uint64(hs))
		}
		bits := uint(8 * size)
		mask := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), bits), big.NewInt(1))
		cin := int64(old >> 29 & 1)
		ua := new(big.Int).And(ba, mask)
		ux := new(big.Int).And(bx, mask)
		sum := new(big.Int).Add(new(big.Int).Add(ua, ux), big.NewInt(cin))
		res := new(big.Int).And(sum, mask)
		signed := func(v *big.Int) *big.Int { // two's complement value of a bits-wide word
			if v.Bit(int(bits)-1) == 1 {
				return new(big.Int).Sub(v, new(big.Int).Lsh(big.NewInt(1), bits))
			}
			return new(big.Int).Set(v)
		}
		ssum := new(big.Int).Add(new(big.Int).Add(signed(ua), signed(ux)), big.NewInt(cin))
		want := uint64(res.Bit(int(bits)-1))<<31 | b2u(res.Sign() == 0)<<30 | b2u(sum.Cmp(mask) > 0)<<29 |
			b2u(ssum.Cmp(signed(res)) != 0)<<28
		if env.R[1] != want {
			t.Fatalf("flags of %#x + %#x + %d on %d bytes = %#x, want %#x", a, x, cin, size, env.R[1], want)
		}
	}
}

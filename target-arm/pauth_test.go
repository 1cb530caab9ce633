package arm

import "testing"

// TestPACInverses checks that the inverse layers of QARMA5 undo the forward ones
// (pacMult is an involution) on pseudo-random states.
func TestPACInverses(t *testing.T) {
	v := uint64(0x9e3779b97f4a7c15)
	for range 1000 {
		v = v*6364136223846793005 + 1442695040888963407
		if g := pacPermute(pacPermute(v, &pacShuffle), &pacInvShuffle); g != v {
			t.Fatalf("inverse shuffle of shuffle(%#x) = %#x", v, g)
		}
		if g := pacSubst(pacSubst(v, &pacSbox), &pacInvSbox); g != v {
			t.Fatalf("inverse sub of sub(%#x) = %#x", v, g)
		}
		if g := tweakInvShuffle(tweakShuffle(v)); g != v {
			t.Fatalf("inverse tweak shuffle of tweak shuffle(%#x) = %#x", v, g)
		}
		if g := pacMult(pacMult(v)); g != v {
			t.Fatalf("mult(mult(%#x)) = %#x", v, g)
		}
	}
}

func BenchmarkComputePAC(b *testing.B) {
	var x uint64
	for i := range b.N {
		x ^= computePAC(uint64(i), 0x40201000, 0xfedcba9876543210, 0x0123456789abcdef)
	}
	sink = x
}

var sink uint64

// TestComputePACTables checks the table-driven computePAC against the layer-by-layer
// computePACRef (which TestPAuthAsQEMU checks against QEMU through computePAC).
func TestComputePACTables(t *testing.T) {
	v := uint64(1)
	next := func() uint64 { v = v*6364136223846793005 + 1442695040888963407; return v }
	for range 2000 {
		d, m, hi, lo := next(), next(), next(), next()
		if g, w := computePAC(d, m, hi, lo), computePACRef(d, m, hi, lo); g != w {
			t.Fatalf("computePAC(%#x, %#x, %#x, %#x) = %#x, reference %#x", d, m, hi, lo, g, w)
		}
	}
}

// TestPACCacheKeyChange checks that the PAC cache never answers for another key or
// input: every result through c.pac equals computePAC with the current key.
func TestPACCacheKeyChange(t *testing.T) {
	c := &CPU{pacCache: new(pacCache)}
	v := uint64(7)
	next := func() uint64 { v = v*6364136223846793005 + 1442695040888963407; return v }
	data, mod := []uint64{0, 0x40201234, next(), next()}, []uint64{0, next()}
	for range 50 {
		k := int(next() % 5)
		if next()&1 == 0 {
			c.sr.pacKeys[2*k+int(next()&1)] = next()
		}
		for _, d := range data {
			for _, m := range mod {
				want := computePAC(d, m, c.sr.pacKeys[2*k+1], c.sr.pacKeys[2*k])
				if g := c.pac(d, m, k); g != want {
					t.Fatalf("key %d: pac(%#x, %#x) = %#x, want %#x", k, d, m, g, want)
				}
			}
		}
	}
}

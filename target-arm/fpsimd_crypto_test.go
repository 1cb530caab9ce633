package arm

import (
	"math/rand"
	"testing"
)

// cryptoWords are the Cryptographic Extension encodings with d, n, m in the
// register fields (m ignored by the two-register forms).
var cryptoWords = []struct {
	name string
	base uint32
}{
	{"aese", 0x4e284800}, {"aesd", 0x4e285800}, {"aesmc", 0x4e286800}, {"aesimc", 0x4e287800},
	{"sha1c", 0x5e000000}, {"sha1p", 0x5e001000}, {"sha1m", 0x5e002000}, {"sha1su0", 0x5e003000},
	{"sha256h", 0x5e004000}, {"sha256h2", 0x5e005000}, {"sha256su1", 0x5e006000},
	{"sha1h", 0x5e280800}, {"sha1su1", 0x5e281800}, {"sha256su0", 0x5e282800},
	{"pmull", 0x0ee0e000}, {"pmull2", 0x4ee0e000},
}

// The host AES-NI/SHA-NI/PCLMULQDQ path and the generic Go path must agree bit
// for bit on random registers, with every aliasing of d, n and m. (Both are also
// checked against qemu-aarch64 in TestFPSIMDDifferential.)
func TestCryptoHostVsGeneric(t *testing.T) {
	host := hostCrypto
	if !host.aes && !host.pmull && !host.sha {
		t.Skip("the host has none of AES-NI, PCLMULQDQ, SHA-NI: only the generic path exists")
	}
	defer func() { hostCrypto = host }()
	r := rand.New(rand.NewSource(15))
	regs := [][3]uint32{{0, 1, 2}, {0, 0, 1}, {0, 1, 0}, {0, 1, 1}, {3, 3, 3}, {5, 7, 5}}
	t.Logf("host instructions: AES %v, PCLMULQDQ %v, SHA %v", host.aes, host.pmull, host.sha)
	n := 4000
	if testing.Short() {
		n = 500
	}
	for _, c := range cryptoWords {
		for _, rg := range regs {
			word := c.base | rg[0] | rg[1]<<5
			if c.base&0xfffe0c00 != 0x4e280800 && c.base&0xfffe0c00 != 0x5e280800 { // has Rm
				word |= rg[2] << 16
			}
			hostCrypto = host
			hw := decodeFPSIMD(word)
			hostCrypto.aes, hostCrypto.pmull, hostCrypto.sha = false, false, false
			gen := decodeFPSIMD(word)
			if hw == nil || gen == nil {
				t.Fatalf("%s (%08x) not decoded", c.name, word)
			}
			for i := 0; i < n; i++ {
				var a State
				for j := range a.V[:8] {
					a.V[j] = [2]uint64{r.Uint64(), r.Uint64()}
					if r.Intn(8) == 0 { // sparse and extreme values too
						a.V[j][r.Intn(2)] = [4]uint64{0, ^uint64(0), 1 << 63, 1}[r.Intn(4)]
					}
				}
				b := a
				hw(&a)
				gen(&b)
				if a.V != b.V {
					t.Fatalf("%s (%08x) input %d: host V%d=%016x:%016x, generic %016x:%016x",
						c.name, word, i, rg[0], a.V[rg[0]][1], a.V[rg[0]][0], b.V[rg[0]][1], b.V[rg[0]][0])
				}
			}
		}
	}
}

// Known answers for the generic path, independent of both implementations
// under test: one AES-128 encryption and decryption (FIPS-197 appendix C.1)
// built from AESE/AESMC and AESD/AESIMC, on both paths.
func TestCryptoAESKnownAnswer(t *testing.T) {
	host := hostCrypto
	defer func() { hostCrypto = host }()
	for _, useHost := range []bool{false, true} {
		hostCrypto = host
		if !useHost {
			hostCrypto.aes = false
		} else if !host.aes {
			continue
		}
		testAESKnownAnswer(t, useHost)
	}
}

func testAESKnownAnswer(t *testing.T, useHost bool) {
	le := func(b []byte) [2]uint64 {
		var a [16]byte
		copy(a[:], b)
		return fromBytes(a)
	}
	key := []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	pt := []byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}
	ct := []byte{0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30, 0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4, 0xc5, 0x5a}
	// Key expansion (FIPS-197 5.2) with the package's S-box.
	var w [44]uint32
	for i := 0; i < 4; i++ {
		w[i] = uint32(key[4*i]) | uint32(key[4*i+1])<<8 | uint32(key[4*i+2])<<16 | uint32(key[4*i+3])<<24
	}
	rcon := byte(1)
	for i := 4; i < 44; i++ {
		x := w[i-1]
		if i%4 == 0 {
			x = x>>8 | x<<24
			x = uint32(aesSbox[x&0xff]) | uint32(aesSbox[x>>8&0xff])<<8 | uint32(aesSbox[x>>16&0xff])<<16 | uint32(aesSbox[x>>24])<<24
			x ^= uint32(rcon)
			rcon = gmul(rcon, 2)
		}
		w[i] = w[i-4] ^ x
	}
	rk := func(r int) [2]uint64 { return fromWords([4]uint32{w[4*r], w[4*r+1], w[4*r+2], w[4*r+3]}) }
	aese, aesmc := decodeFPSIMD(0x4e284820), decodeFPSIMD(0x4e286800)  // aese v0, v1; aesmc v0, v0
	aesd, aesimc := decodeFPSIMD(0x4e285820), decodeFPSIMD(0x4e287800) // aesd v0, v1; aesimc v0, v0
	var s State
	s.V[0] = le(pt)
	for r := 0; r < 10; r++ {
		s.V[1] = rk(r)
		aese(&s)
		if r < 9 {
			aesmc(&s)
		}
	}
	s.V[0][0] ^= rk(10)[0]
	s.V[0][1] ^= rk(10)[1]
	if s.V[0] != le(ct) {
		t.Errorf("host=%v: AES-128 encrypt %016x:%016x, want %016x:%016x", useHost, s.V[0][1], s.V[0][0], le(ct)[1], le(ct)[0])
	}
	// Equivalent inverse cipher: AESD with the round keys in reverse (the middle
	// ones through InvMixColumns), AESIMC between.
	s.V[0] = le(ct)
	for r := 10; r > 0; r-- {
		s.V[1] = rk(r)
		if r < 10 {
			s.V[1] = fromBytes(aesMix(toBytes(s.V[1]), true))
		}
		aesd(&s)
		if r > 1 {
			aesimc(&s)
		}
	}
	s.V[0][0] ^= rk(0)[0]
	s.V[0][1] ^= rk(0)[1]
	if s.V[0] != le(pt) {
		t.Errorf("host=%v: AES-128 decrypt %016x:%016x, want %016x:%016x", useHost, s.V[0][1], s.V[0][0], le(pt)[1], le(pt)[0])
	}
}

// BenchmarkCrypto runs each Cryptographic Extension instruction on the host path
// (where the host has it) and the generic path.
func BenchmarkCrypto(b *testing.B) {
	host := hostCrypto
	defer func() { hostCrypto = host }()
	for _, c := range cryptoWords {
		for _, path := range []string{"host", "generic"} {
			hostCrypto = host
			if path == "generic" {
				hostCrypto.aes, hostCrypto.pmull, hostCrypto.sha = false, false, false
			}
			word := c.base | 1<<5 // d=0, n=1
			if c.base&0xfffe0c00 != 0x4e280800 && c.base&0xfffe0c00 != 0x5e280800 {
				word |= 2 << 16 // m=2
			}
			b.Run(c.name+"/"+path, func(b *testing.B) { benchInsn(b, word) })
		}
	}
}

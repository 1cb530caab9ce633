package arm

// Host forms of the Cryptographic Extension on amd64 (fpsimd_crypto_amd64.s):
// AESE(d,n) = AESENCLAST(d^n, 0), AESD(d,n) = AESDECLAST(d^n, 0), AESMC(x) =
// AESENC(AESDECLAST(x, 0), 0), AESIMC = AESIMC; PMULL/PMULL2 .1q = PCLMULQDQ;
// SHA1C/P/M = SHA1RNDS4 with its built-in round constant subtracted from the
// W+K words first; SHA256H/H2 = two SHA256RNDS2 on the state rearranged to
// ABEF/CDGH; SHA256SU0 = SHA256MSG1; SHA256SU1 = SHA256MSG2 after the PALIGNR
// and add of its first half. All are modular integer operations, so the results
// are the generic Go path's bit for bit (TestCryptoHostVsGeneric).

import "golang.org/x/sys/cpu"

func cpuidSHA() bool

//go:noescape
func aeseHW(d, n *[2]uint64)

//go:noescape
func aesdHW(d, n *[2]uint64)

//go:noescape
func aesmcHW(d, n *[2]uint64)

//go:noescape
func aesimcHW(d, n *[2]uint64)
func clmulHW(a, b uint64) (lo, hi uint64)

//go:noescape
func sha1HW(abcd, wk *[2]uint64, f int)

//go:noescape
func sha256hHW(abcd, efgh, wk *[2]uint64)

//go:noescape
func sha256su0HW(d, n *[2]uint64)

//go:noescape
func sha256su1HW(d, n, m *[2]uint64)

func init() {
	hostCrypto.aes = cpu.X86.HasAES && cpu.X86.HasSSE2
	hostCrypto.pmull = cpu.X86.HasPCLMULQDQ && cpu.X86.HasSSE41
	hostCrypto.sha = cpuidSHA() && cpu.X86.HasSSSE3
}

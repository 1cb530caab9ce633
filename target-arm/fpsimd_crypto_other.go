//go:build !amd64

package arm

// No host crypto instructions off amd64: hostCrypto stays all false and these are
// never called.

func aeseHW(d, n *[2]uint64)              { panic("no host AES") }
func aesdHW(d, n *[2]uint64)              { panic("no host AES") }
func aesmcHW(d, n *[2]uint64)             { panic("no host AES") }
func aesimcHW(d, n *[2]uint64)            { panic("no host AES") }
func clmulHW(a, b uint64) (lo, hi uint64) { panic("no host PCLMULQDQ") }
func sha1HW(abcd, wk *[2]uint64, f int)   { panic("no host SHA") }
func sha256hHW(abcd, efgh, wk *[2]uint64) { panic("no host SHA") }
func sha256su0HW(d, n *[2]uint64)         { panic("no host SHA") }
func sha256su1HW(d, n, m *[2]uint64)      { panic("no host SHA") }

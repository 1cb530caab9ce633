package arm

import (
	"math/rand"
	"testing"
)

// Differential tests of the FP/AdvSIMD extensions beyond ARMv8.0 (isaext.go) against
// qemu-aarch64: the templates under -cpu max through the decoder of gemu's max model
// (so a class max does not advertise fails as "not decoded"), random encodings of
// each extension class under -cpu max (the classes max advertises) and under -cpu
// cortex-a57 (every one UNDEFINED there, as on gemu's cortex-a57).

var extTemplates = []string{
	// FEAT_RDM
	"sqrdmlah v0.8h, v1.8h, v2.8h", "sqrdmlah v0.4h, v1.4h, v2.4h", "sqrdmlah v0.4s, v1.4s, v2.4s",
	"sqrdmlah v0.2s, v1.2s, v2.2s", "sqrdmlsh v0.8h, v1.8h, v2.8h", "sqrdmlsh v0.4s, v1.4s, v2.4s",
	"sqrdmlsh v0.2s, v1.2s, v2.2s", "sqrdmlah h0, h1, h2", "sqrdmlah s0, s1, s2", "sqrdmlsh h0, h1, h2",
	"sqrdmlsh s0, s1, s2",
	"sqrdmlah v0.8h, v1.8h, v2.h[7]", "sqrdmlah v0.4h, v1.4h, v2.h[2]", "sqrdmlah v0.4s, v1.4s, v2.s[3]",
	"sqrdmlah v0.2s, v1.2s, v2.s[1]", "sqrdmlsh v0.8h, v1.8h, v3.h[5]", "sqrdmlsh v0.4s, v1.4s, v3.s[2]",
	"sqrdmlah h0, h1, v2.h[6]", "sqrdmlah s0, s1, v2.s[3]", "sqrdmlsh h0, h1, v2.h[1]", "sqrdmlsh s0, s1, v3.s[0]",
	// FEAT_DotProd
	"sdot v0.4s, v1.16b, v2.16b", "sdot v0.2s, v1.8b, v2.8b", "udot v0.4s, v1.16b, v2.16b", "udot v0.2s, v1.8b, v2.8b",
	"sdot v0.4s, v1.16b, v2.4b[3]", "sdot v0.2s, v1.8b, v2.4b[1]", "udot v0.4s, v1.16b, v3.4b[2]",
	"udot v0.2s, v1.8b, v2.4b[0]",
	// FEAT_SHA512, FEAT_SHA3
	"sha512h q0, q1, v2.2d", "sha512h2 q0, q1, v2.2d", "sha512su0 v0.2d, v1.2d", "sha512su1 v0.2d, v1.2d, v2.2d",
	"eor3 v0.16b, v1.16b, v2.16b, v3.16b", "bcax v0.16b, v1.16b, v2.16b, v3.16b", "rax1 v0.2d, v1.2d, v2.2d",
	"xar v0.2d, v1.2d, v2.2d, #0", "xar v0.2d, v1.2d, v2.2d, #1", "xar v0.2d, v1.2d, v2.2d, #63", "xar v0.2d, v1.2d, v2.2d, #29",
	// FEAT_SM3, FEAT_SM4
	"sm3ss1 v0.4s, v1.4s, v2.4s, v3.4s", "sm3tt1a v0.4s, v1.4s, v2.s[0]", "sm3tt1b v0.4s, v1.4s, v2.s[3]",
	"sm3tt2a v0.4s, v1.4s, v2.s[1]", "sm3tt2b v0.4s, v1.4s, v2.s[2]", "sm3partw1 v0.4s, v1.4s, v2.4s",
	"sm3partw2 v0.4s, v1.4s, v2.4s", "sm4e v0.4s, v1.4s", "sm4ekey v0.4s, v1.4s, v2.4s",
}

const extMarch = "armv8.2-a+crypto+rdma+dotprod+sha3+sm4"

func maxDecoder(w uint32) func(*State) {
	m, _ := LookupModel("max")
	return decodeFPSIMDFeat(w, m.isaFeatures())
}

func TestFPSIMDExtDifferential(t *testing.T) {
	runTemplateDiff(t, extTemplates, extMarch, maxDecoder)
}

// extClass is one extension encoding class: the words w&mask == val whose opcode
// the feature function maps to the extension executing them (0: unallocated).
type extClass struct {
	mask, val uint32
	feat      func(w uint32) isaFeat
}

var extClasses = []extClass{
	{0x9f208400, 0x0e008400, threeSameExtraFeat}, // AdvSIMD three same extra
	{0xdf208400, 0x5e008400, threeSameExtraFeat}, // scalar
	{0x9f000400, 0x0f000000, indexedExtFeat},     // AdvSIMD x indexed element
	{0xdf000400, 0x5f000000, indexedExtFeat},     // scalar
	{0xffe0b000, 0xce608000, func(w uint32) isaFeat { // three register SHA512
		return [8]isaFeat{featSHA512, featSHA512, featSHA512, featSHA3, featSM3, featSM3, featSM4, 0}[w>>14&1<<2|w>>10&3]
	}},
	{0xfffff000, 0xcec08000, func(w uint32) isaFeat { return [4]isaFeat{featSHA512, featSM4, 0, 0}[w>>10&3] }},
	{0xff808000, 0xce000000, func(w uint32) isaFeat { return [4]isaFeat{featSHA3, featSHA3, featSM3, 0}[w>>21&3] }},
	{0xffe00000, 0xce800000, func(uint32) isaFeat { return featSHA3 }}, // XAR
	{0xffe0c000, 0xce408000, func(uint32) isaFeat { return featSM3 }},  // SM3TT*
}

// threeSameExtraFeat: opcodes 0000/0001 (U=1) SQRDMLAH/SQRDMLSH, 0010 SDOT/UDOT; the
// generator only draws opcodes 0-2 (the others are FEAT_FCMA, I8MM, BF16 encodings
// QEMU's max has and gemu's does not).
func threeSameExtraFeat(w uint32) isaFeat {
	if w>>11&15 == 2 {
		return featDotProd
	}
	return featRDM
}

// indexedExtFeat: opcode 1101/1111 with U=1 SQRDMLAH/SQRDMLSH, 1110 SDOT/UDOT; U=0
// 1101 is ARMv8.0's SQRDMULH (decodeFPSIMD's), and U=0 1111 (I8MM, BF16) is not drawn.
func indexedExtFeat(w uint32) isaFeat {
	if w>>12&15 == 0b1110 {
		return featDotProd
	}
	return featRDM
}

func (c extClass) draw(r *rand.Rand) uint32 {
	for {
		w := r.Uint32()&^c.mask | c.val
		w &^= 0x210 // Rd, Rn < 16
		switch c.val {
		case 0x0e008400, 0x5e008400:
			if w>>11&15 > 2 {
				continue
			}
		case 0x0f000000, 0x5f000000:
			opc, u := w>>12&15, w>>29&1
			if !(opc == 0b1110 || u == 1 && (opc == 0b1101 || opc == 0b1111)) {
				continue
			}
		}
		return w
	}
}

// TestFPSIMDExtRandomEncodings: random words of every extension class under
// qemu-aarch64 -cpu max, drawn from what gemu's max advertises or from nothing
// (unallocated opcodes), must decode and execute as there.
func TestFPSIMDExtRandomEncodings(t *testing.T) {
	m, _ := LookupModel("max")
	have := m.isaFeatures()
	n := 12000
	if testing.Short() {
		n = 2000
	}
	runRandomDiff(t, n, "max", maxDecoder, func(r *rand.Rand) uint32 {
		for {
			c := extClasses[r.Intn(len(extClasses))]
			w := c.draw(r)
			if f := c.feat(w); f == 0 || f&have != 0 {
				return w
			}
		}
	})
}

// TestFPSIMDExtUndefinedOnCortexA57: the same classes under -cpu cortex-a57, where
// gemu's A57 decodes none of the extension encodings.
func TestFPSIMDExtUndefinedOnCortexA57(t *testing.T) {
	m, _ := LookupModel("cortex-a57")
	n := 4000
	if testing.Short() {
		n = 1000
	}
	runRandomDiff(t, n, "cortex-a57", func(w uint32) func(*State) { return decodeFPSIMDFeat(w, m.isaFeatures()) },
		func(r *rand.Rand) uint32 { return extClasses[r.Intn(len(extClasses))].draw(r) })
}

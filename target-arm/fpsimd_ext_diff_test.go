package arm

import (
	"math/rand"
	"os"
	"strconv"
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
	// FEAT_FP16, scalar (not FCVTZS Hd, Hn, #fbits: qemu-aarch64 7.2 sign-extends its
	// result to 32 bits, where the architecture zero-extends Hd)
	"fadd h0, h1, h2", "fsub h0, h1, h2", "fmul h0, h1, h2", "fdiv h0, h1, h2", "fnmul h0, h1, h2",
	"fmax h0, h1, h2", "fmin h0, h1, h2", "fmaxnm h0, h1, h2", "fminnm h0, h1, h2",
	"fmadd h0, h1, h2, h3", "fmsub h0, h1, h2, h3", "fnmadd h0, h1, h2, h3", "fnmsub h0, h1, h2, h3",
	"fabs h0, h1", "fneg h0, h1", "fsqrt h0, h1", "fmov h0, h1", "frintn h0, h1", "frintp h0, h1", "frintm h0, h1",
	"frintz h0, h1", "frinta h0, h1", "frintx h0, h1", "frinti h0, h1",
	"fcmp h1, h2", "fcmpe h1, h2", "fcmp h1, #0.0", "fcmpe h1, #0.0", "fccmp h1, h2, #0x5, eq", "fccmpe h1, h2, #0xa, lt",
	"fcsel h0, h1, h2, gt", "fmov h0, #1.0", "fmov h0, #-0.125", "fmov h0, #31.0",
	"fmov w0, h1", "fmov x0, h1", "fmov h0, w1", "fmov h0, x1",
	"fcvtzs w0, h1", "fcvtzu x0, h1", "fcvtns w0, h1", "fcvtnu x0, h1", "fcvtas x0, h1", "fcvtau w0, h1",
	"fcvtms w0, h1", "fcvtmu x0, h1", "fcvtps x0, h1", "fcvtpu w0, h1",
	"scvtf h0, w1", "scvtf h0, x1", "ucvtf h0, w1", "ucvtf h0, x1",
	"scvtf h0, w1, #5", "ucvtf h0, x1, #40", "fcvtzs w0, h1, #3", "fcvtzu x0, h1, #20", "fcvtzs x0, h1, #64",
	"fmulx h0, h1, h2", "fcmeq h0, h1, h2", "fcmge h0, h1, h2", "fcmgt h0, h1, h2", "facge h0, h1, h2", "facgt h0, h1, h2",
	"frecps h0, h1, h2", "frsqrts h0, h1, h2", "fabd h0, h1, h2",
	"frecpe h0, h1", "frsqrte h0, h1", "frecpx h0, h1", "fcvtzs h0, h1", "fcvtnu h0, h1", "fcvtas h0, h1",
	"scvtf h0, h1", "ucvtf h0, h1", "ucvtf h0, h1, #4", "fcvtzu h0, h1, #16",
	"fcmeq h0, h1, #0.0", "fcmge h0, h1, #0.0", "fcmgt h0, h1, #0.0", "fcmle h0, h1, #0.0", "fcmlt h0, h1, #0.0",
	"fmla h0, h1, v2.h[4]", "fmls h0, h1, v2.h[1]", "fmul h0, h1, v2.h[7]", "fmulx h0, h1, v2.h[2]",
	"faddp h0, v1.2h", "fmaxp h0, v1.2h", "fminp h0, v1.2h", "fmaxnmp h0, v1.2h", "fminnmp h0, v1.2h",
	// FEAT_FP16, vector
	"fadd v0.8h, v1.8h, v2.8h", "fsub v0.4h, v1.4h, v2.4h", "fmul v0.8h, v1.8h, v2.8h", "fdiv v0.8h, v1.8h, v2.8h",
	"fmla v0.8h, v1.8h, v2.8h", "fmls v0.4h, v1.4h, v2.4h", "fabd v0.8h, v1.8h, v2.8h", "fmax v0.8h, v1.8h, v2.8h",
	"fmin v0.4h, v1.4h, v2.4h", "fmaxnm v0.8h, v1.8h, v2.8h", "fminnm v0.8h, v1.8h, v2.8h", "fmaxp v0.8h, v1.8h, v2.8h",
	"faddp v0.8h, v1.8h, v2.8h", "fminnmp v0.4h, v1.4h, v2.4h", "fmaxnmp v0.8h, v1.8h, v2.8h", "fminp v0.8h, v1.8h, v2.8h",
	"fmulx v0.8h, v1.8h, v2.8h", "fcmeq v0.8h, v1.8h, v2.8h", "fcmge v0.8h, v1.8h, v2.8h", "fcmgt v0.4h, v1.4h, v2.4h",
	"facge v0.8h, v1.8h, v2.8h", "facgt v0.8h, v1.8h, v2.8h", "frecps v0.8h, v1.8h, v2.8h", "frsqrts v0.8h, v1.8h, v2.8h",
	"frecpe v0.8h, v1.8h", "frsqrte v0.4h, v1.4h", "fabs v0.8h, v1.8h", "fneg v0.4h, v1.4h", "fsqrt v0.8h, v1.8h",
	"frintn v0.8h, v1.8h", "frintm v0.8h, v1.8h", "frintp v0.4h, v1.4h", "frintz v0.8h, v1.8h", "frinta v0.8h, v1.8h",
	"frintx v0.8h, v1.8h", "frinti v0.8h, v1.8h",
	"fcvtzs v0.8h, v1.8h", "fcvtzu v0.8h, v1.8h", "fcvtns v0.4h, v1.4h", "fcvtau v0.8h, v1.8h", "fcvtms v0.8h, v1.8h",
	"fcvtpu v0.8h, v1.8h", "scvtf v0.8h, v1.8h", "ucvtf v0.4h, v1.4h", "scvtf v0.8h, v1.8h, #3", "fcvtzu v0.4h, v1.4h, #10",
	"fcvtzs v0.8h, v1.8h, #16", "ucvtf v0.8h, v1.8h, #1",
	"fcmeq v0.8h, v1.8h, #0.0", "fcmge v0.8h, v1.8h, #0.0", "fcmgt v0.4h, v1.4h, #0.0", "fcmle v0.8h, v1.8h, #0.0",
	"fcmlt v0.8h, v1.8h, #0.0",
	"fmla v0.8h, v1.8h, v2.h[7]", "fmls v0.4h, v1.4h, v2.h[3]", "fmul v0.8h, v1.8h, v2.h[5]", "fmulx v0.8h, v1.8h, v2.h[1]",
	"fmaxv h0, v1.8h", "fminv h0, v1.4h", "fmaxnmv h0, v1.8h", "fminnmv h0, v1.8h",
	"fmov v0.8h, #2.5", "fmov v0.4h, #-1.0",
}

const extMarch = "armv8.2-a+crypto+rdma+dotprod+sha3+sm4+fp16"

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
	// FEAT_FP16 classes (with the ARMv8.0 encodings that share them, which need
	// nothing: fp16Feat gives featFP16 for every word). Not the two-register misc
	// (FP16) class: random programs of it stop qemu-aarch64 7.2 on an assertion
	// (translate-a64.c, disas_simd_two_reg_misc_fp16: "code should not be reached";
	// no single word of the class does it alone). extTemplates cover its operations.
	{0x7fc00000, 0x1ec00000, fp16Feat}, // scalar FP, half precision
	{0x7fc00000, 0x1fc00000, fp16Feat}, // FP data processing (3 source), half
	{0x9f60c400, 0x0e400400, fp16Feat}, // three same (FP16)
	{0xdf60c400, 0x5e400400, fp16Feat},
	{0xbf7e0c00, 0x0e300800, fp16Feat}, // across lanes, size 0x
	{0xff7e0c00, 0x5e300800, fp16Feat}, // scalar pairwise, size 0x
	{0x9fc00400, 0x0f000000, fp16Feat}, // x indexed element, size 00
	{0xdfc00400, 0x5f000000, fp16Feat},
	{0x9f700400, 0x0f100400, fp16Feat}, // shift by immediate, immh 001x
	{0xdf700400, 0x5f100400, fp16Feat},
	{0xbff80c00, 0x0f000c00, fp16Feat}, // modified immediate with o2 = 1
}

func fp16Feat(uint32) isaFeat { return featFP16 }

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
		case 0x5f100400:
			// QEMU 7.2 writes scalar FCVTZS (fixed-point, half) sign-extended to 32
			// bits; the architecture (and gemu) zero-extends Hd.
			if w>>11&31 == 0b11111 && w>>29&1 == 0 {
				continue
			}
		case 0x0f000000, 0x5f000000:
			opc, u := w>>12&15, w>>29&1
			if c.mask == 0x9fc00400 || c.mask == 0xdfc00400 {
				if opc == 0b1111 { // SUDOT, BFDOT (FEAT_I8MM, BF16): not gemu's
					continue
				}
			} else if !(opc == 0b1110 || u == 1 && (opc == 0b1101 || opc == 0b1111)) {
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
	classes := extClasses
	if v := os.Getenv("FPSIMD_CLASS"); v != "" { // one class, by index
		i, _ := strconv.Atoi(v)
		classes = extClasses[i : i+1]
	}
	runRandomDiff(t, n, "max", maxDecoder, func(r *rand.Rand) uint32 {
		for {
			c := classes[r.Intn(len(classes))]
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

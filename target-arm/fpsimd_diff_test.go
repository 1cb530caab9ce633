package arm

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Differential test: each template instruction runs over many register inputs
// (NaNs, infinities, denormals, boundary integers, random bits) and FPCR settings
// (all rounding modes, FZ, DN) under qemu-aarch64, and through decodeFPSIMD on a
// State; V0-V3, X0-X3, FPSR and NZCV must agree. Register convention of the
// templates: destination v0/x0, sources v1, v2, v3 / x1, x2.

const (
	diffInSize  = 112 // q0-q3, x0-x3, fpcr, nzcv
	diffOutSize = 128 // q0-q3, x0-x3, fpsr, nzcv, insn word, pad
)

var fpsimdTemplates = []string{
	// Scalar FP arithmetic
	"fadd s0, s1, s2", "fadd d0, d1, d2", "fsub s0, s1, s2", "fsub d0, d1, d2",
	"fmul s0, s1, s2", "fmul d0, d1, d2", "fdiv s0, s1, s2", "fdiv d0, d1, d2",
	"fnmul s0, s1, s2", "fnmul d0, d1, d2",
	"fmax s0, s1, s2", "fmin d0, d1, d2", "fmaxnm s0, s1, s2", "fminnm d0, d1, d2",
	"fmadd s0, s1, s2, s3", "fmadd d0, d1, d2, d3", "fmsub s0, s1, s2, s3", "fmsub d0, d1, d2, d3",
	"fnmadd s0, s1, s2, s3", "fnmadd d0, d1, d2, d3", "fnmsub s0, s1, s2, s3", "fnmsub d0, d1, d2, d3",
	"fabs s0, s1", "fneg d0, d1", "fsqrt s0, s1", "fsqrt d0, d1", "fmov s0, s1", "fmov d0, d1",
	"frintn s0, s1", "frintp d0, d1", "frintm s0, s1", "frintz d0, d1", "frinta s0, s1", "frintx d0, d1",
	"frinti s0, s1", "frinti d0, d1", "frintx s0, s1", "frinta d0, d1",
	"fcvt d0, s1", "fcvt s0, d1", "fcvt h0, s1", "fcvt h0, d1", "fcvt s0, h1", "fcvt d0, h1",
	"fcmp s1, s2", "fcmpe d1, d2", "fcmp d1, #0.0", "fcmpe s1, #0.0",
	"fccmp s1, s2, #0x5, eq", "fccmpe d1, d2, #0xa, lt", "fcsel s0, s1, s2, gt", "fcsel d0, d1, d2, vs",
	"fmov s0, #1.0", "fmov d0, #-0.125", "fmov s0, #31.0", "fmov d0, #0.1875",
	// FP <-> integer
	"fmov w0, s1", "fmov x0, d1", "fmov s0, w1", "fmov d0, x1", "fmov x0, v1.d[1]", "fmov v0.d[1], x1",
	"fmov s0, wzr", "fmov x0, v1.d[1]",
	"fcvtzs w0, s1", "fcvtzs x0, d1", "fcvtzu w0, d1", "fcvtzu x0, s1", "fcvtns w0, s1", "fcvtnu x0, d1",
	"fcvtms x0, s1", "fcvtmu w0, d1", "fcvtps w0, d1", "fcvtpu x0, s1", "fcvtas x0, d1", "fcvtau w0, s1",
	"fcvtzs w0, s1, #5", "fcvtzs x0, d1, #52", "fcvtzu w0, d1, #32", "fcvtzu x0, s1, #1",
	"scvtf s0, w1", "scvtf d0, x1", "ucvtf s0, x1", "ucvtf d0, w1", "scvtf s0, x1", "ucvtf s0, w1",
	"scvtf d0, w1, #7", "ucvtf s0, x1, #64", "scvtf s0, x1, #33", "ucvtf d0, w1, #32",
	// AdvSIMD FP vector
	"fadd v0.4s, v1.4s, v2.4s", "fadd v0.2d, v1.2d, v2.2d", "fsub v0.2s, v1.2s, v2.2s", "fmul v0.4s, v1.4s, v2.4s",
	"fdiv v0.2d, v1.2d, v2.2d", "fmla v0.4s, v1.4s, v2.4s", "fmls v0.2d, v1.2d, v2.2d", "fabd v0.4s, v1.4s, v2.4s",
	"fmax v0.4s, v1.4s, v2.4s", "fminnm v0.2d, v1.2d, v2.2d", "fmaxp v0.4s, v1.4s, v2.4s", "faddp v0.2d, v1.2d, v2.2d",
	"fminnmp v0.4s, v1.4s, v2.4s", "fmulx v0.4s, v1.4s, v2.4s", "fcmeq v0.4s, v1.4s, v2.4s", "fcmge v0.2d, v1.2d, v2.2d",
	"fcmgt v0.4s, v1.4s, v2.4s", "facge v0.4s, v1.4s, v2.4s", "facgt v0.2d, v1.2d, v2.2d",
	"frecps v0.4s, v1.4s, v2.4s", "frsqrts v0.2d, v1.2d, v2.2d", "frecpe v0.4s, v1.4s", "frsqrte v0.2d, v1.2d",
	"frecpe d0, d1", "frsqrte s0, s1", "frecps s0, s1, s2", "fabd d0, d1, d2", "fcmgt s0, s1, s2",
	"fabs v0.4s, v1.4s", "fneg v0.2d, v1.2d", "fsqrt v0.4s, v1.4s", "frintn v0.4s, v1.4s", "frintm v0.2d, v1.2d",
	"frintp v0.4s, v1.4s", "frintz v0.2s, v1.2s", "frinta v0.2d, v1.2d", "frinti v0.4s, v1.4s", "frintx v0.2d, v1.2d",
	"fcvtzs v0.4s, v1.4s", "fcvtzu v0.2d, v1.2d", "fcvtns v0.4s, v1.4s", "fcvtau v0.4s, v1.4s", "fcvtms v0.2d, v1.2d",
	"fcvtpu v0.4s, v1.4s", "scvtf v0.4s, v1.4s", "ucvtf v0.2d, v1.2d", "scvtf v0.2d, v1.2d, #3", "fcvtzu v0.4s, v1.4s, #10",
	"fcvtzs d0, d1", "fcvtnu s0, s1", "scvtf d0, d1", "ucvtf s0, s1, #4",
	"fcmeq v0.4s, v1.4s, #0.0", "fcmge v0.2d, v1.2d, #0.0", "fcmgt v0.4s, v1.4s, #0.0", "fcmle v0.4s, v1.4s, #0.0",
	"fcmlt v0.2d, v1.2d, #0.0", "fcmeq d0, d1, #0.0",
	"fcvtl v0.2d, v1.2s", "fcvtl2 v0.4s, v1.8h", "fcvtn v0.2s, v1.2d", "fcvtn2 v0.8h, v1.4s", "fcvtxn v0.2s, v1.2d",
	"fcvtxn s0, d1",
	"fmla v0.4s, v1.4s, v2.s[3]", "fmls v0.2d, v1.2d, v2.d[1]", "fmul v0.2s, v1.2s, v2.s[1]", "fmul d0, d1, v2.d[1]",
	"fmla s0, s1, v2.s[2]", "fmulx v0.4s, v1.4s, v2.s[0]",
	"fmaxv s0, v1.4s", "fminv s0, v1.4s", "fmaxnmv s0, v1.4s", "fminnmv s0, v1.4s",
	"faddp s0, v1.2s", "faddp d0, v1.2d", "fmaxp d0, v1.2d", "fminnmp s0, v1.2s",
	"fmov v0.4s, #2.5", "fmov v0.2d, #-1.0", "fmov v0.2s, #0.5",
	// Immediates, copies, permutes
	"movi v0.16b, #0xab", "movi v0.4s, #0x12, lsl #8", "movi v0.8h, #0x34, lsl #8", "movi v0.2d, #0xff00ff0000ff00ff",
	"movi d0, #0xff000000000000ff", "movi v0.2s, #0x56, msl #16", "mvni v0.4s, #0x78, lsl #24", "mvni v0.4h, #0x9a",
	"orr v0.4s, #0x11, lsl #16", "bic v0.8h, #0x22", "orr v0.2s, #0x44", "bic v0.4s, #0xff, lsl #8",
	"mvni v0.2s, #0x12, msl #8",
	"dup v0.16b, v1.b[5]", "dup v0.8h, v1.h[7]", "dup v0.2s, v1.s[1]", "dup v0.2d, v1.d[1]",
	"dup v0.16b, w1", "dup v0.4h, w1", "dup v0.4s, w1", "dup v0.2d, x1", "dup v0.8b, wzr",
	"ins v0.b[9], w1", "ins v0.h[3], w1", "ins v0.s[2], w1", "ins v0.d[1], x1",
	"ins v0.b[3], v1.b[14]", "ins v0.s[1], v1.s[3]", "ins v0.d[0], v1.d[1]",
	"umov w0, v1.b[13]", "umov w0, v1.h[5]", "umov w0, v1.s[3]", "umov x0, v1.d[1]",
	"smov w0, v1.b[6]", "smov x0, v1.h[2]", "smov x0, v1.s[1]", "smov w0, v1.h[7]",
	"mov b0, v1.b[7]", "mov h0, v1.h[3]", "mov s0, v1.s[2]", "mov d0, v1.d[1]",
	"ext v0.16b, v1.16b, v2.16b, #3", "ext v0.8b, v1.8b, v2.8b, #7", "ext v0.16b, v1.16b, v2.16b, #15",
	"tbl v0.16b, {v1.16b}, v3.16b", "tbl v0.8b, {v1.16b, v2.16b}, v3.8b", "tbx v0.16b, {v1.16b}, v3.16b",
	"tbx v0.8b, {v1.16b, v2.16b}, v3.8b", "tbl v0.16b, {v1.16b, v2.16b, v3.16b}, v2.16b",
	"zip1 v0.16b, v1.16b, v2.16b", "zip2 v0.8h, v1.8h, v2.8h", "zip1 v0.2s, v1.2s, v2.2s", "zip2 v0.2d, v1.2d, v2.2d",
	"uzp1 v0.16b, v1.16b, v2.16b", "uzp2 v0.4s, v1.4s, v2.4s", "uzp1 v0.4h, v1.4h, v2.4h",
	"trn1 v0.8b, v1.8b, v2.8b", "trn2 v0.4s, v1.4s, v2.4s", "trn1 v0.8h, v1.8h, v2.8h",
	"rev16 v0.16b, v1.16b", "rev32 v0.8h, v1.8h", "rev32 v0.16b, v1.16b", "rev64 v0.4s, v1.4s", "rev64 v0.8b, v1.8b",
	// Integer vector
	"cnt v0.16b, v1.16b", "cnt v0.8b, v1.8b", "not v0.16b, v1.16b", "rbit v0.8b, v1.8b",
	"clz v0.4s, v1.4s", "cls v0.8h, v1.8h", "clz v0.16b, v1.16b",
	"addv b0, v1.16b", "addv h0, v1.4h", "addv s0, v1.4s", "umaxv b0, v1.8b", "uminv h0, v1.8h", "smaxv s0, v1.4s",
	"sminv b0, v1.16b", "uaddlv h0, v1.16b", "uaddlv d0, v1.4s", "saddlv s0, v1.8h",
	"addp v0.16b, v1.16b, v2.16b", "addp v0.2d, v1.2d, v2.2d", "addp d0, v1.2d", "umaxp v0.4s, v1.4s, v2.4s",
	"sminp v0.8b, v1.8b, v2.8b", "umaxp v0.16b, v1.16b, v2.16b", "uminp v0.8h, v1.8h, v2.8h", "smaxp v0.4h, v1.4h, v2.4h",
	"sminp v0.4s, v1.4s, v2.4s", "addp v0.8h, v1.8h, v2.8h", "addp v0.2s, v1.2s, v2.2s", "umaxp v0.8b, v1.8b, v2.8b",
	"shrn v0.4h, v1.4s, #1", "shrn v0.2s, v1.2d, #32", "shrn2 v0.16b, v1.8h, #8", "shrn v0.8b, v1.8h, #4",
	"add v0.16b, v1.16b, v2.16b", "add v0.2d, v1.2d, v2.2d", "sub v0.8h, v1.8h, v2.8h", "sub d0, d1, d2", "add d0, d1, d2",
	"mul v0.4s, v1.4s, v2.4s", "mul v0.8b, v1.8b, v2.8b", "mla v0.8h, v1.8h, v2.8h", "mls v0.4s, v1.4s, v2.4s",
	"pmul v0.16b, v1.16b, v2.16b",
	"mul v0.8h, v1.8h, v2.h[5]", "mla v0.4s, v1.4s, v2.s[3]", "mls v0.4h, v1.4h, v2.h[2]",
	"and v0.16b, v1.16b, v2.16b", "orr v0.8b, v1.8b, v2.8b", "eor v0.16b, v1.16b, v2.16b", "bic v0.16b, v1.16b, v2.16b",
	"orn v0.16b, v1.16b, v2.16b", "bsl v0.16b, v1.16b, v2.16b", "bit v0.16b, v1.16b, v2.16b", "bif v0.8b, v1.8b, v2.8b",
	"cmeq v0.16b, v1.16b, v2.16b", "cmgt v0.4s, v1.4s, v2.4s", "cmge v0.8h, v1.8h, v2.8h", "cmhi v0.2d, v1.2d, v2.2d",
	"cmhs v0.16b, v1.16b, v2.16b", "cmtst v0.4s, v1.4s, v2.4s", "cmeq d0, d1, d2", "cmhi d0, d1, d2",
	"cmeq v0.16b, v1.16b, #0", "cmgt v0.4s, v1.4s, #0", "cmge v0.8h, v1.8h, #0", "cmle v0.2d, v1.2d, #0",
	"cmlt v0.16b, v1.16b, #0", "cmlt d0, d1, #0", "abs v0.4s, v1.4s", "neg v0.2d, v1.2d", "abs d0, d1", "neg v0.16b, v1.16b",
	"umax v0.16b, v1.16b, v2.16b", "umin v0.8h, v1.8h, v2.8h", "smax v0.4s, v1.4s, v2.4s", "smin v0.8b, v1.8b, v2.8b",
	"uabd v0.16b, v1.16b, v2.16b", "sabd v0.4s, v1.4s, v2.4s", "uaba v0.8h, v1.8h, v2.8h", "saba v0.16b, v1.16b, v2.16b",
	"uhadd v0.16b, v1.16b, v2.16b", "srhadd v0.4s, v1.4s, v2.4s", "shsub v0.8h, v1.8h, v2.8h",
	"sqadd v0.16b, v1.16b, v2.16b", "uqadd v0.8h, v1.8h, v2.8h", "sqsub v0.4s, v1.4s, v2.4s", "uqsub v0.2d, v1.2d, v2.2d",
	"sqadd d0, d1, d2", "uqadd b0, b1, b2", "sqsub h0, h1, h2", "sqadd v0.2d, v1.2d, v2.2d", "uqadd d0, d1, d2",
	"ushl v0.16b, v1.16b, v2.16b", "sshl v0.4s, v1.4s, v2.4s", "ushl d0, d1, d2", "sshl v0.2d, v1.2d, v2.2d",
	"urshl v0.8h, v1.8h, v2.8h", "srshl v0.4s, v1.4s, v2.4s", "uqshl v0.16b, v1.16b, v2.16b", "sqshl v0.4s, v1.4s, v2.4s",
	"sqrshl v0.8h, v1.8h, v2.8h", "uqrshl v0.2d, v1.2d, v2.2d",
	"sqdmulh v0.8h, v1.8h, v2.8h", "sqrdmulh v0.4s, v1.4s, v2.4s", "sqdmulh v0.4s, v1.4s, v2.s[1]",
	"suqadd v0.16b, v1.16b", "usqadd v0.4s, v1.4s", "sqabs v0.8h, v1.8h", "sqneg v0.16b, v1.16b", "sqabs d0, d1",
	"shl v0.16b, v1.16b, #3", "shl v0.2d, v1.2d, #63", "shl d0, d1, #17", "ushr v0.4s, v1.4s, #32", "ushr v0.8h, v1.8h, #5",
	"sshr v0.16b, v1.16b, #8", "sshr v0.2d, v1.2d, #1", "sshr d0, d1, #64", "ushr d0, d1, #12",
	"usra v0.4s, v1.4s, #9", "ssra v0.8h, v1.8h, #16", "urshr v0.16b, v1.16b, #3", "srshr v0.2d, v1.2d, #64",
	"ursra v0.4s, v1.4s, #31", "srsra d0, d1, #7",
	"sli v0.4s, v1.4s, #7", "sri v0.8h, v1.8h, #16", "sli d0, d1, #0", "sri v0.16b, v1.16b, #1", "sri d0, d1, #64",
	"shrn v0.8b, v1.8h, #3", "shrn2 v0.8h, v1.4s, #16", "rshrn v0.2s, v1.2d, #32", "rshrn2 v0.16b, v1.8h, #1",
	"sqshrn v0.4h, v1.4s, #4", "uqshrn v0.8b, v1.8h, #2", "sqrshrn2 v0.4s, v1.2d, #30", "uqrshrn v0.4h, v1.4s, #15",
	"sqshrun v0.8b, v1.8h, #3", "sqrshrun v0.2s, v1.2d, #1", "sqshrn h0, s1, #3", "uqshrn s0, d1, #31",
	"sqshl v0.16b, v1.16b, #3", "uqshl v0.4s, v1.4s, #31", "sqshlu v0.8h, v1.8h, #4", "sqshl d0, d1, #60",
	"uqshl b0, b1, #1",
	"ushll v0.8h, v1.8b, #0", "sshll v0.4s, v1.4h, #3", "ushll2 v0.2d, v1.4s, #31", "sshll2 v0.8h, v1.16b, #7",
	"shll v0.8h, v1.8b, #8", "shll2 v0.2d, v1.4s, #32",
	"xtn v0.8b, v1.8h", "xtn2 v0.8h, v1.4s", "xtn v0.2s, v1.2d", "sqxtn v0.8b, v1.8h", "uqxtn v0.4h, v1.4s",
	"sqxtn2 v0.4s, v1.2d", "sqxtun v0.8b, v1.8h", "uqxtn2 v0.16b, v1.8h", "sqxtn b0, h1", "uqxtn s0, d1", "sqxtun h0, s1",
	"uaddl v0.8h, v1.8b, v2.8b", "saddl2 v0.4s, v1.8h, v2.8h", "uaddw v0.2d, v1.2d, v2.2s", "saddw2 v0.8h, v1.8h, v2.16b",
	"usubl v0.4s, v1.4h, v2.4h", "ssubl2 v0.2d, v1.4s, v2.4s", "usubw v0.8h, v1.8h, v2.8b", "ssubw2 v0.4s, v1.4s, v2.8h",
	"umull v0.8h, v1.8b, v2.8b", "smull2 v0.2d, v1.4s, v2.4s", "umlal v0.4s, v1.4h, v2.4h", "smlal2 v0.8h, v1.16b, v2.16b",
	"umlsl v0.2d, v1.2s, v2.2s", "smlsl v0.4s, v1.4h, v2.4h", "uabdl v0.8h, v1.8b, v2.8b", "sabal2 v0.4s, v1.8h, v2.8h",
	"pmull v0.8h, v1.8b, v2.8b", "pmull2 v0.8h, v1.16b, v2.16b",
	"addhn v0.8b, v1.8h, v2.8h", "raddhn2 v0.8h, v1.4s, v2.4s", "subhn v0.2s, v1.2d, v2.2d", "rsubhn v0.4h, v1.4s, v2.4s",
	"umull v0.4s, v1.4h, v2.h[7]", "smull2 v0.2d, v1.4s, v2.s[3]", "umlal2 v0.4s, v1.8h, v2.h[1]", "smlsl v0.2d, v1.2s, v2.s[2]",
	"uaddlp v0.8h, v1.16b", "saddlp v0.2d, v1.4s", "uadalp v0.4s, v1.8h", "sadalp v0.4h, v1.8b",
	"urecpe v0.4s, v1.4s", "ursqrte v0.2s, v1.2s",
	// Cryptographic Extension
	"aese v0.16b, v1.16b", "aesd v0.16b, v1.16b", "aesmc v0.16b, v1.16b", "aesimc v0.16b, v1.16b",
	"sha1c q0, s1, v2.4s", "sha1p q0, s1, v2.4s", "sha1m q0, s1, v2.4s", "sha1su0 v0.4s, v1.4s, v2.4s",
	"sha1h s0, s1", "sha1su1 v0.4s, v1.4s", "sha256h q0, q1, v2.4s", "sha256h2 q0, q1, v2.4s",
	"sha256su0 v0.4s, v1.4s", "sha256su1 v0.4s, v1.4s, v2.4s", "pmull v0.1q, v1.1d, v2.1d", "pmull2 v0.1q, v1.2d, v2.2d",
}

// diffValue returns an interesting 64-bit chunk: FP specials of each width,
// boundary integers, or random bits.
func diffValue(r *rand.Rand) uint64 {
	d64 := []uint64{0, 1 << 63, 0x7ff0000000000000, 0xfff0000000000000, 0x7ff8000000000001, 0xfff4000000000002,
		0x7ff0000000000003, 0x0000000000000001, 0x800fffffffffffff, 0x0010000000000000, 0x7fefffffffffffff,
		0x3ff0000000000000, 0xbff8000000000000, 0x4330000000000001, 0x43e0000000000000, 0xc3e0000000000000,
		0x41dfffffffc00000, 0x41f0000000000000, 0x3fe0000000000000, 0x4004000000000000, 0x380fffffe0000000,
		0x3690000000000000, 0x47efffffe0000000, 0x47efffffefffffff, 0x3e9fffffffffffff, 0x0008000000000000}
	s32 := []uint32{0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00001, 0xffa00002, 0x7f800003, 0x00000001,
		0x807fffff, 0x00800000, 0x7f7fffff, 0x3f800000, 0xbfc00000, 0x4b000001, 0x4f000000, 0xcf000000,
		0x3f000000, 0x40200000, 0x40400000, 0xc0500000, 0x5f000000, 0x33800000, 0x387fc000, 0x477ff000, 0x00400000}
	rs := func() uint32 {
		if r.Intn(3) == 0 {
			return r.Uint32()
		}
		// random normal-ish single around 1
		return uint32(0x3c000000+r.Intn(0x7000000)) | uint32(r.Intn(2))<<31
	}
	sparse := func(bits uint) uint64 {
		// a few set bits, so that exact results and ties are common
		var m uint64
		for i := r.Intn(4); i > 0; i-- {
			m |= 1 << uint(r.Intn(int(bits)))
		}
		if r.Intn(4) == 0 {
			m |= 1<<bits - 1<<uint(r.Intn(int(bits)))
		}
		return m & (1<<bits - 1)
	}
	switch r.Intn(10) {
	case 8: // double with any exponent
		return uint64(r.Intn(2))<<63 | uint64(r.Intn(2048))<<52 | sparse(52)
	case 9: // singles with any exponent
		a := uint64(r.Intn(2))<<31 | uint64(r.Intn(256))<<23 | sparse(23)
		b := uint64(r.Intn(2))<<31 | uint64(r.Intn(256))<<23 | sparse(23)
		return a | b<<32
	case 0:
		return d64[r.Intn(len(d64))]
	case 1, 2:
		pick := func() uint64 {
			if r.Intn(2) == 0 {
				return uint64(s32[r.Intn(len(s32))])
			}
			return uint64(rs())
		}
		return pick() | pick()<<32
	case 3:
		// random double around 1, or with integer/half-integer values
		if r.Intn(2) == 0 {
			v := float64(r.Intn(2000)-1000) / 2
			return math.Float64bits(v)
		}
		return uint64(0x3e00000000000000+r.Int63n(0x0800000000000000)) | uint64(r.Intn(2))<<63
	case 4:
		// random single lanes with integer/half-integer values
		a := math.Float32bits(float32(r.Intn(200)-100) / 2)
		b := math.Float32bits(float32(r.Intn(200)-100) / 4)
		return uint64(a) | uint64(b)<<32
	case 5:
		ints := []uint64{0, 1, ^uint64(0), 1 << 63, 1<<63 - 1, 0x80000000, 0x7fffffff, 0xffffffff, 0x8000, 0x7fff,
			0x80, 0x7f, 0xff, 0x20000000000001, 0x8000800080008000, 0x7f7f80807fff8000, 0x0102030405060708}
		return ints[r.Intn(len(ints))]
	case 6:
		// small shift counts / table indices per byte
		var v uint64
		for i := 0; i < 8; i++ {
			v |= uint64(byte(r.Intn(80)-40)) << (8 * i)
		}
		return v
	}
	return r.Uint64()
}

func diffFPCR(r *rand.Rand) uint64 {
	v := uint64(r.Intn(4)) << 22
	if r.Intn(2) == 0 {
		v = 0
	}
	if r.Intn(5) == 0 {
		v |= fpcrFZ
	}
	if r.Intn(5) == 0 {
		v |= fpcrDN
	}
	if r.Intn(8) == 0 {
		v |= fpcrAHP
	}
	if r.Intn(5) == 0 {
		v |= fpcrFZ16 // FP16 arithmetic only (fp16.go)
	}
	return v
}

func buildDiffProgram(t *testing.T, dir string, templates []string, perT int, in []byte, march string) string {
	var sb strings.Builder
	sb.WriteString(".text\n.global _start\n_start:\n")
	sb.WriteString("\tadrp x19, indata\n\tadd x19, x19, :lo12:indata\n\tadrp x20, outdata\n\tadd x20, x20, :lo12:outdata\n")
	for i, tpl := range templates {
		fmt.Fprintf(&sb, "\tmov x21, #%d\nt%d_loop:\n\tbl load_in\nt%d_insn:\n\t%s\n\tbl store_out\n", perT, i, i, tpl)
		fmt.Fprintf(&sb, "\tldr w9, t%d_insn\n\tstr w9, [x20, #-16]\n\tadd x19, x19, #%d\n\tsubs x21, x21, #1\n\tb.ne t%d_loop\n", i, diffInSize, i)
	}
	total := len(templates) * perT * diffOutSize
	fmt.Fprintf(&sb, `	mov x0, #1
	adrp x1, outdata
	add x1, x1, :lo12:outdata
	ldr x2, =%d
	mov x8, #64
	svc #0
	mov x0, #0
	mov x8, #93
	svc #0
load_in:
	ldp q0, q1, [x19]
	ldp q2, q3, [x19, #32]
	ldp x0, x1, [x19, #64]
	ldp x2, x3, [x19, #80]
	ldr x9, [x19, #96]
	msr fpcr, x9
	msr fpsr, xzr
	ldr x9, [x19, #104]
	msr nzcv, x9
	ret
store_out:
	mrs x9, nzcv
	mrs x10, fpsr
	stp q0, q1, [x20]
	stp q2, q3, [x20, #32]
	stp x0, x1, [x20, #64]
	stp x2, x3, [x20, #80]
	stp x10, x9, [x20, #96]
	add x20, x20, #%d
	ret
.ltorg
.data
.balign 16
indata:
	.incbin "in.bin"
.bss
.balign 16
outdata:
	.skip %d
`, total, diffOutSize, total)
	src := filepath.Join(dir, "t.S")
	if err := os.WriteFile(src, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "in.bin"), in, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "t")
	cmd := exec.Command("aarch64-linux-gnu-gcc", "-march="+march, "-static", "-nostdlib", "-o", bin, src)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("assembling: %v\n%s", err, out)
	}
	return bin
}

func TestFPSIMDDifferential(t *testing.T) {
	runTemplateDiff(t, fpsimdTemplates, "armv8-a+crypto", decodeFPSIMD)
}

// runTemplateDiff runs each template of templates (assembled for march) over random
// inputs under qemu-aarch64 (its default CPU, max) and through dec; FPSIMD_ONLY
// selects the templates containing a string, FPSIMD_SEED the inputs.
func runTemplateDiff(t *testing.T, all []string, march string, dec func(uint32) func(*State)) {
	for _, tool := range []string{"qemu-aarch64", "aarch64-linux-gnu-gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	perT := 200
	if testing.Short() {
		perT = 16
	}
	templates := all
	if f := os.Getenv("FPSIMD_ONLY"); f != "" {
		templates = nil
		for _, tpl := range all {
			if strings.Contains(tpl, f) {
				templates = append(templates, tpl)
			}
		}
	}
	seed := int64(1)
	if v := os.Getenv("FPSIMD_SEED"); v != "" {
		fmt.Sscan(v, &seed)
	}
	r := rand.New(rand.NewSource(seed))
	in := make([]byte, len(templates)*perT*diffInSize)
	for i := 0; i < len(templates)*perT; i++ {
		b := in[i*diffInSize:]
		for j := 0; j < 8; j++ { // q0-q3
			binary.LittleEndian.PutUint64(b[8*j:], diffValue(r))
		}
		for j := 8; j < 12; j++ { // x0-x3
			binary.LittleEndian.PutUint64(b[8*j:], diffValue(r))
		}
		binary.LittleEndian.PutUint64(b[96:], diffFPCR(r))
		binary.LittleEndian.PutUint64(b[104:], uint64(r.Intn(16))<<28)
	}
	dir := t.TempDir()
	bin := buildDiffProgram(t, dir, templates, perT, in, march)
	out, err := exec.Command("qemu-aarch64", bin).Output()
	if err != nil {
		t.Fatalf("qemu-aarch64: %v", err)
	}
	if len(out) != len(templates)*perT*diffOutSize {
		t.Fatalf("qemu output %d bytes, want %d", len(out), len(templates)*perT*diffOutSize)
	}
	fails := 0
	for ti, tpl := range templates {
		tplFails := 0
		for k := 0; k < perT; k++ {
			i := ti*perT + k
			ib := in[i*diffInSize:]
			ob := out[i*diffOutSize:]
			word := binary.LittleEndian.Uint32(ob[112:])
			var s State
			for j := 0; j < 4; j++ {
				s.V[j] = [2]uint64{binary.LittleEndian.Uint64(ib[16*j:]), binary.LittleEndian.Uint64(ib[16*j+8:])}
				s.X[j] = binary.LittleEndian.Uint64(ib[64+8*j:])
			}
			s.FPCR = binary.LittleEndian.Uint64(ib[96:])
			s.NZCV = binary.LittleEndian.Uint64(ib[104:])
			in0 := s
			f := dec(word)
			if f == nil {
				t.Errorf("%s (%08x): not decoded", tpl, word)
				fails++
				break
			}
			f(&s)
			var want State
			for j := 0; j < 4; j++ {
				want.V[j] = [2]uint64{binary.LittleEndian.Uint64(ob[16*j:]), binary.LittleEndian.Uint64(ob[16*j+8:])}
				want.X[j] = binary.LittleEndian.Uint64(ob[64+8*j:])
			}
			want.FPSR = binary.LittleEndian.Uint64(ob[96:])
			want.NZCV = binary.LittleEndian.Uint64(ob[104:])
			// The generic Go path of the crypto instructions (which the host
			// instructions replace where the host has them) must agree too.
			hc := hostCrypto
			hostCrypto.aes, hostCrypto.pmull, hostCrypto.sha = false, false, false
			gen := in0
			dec(word)(&gen)
			hostCrypto = hc
			if gen.V != s.V {
				t.Errorf("%s (%08x): generic path V0=%016x:%016x, host path V0=%016x:%016x", tpl, word, gen.V[0][1], gen.V[0][0], s.V[0][1], s.V[0][0])
				fails++
			}
			got := s
			got.FPCR = 0
			got.FPSR &= 0x0800009f
			want.FPSR &= 0x0800009f
			if got.V != want.V || [4]uint64(got.X[:4]) != [4]uint64(want.X[:4]) || got.FPSR != want.FPSR || got.NZCV != want.NZCV {
				tplFails++
				fails++
				if tplFails <= 3 {
					t.Errorf("%s (%08x) fpcr=%#x nzcv=%#x\n in  V0=%016x:%016x V1=%016x:%016x V2=%016x:%016x V3=%016x:%016x X0-2=%x,%x,%x\n got V0=%016x:%016x X0=%x FPSR=%#x NZCV=%#x\n want V0=%016x:%016x X0=%x FPSR=%#x NZCV=%#x",
						tpl, word, in0.FPCR, in0.NZCV,
						in0.V[0][1], in0.V[0][0], in0.V[1][1], in0.V[1][0], in0.V[2][1], in0.V[2][0], in0.V[3][1], in0.V[3][0], in0.X[0], in0.X[1], in0.X[2],
						got.V[0][1], got.V[0][0], got.X[0], got.FPSR, got.NZCV,
						want.V[0][1], want.V[0][0], want.X[0], want.FPSR, want.NZCV)
				}
			}
		}
		if fails > 200 {
			t.Fatal("too many failures")
		}
	}
	t.Logf("%d templates x %d inputs, %d mismatches", len(templates), perT, fails)
}

// Random-encoding test: random words from the whole FP/AdvSIMD encoding space
// (Rd, Rn < 16 so the harness registers x19/x20 survive) run under
// qemu-aarch64 -cpu cortex-a57 with a SIGILL handler that skips the
// instruction. decodeFPSIMD must return nil exactly for the words QEMU treats
// as UNDEF and otherwise produce the same registers and flags.

const (
	rndInSize  = 656 // q0-q31, x0-x15, fpcr, nzcv
	rndOutSize = 672 // q0-q31, x0-x15, fpsr, nzcv, sigill, pad
)

func buildRandomProgram(t *testing.T, dir string, words []uint32, in []byte) string {
	var sb strings.Builder
	sb.WriteString(`.text
.global _start
_start:
	sub sp, sp, #32
	adr x9, handler
	str x9, [sp]
	mov x9, #4
	str x9, [sp, #8]
	stp xzr, xzr, [sp, #16]
	mov x0, #4
	mov x1, sp
	mov x2, #0
	mov x3, #8
	mov x8, #134
	svc #0
	adrp x19, indata
	add x19, x19, :lo12:indata
	adrp x20, outdata
	add x20, x20, :lo12:outdata
`)
	for _, w := range words {
		fmt.Fprintf(&sb, "\tbl load_in\n\t.inst 0x%08x\n\tbl store_out\n", w)
	}
	total := len(words) * rndOutSize
	sb.WriteString(`	mov x0, #1
	adrp x1, outdata
	add x1, x1, :lo12:outdata
	ldr x2, =` + fmt.Sprint(total) + `
	mov x8, #64
	svc #0
	mov x0, #0
	mov x8, #93
	svc #0
handler:
	ldr x9, [x2, #440]
	add x9, x9, #4
	str x9, [x2, #440]
	adrp x9, sigflag
	add x9, x9, :lo12:sigflag
	mov x10, #1
	str x10, [x9]
	ret
load_in:
`)
	for i := 0; i < 32; i += 2 {
		fmt.Fprintf(&sb, "\tldp q%d, q%d, [x19, #%d]\n", i, i+1, 16*i)
	}
	sb.WriteString("\tldr x9, [x19, #640]\n\tmsr fpcr, x9\n\tmsr fpsr, xzr\n\tldr x9, [x19, #648]\n\tmsr nzcv, x9\n")
	sb.WriteString("\tadd x19, x19, #512\n")
	for i := 0; i < 16; i += 2 {
		fmt.Fprintf(&sb, "\tldp x%d, x%d, [x19, #%d]\n", i, i+1, 8*i)
	}
	sb.WriteString("\tadd x19, x19, #144\n\tret\nstore_out:\n\tadd x20, x20, #512\n")
	for i := 0; i < 16; i += 2 {
		fmt.Fprintf(&sb, "\tstp x%d, x%d, [x20, #%d]\n", i, i+1, 8*i)
	}
	sb.WriteString(`	mrs x9, nzcv
	mrs x10, fpsr
	stp x10, x9, [x20, #128]
	adrp x9, sigflag
	add x9, x9, :lo12:sigflag
	ldr x10, [x9]
	str xzr, [x9]
	str x10, [x20, #144]
	sub x20, x20, #512
`)
	for i := 0; i < 32; i += 2 {
		fmt.Fprintf(&sb, "\tstp q%d, q%d, [x20, #%d]\n", i, i+1, 16*i)
	}
	fmt.Fprintf(&sb, "\tadd x20, x20, #%d\n\tret\n", rndOutSize)
	fmt.Fprintf(&sb, ".ltorg\n.data\n.balign 16\nsigflag:\n\t.quad 0\n.balign 16\nindata:\n\t.incbin \"in.bin\"\n.bss\n.balign 16\noutdata:\n\t.skip %d\n", total)
	src := filepath.Join(dir, "r.S")
	if err := os.WriteFile(src, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "in.bin"), in, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "r")
	cmd := exec.Command("aarch64-linux-gnu-gcc", "-static", "-nostdlib", "-o", bin, src)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("assembling: %v\n%s", err, out)
	}
	return bin
}

func TestFPSIMDRandomEncodings(t *testing.T) {
	n := 40000
	if testing.Short() {
		n = 3000
	}
	runRandomDiff(t, n, "cortex-a57", decodeFPSIMD, func(r *rand.Rand) uint32 {
		w := r.Uint32()
		w = w&^0x0e000210 | 0x0e000000 // bits 27:25 = 111; Rd, Rn < 16
		if r.Intn(4) != 0 {
			w &^= 1 << 31 // most allocated encodings have bit 31 clear
		}
		return w
	})
}

// runRandomDiff runs n words from gen (Rd, Rn < 16) with random inputs under
// qemu-aarch64 -cpu cpu and through dec: dec must return nil exactly for the words
// that raise SIGILL there and otherwise give the same registers and flags.
// FPSIMD_KEEP=DIR keeps the program (r, r.S, in.bin) in DIR.
func runRandomDiff(t *testing.T, n int, cpu string, dec func(uint32) func(*State), gen func(*rand.Rand) uint32) {
	for _, tool := range []string{"qemu-aarch64", "aarch64-linux-gnu-gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	seed := int64(2)
	if v := os.Getenv("FPSIMD_SEED"); v != "" {
		fmt.Sscan(v, &seed)
	}
	r := rand.New(rand.NewSource(seed))
	words := make([]uint32, n)
	in := make([]byte, n*rndInSize)
	for i := range words {
		words[i] = gen(r)
		b := in[i*rndInSize:]
		for j := 0; j < 64+16; j++ {
			binary.LittleEndian.PutUint64(b[8*j:], diffValue(r))
		}
		binary.LittleEndian.PutUint64(b[640:], diffFPCR(r))
		binary.LittleEndian.PutUint64(b[648:], uint64(r.Intn(16))<<28)
	}
	dir := t.TempDir()
	bin := buildRandomProgram(t, dir, words, in)
	if d := os.Getenv("FPSIMD_KEEP"); d != "" {
		exec.Command("cp", bin, filepath.Join(dir, "in.bin"), filepath.Join(dir, "r.S"), d).Run()
	}
	out, err := exec.Command("qemu-aarch64", "-cpu", cpu, bin).Output()
	if err != nil {
		t.Fatalf("qemu-aarch64: %v", err)
	}
	if len(out) != n*rndOutSize {
		t.Fatalf("qemu output %d bytes, want %d", len(out), n*rndOutSize)
	}
	fails, undef, ran := 0, 0, 0
	for i, w := range words {
		ib := in[i*rndInSize:]
		ob := out[i*rndOutSize:]
		sigill := binary.LittleEndian.Uint64(ob[656:]) != 0
		f := dec(w)
		if sigill {
			undef++
			if f != nil {
				fails++
				t.Errorf("%08x: UNDEF on qemu but decoded", w)
			}
			continue
		}
		if f == nil {
			fails++
			t.Errorf("%08x: executes on qemu but not decoded", w)
			continue
		}
		var s State
		for j := 0; j < 32; j++ {
			s.V[j] = [2]uint64{binary.LittleEndian.Uint64(ib[16*j:]), binary.LittleEndian.Uint64(ib[16*j+8:])}
		}
		for j := 0; j < 16; j++ {
			s.X[j] = binary.LittleEndian.Uint64(ib[512+8*j:])
		}
		s.FPCR = binary.LittleEndian.Uint64(ib[640:])
		s.NZCV = binary.LittleEndian.Uint64(ib[648:])
		in0 := s
		f(&s)
		ran++
		var want State
		for j := 0; j < 32; j++ {
			want.V[j] = [2]uint64{binary.LittleEndian.Uint64(ob[16*j:]), binary.LittleEndian.Uint64(ob[16*j+8:])}
		}
		for j := 0; j < 16; j++ {
			want.X[j] = binary.LittleEndian.Uint64(ob[512+8*j:])
		}
		want.FPSR = binary.LittleEndian.Uint64(ob[640:]) & 0x0800009f
		want.NZCV = binary.LittleEndian.Uint64(ob[648:])
		got := s
		got.FPCR = 0
		got.FPSR &= 0x0800009f
		for j := 16; j < 31; j++ {
			got.X[j] = 0
		}
		if got != want {
			fails++
			if fails <= 40 {
				var diffs []string
				for j := 0; j < 32; j++ {
					if got.V[j] != want.V[j] {
						diffs = append(diffs, fmt.Sprintf("V%d in=%016x:%016x got=%016x:%016x want=%016x:%016x", j,
							in0.V[j][1], in0.V[j][0], got.V[j][1], got.V[j][0], want.V[j][1], want.V[j][0]))
					}
				}
				for j := 0; j < 16; j++ {
					if got.X[j] != want.X[j] {
						diffs = append(diffs, fmt.Sprintf("X%d in=%x got=%x want=%x", j, in0.X[j], got.X[j], want.X[j]))
					}
				}
				if got.FPSR != want.FPSR || got.NZCV != want.NZCV {
					diffs = append(diffs, fmt.Sprintf("FPSR got=%#x want=%#x NZCV in=%#x got=%#x want=%#x", got.FPSR, want.FPSR, in0.NZCV, got.NZCV, want.NZCV))
				}
				rn, rm := (w>>5)&31, (w>>16)&31
				t.Errorf("%08x fpcr=%#x Vn=%016x:%016x Vm=%016x:%016x: %s", w, in0.FPCR,
					in0.V[rn][1], in0.V[rn][0], in0.V[rm][1], in0.V[rm][0], strings.Join(diffs, "; "))
			}
		}
	}
	t.Logf("%d words: %d UNDEF, %d executed, %d mismatches", n, undef, ran, fails)
}

// Allocation test: every value of bits 31:10 of the group (Rd, Rn random below
// 16) runs under qemu-aarch64 -cpu cortex-a57; decodeFPSIMD must return nil
// exactly for the words that raise SIGILL there.
func TestFPSIMDAllocationMatchesQEMU(t *testing.T) {
	for _, tool := range []string{"qemu-aarch64", "aarch64-linux-gnu-gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	step := uint32(1)
	if testing.Short() {
		step = 13
	}
	r := rand.New(rand.NewSource(5))
	var words []uint32
	for hi := uint32(0); hi < 1<<19; hi += step {
		w := (hi>>15)<<28 | 7<<25 | (hi&0x7fff)<<10 | uint32(r.Intn(1<<10))&^0x210
		words = append(words, w)
	}
	var sb strings.Builder
	sb.WriteString(`.text
.global _start
_start:
	sub sp, sp, #32
	adrp x9, handler
	add x9, x9, :lo12:handler
	str x9, [sp]
	mov x9, #4
	str x9, [sp, #8]
	stp xzr, xzr, [sp, #16]
	mov x0, #4
	mov x1, sp
	mov x2, #0
	mov x3, #8
	mov x8, #134
	svc #0
	adrp x20, outdata
	add x20, x20, :lo12:outdata
	mov x19, #0
`)
	// Each word is followed by "strb w19, [x20], #1; mov x19, #0", emitted as
	// machine code: assembling a million source lines takes too long.
	code := make([]byte, 12*len(words))
	for i, w := range words {
		binary.LittleEndian.PutUint32(code[12*i:], w)
		binary.LittleEndian.PutUint32(code[12*i+4:], 0x38001693)
		binary.LittleEndian.PutUint32(code[12*i+8:], 0xd2800013)
	}
	sb.WriteString("\t.incbin \"code.bin\"\n")
	fmt.Fprintf(&sb, `	mov x0, #1
	adrp x1, outdata
	add x1, x1, :lo12:outdata
	ldr x2, =%d
	mov x8, #64
	svc #0
	mov x0, #0
	mov x8, #93
	svc #0
handler:
	ldr x9, [x2, #440]
	add x9, x9, #4
	str x9, [x2, #440]
	mov x9, #1
	str x9, [x2, #336]
	ret
.ltorg
.bss
outdata:
	.skip %d
`, len(words), len(words))
	dir := t.TempDir()
	src := filepath.Join(dir, "a.S")
	if err := os.WriteFile(src, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "code.bin"), code, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "a")
	cmd := exec.Command("aarch64-linux-gnu-gcc", "-static", "-nostdlib", "-o", bin, src)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("assembling: %v\n%s", err, out)
	}
	out, err := exec.Command("qemu-aarch64", "-cpu", "cortex-a57", bin).Output()
	if err != nil {
		t.Fatalf("qemu-aarch64: %v", err)
	}
	if len(out) != len(words) {
		t.Fatalf("qemu output %d bytes, want %d", len(out), len(words))
	}
	fails, undef := 0, 0
	for i, w := range words {
		sigill := out[i] != 0
		if sigill {
			undef++
		}
		if got := decodeFPSIMD(w) != nil; got == sigill {
			fails++
			if fails <= 30 {
				t.Errorf("%08x: qemu UNDEF=%v, decoded=%v", w, sigill, got)
			}
		}
	}
	t.Logf("%d words, %d UNDEF on qemu, %d disagreements", len(words), undef, fails)
}

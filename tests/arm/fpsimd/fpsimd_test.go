// Package fpsimd holds end-to-end tests of A64 FP/AdvSIMD data processing: small
// programs run through the whole gemu engine (translation, FPCR/FPSR system
// registers, loads and stores) and under qemu-aarch64, and must leave the same
// registers, flags and memory. Instruction-level coverage lives next to the code
// in target-arm/fpsimd*_test.go.
package fpsimd

import (
	"testing"

	armtest "gemu/tests/arm"
)

const scratchBase = `
	adrp x19, scratch
	add x19, x19, :lo12:scratch
`

// Scalar arithmetic under each rounding mode, FZ and DN, with FPSR read back
// after every step.
func TestRoundingModesEndToEnd(t *testing.T) {
	armtest.Check(t, scratchBase+`
	mov x20, #0
1:
	lsl x1, x20, #22
	orr x1, x1, x21
	msr fpcr, x1
	msr fpsr, xzr
	fmov d0, #1.0
	fmov d1, #3.0
	fdiv d2, d0, d1
	fsqrt d3, d2
	fmadd d4, d2, d3, d1
	fcvt s5, d4
	fcvt h6, d2
	fcvtzs x2, d4
	fcvtns w3, s5
	scvtf s7, x2
	ldr x4, =0x000fffffffffffff
	fmov d8, x4
	fmul d9, d8, d2
	fadd d10, d8, d9
	frinti d11, d4
	frintx s12, s5
	mrs x5, fpsr
	stp d2, d3, [x19], #16
	stp d4, d9, [x19], #16
	stp d10, d11, [x19], #16
	stp s5, s12, [x19], #8
	str h6, [x19], #8
	stp x2, x3, [x19], #16
	str x5, [x19], #8
	add x20, x20, #1
	cmp x20, #4
	b.ne 1b
	cbnz x21, 2f
	mov x21, #0x3000000 // FZ and DN
	mov x20, #0
	b 1b
2:
	msr fpcr, xzr
`)
}

// A strlen-like scan (cmeq/shrn/fmov/umaxp as glibc does it) over the scratch
// buffer, and a dot product with fmla, fed by vector loads.
func TestStringAndVectorLoopsEndToEnd(t *testing.T) {
	armtest.Check(t, scratchBase+`
	strb wzr, [x19, #1000]
	mov x1, x19
1:
	ldr q0, [x1], #16
	cmeq v1.16b, v0.16b, #0
	umaxp v2.16b, v1.16b, v1.16b
	fmov x2, d2
	cbz x2, 1b
	shrn v3.8b, v1.8h, #4
	fmov x3, d3
	rbit x3, x3
	clz x3, x3
	sub x1, x1, #16
	sub x1, x1, x19
	add x4, x1, x3, lsr #2 // string length
	movi v10.2d, #0
	movi v11.2d, #0
	mov x5, x19
	mov x6, #32
2:
	ldp q4, q5, [x5], #32
	ushll v6.8h, v4.8b, #0
	ushll2 v7.8h, v4.16b, #0
	uxtl v8.4s, v6.4h
	ucvtf v8.4s, v8.4s
	uxtl2 v9.4s, v7.8h
	scvtf v9.4s, v9.4s
	fmla v10.4s, v8.4s, v9.4s
	fmls v11.4s, v9.4s, v8.s[2]
	addv b12, v5.16b
	uaddlv h13, v5.16b
	subs x6, x6, #1
	b.ne 2b
	faddp v14.4s, v10.4s, v11.4s
	faddp s15, v14.2s
	fcvtzu w7, s15
	tbl v16.16b, {v4.16b, v5.16b}, v0.16b
	ext v17.16b, v4.16b, v5.16b, #5
	zip1 v18.8h, v4.8h, v5.8h
	uzp2 v19.4s, v4.4s, v5.4s
	trn1 v20.16b, v4.16b, v5.16b
	rev64 v21.16b, v4.16b
	cnt v22.16b, v5.16b
	str q22, [x19, #2048]
`)
}

// FP comparisons feeding branches, conditional compares and selects.
func TestCompareAndSelectEndToEnd(t *testing.T) {
	armtest.Check(t, scratchBase+`
	ldr x1, =0x7ff8000000000000 // quiet NaN
	fmov d1, x1
	fmov d2, #2.0
	fmov d3, #-0.5
	mov x2, #0
	fcmp d2, d3
	b.le 1f
	add x2, x2, #1
1:
	fcmp d1, d2
	b.vs 2f
	add x2, x2, #2
2:
	fccmp d2, d3, #0x4, mi
	cset x3, eq
	fcsel d4, d2, d3, ge
	fcmpe d3, #0.0
	fcsel s5, s2, s3, lt
	fmaxnm d6, d1, d3
	fmin d7, d1, d3
	mrs x4, fpsr
	fcmgt v8.2d, v2.2d, v3.2d
	fcmeq v9.4s, v3.4s, #0.0
	facge d10, d2, d3
`)
}

// The Cryptographic Extension instructions Linux uses for AES and SHA-256.
func TestCryptoEndToEnd(t *testing.T) {
	armtest.Check(t, scratchBase+`
	ld1 {v0.16b, v1.16b, v2.16b, v3.16b}, [x19]
	aese v0.16b, v1.16b
	aesmc v0.16b, v0.16b
	aesd v2.16b, v1.16b
	aesimc v2.16b, v2.16b
	sha256h q4, q5, v3.4s
	sha256h2 q5, q4, v3.4s
	sha256su0 v6.4s, v1.4s
	sha256su1 v6.4s, v2.4s, v3.4s
	sha1c q7, s1, v2.4s
	sha1h s8, s3
	pmull v9.1q, v0.1d, v1.1d
	pmull2 v10.1q, v2.2d, v3.2d
	st1 {v0.16b, v1.16b, v2.16b, v3.16b}, [x19]
`)
}

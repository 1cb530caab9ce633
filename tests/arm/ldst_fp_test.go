package armtest

import "testing"

// TestFPLoadStoreForms covers the SIMD&FP single-register and pair addressing forms the
// native backend's frontend lowers to IR (target-arm lower.go: lowerLdSt with a vector
// register, emitLdStV, lowerPairV, LDR literal) against qemu-aarch64: every access
// size in the unscaled, pre/post-index, register-offset (each extend, scaled or not)
// and literal forms, with loads into registers holding stale high halves (which must
// be cleared), and pairs of S and D registers with write-back.
func TestFPLoadStoreForms(t *testing.T) {
	Check(t, `
	adrp x19, scratch
	add x19, x19, :lo12:scratch
	ldr q0, [x19, #128]
	mov v1.16b, v0.16b
	mov v2.16b, v0.16b
	mov v3.16b, v0.16b
	mov v4.16b, v0.16b
	mov v5.16b, v0.16b
	mov v6.16b, v0.16b
	mov v7.16b, v0.16b
	ldur b1, [x19, #5]
	ldur h2, [x19, #-0]
	ldur s3, [x19, #9]
	ldur d4, [x19, #17]
	add x20, x19, #256
	ldr b5, [x20, #1]!
	ldr h6, [x20], #6
	ldr s7, [x20, #-4]!
	mov x21, #3
	mov x22, #-2
	ldr b8, [x19, x21]
	ldr h9, [x19, x21, lsl #1]
	ldr s10, [x20, w22, sxtw #2]
	ldr d11, [x20, w21, uxtw]
	ldr q12, [x20, x22, sxtx #4]
	ldr d13, [x19, w21, uxtw #3]
	ldr s14, 1f
	ldr d15, 1f
	ldr q16, 1f
	b 2f
	.balign 16
1:	.quad 0x3ff0000000000000, 0x40091eb851eb851f
2:
	mov v17.16b, v0.16b
	mov v18.16b, v0.16b
	ldp s17, s18, [x19, #40]
	ldp d19, d20, [x20, #-16]!
	ldp s21, s22, [x20], #8
	ldnp d23, d24, [x19, #72]
	add x23, x19, #2048
	str b1, [x23, #1]
	stur h2, [x23, #3]
	str s3, [x23, #7]!
	str d4, [x23], #9
	str q0, [x23, x21, lsl #4]
	str d15, [x23, w22, sxtw #3]
	str s16, [x23, x21]
	str h12, [x23, w21, uxtw #1]
	str b13, [x23, x22]
	stp s14, s15, [x23, #24]
	stp d16, d17, [x23, #-32]!
	stp s18, s19, [x23], #16
	stnp d20, d21, [x23, #40]
	mov x24, x20
	mov x25, x23
`)
}

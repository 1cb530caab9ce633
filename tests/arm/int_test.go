package armtest

import (
	"fmt"
	"strings"
	"testing"
)

// interesting operand values: zero, one, sign boundaries of both widths, all-ones and
// mixed patterns.
var values = []uint64{
	0, 1, 2, 0x7f, 0x80, 0xff, 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000,
	0x7fffffffffffffff, 0x8000000000000000, 0xffffffffffffffff, 0x123456789abcdef0,
	0xfedcba9876543210, 0x00000000ffff0000,
}

// table builds snippets that run each instruction template on every operand pair,
// storing the result register x2 and the flags after it into scratch (16 bytes per
// case, 256 cases per program). Templates use x0, x1 as inputs and x2 as output;
// initial NZCV alternates between 0 and all set, so carry-in and condition users see
// both.
func table(templates []string, vals []uint64) []string {
	var progs []string
	var b strings.Builder
	n := 0
	flush := func() {
		if n > 0 {
			progs = append(progs, "\tadrp x19, scratch\n\tadd x19, x19, :lo12:scratch\n"+b.String()+"\tb 1f\n\t.ltorg\n1:\n")
		}
		b.Reset()
		n = 0
	}
	for _, tmpl := range templates {
		for i, a := range vals {
			for j, bv := range vals {
				if n == ScratchSize/16 {
					flush()
				}
				fl := uint64(0)
				if (i+j)&1 == 1 {
					fl = 0xf0000000
				}
				fmt.Fprintf(&b, "\tldr x0, =%#x\n\tldr x1, =%#x\n\tldr x2, =%#x\n\tmsr nzcv, x2\n\tmov x2, #0x5a5a\n", a, bv, fl)
				fmt.Fprintf(&b, "\t%s\n\tmrs x3, nzcv\n\tstp x2, x3, [x19], #16\n", tmpl)
				n++
			}
		}
	}
	flush()
	return progs
}

func checkTable(t *testing.T, templates []string, vals []uint64) {
	t.Helper()
	for i, p := range table(templates, vals) {
		t.Run(fmt.Sprint(i), func(t *testing.T) { Check(t, p) })
	}
}

func TestFlags(t *testing.T) {
	checkTable(t, []string{
		"adds x2, x0, x1", "adds w2, w0, w1", "subs x2, x0, x1", "subs w2, w0, w1",
		"adcs x2, x0, x1", "adcs w2, w0, w1", "sbcs x2, x0, x1", "sbcs w2, w0, w1",
		"adc x2, x0, x1", "sbc w2, w0, w1", "ands x2, x0, x1", "bics w2, w0, w1",
		"ccmp x0, x1, #5, eq", "ccmn w0, w1, #10, cs", "ccmp x0, #7, #2, lt", "ccmn x0, #31, #15, hi",
		"cmp x0, x1, lsl #3", "cmn w0, w1, asr #7", "adds x2, x0, #0xfff", "subs w2, w0, #1, lsl #12",
		"tst x0, #0xff00", "negs x2, x1", "ngcs w2, w1", "adds x2, x0, w1, sxtb #2",
	}, values)
}

func TestShiftExtend(t *testing.T) {
	checkTable(t, []string{
		"add x2, x0, x1, lsl #17", "add w2, w0, w1, lsr #31", "sub x2, x0, x1, asr #63",
		"orr x2, x0, x1, ror #13", "eon w2, w0, w1, ror #3", "orn x2, x0, x1, lsr #1",
		"add x2, x0, w1, uxtb", "add x2, x0, w1, uxth #1", "add x2, x0, w1, uxtw #2",
		"add x2, x0, x1, uxtx #3", "sub x2, x0, w1, sxtb #4", "sub x2, x0, w1, sxth",
		"add x2, x0, w1, sxtw #1", "sub w2, w0, w1, sxtb #3", "lslv x2, x0, x1", "lsrv w2, w0, w1",
		"asrv x2, x0, x1", "rorv w2, w0, w1", "eor x2, x0, #0x5555555555555555", "and w2, w0, #0x3c3c3c3c",
		"orr x2, x0, #0xffff0000ffff0000", "orr w2, w0, #0x00ff00ff", "eor w2, w1, #0x80000001", "mov x2, #-2", "movk x2, #0x1234, lsl #48", "movn w2, #0x1234, lsl #16",
	}, values[:12])
}

func TestBitfield(t *testing.T) {
	checkTable(t, []string{
		"ubfx x2, x0, #3, #17", "sbfx x2, x1, #60, #4", "ubfiz w2, w0, #5, #9", "sbfiz x2, x1, #40, #20",
		"bfi x2, x0, #8, #16", "bfxil w2, w1, #4, #12", "bfm x2, x0, #60, #10", "sbfm w2, w1, #31, #2",
		"ubfm x2, x0, #63, #62", "lsl x2, x0, #13", "lsr w2, w1, #7", "asr x2, x1, #33",
		"sxtb x2, w0", "sxth w2, w1", "sxtw x2, w0", "uxtb w2, w1", "uxth w2, w0",
		"extr x2, x0, x1, #17", "extr w2, w0, w1, #31", "ror x2, x0, #9", "bfi x2, xzr, #4, #40",
		"sbfm x2, x0, #0, #0", "ubfm w2, w1, #0, #30", "bfm w2, w0, #31, #31",
	}, values[:12])
}

func TestMulDiv(t *testing.T) {
	checkTable(t, []string{
		"mul x2, x0, x1", "mul w2, w0, w1", "madd x2, x0, x1, x0", "msub w2, w0, w1, w1",
		"smulh x2, x0, x1", "umulh x2, x0, x1", "smull x2, w0, w1", "umull x2, w0, w1",
		"smaddl x2, w0, w1, x1", "umsubl x2, w0, w1, x0", "smnegl x2, w0, w1", "mneg x2, x0, x1",
		"sdiv x2, x0, x1", "sdiv w2, w0, w1", "udiv x2, x0, x1", "udiv w2, w0, w1",
	}, values)
}

func TestBitOps(t *testing.T) {
	checkTable(t, []string{
		"clz x2, x0", "clz w2, w1", "cls x2, x0", "cls w2, w1", "rbit x2, x0", "rbit w2, w1",
		"rev x2, x0", "rev w2, w1", "rev16 x2, x0", "rev16 w2, w1", "rev32 x2, x0",
		"crc32b w2, w0, w1", "crc32h w2, w0, w1", "crc32w w2, w0, w1", "crc32x w2, w0, x1",
		"crc32cb w2, w0, w1", "crc32ch w2, w0, w1", "crc32cw w2, w0, w1", "crc32cx w2, w0, x1",
	}, values[:12])
}

func TestCondSelect(t *testing.T) {
	var tm []string
	for _, cond := range []string{"eq", "ne", "cs", "cc", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt", "gt", "le", "al"} {
		tm = append(tm, "cmp x0, x1\n\tcsel x2, x0, x1, "+cond, "cmn w0, w1\n\tcsinc w2, w0, w1, "+cond)
	}
	tm = append(tm, "csinv x2, x0, x1, ne", "csneg w2, w0, w1, ge", "cset x2, hs", "csetm w2, lt", "cinc x2, x0, vs")
	checkTable(t, tm, values[:8])
}

func TestBranches(t *testing.T) {
	var tm []string
	for _, br := range []string{"cbz x0", "cbnz w1", "tbz x0, #63", "tbnz w1, #31", "tbz x0, #0", "tbnz x1, #1",
		"b.eq", "b.ne", "b.hi", "b.ls", "b.ge", "b.lt", "b.gt", "b.le", "b.vs", "b.mi"} {
		sep := ", "
		if strings.HasPrefix(br, "b.") {
			sep = " "
		}
		tm = append(tm, "cmp x0, x1\n\tmov x2, #1\n\t"+br+sep+"7f\n\tmov x2, #2\n7:")
	}
	tm = append(tm, "adr x4, 8f\n\tmov x2, #3\n\tblr x4\n\tadd x2, x2, #100\n\tb 9f\n8:\tadd x2, x2, x0\n\tret\n9:")
	checkTable(t, tm, values[:8])
}

func TestLoadStore(t *testing.T) {
	Check(t, `
	adrp x19, scratch
	add x19, x19, :lo12:scratch
	ldrb w0, [x19, #1]
	ldrsb x1, [x19, #200]
	ldrsb w2, [x19, #129]
	ldrh w3, [x19, #6]
	ldrsh x4, [x19, #254]
	ldrsh w5, [x19, #254]
	ldr w6, [x19, #12]
	ldrsw x7, [x19, #252]
	ldr x8, [x19, #64]
	ldur x9, [x19, #3]
	ldur w10, [x19, #-0]
	add x20, x19, #512
	ldur x11, [x20, #-17]
	ldr x12, [x20, #8]!
	ldr x13, [x20], #-24
	mov x21, #5
	ldr x14, [x19, x21, lsl #3]
	ldrb w15, [x19, w21, uxtw]
	mov x22, #-3
	ldrh w16, [x20, w22, sxtw #1]
	ldr w17, [x20, x22, sxtx #2]
	ldr x18, [x19, x21]
	ldp x23, x24, [x19, #32]
	ldp w25, w26, [x19, #-0]
	ldpsw x27, x28, [x19, #248]
	add x29, x19, #1024
	ldp x0, x1, [x29, #-16]!
	ldp w2, w3, [x29], #40
	ldr x4, 1f
	ldr w5, 1f
	ldrsw x6, 1f
	prfm pldl1keep, [x19]
	prfm pstl2strm, [x19, #64]
	b 2f
1:	.quad 0x8123456789abcdef
2:
	add x30, x19, #2048
	strb w8, [x30]
	strh w8, [x30, #3]
	str w8, [x30, #9]
	str x8, [x30, #21]
	stur x9, [x30, #-7]
	str x9, [x30, #64]!
	str x12, [x30], #16
	strb w13, [x30, x21]
	strh w13, [x30, w21, uxtw #1]
	str w13, [x30, x21, lsl #2]
	str x13, [x30, w22, sxtw #3]
	stp x8, x9, [x30, #16]
	stp w8, w9, [x30, #32]!
	stp x12, x13, [x30], #48
	stnp x0, x1, [x30]
	ldnp x20, x21, [x30]
	sttrb w8, [x30, #5]
	ldtr x22, [x30, #-8]
	ldtrsh w29, [x30, #6]
	mov x8, x30
	mov x9, x29
`)
}

func TestExclusives(t *testing.T) {
	Check(t, `
	adrp x19, scratch
	add x19, x19, :lo12:scratch
	add x24, x19, #8
	add x25, x19, #16
	add x26, x19, #64
	add x27, x19, #80
	add x28, x19, #96
	ldxr x0, [x19]
	add x0, x0, #1
	stxr w1, x0, [x19]
	ldaxr w2, [x24]
	add w2, w2, #3
	stlxr w3, w2, [x19]
	stxr w4, w2, [x25]
	add x20, x19, #33
	add x21, x19, #35
	ldxrb w5, [x20]
	stxrb w6, w5, [x21]
	ldxrb w5, [x21]
	add w5, w5, #9
	stxrb w6, w5, [x21]
	add x20, x19, #38
	add x21, x19, #42
	ldaxrh w7, [x20]
	stlxrh w8, w7, [x21]
	ldxrh w7, [x21]
	eor w7, w7, #0xff
	stlxrh w8, w7, [x21]
	ldxp x9, x10, [x26]
	add x9, x9, x10
	stxp w11, x9, x10, [x26]
	ldaxp w12, w13, [x27]
	stlxp w14, w13, w12, [x27]
	ldxr x15, [x28]
	clrex
	stxr w16, x15, [x28]
	add x20, x19, #104
	ldar x17, [x20]
	add x20, x19, #112
	stlr x17, [x20]
	add x20, x19, #120
	ldarb w18, [x20]
	add x20, x19, #122
	stlrh w18, [x20]
	add x20, x19, #124
	ldar w21, [x20]
	add x20, x19, #127
	stlrb w21, [x20]
	add x20, x19, #128
1:	ldxr w22, [x20]
	add w22, w22, #1
	stxr w23, w22, [x20]
	cbnz w23, 1b
	mov x20, #0
`)
}

func TestSIMDLoadStore(t *testing.T) {
	Check(t, `
	adrp x19, scratch
	add x19, x19, :lo12:scratch
	ldr b0, [x19, #3]
	ldr h1, [x19, #6]
	ldr s2, [x19, #12]
	ldr d3, [x19, #24]
	ldr q4, [x19, #32]
	ldur q5, [x19, #7]
	ldr q6, [x19, #16]!
	ldr d7, [x19], #-16
	ldp s8, s9, [x19, #40]
	ldp d10, d11, [x19, #48]
	ldp q12, q13, [x19, #64]
	ld1 {v14.16b}, [x19]
	ld1 {v15.8b, v16.8b}, [x19]
	ld2 {v17.4s, v18.4s}, [x19]
	ld3 {v19.8h, v20.8h, v21.8h}, [x19]
	ld4 {v22.16b, v23.16b, v24.16b, v25.16b}, [x19]
	add x20, x19, #256
	ld1 {v26.2d, v27.2d, v28.2d}, [x20], #48
	ld1r {v29.4s}, [x20]
	ld2r {v30.8b, v31.8b}, [x20], #2
	ld1 {v0.s}[1], [x20]
	ld2 {v1.h, v2.h}[5], [x20], x21
	ld3 {v3.b, v4.b, v5.b}[14], [x20]
	ld4 {v6.d, v7.d, v8.d, v9.d}[1], [x20]
	ld1 {v10.4h, v11.4h, v12.4h, v13.4h}, [x20], #32
	ld4r {v14.2s, v15.2s, v16.2s, v17.2s}, [x20]
	add x21, x19, #1024
	st1 {v4.16b}, [x21], #16
	st2 {v6.4s, v7.4s}, [x21], #32
	st3 {v22.8b, v23.8b, v24.8b}, [x21]
	st4 {v1.8h, v2.8h, v3.8h, v4.8h}, [x21], #64
	st1 {v5.2d, v6.2d}, [x21]
	st1 {v7.d}[1], [x21], #8
	st3 {v8.s, v9.s, v10.s}[2], [x21], #12
	st4 {v11.b, v12.b, v13.b, v14.b}[9], [x21]
	str q20, [x21, #64]
	str d21, [x21, #80]!
	str s22, [x21], #4
	str h23, [x21]
	str b24, [x21, #3]
	stp q25, q26, [x21, #16]
	stp d27, d28, [x21, #-32]!
	stp s29, s30, [x21, #48]
	mov x22, #40
	str q31, [x21, x22]
	ldr q0, [x19, x22, lsl #4]
	ldp q1, q2, [x19, #32]!
	ldp q3, q4, [x19], #-32
	ldnp q5, q6, [x19, #16]
	stp q7, q8, [x21, #-64]!
	stp q9, q10, [x21], #32
	stnp q11, q12, [x21, #96]
	ldp q13, q14, [x21, #-32]
`)
}

// TestSIMDLoadStoreMultiEdges: LD1/ST1 to several registers unaligned, across a
// page boundary (the element path) and within a page (the 64-bit host fast path),
// with register numbers wrapping from v31 to v0.
func TestSIMDLoadStoreMultiEdges(t *testing.T) {
	Check(t, `
	adrp x19, scratch
	add x19, x19, :lo12:scratch
	add x20, x19, #2048
	add x20, x20, #4095
	and x20, x20, #~4095
	sub x21, x20, #7
	ld1 {v0.16b, v1.16b}, [x21]
	ld1 {v2.2d}, [x21]
	sub x22, x20, #40
	ld1 {v3.4s, v4.4s, v5.4s}, [x22], #48
	add x23, x19, #101
	ld1 {v6.2d, v7.2d}, [x23]
	mov x24, #3
	ld1 {v8.8b, v9.8b, v10.8b}, [x23], x24
	ld1 {v31.16b, v0.16b}, [x23]
	ld1 {v11.1d}, [x23], #8
	st1 {v0.16b, v1.16b}, [x21]
	add x25, x19, #333
	st1 {v6.2d, v7.2d, v8.2d, v9.2d}, [x25], #64
	st1 {v10.4h}, [x25]
	st1 {v3.8b, v4.8b}, [x22]
	st1 {v30.4s, v31.4s, v0.4s}, [x25], #48
	sub x22, x20, #3
	st1 {v5.2s}, [x22]
`)
}

// TestSelfModifyingCode patches an instruction that has already been translated and
// runs it again, with the cache maintenance Linux uses; code and data share pages
// (-N), so ordinary stores also exercise the code-page write path.
func TestSelfModifyingCode(t *testing.T) {
	Check(t, `
	bl 5f
	mov x4, x2
	adr x0, 5f
	ldr w1, =0xd2800542
	str w1, [x0]
	dc cvau, x0
	dsb ish
	ic ivau, x0
	dsb ish
	isb
	bl 5f
	mov x5, x2
	adr x0, 4f
	mov x6, #0
3:	ldr w1, [x0]
	add w1, w1, #0x400 // imm12 += 1
	str w1, [x0]
	ic ivau, x0
	isb
4:	add x6, x6, #0
	cmp x6, #5
	b.lt 3b
	mov x30, #0
	b 6f
	.ltorg
5:	mov x2, #7
	ret
6:
`, "-Wl,-N")
}

// TestSystemEL0 covers the system instructions a Linux process may execute.
func TestSystemEL0(t *testing.T) {
	Check(t, `
	adrp x19, scratch
	add x19, x19, :lo12:scratch
	add x0, x19, #200
	dc zva, x0
	mrs x1, ctr_el0
	mrs x2, dczid_el0
	ldr x5, =0x1122334455667788
	msr tpidr_el0, x5
	mrs x4, tpidr_el0
	mrs x6, cntfrq_el0
	mov x7, #0x00c00000
	msr fpcr, x7
	mrs x8, fpcr
	msr fpcr, xzr
	mov x9, #0xf0000000
	msr nzcv, x9
	mrs x10, nzcv
	nop
	yield
	dmb ish
	dsb sy
	isb
	clrex
	prfm pldl1keep, [x19]
	dc cvau, x19
	dc civac, x19
	ic ivau, x19
	mov x0, #0
	b 1f
	.ltorg
1:
`)
}

// TestCompareBranch covers compare or ADDS/SUBS + B.cond pairs (translated fused) for
// every condition, both widths, register and immediate forms.
func TestCompareBranch(t *testing.T) {
	var tm []string
	for _, cond := range []string{"eq", "ne", "cs", "cc", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt", "gt", "le"} {
		for _, cmp := range []string{"cmp x0, x1", "cmp w0, w1", "cmn x0, x1", "cmp x0, #5", "cmn w0, #1", "cmp x0, #1, lsl #12",
			"subs x0, x0, #1", "adds w0, w0, #3", "subs x3, x0, x1", "adds w3, w0, w1"} {
			tm = append(tm, "mov x2, #1\n\t"+cmp+"\n\tb."+cond+" 7f\n\tmov x2, #2\n7:\tadd x2, x2, x3\n\tadd x2, x2, x0")
		}
	}
	checkTable(t, tm, values[:8])
}

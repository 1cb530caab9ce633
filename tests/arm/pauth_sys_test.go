package armtest

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	arm "gemu/target-arm"
)

// ARMv8.3 pointer authentication at EL1 with fixed keys, against qemu-system-aarch64
// -cpu max (QEMU 7.2: FEAT_PAuth with the architected QARMA5 algorithm): the exact
// PACs of PACIA/PACIB/PACDA/PACDB/PACGA for pointers with and without TBI, in both
// VA ranges, canonical and not; AUT* of the signed pointers (the original back) and
// of wrongly signed ones (the error code in the extension bits); XPACI/XPACD; the
// hint forms; the authenticated branches and returns, ERETAA and LDRAA/LDRAB with
// writeback; keys disabled through SCTLR_EL1.EnXX; the key registers read back.

// pauthKeys are the fixed keys (lo, hi) of APIA, APIB, APDA, APDB and APGA.
var pauthKeys = [5][2]uint64{
	{0x0123456789abcdef, 0xfedcba9876543210},
	{0x84be85ce9804e94b, 0xec2802d4e0a488e9},
	{0x13198a2e03707344, 0x243f6a8885a308d3},
	{0xa4093822299f31d0, 0x082efa98ec4e6c89},
	{0x452821e638d01377, 0xbe5466cf34e90c6c},
}

var pauthKeyRegs = [5]string{"apia", "apib", "apda", "apdb", "apga"}

// pauthTCRs: T0SZ 25 and T1SZ 25 with TBI0; T0SZ 16, T1SZ 39 with TBI1 and TBID1
// (TBI for data only in the upper range); T0SZ 30, T1SZ 20, TBI0, TBID0, TBI1.
var pauthTCRs = []uint64{
	25 | 25<<16 | 1<<37,
	16 | 39<<16 | 1<<38 | 1<<52,
	30 | 20<<16 | 1<<37 | 1<<51 | 1<<38,
}

func pauthProgram() string {
	var b strings.Builder
	ld := func(reg string, v uint64) { fmt.Fprintf(&b, "\tldr %s, =%#x\n", reg, v) }
	pr := func(reg string) { fmt.Fprintf(&b, "\tmov x0, %s\n\tbl puthex\n", reg) }
	b.WriteString(`
	.arch armv8.3-a
	.text
	.global _start
_start:
	adr x0, stack_top
	mov sp, x0
	adr x0, vectors
	msr vbar_el1, x0
`)
	for i, k := range pauthKeys {
		ld("x0", k[0])
		fmt.Fprintf(&b, "\tmsr %skeylo_el1, x0\n", pauthKeyRegs[i])
		ld("x0", k[1])
		fmt.Fprintf(&b, "\tmsr %skeyhi_el1, x0\n", pauthKeyRegs[i])
	}
	for _, r := range pauthKeyRegs {
		fmt.Fprintf(&b, "\tmrs x0, %skeylo_el1\n\tbl puthex\n\tmrs x0, %skeyhi_el1\n\tbl puthex\n", r, r)
	}
	b.WriteString("\tbl newline\n")
	// SCTLR_EL1: RES1 bits, MMU off, EnIA, EnIB, EnDA, EnDB.
	ld("x0", 0x30d00800|1<<31|1<<30|1<<27|1<<13)
	b.WriteString("\tmsr sctlr_el1, x0\n\tisb\n")

	rng := rand.New(rand.NewSource(83))
	ptrs := []uint64{0, 0x40201234, 0x7fffffffff, 0xffffff8000001000, 0xff00000040201234,
		0x5a00000012345678, 0x0080000000001000, 0xffffffffffffffff, 0x8000000000000000, 0x1234}
	for range 6 {
		ptrs = append(ptrs, rng.Uint64())
	}
	mods := []uint64{0, 0x40201000, rng.Uint64()}
	for _, tcr := range pauthTCRs {
		ld("x0", tcr)
		b.WriteString("\tmsr tcr_el1, x0\n\tisb\n")
		for _, p := range ptrs {
			for mi, m := range mods {
				ld("x20", p)
				ld("x21", m)
				for _, ins := range []string{"pacia", "pacib", "pacda", "pacdb"} {
					aut := "aut" + ins[3:]
					fmt.Fprintf(&b, "\tmov x22, x20\n\t%s x22, x21\n", ins)
					pr("x22")
					fmt.Fprintf(&b, "\tmov x23, x22\n\t%s x23, x21\n", aut)
					pr("x23")
					fmt.Fprintf(&b, "\tmov x23, x22\n\tadd x24, x21, #1\n\t%s x23, x24\n", aut)
					pr("x23")
				}
				if mi == 0 {
					b.WriteString("\tmov x22, x20\n\tpaciza x22\n\tmov x23, x22\n\tautiza x23\n")
					pr("x22")
					pr("x23")
					b.WriteString("\tmov x22, x20\n\tpacdzb x22\n\tmov x23, x22\n\tautdzb x23\n")
					pr("x22")
					pr("x23")
					b.WriteString("\tmov x22, x20\n\txpaci x22\n\tmov x23, x20\n\txpacd x23\n")
					pr("x22")
					pr("x23")
				}
				b.WriteString("\tpacga x22, x20, x21\n")
				pr("x22")
				b.WriteString("\tbl newline\n")
			}
		}
		// Hint forms: PAC/AUT*1716, *SP and *Z, XPACLRI.
		ld("x17", ptrs[1])
		ld("x16", mods[2])
		b.WriteString("\tpacia1716\n\tmov x0, x17\n\tbl puthex\n\tautia1716\n\tmov x0, x17\n\tbl puthex\n")
		b.WriteString("\tpacib1716\n\tmov x0, x17\n\tbl puthex\n\tadd x16, x16, #1\n\tautib1716\n\tmov x0, x17\n\tbl puthex\n")
		for _, h := range [][2]string{{"paciasp", "autiasp"}, {"pacibsp", "autibsp"}, {"paciaz", "autiaz"}, {"pacibz", "autibz"}} {
			ld("x30", ptrs[4])
			fmt.Fprintf(&b, "\t%s\n\tmov x19, x30\n\t%s\n", h[0], h[1])
			pr("x19")
			pr("x30")
		}
		ld("x30", ptrs[4])
		b.WriteString("\tpaciasp\n\txpaclri\n")
		pr("x30")
		b.WriteString("\tbl newline\n")
	}
	// Branches: the signed targets reached, the link registers as written.
	b.WriteString(`
	ldr x0, =(25 | 25 << 16 | 1 << 37)
	msr tcr_el1, x0
	isb
	bl sub_signed
	mov x0, #0x11
	bl puthex
	adr x19, 1f
	mov x1, sp
	pacia x19, x1
	braa x19, x1
	b fail
1:	mov x0, #0x12
	bl puthex
	adr x19, 1f
	pacizb x19
	brabz x19
	b fail
1:	mov x0, #0x13
	bl puthex
	adr x19, sub_plain
	mov x1, #0x77
	pacib x19, x1
	blrab x19, x1
	mov x0, #0x14
	bl puthex
	adr x19, sub_plain
	paciza x19
	blraaz x19
	mov x0, #0x15
	bl puthex
	// LDRAA/LDRAB with and without writeback.
	adr x5, data
	pacdza x5
	mov x6, x5
	ldraa x1, [x6, #8]
	mov x0, x1
	bl puthex
	ldraa x1, [x6, #-8]!
	mov x0, x1
	bl puthex
	adr x0, data
	sub x0, x6, x0
	bl puthex
	adr x5, data
	pacdzb x5
	ldrab x1, [x5, #16]!
	mov x0, x1
	bl puthex
	adr x0, data
	sub x0, x5, x0
	bl puthex
	// ERETAA/ERETAB to EL1h.
	adr x0, 1f
	mov x1, sp
	pacia x0, x1
	msr elr_el1, x0
	mov x0, #0x3c5
	msr spsr_el1, x0
	eretaa
	b fail
1:	mrs x0, elr_el1
	bl puthex
	adr x0, 1f
	mov x1, sp
	pacib x0, x1
	msr elr_el1, x0
	mov x0, #0x3c5
	msr spsr_el1, x0
	eretab
	b fail
1:	mov x0, #0x16
	bl puthex
	bl newline
	// Keys disabled: PAC and AUT leave the pointer alone, PACGA does not.
	ldr x0, =0x30d00800
	msr sctlr_el1, x0
	isb
	ldr x20, =0x40201234
	mov x22, x20
	pacia x22, x21
	mov x0, x22
	bl puthex
	mov x22, x20
	autdb x22, x21
	mov x0, x22
	bl puthex
	mov x30, x20
	paciasp
	mov x0, x30
	bl puthex
	pacga x0, x20, x21
	bl puthex
	bl newline
	ldr x0, =0x84000008
	hvc #0
	b .
sub_signed:
	paciasp
	stp x29, x30, [sp, #-16]!
	mov x0, #0x10
	bl puthex
	ldp x29, x30, [sp], #16
	retaa
sub_plain:
	ret
fail:
	mov x0, #0xbad
	bl puthex
	ldr x0, =0x84000008
	hvc #0
	b .
newline:
	ldr x1, =0x09000000
	mov w2, #'\n'
	str w2, [x1]
	ret
sync:
	mrs x0, esr_el1
	bl puthex
	mrs x0, elr_el1
	bl puthex
	ldr x0, =0x84000008
	hvc #0
	b .
	.ltorg
	.balign 2048
vectors:
	.rept 16
	b sync
	.balign 128
	.endr
	.data
	.balign 16
	.quad 0x1111111111111111
data:
	.quad 0x2222222222222222
	.quad 0x3333333333333333
	.quad 0x4444444444444444
	.balign 16
	.space 4096
stack_top:
`)
	return b.String()
}

// pauthModel is -cpu max, which advertises FEAT_PAuth (ID_AA64ISAR1 APA 1, GPA 1) as
// QEMU 7.2's does.
func pauthModel() *arm.Model {
	m, _ := arm.LookupModel("max")
	return m
}

// TestPAuthAsQEMU compares pauthProgram's transcript on gemu and qemu-system-aarch64.
func TestPAuthAsQEMU(t *testing.T) {
	bin := BuildSys(t, t.TempDir(), pauthProgram())
	m := pauthModel()
	g, err := runSysGemu(bin, 60*time.Second, func(cfg *arm.Config, _ func() *arm.CPU) { cfg.Model = m })
	if err != nil {
		t.Fatalf("gemu: %v (output %q)", err, g)
	}
	q := runSysQEMUCPU(t, bin, 1, "max")
	diffTranscripts(t, g, q)
	if !strings.Contains(q, " 0000000000000016") {
		t.Errorf("QEMU did not get through the branches:\n%s", q)
	}
}

// diffTranscripts reports the lines where gemu's transcript g differs from QEMU's q.
func diffTranscripts(t *testing.T, g, q string) {
	t.Helper()
	if g == q {
		return
	}
	ql, gl := strings.Split(q, "\n"), strings.Split(g, "\n")
	var d []string
	for i := 0; i < max(len(ql), len(gl)) && len(d) < 40; i++ {
		var a, b string
		if i < len(ql) {
			a = ql[i]
		}
		if i < len(gl) {
			b = gl[i]
		}
		if a != b {
			d = append(d, fmt.Sprintf("line %d qemu: %s", i, a), fmt.Sprintf("line %d gemu: %s", i, b))
		}
	}
	t.Errorf("transcripts differ:\n%s", strings.Join(d, "\n"))
}

// pauthA57Program: on the Cortex-A57 (ARMv8.0) the PAC hints are NOPs (X30, X17
// unchanged) and every other pointer authentication instruction, the key registers
// included, is UNDEFINED, on gemu as on qemu-system-aarch64 -cpu cortex-a57. The
// handler prints ESR and the offset of ELR from _start and skips the instruction.
const pauthA57Program = `
	.arch armv8.3-a
	.text
	.global _start
_start:
	adr x0, stack_top
	mov sp, x0
	adr x0, vectors
	msr vbar_el1, x0
	ldr x0, =(0x30d00800 | 1 << 31 | 1 << 30 | 1 << 27 | 1 << 13)
	msr sctlr_el1, x0
	isb
	ldr x30, =0x40201234
	ldr x17, =0x40205678
	ldr x16, =0x99
	paciasp
	pacibsp
	paciaz
	pacibz
	pacia1716
	pacib1716
	autiasp
	autib1716
	xpaclri
	mov x0, x30
	bl puthex
	mov x0, x17
	bl puthex
	ldr x0, =0x40201234
	pacia x0, x1
	autdb x0, x1
	paciza x0
	xpaci x0
	pacga x0, x0, x1
	mrs x0, apiakeylo_el1
	msr apgakeyhi_el1, x0
	ldraa x0, [sp]
	ldrab x0, [sp, #8]!
	braaz x0
	blrab x0, x1
	retaa
	eretab
	mov x0, #0xdd
	bl puthex
	ldr x0, =0x84000008
	hvc #0
	b .
sync:
	mov x20, x30
	mrs x0, esr_el1
	bl puthex
	mrs x0, elr_el1
	adr x1, _start
	sub x0, x0, x1
	bl puthex
	mrs x0, elr_el1
	add x0, x0, #4
	msr elr_el1, x0
	mov x30, x20
	eret
	.ltorg
	.balign 2048
vectors:
	.rept 16
	b sync
	.balign 128
	.endr
	.data
	.balign 16
	.space 4096
stack_top:
`

// TestPAuthA57AsQEMU runs pauthA57Program on gemu's and QEMU's Cortex-A57.
func TestPAuthA57AsQEMU(t *testing.T) {
	bin := BuildSys(t, t.TempDir(), pauthA57Program)
	g := RunSysGemu(t, bin)
	q := runSysQEMUCPU(t, bin, 1, "cortex-a57")
	diffTranscripts(t, g, q)
	if !strings.HasPrefix(q, " 0000000040201234 0000000040205678 0000000002000000") || !strings.Contains(q, " 00000000000000dd") {
		t.Errorf("unexpected QEMU transcript %q", q)
	}
}

// pauthFaultProgram: an authentication failure corrupts the pointer (no FEAT_FPAC:
// AUT itself does not fault), so the branch or load that uses it faults on the
// non-canonical address: BRAA, RETAB, BLRAAZ, LDRAA and LDRAB with wrong modifiers or
// keys, MMU off, TBI0 on then off. The handler prints ESR, ELR and FAR and returns
// to the address in x19.
const pauthFaultProgram = `
	.arch armv8.3-a
	.text
	.global _start
_start:
	adr x0, stack_top
	mov sp, x0
	adr x0, vectors
	msr vbar_el1, x0
	ldr x0, =0x1111
	msr apiakeylo_el1, x0
	msr apibkeyhi_el1, x0
	msr apdakeylo_el1, x0
	msr apdbkeyhi_el1, x0
	ldr x0, =(0x30d00800 | 1 << 31 | 1 << 30 | 1 << 27 | 1 << 13)
	msr sctlr_el1, x0
	ldr x0, =(25 | 25 << 16 | 1 << 37)
	msr tcr_el1, x0
	isb
	bl faults
	ldr x0, =(25 | 25 << 16)
	msr tcr_el1, x0
	isb
	bl faults
	ldr x0, =0x84000008
	hvc #0
	b .
faults:
	mov x28, x30
	adr x19, 1f
	adr x5, target
	mov x1, #5
	pacia x5, x1
	mov x1, #6
	braa x5, x1
1:	adr x19, 1f
	adr x30, target
	pacibsp
	mov x0, sp
	sub sp, sp, #16
	retab
1:	add sp, sp, #16
	adr x19, 1f
	adr x5, target
	pacizb x5
	blraaz x5
1:	adr x19, 1f
	adr x5, data
	pacdzb x5
	ldraa x0, [x5]
1:	adr x19, 1f
	adr x5, data
	mov x1, #1
	pacda x5, x1
	ldrab x0, [x5, #8]!
1:	mov x0, #0xee
	bl puthex
	bl newline
	br x28
target:
	mov x0, #0xbad
	bl puthex
	br x19
newline:
	ldr x1, =0x09000000
	mov w2, #'\n'
	str w2, [x1]
	ret
sync:
	mrs x0, esr_el1
	bl puthex
	mrs x0, elr_el1
	bl puthex
	mrs x0, far_el1
	bl puthex
	msr elr_el1, x19
	eret
	.ltorg
	.balign 2048
vectors:
	.rept 16
	b sync
	.balign 128
	.endr
	.data
	.balign 16
data:
	.quad 0x2222222222222222
	.quad 0x3333333333333333
	.balign 16
	.space 4096
stack_top:
`

// TestPAuthFaultsAsQEMU compares pauthFaultProgram on gemu and qemu-system-aarch64.
func TestPAuthFaultsAsQEMU(t *testing.T) {
	bin := BuildSys(t, t.TempDir(), pauthFaultProgram)
	m := pauthModel()
	g, err := runSysGemu(bin, 60*time.Second, func(cfg *arm.Config, _ func() *arm.CPU) { cfg.Model = m })
	if err != nil {
		t.Fatalf("gemu: %v (output %q)", err, g)
	}
	q := runSysQEMUCPU(t, bin, 1, "max")
	diffTranscripts(t, g, q)
	if strings.Count(q, " 0000000086000000") != 6 || strings.Count(q, " 0000000096000000") != 4 {
		t.Errorf("QEMU did not take 6 instruction and 4 data aborts:\n%s", q)
	}
}

// pauthEL0Program: at EL0 (MMU off) the PAC instructions use the same keys and
// SCTLR_EL1 enables as at EL1, the key registers are UNDEFINED, and an SVC returns
// to EL1. The handler prints ESR and resumes after the instruction (EL0) or powers
// off (SVC).
const pauthEL0Program = `
	.arch armv8.3-a
	.text
	.global _start
_start:
	adr x0, stack_top
	mov sp, x0
	adr x0, vectors
	msr vbar_el1, x0
	ldr x0, =0x0123456789abcdef
	msr apiakeylo_el1, x0
	msr apibkeyhi_el1, x0
	msr apgakeylo_el1, x0
	ldr x0, =(0x30d00800 | 1 << 31 | 1 << 30 | 1 << 27 | 1 << 13)
	msr sctlr_el1, x0
	ldr x0, =(25 | 25 << 16 | 1 << 37)
	msr tcr_el1, x0
	adr x0, el0_stack_top
	msr sp_el0, x0
	adr x0, el0
	msr elr_el1, x0
	msr spsr_el1, xzr
	isb
	eret
el0:
	ldr x20, =0x40201234
	mov x21, sp
	mov x22, x20
	pacia x22, x21
	mov x0, x22
	bl puthex
	autia x22, x21
	mov x0, x22
	bl puthex
	mov x30, x20
	pacibsp
	mov x0, x30
	bl puthex
	pacga x0, x20, x21
	bl puthex
	mrs x0, apiakeylo_el1
	bl puthex
	svc #0
	b .
sync:
	mrs x0, esr_el1
	bl puthex
	lsr x0, x0, #26
	cmp x0, #0x15
	b.eq 1f
	mrs x0, elr_el1
	add x0, x0, #4
	msr elr_el1, x0
	eret
1:	ldr x0, =0x84000008
	hvc #0
	b .
	.ltorg
	.balign 2048
vectors:
	.rept 16
	b sync
	.balign 128
	.endr
	.data
	.balign 16
	.space 4096
stack_top:
	.space 4096
el0_stack_top:
`

// TestPAuthEL0AsQEMU compares pauthEL0Program on gemu and qemu-system-aarch64 -cpu max.
func TestPAuthEL0AsQEMU(t *testing.T) {
	bin := BuildSys(t, t.TempDir(), pauthEL0Program)
	m := pauthModel()
	g, err := runSysGemu(bin, 60*time.Second, func(cfg *arm.Config, _ func() *arm.CPU) { cfg.Model = m })
	if err != nil {
		t.Fatalf("gemu: %v (output %q)", err, g)
	}
	q := runSysQEMUCPU(t, bin, 1, "max")
	diffTranscripts(t, g, q)
	if !strings.Contains(q, " 0000000002000000 ") || !strings.HasSuffix(q, " 0000000056000000") { // MRS UNDEFINED, then SVC
		t.Errorf("unexpected QEMU transcript %q", q)
	}
}

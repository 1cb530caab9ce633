package armtest

import (
	"strings"
	"testing"
	"time"

	arm "gemu/target-arm"
)

// panProgram exercises ARMv8.1 PAN (with PAN2's AT S1E1RP/WP) and ARMv8.2 UAO at
// EL1 with the MMU on, against qemu-system-aarch64 -cpu max: PSTATE.PAN through
// MSR (immediate and register) and MRS, the permission faults of EL1 loads, stores,
// exclusives, LSE atomics and DC ZVA to EL0-accessible pages while PAN is set,
// LDTR/STTR (EL0's permissions, unaffected by PAN; with UAO, EL1's with PAN), AT
// with and without the PAN check, PAN set on exception entry when SCTLR_EL1.SPAN
// is 0 and kept when it is 1, UAO cleared on entry, and both restored by ERET.
//
// The handler prints "E <ESR> <FAR> <ELR> <SPSR.PAN/UAO> <PAN> <UAO>" (data-abort
// ISS bits 24:14 masked, as sysProgram does) and resumes after the instruction.
const panProgram = `
	.arch armv8.2-a+lse
	.equ UART, 0x09000000
	.equ TEST, 0x40400000
	.text
	.global _start
_start:
	adr x0, stack_top
	mov sp, x0
	adr x0, vectors
	msr vbar_el1, x0
	isb
	mrs x0, id_aa64mmfr1_el1
	ubfx x0, x0, #20, #4           // PAN
	bl puthex
	mrs x0, id_aa64mmfr2_el1
	ubfx x0, x0, #4, #4            // UAO
	bl puthex
	bl newline

	// L1[0] = device block (UART), L1[1] -> L2; L2[0], L2[1] = EL1 blocks (image,
	// stack); L2[2] -> L3: p0 EL1 RW, p1 EL0 RW, p2 EL0 RO, p3 EL1 RO (all UXN).
	adr x0, l1
	adr x1, l2
	adr x2, l3
	mov x3, #0x401
	orr x3, x3, #(3 << 53)
	str x3, [x0]
	orr x3, x1, #3
	str x3, [x0, #8]
	ldr x3, =0x40000705
	str x3, [x1]
	add x3, x3, #0x200000
	str x3, [x1, #8]
	orr x3, x2, #3
	str x3, [x1, #16]
	ldr x4, =TEST
	ldr x5, =0x707
	orr x5, x5, #(1 << 54)
	orr x3, x4, x5
	str x3, [x2, #0]
	add x3, x3, #0x1000
	orr x3, x3, #(1 << 6)
	str x3, [x2, #8]
	add x3, x4, #0x2000
	orr x3, x3, x5
	orr x3, x3, #(3 << 6)
	str x3, [x2, #16]
	add x3, x4, #0x3000
	orr x3, x3, x5
	orr x3, x3, #(2 << 6)
	str x3, [x2, #24]
	ldr x0, =0xff00
	msr mair_el1, x0
	ldr x0, =(25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (2 << 32))
	msr tcr_el1, x0
	adr x0, l1
	msr ttbr0_el1, x0
	dsb sy
	isb
	ldr x0, =0x30501805            // RES1 but SPAN | I | C | M
	msr sctlr_el1, x0
	isb

	ldr x19, =TEST
	add x20, x19, #0x1000          // p1: EL0 RW
	add x21, x19, #0x2000          // p2: EL0 RO
	add x22, x19, #0x3000          // p3: EL1 RO
	mov x2, #0x5a
	str x2, [x19]
	str x2, [x20]
	mrs x0, pan
	bl puthex
	msr pan, #1
	mrs x0, pan
	bl puthex
	bl newline
	ldr x0, [x19]                  // EL1-only page: fine
	bl puthex
	ldr x0, [x22]
	bl puthex
	bl newline
	ldr x0, [x20]                  // PAN: permission faults
	str x2, [x20, #8]
	ldr x0, [x21]
	ldrb w0, [x20, #3]
	ldxr x0, [x20]
	ldadd x2, x0, [x20]
	dc zva, x20
	ldp x0, x1, [x20, #16]
	ldtr x0, [x20]                 // unprivileged: EL0's permissions, PAN ignored
	bl puthex
	sttr x2, [x20, #8]
	ldtr x0, [x20, #8]
	bl puthex
	ldtr x0, [x21]
	bl puthex
	ldtr x0, [x19]                 // EL1-only page: fault
	bl newline

	at s1e1r, x20                  // no PAN check
	isb
	mrs x0, par_el1
	bl putpar
	at s1e1rp, x20                 // PAN check: fault
	isb
	mrs x0, par_el1
	bl putpar
	at s1e1wp, x21
	isb
	mrs x0, par_el1
	bl putpar
	at s1e1rp, x19
	isb
	mrs x0, par_el1
	bl putpar
	at s1e1wp, x22                 // EL1 read-only: fault
	isb
	mrs x0, par_el1
	bl putpar
	bl newline

	msr uao, #1                    // LDTR/STTR get EL1's permissions, with PAN
	mrs x0, uao
	bl puthex
	ldtr x0, [x19]
	bl puthex
	ldtr x0, [x20]                 // PAN fault
	sttr x2, [x22]                 // EL1 read-only: fault
	svc #1                         // entry clears UAO; ERET restores it
	mrs x0, uao
	bl puthex
	mrs x0, pan
	bl puthex
	bl newline

	msr pan, #0
	svc #2                         // SPAN 0: entry sets PAN
	mrs x0, pan                    // restored to 0
	bl puthex
	ldr x0, [x20]
	bl puthex
	ldtr x0, [x20]
	bl puthex
	msr uao, #0
	ldtr x0, [x19]                 // EL0's permissions again: fault
	bl newline

	mrs x0, sctlr_el1
	orr x0, x0, #(1 << 23)         // SPAN 1: entry keeps PAN
	msr sctlr_el1, x0
	isb
	svc #3
	mov x0, #(1 << 22)
	msr pan, x0
	mrs x0, pan
	bl puthex
	svc #4
	ldr x0, [x20]                  // fault
	msr pan, xzr
	ldr x0, [x20]
	bl puthex
	bl newline

	ldr x0, =0x84000008
	hvc #0
	b .

newline:
	ldr x1, =UART
	mov w2, #'\n'
	str w2, [x1]
	ret

putpar:
	ldr x1, =0x0000fffffffff07f
	and x0, x0, x1
	tbz x0, #0, puthex
	and x0, x0, #0x7f
	b puthex

handler:
	sub sp, sp, #64
	stp x0, x1, [sp]
	stp x2, x3, [sp, #16]
	stp x4, x5, [sp, #32]
	str x30, [sp, #48]
	ldr x1, =UART
	mov w2, #'E'
	str w2, [x1]
	mrs x4, esr_el1
	lsr x5, x4, #26
	cmp x5, #0x25
	b.ne 6f
	and x4, x4, #0xfffffffffe003fff
6:	mov x0, x4
	bl puthex
	mov x0, #0
	cmp x5, #0x25
	b.ne 7f
	mrs x0, far_el1
7:	bl puthex
	mrs x0, elr_el1
	bl puthex
	mrs x0, spsr_el1
	and x0, x0, #(3 << 22)
	bl puthex
	mrs x0, pan
	bl puthex
	mrs x0, uao
	bl puthex
	bl newline
	cmp x5, #0x15
	b.eq 9f
	mrs x0, elr_el1
	add x0, x0, #4
	msr elr_el1, x0
9:	ldp x0, x1, [sp]
	ldp x2, x3, [sp, #16]
	ldp x4, x5, [sp, #32]
	ldr x30, [sp, #48]
	add sp, sp, #64
	eret
	.ltorg

	.balign 2048
vectors:
	.rept 16
	b handler
	.balign 128
	.endr

	.data
	.balign 4096
l1:	.space 4096
l2:	.space 4096
l3:	.space 4096
	.space 8192
stack_top:
`

func TestPANUAOAsQEMU(t *testing.T) {
	bin := BuildSys(t, t.TempDir(), panProgram)
	maxModel, _ := arm.LookupModel("max")
	g, err := runSysGemu(bin, 30*time.Second, func(cfg *arm.Config, _ func() *arm.CPU) { cfg.Model = maxModel })
	if err != nil {
		t.Fatalf("gemu: %v (output %q)", err, g)
	}
	q := runSysQEMUCPU(t, bin, 1, "max")
	diffTranscripts(t, g, q)
	if !strings.Contains(q, "\n 0000000000000001 0000000000000000") {
		t.Logf("QEMU transcript:\n%s", q)
	}
}

// panA57Program: on the Cortex-A57 (ARMv8.0) MSR PAN/UAO (immediate), MRS/MSR of
// the PAN and UAO registers and AT S1E1RP/WP are UNDEFINED, on gemu as on
// qemu-system-aarch64.
const panA57Program = `
	.arch armv8.2-a
	.text
	.global _start
_start:
	adr x0, stack_top
	mov sp, x0
	adr x0, vectors
	msr vbar_el1, x0
	msr nzcv, xzr                  // QEMU resets with Z set, gemu with Z clear
	isb
	msr pan, #1
	msr uao, #1
	mrs x0, pan
	mrs x0, uao
	msr pan, xzr
	at s1e1rp, x0
	at s1e1wp, x0
	mrs x0, spsr_el1
	bl puthex
	ldr x0, =0x84000008
	hvc #0
	b .
handler:
	mrs x0, esr_el1
	bl puthex
	mrs x0, elr_el1
	add x0, x0, #4
	msr elr_el1, x0
	mov x30, x29
	eret
	.ltorg
	.balign 2048
vectors:
	.rept 16
	mov x29, x30
	b handler
	.balign 128
	.endr
	.data
	.balign 16
	.space 4096
stack_top:
`

func TestPANUndefinedOnCortexA57(t *testing.T) {
	bin := BuildSys(t, t.TempDir(), panA57Program)
	g, err := runSysGemu(bin, 30*time.Second, nil)
	if err != nil {
		t.Fatalf("gemu: %v (output %q)", err, g)
	}
	if q := runSysQEMUCPU(t, bin, 1, "cortex-a57"); g != q {
		t.Errorf("gemu:\n%s\nQEMU:\n%s", g, q)
	}
	if strings.Count(g, " 0000000002000000") != 7 {
		t.Errorf("want seven UNDEFINED exceptions (ESR 0x2000000): %s", g)
	}
}

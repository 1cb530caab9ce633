package armtest

import (
	"testing"
	"time"

	arm "gemu/target-arm"
)

// pmuProgram exercises PMUv3 at EL1 and EL0: PMCR_EL0 (IMP, IDCODE, N; E, C, D),
// PMCEID0 for the events QEMU also counts (SW_INCR, CPU_CYCLES), PMSELR with
// PMXEVTYPER/PMXEVCNTR, PMCNTENSET/CLR, SW_INCR counting and its overflow (PMOVS and
// the PMU interrupt, PPI 23), the cycle counter (counting, the PMCCFILTR_EL0.P
// filter, the 32-bit overflow interrupt) and PMUSERENR_EL0's EN/SW/CR/ER access rules
// at EL0. Traps print ESR and ELR (relative to rdccnt). qemu-system-aarch64 -cpu
// cortex-a57 running the same program is the oracle.
const pmuProgram = `
	.macro PR reg
	mov x0, \reg
	bl puthex
	.endm
	.macro NL
	ldr x1, =0x09000000
	mov w2, #10
	str w2, [x1]
	.endm
	.macro SET reg, val
	ldr x0, =\val
	msr \reg, x0
	isb
	.endm
	.macro SPIN n
	ldr x5, =\n
1:	subs x5, x5, #1
	b.ne 1b
	.endm
	.macro EL0 label
	adr x19, 9f
	adr x0, \label
	msr elr_el1, x0
	msr spsr_el1, xzr
	eret
9:	NL
	.endm

	.text
	.global _start
_start:
	adr x0, stack_top
	mov sp, x0
	adr x0, vectors
	msr vbar_el1, x0
	// GICv2: distributor on, PPI 23 enabled; CPU interface on, priority mask open.
	ldr x1, =0x08000000
	mov w2, #1
	str w2, [x1]
	mov w2, #(1 << 23)
	str w2, [x1, #0x100]
	ldr x1, =0x08010000
	mov w2, #0xff
	str w2, [x1, #4]
	mov w2, #1
	str w2, [x1]
	isb
	mrs x0, pmcr_el0
	PR x0
	mrs x0, pmceid0_el0
	ldr x1, =0x20001
	and x0, x0, x1
	PR x0
	mrs x0, pmuserenr_el0
	PR x0
	SET pmselr_el0, 0x25
	mrs x0, pmselr_el0
	PR x0
	mrs x0, pmcntenset_el0
	PR x0
	mrs x0, pmovsset_el0
	PR x0
	NL
	// SW_INCR
	SET pmevtyper0_el0, 0
	SET pmcntenset_el0, 1
	SET pmcr_el0, 1
	SET pmswinc_el0, 1
	SET pmswinc_el0, 1
	SET pmswinc_el0, 3
	mrs x0, pmevcntr0_el0
	PR x0
	SET pmcntenclr_el0, 1
	SET pmswinc_el0, 1
	mrs x0, pmevcntr0_el0
	PR x0
	mrs x0, pmcntenset_el0
	PR x0
	SET pmcntenset_el0, 0xffffffff
	mrs x0, pmcntenclr_el0
	PR x0
	SET pmcntenclr_el0, 0xffffffff
	NL
	// event types, PMXEVTYPER/PMXEVCNTR through PMSELR
	SET pmselr_el0, 1
	SET pmxevtyper_el0, 0xffffffff
	mrs x0, pmevtyper1_el0
	PR x0
	SET pmxevtyper_el0, 0x11
	mrs x0, pmxevtyper_el0
	PR x0
	SET pmselr_el0, 31
	SET pmxevtyper_el0, 0xffffffff
	mrs x0, pmccfiltr_el0
	PR x0
	SET pmccfiltr_el0, 0
	SET pmevcntr2_el0, 0x12345678
	SET pmselr_el0, 2
	mrs x0, pmxevcntr_el0
	PR x0
	SET pmxevcntr_el0, 0x9abcdef0
	mrs x0, pmevcntr2_el0
	PR x0
	NL
	// overflow of a SW_INCR counter: flag and interrupt
	SET pmevcntr0_el0, 0xfffffffe
	SET pmcntenset_el0, 1
	SET pmswinc_el0, 1
	mrs x0, pmovsclr_el0
	PR x0
	SET pmswinc_el0, 1
	mrs x0, pmovsclr_el0
	PR x0
	mrs x0, pmevcntr0_el0
	PR x0
	mov x20, #0
	SET pmintenset_el1, 1
	mrs x0, pmintenset_el1
	PR x0
	msr daifclr, #2
	isb
	msr daifset, #2
	PR x20
	PR x24
	mrs x0, pmovsset_el0
	PR x0
	SET pmintenclr_el1, 0xffffffff
	SET pmcntenclr_el0, 0xffffffff
	NL
	// cycle counter: counts, filtered at EL1, reset by PMCR.C
	SET pmcntenset_el0, 0x80000000
	mrs x22, pmccntr_el0
	SPIN 10000
	mrs x23, pmccntr_el0
	cmp x23, x22
	cset x0, hi
	PR x0
	SET pmccfiltr_el0, 0x80000000
	mrs x22, pmccntr_el0
	SPIN 10000
	mrs x23, pmccntr_el0
	sub x0, x23, x22
	PR x0
	SET pmccfiltr_el0, 0
	SET pmcr_el0, 0x8
	SET pmcr_el0, 0x5
	mrs x0, pmcr_el0
	PR x0
	mrs x0, pmccntr_el0
	ldr x1, =100000000
	cmp x0, x1
	cset x0, lo
	PR x0
	NL
	// cycle counter overflow interrupt (32-bit, PMCR.LC clear)
	SET pmccntr_el0, 0xffffff00
	SET pmintenset_el1, 0x80000000
	mov x20, #0
	msr daifclr, #2
	ldr x5, =200000000
1:	cbnz x20, 2f
	subs x5, x5, #1
	b.ne 1b
2:	msr daifset, #2
	PR x20
	PR x24
	mrs x0, pmccntr_el0
	lsr x0, x0, #32
	PR x0
	SET pmintenclr_el1, 0xffffffff
	SET pmcntenclr_el0, 0xffffffff
	SET pmcr_el0, 0
	NL
	// EL0 access under PMUSERENR_EL0
	EL0 rdccnt
	SET pmuserenr_el0, 4
	EL0 rdccnt
	EL0 wrccnt
	EL0 rdevcnt
	SET pmuserenr_el0, 8
	EL0 rdevcnt
	EL0 swinc
	SET pmuserenr_el0, 2
	EL0 swinc
	EL0 rdinten
	SET pmuserenr_el0, 1
	EL0 wrccnt
	EL0 rduser
	SET pmuserenr_el0, 0
	ldr x0, =0x84000008
	hvc #0
	b .

rdccnt:
	mrs x6, pmccntr_el0
	svc #0
wrccnt:
	msr pmccntr_el0, xzr
	svc #0
rdevcnt:
	mrs x6, pmevcntr0_el0
	svc #0
swinc:
	msr pmswinc_el0, xzr
	svc #0
rdinten:
	mrs x6, pmintenset_el1
	svc #0
rduser:
	msr pmuserenr_el0, xzr
	svc #0

sync:
	mrs x0, esr_el1
	PR x0
	mrs x0, elr_el1
	adr x1, rdccnt
	sub x0, x0, x1
	PR x0
	br x19

irq:
	ldr x1, =0x08010000
	ldr w21, [x1, #0x0c]
	mrs x24, pmovsclr_el0
	mov x25, #-1
	msr pmovsclr_el0, x25
	add x20, x20, #1
	str w21, [x1, #0x10]
	isb
	eret
	.ltorg

	.balign 2048
vectors:
	.set off, 0
	.rept 16
	mov x9, #off
	b vec
	.balign 128
	.set off, off + 0x80
	.endr
vec:
	cmp x9, #0x200
	b.eq sync
	cmp x9, #0x400
	b.eq sync
	cmp x9, #0x280
	b.eq irq
	PR x9
	b .

	.data
	.balign 16
	.space 4096
stack_top:
`

// TestPMUMatchesQEMU runs pmuProgram on gemu (the PMU interrupt wired to the CPU's IRQ,
// as the GIC would) and on qemu-system-aarch64.
func TestPMUMatchesQEMU(t *testing.T) {
	bin := BuildSys(t, t.TempDir(), pmuProgram)
	out, err := runSysGemu(bin, 60*time.Second, func(cfg *arm.Config, cpu func() *arm.CPU) {
		cfg.PMUIRQ = func(_ int, level bool) { cpu().SetIRQ(level) }
	})
	if err != nil {
		t.Fatalf("gemu: %v\noutput: %s", err, out)
	}
	q := RunSysQEMU(t, bin)
	if out != q {
		t.Errorf("transcripts differ\ngemu:\n%s\nqemu:\n%s", out, q)
	}
}

// instProgram counts retired instructions and branches with the translator's events,
// which QEMU counts only with -icount (so the oracle is the architecture: the exact
// counts of the code measured). A 1000-iteration SUBS/B.NE loop between two counter
// reads retires 2003 instructions (the two first reads, the MOV and the loop) and 1000
// branches; at EL0 only (PMEVTYPER.P), three NOPs and an SVC retire 4 instructions,
// two NOPs and a BRK 2 (BRK does not retire: the count is fixed up when the
// exception is taken in the middle of a block); an INST_RETIRED overflow raises the
// PMU interrupt.
const instProgram = `
	.macro PR reg
	mov x0, \reg
	bl puthex
	.endm
	.macro SET reg, val
	ldr x0, =\val
	msr \reg, x0
	isb
	.endm
	.macro EL0 label
	adr x19, 9f
	adr x0, \label
	msr elr_el1, x0
	msr spsr_el1, xzr
	eret
9:
	.endm

	.text
	.global _start
_start:
	adr x0, stack_top
	mov sp, x0
	adr x0, vectors
	msr vbar_el1, x0
	mrs x0, pmceid0_el0
	ubfx x0, x0, #8, #1
	PR x0
	mrs x0, pmceid1_el0
	ubfx x0, x0, #1, #1
	PR x0
	SET pmevtyper0_el0, 0x08		// INST_RETIRED
	SET pmevtyper1_el0, 0x21		// BR_RETIRED
	SET pmevtyper2_el0, 0x80000008		// INST_RETIRED at EL0 only
	SET pmcntenset_el0, 7
	SET pmcr_el0, 1
	mrs x20, pmevcntr0_el0
	mrs x21, pmevcntr1_el0
	mov x5, #1000
1:	subs x5, x5, #1
	b.ne 1b
	mrs x22, pmevcntr0_el0
	mrs x23, pmevcntr1_el0
	sub x0, x22, x20
	PR x0
	sub x0, x23, x21
	PR x0
	// EL0 only: an SVC retires, a BRK does not
	mrs x20, pmevcntr2_el0
	EL0 el0svc
	mrs x21, pmevcntr2_el0
	sub x0, x21, x20
	PR x0
	EL0 el0brk
	mrs x22, pmevcntr2_el0
	sub x0, x22, x21
	PR x0
	// overflow interrupt of INST_RETIRED
	SET pmevcntr0_el0, 0xffffff00
	SET pmintenset_el1, 1
	mov x20, #0
	msr daifclr, #2
	ldr x5, =100000
1:	cbnz x20, 2f
	subs x5, x5, #1
	b.ne 1b
2:	msr daifset, #2
	PR x20
	PR x24
	SET pmcr_el0, 0
	ldr x0, =0x84000008
	hvc #0
	b .

el0svc:
	nop
	nop
	nop
	svc #0
el0brk:
	nop
	nop
	brk #0

sync:
	br x19
irq:
	mrs x24, pmovsclr_el0
	mov x25, #-1
	msr pmovsclr_el0, x25
	add x20, x20, #1
	eret
	.ltorg

	.balign 2048
vectors:
	.set off, 0
	.rept 16
	mov x9, #off
	b vec
	.balign 128
	.set off, off + 0x80
	.endr
vec:
	cmp x9, #0x200
	b.eq sync
	cmp x9, #0x400
	b.eq sync
	cmp x9, #0x280
	b.eq irq
	PR x9
	b .

	.data
	.balign 16
	.space 4096
stack_top:
`

// TestPMUInstructionsRetired runs instProgram on gemu.
func TestPMUInstructionsRetired(t *testing.T) {
	bin := BuildSys(t, t.TempDir(), instProgram)
	out, err := runSysGemu(bin, 60*time.Second, func(cfg *arm.Config, cpu func() *arm.CPU) {
		cfg.PMUIRQ = func(_ int, level bool) { cpu().SetIRQ(level) }
	})
	if err != nil {
		t.Fatalf("gemu: %v\noutput: %s", err, out)
	}
	const want = " 0000000000000001 0000000000000001" + // PMCEID: INST_RETIRED, BR_RETIRED
		" 00000000000007d3 00000000000003e8" + // 2003 instructions, 1000 branches
		" 0000000000000004 0000000000000002" + // EL0: NOP NOP NOP SVC; NOP NOP BRK
		" 0000000000000001 0000000000000001" // one overflow interrupt, PMOVS bit 0
	if out != want {
		t.Errorf("gemu: %q\nwant  %q", out, want)
	}
}

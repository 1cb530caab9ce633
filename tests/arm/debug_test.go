package armtest

import (
	"testing"
	"time"
)

// debugProgram exercises the self-hosted debug architecture at EL1 (and EL0 for
// software step and unprivileged loads): BRK; hardware breakpoints with the PSTATE.D,
// MDSCR_EL1.KDE/MDE, PMC, OS double lock and linked context-ID conditions;
// watchpoints with BAS, MASK, LSC, PAC and links; software step (active-not-pending and
// active-pending, branches, a load-exclusive, BRK, SVC, EL0, a faulting load, masked
// by PSTATE.D and KDE). Each exception prints ESR, FAR and ELR (both relative to
// wdata) and SPSR; a call that took none prints aa (bb for a step that did not
// trap). qemu-system-aarch64 -cpu cortex-a57 running the same program is the oracle.
// (The OS lock case is left out: QEMU 7.2 does not honour OSLSR_EL1.OSLK for debug
// exceptions, gemu does as the architecture says.)
const debugProgram = `
	.macro PR reg
	mov x0, \reg
	bl puthex
	.endm
	.macro NL
	ldr x1, =0x09000000
	mov w2, #10
	str w2, [x1]
	.endm
	// CALLT f: call f with debug exceptions unmasked; the handler resumes at 9 (a hit
	// prints ESR FAR ELR SPSR), a miss prints aa.
	.macro CALLT func
	msr daifclr, #8
	isb
	adr x19, 9f
	bl \func
	PR #0xaa
9:	NL
	.endm
	.macro SET reg, val
	ldr x0, =\val
	msr \reg, x0
	isb
	.endm

	.macro STEP label, spsr
	adr x0, \label
	msr elr_el1, x0
	ldr x0, =\spsr
	msr spsr_el1, x0
	eret
	.endm

	.text
	.global _start
_start:
	adr x0, stack_top
	mov sp, x0
	adr x0, vectors
	msr vbar_el1, x0
	isb
	adr x7, wdata
	mrs x0, id_aa64dfr0_el1
	PR x0
	mrs x0, oslsr_el1
	PR x0
	msr oslar_el1, xzr
	isb
	mrs x0, oslsr_el1
	PR x0
	NL
	adr x19, 1f
	brk #0x1234
1:	NL
	SET mdscr_el1, 0xa000
	// breakpoints
	adr x0, target
	msr dbgbvr0_el1, x0
	SET dbgbcr0_el1, 0xa7
	mrs x0, dbgbcr0_el1
	PR x0
	mrs x0, dbgbvr0_el1
	sub x0, x0, x7
	PR x0
	NL
	CALLT target
	// masked by PSTATE.D
	msr daifset, #8
	adr x19, 9f
	bl target
	PR #0xaa
9:	NL
	SET mdscr_el1, 0x8000		// KDE clear
	CALLT target
	SET mdscr_el1, 0x2000		// MDE clear
	CALLT target
	SET mdscr_el1, 0xa000
	SET dbgbcr0_el1, 0x1e5		// PMC EL0 only
	CALLT target
	SET dbgbcr0_el1, 0x1e7
	SET osdlr_el1, 1		// OS double lock
	mrs x0, osdlr_el1
	PR x0
	CALLT target
	SET osdlr_el1, 0
	// linked context ID
	SET dbgbvr4_el1, 0x55
	SET dbgbcr4_el1, 0x3001e7
	SET dbgbcr0_el1, 0x1401e7
	SET contextidr_el1, 0x55
	CALLT target
	SET contextidr_el1, 0x56
	CALLT target
	SET dbgbcr0_el1, 0x1101e7	// link to a breakpoint that is not context-aware
	CALLT target
	SET dbgbcr0_el1, 0x2001e7	// unlinked context ID match
	SET dbgbvr0_el1, 0x56
	CALLT target
	SET dbgbcr0_el1, 0
	SET dbgbcr4_el1, 0
	// watchpoints
	msr dbgwvr0_el1, x7
	SET dbgwcr0_el1, 0x1fff
	mrs x0, dbgwcr0_el1
	PR x0
	NL
	CALLT wload
	CALLT wstore
	CALLT wldtr
	SET dbgwcr0_el1, 0x1fef		// loads only
	CALLT wstore
	CALLT wload
	SET dbgwcr0_el1, 0x1ffb		// EL1 only
	CALLT wldtr
	SET dbgwcr0_el1, 0x1ffd		// EL0 only
	CALLT wload
	CALLT wldtr
	SET dbgwcr0_el1, 0x19f		// bytes 2-3
	CALLT wbyte1
	CALLT whalf2
	CALLT wload
	CALLT wpair
	add x0, x7, #7
	msr dbgwvr0_el1, x0
	mrs x0, dbgwvr0_el1
	sub x0, x0, x7
	PR x0
	NL
	SET dbgwcr0_el1, 0x500001f	// MASK 32 bytes
	CALLT w28
	CALLT w32
	SET dbgwcr0_el1, 0x1f		// BAS 0: disabled
	CALLT wload
	msr dbgwvr1_el1, x7
	SET dbgwcr1_el1, 0x141fff	// linked to context breakpoint 4
	SET dbgbvr4_el1, 0x56
	SET dbgbcr4_el1, 0x3001e7
	CALLT wload
	SET contextidr_el1, 0x57
	CALLT wload
	SET dbgwcr0_el1, 0
	SET dbgwcr1_el1, 0
	SET dbgbcr4_el1, 0
	// software step
	SET mdscr_el1, 0xa001
	adr x19, 1f
	STEP s1, 0x200005
1:	NL
	mrs x0, elr_el1
	adr x19, 1f
	msr elr_el1, x0
	SET spsr_el1, 0x5		// SS clear: active-pending
	eret
1:	NL
	adr x19, 1f
	STEP s2, 0x200005
1:	NL
	adr x19, 1f
	STEP s3, 0x200005
1:	NL
	adr x19, 1f
	STEP s4, 0x200005
1:	NL
	adr x19, 1f
	STEP s5, 0x200005
1:	NL
	adr x19, 1f
	STEP s1, 0x200000		// EL0
1:	NL
	msr dbgwvr0_el1, x7
	SET dbgwcr0_el1, 0x1fff
	adr x19, 1f
	STEP s6, 0x200005		// a load that faults on the watchpoint
1:	NL
	SET dbgwcr0_el1, 0
	adr x19, 1f
	STEP s1, 0x200205		// PSTATE.D set: not active
1:	NL
	SET mdscr_el1, 0x8001		// KDE clear: not active at EL1
	adr x19, 1f
	STEP s1, 0x200005
1:	NL
	SET mdscr_el1, 0
	ldr x0, =0x84000008
	hvc #0
	b .


s1:
	add x5, x5, #1
	PR #0xbb
	br x19
s2:
	b 1f
	nop
1:	PR #0xbb
	br x19
s3:
	ldxr x6, [x7]
	PR #0xbb
	br x19
s4:
	brk #1
s5:
	svc #2
s6:
	ldr x6, [x7]
	PR #0xbb
	br x19

target:
	add x5, x5, #1
	ret
wload:
	ldr x6, [x7]
	ret
wstore:
	str x6, [x7]
	ret
wldtr:
	ldtr x6, [x7]
	ret
wbyte1:
	ldrb w6, [x7, #1]
	ret
whalf2:
	ldrh w6, [x7, #2]
	ret
wpair:
	ldp x5, x6, [x7, #-8]
	ret
w28:
	ldr w6, [x7, #28]
	ret
w32:
	ldr w6, [x7, #32]
	ret

sync:
	mrs x0, esr_el1
	PR x0
	mrs x0, far_el1
	sub x0, x0, x7
	PR x0
	mrs x0, elr_el1
	sub x0, x0, x7
	PR x0
	mrs x0, spsr_el1
	PR x0
	br x19
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
	PR x9
	b .

	.data
	.balign 64
	.space 64
wdata:
	.quad 0x1122334455667788
	.space 120
	.balign 16
	.space 4096
stack_top:
`

// TestDebugExceptionsMatchQEMU runs debugProgram on gemu and on qemu-system-aarch64.
func TestDebugExceptionsMatchQEMU(t *testing.T) {
	bin := BuildSys(t, t.TempDir(), debugProgram)
	out, err := runSysGemu(bin, 60*time.Second, nil)
	if err != nil {
		t.Fatalf("gemu: %v\noutput: %s", err, out)
	}
	q := RunSysQEMU(t, bin)
	if out != q {
		t.Errorf("transcripts differ\ngemu:\n%s\nqemu:\n%s", out, q)
	}
}

// osLockProgram: with the OS lock set (OSLAR_EL1.OSLK), a matching breakpoint and
// software step do not fire; once it is cleared they do. Each exception prints its
// ESR; target prints bb when it runs. The architecture is the oracle here (AArch64.
// GenerateDebugExceptions: no debug exceptions but BRK while OSLSR_EL1.OSLK is set):
// QEMU 7.2 tests OSLSR_EL1 bit 0 (OSLM[0]) instead, so it fires regardless.
const osLockProgram = `
	.macro PR reg
	mov x0, \reg
	bl puthex
	.endm
	.macro SET reg, val
	ldr x0, =\val
	msr \reg, x0
	isb
	.endm
	.macro CALLT func
	msr daifclr, #8
	isb
	adr x19, 9f
	bl \func
	PR #0xaa
9:
	.endm
	.text
	.global _start
_start:
	adr x0, stack_top
	mov sp, x0
	adr x0, vectors
	msr vbar_el1, x0
	SET oslar_el1, 0
	SET mdscr_el1, 0xa000
	adr x0, target
	msr dbgbvr0_el1, x0
	SET dbgbcr0_el1, 0x1e7
	SET oslar_el1, 1
	mrs x0, oslsr_el1
	PR x0
	CALLT target
	SET oslar_el1, 0
	CALLT target
	SET dbgbcr0_el1, 0
	SET oslar_el1, 1
	SET mdscr_el1, 0xa001
	adr x19, 9f
	adr x0, target
	msr elr_el1, x0
	SET spsr_el1, 0x200005
	eret
9:	msr daifset, #8
	SET oslar_el1, 0
	adr x19, 9f
	adr x0, target
	msr elr_el1, x0
	SET spsr_el1, 0x200005
	eret
9:	SET mdscr_el1, 0
	ldr x0, =0x84000008
	hvc #0
	b .
target:
	add x5, x5, #1
	PR #0xbb
	br x19
sync:
	mrs x0, esr_el1
	PR x0
	br x19
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

// TestOSLockMasksDebugExceptions runs osLockProgram on gemu.
func TestOSLockMasksDebugExceptions(t *testing.T) {
	bin := BuildSys(t, t.TempDir(), osLockProgram)
	out, err := runSysGemu(bin, 60*time.Second, nil)
	if err != nil {
		t.Fatalf("gemu: %v\noutput: %s", err, out)
	}
	const want = " 000000000000000a 00000000000000bb" + // OSLSR: locked; breakpoint masked, target runs
		" 00000000c6000022" + // unlocked: breakpoint
		" 00000000000000bb" + // locked: the instruction runs unstepped
		" 00000000cf000022" // unlocked: step completed
	if out != want {
		t.Errorf("gemu: %q\nwant  %q", out, want)
	}
}

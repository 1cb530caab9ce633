package armtest

import (
	"testing"
	"time"

	arm "gemu/target-arm"
)

// timerSyncProgram checks that the timer's interrupt never lags the ISTATUS a guest
// reads: 1000 times it arms the virtual timer a few ticks ahead with IRQs masked,
// busy-polls CNTV_CTL_EL0 until ISTATUS is set, unmasks IRQs and synchronises (ISB),
// then checks that the handler ran. It prints the number of misses (0 expected) and
// the number of interrupts taken (1000). The GIC set-up is what QEMU needs (PPI 27 to
// CPU 0); gemu's bare runner wires the timer straight to the CPU and ignores it.
const timerSyncProgram = `
	.text
	.global _start
_start:
	adr x0, stack_top
	mov sp, x0
	adr x0, vectors
	msr vbar_el1, x0
	// GICv2: distributor on, PPI 27 enabled; CPU interface on, priority mask open.
	ldr x1, =0x08000000
	mov w2, #1
	str w2, [x1]                  // GICD_CTLR
	mov w2, #(1 << 27)
	str w2, [x1, #0x100]          // GICD_ISENABLER0
	ldr x1, =0x08010000
	mov w2, #0xff
	str w2, [x1, #4]              // GICC_PMR
	mov w2, #1
	str w2, [x1]                  // GICC_CTLR
	isb
	mov x20, #0                   // interrupts taken
	mov x21, #0                   // misses
	mov x22, #0                   // iterations
loop:
	mrs x0, cntvct_el0
	add x0, x0, #40
	msr cntv_cval_el0, x0
	mov x0, #1
	msr cntv_ctl_el0, x0          // enabled, not masked
	isb
1:	mrs x0, cntv_ctl_el0
	tbz x0, #2, 1b                // wait for ISTATUS
	add x23, x22, #1              // the count the handler must have reached
	msr daifclr, #2
	isb
	msr daifset, #2
	cmp x20, x23
	b.eq 2f
	add x21, x21, #1
2:	add x22, x22, #1
	cmp x22, #1000
	b.lo loop
	mov x0, x21
	bl puthex
	mov x0, x20
	bl puthex
	ldr x0, =0x84000008
	hvc #0
	b .

irq:
	ldr x1, =0x08010000
	ldr w3, [x1, #0x0c]           // GICC_IAR
	mov x0, #0
	msr cntv_ctl_el0, x0          // timer off: the line drops
	add x20, x20, #1
	str w3, [x1, #0x10]           // GICC_EOIR
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
	cmp x9, #0x280                  // IRQ, current EL with SP_ELx
	b.eq irq
	b .

	.data
	.balign 16
	.space 4096
stack_top:
`

// TestTimerISTATUSAgreesWithIRQ: a guest that saw ISTATUS set and then unmasked IRQs
// must have taken the timer interrupt, every time (issue: the line was raised only when
// a host timer fired later). The same program runs on qemu-system-aarch64 as the oracle.
func TestTimerISTATUSAgreesWithIRQ(t *testing.T) {
	bin := BuildSys(t, t.TempDir(), timerSyncProgram)
	out, err := runSysGemu(bin, 60*time.Second, func(cfg *arm.Config, cpu func() *arm.CPU) {
		cfg.TimerIRQ = func(id, timer int, level bool) {
			if timer == 1 {
				cpu().SetIRQ(level)
			}
		}
	})
	if err != nil {
		t.Fatalf("gemu: %v\noutput: %q", err, out)
	}
	const want = " 0000000000000000 00000000000003e8"
	if out != want {
		t.Errorf("gemu: misses, interrupts = %q, want %q (no miss, 1000 interrupts)", out, want)
	}
	if q := runSysQEMU(t, bin, 1); q != want {
		t.Errorf("qemu-system-aarch64: %q, want %q (the test program itself is wrong)", q, want)
	}
}

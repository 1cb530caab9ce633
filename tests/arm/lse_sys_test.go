package armtest

import (
	"testing"
	"time"

	arm "gemu/target-arm"
)

// lseFaultProgram runs misaligned LSE atomics at EL1 (every form must be naturally
// aligned whatever SCTLR_EL1.A says): the handler prints ESR (data-abort ISS bits
// 24:14, instruction details QEMU fills and gemu does not, masked) and FAR, then skips
// the instruction. A final aligned LDADD shows the registers the faulting ones left
// alone.
const lseFaultProgram = `
	.arch armv8.1-a
	.text
	.global _start
_start:
	adr x0, stack_top
	mov sp, x0
	adr x0, vectors
	msr vbar_el1, x0
	isb
	adr x20, data
	mov x1, #5
	mov x2, #7
	add x21, x20, #1
	ldadd x1, x2, [x21]
	add x21, x20, #2
	ldaddal w1, w2, [x21]
	add x21, x20, #1
	ldaddh w1, w2, [x21]
	add x21, x20, #4
	cas x1, x2, [x21]
	add x21, x20, #8
	mov x4, #0
	mov x5, #0
	casp x4, x5, x6, x7, [x21]
	add x21, x20, #4
	casp w4, w5, w6, w7, [x21]
	add x21, x20, #2
	swpl w1, w2, [x21]
	ldadd x1, x2, [x20]
	mov x0, x2
	bl puthex
	ldr x0, [x20]
	bl puthex
	ldr x0, =0x84000008
	hvc #0
	b .

sync:
	mrs x0, esr_el1
	mov x1, #0x1ffc000
	bic x0, x0, x1
	bl puthex
	mrs x0, far_el1
	bl puthex
	mrs x0, elr_el1
	add x0, x0, #4
	msr elr_el1, x0
	eret

	.balign 2048
vectors:
	.rept 4
	b .
	.balign 128
	.endr
	b sync
	.balign 128
	.rept 11
	b .
	.balign 128
	.endr
	.ltorg

	.data
	.balign 16
data:	.quad 0x1122334455667788, 0
	.balign 16
	.space 4096
stack_top:
`

// TestLSEAlignmentFaultsAsQEMU compares the faults of lseFaultProgram on gemu -cpu
// max and qemu-system-aarch64 -cpu max.
func TestLSEAlignmentFaultsAsQEMU(t *testing.T) {
	bin := BuildSys(t, t.TempDir(), lseFaultProgram)
	maxModel, _ := arm.LookupModel("max")
	g, err := runSysGemu(bin, 30*time.Second, func(cfg *arm.Config, _ func() *arm.CPU) { cfg.Model = maxModel })
	if err != nil {
		t.Fatalf("gemu: %v (output %q)", err, g)
	}
	q := runSysQEMUCPU(t, bin, 1, "max")
	if g != q {
		t.Errorf("gemu:\n%s\nQEMU:\n%s", g, q)
	}
	t.Logf("QEMU: %s", q)
}

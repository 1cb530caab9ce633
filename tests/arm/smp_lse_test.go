package armtest

import (
	"fmt"
	"testing"
	"time"

	arm "gemu/target-arm"
)

// smpLSEProgram: as smpProgram, but both vCPUs count with the LSE atomics: LDADDAL on
// a 64-bit counter, STADDL on a 32-bit one, STADDB on a byte that shares its word with
// a halfword counter bumped by LDADDH (gemu updates both through compare-and-swap
// on the containing word), a CASAL retry loop on another counter, and a SWPA spinlock
// guarding a plain counter. Lost updates would show as counts below 2*ITERS (the byte
// counter wraps: 2*ITERS mod 256).
var smpLSEProgram = fmt.Sprintf(`
	.arch armv8.1-a
	.equ ITERS, %d
	.text
	.global _start
_start:
	mrs x0, mpidr_el1
	and x0, x0, #0xff
	cbnz x0, secondary
	adr x0, stack0
	mov sp, x0
	ldr x0, =0xc4000003             // PSCI CPU_ON
	mov x1, #1
	adr x2, _start
	mov x3, #0
	hvc #0
	bl work
	adr x1, done1
1:	ldar x0, [x1]
	cbz x0, 1b
	ldr x0, counter
	bl puthex
	ldr w0, counter32
	bl puthex
	adr x1, small
	ldrb w0, [x1]
	bl puthex
	adr x1, small
	ldrh w0, [x1, #2]
	bl puthex
	ldr x0, cascount
	bl puthex
	ldr x0, plain
	bl puthex
	ldr x0, =0x84000008
	hvc #0
	b .
secondary:
	adr x0, stack1
	mov sp, x0
	bl work
	adr x1, done1
	mov x0, #1
	stlr x0, [x1]
2:	wfe
	b 2b

work:
	ldr x9, =ITERS
	adr x1, counter
	adr x2, counter32
	adr x3, lock
	adr x4, plain
	adr x8, small
	add x10, x8, #2
	adr x11, cascount
	mov x7, #1
3:	ldaddal x7, x5, [x1]
	staddl w7, [x2]
	staddb w7, [x8]
	ldaddh w7, w5, [x10]
	ldr x12, [x11]
6:	add x13, x12, #1
	mov x14, x12
	casal x14, x13, [x11]
	cmp x14, x12
	mov x12, x14
	b.ne 6b
5:	swpa w7, w5, [x3]
	cbnz w5, 5b
	ldr x5, [x4]
	add x5, x5, #1
	str x5, [x4]
	stlr wzr, [x3]
	subs x9, x9, #1
	b.ne 3b
	ret

	.ltorg

	.data
	.balign 64
counter:	.quad 0
	.balign 64
counter32:	.quad 0
	.balign 64
small:	.quad 0
	.balign 64
cascount:	.quad 0
	.balign 64
lock:	.quad 0
	.balign 64
plain:	.quad 0
	.balign 64
done1:	.quad 0
	.balign 16
	.space 4096
stack0:
	.space 4096
stack1:
`, smpIters)

// TestSMPLSEAtomics runs the LSE counting program on two gemu -cpu max vCPUs in
// parallel and on qemu-system-aarch64 -cpu max -smp 2: both must count every
// increment.
func TestSMPLSEAtomics(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 2x200000 contended LSE loops and boots qemu-system-aarch64")
	}
	bin := BuildSys(t, t.TempDir(), smpLSEProgram)
	n := uint64(2 * smpIters)
	want := fmt.Sprintf(" %016x %016x %016x %016x %016x %016x", n, n, n&0xff, n&0xffff, n, n)
	maxModel, _ := arm.LookupModel("max")
	g, err := runSysGemuSMP(bin, 2, 120*time.Second, func(cfg *arm.Config, _ func() *arm.CPU) { cfg.Model = maxModel })
	if err != nil {
		t.Fatalf("gemu: %v\noutput: %q", err, g)
	}
	if g != want {
		t.Errorf("gemu counters %q, want %q", g, want)
	}
	if q := runSysQEMUCPU(t, bin, 2, "max"); q != want {
		t.Errorf("qemu counters %q, want %q (test program is wrong)", q, want)
	}
}

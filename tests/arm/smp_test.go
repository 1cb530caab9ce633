package armtest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// smpIters is the number of increments each vCPU performs per counter.
const smpIters = 200000

// smpProgram: vCPU 0 starts vCPU 1 with PSCI CPU_ON; both then increment a shared
// counter with an LDAXR/STLXR loop, a 32-bit one with LDXR/STXR, and a plain counter
// under a spinlock built from exclusives; vCPU 1 then sets a flag with STLR and vCPU 0
// waits for it with LDAR, prints the three counters and powers off. Lost updates would
// show as counts below 2*smpIters.
var smpProgram = fmt.Sprintf(`
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
3:	ldaxr x5, [x1]
	add x5, x5, #1
	stlxr w6, x5, [x1]
	cbnz w6, 3b
4:	ldxr w5, [x2]
	add w5, w5, #1
	stxr w6, w5, [x2]
	cbnz w6, 4b
	mov w7, #1
5:	ldaxr w5, [x3]
	cbnz w5, 5b
	stxr w6, w7, [x3]
	cbnz w6, 5b
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

// TestSMPExclusives runs the exclusive-monitor program on two gemu vCPUs running in
// parallel and on qemu-system-aarch64 -smp 2: both must count every increment.
func TestSMPExclusives(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 2x2x200000 contended exclusive loops and boots qemu-system-aarch64")
	}
	bin := BuildSys(t, t.TempDir(), smpProgram)
	want := strings.Repeat(fmt.Sprintf(" %016x", 2*smpIters), 3)
	g, err := runSysGemuSMP(bin, 2, 120*time.Second, nil)
	if err != nil {
		t.Fatalf("gemu: %v\noutput: %q", err, g)
	}
	if g != want {
		t.Errorf("gemu counters %q, want %q", g, want)
	}
	if q := runSysQEMUSMP(t, bin); q != want {
		t.Errorf("qemu counters %q, want %q (test program is wrong)", q, want)
	}
}

package armtest

import (
	"strings"
	"sync"
	"testing"
	"time"

	arm "gemu/target-arm"
)

// timerProgram arms the EL1 virtual timer 1 ms ahead, unmasks IRQs and waits in WFI.
// The IRQ handler prints CNTV_CTL_EL0 (ENABLE|ISTATUS expected), the IRQ vector offset
// it came through, then masks the timer output (IMASK) and powers off.
const timerProgram = `
	.text
	.global _start
_start:
	adr x0, stack_top
	mov sp, x0
	adr x0, vectors
	msr vbar_el1, x0
	isb
	mrs x0, cntvct_el0
	ldr x1, =62500
	add x0, x0, x1
	msr cntv_cval_el0, x0
	mov x0, #1
	msr cntv_ctl_el0, x0
	isb
	msr daifclr, #2
1:	wfi
	b 1b

irq:
	mrs x0, cntv_ctl_el0
	bl puthex
	mov x0, x9
	bl puthex
	mov x0, #3
	msr cntv_ctl_el0, x0
	isb
	ldr x0, =0x84000008
	hvc #0
	b .

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

// TestTimerInterrupt checks the generic timer end to end: the virtual timer's output
// rises when CVAL is reached (waking the vCPU from WFI), the IRQ it causes is taken
// through the current-EL/SPx IRQ vector with CNTV_CTL showing ISTATUS, and masking it
// drops the output.
func TestTimerInterrupt(t *testing.T) {
	bin := BuildSys(t, t.TempDir(), timerProgram)
	var mu sync.Mutex
	var events []string
	out, err := runSysGemu(bin, 30*time.Second, func(cfg *arm.Config, cpu func() *arm.CPU) {
		cfg.TimerIRQ = func(id, timer int, level bool) {
			mu.Lock()
			events = append(events, map[bool]string{true: "up", false: "down"}[level]+"/"+[]string{"phys", "virt", "hyp"}[timer])
			mu.Unlock()
			if timer == 1 {
				cpu().SetIRQ(level)
			}
		}
	})
	if err != nil {
		t.Fatalf("gemu: %v\noutput: %q", err, out)
	}
	if want := " 0000000000000005 0000000000000280"; out != want {
		t.Errorf("output %q, want %q (CNTV_CTL = ENABLE|ISTATUS, IRQ vector 0x280)", out, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(events, ",") != "up/virt,down/virt" {
		t.Errorf("timer output events %v, want [up/virt down/virt]", events)
	}
}

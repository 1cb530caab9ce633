package armtest

import (
	"os/exec"
	"testing"

	"gemu/tests/testbin"
)

// platformProgram reads and writes the virt board's PL031 (0x09010000) and PL061
// (0x09030000) registers from EL1 and prints what it sees: the PrimeCell IDs, the
// RTC's control, mask and match registers, a load followed by the count (1 if the
// count is the loaded value or one second on), the raw and masked status after a match
// set to the current count; the GPIO's direction, masked data reads and writes,
// interrupt configuration registers, and the status of an output toggle (none) and of
// an active-low level-sensitive input (pending, and still pending after a clear).
const platformProgram = `
	.text
	.global _start
_start:
	ldr x19, =0x09010000
	bl ids
	ldr w0, [x19, #0xc]   // CR
	bl puthex
	mov w0, #1
	str w0, [x19, #0x10]  // IMSC
	ldr w0, [x19, #0x10]
	bl puthex
	mov w0, #0
	str w0, [x19, #0x10]
	ldr w0, =0x12345678
	str w0, [x19, #0x4]   // MR
	ldr w0, [x19, #0x4]
	bl puthex
	mov w0, #1000
	str w0, [x19, #0x8]   // LR
	ldr w0, [x19]
	sub w0, w0, #1000
	cmp w0, #1
	cset x0, ls
	bl puthex
	ldr w0, [x19, #0x14]  // RIS before any match
	bl puthex
	ldr w0, [x19]
	str w0, [x19, #0x4]   // MR = now
	ldr w0, [x19, #0x14]
	bl puthex
	ldr w0, [x19, #0x18]  // MIS (masked)
	bl puthex
	mov w0, #1
	str w0, [x19, #0x1c]  // ICR
	ldr w0, [x19, #0x14]
	bl puthex

	ldr x19, =0x09030000
	bl ids
	mov w0, #0x0f
	str w0, [x19, #0x400] // DIR
	ldr w0, [x19, #0x400]
	bl puthex
	mov w0, #0xff
	str w0, [x19, #0x3fc] // data, all lines
	ldr w0, [x19, #0x3fc]
	bl puthex
	mov w0, #0
	str w0, [x19, #0x8]   // clear line 1 only (mask 0x02)
	ldr w0, [x19, #0x3fc]
	bl puthex
	ldr w0, [x19, #0x30]  // mask 0x0c
	bl puthex
	mov w0, #0x01
	str w0, [x19, #0x408] // IBE
	str w0, [x19, #0x410] // IE
	str w0, [x19, #0x4]   // line 0 low
	mov w0, #0x01
	str w0, [x19, #0x4]   // line 0 high: an output, no interrupt
	ldr w0, [x19, #0x414]
	bl puthex
	mov w0, #0x10
	str w0, [x19, #0x404] // IS: line 4 level, IEV 0: active low, and it is low
	str w0, [x19, #0x410]
	ldr w0, [x19, #0x414]
	bl puthex
	ldr w0, [x19, #0x418]
	bl puthex
	mov w0, #0x10
	str w0, [x19, #0x41c] // IC
	ldr w0, [x19, #0x414]
	bl puthex
	ldr w0, [x19, #0x404]
	bl puthex
	ldr w0, [x19, #0x408]
	bl puthex
	ldr w0, [x19, #0x40c]
	bl puthex
	ldr w0, [x19, #0x410]
	bl puthex
	mov w0, #0
	str w0, [x19, #0x410]
	str w0, [x19, #0x404]

	ldr x1, =0x09000000
	mov w2, #'\n'
	str w2, [x1]
	ldr x0, =0x84000008
	hvc #0
	b .

// ids prints the 8 PrimeCell ID registers at x19 + 0xfe0 packed into one quad.
ids:
	mov x27, x30
	mov x0, #0
	mov x4, #0
	add x5, x19, #0xfe0
1:	ldr w6, [x5], #4
	and x6, x6, #0xff
	lsl x6, x6, x4
	orr x0, x0, x6
	add x4, x4, #8
	cmp x4, #64
	b.lt 1b
	bl puthex
	mov x30, x27
	ret
	.ltorg
`

// TestPlatformRegistersAsQEMU runs platformProgram on both emulators: same transcript.
func TestPlatformRegistersAsQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Skip("qemu-system-aarch64 not installed (apt-get install qemu-system-arm)")
	}
	bin := BuildSys(t, t.TempDir(), platformProgram)
	gemu := testbin.MustBuild(t, "gemu/cmd/gemu-system-aarch64")
	q := runBoard(t, qemu, bin)
	g := runBoard(t, gemu, bin)
	t.Logf("QEMU: %s", q)
	if g != q {
		t.Errorf("gemu printed %q\nQEMU         %q", g, q)
	}
}

// rtcBaseProgram prints the PL031 count minus 2006-06-17T00:00:00Z, in minutes.
const rtcBaseProgram = `
	.text
	.global _start
_start:
	ldr x19, =0x09010000
	ldr w0, [x19]
	ldr w1, =1150502400
	sub w0, w0, w1
	mov w1, #60
	udiv w0, w0, w1
	bl puthex
	ldr x1, =0x09000000
	mov w2, #'\n'
	str w2, [x1]
	ldr x0, =0x84000008
	hvc #0
	b .
	.ltorg
`

// TestRTCBaseAsQEMU: with -rtc base=2006-06-17 the PL031 starts at that date under both.
func TestRTCBaseAsQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Skip("qemu-system-aarch64 not installed (apt-get install qemu-system-arm)")
	}
	bin := BuildSys(t, t.TempDir(), rtcBaseProgram)
	gemu := testbin.MustBuild(t, "gemu/cmd/gemu-system-aarch64")
	want := " 0000000000000000\n" // less than a minute after the base
	for _, prog := range []string{qemu, gemu} {
		if got := runBoard(t, prog, bin, "-rtc", "base=2006-06-17,clock=host"); got != want {
			t.Errorf("%s printed %q, want %q", prog, got, want)
		}
	}
}

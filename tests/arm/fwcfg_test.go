package armtest

import (
	"os/exec"
	"strings"
	"testing"

	"gemu/tests/testbin"
)

// fwcfgProgram drives the virt board's fw_cfg (MMIO at 0x09020000: data at +0,
// big-endian selector at +8, big-endian DMA address at +16) from EL1 and prints: the
// signature read bytewise and with one 8-byte access, the interface ID, the CPU count
// item, then it walks the file directory on the data register to the file whose name
// starts "opt/gemu", prints its size, reads it by DMA (select + read) and prints the
// DMA status word and the file's 16 bytes, then reads past its end by DMA (zero fill)
// and asks for a write (refused: the error bit).
const fwcfgProgram = `
	.equ FW, 0x09020000
	.text
	.global _start
_start:
	ldr x19, =FW
	mov w0, #0
	bl fwsel
	mov x6, #4
	bl rdle
	bl puthex
	mov w0, #0
	bl fwsel
	ldr x0, [x19]
	bl puthex
	mov w0, #1
	bl fwsel
	mov x6, #4
	bl rdle
	bl puthex
	mov w0, #5
	bl fwsel
	mov x6, #2
	bl rdle
	bl puthex
	// file directory: count, then {size, select, reserved, name[56]} big-endian
	mov w0, #0x19
	bl fwsel
	mov x6, #4
	bl rdbe
	mov x20, x0
	ldr x25, =0x756d65672f74706f // "opt/gemu" as a little-endian quad
1:	cbz x20, nofile
	sub x20, x20, #1
	mov x6, #4
	bl rdbe
	mov x21, x0 // size
	mov x6, #2
	bl rdbe
	mov x22, x0 // select
	mov x6, #2
	bl rdbe
	mov x6, #8
	bl rdle
	mov x23, x0 // first 8 name bytes
	mov x6, #48
	bl rdle
	cmp x23, x25
	b.ne 1b
	mov x0, x21
	bl puthex
	// DMA: control = select<<16 | SELECT | READ, length = size, address = buf
	ldr x24, =desc
	lsl w0, w22, #16
	add w0, w0, #0xa
	mov w1, w21
	ldr x2, =buf
	bl dma
	ldr x1, =buf
	ldr x0, [x1]
	bl puthex
	ldr x1, =buf
	ldr x0, [x1, #8]
	bl puthex
	// read 8 more: past the end, zero fill (over a non-zero buffer)
	ldr x1, =buf
	mov x0, #-1
	str x0, [x1]
	mov w0, #0x2
	mov w1, #8
	ldr x2, =buf
	bl dma
	ldr x1, =buf
	ldr x0, [x1]
	bl puthex
	// a write: no item is writable
	mov w0, #0x10
	mov w1, #4
	ldr x2, =buf
	bl dma
	b done
nofile:
	mov x0, #0xbad
	bl puthex
done:
	ldr x1, =0x09000000
	mov w2, #'\n'
	str w2, [x1]
	ldr x0, =0x84000008
	hvc #0
	b .

// fwsel selects key w0 (big-endian 16-bit store).
fwsel:
	rev16 w0, w0
	strh w0, [x19, #8]
	ret

// rdle reads x6 bytes from the data register; x0 = them as a little-endian number
// (the low 8 bytes).
rdle:
	mov x0, #0
	mov x4, #0
2:	cbz x6, 3f
	ldrb w5, [x19]
	cmp x4, #64
	b.ge 4f
	lsl x5, x5, x4
	orr x0, x0, x5
4:	add x4, x4, #8
	sub x6, x6, #1
	b 2b
3:	ret

// rdbe reads x6 bytes as a big-endian number.
rdbe:
	mov x0, #0
5:	cbz x6, 6f
	ldrb w5, [x19]
	lsl x0, x0, #8
	orr x0, x0, x5
	sub x6, x6, #1
	b 5b
6:	ret

// dma runs a transfer (control w0, length w1, address x2) from the descriptor at desc
// and prints the status word the device wrote back.
dma:
	mov x26, x30
	ldr x24, =desc
	rev w0, w0
	str w0, [x24]
	rev w1, w1
	str w1, [x24, #4]
	rev x2, x2
	str x2, [x24, #8]
	rev x0, x24
	str x0, [x19, #16]
	ldr w0, [x24]
	rev w0, w0
	bl puthex
	mov x30, x26
	ret
	.ltorg

	.data
	.balign 16
desc:	.skip 16
buf:	.skip 64
`

// TestFwCfgAsQEMU runs fwcfgProgram on both emulators with the same -fw_cfg item.
func TestFwCfgAsQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Skip("qemu-system-aarch64 not installed (apt-get install qemu-system-arm)")
	}
	bin := BuildSys(t, t.TempDir(), fwcfgProgram)
	gemu := testbin.MustBuild(t, "gemu/cmd/gemu-system-aarch64")
	args := []string{"-fw_cfg", "name=opt/gemu/test,string=0123456789abcdef", "-smp", "1"}
	q := runBoard(t, qemu, bin, args...)
	g := runBoard(t, gemu, bin, args...)
	want := " " + strings.Join([]string{
		"00000000554d4551", "00000000554d4551", // "QEMU" bytewise, and one 8-byte read (zero-padded)
		"0000000000000003",                                         // ID: traditional + DMA
		"0000000000000001",                                         // one CPU
		"0000000000000010",                                         // the file's size
		"0000000000000000", "3736353433323130", "6665646362613938", // DMA status, the 16 bytes
		"0000000000000000", "0000000000000000", // past the end: status 0, zeros
		"0000000000000001", // write refused: the error bit
	}, " ") + "\n"
	if q != want {
		t.Errorf("QEMU printed %q, want %q", q, want)
	}
	if g != q {
		t.Errorf("gemu printed %q, QEMU %q", g, q)
	}
}

/* Multiboot (v1) entry of the pcoracle guest: 32-bit protected mode, paging off,
   interrupts off. */
	.section .multiboot, "a"
	.align 4
	.long 0x1BADB002
	.long 0x00000000
	.long -(0x1BADB002 + 0x00000000)

	.text
	.globl _start
_start:
	cli
	mov $stack_top, %esp
	push %ebx
	push %eax
	call kmain
1:	hlt
	jmp 1b

	.bss
	.align 16
	.space 16384
stack_top:

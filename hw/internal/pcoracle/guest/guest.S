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
	mov %ebx, saved_ebx
	mov %eax, saved_eax
	mov $stack_top, %esp
	/* IDT: 256 interrupt gates to the stubs below, selector = our CS. */
	mov %cs, %bx
	xor %ecx, %ecx
1:	mov stubs(,%ecx,4), %eax
	mov %ax, idt(,%ecx,8)
	mov %bx, idt+2(,%ecx,8)
	movw $0x8e00, idt+4(,%ecx,8)
	shr $16, %eax
	mov %ax, idt+6(,%ecx,8)
	inc %ecx
	cmp $256, %ecx
	jne 1b
	lidt idtr
	mov saved_ebx, %ebx
	mov saved_eax, %eax
	push %ebx
	push %eax
	call kmain
1:	hlt
	jmp 1b

/* Interrupt stubs: record the vector, return with IF clear so that exactly one
   interrupt is taken per wait (the guest's op 11). */
	.set vec, 0
	.align 16
stub_start:
	.rept 256
	.align 16
	push $vec
	jmp common
	.set vec, vec+1
	.endr
common:
	push %eax
	mov 4(%esp), %eax
	mov %eax, last_vector
	movl $1, got_interrupt
	andl $~0x200, 16(%esp) /* saved EFLAGS: IF off */
	pop %eax
	add $4, %esp
	iret

	.data
	.align 4
stubs:
	.set vec, 0
	.rept 256
	.long stub_start + vec*16
	.set vec, vec+1
	.endr
idtr:
	.word 256*8-1
	.long idt
	.globl last_vector, got_interrupt
last_vector: .long 0
got_interrupt: .long 0
saved_ebx: .long 0
saved_eax: .long 0

	.bss
	.align 16
idt:
	.space 256*8
	.align 16
	.space 16384
stack_top:

# A 64 KiB BIOS image (linked at 0xf0000) that reads a list of MSRs in 32-bit protected
# mode and writes, per MSR, to port 0xe9 (little-endian dwords): the MSR number, then
# 0 and EDX:EAX when RDMSR succeeds or 13 and the error code when it raises #GP, then
# the same for a WRMSR of the value read (0 after a fault) and a RDMSR after it.
# Build: as --64 -o m.o msrs.S && ld -m elf_x86_64 -Ttext=0xf0000 --oformat binary
# -o msrs.bin m.o (msrs_code_test.go holds the bytes).

	.set idt32,  0x6000
	.set fault,  0x5000		# set by the #GP handler

	.code16
	.text
	.globl _start
_start:
	cli
	cld
	lgdtl %cs:(gdtr - _start)
	mov %cr0, %eax
	or $1, %eax
	mov %eax, %cr0
	ljmpl $0x08, $pm32

	.code32
out32:
	push %ecx
	mov $4, %ecx
1:	out %al, $0xe9
	shr $8, %eax
	dec %ecx
	jnz 1b
	pop %ecx
	ret

gp32:	movl $13, fault
	pop fault+4		# error code
	addl $2, (%esp)		# past RDMSR/WRMSR
	iret

# try: run the RDMSR/WRMSR at %ebx, then report fault or EDX:EAX.
report:
	cmpl $0, fault
	jne 1f
	push %eax
	xor %eax, %eax
	call out32
	pop %eax
	push %eax
	call out32
	mov %edx, %eax
	call out32
	pop %eax
	ret
1:	mov fault, %eax
	call out32
	mov fault+4, %eax
	call out32
	xor %eax, %eax
	call out32
	xor %eax, %eax
	xor %edx, %edx
	ret

pm32:
	mov $0x10, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov $0x8000, %esp
	mov $gp32, %eax
	mov %ax, idt32+8*13
	movw $0x08, idt32+8*13+2
	movw $0x8e00, idt32+8*13+4
	shr $16, %eax
	mov %ax, idt32+8*13+6
	lidt idtr32
	mov $msrs, %esi
next:
	mov (%esi), %ecx
	cmp $0xffffffff, %ecx
	je done
	mov %ecx, %eax
	call out32
	movl $0, fault
	xor %eax, %eax
	xor %edx, %edx
	rdmsr
	call report
	movl $0, fault
	mov (%esi), %ecx
	wrmsr
	call report
	movl $0, fault
	mov (%esi), %ecx
	xor %eax, %eax
	xor %edx, %edx
	rdmsr
	call report
	add $4, %esi
	jmp next
done:
	mov $0x454e4f44, %eax
	call out32
1:	hlt
	jmp 1b

	.balign 4
msrs:
	# architectural and Intel MSRs Linux reads (TSC at 0x10 is left out: it moves)
	.long 0x1b, 0x3a, 0x3b, 0x48, 0x49, 0x8b, 0xc1, 0xe7, 0xe8, 0xfe, 0x10a
	.long 0x174, 0x175, 0x176, 0x179, 0x17a, 0x17b, 0x198, 0x199, 0x1a0, 0x1d9
	.long 0x200, 0x201, 0x20e, 0x20f, 0x250, 0x258, 0x259, 0x268, 0x26f, 0x277, 0x2ff
	.long 0x400, 0x401, 0x402, 0x403, 0x424, 0x427, 0x428, 0x6e0
	# AMD MSRs Linux reads on family 0xf
	.long 0xc0010000, 0xc0010004, 0xc0010010, 0xc0010015, 0xc001001a, 0xc001001d
	.long 0xc001001f, 0xc0010055, 0xc0010058, 0xc0010114, 0xc0010117
	.long 0xc0010140, 0xc0010141, 0xc0011004, 0xc0011005, 0xc0011020, 0xc0011021
	.long 0xc0011022, 0xc0011029
	# x86-64 MSRs (EFER first would change the mode: its bits are read only)
	.long 0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084
	.long 0xc0000100, 0xc0000101, 0xc0000102, 0xc0000103
	# unknown
	.long 0x12345678, 0x40000000, 0x1234
	.long 0xffffffff

	.balign 8
gdt:
	.quad 0
	.quad 0x00cf9b000000ffff	# 0x08 code32
	.quad 0x00cf93000000ffff	# 0x10 data
gdt_end:
gdtr:
	.word gdt_end - gdt - 1
	.long gdt
idtr32:
	.word 256*8 - 1
	.long idt32

	.code16
	.org 0xfff0
	ljmp $0xf000, $(_start - 0xf0000)
	.org 0x10000

# An application-processor style bring-up: started by SIPI vector 0x08 (real mode,
# CS=0x0800, IP=0), it enters protected mode, enables PAE, long mode and paging, and
# far-jumps to 64-bit code. Loaded at 0x8000; page tables at 0x1000 (test).
	.text
	.code16
start:
	cli
	mov %cs,%ax
	mov %ax,%ds
	mov %ax,%ss
	mov $0x0f00,%sp
	call sub16			# real-mode near call: pushes IP, not the linear address
aftercall:
	movw $0x1234,r16 - start	# DS-relative store (DS base 0x8000)
	lgdtl gdtr - start
	mov %cr0,%eax
	or $1,%eax
	mov %eax,%cr0
	ljmpl $0x18,$(0x8000 + pm32 - start)
sub16:
	mov %sp,%bx
	mov (%bx),%ax			# the pushed return IP
	mov %ax,ip16 - start
	ret
	.code32
pm32:
	mov $0x10,%ax
	mov %ax,%ds
	mov %ax,%ss
	mov %ax,%es
	mov $0x9000,%esp
	mov %cr4,%eax
	or $0x20,%eax
	mov %eax,%cr4
	mov $0x1000,%eax
	mov %eax,%cr3
	mov $0xc0000080,%ecx
	rdmsr
	or $0x100,%eax
	wrmsr
	mov %cr0,%eax
	or $0x80000000,%eax
	mov %eax,%cr0
	ljmp $0x08,$(0x8000 + lm64 - start)
	.code64
lm64:
	call 1f
1:	pop %rax
	mov %rax,rip64(%rip)
	movl $0x64,done(%rip)
	cli
2:	hlt
	jmp 2b
	.balign 8
gdt:	.quad 0
	.quad 0x00af9b000000ffff	# 0x08 64-bit code
	.quad 0x00cf93000000ffff	# 0x10 data
	.quad 0x00cf9b000000ffff	# 0x18 32-bit code
gdtr:	.word 31
	.long 0x8000 + gdt - start
	.balign 8
r16:	.word 0
ip16:	.word 0
rip64:	.quad 0
done:	.long 0

# Loaded at 0x10000, entered in 64-bit mode at CPL 0 (paging identity-maps 2 MiB,
# user-accessible). The test builds the GDT (0x5000), IDT (0x6000) and TSS (0x7000).
	.text
	.code64
start:
	lgdt gdtr(%rip)
	lidt idtr(%rip)
	mov $0x30,%ax
	ltr %ax
	mov $0x10,%ax
	mov %ax,%ss
	mov %ax,%ds
	mov $0xc0000081,%ecx		# STAR: kernel CS 0x08, SYSRET base 0x18
	xor %eax,%eax
	mov $0x00180008,%edx
	wrmsr
	mov $0xc0000082,%ecx		# LSTAR
	lea sysentry(%rip),%rax
	xor %edx,%edx
	wrmsr
	mov $0xc0000084,%ecx		# FMASK: clear IF
	mov $0x200,%eax
	wrmsr
	mov $0xc0000080,%ecx		# EFER.SCE
	rdmsr
	or $1,%eax
	wrmsr
	pushq $0x23			# iretq to CPL 3
	pushq $0x1f0000
	pushq $0x202
	pushq $0x2b
	lea user(%rip),%rax
	push %rax
	iretq
sysentry:
	lea 1(%rdi),%rax
	mov %rax,sysres(%rip)
	sysretq
pf:
	mov %cr2,%rax
	mov %rax,pfcr2(%rip)
	pop %rax
	mov %rax,pferr(%rip)
	lea afterpf(%rip),%rax
	mov %rax,(%rsp)
	iretq
irq:
	incl irqs(%rip)
	iretq
gp:
	pop %rax
	mov %rax,gperr(%rip)
	mov 8(%rsp),%rax
	mov %rax,gpcs(%rip)
	movl $0xd0e,done(%rip)
	cli
1:	hlt
	jmp 1b
user:
	mov $41,%edi
	syscall
	mov %rax,%rbx
	movq $5,0x400000		# unmapped: #PF, error code 6 (user write, not present)
afterpf:
	lock incl ucount(%rip)
2:	cmpl $0,irqs(%rip)		# wait for the interrupt the test raises
	je 2b
	hlt				# privileged: #GP(0)
	.balign 16
gdtr:	.word 0x3f
	.quad 0x5000
idtr:	.word 0x40*16+15
	.quad 0x6000
sysres:	.quad 0
pfcr2:	.quad 0
pferr:	.quad 0
gperr:	.quad -1
gpcs:	.quad 0
irqs:	.long 0
ucount:	.long 0
done:	.long 0

# A 64 KiB BIOS image (linked at 0xf0000) that exercises SYSENTER/SYSEXIT and the
# IA32_SYSENTER_* MSRs and writes what it sees to port 0xe9 as little-endian dwords:
# a tag per step ("T" and the step number in the high bytes), then the values of that
# step. Faults go through #UD/#GP handlers that write "EXC!", the vector, the error
# code and the faulting CS, then skip the faulting instruction (its length is in
# `skip`). Build: as --64 -o s.o sysenter.S && ld -m elf_x86_64 -Ttext=0xf0000
# --oformat binary -o sysenter.bin s.o (sysenter_code_test.go holds the bytes).
#
# 32-bit protected mode: SYSENTER and SYSEXIT with SYSENTER_CS 0 (#GP), the MSRs read
# back, SYSENTER from CPL 0 (flags kept but IF), SYSEXIT to CPL 3, SYSEXIT at CPL 3
# (#GP), SYSENTER from CPL 3. Then long mode with SYSENTER_CS 0x28: SYSENTER from
# compatibility mode into the 64-bit entry (QEMU allows it whatever the vendor); on an
# AMD vendor SYSEXIT and SYSENTER in 64-bit mode are #UD; on Intel SYSEXIT goes to
# compatibility mode, SYSENTER back, SYSEXIT with REX.W to 64-bit CPL 3, SYSENTER
# back, SYSENTER from 64-bit CPL 0, then with SYSENTER_CS 0 both forms of SYSEXIT
# and SYSENTER (#GP). (QEMU does not check SYSEXIT's RCX/RDX for canonical form, which
# the SDM asks for and gemu does: no step tries it.)

	.set skip,   0x5000		# length of the instruction a handler skips
	.set phase,  0x5004		# what the SYSENTER entry does next
	.set sv_sp,  0x5008		# RSP and RFLAGS as a target found them
	.set sv_fl,  0x5010
	.set idt32,  0x6000
	.set idt64,  0x6800
	.set tss32,  0x7000
	.set pml4,   0x1000

	.macro TAG n
	mov $(0x54000000 + \n), %eax	# "T" + step
	call out32
	.endm
	.macro TAG64 n
	mov $(0x54000000 + \n), %eax
	call out64
	.endm

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
out32:				# EAX to port 0xe9, low byte first
	push %ecx
	mov $4, %ecx
1:	out %al, $0xe9
	shr $8, %eax
	dec %ecx
	jnz 1b
	pop %ecx
	ret

ud32:	push $0
	push $6
	jmp exc32
gp32:	push $13
exc32:	push %eax
	mov $0x21435845, %eax	# "EXC!"
	call out32
	mov 4(%esp), %eax	# vector
	call out32
	mov 8(%esp), %eax	# error code
	call out32
	mov 16(%esp), %eax	# CS of the faulting instruction
	call out32
	mov skip, %eax
	add %eax, 12(%esp)	# past it
	pop %eax
	add $8, %esp
	iret

# gate32 vector, handler: a 32-bit interrupt gate in idt32.
	.macro GATE32 v, h
	mov $\h, %eax
	mov %ax, idt32+8*\v
	movw $0x08, idt32+8*\v+2
	movw $0x8e00, idt32+8*\v+4
	shr $16, %eax
	mov %ax, idt32+8*\v+6
	.endm

	.macro SETMSR n, hi, lo
	mov $\n, %ecx
	mov $\hi, %edx
	mov $\lo, %eax
	wrmsr
	.endm

	.macro SHOWMSR n
	mov $\n, %ecx
	rdmsr
	call out32
	mov %edx, %eax
	call out32
	.endm

	# Registers as the SYSENTER/SYSEXIT target sees them: SAVE32 first (before
	# anything changes ESP or the flags), then TAG, then STATE32.
	.macro SAVE32
	mov %esp, sv_sp
	pushf
	popl sv_fl
	.endm
	.macro STATE32
	mov %cs, %eax
	call out32
	mov %ss, %eax
	call out32
	mov sv_sp, %eax
	call out32
	mov sv_fl, %eax
	and $0x3fd7, %eax	# the flags no step controls (RF, VM, AC...) left out
	call out32
	.endm

pm32:
	mov $0x10, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov %ax, %fs
	mov %ax, %gs
	mov $0x8000, %esp
	pushf
	orl $0x3000, (%esp)	# IOPL 3: ring 3 writes to port 0xe9 too
	popf
	GATE32 6, ud32
	GATE32 13, gp32
	movl $0x9000, tss32+4	# ESP0
	movl $0x10, tss32+8	# SS0
	lidt idtr32
	mov $0x58, %ax
	ltr %ax
	movl $2, skip

	TAG 1			# SYSENTER_CS is 0 after reset: #GP(0)
	sysenter
	TAG 2			# so is SYSEXIT
	sysexit

	TAG 3			# the MSRs read back
	SETMSR 0x174, 0x00000001, 0xabcd0008
	SETMSR 0x175, 0x12345678, 0x00009000
	SETMSR 0x176, 0x00000001, entry32
	SHOWMSR 0x174
	SHOWMSR 0x175
	SHOWMSR 0x176
	SETMSR 0x174, 0, 0x08

	TAG 4			# SYSENTER from CPL 0 with CF and IF set
	movl $1, phase
	mov $0x1111, %ecx
	mov $0x2222, %edx
	stc
	sti
	sysenter

entry32:			# SYSENTER_EIP in legacy mode
	SAVE32
	TAG 0x10
	STATE32
	cmpl $1, phase
	jne 1f
	mov $0xa000, %ecx	# to CPL 3
	mov $user32, %edx
	sysexit
1:	jmp part2

user32:
	SAVE32
	TAG 5
	STATE32
	TAG 6			# SYSEXIT at CPL 3: #GP(0)
	sysexit
	TAG 7			# SYSENTER from CPL 3
	movl $2, phase
	sysenter

	# Long mode: identity-map 2 MiB, 64-bit IDT, EFER.LME, paging on; CS 0x08
	# stays a 32-bit segment: compatibility mode.
part2:
	movl $0x2007, pml4	# user-accessible: the CPL 3 steps run on it too
	movl $0x3007, 0x2000
	movl $0x87, 0x3000
	mov $idt64, %edi	# #UD and #GP gates: 64-bit interrupt gates to CS 0x28
	mov $ud64, %eax
	mov %ax, 6*16(%edi)
	movw $0x28, 6*16+2(%edi)
	movw $0x8e00, 6*16+4(%edi)
	shr $16, %eax
	mov %ax, 6*16+6(%edi)
	mov $gp64, %eax
	mov %ax, 13*16(%edi)
	movw $0x28, 13*16+2(%edi)
	movw $0x8e00, 13*16+4(%edi)
	shr $16, %eax
	mov %ax, 13*16+6(%edi)
	lidt idtr64
	mov %cr4, %eax
	or $0x20, %eax		# PAE
	mov %eax, %cr4
	mov $pml4, %eax
	mov %eax, %cr3
	mov $0xc0000080, %ecx
	rdmsr
	or $0x100, %eax		# LME
	wrmsr
	mov %cr0, %eax
	or $0x80000000, %eax
	mov %eax, %cr0
	SETMSR 0x174, 0, 0x28
	SETMSR 0x175, 0, 0x9800
	SETMSR 0x176, 0, entry64
	mov $0x8000, %esp
	TAG 8			# SYSENTER from compatibility mode (QEMU: valid for AMD too)
	movl $3, phase
	sysenter

user_compat:			# Intel: SYSEXIT (no REX.W) from the 64-bit kernel
	SAVE32
	TAG 9
	STATE32
	movl $4, phase
	sysenter

	.code64
out64:
	push %rcx
	mov $4, %ecx
1:	out %al, $0xe9
	shr $8, %eax
	dec %ecx
	jnz 1b
	pop %rcx
	ret

	.macro SAVE64
	mov %rsp, sv_sp
	pushfq
	popq sv_fl
	.endm
	.macro STATE64
	mov %cs, %eax
	call out64
	mov %ss, %eax
	call out64
	mov sv_sp, %eax
	call out64
	mov sv_sp+4, %eax
	call out64
	mov sv_fl, %eax
	and $0x3fd7, %eax
	call out64
	.endm

ud64:	push $0
	push $6
	jmp exc64
gp64:	push $13
exc64:	push %rax
	mov $0x21435845, %eax
	call out64
	mov 8(%rsp), %rax
	call out64
	mov 16(%rsp), %rax
	call out64
	mov 32(%rsp), %rax	# CS
	call out64
	mov skip, %eax
	add %rax, 24(%rsp)
	pop %rax
	add $16, %rsp
	iretq

entry64:			# Intel: SYSENTER_EIP in IA-32e mode
	SAVE64
	TAG64 0x20
	STATE64
	mov phase, %eax
	cmp $3, %eax
	jne 1f
	mov $0xa000, %ecx	# to compatibility mode, CPL 3
	mov $user_compat, %edx
	sysexit
	jmp k64			# AMD: #UD in 64-bit mode
1:	cmp $4, %eax
	jne 1f
	mov $0xa800, %ecx	# REX.W: to 64-bit mode, CPL 3
	mov $user64, %edx
	.byte 0x48
	sysexit
1:	cmp $5, %eax
	je k64
	jmp k64_2

user64:
	SAVE64
	TAG64 10
	STATE64
	movl $5, phase
	sysenter

k64:				# 64-bit mode, CPL 0 (AMD: by the far jump)
	SAVE64
	mov $0x8000, %rsp
	TAG64 11
	STATE64
	movl $2, skip
	TAG64 12		# AMD: #UD; Intel: to entry64, which goes on at k64_2
	movl $6, phase
	sysenter
k64_2:
	mov $0x8000, %rsp
	TAG64 13		# AMD: #UD; Intel: REX.W SYSEXIT at CPL 0 with SYSENTER_CS 0, #GP(0)
	mov $0x174, %ecx
	xor %eax, %eax
	xor %edx, %edx
	wrmsr
	movl $3, skip
	mov $0xa000, %ecx
	mov $user64, %edx
	.byte 0x48
	sysexit
	TAG64 14		# and SYSENTER: AMD #UD, Intel #GP(0)
	movl $2, skip
	sysenter
	TAG64 15		# and SYSEXIT without REX.W: AMD #UD, Intel #GP(0)
	sysexit
	mov $0x454e4f44, %eax	# "DONE"
	call out64
1:	hlt
	jmp 1b

	.balign 8
gdt:
	.quad 0
	.quad 0x00cf9b000000ffff	# 0x08 code32, DPL 0
	.quad 0x00cf93000000ffff	# 0x10 data
	.quad 0x00cffb000000ffff	# 0x18 code32, DPL 3
	.quad 0x00cff3000000ffff	# 0x20 data, DPL 3
	.quad 0x00af9b000000ffff	# 0x28 code64, DPL 0
	.quad 0x00cf93000000ffff	# 0x30 data
	.quad 0x00cffb000000ffff	# 0x38 code32, DPL 3
	.quad 0x00cff3000000ffff	# 0x40 data, DPL 3
	.quad 0x00affb000000ffff	# 0x48 code64, DPL 3
	.quad 0x00cff3000000ffff	# 0x50 data, DPL 3
	.quad 0x0000890070000067	# 0x58 32-bit TSS at 0x7000
gdt_end:
gdtr:
	.word gdt_end - gdt - 1
	.long gdt
idtr32:
	.word 256*8 - 1
	.long idt32
idtr64:
	.word 256*16 - 1
	.quad idt64

	.code16
	.org 0xfff0
	ljmp $0xf000, $(_start - 0xf0000)
	.org 0x10000

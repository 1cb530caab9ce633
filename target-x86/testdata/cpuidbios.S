# A 64 KiB BIOS image: from the reset vector, in real mode, run CPUID for a list of
# leaves and write EAX, EBX, ECX, EDX (little-endian) of each to port 0xe9, then halt.
	.code16
	.text
start:
	cli
	xor %ax,%ax
	mov %ax,%ss
	mov $0x7000,%sp
	mov %cs,%ax
	mov %ax,%ds
	mov $leaves,%si
1:	mov (%si),%eax
	cmp $0xffffffff,%eax
	je 3f
	xor %ecx,%ecx
	cpuid
	call out32
	mov %ebx,%eax
	call out32
	mov %ecx,%eax
	call out32
	mov %edx,%eax
	call out32
	add $4,%si
	jmp 1b
3:	hlt
	jmp 3b
out32:
	mov $4,%di
2:	out %al,$0xe9
	shr $8,%eax
	dec %di
	jnz 2b
	ret
	.balign 4
leaves:
	.long 0, 1, 0x80000000, 0x80000001, 0x80000002, 0x80000003, 0x80000004
	.long 0x80000005, 0x80000006, 0x80000008, 0xffffffff
	.org 0xfff0
	ljmp $0xf000,$start
	.org 0x10000

# Two vCPUs run this at once (RDI = iterations): a LOCK XADD counter, a LOCK CMPXCHG
# retry loop on a second counter, a LOCK BTS/BTR-protected critical section doing a
# plain read-increment-write of a third counter, and a CMPXCHG16B pair counter.
	.text
	.code64
start:
	mov %rdi,%rcx
1:	mov $1,%eax
	lock xadd %eax,c1(%rip)
2:	mov c2(%rip),%eax		# CMPXCHG loop
	lea 1(%rax),%edx
	lock cmpxchg %edx,c2(%rip)
	jnz 2b
3:	lock btsl $0,lockw(%rip)	# spin lock
	jc 3b
	mov c3(%rip),%eax		# plain RMW inside the lock
	inc %eax
	mov %eax,c3(%rip)
	lock btrl $0,lockw(%rip)
4:	mov p16(%rip),%rax		# 16-byte CAS: both halves count
	mov p16+8(%rip),%rdx
	lea 1(%rax),%rbx
	lea 1(%rdx),%rcx
	lock cmpxchg16b p16(%rip)
	jnz 4b
	dec %rdi
	jnz 1b
	lock incl finished(%rip)
	cli
5:	hlt
	jmp 5b
	.balign 16
p16:	.quad 0, 0
c1:	.long 0
c2:	.long 0
c3:	.long 0
lockw:	.long 0
finished: .long 0

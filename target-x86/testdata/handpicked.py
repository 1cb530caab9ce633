#!/usr/bin/env python3
"""Generates handpicked_amd64_test.go: hand-picked instruction sequences for the
differential tests, assembled by GNU as (an independent oracle for the encodings).

Run from target-x86/: python3 testdata/handpicked.py > handpicked_amd64_test.go
Each entry: (GNU assembler text, Go expression for the compared RFLAGS bits, flags)
where flags has 'x' (compare XMM0-3) or 'F<vec>' / 'F<vec>:<err>' (a faulting case
run only in the translator: expected vector and error code; 'c2' checks CR2 == 0x1000,
'n' says the saved RIP is the end of the code, a trap, rather than the last instruction).
"""
import subprocess, tempfile, os, sys, json

A = "flagsArith"
AD = "flagsArith | flagDF"
CO = "flagCF | flagOF"
N = "0"
# The fxsave case clears MXCSR_MASK (bytes 28-31), a model property: this host reports
# 0x2ffff, gemu QEMU's 0xffff; XMM4-15 (bytes 224-415), which only the host has loaded;
# and ST0-7 (bytes 32-159), which hold whatever earlier host x87 code left.
cases = [
    # ALU, all forms the generator also covers, at boundary values.
    ("mov $0x7f,%al; add $1,%al", A, ""),
    ("mov $0xff,%ah; add %ah,%ah", A, ""),
    ("stc; mov $-1,%rbx; adc $0,%rbx", A, ""),
    ("stc; mov $0,%ebx; sbb $0,%bx", A, ""),
    ("mov $0x80000000,%eax; sub $1,%eax", A, ""),
    ("xor %eax,%eax", A, ""),
    ("mov $0x8000000000000000,%rax; neg %rax", A, ""),
    ("xor %eax,%eax; neg %rax", A, ""),
    ("mov $0xf,%al; inc %al", A, ""),
    ("mov $0x80,%cl; dec %cl", A, ""),
    ("cmp %rsp,%rax", A, ""),
    ("lock addq $1,(%rsp)", A, ""),
    ("lock incl 8(%rsp)", A, ""),
    ("lock notw 2(%rsp)", A, ""),
    ("lock negb 3(%rsp)", A, ""),
    ("lock xaddq %rax,8(%rsp)", A, ""),
    ("lock cmpxchg %rcx,(%rsp)", A, ""),
    ("mov (%rsp),%rax; lock cmpxchg %rcx,(%rsp)", A, ""),
    ("lock btsl $5,(%rsp)", "flagCF", ""),
    ("mov $-9,%rax; lock btrq %rax,16(%rsp)", "flagCF", ""),
    ("mov $100,%eax; btc %eax,(%rsp)", "flagCF", ""),
    ("bt $70,%eax", "flagCF", ""),
    ("xchg %rax,(%rsp)", A, ""),
    ("xchg %ah,%bl", A, ""),
    ("xchg %eax,%eax", A, ""),
    ("xchg %r8,%rax", A, ""),
    # Shifts and rotates at edge counts.
    ("shl $0,%rax", A, ""),
    ("shl $1,%al", "flagsArith &^ flagAF", ""),
    ("mov $0x80,%al; shl $1,%al", "flagsArith &^ flagAF", ""),
    ("sar $63,%rax", "flagsArith &^ (flagAF | flagOF)", ""),
    ("mov $33,%cl; shr %cl,%eax", "flagsArith &^ (flagAF | flagOF)", ""),
    ("mov $32,%cl; shl %cl,%eax", A, ""),
    ("mov $9,%cl; shl %cl,%bl", "flagsArith &^ (flagAF | flagOF | flagCF)", ""),
    ("rcl $1,%r9b", A, ""),
    ("mov $17,%cl; rcr %cl,%dx", "flagsArith &^ flagOF", ""),
    ("mov $9,%cl; rcl %cl,%al", "flagsArith &^ flagOF", ""),
    ("rol $8,%al", "flagsArith &^ flagOF", ""),
    ("ror $65,%rax", A, ""),
    ("ror $1,%eax", A, ""),
    ("shrd $4,%rbx,%rax", "flagsArith &^ (flagAF | flagOF)", ""),
    ("mov $1,%cl; shld %cl,%bx,%ax", "flagsArith &^ flagAF", ""),
    ("mov $16,%cl; shrd %cl,%bx,%ax", "flagsArith &^ (flagAF | flagOF)", ""),
    # Multiply and divide.
    ("mulb %bl", CO, ""),
    ("mulq %rbx", CO, ""),
    ("imulq %rcx", CO, ""),
    ("imulb %cl", CO, ""),
    ("mov $-1,%rax; mov $-1,%rcx; imul %rcx", CO, ""),
    ("imul $-3,%rax,%rdx", CO, ""),
    ("imul $0x7fffffff,%r8d,%r9d", CO, ""),
    ("mov $5,%eax; xor %edx,%edx; mov $3,%ecx; div %ecx", N, ""),
    ("mov $-7,%rax; cqo; mov $2,%rcx; idiv %rcx", N, ""),
    ("mov $0x8000,%ax; cwd; mov $-1,%cx; mov $0x1,%cx; idiv %cx", N, ""),
    ("mov $-128,%ax; mov $-1,%cl; idiv %cl", N, "F0"),
    ("xor %ecx,%ecx; div %ecx", N, "F0"),
    ("mov $1,%edx; mov $1,%ecx; div %ecx", N, "F0"),
    ("mov $0x8000000000000000,%rax; cqo; mov $-1,%rcx; idiv %rcx", N, "F0"),
    # Bit scans and counts (BSF/BSR leave the destination unchanged on zero input).
    ("xor %ebx,%ebx; mov $-1,%rax; bsf %rbx,%rax", "flagZF", ""),
    ("mov $0x80,%ebx; bsr %ebx,%eax", "flagZF", ""),
    ("xor %ebx,%ebx; tzcnt %ebx,%eax", "flagCF | flagZF", ""),
    ("mov $1,%ebx; lzcnt %bx,%ax", "flagCF | flagZF", ""),
    ("popcnt %rbx,%rax", A, ""),
    # Moves, extensions, LEA, CMOV/SETcc.
    ("movzbl %ah,%ebx", A, ""),
    ("movsbw %al,%cx", A, ""),
    ("movslq %eax,%rbx", A, ""),
    ("movswq 2(%rsp),%r11", A, ""),
    ("lea (%rax,%rbx,8),%ecx", A, ""),
    ("lea 0x10(%eax),%ecx", A, ""),
    ("lea -8(%rsp,%rcx,2),%r15w", A, ""),
    ("lea 1f(%rip),%rax; 1:", A, ""),
    ("mov 0x1000(%rip),%rax; mov %rax,0xff0(%rip)", A, ""),
    ("cmp %rax,%rbx; cmovnz %ebx,%ecx", A, ""),
    ("cmp %rax,%rax; cmovnz %ebx,%ecx", A, ""),
    ("cmp %rax,%rbx; setl %ah; setg %bl; setbe %r10b", A, ""),
    ("movabs $0x123456789abcdef0,%r12", A, ""),
    ("mov $-1,%eax; mov %al,%bh; mov %bh,%cl; mov %cl,%r9b", A, ""),
    ("bswap %rax; bswap %r11d", A, ""),
    ("cbw; cwde; cdqe", A, ""),
    ("cwd; cdq; cqo", A, ""),
    ("lahf; mov %ah,%bl; sahf", A, ""),
    ("cmc; clc; stc; cmc", A, ""),
    ("lea -0x100(%rsp),%rbx; xlat", A, ""),
    ("nopw 0x0(%rax,%rax,1); nopl (%rax); endbr64; pause; data16 nop; .byte 0x0f,0x1f,0x00", A, ""),
    # Stack.
    ("push %rsp; pop %rbx", A, ""),
    ("pop %rsp", A, ""),
    ("push %rax; pushw $0x1234; pop %cx; pop %rdx", A, ""),
    ("pushq (%rsp); popq 8(%rsp)", A, ""),
    ("pushfq; andl $0xcd5,(%rsp); pop %rax", A, ""),
    ("push $0x8d5; popfq", A, ""),
    ("push $0; popfq; pushfq; andl $0xcd5,(%rsp); pop %rax", A, ""),
    ("enter $16,$0; leave", A, ""),
    ("lea 0x40(%rsp),%rbp; enter $8,$3; mov %rsp,%rax; leave", A, ""),
    # Control flow.
    ("cmp %rax,%rbx; jl 1f; inc %rcx; 1: nop", A, ""),
    ("cmp %rax,%rbx; jge 1f; inc %rcx; 1: nop", A, ""),
    ("test %eax,%eax; jz 1f; jmp 2f; 1: inc %rdx; 2: nop", A, ""),
    ("call 1f; 1: pop %rax", A, ""),
    ("lea 2f(%rip),%rax; jmp *%rax; inc %rbx; 2: nop", A, ""),
    ("lea 2f(%rip),%rax; push %rax; ret; inc %rbx; 2: nop", A, ""),
    ("lea 2f(%rip),%rax; push %rax; push %rax; ret $8; inc %rbx; 2: nop", A, ""),
    ("lea 1f(%rip),%rax; mov %rax,(%rsp); call *(%rsp); 1: pop %rbx", A, ""),
    ("mov $5,%ecx; 1: inc %rax; loop 1b", A, ""),
    ("mov $5,%ecx; xor %eax,%eax; 1: inc %rax; cmp $3,%rax; loopne 1b", A, ""),
    ("xor %ecx,%ecx; jrcxz 1f; inc %rax; 1: nop", A, ""),
    ("mov $1,%ecx; jecxz 1f; inc %rax; 1: nop", A, ""),
    ("mov $100,%ecx; 1: dec %ecx; jnz 1b", A, ""),
    ("jmp 1f; .fill 300,1,0x90; 1: inc %rax", A, ""),
    # String instructions with REP/REPE/REPNE, both directions.
    ("lea -0x200(%rsp),%rsi; lea -0x100(%rsp),%rdi; mov $17,%ecx; rep movsb", AD, ""),
    ("lea -0x200(%rsp),%rsi; lea -0x100(%rsp),%rdi; mov $9,%ecx; rep movsq", AD, ""),
    ("std; lea 0x200(%rsp),%rsi; lea 0x100(%rsp),%rdi; mov $13,%ecx; rep movsw", AD, ""),
    ("lea -0x200(%rsp),%rdi; mov $7,%ecx; rep stosl", AD, ""),
    ("lea -0x200(%rsp),%rdi; xor %ecx,%ecx; rep stosb", AD, ""),
    ("lea -0x200(%rsp),%rsi; lodsw; lodsq", AD, ""),
    ("lea -0x200(%rsp),%rsi; mov %rsi,%rdi; mov $20,%ecx; repe cmpsb", AD, ""),
    ("lea -0x200(%rsp),%rsi; lea -0x1f0(%rsp),%rdi; mov $20,%ecx; repe cmpsb", AD, ""),
    ("lea -0x200(%rsp),%rdi; mov -0x1f8(%rsp),%al; mov $40,%ecx; repne scasb", AD, ""),
    ("lea -0x200(%rsp),%rdi; mov $40,%ecx; repne scasl", AD, ""),
    ("std; lea 0x100(%rsp),%rdi; mov $5,%ecx; rep stosq; cld", AD, ""),
    ("lea -0x200(%rsp),%rsi; lea -0x1ff(%rsp),%rdi; mov $40,%ecx; rep movsb", AD, ""),
    ("lea -0x200(%rsp),%rsi; lea -0x1fc(%rsp),%rdi; mov $20,%ecx; rep movsq", AD, ""),
    ("lea -0x300(%rsp),%rsi; lea -0x200(%rsp),%rdi; mov $100,%ecx; rep movsq", AD, ""),
    ("lea -0x301(%rsp),%rdi; mov $333,%ecx; rep stosw", AD, ""),
    # SSE2 moves and integer ops.
    ("movdqu (%rsp),%xmm0; pxor %xmm1,%xmm0; movdqu %xmm0,16(%rsp)", A, "x"),
    ("and $-16,%rsp; movdqa (%rsp),%xmm2; movaps %xmm2,%xmm3; movaps %xmm3,32(%rsp)", A, "x"),
    ("movups 3(%rsp),%xmm1; movupd %xmm1,%xmm2; movdqu %xmm2,5(%rsp)", A, "x"),
    ("pcmpeqb %xmm1,%xmm2; pmovmskb %xmm2,%eax", A, "x"),
    ("movdqa %xmm1,%xmm2; pcmpeqb %xmm1,%xmm2; pmovmskb %xmm2,%ecx", A, "x"),
    ("movd %eax,%xmm1; pshufd $0,%xmm1,%xmm1; movq %xmm1,%rbx", A, "x"),
    ("movq %rax,%xmm3; movd %xmm3,%ecx; movq %xmm3,8(%rsp); movq 16(%rsp),%xmm2", A, "x"),
    ("punpcklbw %xmm1,%xmm0; punpckhwd %xmm2,%xmm3", A, "x"),
    ("punpckldq %xmm1,%xmm0; punpckhqdq %xmm2,%xmm3; punpcklqdq %xmm1,%xmm2", A, "x"),
    ("psrldq $3,%xmm0; pslldq $5,%xmm1; psrlq $7,%xmm2; psllw $3,%xmm3", A, "x"),
    ("psrad $31,%xmm0; psraw $4,%xmm1; psrld $40,%xmm2", A, "x"),
    ("psubb %xmm1,%xmm0; paddq %xmm2,%xmm3; paddd %xmm0,%xmm1; psubw %xmm3,%xmm2", A, "x"),
    ("pminub %xmm1,%xmm0; pmaxub %xmm3,%xmm2; pcmpgtb %xmm0,%xmm1; pcmpeqd %xmm2,%xmm3", A, "x"),
    ("por %xmm1,%xmm0; pand %xmm3,%xmm2; pandn %xmm0,%xmm1; xorps %xmm3,%xmm3", A, "x"),
    ("andps %xmm1,%xmm0; orpd %xmm2,%xmm3; andnps %xmm0,%xmm2; xorpd %xmm1,%xmm1", A, "x"),
    ("movhps 8(%rsp),%xmm0; movlps 24(%rsp),%xmm1; movhpd %xmm2,32(%rsp); movlpd %xmm3,40(%rsp)", A, "x"),
    ("movhlps %xmm1,%xmm0; movlhps %xmm3,%xmm2", A, "x"),
    ("unpcklps %xmm1,%xmm0; unpckhps %xmm3,%xmm2; unpcklpd %xmm0,%xmm1", A, "x"),
    ("movss 4(%rsp),%xmm0; movss %xmm1,%xmm2; movsd 8(%rsp),%xmm3; movsd %xmm0,16(%rsp)", A, "x"),
    ("pshuflw $0x1b,%xmm1,%xmm0; pshufhw $0xe4,%xmm2,%xmm3; psadbw %xmm1,%xmm2", A, "x"),
    ("psrlw %xmm1,%xmm0; pslld %xmm2,%xmm3", A, "x"),
    ("movnti %rax,8(%rsp); and $-16,%rsp; movntdq %xmm1,(%rsp); sfence; lfence; mfence", A, "x"),
    ("movl $0x1f80,-4(%rsp); ldmxcsr -4(%rsp); sub $512,%rsp; and $-16,%rsp; fxsave (%rsp); movl $0,28(%rsp); lea 224(%rsp),%rdi; xor %eax,%eax; mov $192,%ecx; rep stosb; lea 32(%rsp),%rdi; mov $128,%ecx; rep stosb; pxor %xmm0,%xmm0; fxrstor (%rsp); add $512,%rsp", A, "x"),
    ("movl $0x1f80,(%rsp); ldmxcsr (%rsp); stmxcsr 8(%rsp); movl $0x7f80,(%rsp); ldmxcsr (%rsp); stmxcsr 12(%rsp)", A, "x"),
    # x87 (values exact in double precision: gemu's registers are float64; FSW
    # exception flags other than IE are not modelled, so those bits are masked).
    ("fninit; movl $7,(%rsp); fildl (%rsp); movl $-3,4(%rsp); fiaddl 4(%rsp); fistpl 8(%rsp); fnstsw 12(%rsp)", A, ""),
    ("fninit; fld1; fldz; faddp; fld1; fadd %st(0),%st; fmulp; fstpl 8(%rsp); fnstsw 16(%rsp)", A, ""),
    ("fninit; movq $12,(%rsp); fildq (%rsp); movw $5,8(%rsp); fisubrs 8(%rsp); fstps 16(%rsp); fnstcw 20(%rsp)", A, ""),
    ("fninit; movl $9,(%rsp); fildl (%rsp); fsqrt; fchs; fabs; fld1; fxch; fsub %st(1),%st; fstpt 16(%rsp); fstpl 32(%rsp)", A, ""),
    ("fninit; movl $10,(%rsp); fildl (%rsp); movl $4,4(%rsp); fidivl 4(%rsp); frndint; fistps 8(%rsp); fnstsw %ax; and $0x3800,%eax", A, ""),
    ("fninit; movl $10,(%rsp); fildl (%rsp); movl $4,4(%rsp); fidivl 4(%rsp); fisttpl 8(%rsp); fnstsw %ax; and $0x3800,%eax", A, ""),
    ("fninit; fld1; fldz; fcomi %st(1),%st; setb %al; fucomip %st(1),%st; setz %ah; fstp %st(0)", A, ""),
    ("fninit; fldz; fld1; fcom %st(1); fnstsw %ax; mov %ax,%dx; fcompp; fnstsw %ax; mov %ax,%bx; ftst; fxam; fnstsw %ax", A, ""),
    ("fninit; fldpi; fldl2e; fldln2; fstpl (%rsp); fstpl 8(%rsp); fstpl 16(%rsp)", A, ""),
    ("fninit; movl $3,(%rsp); fildl (%rsp); fld1; fscale; fstpl 8(%rsp); fstp %st(0); fld1; fchs; fsqrt; fstpl 16(%rsp)", A, ""),
    ("fninit; movl $0x40490fdb,(%rsp); flds (%rsp); movl $0x3f800000,4(%rsp); fadds 4(%rsp); fstpl 8(%rsp)", A, ""),
    ("fninit; movq $-1,(%rsp); fildq (%rsp); movw $0x0c7f,8(%rsp); fldcw 8(%rsp); fld1; fadd %st(0),%st; faddp %st,%st(1); fistpq 16(%rsp); fninit", A, ""),
    ("fninit; fld1; fld1; fld1; stc; fcmovb %st(2),%st; fcmovne %st(1),%st; fstpl 8(%rsp); fninit", A, ""),
    # EMMS empties every tag (Linux's FXSAVE-leak workaround on AMD-vendor CPUs runs
    # fnclex; emms; fildl before restoring a task's FPU state).
    ("fninit; fld1; emms; fxam; fnstsw %ax; fninit", A, ""),
    ("fninit; fld1; fld1; fld1; fld1; fld1; fld1; fld1; fld1; fnclex; emms; movl $5,(%rsp); fildl (%rsp); fxam; fnstsw %ax; fistpl 8(%rsp); fninit", A, ""),
    # The forms lower.go emits as IR, at each operand size and with memory operands:
    # flags after ADD/ADC/SUB/SBB/NEG/CMP/TEST at boundary values, INC/DEC keeping CF,
    # shifts and rotates by immediate counts (1, >1, the width and beyond, masked to 0).
    ("mov $0x7fff,%ax; add $1,%ax", A, ""),
    ("movw $0xffff,(%rsp); addw $1,(%rsp)", A, ""),
    ("movb $0x80,2(%rsp); subb $1,2(%rsp)", A, ""),
    ("stc; movl $-1,4(%rsp); adcl $0,4(%rsp)", A, ""),
    ("stc; movq $-1,8(%rsp); adc 8(%rsp),%rax", A, ""),
    ("stc; mov %rbx,%rax; sbb %rbx,%rax", A, ""),
    ("stc; sbb %ah,%bh", A, ""),
    ("stc; sbbw 2(%rsp),%cx", A, ""),
    ("stc; incl 4(%rsp)", A, ""),
    ("clc; mov $0x8000,%r12w; dec %r12w", A, ""),
    ("stc; mov $0xff,%ah; incb %ah", A, ""),
    ("mov $0x8000,%dx; neg %dx", A, ""),
    ("negb 1(%rsp); notl 4(%rsp); notw %si", A, ""),
    ("testb $0x80,%bh; setnz %al", A, ""),
    ("test %ax,2(%rsp)", A, ""),
    ("cmp 8(%rsp),%r9b", A, ""),
    ("cmpw $-1,(%rsp)", A, ""),
    ("xor 8(%rsp),%ecx; or %ecx,12(%rsp)", A, ""),
    ("andb $0x0f,%dil; orw $0x100,%bp", A, ""),
    ("shl $1,%bh", "flagsArith &^ flagAF", ""),
    ("shl $7,%dh", "flagsArith &^ (flagAF | flagOF)", ""),
    ("shr $31,%eax", "flagsArith &^ (flagAF | flagOF)", ""),
    ("shrq $1,8(%rsp)", "flagsArith &^ flagAF", ""),
    ("sar $1,%cx", "flagsArith &^ flagAF", ""),
    ("sarb $7,3(%rsp)", "flagsArith &^ (flagAF | flagOF)", ""),
    ("shl $16,%ax", "flagsArith &^ (flagAF | flagOF | flagCF)", ""),
    ("shl $32,%eax", A, ""),
    ("rol $1,%bx", A, ""),
    ("ror $3,%ecx", "flagsArith &^ flagOF", ""),
    ("rolb $9,(%rsp)", A, ""),
    ("rorq $1,8(%rsp)", A, ""),
    ("imul %rbx,%rax", CO, ""),
    ("mov $-1,%rax; mov $0x8000000000000000,%rbx; imul %rbx,%rax", CO, ""),
    ("mov $0x8000000000000000,%rax; mov $-1,%rbx; imul %rbx,%rax", CO, ""),
    ("xor %eax,%eax; imul %rbx,%rax", CO, ""),
    ("mov $0x100000000,%rax; imul %rax,%rax", CO, ""),
    ("imul 8(%rsp),%ecx", CO, ""),
    ("imul $3,4(%rsp),%r8", CO, ""),
    ("movzbw 3(%rsp),%r10w; movsbl %bh,%edx; movzwq 6(%rsp),%rax; movsbq 1(%rsp),%rsi", A, ""),
    ("mov %ch,3(%rsp); mov 3(%rsp),%dh; movw $0x1234,6(%rsp); mov 6(%rsp),%si; movb $-1,%bh", A, ""),
    ("cmp %rax,%rbx; cmovbe 8(%rsp),%r11; cmovg (%rsp),%dx; cmovp %rcx,%rdx; cmovo %eax,%ebx", A, ""),
    ("cmp %eax,%ebx; seta 1(%rsp); setle 2(%rsp); sets %sil; mov (%rsp),%rax", A, ""),
    ("movslq 4(%rsp),%rcx; movsxd %eax,%edx", A, ""),
    ("pushq $-5; pushq 8(%rsp); pop %rax; pop %rcx", A, ""),
    ("lea 1f(%rip),%rax; push %rax; call *(%rsp); 1: pop %rbx; pop %rcx", A, ""),
    # Rotates after a pending lazy record keep its SF/ZF/AF/PF and override CF/OF.
    ("add %rbx,%rax; rol $1,%rcx", A, ""),
    ("sub %ebx,%eax; ror $1,%dx; rol $5,%esi", "flagsArith &^ flagOF", ""),
    ("cmp %al,%bl; rolb $1,(%rsp); adc %rcx,%rdx", A, ""),
    ("xor %ecx,%ecx; ror $1,%rax; setc %dl; seto %sil; sete %dil", A, ""),
    ("inc %rax; rol $1,%bx; dec %rcx", A, ""),
    ("mov $0x80,%al; shl $1,%al; ror $1,%r9; sbb %r10,%r11", A, ""),
    # Shifts by CL: a masked count of zero keeps the flags (here XOR's, or the input's).
    ("add %rbx,%rax; xor %ecx,%ecx; shl %cl,%rdx", A, ""),
    ("mov $64,%cl; shr %cl,%rax", A, ""),
    ("mov $32,%cl; sar %cl,%edx", A, ""),
    ("mov $1,%cl; sar %cl,%bx", "flagsArith &^ flagAF", ""),
    ("mov $1,%cl; shlq %cl,8(%rsp)", "flagsArith &^ flagAF", ""),
    ("mov $16,%cl; shrw %cl,2(%rsp)", "flagsArith &^ (flagAF | flagOF)", ""),
    ("mov $63,%cl; shl %cl,%rax", "flagsArith &^ (flagAF | flagOF)", ""),
    ("mov $8,%cl; sarb %cl,%ah", "flagsArith &^ (flagAF | flagOF)", ""),
    ("mov $31,%cl; sar %cl,%r9d; mov $5,%cl; shr %cl,%r10", "flagsArith &^ (flagAF | flagOF)", ""),
    # Faults and traps (translator only): vector, error code, CR2.
    ("ud2", N, "F6"),
    (".byte 0xf0,0x01,0xc3", N, "F6"),
    (".byte 0xf0,0x90", N, "F6"),
    ("mov $0x8000000000000000,%rax; mov (%rax),%rbx", N, "F13:0"),
    ("mov $0x1000,%eax; mov (%rax),%rbx", N, "F14:0 c2"),
    ("mov $0x1000,%eax; movq $1,(%rax)", N, "F14:2 c2"),
    ("mov $0x1000,%eax; lock incl (%rax)", N, "F14:2 c2"),
    ("mov $0x1000,%eax; jmp *%rax", N, "F14:16 c2 j"),
    ("int3", N, "F3 n"),
    ("int $0x11", N, "F17 n"),
    ("movdqa 1(%rsp),%xmm0", N, "F13:0"),
    ("cmpxchg16b 8(%rsp)", N, "F13:0"),
    ("mov $0x12345000,%eax; mov %rax,%cr4", N, "F13:0"),
    ("mov $0x12345678,%ecx; wrmsr", N, "F13:0"),
    ("mov $0x12345678,%ecx; rdmsr", N, "F13:0"),
    ("mov $0x8000000000000000,%rax; push %rax; ret", N, "F13:0"),
    ("mov $0x8000000000000000,%rax; call *%rax", N, "F13:0"),
    ("mov $0x8000000000000000,%rax; jmp *%rax", N, "F13:0"),
    ("mov $0x1000,%eax; cmp %eax,%eax; cmovne (%rax),%rbx", N, "F14:0 c2"),
    ("mov $0x1000,%eax; sete (%rax)", N, "F14:2 c2"),
    ("mov $0x1000,%eax; addl $1,(%rax)", N, "F14:0 c2"),
    ("mov $0x1000,%eax; movzwl (%rax),%ebx", N, "F14:0 c2"),
    ("mov $0x1000,%eax; shlb $3,(%rax)", N, "F14:0 c2"),
    # Lazy flags settled at a fault: the frame's RFLAGS are those of the last
    # flag-setting instruction before the faulting one, in the same block.
    ("mov $0x1000,%ecx; add %rbx,%rax; mov (%rcx),%rdx", A, "F14:0 c2"),
    ("mov $0x1000,%ecx; stc; sbb %bl,%al; incw %dx; movl $1,(%rcx)", A, "F14:2 c2"),
    ("mov $0x1000,%ecx; shr $3,%eax; addl (%rcx),%eax", A + " &^ (flagAF | flagOF)", "F14:0 c2"),
    ("mov $0x1000,%ecx; imul %rbx,%rax; push %rax; pop %rax; mov (%rcx),%edx", CO, "F14:0 c2"),
    ("mov $0x1000,%ecx; cmp %bl,%al; subl $1,(%rcx)", A, "F14:0 c2"),
    ("mov $0x1000,%ecx; add %rbx,%rax; rol $1,%rdx; mov (%rcx),%rdx", A, "F14:0 c2"),
    # INT n beyond the IDT limit: #GP(n*8+2), not #DF (a software interrupt is benign).
    ("int $0x40", N, "F13:514"),
]

def assemble(text):
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "a.s")
        obj = os.path.join(d, "a.o")
        binf = os.path.join(d, "a.bin")
        open(src, "w").write(".text\n" + text.replace("; ", "\n") + "\n")
        subprocess.check_call(["as", "--64", "-o", obj, src])
        subprocess.check_call(["objcopy", "-O", "binary", "-j", ".text", obj, binf])
        return open(binf, "rb").read()

print("// Code generated by testdata/handpicked.py from GNU as output; DO NOT EDIT.\n")
print("package x86\n")
print("var handpicked = []handCase{")
for text, mask, flags in cases:
    code = assemble(text)
    b = ", ".join("0x%02x" % x for x in code)
    fl = flags.split()
    vec, err, cr2, trap, jump = -1, -1, False, False, False
    for f in fl:
        if f.startswith("F"):
            v = f[1:].split(":")
            vec = int(v[0])
            if len(v) > 1:
                err = int(v[1])
        cr2 |= f == "c2"
        trap |= f == "n"
        jump |= f == "j"
    print("\t{%s, []byte{%s}, %s, %s, %d, %d, %s, %s, %s}," % (json.dumps(text), b, mask, "true" if "x" in fl else "false",
          vec, err, "true" if cr2 else "false", "true" if trap else "false", "true" if jump else "false"))
print("}")

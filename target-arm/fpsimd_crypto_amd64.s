// Host AES-NI, SHA-NI and PCLMULQDQ forms of the A64 Cryptographic Extension
// instructions (fpsimd_crypto_amd64.go says how each maps). The 128-bit operands are
// State.V registers: element 0 (the low 64 bits) first, the same byte order as an
// XMM register.

#include "textflag.h"

// func cpuidSHA() bool: CPUID.(EAX=7,ECX=0):EBX bit 29.
TEXT ·cpuidSHA(SB), NOSPLIT, $0-1
	XORL AX, AX
	CPUID
	CMPL AX, $7
	JB   no
	MOVL $7, AX
	XORL CX, CX
	CPUID
	SHRL $29, BX
	ANDL $1, BX
	MOVB BX, ret+0(FP)
	RET
no:
	MOVB $0, ret+0(FP)
	RET

// func aeseHW(d, n *[2]uint64): d = ShiftRows(SubBytes(d ^ n)).
TEXT ·aeseHW(SB), NOSPLIT, $0-16
	MOVQ  d+0(FP), AX
	MOVQ  n+8(FP), BX
	MOVOU (AX), X0
	MOVOU (BX), X1
	PXOR  X1, X0
	PXOR  X2, X2
	AESENCLAST X2, X0
	MOVOU X0, (AX)
	RET

// func aesdHW(d, n *[2]uint64): d = InvShiftRows(InvSubBytes(d ^ n)).
TEXT ·aesdHW(SB), NOSPLIT, $0-16
	MOVQ  d+0(FP), AX
	MOVQ  n+8(FP), BX
	MOVOU (AX), X0
	MOVOU (BX), X1
	PXOR  X1, X0
	PXOR  X2, X2
	AESDECLAST X2, X0
	MOVOU X0, (AX)
	RET

// func aesmcHW(d, n *[2]uint64): d = MixColumns(n), as AESENC(AESDECLAST(n, 0), 0).
TEXT ·aesmcHW(SB), NOSPLIT, $0-16
	MOVQ  d+0(FP), AX
	MOVQ  n+8(FP), BX
	MOVOU (BX), X0
	PXOR  X2, X2
	AESDECLAST X2, X0
	AESENC X2, X0
	MOVOU X0, (AX)
	RET

// func aesimcHW(d, n *[2]uint64): d = InvMixColumns(n).
TEXT ·aesimcHW(SB), NOSPLIT, $0-16
	MOVQ  d+0(FP), AX
	MOVQ  n+8(FP), BX
	MOVOU (BX), X0
	AESIMC X0, X0
	MOVOU X0, (AX)
	RET

// func clmulHW(a, b uint64) (lo, hi uint64)
TEXT ·clmulHW(SB), NOSPLIT, $0-32
	MOVQ a+0(FP), X0
	MOVQ b+8(FP), X1
	PCLMULQDQ $0x00, X1, X0
	MOVQ X0, lo+16(FP)
	PEXTRQ $1, X0, AX
	MOVQ AX, hi+24(FP)
	RET

// func sha1HW(abcd, wk *[2]uint64, f int): four SHA-1 rounds with function f
// (0 choose, 1 parity, 2 majority) on abcd (A in element 0), wk the four
// W+K words with K already taken out and E added to the first. SHA1RNDS4 holds A
// and W0 in the top element, hence the reversals.
TEXT ·sha1HW(SB), NOSPLIT, $0-24
	MOVQ  abcd+0(FP), AX
	MOVQ  wk+8(FP), BX
	MOVQ  f+16(FP), CX
	MOVOU (AX), X0
	MOVOU (BX), X1
	PSHUFD $0x1b, X0, X0
	PSHUFD $0x1b, X1, X1
	CMPQ  CX, $1
	JEQ   parity
	JA    majority
	SHA1RNDS4 $0, X1, X0
	JMP   done
parity:
	SHA1RNDS4 $1, X1, X0
	JMP   done
majority:
	SHA1RNDS4 $2, X1, X0
done:
	PSHUFD $0x1b, X0, X0
	MOVOU X0, (AX)
	RET

// func sha256hHW(abcd, efgh, wk *[2]uint64): four SHA-256 rounds; both state
// halves are updated. SHA256RNDS2 takes the state as ABEF and CDGH (A and C in
// the top element) and two rounds at a time.
TEXT ·sha256hHW(SB), NOSPLIT, $0-24
	MOVQ  abcd+0(FP), AX
	MOVQ  efgh+8(FP), BX
	MOVQ  wk+16(FP), CX
	MOVOU (AX), X3
	MOVOU (BX), X4
	MOVOU (CX), X5
	PSHUFD $0x1b, X3, X3 // D C B A
	PSHUFD $0x1b, X4, X4 // H G F E
	MOVO  X4, X1
	PUNPCKHQDQ X3, X1    // F E B A = ABEF
	MOVO  X4, X2
	PUNPCKLQDQ X3, X2    // H G D C = CDGH
	MOVO  X5, X0
	SHA256RNDS2 X0, X1, X2 // X2 = ABEF after two rounds; X1 is now CDGH
	PSHUFD $0x0e, X5, X0
	SHA256RNDS2 X0, X2, X1 // X1 = ABEF after four; X2 = CDGH
	MOVO  X2, X3
	PUNPCKHQDQ X1, X3    // D C B A
	PSHUFD $0x1b, X3, X3
	PUNPCKLQDQ X1, X2    // H G F E
	PSHUFD $0x1b, X2, X2
	MOVOU X3, (AX)
	MOVOU X2, (BX)
	RET

// func sha256su0HW(d, n *[2]uint64)
TEXT ·sha256su0HW(SB), NOSPLIT, $0-16
	MOVQ  d+0(FP), AX
	MOVQ  n+8(FP), BX
	MOVOU (AX), X0
	MOVOU (BX), X1
	SHA256MSG1 X1, X0
	MOVOU X0, (AX)
	RET

// func sha256su1HW(d, n, m *[2]uint64)
TEXT ·sha256su1HW(SB), NOSPLIT, $0-24
	MOVQ  d+0(FP), AX
	MOVQ  n+8(FP), BX
	MOVQ  m+16(FP), CX
	MOVOU (AX), X0
	MOVOU (BX), X1
	MOVOU (CX), X2
	MOVO  X2, X3
	PALIGNR $4, X1, X3   // n[1] n[2] n[3] m[0]
	PADDL X3, X0
	SHA256MSG2 X2, X0
	MOVOU X0, (AX)
	RET

#include "textflag.h"

// func jitcall(code uintptr, env unsafe.Pointer, budget uint64) (st, va, val uint64)
//
// The only way into generated code: DI holds the environment and R8 the loop budget
// (how many more times a block may jump back to its own start), the code returns with
// AX = exit status (0: block ended; n: exit n-1 of the block's table), BX = the guest
// virtual address and SI = the store value of a memory slow path. Generated code uses
// only AX, BX, CX, DX, SI, DI, R8 and the 8 bytes of the return address on this stack, and
// never calls Go, so the fixed zero frame is enough.
TEXT ·jitcall(SB), NOSPLIT, $0-48
	MOVQ code+0(FP), AX
	MOVQ env+8(FP), DI
	MOVQ budget+16(FP), R8
	CALL AX
	MOVQ AX, st+24(FP)
	MOVQ BX, va+32(FP)
	MOVQ SI, val+40(FP)
	RET

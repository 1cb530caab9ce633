#include "textflag.h"

// func callNative(fn uintptr)
// Calls the generated code at fn, which saves and restores the Go stack pointer
// itself (difftest_amd64_test.go builds its prologue and epilogue).
TEXT ·callNative(SB), NOSPLIT, $16-8
	MOVQ BP, 0(SP)
	MOVQ fn+0(FP), AX
	CALL AX
	MOVQ 0(SP), BP
	RET

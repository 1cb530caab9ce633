package arm

// State is the architectural register state of one AArch64 vCPU that instruction
// semantics read and write. It is shared with the FP/AdvSIMD data-processing code
// (fpsimd*.go), which receives a *State: that code reads and writes X (register 31 is
// XZR there), V, FPCR, FPSR and NZCV only.
type State struct {
	X              [31]uint64 // X0..X30
	SP_EL0, SP_EL1 uint64
	PC             uint64
	// NZCV holds PSTATE.NZCV in bits 31:28. It is always materialized (never lazily
	// computed), so FP/SIMD helpers may read and write it directly.
	NZCV uint64
	// V holds the 32 SIMD&FP registers: V[n][0] is the low 64 bits, V[n][1] the high.
	V          [32][2]uint64
	FPCR, FPSR uint64
}

// PSTATE.DAIF bits as laid out in SPSR_ELx.
const (
	pstateD    = 1 << 9
	pstateA    = 1 << 8
	pstateI    = 1 << 7
	pstateF    = 1 << 6
	pstateDAIF = pstateD | pstateA | pstateI | pstateF
)

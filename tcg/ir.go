package tcg

import "fmt"

// The IR: what a target frontend emits for one translation block, and what a backend
// compiles. Values are 64-bit. Operands are target-state globals (64-bit fields of the
// target's per-vCPU environment, addressed by byte offset so that the same block runs
// on any vCPU), per-vCPU scratch temporaries, or immediates. Anything the IR cannot
// express is a helper call: a Go function value the target built for the instruction,
// which reads and writes target state itself. Guest memory accesses go through the
// softmmu TLB defined in this package, with the target's slow paths for misses.

// Opcode is an IR operation.
type Opcode uint8

const (
	OpMov    Opcode = iota + 1 // D = A
	OpAdd                      // D = A + B
	OpSub                      // D = A - B
	OpAnd                      // D = A & B
	OpOr                       // D = A | B
	OpXor                      // D = A ^ B
	OpShl                      // D = A << (B & 63)
	OpShr                      // D = A >> (B & 63), logical
	OpSar                      // D = A >> (B & 63), arithmetic
	OpMul                      // D = A * B
	OpZext32                   // D = uint32(A)
	OpSext32                   // D = int64(int32(A))
	OpLoad                     // D = mem[A + Off], Size bytes, sign-extended if Signed
	OpStore                    // mem[A + Off] = low Size bytes of B
	OpCall                     // Helper(env); a false result ends the block (it set the PC)
	OpExit                     // PC = A; end the block (goto-tb: the run loop finds the next block)
	OpExitZ                    // if A == 0 { PC = B; end the block }
	OpExitNZ                   // if A != 0 { PC = B; end the block }
	OpSetEq                    // D = 1 if A == B else 0
	OpSetLtu                   // D = 1 if A < B (unsigned) else 0
	OpBswap                    // D = A with its 8 bytes reversed
	OpClz                      // D = number of leading zero bits of A (64 if A == 0)
	// Condition flags of an add, subtract or value, computed on the low Size (4 or 8)
	// bytes of the operands and packed in the layout Op.Mode names (a FlagLayout:
	// which bits, and what carry means on a subtract, are the target's): one op instead
	// of the dozen ALU ops spelling them out, and one host flag-setting instruction
	// natively. The only layout so far is FlagsNZCV (A-profile); a target whose flags
	// differ (x86's EFLAGS, with borrow rather than no-borrow carry on SUB) adds a
	// layout here, or computes its flags with generic ops (QEMU's IR has no flags
	// at all: target/arm keeps NF/ZF/CF/VF globals, target/i386 computes lazily from
	// cc_op, cc_src, cc_dst).
	OpFlagsAdd   // D = flags of A + B (carry out, signed overflow)
	OpFlagsSub   // D = flags of A - B
	OpFlagsLogic // D = flags of the value A (negative, zero; carry and overflow clear)
	OpFence      // full memory barrier: earlier loads and stores before later ones
	// Division on the low Size (4 or 8) bytes; 4-byte results are zero-extended. What a
	// zero divisor and the signed overflow (most negative / -1) give is Op.Mode, a
	// DivResults the frontend states: architectures differ there (A64 defines both,
	// x86 raises #DE, which a frontend emits as a test and a helper call before the
	// division).
	OpUdiv // D = A / B, unsigned
	OpSdiv // D = A / B, signed, rounded towards zero
	// The high 64 bits of the 128-bit product (A64's UMULH/SMULH, x86's one-operand
	// MUL/IMUL): one host instruction natively.
	OpMulHu // D = (A * B) >> 64, unsigned
	OpMulHs // D = (A * B) >> 64, signed
	// Flags of an add with carry-in on the low Size bytes: D = flags of A + B + C,
	// where C is the carry bit of D's own value before the op in layout Op.Mode
	// (FlagsNZCV: bit 29), so a chain of them (A64's ADCS, and SBCS as A + NOT B + C)
	// reads and writes only the flags word. One host BT and ADC natively.
	OpFlagsAddC
)

// FlagLayout is the Op.Mode of a flags op: how the flags are packed in D.
type FlagLayout uint8

const (
	// FlagsNZCV is the A-profile layout: N bit 31, Z 30, C 29, V 28, all other bits
	// zero; C of a subtract is "no borrow" (A64's SUBS/CMP).
	FlagsNZCV FlagLayout = 1
)

// DivResults is the Op.Mode of a division op: its results where the quotient is not
// representable.
type DivResults uint8

const (
	// DivZeroIsZero is A64's UDIV/SDIV: a zero divisor gives 0, the most negative
	// value divided by -1 gives itself (the wrapped quotient).
	DivZeroIsZero DivResults = 1
)

var opNames = [...]string{OpMov: "mov", OpAdd: "add", OpSub: "sub", OpAnd: "and", OpOr: "or", OpXor: "xor",
	OpShl: "shl", OpShr: "shr", OpSar: "sar", OpMul: "mul", OpZext32: "zext32", OpSext32: "sext32",
	OpLoad: "ld", OpStore: "st", OpCall: "call", OpExit: "exit", OpExitZ: "exit_z", OpExitNZ: "exit_nz",
	OpSetEq: "seteq", OpSetLtu: "setltu", OpBswap: "bswap", OpClz: "clz",
	OpFlagsAdd: "flags_add", OpFlagsSub: "flags_sub", OpFlagsLogic: "flags_logic", OpFence: "fence",
	OpUdiv: "udiv", OpSdiv: "sdiv", OpMulHu: "mulhu", OpMulHs: "mulhs", OpFlagsAddC: "flags_addc", OpFloat: "float", OpVec: "vec"}

func (o Opcode) String() string {
	if int(o) < len(opNames) && opNames[o] != "" {
		return opNames[o]
	}
	return fmt.Sprintf("op%d", o)
}

type argKind uint8

const (
	argNone argKind = iota
	argGlobal
	argTemp
	argImm
)

// Arg is an IR operand.
type Arg struct {
	kind argKind
	v    uint64 // byte offset (global), index (temp) or value (immediate)
}

// Global names the 64-bit target-state field at byte offset off in the environment.
func Global(off uintptr) Arg { return Arg{argGlobal, uint64(off)} }

// Temp names scratch temporary n (0 <= n < MaxTemps).
func Temp(n int) Arg { return Arg{argTemp, uint64(n)} }

// Imm is an immediate operand.
func Imm(v uint64) Arg { return Arg{argImm, v} }

// IsImm reports whether a is an immediate, and its value.
func (a Arg) IsImm() (uint64, bool) { return a.v, a.kind == argImm }

func (a Arg) String() string {
	switch a.kind {
	case argGlobal:
		return fmt.Sprintf("g%#x", a.v)
	case argTemp:
		return fmt.Sprintf("t%d", a.v)
	case argImm:
		return fmt.Sprintf("$%#x", a.v)
	}
	return "-"
}

// MaxTemps is the number of scratch temporaries a target must provide.
const MaxTemps = 8

// Op is one IR operation. E is the target's environment (per-vCPU state) type.
type Op[E any] struct {
	Opc     Opcode
	D, A, B Arg
	Off     uint64 // memory displacement (OpLoad, OpStore)
	Size    uint8  // memory access size in bytes: 1, 2, 4 or 8
	Signed  bool   // OpLoad: sign-extend
	User    bool   // OpLoad, OpStore: unprivileged (Target.UserTLB and the user slow paths)
	// Mode is the variant of the op's semantics the frontend chose: the FlagLayout of a
	// flags op, the DivResults of a division; zero for other ops. A mode a backend does
	// not know makes the op malformed.
	Mode uint8
	// PC is the guest PC of the instruction the op belongs to; backends store it to the
	// target's PC before anything that can raise a guest exception (memory slow paths).
	PC     uint64
	Helper func(env *E) bool // OpCall
	// Pure (OpCall) promises that the helper reads and writes only the environment's
	// registers: no guest memory (so no translated code it could invalidate), no mode,
	// TLB or exit-request change. A backend may then keep running translated code after
	// it (the native backend compiles such a block whole, and chains and loops it).
	Pure bool
}

func (o *Op[E]) String() string {
	switch o.Opc {
	case OpLoad:
		return fmt.Sprintf("%v %v, [%v+%#x] size=%d signed=%v", o.Opc, o.D, o.A, o.Off, o.Size, o.Signed)
	case OpStore:
		return fmt.Sprintf("%v [%v+%#x], %v size=%d", o.Opc, o.A, o.Off, o.B, o.Size)
	case OpCall:
		return fmt.Sprintf("call helper pc=%#x", o.PC)
	case OpFlagsAdd, OpFlagsSub, OpFlagsLogic, OpFlagsAddC, OpUdiv, OpSdiv, OpFloat, OpVec:
		return fmt.Sprintf("%v %v, %v, %v size=%d mode=%d", o.Opc, o.D, o.A, o.B, o.Size, o.Mode)
	}
	return fmt.Sprintf("%v %v, %v, %v", o.Opc, o.D, o.A, o.B)
}

// Target describes the environment layout and the memory slow paths a backend needs.
type Target[E any] struct {
	// PC is the byte offset of the guest PC (uint64) in E.
	PC uintptr
	// TLB is the byte offset in E of a *TLB: the softmmu TLB for the current MMU index.
	TLB uintptr
	// Temps is the byte offset in E of a [MaxTemps]uint64 scratch array.
	Temps uintptr
	// ExitReq is the byte offset in E of a uint32 that is non-zero when the vCPU must
	// return to its run loop at the next block boundary (interrupts, stop, TLB
	// shootdowns). Backends that keep running translated code across block ends
	// (the native backend's blocks that loop on themselves) check it there. Zero means
	// the target has none: every block end returns to the run loop.
	ExitReq uintptr
	// LastExit is the byte offset in E of a *LinkRec the native backend sets when a
	// block ends through a chainable exit (nil otherwise), so that the run loop can
	// link that exit to the block it finds next (Cache.Link). The run loop clears it
	// before entering a block. Zero means the target does not chain native blocks.
	LastExit uintptr
	// Flags is the byte offset in E of the uint64 mode flags blocks are keyed by
	// (Key.Flags) and Jumps that of a *JumpTable (link.go): with both (and LastExit),
	// native blocks leave through an exit to a computed or other-page PC by probing
	// the table. Zero means no probe.
	Flags, Jumps uintptr
	// LoadSlow and StoreSlow perform an access the TLB fast path could not (miss,
	// misaligned, MMIO, code page), raising the guest exception and returning false on a
	// fault. The PC field already holds the instruction's PC.
	LoadSlow  func(env *E, va uint64, size int) (uint64, bool)
	StoreSlow func(env *E, va uint64, size int, v uint64) bool
	// UserTLB is the byte offset in E of a *TLB for unprivileged accesses (A64's
	// LDTR/STTR at EL1 use EL0's permissions), with UserLoadSlow and UserStoreSlow as
	// their slow paths. Zero (nil) means the target has none: User ops are malformed.
	UserTLB       uintptr
	UserLoadSlow  func(env *E, va uint64, size int) (uint64, bool)
	UserStoreSlow func(env *E, va uint64, size int, v uint64) bool
	// FPStatus is the byte offset in E of the guest's FP status word and FPInexact
	// its inexact-flag bits, for OpFloat (float.go); zero means OpFloat is malformed.
	FPStatus  uintptr
	FPInexact uint64
}

// memPath returns the TLB pointer offset and slow paths a memory op uses, ok false
// when a User op meets a target without user paths.
func (t *Target[E]) memPath(op *Op[E]) (tlb uintptr, load func(*E, uint64, int) (uint64, bool), store func(*E, uint64, int, uint64) bool, ok bool) {
	if !op.User {
		return t.TLB, t.LoadSlow, t.StoreSlow, true
	}
	return t.UserTLB, t.UserLoadSlow, t.UserStoreSlow, t.UserTLB != 0 && t.UserLoadSlow != nil && t.UserStoreSlow != nil
}

// Builder accumulates the IR of one block.
type Builder[E any] struct {
	Ops []Op[E]
	pc  uint64
}

// SetPC sets the guest PC recorded in the ops emitted next.
func (b *Builder[E]) SetPC(pc uint64) { b.pc = pc }

func (b *Builder[E]) emit(o Op[E]) { o.PC = b.pc; b.Ops = append(b.Ops, o) }

// Mov emits D = A.
func (b *Builder[E]) Mov(d, a Arg) { b.emit(Op[E]{Opc: OpMov, D: d, A: a}) }

// Bin emits a two-operand ALU op (OpAdd ... OpMul, OpSetEq, OpSetLtu, OpMulHu,
// OpMulHs): D = A op B.
func (b *Builder[E]) Bin(opc Opcode, d, a, x Arg) { b.emit(Op[E]{Opc: opc, D: d, A: a, B: x}) }

// Un emits a one-operand op (OpZext32, OpSext32, OpBswap, OpClz).
func (b *Builder[E]) Un(opc Opcode, d, a Arg) { b.emit(Op[E]{Opc: opc, D: d, A: a}) }

// Flags emits a flags op (OpFlagsAdd, OpFlagsSub: D = flags of A op B; OpFlagsAddC: of
// A + B + D's carry; OpFlagsLogic: of A, x unused) on the low size (4 or 8) bytes, in
// layout l.
func (b *Builder[E]) Flags(opc Opcode, d, a, x Arg, size int, l FlagLayout) {
	b.emit(Op[E]{Opc: opc, D: d, A: a, B: x, Size: uint8(size), Mode: uint8(l)})
}

// Div emits D = A / B (OpUdiv or OpSdiv) on size (4 or 8) bytes, with results r where
// the quotient is not representable.
func (b *Builder[E]) Div(opc Opcode, d, a, x Arg, size int, r DivResults) {
	b.emit(Op[E]{Opc: opc, D: d, A: a, B: x, Size: uint8(size), Mode: uint8(r)})
}

// modeOK reports whether op's Mode is one the backends implement.
func (o *Op[E]) modeOK() bool {
	switch o.Opc {
	case OpFlagsAdd, OpFlagsSub, OpFlagsLogic, OpFlagsAddC:
		return FlagLayout(o.Mode) == FlagsNZCV
	case OpUdiv, OpSdiv:
		return DivResults(o.Mode) == DivZeroIsZero
	case OpFloat:
		return o.Mode >= uint8(FloatAdd) && o.Mode <= uint8(FloatMulAdd)
	case OpVec:
		return o.Mode >= uint8(VecAdd) && o.Mode <= uint8(VecAndNot)
	}
	return o.Mode == 0
}

// Fence emits a full memory barrier.
func (b *Builder[E]) Fence() { b.emit(Op[E]{Opc: OpFence}) }

// Load emits D = mem[A + off].
func (b *Builder[E]) Load(d, a Arg, off uint64, size int, signed bool) {
	b.emit(Op[E]{Opc: OpLoad, D: d, A: a, Off: off, Size: uint8(size), Signed: signed})
}

// Store emits mem[A + off] = V.
func (b *Builder[E]) Store(a Arg, off uint64, v Arg, size int) {
	b.emit(Op[E]{Opc: OpStore, A: a, B: v, Off: off, Size: uint8(size)})
}

// Unprivileged marks the memory ops emitted since the first n ops as unprivileged
// (Op.User).
func (b *Builder[E]) Unprivileged(n int) {
	for i := n; i < len(b.Ops); i++ {
		if b.Ops[i].Opc == OpLoad || b.Ops[i].Opc == OpStore {
			b.Ops[i].User = true
		}
	}
}

// Call emits a helper call.
func (b *Builder[E]) Call(h func(env *E) bool) { b.emit(Op[E]{Opc: OpCall, Helper: h}) }

// CallPure emits a call of a helper that touches only the environment's registers
// (Op.Pure).
func (b *Builder[E]) CallPure(h func(env *E) bool) { b.emit(Op[E]{Opc: OpCall, Helper: h, Pure: true}) }

// Exit emits PC = A and ends the block.
func (b *Builder[E]) Exit(a Arg) { b.emit(Op[E]{Opc: OpExit, A: a}) }

// ExitIf emits "if (A != 0) == nz { PC = target; end the block }".
func (b *Builder[E]) ExitIf(a Arg, nz bool, target uint64) {
	opc := OpExitZ
	if nz {
		opc = OpExitNZ
	}
	b.emit(Op[E]{Opc: opc, A: a, B: Imm(target)})
}

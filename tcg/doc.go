// Package tcg owns the target-independent half of gemu's translating CPU engine: the
// translation-block (TB) cache keyed by guest physical PC, virtual PC and mode flags; the
// per-vCPU direct-mapped jump cache; direct block chaining; the softmmu TLB structure
// (virtual page → host pointer, per vCPU and MMU index); and the bookkeeping that
// invalidates translated code when the guest writes to a page holding it. It must not
// know any guest instruction set, device or machine: targets (target-arm, target-x86)
// decode guest code, walk their page tables and raise their exceptions, and hand tcg
// only addresses, flags and backend code.
//
// # Frontend, IR, backend
//
// A target frontend translates one block of guest code into the IR defined in ir.go
// (Builder): moves, 64-bit arithmetic/logic/shift ops, zero/sign extension, loads and
// stores through the softmmu TLB (size, sign; little-endian guests), conditional and
// unconditional block exits (goto-tb: the run loop follows the block's chain link to
// a successor on the same page, else the jump cache, else the shared cache), and
// helper calls with Go func values for everything the IR does not
// express (flag-setting ALU ops, system registers, exceptions, SIMD...). Target state
// appears in the IR only as byte offsets into the target's per-vCPU environment plus
// the Target descriptor (where the PC, the current TLB pointer and scratch temporaries
// live, and the memory slow paths), so a backend needs no knowledge of the guest ISA.
// target-arm lowers the commonest A64 instructions (moves, add/sub, register moves,
// loads/stores with immediate offsets, branches, compare-and-branch, test-and-branch)
// to IR ops and calls helpers for the rest.
//
// # The first backend: block-fused Go closures
//
// Compile (closure.go) turns each IR op into a Go closure specialised at translation
// time for its operands (environment offsets and immediates are captured constants,
// the load/store size is a type parameter) and a block into the slice of those
// closures, run without re-decoding; helper calls are the target's closures, called
// directly. The numbers measured on this host for the options were: per-instruction
// closures dispatched from a fetch/decode loop ~190 guest MIPS, a plain switch
// interpreter ~440, block-fused closures ~900-1000, native amd64 ~3500. Closures were
// chosen first because they are pure Go (no cgo, no executable memory, no assembler),
// give precise exceptions for free (every op that can fault stores its guest PC first,
// and guest state is only ever in the environment, so a fault leaves every earlier
// instruction's effects committed and no later one's), and are debuggable with the
// normal Go tools. Measured here they reach ~200-250 guest MIPS per CPU second on an
// integer loop (tests/arm BenchmarkLoopMIPS), far from the block-fused figure: every
// guest register access is a memory access through the environment, and each op is an
// indirect call whose closure object is a separate heap allocation.
//
// # Path to a native amd64 backend
//
// Cache, TB, JumpCache, the TLB layout, CodePages and the IR are independent of the
// backend; TB.Code is the backend's code type. A native backend implements the same
// Compile contract: it lowers IR ops to amd64 machine code in an mmap'ed executable
// arena, keeps IR globals in host registers within a block, inlines the TLB fast path
// (same Read/Write/Host/Code fields at fixed offsets), and calls helpers and slow paths
// back in Go through a small trampoline; chaining (TB.Next/Chain here) becomes patched
// jumps between arena blocks. Targets do not change, except that lowering more
// instructions to IR (rather than helpers) is what lets native code pay off.
package tcg

// Package tcg owns the target-independent half of gemu's translating CPU engine: the
// run loop (exec.go: VCPU.Run, QEMU's cpu-exec.c) that drives a vCPU through the hooks
// its target implements (CPUOps, QEMU's TCGCPUOps: Fetch, Translate, HandleExit,
// ExecInterrupt); the per-guest Engine (engine.go) the board creates once and hands to
// every vCPU, holding the translation-block (TB) cache keyed by guest physical PC,
// virtual PC and mode flags and the set of vCPUs TLB shootdowns reach; the per-vCPU
// direct-mapped jump cache and jump table; direct block chaining; exit requests and
// cross-vCPU TLB invalidation at block boundaries; the softmmu TLB structure (virtual
// page → host pointer, per vCPU and MMU index); and the bookkeeping that invalidates
// translated code when the guest or a device writes to a page holding it (the per-page
// "holds code" flag itself is hw/memory's PageCode: code.go). It must not know any
// guest instruction set, device or machine: targets (target-arm, target-x86) decode
// guest code, walk their page tables, raise and deliver their exceptions and
// interrupts, and hand tcg only addresses, flags, IR and exit-request bits.
//
// # Run loop
//
// A target embeds a VCPU in its per-vCPU environment E, points Target.SetVCPU at it,
// and calls VCPU.Init with its engine, its CPUOps and pointers to its PC, current mode
// flags and current TLB. Per block the loop checks the exit-request word, follows the
// previous block's chain link or probes the jump cache (validated against the
// instruction TLB) with no hook call; on a miss it calls Fetch (alignment, MMU fill)
// and, when the engine's cache has no block, Translate, and inserts the result. It
// links the native exit the last block took and records native blocks in the jump
// table. With an exit requested it applies queued TLB shootdowns, hands the target
// its request bits (HandleExit; a vCPU that cannot run sleeps until Kick) and lets it
// deliver an interrupt (ExecInterrupt). A block may run on into the next virtual page
// when the target says so (Translation.Spans, for ISAs whose instructions straddle
// pages): the cache records it on both physical pages, the loop checks the second
// page's mapping (instruction TLB, else the target's Probe) before entering it, and
// generated code never chains or jumps to it.
//
// # Frontend, IR, backend
//
// A target frontend translates one block of guest code into the IR defined in ir.go
// (Builder): moves, 64-bit arithmetic/logic/shift ops, zero/sign extension, byte
// reversal and count-leading-zeros (one host instruction each natively), condition
// flags of an add, subtract or value in a layout the op names (FlagsNZCV, A-profile,
// is the only one: one host ALU instruction and setcc), 32/64-bit division whose
// zero-divisor and overflow results the op names (DivZeroIsZero, A64's), the high
// half of a 128-bit product, add-with-carry flags (OpFlagsAddC), scalar IEEE
// arithmetic with the frontend's exact helper as the slow path (OpFloat, float.go:
// one SSE or FMA instruction natively for ordinary operands), a full
// fence, loads and stores through the softmmu TLB (size, sign; little-endian guests;
// unprivileged ones through a second TLB), conditional and unconditional block exits
// (goto-tb: direct links between native blocks, else a jump-table probe, else the run
// loop's chain link, jump cache or shared cache), and helper calls with Go func values
// for everything the IR does not express (carry-in arithmetic, exclusives, system
// registers, exceptions, SIMD...). Target state
// appears in the IR only as byte offsets into the target's per-vCPU environment plus
// the Target descriptor (where the PC, the current TLB pointer and scratch temporaries
// live, and the memory slow paths), so a backend needs no knowledge of the guest ISA.
// target-arm lowers the commonest A64 instructions (moves, add/sub, register moves,
// loads/stores with immediate offsets, branches, compare-and-branch, test-and-branch)
// and MRS/MSR of the thread and per-CPU registers, SP_EL0, NZCV, DAIF and CurrentEL
// to IR ops and calls helpers for the rest.
//
// # The portable backend: block-fused Go closures
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
// # The native amd64 backend
//
// native_amd64.go compiles IR into amd64 machine code, behind the same Compile contract
// (a block is still a func(env *E) for the target's run loop), so targets do not
// change. Choosing it:
//
//	GEMU_TCG_BACKEND=native   amd64 machine code (the default on amd64 hosts)
//	GEMU_TCG_BACKEND=closure  Go closures only (the default elsewhere)
//
// The variable is read once, at start; an unknown value falls back to the default
// with a one-line warning. SelectedBackend reports the choice, and targets may lower
// more instructions to IR when it is native (target-arm does: flag-setting add/sub
// and logic, conditional compares, branches and selects, shifts, rotates, extracts, byte reversals, CLZ and bitfield moves,
// general-purpose loads and stores with immediate, register and write-back addressing
// and pairs), since there a run of IR ops costs less than one helper call, while the
// closure backend runs a helper faster than the several closures it would expand to.
//
// Design. Code lives in an arena of memfd chunks mapped read+execute only and written
// with pwrite (W^X without mprotect races between vCPUs). One Go assembly trampoline,
// jitcall (NOSPLIT, zero frame), puts the environment pointer in DI and a loop budget
// in R8 and calls the code, which uses only caller-saved scratch registers and never
// calls Go. Every IR global and temporary stays in the environment ([DI+off] memory
// operands), so leaving the code at any op needs no write-back and guest exceptions
// stay precise exactly as with closures. A block whose helper calls are all pure
// (Op.Pure: they touch only the environment's registers, as target-arm's
// data-processing helpers) is one native segment that calls its helpers from exits
// (the status names the helper in the exit table, RBX carries the loop budget left),
// so it chains and loops like a block without helpers. Any other block is split at
// helper calls: each run of IR ops between helpers that would take at least two
// closures becomes one native segment; helpers stay direct Go calls from the block
// function (one call site per position, as in the closure backend). Loads and stores inline the softmmu fast path
// (index, tag compare including the alignment bits, host pointer plus page offset, the
// code bit of the page's flag word on stores); misses, MMIO, misaligned accesses and
// stores to code pages leave the segment with an exit status naming an exit-table entry, Go performs
// the target's slow path and re-enters at the entry's resume address. An op the
// native emitter does not handle makes its segment use closures, so coverage can grow
// an op at a time; malformed IR is rejected the same way by both backends.
//
// A block made of a single segment whose exit goes back to its own start (a loop)
// jumps there directly while the exit-request word (Target.ExitReq) is zero and the
// per-entry budget lasts, and never after a slow-path store (which may have
// invalidated the block). The budget bounds the time a goroutine spends in generated
// code, where the Go runtime cannot preempt it, so garbage-collector stop-the-world
// pauses are never held up for long.
//
// Whole-native blocks are also chained directly (link.go): an exit to a constant PC in
// the same page jumps through a link record to the successor's entry check (exit
// request, budget), once the run loop has seen that exit taken and linked it
// (Cache.Link); invalidating a block unlinks every exit into it. Exit statuses are
// global, so a slow path met in a linked block is served by the function of the block
// the run loop entered. Exits to a computed PC (returns, indirect branches) or to
// another page probe the vCPU's JumpTable instead: a hit whose block header is alive,
// has the current mode flags and comes from the physical page the instruction TLB maps
// the PC to is jumped to directly. Other block ends return to the target's run loop,
// which keeps doing lookup, Go-level chaining of closure blocks, invalidation and
// interrupts.
//
// Within a segment the IR temporaries t0..t4 live in host registers R9..R13: loaded
// from the environment at their first read, stored back (when written) on every way
// out of the code, and reloaded by a per-exit trampoline when a slow path resumes, so
// the flag computations that dominate lowered A64 code run without store-to-load
// round trips through memory.
//
// Not done yet: keeping guest registers in host registers within a segment, and
// freeing the code of invalidated blocks (the arena is capped at 512 MiB, after which
// new blocks use closures).
package tcg

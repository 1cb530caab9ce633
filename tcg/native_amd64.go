package tcg

import (
	"encoding/binary"
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"
)

// The native backend: each block's IR becomes amd64 machine code in the code arena,
// entered through the jitcall trampoline (native_amd64.s) with the environment in DI.
// Guest state stays in the environment (every IR global and temporary is a memory
// operand [DI+off]), so a block can leave at any op with all earlier effects committed
// and no later one's, which keeps guest exceptions precise without any write-back.
//
// Generated code never calls Go. Whatever needs Go leaves the code with an exit
// status naming an entry of the block's exit table: helper calls, and the TLB misses,
// misaligned, MMIO and code-page stores of inlined softmmu accesses. The block's Go
// function (the TB code the target's run loop calls) performs that op and re-enters at
// the entry's resume address, just after the exit. Block ends return status 0 with the
// PC stored. Since generated code has no loops and a block is bounded by the target,
// a goroutine in generated code (where the Go runtime ignores preemption signals)
// returns to Go within a bounded time, so stop-the-world is never held up.

// nativeSupported reports whether this host has the native backend.
const nativeSupported = true

func jitcall(code uintptr, env unsafe.Pointer, budget uint64) (st, va, val uint64)

// loopBudget bounds the iterations a block looping on itself runs inside one jitcall,
// so the goroutine comes back to Go (where the runtime can preempt it) often.
const loopBudget = 1024

// x86 register numbers.
const (
	rAX = 0
	rCX = 1
	rDX = 2
	rBX = 3
	rSI = 6
	rDI = 7 // the environment
)

// TLB entry layout, as generated code addresses it.
var (
	tlbEntrySize = unsafe.Sizeof(TLBEntry{})
	tlbReadOff   = unsafe.Offsetof(TLBEntry{}.Read)
	tlbWriteOff  = unsafe.Offsetof(TLBEntry{}.Write)
	tlbHostOff   = unsafe.Offsetof(TLBEntry{}.Host)
	tlbCodeOff   = unsafe.Offsetof(TLBEntry{}.Code)
	tlbExecOff   = unsafe.Offsetof(TLBEntry{}.Exec)
	tlbPhysOff   = unsafe.Offsetof(TLBEntry{}.Phys)
)

// tlbEntryShift is log2 of the TLB entry size, which must be a power of two.
const tlbEntryShift = 6

func init() {
	if tlbEntrySize != 1<<tlbEntryShift {
		panic("tcg: TLBEntry is not 64 bytes")
	}
}

// exit kinds of a block's exit table.
const (
	exLoad = iota
	exStore
	exCall // a helper call (OpCall) inside the segment
)

type nativeExit struct {
	kind   uint8
	op     int32
	resume int   // code offset, made absolute after placement
	reload uint8 // register temporaries to reload from the environment on resume
}

type emitter struct {
	// loop is the guest PC of the block start when the segment is a whole block and
	// the target has an exit-request word: exits to it jump back to the start.
	loop    uint64
	canLoop bool
	// canLink: the segment is a whole block and the target reports exits (LastExit):
	// exits to constant PCs become chainable (link.go), every block end sets RBX.
	canLink bool
	// probe: non-linkable exits of a linkable segment probe the jump table (link.go);
	// jumps, flags and tlb are the environment offsets it reads.
	probe             bool
	jumps, flags, tlb uintptr
	b                 []byte
	exits             []nativeExit
	stubs             []stub // out-of-line slow-path exits
	calls             []int  // imm32 fields of helper-call exits' statuses, patched with the table's first status
	links             []pendingLink
	// Temporaries t0..t4 live in R9..R13 within a segment (the rest, and globals, in
	// the environment): temps is their environment offset, inReg the ones whose
	// register holds the value at the current point of the straight-line code, dirty
	// the ones whose register is newer than the environment. Registers do not survive
	// a return to Go, so every way out of the code stores the dirty ones first and a
	// resume after a slow path reloads the ones in use.
	temps        uintptr
	inReg, dirty uint8
}

// regTemps is the number of temporaries kept in host registers (R9..R13).
const regTemps = 5

// nop is a native operand: a constant, an environment word, or (reg != 0) a host
// register holding temporary tmp (whose environment word is off).
type nop struct {
	imm bool
	v   uint64
	off uintptr
	reg int
	tmp int
}

// opnd returns the native operand for a (valid IR: the closure compiler checked it).
func (a *emitter) opnd(x Arg) nop {
	if v, ok := x.IsImm(); ok {
		return nop{imm: true, v: v}
	}
	if x.kind == argTemp {
		k := int(x.v)
		o := nop{off: a.temps + 8*uintptr(k)}
		if k < regTemps {
			o.reg, o.tmp = 9+k, k
		}
		return o
	}
	return nop{off: uintptr(x.v)}
}

// src returns the operand for reading x, loading a register temporary from the
// environment on its first use in the segment.
func (a *emitter) src(x Arg) nop {
	o := a.opnd(x)
	if o.reg != 0 && a.inReg&(1<<o.tmp) == 0 {
		a.env(true, o.reg, o.off, 0x8b) // mov rN, [temp]
		a.inReg |= 1 << o.tmp
	}
	return o
}

// wrote records that d was just written.
func (a *emitter) wrote(d nop) {
	if d.reg != 0 {
		a.inReg |= 1 << d.tmp
		a.dirty |= 1 << d.tmp
	}
}

// spill stores the registers of the temporaries in mask to the environment.
func (a *emitter) spill(mask uint8) {
	for k := 0; k < regTemps; k++ {
		if mask&(1<<k) != 0 {
			a.env(true, 9+k, a.temps+8*uintptr(k), 0x89) // mov [temp], rN
		}
	}
}

// reload loads the registers of the temporaries in mask from the environment.
func (a *emitter) reload(mask uint8) {
	for k := 0; k < regTemps; k++ {
		if mask&(1<<k) != 0 {
			a.env(true, 9+k, a.temps+8*uintptr(k), 0x8b) // mov rN, [temp]
		}
	}
}

// rm emits opcode bytes with register field reg and an r/m operand o (a register
// temporary or an environment word); w adds REX.W.
func (a *emitter) rm(w bool, reg int, o nop, opc ...byte) {
	if o.reg == 0 {
		a.env(w, reg, o.off, opc...)
		return
	}
	a.rex(w, reg, o.reg)
	a.bytes(opc...)
	a.bytes(0xc0 | byte(reg&7)<<3 | byte(o.reg&7))
}

// rex emits a REX prefix for W, ModRM.reg = reg and ModRM.rm (or opcode register)
// = rm, when one is needed.
func (a *emitter) rex(w bool, reg, rm int) {
	x := byte(0x40)
	if w {
		x |= 8
	}
	if reg >= 8 {
		x |= 4
	}
	if rm >= 8 {
		x |= 1
	}
	if x != 0x40 {
		a.bytes(x)
	}
}

// put stores RAX into d.
func (a *emitter) put(d nop) {
	if d.reg != 0 {
		a.rex(true, rAX, d.reg)
		a.bytes(0x89, 0xc0|byte(d.reg&7)) // mov rN, rax
	} else {
		a.storeRAX(d.off)
	}
	a.wrote(d)
}

// putImm stores a constant into d.
func (a *emitter) putImm(d nop, v uint64) {
	if d.reg != 0 {
		a.movImm(d.reg, v)
	} else {
		a.storeImm(d.off, v)
	}
	a.wrote(d)
}

// pendingLink is a chainable exit whose Out address is known once the code is placed.
type pendingLink struct {
	rec *LinkRec
	out int // code offset of the exit's leave path
}

type stub struct {
	patch  []int // rel32 fields that jump to the stub
	exit   int
	spill  uint8 // dirty register temporaries at the access
	budget bool  // a helper-call exit: report the loop budget left in RBX
}

func (a *emitter) bytes(x ...byte) { a.b = append(a.b, x...) }
func (a *emitter) u32(v uint32)    { a.b = binary.LittleEndian.AppendUint32(a.b, v) }
func (a *emitter) u64(v uint64)    { a.b = binary.LittleEndian.AppendUint64(a.b, v) }

func fitsI32(v uint64) bool { return int64(v) == int64(int32(v)) }

// env emits opcode bytes with a ModRM for [DI+disp32] and register field reg; w adds
// REX.W.
func (a *emitter) env(w bool, reg int, off uintptr, opc ...byte) {
	a.rex(w, reg, 0)
	a.bytes(opc...)
	a.bytes(0x80 | byte(reg&7)<<3 | rDI)
	a.u32(uint32(off))
}

// movImm loads a 64-bit constant into r.
func (a *emitter) movImm(r int, v uint64) {
	switch {
	case v <= 0xffffffff:
		a.rex(false, 0, r)
		a.bytes(0xb8 + byte(r&7)) // mov r32, imm32 (zero-extends)
		a.u32(uint32(v))
	case fitsI32(v):
		a.rex(true, 0, r)
		a.bytes(0xc7, 0xc0|byte(r&7)) // mov r64, simm32
		a.u32(uint32(v))
	default:
		a.rex(true, 0, r)
		a.bytes(0xb8 + byte(r&7))
		a.u64(v)
	}
}

// load puts an operand in register r.
func (a *emitter) load(r int, o nop) {
	if o.imm {
		a.movImm(r, o.v)
		return
	}
	a.rm(true, r, o, 0x8b)
}

// storeRAX writes RAX to the environment word at off.
func (a *emitter) storeRAX(off uintptr) { a.env(true, rAX, off, 0x89) }

// storeImm writes a constant to the environment word at off.
func (a *emitter) storeImm(off uintptr, v uint64) {
	if fitsI32(v) {
		a.env(true, 0, off, 0xc7)
		a.u32(uint32(v))
		return
	}
	a.movImm(rAX, v)
	a.storeRAX(off)
}

// leave returns to the trampoline with status st in EAX.
func (a *emitter) leave(st uint32) {
	if st == 0 {
		a.bytes(0x31, 0xc0) // xor eax, eax
	} else {
		a.bytes(0xb8)
		a.u32(st)
	}
	a.bytes(0xc3)
}

// exit appends an exit-table entry (its resume offset is set once known) and returns
// its status value.
func (a *emitter) exit(kind uint8, op int) uint32 {
	a.exits = append(a.exits, nativeExit{kind: kind, op: int32(op)})
	return uint32(len(a.exits))
}

// jcc emits a conditional rel32 jump (cc is the second opcode byte, 0x84 je, 0x85 jne)
// and returns the position of its rel32 field.
func (a *emitter) jcc(cc byte) int {
	a.bytes(0x0f, cc)
	a.u32(0)
	return len(a.b) - 4
}

// jmp emits an unconditional rel32 jump and returns the position of its rel32 field.
func (a *emitter) jmp() int {
	a.bytes(0xe9)
	a.u32(0)
	return len(a.b) - 4
}

func (a *emitter) patch(at, target int) {
	binary.LittleEndian.PutUint32(a.b[at:], uint32(target-(at+4)))
}

// loopBack emits, for an exit to the block's own start, the jump back to it taken
// while no exit is requested and the loop budget (R8) lasts; otherwise the code falls
// through to the normal exit. In a linkable segment the jump goes to the entry check
// (exitCheck at the start), which does both tests.
func (a *emitter) loopBack(exitReq uintptr, target uint64) {
	if !a.canLoop || target != a.loop {
		return
	}
	if a.canLink {
		a.patch(a.jmp(), 0) // the entry check
		return
	}
	out := a.exitCheck(exitReq)
	a.patch(a.jmp(), 0) // the block's start
	for _, at := range out {
		a.patch(at, len(a.b))
	}
}

// exitCheck emits the test made before running on into a block: jump away when an
// exit is requested or, decrementing it, the budget (R8) is spent. It returns the
// rel32 fields of those two jumps.
func (a *emitter) exitCheck(exitReq uintptr) []int {
	a.env(false, rAX, exitReq, 0x8b) // mov eax, [exit request]
	a.bytes(0x85, 0xc0)              // test eax, eax
	req := a.jcc(0x85)
	a.bytes(0x49, 0xff, 0xc8) // dec r8
	return []int{req, a.jcc(0x84)}
}

// stopPath emits the way out of a linkable block's entry check (exitCheck at its start,
// reached by links and loops but not from jitcall, which enters just after it): PC =
// the block's start, no exit to report.
func (a *emitter) stopPath(pcOff uintptr, patch []int) {
	for _, at := range patch {
		a.patch(at, len(a.b))
	}
	a.storeImm(pcOff, a.loop)
	a.noLinkRec()
	a.leave(0)
}

// endBlock emits the end of the block for an exit to the constant PC target (the PC
// store and the return with status 0). In a linkable segment it is a jump through the
// exit's link record to the linked block's entry check, or while unlinked to the
// exit's own leave path; exits to the block's own start loop back directly instead.
func (a *emitter) endBlock(exitReq, pcOff uintptr, target uint64) {
	a.spill(a.dirty)
	a.loopBack(exitReq, target)
	if a.canLink && target == a.loop {
		return // an unconditional jump to the entry check
	}
	if a.canLink && target&PageMask == a.loop&PageMask { // links stay within a page
		if rec := newLinkRec(); rec != nil {
			a.bytes(0x48, 0xb8) // mov rax, rec
			a.u64(uint64(uintptr(unsafe.Pointer(rec))))
			a.bytes(0xff, 0x20) // jmp [rax]: rec.Target, Out until linked
			rec.ExitPC = target
			a.links = append(a.links, pendingLink{rec: rec, out: len(a.b)})
			a.bytes(0x48, 0x89, 0xc3) // mov rbx, rax: report the record
			a.storeImm(pcOff, target)
			a.leave(0)
			return
		}
	}
	if a.probe {
		a.movImm(rAX, target)
		a.storeRAX(pcOff)
		a.probeJump()
		return
	}
	a.noLinkRec()
	a.storeImm(pcOff, target)
	a.leave(0)
}

// probeJump ends the block for the PC in RAX (already stored): it jumps to the block
// the vCPU's jump table holds for that PC when its header says it is alive, has the
// current mode flags and comes from the physical page the instruction TLB maps the PC
// to, and otherwise returns to the run loop reporting no link record.
func (a *emitter) probeJump() {
	var miss []int
	a.env(true, rDX, a.jumps, 0x8b) // mov rdx, [jump table]
	a.bytes(0x48, 0x85, 0xd2)       // test rdx, rdx (none: the run loop decides)
	miss = append(miss, a.jcc(0x84))
	a.bytes(0x48, 0x89, 0xc1)       // mov rcx, rax
	a.bytes(0x48, 0xc1, 0xe9, 0x02) // shr rcx, 2
	a.bytes(0x81, 0xe1)             // and ecx, table mask
	a.u32(1<<JumpTableBits - 1)     //
	a.bytes(0xc1, 0xe1, 0x04)       // shl ecx, 4 (16-byte entries)
	a.bytes(0x48, 0x01, 0xd1)       // add rcx, rdx
	a.bytes(0x48, 0x3b, 0x01)       // cmp rax, [rcx].PC
	miss = append(miss, a.jcc(0x85))
	a.bytes(0x48, 0x8b, 0x49, 0x08) // mov rcx, [rcx].Hdr
	a.bytes(0x48, 0x85, 0xc9)       // test rcx, rcx
	miss = append(miss, a.jcc(0x84))
	a.env(true, rDX, a.flags, 0x8b)                  // mov rdx, [mode flags]
	a.bytes(0x48, 0x3b, 0x51, byte(linkSrcFlagsOff)) // cmp rdx, [rcx].SrcFlags
	miss = append(miss, a.jcc(0x85))                 //
	a.bytes(0x48, 0x89, 0xc2)                        // mov rdx, rax
	a.bytes(0x48, 0xc1, 0xea, PageBits)              // shr rdx, 12
	a.bytes(0x81, 0xe2)                              // and edx, TLB index mask
	a.u32(1<<TLBBits - 1)                            //
	a.bytes(0xc1, 0xe2, tlbEntryShift)               // shl edx, log2(entry size)
	a.env(true, rDX, a.tlb, 0x03)                    // add rdx, [TLB]
	a.bytes(0x48, 0x89, 0xc6)                        // mov rsi, rax
	a.bytes(0x48, 0x81, 0xe6)                        // and rsi, PageMask (sign-extended)
	a.u32(uint32(PageMask & 0xffffffff))             //
	a.bytes(0x48, 0x3b, 0x72, byte(tlbExecOff))      // cmp rsi, [rdx].Exec
	miss = append(miss, a.jcc(0x85))                 //
	a.bytes(0x48, 0x8b, 0x72, byte(tlbPhysOff))      // mov rsi, [rdx].Phys
	a.bytes(0x48, 0x33, 0x71, byte(linkSrcPhysOff))  // xor rsi, [rcx].SrcPhys
	a.bytes(0x48, 0xc1, 0xee, PageBits)              // shr rsi, 12: zero when the pages match
	miss = append(miss, a.jcc(0x85))                 //
	a.bytes(0x48, 0x8b, 0x49, byte(linkTargetOff))   // mov rcx, [rcx].Target (0: dropped)
	a.bytes(0x48, 0x85, 0xc9)                        // test rcx, rcx
	miss = append(miss, a.jcc(0x84))                 //
	a.bytes(0xff, 0xe1)                              // jmp rcx: its entry check
	for _, at := range miss {
		a.patch(at, len(a.b))
	}
	a.noLinkRec()
	a.leave(0)
}

var (
	linkTargetOff   = unsafe.Offsetof(LinkRec{}.Target)
	linkSrcPhysOff  = unsafe.Offsetof(LinkRec{}.SrcPhys)
	linkSrcFlagsOff = unsafe.Offsetof(LinkRec{}.SrcFlags)
)

// noLinkRec clears RBX, the link record a linkable segment's function hands to the run
// loop through Target.LastExit, for an exit that has none (a chainable exit sets it
// from RAX instead, see endBlock).
func (a *emitter) noLinkRec() {
	if a.canLink {
		a.bytes(0x31, 0xdb) // xor ebx, ebx
	}
}

// aluOp returns the opcode of "op r64, r/m64" and the /ext of "op r/m64, imm32".
func aluOp(o Opcode) (opc, ext byte, ok bool) {
	switch o {
	case OpAdd:
		return 0x03, 0, true
	case OpOr:
		return 0x0b, 1, true
	case OpAnd:
		return 0x23, 4, true
	case OpSub:
		return 0x2b, 5, true
	case OpXor:
		return 0x33, 6, true
	}
	return 0, 0, false
}

// shiftExt returns the /ext of the shift group (C1, D3) for a shift op.
func shiftExt(o Opcode) (byte, bool) {
	switch o {
	case OpShl:
		return 4, true
	case OpShr:
		return 5, true
	case OpSar:
		return 7, true
	}
	return 0, false
}

// segEnd is the status of a segment that ran to its end without ending the block.
const segEnd = 0xffffffff

// Exit statuses are global: a linked block's slow path returns to the function of
// whichever block the run loop entered, so status n names entry n of one table shared
// by every block (exitTab), not of the block's own.
type exitEntry struct {
	pc     uint64
	dst    uintptr
	resume uintptr
	size   uint8
	signed bool
	store  bool
	user   bool // unprivileged: the target's user slow paths
	pure   bool // call: Op.Pure, the helper leaves memory and translation state alone
	call   any  // exCall: the helper, a func(*E) bool
}

const (
	exitChunkBits = 12
	exitChunks    = 1 << 14 // 64M exits: far more than the arena can hold code for
)

var exitTab struct {
	mu     sync.Mutex
	next   uint32 // next free status (0 is "block ended")
	chunks [exitChunks]atomic.Pointer[[1 << exitChunkBits]exitEntry]
}

// reserveExits returns the first of n consecutive fresh statuses, or 0 when the table
// is full.
func reserveExits(n int) uint32 {
	exitTab.mu.Lock()
	defer exitTab.mu.Unlock()
	if exitTab.next == 0 {
		exitTab.next = 1
	}
	first := exitTab.next
	last := uint64(first) + uint64(n)
	if last > exitChunks<<exitChunkBits {
		return 0
	}
	for c := first >> exitChunkBits; uint64(c) <= (last-1)>>exitChunkBits; c++ {
		if exitTab.chunks[c].Load() == nil {
			exitTab.chunks[c].Store(new([1 << exitChunkBits]exitEntry))
		}
	}
	exitTab.next = uint32(last)
	return first
}

func exitAt(st uint64) *exitEntry {
	return &exitTab.chunks[st>>exitChunkBits].Load()[st&(1<<exitChunkBits-1)]
}

// compileNative compiles a block: each run of ops between helper calls that would take
// at least two closures becomes one native segment, the rest stays closures (helpers
// are called directly, as the closure backend does: one call site per block position
// keeps the host's indirect-branch prediction as good as the closure backend's).
// ok=false means no segment was worth compiling natively, or the code arena is full:
// the block then uses the closure backend. ops has been validated by the closure
// compiler. A block that is one native segment reports its Linkage for chaining.
func compileNative[E any](t *Target[E], ops []Op[E]) (func(env *E), Linkage, bool) {
	if f, lk, ok := compileWhole(t, ops); ok {
		return f, lk, true
	}
	var fs []func(*E) bool
	var lk Linkage
	native := false
	for i := 0; i < len(ops); {
		if ops[i].Opc == OpCall {
			if ops[i].Helper == nil {
				return nil, Linkage{}, false
			}
			fs = append(fs, ops[i].Helper)
			i++
			continue
		}
		j := i
		for j < len(ops) && ops[j].Opc != OpCall {
			j++
		}
		cf, err := closureFuncs(t, ops[i:j])
		if err != nil {
			return nil, Linkage{}, false
		}
		if len(cf) >= 2 {
			if f, l, ok := nativeSegment(t, ops[i:j], i == 0 && j == len(ops)); ok {
				cf, native, lk = []func(*E) bool{f}, true, l
			}
		}
		fs = append(fs, cf...)
		i = j
	}
	if !native {
		return nil, Linkage{}, false
	}
	if len(fs) == 1 { // a whole-block segment: no wrapper in between
		f := fs[0]
		return func(e *E) { f(e) }, lk, true
	}
	return unroll(fs), Linkage{}, true
}

// compileWhole compiles a block whose helper calls are all pure (Op.Pure) into one
// native segment, the helpers called from its exits, so that the block chains and
// loops as a block without helpers does (the split at helper calls keeps a block out
// of both, and each of its ends goes back to the run loop). A block with no helper
// call is compiled whole as well; one with an impure helper is not (ok false).
func compileWhole[E any](t *Target[E], ops []Op[E]) (func(env *E), Linkage, bool) {
	calls := 0
	for i := range ops {
		if ops[i].Opc == OpCall {
			if ops[i].Helper == nil || !ops[i].Pure {
				return nil, Linkage{}, false
			}
			calls++
		}
	}
	if len(ops) < 2 || calls == len(ops)-1 && calls < 2 {
		return nil, Linkage{}, false // a helper and the exit: closures are as good
	}
	f, lk, ok := nativeSegment(t, ops, true)
	if !ok {
		return nil, Linkage{}, false
	}
	return func(e *E) { f(e) }, lk, true
}

// nativeSegment compiles a run of ops without helper calls into one function that
// returns false when the run ended the block. A whole block on a target with exit
// requests and LastExit gets chainable exits and a Linkage.
func nativeSegment[E any](t *Target[E], ops []Op[E], whole bool) (func(*E) bool, Linkage, bool) {
	canLoop := whole && t.ExitReq != 0
	a := emitter{loop: ops[0].PC, canLoop: canLoop, canLink: canLoop && t.LastExit != 0,
		b: make([]byte, 0, 48*len(ops)+16), temps: t.Temps, jumps: t.Jumps, flags: t.Flags, tlb: t.TLB}
	a.probe = a.canLink && t.Jumps != 0 && t.Flags != 0
	var stop []int
	if a.canLink {
		stop = a.exitCheck(t.ExitReq)
	}
	body := len(a.b)
	for i := range ops {
		if !emitOp(&a, t, &ops[i], i) {
			return nil, Linkage{}, false
		}
		if ops[i].Opc == OpExit {
			break // the rest is unreachable (a frontend's fall-through exit after a branch)
		}
	}
	a.spill(a.dirty) // a helper may read them
	a.leave(segEnd)
	if a.canLink {
		a.stopPath(t.PC, stop)
	}
	first := uint32(0)
	if len(a.exits) > 0 {
		if first = reserveExits(len(a.exits)); first == 0 {
			return nil, Linkage{}, false
		}
	}
	for _, at := range a.calls {
		binary.LittleEndian.PutUint32(a.b[at:], binary.LittleEndian.Uint32(a.b[at:])+first)
	}
	for _, s := range a.stubs {
		for _, at := range s.patch {
			a.patch(at, len(a.b))
		}
		a.spill(s.spill)
		if s.budget {
			a.bytes(0x4c, 0x89, 0xc3) // mov rbx, r8
		}
		a.leave(first + uint32(s.exit))
	}
	// Resuming after a slow path goes through a reload of the register temporaries
	// in use there (the load's destination included: Go wrote it to the environment).
	for i := range a.exits {
		x := &a.exits[i]
		if x.reload == 0 {
			continue
		}
		join := x.resume
		x.resume = len(a.b)
		a.reload(x.reload)
		a.patch(a.jmp(), join)
	}
	base := codeArena.place(a.b, ops[0].PC)
	if base == 0 {
		return nil, Linkage{}, false
	}
	// The exit table copies what the slow paths need, so that the block's IR is not
	// kept alive by its code. Entries are complete before the block can run (it is
	// published through the block cache afterwards).
	for i, x := range a.exits {
		o := &ops[x.op]
		d, _ := loc(t, o.D)
		en := exitEntry{o.PC, d, base + uintptr(x.resume), o.Size, o.Signed && o.Size < 8, x.kind == exStore, o.User, o.Pure, nil}
		if x.kind == exCall {
			en.call = o.Helper
		}
		*exitAt(uint64(first) + uint64(i)) = en
	}
	var lk Linkage
	if a.canLink {
		lk.Entry = base
		for _, l := range a.links {
			l.rec.Out = base + uintptr(l.out)
			l.rec.Target = l.rec.Out
			lk.Exits = append(lk.Exits, l.rec)
		}
	}
	pcOff, loadSlow, storeSlow, lastExit := t.PC, t.LoadSlow, t.StoreSlow, t.LastExit
	uLoadSlow, uStoreSlow := t.UserLoadSlow, t.UserStoreSlow
	report := a.canLink
	return func(e *E) bool {
		p := unsafe.Pointer(e)
		code, budget := base+uintptr(body), uint64(loopBudget)
		for {
			st, va, val := jitcall(code, p, budget)
			if st == segEnd {
				return true
			}
			if st == 0 {
				if report {
					*word(p, lastExit) = va // the link record of the exit taken, or 0
				}
				return false
			}
			x := exitAt(st)
			if x.call != nil {
				if !x.call.(func(*E) bool)(e) {
					if report {
						*word(p, lastExit) = 0
					}
					return false // the helper ended the block
				}
				// Resume with the budget the code had left (BX), so that a loop
				// calling helpers still returns to the run loop after a budget's
				// worth of iterations; after an impure one, take no loop or link.
				budget = max(va, 1)
				if !x.pure {
					budget = 1
				}
				code = x.resume
				continue
			}
			*word(p, pcOff) = x.pc
			if x.store {
				st := storeSlow
				if x.user {
					st = uStoreSlow
				}
				if !st(e, va, int(x.size), val) {
					return false
				}
				// The store may have invalidated this very block or one linked from
				// it (self-modifying code): finish this pass, take no loop or link.
				budget = 1
			} else {
				ld := loadSlow
				if x.user {
					ld = uLoadSlow
				}
				v, ok := ld(e, va, int(x.size))
				if !ok {
					return false
				}
				if x.signed {
					sh := 64 - 8*uint(x.size)
					v = uint64(int64(v<<sh) >> sh)
				}
				*word(p, x.dst) = v
			}
			code = x.resume
		}
	}, lk, true
}

// emitOp emits op (ops[i] of the block); false means unsupported.
func emitOp[E any](a *emitter, t *Target[E], op *Op[E], i int) bool {
	switch op.Opc {
	case OpCall:
		// Leave with the call's status (the imm32 is the exit's index until the
		// table's first status is known), then resume just after with the register
		// temporaries in use reloaded: the helper may read and write any of them.
		a.spill(a.dirty)
		a.dirty = 0
		st := a.exit(exCall, i)
		a.bytes(0x4c, 0x89, 0xc3) // mov rbx, r8: the loop budget left
		a.bytes(0xb8)             // mov eax, status
		a.calls = append(a.calls, len(a.b))
		a.u32(st - 1)
		a.bytes(0xc3) // ret
		x := &a.exits[len(a.exits)-1]
		x.resume, x.reload = len(a.b), a.inReg
		return true
	case OpExit:
		o := a.src(op.A)
		if o.imm {
			a.endBlock(t.ExitReq, t.PC, o.v)
			return true
		}
		a.load(rAX, o)
		a.storeRAX(t.PC)
		a.spill(a.dirty)
		if a.probe {
			a.probeJump()
			return true
		}
		a.noLinkRec()
		a.leave(0)
		return true
	case OpExitZ, OpExitNZ:
		o := a.src(op.A)
		target, _ := op.B.IsImm()
		if o.imm {
			if (o.v != 0) != (op.Opc == OpExitNZ) {
				return true // never taken
			}
			a.endBlock(t.ExitReq, t.PC, target)
			return true
		}
		a.load(rAX, o)
		a.bytes(0x48, 0x85, 0xc0) // test rax, rax
		cc := byte(0x85)          // ExitZ: skip the exit when non-zero
		if op.Opc == OpExitNZ {
			cc = 0x84
		}
		at := a.jcc(cc)
		a.endBlock(t.ExitReq, t.PC, target)
		a.patch(at, len(a.b))
		return true
	case OpLoad:
		return emitLoad(a, t, op, i)
	case OpStore:
		return emitStore(a, t, op, i)
	case OpFlagsAdd, OpFlagsSub, OpFlagsLogic, OpFlagsAddC:
		return emitFlags(a, op)
	case OpFence:
		a.bytes(0x0f, 0xae, 0xf0) // mfence
		return true
	case OpFloat:
		return emitFloat(a, t, op, i)
	case OpVec:
		return emitVec(a, op)
	case OpUdiv, OpSdiv:
		return emitDiv(a, op)
	}
	x := a.src(op.A)
	var y nop
	switch op.Opc {
	case OpMov, OpZext32, OpSext32, OpBswap, OpClz:
	default:
		y = a.src(op.B)
	}
	d := a.opnd(op.D)
	switch op.Opc {
	case OpMov:
		if x.imm {
			a.putImm(d, x.v)
			return true
		}
		a.load(rAX, x)
		a.put(d)
		return true
	case OpZext32:
		if x.imm {
			a.putImm(d, uint64(uint32(x.v)))
			return true
		}
		a.rm(false, rAX, x, 0x8b) // mov eax, A
		a.put(d)
		return true
	case OpSext32:
		if x.imm {
			a.putImm(d, uint64(int64(int32(x.v))))
			return true
		}
		a.rm(true, rAX, x, 0x63) // movsxd rax, A
		a.put(d)
		return true
	case OpBswap, OpClz:
		if x.imm {
			v := bits.ReverseBytes64(x.v)
			if op.Opc == OpClz {
				v = uint64(bits.LeadingZeros64(x.v))
			}
			a.putImm(d, v)
			return true
		}
		a.load(rAX, x)
		if op.Opc == OpBswap {
			a.bytes(0x48, 0x0f, 0xc8) // bswap rax
		} else {
			// BSR leaves its destination undefined and sets ZF for a zero source;
			// 127^63 = 64 then, and 63-index otherwise (no LZCNT: not every host has it).
			a.bytes(0xb9, 127, 0, 0, 0)     // mov ecx, 127
			a.bytes(0x48, 0x0f, 0xbd, 0xc0) // bsr rax, rax
			a.bytes(0x48, 0x0f, 0x44, 0xc1) // cmovz rax, rcx
			a.bytes(0x48, 0x83, 0xf0, 63)   // xor rax, 63
		}
		a.put(d)
		return true
	}
	a.load(rAX, x)
	if opc, ext, ok := aluOp(op.Opc); ok {
		switch {
		case !y.imm:
			a.rm(true, rAX, y, opc)
		case fitsI32(y.v):
			a.bytes(0x48, 0x81, 0xc0|ext<<3) // op rax, simm32
			a.u32(uint32(y.v))
		default:
			a.movImm(rCX, y.v)
			a.bytes(0x48, opc, 0xc1) // op rax, rcx
		}
		a.put(d)
		return true
	}
	if ext, ok := shiftExt(op.Opc); ok {
		if y.imm {
			a.bytes(0x48, 0xc1, 0xc0|ext<<3, byte(y.v&63)) // shift rax, imm8
		} else {
			a.load(rCX, y)
			a.bytes(0x48, 0xd3, 0xc0|ext<<3) // shift rax, cl (the count is taken mod 64)
		}
		a.put(d)
		return true
	}
	if op.Opc == OpSetEq || op.Opc == OpSetLtu {
		switch {
		case !y.imm:
			a.rm(true, rAX, y, 0x3b) // cmp rax, B
		case fitsI32(y.v):
			a.bytes(0x48, 0x81, 0xf8) // cmp rax, simm32
			a.u32(uint32(y.v))
		default:
			a.movImm(rCX, y.v)
			a.bytes(0x48, 0x3b, 0xc1) // cmp rax, rcx
		}
		cc := byte(0x94) // sete
		if op.Opc == OpSetLtu {
			cc = 0x92 // setb
		}
		a.bytes(0x0f, cc, 0xc0)         // setcc al
		a.bytes(0x48, 0x0f, 0xb6, 0xc0) // movzx rax, al
		a.put(d)
		return true
	}
	if op.Opc == OpMulHu || op.Opc == OpMulHs {
		ext := byte(4) // mul r/m64: RDX:RAX = RAX * r/m64
		if op.Opc == OpMulHs {
			ext = 5 // imul r/m64
		}
		if y.imm {
			a.movImm(rCX, y.v)
			y = nop{reg: rCX, tmp: -1}
		}
		a.rm(true, int(ext), y, 0xf7)
		a.bytes(0x48, 0x89, 0xd0) // mov rax, rdx
		a.put(d)
		return true
	}
	if op.Opc == OpMul {
		switch {
		case !y.imm:
			a.rm(true, rAX, y, 0x0f, 0xaf) // imul rax, B
		case fitsI32(y.v):
			a.bytes(0x48, 0x69, 0xc0) // imul rax, rax, simm32
			a.u32(uint32(y.v))
		default:
			a.movImm(rCX, y.v)
			a.bytes(0x48, 0x0f, 0xaf, 0xc1) // imul rax, rcx
		}
		a.put(d)
		return true
	}
	return false
}

// emitAddr computes the access address into RBX and the TLB entry into RDX, then
// compares the tag at tagOff with RBX's page and alignment bits, jumping to the
// returned stub (not yet emitted) when they differ.
func emitAddr[E any](a *emitter, t *Target[E], op *Op[E], tagOff uintptr, kind uint8, i int) *stub {
	base := a.src(op.A)
	if base.imm {
		a.movImm(rBX, base.v+op.Off)
	} else {
		a.load(rBX, base)
		switch {
		case op.Off == 0:
		case fitsI32(op.Off):
			a.bytes(0x48, 0x81, 0xc3) // add rbx, simm32
			a.u32(uint32(op.Off))
		default:
			a.movImm(rAX, op.Off)
			a.bytes(0x48, 0x01, 0xc3) // add rbx, rax
		}
	}
	a.bytes(0x48, 0x89, 0xd8)           // mov rax, rbx
	a.bytes(0x48, 0xc1, 0xe8, PageBits) // shr rax, 12
	a.bytes(0x25)                       // and eax, TLB index mask
	a.u32(1<<TLBBits - 1)               //
	a.bytes(0xc1, 0xe0, tlbEntryShift)  // shl eax, log2(entry size)
	tlbOff, _, _, _ := t.memPath(op)    // checked by the callers
	a.env(true, rDX, tlbOff, 0x8b)      // mov rdx, [DI+TLB]
	a.bytes(0x48, 0x01, 0xc2)           // add rdx, rax
	a.bytes(0x48, 0x89, 0xd8)           // mov rax, rbx
	a.bytes(0x48, 0x25)                 // and rax, PageMask|align (sign-extended)
	a.u32(uint32(PageMask | uint64(op.Size-1)))
	a.bytes(0x48, 0x3b, 0x42, byte(tagOff)) // cmp rax, [rdx+tag]
	a.stubs = append(a.stubs, stub{exit: int(a.exit(kind, i)) - 1, spill: a.dirty})
	s := &a.stubs[len(a.stubs)-1]
	s.patch = append(s.patch, a.jcc(0x85))
	return s
}

// emitHost turns RBX into the host address in RCX, using the TLB entry in RDX.
func (a *emitter) emitHost() {
	a.bytes(0x48, 0x89, 0xd9)                   // mov rcx, rbx
	a.bytes(0x81, 0xe1)                         // and ecx, PageSize-1
	a.u32(PageSize - 1)                         //
	a.bytes(0x48, 0x03, 0x4a, byte(tlbHostOff)) // add rcx, [rdx+Host]
}

func emitLoad[E any](a *emitter, t *Target[E], op *Op[E], i int) bool {
	if _, _, _, ok := t.memPath(op); !ok {
		return false
	}
	emitAddr(a, t, op, tlbReadOff, exLoad, i)
	d := a.opnd(op.D)
	a.emitHost()
	switch {
	case op.Size == 1 && !op.Signed:
		a.bytes(0x0f, 0xb6, 0x01) // movzx eax, byte [rcx]
	case op.Size == 1:
		a.bytes(0x48, 0x0f, 0xbe, 0x01) // movsx rax, byte [rcx]
	case op.Size == 2 && !op.Signed:
		a.bytes(0x0f, 0xb7, 0x01)
	case op.Size == 2:
		a.bytes(0x48, 0x0f, 0xbf, 0x01)
	case op.Size == 4 && !op.Signed:
		a.bytes(0x8b, 0x01) // mov eax, [rcx]
	case op.Size == 4:
		a.bytes(0x48, 0x63, 0x01) // movsxd rax, [rcx]
	default:
		a.bytes(0x48, 0x8b, 0x01)
	}
	a.put(d)
	x := &a.exits[len(a.exits)-1]
	x.resume, x.reload = len(a.b), a.inReg
	return true
}

func emitStore[E any](a *emitter, t *Target[E], op *Op[E], i int) bool {
	if _, _, _, ok := t.memPath(op); !ok {
		return false
	}
	a.load(rSI, a.src(op.B))
	s := emitAddr(a, t, op, tlbWriteOff, exStore, i)
	a.bytes(0x48, 0x8b, 0x42, byte(tlbCodeOff)) // mov rax, [rdx+Code]
	a.bytes(0xf6, 0x00, byte(CodeBit))          // test byte [rax], CodeBit
	s.patch = append(s.patch, a.jcc(0x85))
	a.emitHost()
	switch op.Size {
	case 1:
		a.bytes(0x40, 0x88, 0x31) // mov [rcx], sil
	case 2:
		a.bytes(0x66, 0x89, 0x31)
	case 4:
		a.bytes(0x89, 0x31)
	default:
		a.bytes(0x48, 0x89, 0x31)
	}
	x := &a.exits[len(a.exits)-1]
	x.resume, x.reload = len(a.b), a.inReg
	return true
}

// emitFlags computes a flags op with one host ALU instruction (32- or 64-bit) and turns
// SF, ZF, CF (inverted for a subtraction: A64's C is "no borrow") and OF into NZCV.
func emitFlags[E any](a *emitter, op *Op[E]) bool {
	if op.Size != 4 && op.Size != 8 || !op.modeOK() {
		return false
	}
	w := op.Size == 8
	x := a.src(op.A)
	var y nop
	if op.Opc != OpFlagsLogic {
		y = a.src(op.B)
	}
	var c nop
	if op.Opc == OpFlagsAddC {
		c = a.src(op.D) // its carry bit is the carry-in
	}
	d := a.opnd(op.D)
	a.load(rAX, x)
	if op.Opc == OpFlagsAddC {
		if y.imm && w && !fitsI32(y.v) {
			a.movImm(rCX, y.v)
			y = nop{reg: rCX, tmp: -1}
		}
		a.rm(false, 4, c, 0x0f, 0xba) // bt dword D, 29: CF = C
		a.bytes(29)
		if y.imm {
			a.rex(w, 0, rAX)
			a.bytes(0x81, 0xd0) // adc eax/rax, imm32
			a.u32(uint32(y.v))
		} else {
			a.rm(w, rAX, y, 0x13) // adc eax/rax, B
		}
	}
	switch op.Opc {
	case OpFlagsAddC:
	case OpFlagsLogic:
		a.rex(w, rAX, rAX)
		a.bytes(0x85, 0xc0) // test eax/rax, itself
	default:
		opc, ext := byte(0x03), byte(0) // add r, r/m; add r/m, imm32 is 81 /0
		if op.Opc == OpFlagsSub {
			opc, ext = 0x2b, 5
		}
		switch {
		case !y.imm:
			a.rm(w, rAX, y, opc)
		case !w || fitsI32(y.v):
			a.rex(w, 0, rAX)
			a.bytes(0x81, 0xc0|ext<<3) // op eax/rax, imm32 (32-bit: its low half is all that counts)
			a.u32(uint32(y.v))
		default:
			a.movImm(rCX, y.v)
			a.rex(w, rAX, rCX)
			a.bytes(opc, 0xc1) // op rax, rcx
		}
	}
	a.bytes(0x0f, 0x98, 0xc0) // sets al: N
	a.bytes(0x0f, 0x94, 0xc1) // setz cl: Z
	if op.Opc != OpFlagsLogic {
		cc := byte(0x92) // setb: C is the carry of an addition
		if op.Opc == OpFlagsSub {
			cc = 0x93 // setae: and "no borrow" for a subtraction
		}
		a.bytes(0x0f, cc, 0xc2)   // setcc dl: C
		a.bytes(0x0f, 0x90, 0xc3) // seto bl: V
	}
	a.bytes(0x0f, 0xb6, 0xc0, 0xc1, 0xe0, 31) // movzx eax, al; shl eax, 31
	a.bytes(0x0f, 0xb6, 0xc9, 0xc1, 0xe1, 30) // movzx ecx, cl; shl ecx, 30
	a.bytes(0x09, 0xc8)                       // or eax, ecx
	if op.Opc != OpFlagsLogic {
		a.bytes(0x0f, 0xb6, 0xca, 0xc1, 0xe1, 29) // movzx ecx, dl; shl ecx, 29
		a.bytes(0x09, 0xc8)                       // or eax, ecx
		a.bytes(0x0f, 0xb6, 0xcb, 0xc1, 0xe1, 28) // movzx ecx, bl; shl ecx, 28
		a.bytes(0x09, 0xc8)                       // or eax, ecx
	}
	a.put(d)
	return true
}

// emitDiv divides with DIV/IDIV, branching around the cases A64 defines and x86
// faults on: a zero divisor (result 0) and, signed, a divisor of -1 (negation, which
// wraps the most negative value onto itself).
func emitDiv[E any](a *emitter, op *Op[E]) bool {
	if op.Size != 4 && op.Size != 8 || !op.modeOK() {
		return false
	}
	w := op.Size == 8
	x, y := a.src(op.A), a.src(op.B)
	d := a.opnd(op.D)
	a.load(rAX, x)
	a.load(rCX, y)
	var done []int
	a.rex(w, rCX, rCX)
	a.bytes(0x85, 0xc9) // test ecx/rcx, itself
	zero := a.jcc(0x84)
	if op.Opc == OpSdiv {
		a.rex(w, 0, rCX)
		a.bytes(0x83, 0xf9, 0xff) // cmp ecx/rcx, -1
		normal := a.jcc(0x85)
		a.rex(w, 0, rAX)
		a.bytes(0xf7, 0xd8) // neg eax/rax
		done = append(done, a.jmp())
		a.patch(normal, len(a.b))
		a.rex(w, 0, 0)
		a.bytes(0x99) // cdq/cqo
		a.rex(w, 0, rCX)
		a.bytes(0xf7, 0xf9) // idiv ecx/rcx
	} else {
		a.bytes(0x31, 0xd2) // xor edx, edx
		a.rex(w, 0, rCX)
		a.bytes(0xf7, 0xf1) // div ecx/rcx
	}
	done = append(done, a.jmp())
	a.patch(zero, len(a.b))
	a.bytes(0x31, 0xc0) // xor eax, eax
	for _, at := range done {
		a.patch(at, len(a.b))
	}
	if !w {
		a.bytes(0x89, 0xc0) // mov eax, eax: zero-extend the 32-bit result
	}
	a.put(d)
	return true
}

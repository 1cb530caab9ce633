package tcg

import (
	"sync"
	"sync/atomic"
	"unsafe"
)

// The run loop (QEMU's accel/tcg/cpu-exec.c): target-independent, driving one vCPU
// through the hooks its target supplies (CPUOps, QEMU's TCGCPUOps). Per block it
// checks the exit-request word, follows the previous block's chain link, probes the
// vCPU's jump cache (checked against the instruction TLB), and only on a miss calls
// the target: Fetch (alignment, MMU fill for the instruction fetch) and, when the
// engine's block cache has nothing either, Translate. It links the native exit the
// previous block left through to the block it found (link.go) and records native
// blocks in the jump table generated code probes. At a block boundary with an exit
// requested it applies TLB invalidations other vCPUs queued (shootdowns), hands the
// target its own request bits (HandleExit: timers, power state), sleeps while the
// target says the vCPU cannot run, and lets the target deliver an interrupt
// (ExecInterrupt) before the next block.
//
// The hot path makes no hook call: the PC, mode flags and current TLB are read through
// pointers into the target's environment given to Init, and a chained or jump-cached
// block is entered directly. Hooks are function values in a struct rather than an
// interface or a type-parameter constraint: they are only called off the hot path, so
// the dispatch costs nothing measurable (a Debian boot and a CPU job on gemu take the
// same CPU time as with the loop inside target-arm), and the struct says at a glance
// what a target must provide.

// Exit-request bits the run loop owns. Targets define their own from ExitTarget up;
// any non-zero word makes generated code return to the loop at the next block end.
const (
	ExitStop   uint32 = 1 << 0 // Run's stop channel closed (or Stop called)
	ExitTLB    uint32 = 1 << 1 // another vCPU queued a TLB invalidation for this one
	ExitPark   uint32 = 1 << 2 // Park: wait at this block boundary until Unpark (park.go)
	ExitTarget uint32 = 1 << 3 // the first bit free for the target (HandleExit gets it)
)

// Block is the block type of a target with environment E: compiled code is a
// func(env *E), as Compile returns.
type Block[E any] = TB[func(*E)]

// CPUOps are the hooks a target implements for the run loop. Fetch, Translate,
// HandleExit and ExecInterrupt are required.
type CPUOps[E any] struct {
	// Fetch prepares the instruction fetch at pc in the current mode after a jump
	// cache miss: it checks the PC's alignment, translates pc (instruction TLB, else
	// the MMU walk that fills the current TLB's entry, QEMU's tlb_fill) and returns the
	// physical address with a host pointer to the start of its page. On a fault it
	// raises the guest exception (PC alignment, instruction abort, fetch from a page
	// that is not RAM) and returns ok=false; the loop then goes on at the new PC.
	Fetch func(env *E, pc uint64) (phys uint64, host unsafe.Pointer, ok bool)
	// Translate decodes the guest code of the block at k (host points at the start of
	// k.Phys's page) into IR and compiles it (CompileLinked). It must not fail: a block
	// it cannot translate raises the guest's exception when run. A block ends at or
	// before the end of its page unless the target lets it run on into the next
	// virtual page (x86, whose instructions may straddle pages): it then fetches that
	// page itself and reports it in Translation.Page2, and must provide Probe.
	Translate func(env *E, k Key, host unsafe.Pointer) Translation[E]
	// Probe, for targets whose blocks may span two pages, translates the virtual page
	// address va for an instruction fetch in the current mode without raising any
	// exception (it may fill the TLB), returning the physical page, ok=false if the
	// fetch would fault. The loop uses it to check that a cached spanning block's
	// second page still maps where it did. nil: no block spans.
	Probe func(env *E, va uint64) (phys uint64, ok bool)
	// HandleExit receives the target's exit-request bits (all but ExitStop, ExitTLB
	// and ExitPark; possibly none) at a block boundary where an exit was requested: timer
	// deadlines, power-state changes, interrupt lines. It reports whether the vCPU can
	// run; false (halted, powered off) makes the loop sleep until Kick and call it
	// again.
	HandleExit func(env *E, req uint32) (run bool)
	// ExecInterrupt takes a pending interrupt the current mode does not mask, if any,
	// by changing the target state (QEMU's cpu_exec_interrupt). The loop calls it at
	// every serviced block boundary, after HandleExit reported the vCPU runnable.
	ExecInterrupt func(env *E)
	// TraceExec, if non-nil, is called before each block runs (QEMU's -d exec). Blocks
	// are then not linked natively, so that every block passes through the loop.
	TraceExec func(env *E, tb *Block[E])
}

// Translation is a block Translate made.
type Translation[E any] struct {
	Code func(*E) // the compiled block
	End  uint64   // the guest virtual PC just past its last instruction
	Link Linkage  // from CompileLinked
	// Spans says the code runs on into the virtual page after k.PC's, which maps to
	// the physical page Page2.
	Spans bool
	Page2 uint64
}

// VCPU is the run loop's per-vCPU state, embedded in the target's environment E. Init
// it before use; generated code reads its exit-request word, last-exit record and jump
// table at the offsets Target.SetVCPU gives.
type VCPU[E any] struct {
	exitReq  atomic.Uint32
	lastExit *LinkRec   // Target.LastExit: the chainable exit the last native block took
	jumps    *JumpTable // Target.Jumps

	env   *E
	ops   *CPUOps[E]
	eng   *Engine[E]
	pc    *uint64 // the target's guest PC
	flags *uint64 // the target's current mode flags (Key.Flags), kept current by it
	itlb  **TLB   // the target's pointer to its current MMU index's TLB
	tlbs  []*TLB  // every TLB of the vCPU, flushed by the invalidation calls

	// tlbGen counts TLB changes, so the loop's Go-level chain knows a page mapping held.
	tlbGen  uint64
	tlbReq  tlbRequests
	jc      JumpCache[func(*E)]
	wake    chan struct{}
	stopped atomic.Bool
	park    parking // Park/Unpark (park.go)
	// misses counts blocks not reached through a chain link (tests read it).
	misses uint64
}

// Init binds v to its guest's engine and target: env is the environment v is embedded
// in, pc, flags and itlb point at the target's guest PC, current mode flags (the block
// key's Flags, which the target keeps current: QEMU's cpu_get_tb_cpu_state) and
// current softmmu TLB pointer, and tlbs lists every TLB of the vCPU (one per MMU
// index). It registers v with eng for TLB shootdowns; Close unregisters it.
func (v *VCPU[E]) Init(eng *Engine[E], env *E, ops *CPUOps[E], pc, flags *uint64, itlb **TLB, tlbs ...*TLB) {
	v.eng, v.env, v.ops, v.pc, v.flags, v.itlb = eng, env, ops, pc, flags, itlb
	v.tlbs = tlbs
	v.jumps = new(JumpTable)
	v.wake = make(chan struct{}, 1)
	eng.add(v)
}

// Close unregisters v from its engine. v must not be running.
func (v *VCPU[E]) Close() { v.eng.remove(v) }

// SetVCPU fills in the run-loop offsets of t (ExitReq, LastExit, Jumps) for a target
// whose environment embeds its VCPU at byte offset off.
func (t *Target[E]) SetVCPU(off uintptr) {
	v := (*VCPU[E])(nil) // no value: a VCPU is too big for the stack
	t.ExitReq = off + unsafe.Offsetof(v.exitReq)
	t.LastExit = off + unsafe.Offsetof(v.lastExit)
	t.Jumps = off + unsafe.Offsetof(v.jumps)
}

// Request raises exit-request bits: the vCPU returns to its run loop at the next block
// boundary (generated code checks the word at block ends). It does not wake a
// sleeping vCPU: Kick does. Safe from any goroutine.
func (v *VCPU[E]) Request(bits uint32) { v.exitReq.Or(bits) }

// ExitRequested reports whether any exit request is pending.
func (v *VCPU[E]) ExitRequested() bool { return v.exitReq.Load() != 0 }

// Kick wakes the vCPU if it sleeps (in Sleep, or halted in the loop). Safe from any
// goroutine.
func (v *VCPU[E]) Kick() {
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

// Sleep blocks the vCPU's goroutine until Kick (WFI, HLT). Kicks are remembered, so a
// Kick just before Sleep makes it return at once.
func (v *VCPU[E]) Sleep() { <-v.wake }

// Stop makes Run return at the next block boundary (or at once if the vCPU sleeps).
// Safe from any goroutine.
func (v *VCPU[E]) Stop() {
	v.stopped.Store(true)
	v.exitReq.Or(ExitStop)
	v.Kick()
	v.wakeParked()
}

// FlushTLB drops all of this vCPU's softmmu TLB entries. The jump cache survives:
// its hits are checked against the instruction TLB.
func (v *VCPU[E]) FlushTLB() {
	for _, t := range v.tlbs {
		t.Flush()
	}
	v.tlbGen++
}

// FlushTLBPage drops this vCPU's translations of the virtual page holding va.
func (v *VCPU[E]) FlushTLBPage(va uint64) {
	for _, t := range v.tlbs {
		t.FlushPage(va)
	}
	v.tlbGen++
}

// BroadcastFlushTLB flushes every vCPU's TLB of the engine (a TLB shootdown): this
// one's at once, the others' at their next block boundary.
func (v *VCPU[E]) BroadcastFlushTLB() {
	v.FlushTLB()
	v.eng.each(v, func(o *VCPU[E]) {
		o.tlbReq.Lock()
		o.tlbReq.all = true
		o.tlbReq.Unlock()
		o.exitReq.Or(ExitTLB)
	})
}

// maxPendingPages bounds the per-vCPU queue of by-page invalidations from other vCPUs;
// beyond it the whole TLB is flushed.
const maxPendingPages = 64

// tlbRequests are invalidations other vCPUs asked for, applied at the next block
// boundary.
type tlbRequests struct {
	sync.Mutex
	all   bool
	pages []uint64
}

// BroadcastFlushTLBPage drops the translations of the page holding va on every vCPU
// of the engine: this one's at once, the others' at their next block boundary.
func (v *VCPU[E]) BroadcastFlushTLBPage(va uint64) {
	v.FlushTLBPage(va)
	v.eng.each(v, func(o *VCPU[E]) {
		o.tlbReq.Lock()
		if len(o.tlbReq.pages) < maxPendingPages {
			o.tlbReq.pages = append(o.tlbReq.pages, va)
		} else {
			o.tlbReq.all = true
		}
		o.tlbReq.Unlock()
		o.exitReq.Or(ExitTLB)
	})
}

// applyTLBRequests performs the invalidations other vCPUs queued for this one.
func (v *VCPU[E]) applyTLBRequests() {
	v.tlbReq.Lock()
	all, pages := v.tlbReq.all, v.tlbReq.pages
	v.tlbReq.all, v.tlbReq.pages = false, v.tlbReq.pages[:0]
	if all {
		v.FlushTLB()
	} else {
		for _, va := range pages {
			for _, t := range v.tlbs {
				t.FlushPage(va)
			}
		}
		v.tlbGen++
	}
	v.tlbReq.Unlock()
}

// Run executes the vCPU until stop is closed (or Stop is called), then returns nil.
// Guest errors never end it (the target turns them into guest exceptions); the error
// result is for host-side failures.
func (v *VCPU[E]) Run(stop <-chan struct{}) error {
	done := make(chan struct{})
	defer close(done)
	v.setRunning(true)
	defer v.setRunning(false)
	go func() {
		select {
		case <-stop:
			v.Stop()
		case <-done:
		}
	}()
	env, cache, trace := v.env, v.eng.cache, v.ops.TraceExec
	var prevGen uint64
	var prev *Block[E] // the block just executed, while its page mapping is known unchanged
	var link *LinkRec
	for {
		if v.exitReq.Load() != 0 {
			prev, link = nil, nil
			if v.service() {
				return nil
			}
		}
		var t *Block[E]
		if prev != nil && v.tlbGen == prevGen {
			t = prev.Next(*v.pc, *v.flags)
		}
		if t == nil {
			v.misses++
			if t = v.lookup(); t == nil {
				if t = v.find(); t == nil {
					prev, link = nil, nil
					continue // the fetch raised an exception
				}
			}
			if h := t.JumpHdr(); h != nil && trace == nil {
				v.jumps.Set(t.PC, h)
			}
			if prev != nil && v.tlbGen == prevGen && t.Flags == prev.Flags {
				prev.Chain(t)
			}
		}
		if link != nil {
			// The previous block left through a chainable exit to this block: from
			// now on its code jumps straight here (link.go says why that is safe).
			cache.Link(link, t)
		}
		prev, prevGen = t, v.tlbGen
		if trace != nil {
			trace(env, t)
		}
		v.lastExit = nil
		t.Code(env)
		switch link = v.lastExit; {
		case trace != nil:
			link = nil // linked blocks would run untraced
		case link != nil && link.SrcPC != t.PC:
			// Another block, reached through links, ended the run: prev is not the
			// block that left, so the Go-level chain must not use it.
			prev = nil
		}
	}
}

// service handles pending exit requests at a block boundary; it reports whether Run
// must return.
func (v *VCPU[E]) service() bool {
	for {
		req := v.exitReq.Swap(0)
		if v.stopped.Load() {
			return true
		}
		if req&ExitPark != 0 && v.parkNow() {
			return true
		}
		if req&ExitTLB != 0 {
			v.applyTLBRequests()
		}
		if !v.ops.HandleExit(v.env, req&^(ExitStop|ExitTLB|ExitPark)) {
			v.Sleep()
			continue
		}
		v.ops.ExecInterrupt(v.env)
		return false
	}
}

// lookup returns the block at the PC from the jump cache if the instruction TLB still
// maps the PC, executable, to the physical page the block was translated from.
func (v *VCPU[E]) lookup() *Block[E] {
	pc := *v.pc
	e := (*v.itlb).Entry(pc)
	if e.Exec != pc&PageMask {
		return nil
	}
	t := v.jc.Lookup(pc, *v.flags)
	if t == nil || t.Phys&PageMask != e.Phys {
		return nil
	}
	if t.spans {
		if e2 := (*v.itlb).Entry(t.page2VA()); e2.Exec != t.page2VA() || e2.Phys != t.page2 {
			return nil // find checks the second page
		}
	}
	return t
}

// page2 returns the physical page the page after the block at pc's maps to now, from
// the instruction TLB or the target's Probe.
func (v *VCPU[E]) page2(pc uint64) (uint64, bool) {
	va := pc&PageMask + PageSize
	if e := (*v.itlb).Entry(va); e.Exec == va {
		return e.Phys, true
	}
	if v.ops.Probe == nil {
		return 0, false
	}
	p, ok := v.ops.Probe(v.env, va)
	return p & PageMask, ok
}

// page2OK reports whether spanning block t's second page still maps where it did.
func (v *VCPU[E]) page2OK(t *Block[E]) bool {
	p, ok := v.page2(t.PC)
	return ok && p == t.page2
}

// find finds or translates the block at the PC. It returns nil when the instruction
// fetch raised an exception.
func (v *VCPU[E]) find() *Block[E] {
	pc := *v.pc
	pa, host, ok := v.ops.Fetch(v.env, pc)
	if !ok {
		return nil
	}
	flags := *v.flags
	if t := v.jc.Lookup(pc, flags); t != nil && t.Phys == pa && (!t.spans || v.page2OK(t)) {
		return t
	}
	k := Key{PC: pc, Phys: pa, Flags: flags}
	cache := v.eng.cache
	t := cache.Lookup(k)
	if t == nil && v.ops.Probe != nil {
		t = cache.lookupSpanning(k, func() (uint64, bool) { return v.page2(pc) })
	}
	if t == nil {
		tr := v.ops.Translate(v.env, k, host)
		if tr.Spans {
			t = cache.InsertSpanning(k, tr.Code, tr.End, tr.Link, tr.Page2)
		} else {
			t = cache.InsertLinked(k, tr.Code, tr.End, tr.Link)
		}
	}
	v.jc.Set(t)
	return t
}

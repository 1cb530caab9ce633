package tcg

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// The run loop's contract, shown with a toy target: a fake ISA of 32-bit words
// (op<<24 | reg<<16 | imm16) run by VCPU.Run through CPUOps, on each backend.
//
//	toyAddi r, imm  R[r] += imm
//	toyJmp imm      PC = imm
//	toyBne r, imm   if R[r] != R[3] { PC = imm }
//	toyLd r, imm    R[r] = 64-bit load from virtual address imm (softmmu TLB)
//	toyCall n       call the test's helper n
const (
	toyAddi = 1 + iota
	toyJmp
	toyBne
	toyLd
	toyCall
)

func toyInsn(op, r, imm uint32) uint32 { return op<<24 | r<<16 | imm }

// Exit-request bits of the toy target.
const (
	toyReqIRQ = ExitTarget << iota
	toyReqPoke
)

// toyGuest is what the toy vCPUs of one guest share: physical memory and a page table
// (virtual page → physical page) the test may change under the vCPUs' feet.
type toyGuest struct {
	mem     []byte
	mu      sync.Mutex
	pt      map[uint64]uint64
	eng     *Engine[toyCPU]
	be      Backend
	tgt     *Target[toyCPU]
	helpers []func(c *toyCPU) bool
	span    bool // blocks may run on into the next page
	ntrans  atomic.Int64
	pcs     []uint64 // the blocks translated (by their one vCPU)
}

type toyCPU struct {
	R     [8]uint64
	PC    uint64
	flags uint64
	temps [MaxTemps]uint64
	cur   *TLB
	tlb   TLB
	g     *toyGuest
	// on: the vCPU runs (else HandleExit halts it); ie: interrupts enabled.
	on, irq atomic.Bool
	ie      bool
	// onExit, if set, observes HandleExit calls.
	onExit func(c *toyCPU, req uint32)
	v      VCPU[toyCPU]
}

var toyOps = CPUOps[toyCPU]{
	Fetch: func(c *toyCPU, pc uint64) (uint64, unsafe.Pointer, bool) {
		if pc&3 != 0 { // the toy's PC alignment fault
			c.R[6], c.PC = pc, toyFaultVector
			return 0, nil, false
		}
		pa, host, ok := c.fill(pc)
		if !ok {
			panic("toy: fetch from an unmapped page")
		}
		return pa, host, true
	},
	Translate: func(c *toyCPU, k Key, host unsafe.Pointer) Translation[toyCPU] {
		c.g.ntrans.Add(1)
		c.g.pcs = append(c.g.pcs, k.PC)
		var b Builder[toyCPU]
		var tr Translation[toyCPU]
		pc, page := k.PC, k.PC&PageMask
		reg := func(r uint32) Arg { return Global(unsafe.Offsetof(toyCPU{}.R) + 8*uintptr(r)) }
	decode:
		for {
			if pc&PageMask != page { // run on into the next page when the guest allows it
				if !c.g.span || tr.Spans {
					break
				}
				pa2, host2, ok := c.fill(pc)
				if !ok {
					break
				}
				tr.Spans, tr.Page2, host, page = true, pa2&PageMask, host2, pc&PageMask
			}
			w := *(*uint32)(unsafe.Add(host, pc&^PageMask))
			op, r, imm := w>>24, w>>16&7, uint64(w&0xffff)
			b.SetPC(pc)
			pc += 4
			switch op {
			case toyAddi:
				b.Bin(OpAdd, reg(r), reg(r), Imm(imm))
			case toyJmp:
				b.Exit(Imm(imm))
				break decode
			case toyBne:
				b.Bin(OpSetEq, Temp(0), reg(r), reg(3))
				b.ExitIf(Temp(0), false, imm)
				b.Exit(Imm(pc))
				break decode
			case toyLd:
				b.Load(reg(r), Imm(0), imm, 8, false)
			case toyCall:
				b.Call(c.g.helpers[imm])
			default:
				panic("toy: bad instruction")
			}
		}
		if len(b.Ops) == 0 || b.Ops[len(b.Ops)-1].Opc != OpExit {
			b.Exit(Imm(pc))
		}
		f, lk, err := compileWith(c.g.be, c.g.tgt, b.Ops)
		if err != nil {
			panic(err)
		}
		tr.Code, tr.End, tr.Link = f, pc, lk
		return tr
	},
	Probe: func(c *toyCPU, va uint64) (uint64, bool) {
		pa, _, ok := c.fill(va)
		return pa, ok
	},
	HandleExit: func(c *toyCPU, req uint32) bool {
		if c.onExit != nil {
			c.onExit(c, req)
		}
		if c.irq.Load() {
			c.on.Store(true) // an interrupt wakes a halted toy, as WFI
		}
		return c.on.Load()
	},
	ExecInterrupt: func(c *toyCPU) {
		if c.ie && c.irq.Load() {
			c.ie = false
			c.R[5] = c.PC // return address: the interrupted block's start
			c.PC = toyVector
		}
	},
}

const (
	toyVector      = 0x1800
	toyFaultVector = 0x1c00
)

func newToyGuest(t *testing.T, be Backend, helpers ...func(c *toyCPU) bool) *toyGuest {
	g := &toyGuest{mem: make([]byte, 4*PageSize), pt: map[uint64]uint64{}, be: be, helpers: helpers}
	for p := uint64(0); p < 4*PageSize; p += PageSize {
		g.pt[p] = p
	}
	g.eng = NewEngine[toyCPU](nil)
	t.Cleanup(g.eng.Close)
	var c toyCPU
	g.tgt = &Target[toyCPU]{PC: unsafe.Offsetof(c.PC), TLB: unsafe.Offsetof(c.cur), Temps: unsafe.Offsetof(c.temps),
		Flags: unsafe.Offsetof(c.flags),
		LoadSlow: func(c *toyCPU, va uint64, size int) (uint64, bool) {
			_, host, ok := c.fill(va)
			if !ok {
				panic("toy: load from an unmapped page")
			}
			return binary.LittleEndian.Uint64(unsafe.Slice((*byte)(unsafe.Add(host, va&^PageMask)), 8)), true
		},
		StoreSlow: func(c *toyCPU, va uint64, size int, v uint64) bool { panic("toy: no stores") }}
	g.tgt.SetVCPU(unsafe.Offsetof(c.v))
	return g
}

func (g *toyGuest) write(pa uint64, words ...uint32) {
	for i, w := range words {
		binary.LittleEndian.PutUint32(g.mem[pa+4*uint64(i):], w)
	}
}

func (g *toyGuest) newCPU(pc uint64) *toyCPU {
	c := &toyCPU{g: g, PC: pc}
	c.R[3] = ^uint64(0)
	c.cur = &c.tlb
	c.tlb.Flush()
	c.on.Store(true)
	c.v.Init(g.eng, c, &toyOps, &c.PC, &c.flags, &c.cur, &c.tlb)
	return c
}

// fill translates va through the guest's page table and installs the page in the TLB.
func (c *toyCPU) fill(va uint64) (uint64, unsafe.Pointer, bool) {
	c.g.mu.Lock()
	pa, ok := c.g.pt[va&PageMask]
	c.g.mu.Unlock()
	if !ok {
		return 0, nil, false
	}
	host := unsafe.Pointer(&c.g.mem[pa])
	c.tlb.Fill(va, pa, host, nil, true, false, true, 0)
	return pa | va&^PageMask, host, true
}

func toyBackends(t *testing.T, f func(t *testing.T, be Backend)) {
	t.Run("closure", func(t *testing.T) { f(t, BackendClosure) })
	t.Run("native", func(t *testing.T) {
		if !nativeSupported {
			t.Skip("the native backend is amd64-only")
		}
		f(t, BackendNative)
	})
}

// run runs c until stop is closed, failing the test after timeout.
func runToy(t *testing.T, c *toyCPU, stop chan struct{}, timeout time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.v.Run(stop) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(timeout):
		c.v.Stop()
		<-done
		t.Fatal("the vCPU did not finish in time")
	}
}

// TestRunLoopChains runs a two-block loop (0x1000 → 0x1010 → 0x1000 ...) n times: every
// block is translated once, and after the first round trip blocks reach each other by
// chaining (Go-level links, or native links and the jump table) rather than the jump
// cache or block cache. With TraceExec, every block passes through the loop instead
// (no native links).
func TestRunLoopChains(t *testing.T) {
	toyBackends(t, func(t *testing.T, be Backend) {
		const n = 100_000
		for _, traced := range []bool{false, true} {
			stop := make(chan struct{})
			g := newToyGuest(t, be, func(c *toyCPU) bool { close(stop); return true })
			g.write(0x1000, toyInsn(toyAddi, 0, 1), toyInsn(toyJmp, 0, 0x1010))
			g.write(0x1010, toyInsn(toyAddi, 1, 1), toyInsn(toyBne, 1, 0x1000),
				toyInsn(toyCall, 0, 0), toyInsn(toyJmp, 0, 0x101c))
			c := g.newCPU(0x1000)
			c.R[3] = n
			ops := toyOps
			var traces int
			if traced {
				ops.TraceExec = func(c *toyCPU, tb *Block[toyCPU]) { traces++ }
				c.v.ops = &ops
			}
			runToy(t, c, stop, 30*time.Second)
			if c.R[0] != n || c.R[1] != n {
				t.Fatalf("traced=%v: R0, R1 = %d, %d, want %d each", traced, c.R[0], c.R[1], n)
			}
			// Blocks: 0x1000, 0x1010, 0x1018 (call; jmp 0x101c), and 0x101c (jmp to
			// itself) unless the stop request is seen before it.
			if got, cached := g.ntrans.Load(), g.eng.Cache().Len(); got != int64(cached) || cached < 3 || cached > 4 {
				t.Errorf("traced=%v: %d translations for %d cached blocks, want one per block (3 or 4)", traced, got, cached)
			}
			if traced {
				if traces < 2*n {
					t.Errorf("traced: %d blocks traced, want every one of the %d executed", traces, 2*n)
				}
			} else if c.v.misses > 16 {
				t.Errorf("%d of %d blocks were looked up rather than reached by a chain link", c.v.misses, 2*n)
			}
		}
	})
}

// TestRunLoopExitRequest runs a block looping on itself (two adds, a jump back) and
// raises exit requests from another goroutine: each reaches HandleExit with its bit, at
// a block boundary (both adds done, PC at the block start), and the block runs on.
func TestRunLoopExitRequest(t *testing.T) {
	toyBackends(t, func(t *testing.T, be Backend) {
		g := newToyGuest(t, be)
		g.write(0x1000, toyInsn(toyAddi, 0, 1), toyInsn(toyAddi, 1, 1), toyInsn(toyJmp, 0, 0x1000))
		c := g.newCPU(0x1000)
		type sample struct {
			req        uint32
			r0, r1, pc uint64
		}
		seen := make(chan sample, 16)
		stop := make(chan struct{})
		go func() {
			defer close(stop)
			for range 5 {
				time.Sleep(2 * time.Millisecond)
				c.v.Request(toyReqPoke)
				select {
				case <-seen:
				case <-time.After(10 * time.Second):
					t.Error("an exit request was not honoured")
					return
				}
			}
		}()
		var samples []sample
		c.onExit = func(c *toyCPU, req uint32) {
			s := sample{req, c.R[0], c.R[1], c.PC}
			samples = append(samples, s)
			seen <- s
		}
		runToy(t, c, stop, 30*time.Second)
		if len(samples) < 5 {
			t.Fatalf("HandleExit called %d times for 5 requests", len(samples))
		}
		var last uint64
		for i, s := range samples[:5] {
			if s.req&toyReqPoke == 0 || s.req&(ExitStop|ExitTLB) != 0 {
				t.Errorf("request %d: HandleExit got bits %#x, want the target's %#x", i, s.req, toyReqPoke)
			}
			if s.r0 != s.r1 || s.pc != 0x1000 {
				t.Errorf("request %d served mid-block: R0=%d R1=%d PC=%#x", i, s.r0, s.r1, s.pc)
			}
			if s.r0 < last {
				t.Errorf("request %d: R0 went back from %d to %d", i, last, s.r0)
			}
			last = s.r0
		}
		if c.R[0] == 0 {
			t.Error("the loop never ran")
		}
	})
}

// TestRunLoopInterrupt starts a vCPU halted (HandleExit reports it cannot run): it must
// sleep until an interrupt is raised and kicked, then take it before running anything
// (ExecInterrupt at the block boundary), with the return address at a block start.
func TestRunLoopInterrupt(t *testing.T) {
	toyBackends(t, func(t *testing.T, be Backend) {
		stop := make(chan struct{})
		var r0, ret uint64
		g := newToyGuest(t, be, func(c *toyCPU) bool {
			r0, ret = c.R[0], c.R[5]
			close(stop)
			return true
		})
		g.write(0x1000, toyInsn(toyAddi, 0, 1), toyInsn(toyJmp, 0, 0x1000))
		g.write(toyVector, toyInsn(toyCall, 0, 0), toyInsn(toyJmp, 0, toyVector+4))
		c := g.newCPU(0x1000)
		c.ie = true
		c.on.Store(false)
		c.v.Request(toyReqPoke)
		var exits atomic.Int32
		c.onExit = func(*toyCPU, uint32) { exits.Add(1) }
		go func() {
			time.Sleep(20 * time.Millisecond)
			if exits.Load() != 1 {
				t.Errorf("halted vCPU called HandleExit %d times before the interrupt, want 1 (it must sleep)", exits.Load())
			}
			c.irq.Store(true)
			c.v.Request(toyReqIRQ)
			c.v.Kick()
		}()
		runToy(t, c, stop, 10*time.Second)
		if r0 != 0 || ret != 0x1000 {
			t.Errorf("interrupt taken with R0=%d, return address %#x; want R0=0 (nothing ran while halted), 0x1000", r0, ret)
		}
	})
}

// TestRunLoopTLBShootdown runs vCPU A loading one virtual address in a loop while the
// test remaps that page: A keeps seeing the old page (its TLB caches the mapping)
// until vCPU B of the same engine broadcasts an invalidation of the page, then the
// whole TLB; A applies each at a block boundary and sees the new mapping.
func TestRunLoopTLBShootdown(t *testing.T) {
	toyBackends(t, func(t *testing.T, be Backend) {
		const va, pa1, pa2 = 0x2000, 0x2000, 0x3000
		var val, iters atomic.Uint64
		g := newToyGuest(t, be, func(c *toyCPU) bool {
			val.Store(c.R[0])
			iters.Add(1)
			return true
		})
		g.write(0x1000, toyInsn(toyLd, 0, va), toyInsn(toyCall, 0, 0), toyInsn(toyJmp, 0, 0x1000))
		binary.LittleEndian.PutUint64(g.mem[pa1:], 111)
		binary.LittleEndian.PutUint64(g.mem[pa2:], 222)
		a, b := g.newCPU(0x1000), g.newCPU(0x1000)
		defer a.v.Close()
		defer b.v.Close()
		if g.eng.VCPUs() != 2 {
			t.Fatalf("engine has %d vCPUs, want 2", g.eng.VCPUs())
		}
		stop := make(chan struct{})
		wait := func(what string, cond func() bool) bool {
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if cond() {
					return true
				}
			}
			t.Errorf("timed out waiting for %s (A sees %d)", what, val.Load())
			return false
		}
		remap := func(p uint64) {
			g.mu.Lock()
			g.pt[va] = p
			g.mu.Unlock()
		}
		go func() {
			defer close(stop)
			if !wait("the first load", func() bool { return val.Load() == 111 }) {
				return
			}
			remap(pa2)
			n := iters.Load()
			if !wait("more iterations", func() bool { return iters.Load() > n+1000 }) {
				return
			}
			if v := val.Load(); v != 111 {
				t.Errorf("A sees %d after a remap without invalidation, want the TLB's cached 111", v)
				return
			}
			b.v.BroadcastFlushTLBPage(va)
			if !wait("the page shootdown", func() bool { return val.Load() == 222 }) {
				return
			}
			remap(pa1)
			b.v.BroadcastFlushTLB()
			wait("the full shootdown", func() bool { return val.Load() == 111 })
		}()
		runToy(t, a, stop, 60*time.Second)
	})
}

// TestRunLoopJumpTable runs a loop whose two blocks are in different pages, so their
// exits cannot be linked: natively they probe the jump table the loop fills, and after
// the first round trip the loop sees neither block again.
func TestRunLoopJumpTable(t *testing.T) {
	if !nativeSupported {
		t.Skip("the jump table is probed by native code only (amd64)")
	}
	const n = 100_000
	stop := make(chan struct{})
	g := newToyGuest(t, BackendNative, func(c *toyCPU) bool { close(stop); return true })
	g.write(0x1000, toyInsn(toyAddi, 0, 1), toyInsn(toyJmp, 0, 0x2000))
	g.write(0x2000, toyInsn(toyAddi, 1, 1), toyInsn(toyBne, 1, 0x1000), toyInsn(toyCall, 0, 0),
		toyInsn(toyJmp, 0, 0x200c))
	c := g.newCPU(0x1000)
	c.R[3] = n
	runToy(t, c, stop, 30*time.Second)
	if c.R[0] != n || c.R[1] != n {
		t.Fatalf("R0, R1 = %d, %d, want %d each", c.R[0], c.R[1], n)
	}
	if c.v.misses > 16 {
		t.Errorf("%d of %d blocks went through the loop's lookup: the jump table did not serve other-page exits", c.v.misses, 2*n)
	}
}

// TestRunLoopFetchFault jumps to a misaligned PC: Fetch raises the toy's fault (new PC,
// ok=false) and the loop goes on at the fault vector without translating anything at
// the bad PC.
func TestRunLoopFetchFault(t *testing.T) {
	toyBackends(t, func(t *testing.T, be Backend) {
		stop := make(chan struct{})
		var faultPC uint64
		g := newToyGuest(t, be, func(c *toyCPU) bool { faultPC = c.R[6]; close(stop); return true })
		g.write(0x1000, toyInsn(toyJmp, 0, 0x1002))
		g.write(toyFaultVector, toyInsn(toyCall, 0, 0), toyInsn(toyJmp, 0, toyFaultVector+4))
		c := g.newCPU(0x1000)
		runToy(t, c, stop, 30*time.Second)
		if faultPC != 0x1002 {
			t.Errorf("fault taken for PC %#x, want 0x1002", faultPC)
		}
		for _, pc := range g.pcs {
			if pc != 0x1000 && pc < toyFaultVector {
				t.Errorf("a block at %#x was translated (translated: %#x)", pc, g.pcs)
			}
		}
	})
}

// TestRunLoopSpanningBlock runs a loop whose one block starts 8 bytes before a page
// boundary and runs on into the next page. The block is translated once, as one; when
// the test remaps the second virtual page to other code (and flushes the TLB, as the
// guest's TLB maintenance would) the vCPU runs the new code although the block's first
// page, and so its key, is unchanged; when the second page's physical memory is
// rewritten (a DMA write's code-write notification) the block is dropped and the new
// code runs.
func TestRunLoopSpanningBlock(t *testing.T) {
	toyBackends(t, func(t *testing.T, be Backend) {
		const start, va2, pa2, pa3 = 0x1ff8, 0x2000, 0x2000, 0x3000
		stop := make(chan struct{})
		var g *toyGuest
		var last uint64
		var deltas []uint64 // R2's increase over each iteration: the second page's ADDI
		g = newToyGuest(t, be, func(c *toyCPU) bool {
			deltas = append(deltas, c.R[2]-last)
			last = c.R[2]
			switch len(deltas) {
			case 100:
				g.mu.Lock()
				g.pt[va2] = pa3
				g.mu.Unlock()
				c.v.FlushTLB()
			case 200:
				g.write(pa3, toyInsn(toyAddi, 2, 256))
				g.eng.Cache().InvalidateRange(pa3, 4)
			case 300:
				close(stop)
			}
			return true
		})
		g.span = true
		g.write(start, toyInsn(toyAddi, 0, 1), toyInsn(toyCall, 0, 0))
		g.write(pa2, toyInsn(toyAddi, 2, 1), toyInsn(toyJmp, 0, start))
		g.write(pa3, toyInsn(toyAddi, 2, 16), toyInsn(toyJmp, 0, start))
		c := g.newCPU(start)
		runToy(t, c, stop, 30*time.Second)
		for _, pc := range g.pcs {
			if pc != start {
				t.Fatalf("blocks translated at %#x, want only the spanning one at %#x", g.pcs, start)
			}
		}
		if len(deltas) < 300 {
			t.Fatalf("%d iterations, want 300", len(deltas))
		}
		// Iteration i's delta is the ADDI run after the (i-1)th call: the old code up to
		// and including the iteration that remapped (the rest of that block was
		// translated already), then the new page's.
		for i, d := range deltas[1:300] {
			want := uint64(1)
			switch n := i + 2; {
			case n > 201:
				want = 256
			case n > 101:
				want = 16
			}
			if d != want {
				t.Fatalf("iteration %d added %d to R2, want %d (all: %v)", i+2, d, want, deltas)
			}
		}
		if n := len(g.pcs); n != 3 {
			t.Errorf("the spanning block was translated %d times, want 3 (first, after the remap, after the write)", n)
		}
	})
}

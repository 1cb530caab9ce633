package tcg

import (
	"testing"
	"unsafe"
)

type linkEnv struct {
	testEnv
	req  uint32
	last *LinkRec
}

// linkWorld is a two-block loop, A at 0x1000 and B at 0x1100 in one page, run by a
// loop that dispatches and links like a target's run loop.
type linkWorld struct {
	cache *Cache[func(*linkEnv)]
	tgt   *Target[linkEnv]
	ops   map[uint64][]Op[linkEnv]
	links map[uint64]Linkage // of the blocks compiled, by PC
	be    Backend
	t     *testing.T
}

func newLinkWorld(t *testing.T, be Backend) *linkWorld {
	base := testTarget()
	var e linkEnv
	tgt := &Target[linkEnv]{PC: base.PC, TLB: base.TLB, Temps: base.Temps,
		ExitReq: unsafe.Offsetof(e.req), LastExit: unsafe.Offsetof(e.last),
		LoadSlow: func(e *linkEnv, va uint64, size int) (uint64, bool) { return base.LoadSlow(&e.testEnv, va, size) },
		StoreSlow: func(e *linkEnv, va uint64, size int, v uint64) bool {
			return base.StoreSlow(&e.testEnv, va, size, v)
		}}
	r0, r1, r2, r3 := reg(0), reg(1), reg(2), reg(3)
	var a, b Builder[linkEnv]
	a.SetPC(0x1000)
	a.Bin(OpAdd, r0, r0, Imm(1))
	a.Bin(OpXor, r2, r2, r0)
	a.Exit(Imm(0x1100))
	b.SetPC(0x1100)
	b.Bin(OpAdd, r2, r2, r0)
	b.Store(r3, 0, r2, 8) // a slow path when the page is flagged as code
	b.Bin(OpSub, r1, r1, Imm(1))
	b.ExitIf(r1, true, 0x1000)
	b.Exit(Imm(0x2000))
	return &linkWorld{cache: NewCache[func(*linkEnv)](nil), tgt: tgt, be: be, t: t,
		ops: map[uint64][]Op[linkEnv]{0x1000: a.Ops, 0x1100: b.Ops}, links: map[uint64]Linkage{}}
}

func (w *linkWorld) lookup(pc uint64) *TB[func(*linkEnv)] {
	k := Key{PC: pc, Phys: pc}
	if tb := w.cache.Lookup(k); tb != nil {
		return tb
	}
	f, lk, err := compileWith(w.be, w.tgt, w.ops[pc])
	if err != nil {
		w.t.Fatal(err)
	}
	w.links[pc] = lk
	return w.cache.InsertLinked(k, f, pc+0x10, lk)
}

// run dispatches from env.PC until the PC leaves the loop or maxCalls block calls
// were made; it returns the number of calls.
func (w *linkWorld) run(env *linkEnv, maxCalls int) int {
	calls := 0
	var link *LinkRec
	for (env.PC == 0x1000 || env.PC == 0x1100) && calls < maxCalls {
		tb := w.lookup(env.PC)
		if link != nil {
			w.cache.Link(link, tb)
		}
		env.last = nil
		tb.Code(env)
		link = env.last
		calls++
	}
	return calls
}

// TestNativeLink checks direct chaining: linked blocks give the closure backend's state
// (slow paths included, taken inside linked blocks and handled by the entered block's
// function), run many blocks per call, stop at an exit request, and are unlinked when
// the target block is invalidated.
func TestNativeLink(t *testing.T) {
	for _, c := range []struct {
		iters     uint64
		code, req uint32
	}{{5000, 0, 0}, {700, 1, 0}, {300, 0, 1}} {
		var envs [2]*linkEnv
		var calls [2]int
		for k, be := range []Backend{BackendClosure, BackendNative} {
			w := newLinkWorld(t, be)
			mw := newWorld(1)
			mw.code[0] = c.code
			env := &linkEnv{testEnv: testEnv{R: [4]uint64{0, c.iters, 0, 0x10000}, tlb: mw.tlb}, req: c.req}
			env.PC = 0x1000
			calls[k] = w.run(env, 1<<30)
			envs[k] = env
		}
		want, got := envs[0], envs[1]
		if got.R != want.R || got.PC != want.PC || len(got.slow) != len(want.slow) {
			t.Errorf("iters=%d code=%d req=%d: native R=%#x PC=%#x slow=%d, closure R=%#x PC=%#x slow=%d",
				c.iters, c.code, c.req, got.R, got.PC, len(got.slow), want.R, want.PC, len(want.slow))
		}
		switch {
		case c.req != 0 && calls[1] != calls[0]:
			t.Errorf("exit requested: native made %d calls, want one per block (%d)", calls[1], calls[0])
		case c.req == 0 && c.code == 0 && calls[1] > calls[0]/100:
			t.Errorf("linked loop made %d calls for %d blocks", calls[1], calls[0])
		}
	}

	// Invalidation unlinks: once B is dropped, A returns to the loop instead of
	// jumping into B's old code.
	w := newLinkWorld(t, BackendNative)
	mw := newWorld(1)
	env := &linkEnv{testEnv: testEnv{R: [4]uint64{0, 1 << 40, 0, 0x10000}, tlb: mw.tlb}}
	env.PC = 0x1000
	w.run(env, 4) // A, B, A (links A->B was made at the 2nd call, B->A at the 3rd)
	w.lookup(0x1000)
	a := w.links[0x1000]
	if len(a.Exits) != 1 || a.Exits[0].Target == a.Exits[0].Out {
		t.Fatalf("A's exit to B was not linked: %+v", a)
	}
	w.cache.InvalidateRange(0x1100, 4) // B only: A shares the page
	if r := a.Exits[0]; r.Target != r.Out {
		t.Fatalf("A's exit still linked after B was dropped")
	}
	env.PC = 0x1000
	r1 := env.R[1]
	env.last = nil
	w.lookup(0x1000).Code(env)
	if env.PC != 0x1100 || env.last != a.Exits[0] || env.R[1] != r1 {
		t.Errorf("after unlinking, A ran to PC=%#x last=%p (rec %p) r1=%#x (was %#x); want PC 0x1100, its own exit, B not run",
			env.PC, env.last, a.Exits[0], env.R[1], r1)
	}
}

type probeEnv struct {
	testEnv
	req   uint32
	last  *LinkRec
	flags uint64
	jumps *JumpTable
}

// TestNativeProbe checks exits to computed PCs: a linked-up loop whose back edge is a
// register jump runs inside generated code through the jump table, with the closure
// backend's results, and the probe misses (returning to the run loop) when the mode
// flags differ, when the instruction TLB no longer maps the page, and once the target
// block is dropped.
func TestNativeProbe(t *testing.T) {
	base := testTarget()
	var e probeEnv
	tgt := &Target[probeEnv]{PC: base.PC, TLB: base.TLB, Temps: base.Temps,
		ExitReq: unsafe.Offsetof(e.req), LastExit: unsafe.Offsetof(e.last),
		Flags: unsafe.Offsetof(e.flags), Jumps: unsafe.Offsetof(e.jumps),
		LoadSlow: func(e *probeEnv, va uint64, size int) (uint64, bool) { return base.LoadSlow(&e.testEnv, va, size) },
		StoreSlow: func(e *probeEnv, va uint64, size int, v uint64) bool {
			return base.StoreSlow(&e.testEnv, va, size, v)
		}}
	r0, r1, r2 := reg(0), reg(1), reg(2)
	var a, b Builder[probeEnv]
	a.SetPC(0x1000)
	a.Bin(OpAdd, r0, r0, Imm(1))
	a.Exit(r2) // r2 = 0x1100: a computed jump
	b.SetPC(0x1100)
	b.Bin(OpSub, r1, r1, Imm(1))
	b.ExitIf(r1, true, 0x1000)
	b.Exit(Imm(0x2000))
	ops := map[uint64][]Op[probeEnv]{0x1000: a.Ops, 0x1100: b.Ops}

	run := func(be Backend, env *probeEnv, cache *Cache[func(*probeEnv)], maxCalls int) int {
		calls := 0
		var link *LinkRec
		for (env.PC == 0x1000 || env.PC == 0x1100) && calls < maxCalls {
			k := Key{PC: env.PC, Phys: env.PC, Flags: env.flags}
			tb := cache.Lookup(k)
			if tb == nil {
				f, lk, err := compileWith(be, tgt, ops[env.PC])
				if err != nil {
					t.Fatal(err)
				}
				tb = cache.InsertLinked(k, f, env.PC+0x10, lk)
			}
			if link != nil {
				cache.Link(link, tb)
			}
			if h := tb.JumpHdr(); h != nil {
				env.jumps.Set(tb.PC, h)
			}
			env.last = nil
			tb.Code(env)
			link = env.last
			calls++
		}
		return calls
	}
	newEnv := func(iters uint64) *probeEnv {
		w := newWorld(1)
		code := uint32(0)
		w.tlb.Fill(0x1000, 0x1000, unsafe.Pointer(&w.pages[0][0]), &code, true, false, true, 0)
		env := &probeEnv{testEnv: testEnv{R: [4]uint64{0, iters, 0x1100, 0}, tlb: w.tlb}, jumps: new(JumpTable)}
		env.PC = 0x1000
		return env
	}

	want := newEnv(5000)
	wantCalls := run(BackendClosure, want, NewCache[func(*probeEnv)](nil), 1<<30)
	got := newEnv(5000)
	cache := NewCache[func(*probeEnv)](nil)
	gotCalls := run(BackendNative, got, cache, 1<<30)
	if got.R != want.R || got.PC != want.PC {
		t.Fatalf("native R=%#x PC=%#x, closure R=%#x PC=%#x", got.R, got.PC, want.R, want.PC)
	}
	if gotCalls > wantCalls/100 {
		t.Fatalf("probed loop made %d calls for %d blocks", gotCalls, wantCalls)
	}

	// Each way the probe must miss: A then returns to the loop at B's PC, B not run.
	for _, c := range []struct {
		name  string
		spoil func(env *probeEnv)
	}{
		{"other mode flags", func(env *probeEnv) { env.jumps.E[(0x1100>>2)&(1<<JumpTableBits-1)].Hdr.SrcFlags ^= 1 }},
		{"page not executable", func(env *probeEnv) { env.tlb.Entry(0x1100).Exec = TLBInvalid }},
		{"page mapped elsewhere", func(env *probeEnv) { env.tlb.Entry(0x1100).Phys = 0x5000 }},
		{"block dropped", func(env *probeEnv) { cache.InvalidateRange(0x1100, 4) }},
	} {
		env := newEnv(1 << 40)
		cache = NewCache[func(*probeEnv)](nil)
		run(BackendNative, env, cache, 3) // A, B (now in the table), A...
		env.PC = 0x1000
		c.spoil(env)
		r1 := env.R[1]
		env.last = nil
		cache.Lookup(Key{PC: 0x1000, Phys: 0x1000}).Code(env)
		if env.PC != 0x1100 || env.R[1] != r1 || env.last != nil {
			t.Errorf("%s: A ran to PC=%#x r1=%#x (was %#x) last=%p; want PC 0x1100, B not run", c.name, env.PC, env.R[1], r1, env.last)
		}
	}
}

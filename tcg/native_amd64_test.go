package tcg

import (
	"bytes"
	"math/rand"
	"testing"
	"unsafe"

	"gemu/hw/memory"
)

// randArg returns a random global or temporary.
func randLoc(r *rand.Rand) Arg {
	if r.Intn(3) == 0 {
		return Temp(r.Intn(MaxTemps))
	}
	return reg(r.Intn(4))
}

var interestingImms = []uint64{0, 1, 2, 7, 63, 64, 0xfff, 0x7fffffff, 0x80000000, 0xffffffff,
	0x100000000, 0xffffffff80000000, 0xffffffffffffffff, 0x8000000000000000, 0x123456789abcdef0}

func randImm(r *rand.Rand) uint64 {
	if r.Intn(2) == 0 {
		return interestingImms[r.Intn(len(interestingImms))]
	}
	return r.Uint64() >> uint(r.Intn(64))
}

func randOperand(r *rand.Rand) Arg {
	if r.Intn(3) == 0 {
		return Imm(randImm(r))
	}
	return randLoc(r)
}

// randAddr returns a memory base operand and displacement that land on the mapped
// page, the code page, an unmapped page or misaligned, per the test TLB.
func randAddr(r *rand.Rand, b *Builder[testEnv]) (Arg, uint64) {
	pages := []uint64{0x10000, 0x11000, 0x20000, 0x10ff8}
	va := pages[r.Intn(len(pages))] + uint64(r.Intn(64))
	if r.Intn(2) == 0 {
		return Imm(va), 0
	}
	base := reg(r.Intn(4))
	off := uint64(r.Intn(32))
	if r.Intn(8) == 0 {
		off = 0x100000000 // wraps back through a large displacement
		b.Mov(base, Imm(va-off))
		return base, off
	}
	b.Mov(base, Imm(va-off))
	return base, off
}

func randBlock(r *rand.Rand) []Op[testEnv] {
	var b Builder[testEnv]
	n := 1 + r.Intn(24)
	for i := 0; i < n; i++ {
		b.SetPC(0x1000 + 4*uint64(i))
		switch k := r.Intn(10); {
		case k < 3 && r.Intn(3) == 0:
			opc := []Opcode{OpFlagsAdd, OpFlagsSub, OpFlagsLogic, OpFlagsAddC}[r.Intn(4)]
			b.Flags(opc, randLoc(r), randOperand(r), randOperand(r), 4<<r.Intn(2), FlagsNZCV)
		case k < 3:
			opc := []Opcode{OpAdd, OpSub, OpAnd, OpOr, OpXor, OpShl, OpShr, OpSar, OpMul, OpSetEq, OpSetLtu, OpMulHu, OpMulHs}[r.Intn(13)]
			b.Bin(opc, randLoc(r), randLoc(r), randOperand(r))
		case k == 3 && r.Intn(8) == 0:
			b.Fence()
		case k == 3 && r.Intn(4) == 0:
			b.Div([]Opcode{OpUdiv, OpSdiv}[r.Intn(2)], randLoc(r), randOperand(r), randOperand(r), 4<<r.Intn(2), DivZeroIsZero)
		case k == 3:
			b.Mov(randLoc(r), randOperand(r))
		case k == 4:
			b.Un([]Opcode{OpZext32, OpSext32, OpBswap, OpClz}[r.Intn(4)], randLoc(r), randOperand(r))
		case k == 5:
			base, off := randAddr(r, &b)
			n := len(b.Ops)
			b.Load(randLoc(r), base, off, 1<<r.Intn(4), r.Intn(2) == 0)
			if r.Intn(3) == 0 {
				b.Unprivileged(n)
			}
		case k == 6:
			base, off := randAddr(r, &b)
			n := len(b.Ops)
			b.Store(base, off, randOperand(r), 1<<r.Intn(4))
			if r.Intn(3) == 0 {
				b.Unprivileged(n)
			}
		case k == 7:
			x := r.Uint64()
			end := r.Intn(4) == 0
			h := func(e *testEnv) bool {
				e.R[int(x%4)] ^= x
				e.temps[int(x>>16%MaxTemps)] += x // helpers may use the temporaries too
				e.slow = append(e.slow, ^e.R[int(x>>8%4)]^e.temps[int(x>>24%MaxTemps)])
				if end {
					e.PC = x
				}
				return !end
			}
			if r.Intn(2) == 0 {
				b.CallPure(h) // compiled into a whole native block
			} else {
				b.Call(h)
			}
		case k == 8:
			b.ExitIf(randOperand(r), r.Intn(2) == 0, randImm(r))
		default:
			b.Mov(randLoc(r), Imm(randImm(r)))
		}
	}
	b.Exit(randOperand(r))
	return b.Ops
}

type memWorld struct {
	pages [3][]byte
	code  [3]uint32
	tlb   *TLB
}

func newWorld(seed int64) *memWorld {
	r := rand.New(rand.NewSource(seed))
	w := &memWorld{tlb: &TLB{}}
	w.tlb.Flush()
	for i := range w.pages {
		w.pages[i] = make([]byte, PageSize)
		r.Read(w.pages[i])
	}
	w.code[1] = 1
	w.tlb.Fill(0x10000, 0x40010000, unsafe.Pointer(&w.pages[0][0]), &w.code[0], true, true, false, 0)
	w.tlb.Fill(0x11000, 0x40011000, unsafe.Pointer(&w.pages[1][0]), &w.code[1], true, true, false, 0)  // code page
	w.tlb.Fill(0x20000, 0x40020000, unsafe.Pointer(&w.pages[2][0]), &w.code[2], true, false, false, 0) // read-only
	return w
}

// TestNativeMatchesClosure runs random blocks through both backends and compares every
// piece of state: registers, temporaries, PC, slow-path calls and memory.
func TestNativeMatchesClosure(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	native, whole := 0, 0
	for iter := 0; iter < 3000; iter++ {
		ops := randBlock(r)
		init := [4]uint64{r.Uint64(), randImm(r), 0x10000, 0x11008}
		var envs [2]*testEnv
		var worlds [2]*memWorld
		for k, be := range []Backend{BackendClosure, BackendNative} {
			if be == BackendNative {
				if _, _, ok := compileNative(testTarget(), ops); ok {
					native++
				}
				if _, _, ok := compileWhole(testTarget(), ops); ok && hasCall(ops) {
					whole++
				}
			}
			f, _, err := compileWith(be, testTarget(), ops)
			if err != nil {
				t.Fatal(err)
			}
			worlds[k] = newWorld(int64(iter))
			envs[k] = &testEnv{R: init, tlb: worlds[k].tlb, utlb: worlds[k].tlb}
			f(envs[k])
		}
		c, n := envs[0], envs[1]
		same := c.PC == n.PC && c.R == n.R && c.temps == n.temps && len(c.slow) == len(n.slow)
		for i := 0; same && i < len(c.slow); i++ {
			same = c.slow[i] == n.slow[i]
		}
		for i := range worlds[0].pages {
			same = same && bytes.Equal(worlds[0].pages[i], worlds[1].pages[i])
		}
		if !same {
			for i := range ops {
				t.Logf("  %v", &ops[i])
			}
			t.Fatalf("block %d differs:\nclosure PC=%#x R=%#x T=%#x slow=%#x\nnative  PC=%#x R=%#x T=%#x slow=%#x",
				iter, c.PC, c.R, c.temps, c.slow, n.PC, n.R, n.temps, n.slow)
		}
	}
	if native < 2000 {
		t.Errorf("only %d of 3000 random blocks compiled natively", native)
	}
	if whole < 200 {
		t.Errorf("only %d of 3000 random blocks compiled whole with pure helper calls", whole)
	}
}

type loopEnv struct {
	testEnv
	req uint32
}

// TestNativeSelfLoop checks a block that branches to its own start: the native backend
// runs many iterations per call but stops at once when an exit is requested, after a
// slow-path store (which may have invalidated the block), and ends in the same state
// as the closure backend running one iteration per call.
func TestNativeSelfLoop(t *testing.T) {
	base := testTarget()
	var e loopEnv
	tgt := &Target[loopEnv]{PC: base.PC, TLB: base.TLB, Temps: base.Temps, ExitReq: unsafe.Offsetof(e.req),
		LoadSlow: func(e *loopEnv, va uint64, size int) (uint64, bool) { return base.LoadSlow(&e.testEnv, va, size) },
		StoreSlow: func(e *loopEnv, va uint64, size int, v uint64) bool {
			return base.StoreSlow(&e.testEnv, va, size, v)
		}}
	r0, r1, r3 := reg(0), reg(1), reg(3)
	var b Builder[loopEnv]
	b.SetPC(0x1000)
	b.Bin(OpAdd, r0, r0, Imm(3))
	b.Store(r3, 0, r0, 8)
	b.Bin(OpSub, r1, r1, Imm(1))
	b.ExitIf(r1, true, 0x1000)
	b.Exit(Imm(0x2000))
	run := func(be Backend, iters uint64, code uint32, req uint32) (*loopEnv, int) {
		f, _, err := compileWith(be, tgt, b.Ops)
		if err != nil {
			t.Fatal(err)
		}
		w := newWorld(1)
		w.code[0] = code
		env := &loopEnv{testEnv: testEnv{R: [4]uint64{0, iters, 0, 0x10000}, tlb: w.tlb}, req: req}
		calls := 0
		for env.PC = 0x1000; env.PC == 0x1000; calls++ {
			f(env)
		}
		return env, calls
	}
	for _, c := range []struct {
		iters     uint64
		code, req uint32
		wantCalls int // native backend
	}{
		{5000, 0, 0, (5000 + loopBudget - 1) / loopBudget}, // a budget's worth of iterations per call
		{5000, 0, 1, 5000},
		{300, 1, 0, 300}, // every store takes the slow path
		// A dirty bit in the flag word must not send stores to the slow path.
		{5000, memory.PageDirty, 0, (5000 + loopBudget - 1) / loopBudget},
		{300, memory.PageCode | memory.PageDirty, 0, 300},
		// A clean page under the dirty log (PageTrack) sends every store there.
		{300, memory.PageTrack, 0, 300},
	} {
		want, _ := run(BackendClosure, c.iters, c.code, c.req)
		got, calls := run(BackendNative, c.iters, c.code, c.req)
		if got.R != want.R || got.PC != want.PC || len(got.slow) != len(want.slow) {
			t.Errorf("iters=%d code=%d req=%d: native R=%#x PC=%#x slow=%d, closure R=%#x PC=%#x slow=%d",
				c.iters, c.code, c.req, got.R, got.PC, len(got.slow), want.R, want.PC, len(want.slow))
		}
		if wantSlow := map[bool]int{false: 0, true: int(c.iters)}[c.code&CodeBit != 0]; len(want.slow) != wantSlow {
			t.Errorf("iters=%d code=%#x: %d slow-path stores, want %d", c.iters, c.code, len(want.slow), wantSlow)
		}
		if calls != c.wantCalls {
			t.Errorf("iters=%d code=%d req=%d: native block ran in %d calls, want %d", c.iters, c.code, c.req, calls, c.wantCalls)
		}
	}
}

func hasCall[E any](ops []Op[E]) bool {
	for i := range ops {
		if ops[i].Opc == OpCall {
			return true
		}
	}
	return false
}

// TestNativePureHelperLoop checks a self-looping block that calls a pure helper (one
// native segment, the helper called from an exit): it loops a budget's worth of
// iterations per call as a block without helpers does, stops at once on an exit
// request, ends exactly where the closure backend does when the helper ends the block
// mid-way (a guest exception: the ops before it committed, the ones after it not), and
// an impure helper keeps the block out of the loop (one iteration per call).
func TestNativePureHelperLoop(t *testing.T) {
	base := testTarget()
	var e loopEnv
	tgt := &Target[loopEnv]{PC: base.PC, TLB: base.TLB, Temps: base.Temps, ExitReq: unsafe.Offsetof(e.req),
		LoadSlow:  func(e *loopEnv, va uint64, size int) (uint64, bool) { return base.LoadSlow(&e.testEnv, va, size) },
		StoreSlow: func(e *loopEnv, va uint64, size int, v uint64) bool { return base.StoreSlow(&e.testEnv, va, size, v) }}
	r0, r1, r2 := reg(0), reg(1), reg(2)
	block := func(pure bool, stopAt uint64) []Op[loopEnv] {
		var b Builder[loopEnv]
		b.SetPC(0x1000)
		b.Bin(OpAdd, Temp(0), r0, Imm(3)) // a register temporary live across the call
		b.Mov(r0, Temp(0))
		h := func(e *loopEnv) bool {
			e.R[2] += e.R[0] ^ e.temps[0]<<1
			if e.R[0] == stopAt {
				e.PC = 0x5000
				return false
			}
			return true
		}
		if pure {
			b.CallPure(h)
		} else {
			b.Call(h)
		}
		b.Bin(OpAdd, r2, r2, Temp(0))
		b.Bin(OpSub, r1, r1, Imm(1))
		b.ExitIf(r1, true, 0x1000)
		b.Exit(Imm(0x2000))
		return b.Ops
	}
	run := func(be Backend, ops []Op[loopEnv], iters uint64, req uint32) (*loopEnv, int) {
		f, _, err := compileWith(be, tgt, ops)
		if err != nil {
			t.Fatal(err)
		}
		env := &loopEnv{testEnv: testEnv{R: [4]uint64{0, iters, 0, 0}}, req: req}
		calls := 0
		for env.PC = 0x1000; env.PC == 0x1000; calls++ {
			f(env)
		}
		return env, calls
	}
	for _, c := range []struct {
		pure      bool
		iters     uint64
		stopAt    uint64
		req       uint32
		wantCalls int // native backend
	}{
		{true, 5000, 0, 0, (5000 + loopBudget - 1) / loopBudget},
		{true, 5000, 0, 1, 5000},
		{true, 5000, 3 * 1500, 0, 2}, // the helper ends the block in the 1500th iteration
		{false, 300, 0, 0, 300},
	} {
		ops := block(c.pure, c.stopAt)
		want, _ := run(BackendClosure, ops, c.iters, c.req)
		got, calls := run(BackendNative, ops, c.iters, c.req)
		if got.R != want.R || got.PC != want.PC || got.temps != want.temps {
			t.Errorf("%+v: native R=%#x PC=%#x T=%#x, closure R=%#x PC=%#x T=%#x", c, got.R, got.PC, got.temps, want.R, want.PC, want.temps)
		}
		if calls != c.wantCalls {
			t.Errorf("%+v: native block ran in %d calls, want %d", c, calls, c.wantCalls)
		}
	}
	if _, _, ok := compileWhole(tgt, block(true, 0)); !ok {
		t.Error("a block with a pure helper call was not compiled whole")
	}
}

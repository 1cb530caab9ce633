package tcg

import (
	"encoding/binary"
	"testing"
	"unsafe"
)

type testEnv struct {
	PC    uint64
	R     [4]uint64
	tlb   *TLB
	utlb  *TLB // for unprivileged ops (the same TLB in these tests)
	temps [MaxTemps]uint64
	slow  []uint64 // addresses that took a slow path
}

func testTarget() *Target[testEnv] {
	var e testEnv
	return &Target[testEnv]{
		PC:    unsafe.Offsetof(e.PC),
		TLB:   unsafe.Offsetof(e.tlb),
		Temps: unsafe.Offsetof(e.temps),
		LoadSlow: func(e *testEnv, va uint64, size int) (uint64, bool) {
			e.slow = append(e.slow, va)
			if va >= 0x30000 {
				return 0, false // a guest fault
			}
			return 0xdead, true
		},
		StoreSlow: func(e *testEnv, va uint64, size int, v uint64) bool {
			e.slow = append(e.slow, va)
			return true
		},
		// The user paths mark what they record, so a backend calling the wrong one
		// shows.
		UserTLB: unsafe.Offsetof(e.utlb),
		UserLoadSlow: func(e *testEnv, va uint64, size int) (uint64, bool) {
			e.slow = append(e.slow, va|1<<62)
			if va >= 0x30000 {
				return 0, false
			}
			return 0xbeef, true
		},
		UserStoreSlow: func(e *testEnv, va uint64, size int, v uint64) bool {
			e.slow = append(e.slow, va|1<<62)
			return true
		},
	}
}

func reg(n int) Arg { return Global(unsafe.Offsetof(testEnv{}.R) + 8*uintptr(n)) }

func TestBackends(t *testing.T) { forBackends(t, testBackend) }

func testBackend(t *testing.T, be Backend) {
	page := make([]byte, PageSize)
	var code uint32
	tlb := &TLB{}
	tlb.Flush()
	tlb.Fill(0x10000, 0x40010000, unsafe.Pointer(&page[0]), &code, true, true, false, 0)
	env := &testEnv{tlb: tlb}

	var b Builder[testEnv]
	b.SetPC(0x1000)
	b.Mov(reg(0), Imm(5))
	b.Bin(OpAdd, reg(1), reg(0), Imm(7))   // 12
	b.Bin(OpShl, Temp(0), reg(1), Imm(60)) // 0xc000...
	b.Bin(OpOr, reg(2), Temp(0), reg(0))   // 0xc000000000000005
	b.Mov(reg(3), Imm(0x10000))            //
	b.Store(reg(3), 8, reg(2), 8)          // page[8:16]
	b.Load(reg(0), reg(3), 15, 1, true)    // 0xc0 sign-extended
	b.Bin(OpSar, reg(1), reg(2), Imm(62))  // -1
	b.Un(OpZext32, reg(1), reg(1))         // 0xffffffff
	b.Bin(OpMul, reg(1), reg(1), Imm(2))   // 0x1fffffffe
	b.ExitIf(reg(3), false, 0x9999)        // not taken: R3 != 0
	b.ExitIf(reg(3), true, 0x1234)         // taken
	b.Exit(Imm(0x5555))                    // not reached
	f, _, err := compileWith(be, testTarget(), b.Ops)
	if err != nil {
		t.Fatal(err)
	}
	f(env)
	if env.PC != 0x1234 {
		t.Errorf("PC = %#x, want 0x1234 (taken exit)", env.PC)
	}
	want := [4]uint64{0xffffffffffffffc0, 0x1fffffffe, 0xc000000000000005, 0x10000}
	if env.R != want {
		t.Errorf("registers %#x, want %#x", env.R, want)
	}
	if got := binary.LittleEndian.Uint64(page[8:]); got != 0xc000000000000005 {
		t.Errorf("memory %#x", got)
	}
	if len(env.slow) != 0 {
		t.Errorf("fast-path accesses took the slow path: %#x", env.slow)
	}
}

func TestBackendSlowPaths(t *testing.T) { forBackends(t, testBackendSlowPaths) }

func testBackendSlowPaths(t *testing.T, be Backend) {
	page := make([]byte, PageSize)
	code := uint32(1) // the page holds translated code: stores must take the slow path
	tlb := &TLB{}
	tlb.Flush()
	tlb.Fill(0x10000, 0x40010000, unsafe.Pointer(&page[0]), &code, true, true, false, 0)
	env := &testEnv{tlb: tlb}
	var b Builder[testEnv]
	b.SetPC(0x2000)
	b.Mov(reg(3), Imm(0x10000))
	b.Store(reg(3), 0, Imm(1), 4)       // code page: slow
	b.Load(reg(0), reg(3), 2, 4, false) // misaligned: slow
	b.Load(reg(1), Imm(0x20000), 0, 8, false)
	b.SetPC(0x2004)
	b.Load(reg(2), Imm(0x30000), 0, 8, false) // faults: ends the block with PC synced
	b.Exit(Imm(0x7777))
	f, _, err := compileWith(be, testTarget(), b.Ops)
	if err != nil {
		t.Fatal(err)
	}
	f(env)
	if want := []uint64{0x10000, 0x10002, 0x20000, 0x30000}; len(env.slow) != 4 || env.slow[0] != want[0] || env.slow[1] != want[1] || env.slow[2] != want[2] || env.slow[3] != want[3] {
		t.Errorf("slow-path addresses %#x, want %#x", env.slow, want)
	}
	if env.R[0] != 0xdead || env.R[1] != 0xdead || env.R[2] != 0 {
		t.Errorf("registers %#x", env.R)
	}
	if env.PC != 0x2004 {
		t.Errorf("PC after a faulting load = %#x, want the load's 0x2004", env.PC)
	}
	if page[0] != 0 {
		t.Error("slow-path store also wrote through the fast path")
	}
}

func TestCompileRejectsMalformedIR(t *testing.T) { forBackends(t, testCompileRejectsMalformedIR) }

func testCompileRejectsMalformedIR(t *testing.T, be Backend) {
	var b Builder[testEnv]
	b.Bin(OpAdd, Imm(1), reg(0), reg(1)) // destination is an immediate
	if _, _, err := compileWith(be, testTarget(), b.Ops); err == nil {
		t.Error("Compile accepted an immediate destination")
	}
	b = Builder[testEnv]{}
	b.Call(nil)
	if _, _, err := compileWith(be, testTarget(), b.Ops); err == nil {
		t.Error("Compile accepted a nil helper")
	}
	// Flags and division ops must state their layout and results (Op.Mode): one a
	// backend does not implement is malformed, not silently A64's.
	for _, mode := range []uint8{0, 2} {
		b = Builder[testEnv]{}
		b.Flags(OpFlagsSub, reg(0), reg(1), reg(2), 8, FlagLayout(mode))
		b.Exit(Imm(0))
		if _, _, err := compileWith(be, testTarget(), b.Ops); err == nil {
			t.Errorf("Compile accepted a flags op with layout %d", mode)
		}
		b = Builder[testEnv]{}
		b.Div(OpSdiv, reg(0), reg(1), reg(2), 8, DivResults(mode))
		b.Exit(Imm(0))
		if _, _, err := compileWith(be, testTarget(), b.Ops); err == nil {
			t.Errorf("Compile accepted a division with results %d", mode)
		}
	}
}

// runUnfused runs ops one compiled op at a time, bypassing fusion and unrolling: the
// reference the fused closures must match.
func runUnfused(t *testing.T, ops []Op[testEnv], env *testEnv) {
	t.Helper()
	for i := range ops {
		f, err := compileOp(testTarget(), &ops[i])
		if err != nil {
			t.Fatal(err)
		}
		if !f(env) {
			return
		}
	}
}

func TestFusedPatterns(t *testing.T) { forBackends(t, testFusedPatterns) }

func testFusedPatterns(t *testing.T, be Backend) {
	blocks := map[string]func(b *Builder[testEnv]){
		"exitif+exit": func(b *Builder[testEnv]) { b.ExitIf(reg(0), true, 0x100); b.Exit(Imm(0x200)) },
		"exitz+exit":  func(b *Builder[testEnv]) { b.ExitIf(reg(0), false, 0x100); b.Exit(Imm(0x200)) },
		"link+jump":   func(b *Builder[testEnv]) { b.Mov(reg(3), Imm(0x1004)); b.Exit(Imm(0x3000)) },
		"insert": func(b *Builder[testEnv]) {
			b.Bin(OpAnd, reg(1), reg(1), Imm(^uint64(0xffff0000)))
			b.Bin(OpOr, reg(1), reg(1), Imm(0xbeef0000))
			b.Exit(Imm(0x10))
		},
		"testbit": func(b *Builder[testEnv]) {
			b.Bin(OpShr, Temp(0), reg(0), Imm(3))
			b.Bin(OpAnd, Temp(0), Temp(0), Imm(1))
			b.ExitIf(Temp(0), true, 0x500)
			b.Exit(Imm(0x600))
		},
	}
	for name, build := range blocks {
		for _, r0 := range []uint64{0, 8, 7, 0xffffffffffffffff} {
			var b Builder[testEnv]
			build(&b)
			f, _, err := compileWith(be, testTarget(), b.Ops)
			if err != nil {
				t.Fatal(err)
			}
			got := &testEnv{R: [4]uint64{r0, 0x123456789abcdef0, 2, 3}}
			want := *got
			f(got)
			runUnfused(t, b.Ops, &want)
			if got.PC != want.PC || got.R != want.R || got.temps != want.temps {
				t.Errorf("%s with r0=%#x: fused PC=%#x R=%#x T=%#x, unfused PC=%#x R=%#x T=%#x",
					name, r0, got.PC, got.R, got.temps, want.PC, want.R, want.temps)
			}
		}
	}
}

// forBackends runs a test against every backend this host has.
func forBackends(t *testing.T, f func(t *testing.T, be Backend)) {
	for _, be := range []Backend{BackendClosure, BackendNative} {
		t.Run(string(be), func(t *testing.T) { f(t, be) })
	}
}

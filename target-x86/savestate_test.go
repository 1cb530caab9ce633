package x86

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/memory"
	"gemu/hw/vmstate"
)

// newSaveRig returns a vCPU on 2 MiB of RAM with identity-mapped 2 MiB pages.
func newSaveRig(t *testing.T) (*memory.RAM, *Engine, *CPU) {
	t.Helper()
	ram := memory.New()
	if _, err := ram.Add("ram", 0, 2<<20); err != nil {
		t.Fatal(err)
	}
	for pa, v := range map[uint64]uint64{0x1000: 0x2000 | 3, 0x2000: 0x3000 | 3, 0x3000: 0x83} {
		if err := ram.Write64(pa, v); err != nil {
			t.Fatal(err)
		}
	}
	eng := NewEngine(ram)
	c := New(Config{RAM: ram, Engine: eng})
	t.Cleanup(func() { c.Close(); eng.Close(); ram.Close() })
	return ram, eng, c
}

func longModeBoot(rip uint64, regs Regs) BootState {
	var b BootState
	s := &b.SRegs
	s.CS, s.DS, s.SS = FlatSegment(8, true, true), FlatSegment(16, false, false), FlatSegment(16, false, false)
	s.CR0, s.CR3, s.CR4, s.EFER = CR0_PE|CR0_PG|CR0_ET, 0x1000, CR4_PAE|CR4_OSFXSR, EFER_LME|EFER_LMA|EFER_SCE
	regs.RIP, regs.RFLAGS = rip, 2
	b.Regs = regs
	return b
}

// TestSaveStateRoundTrip sets every saved field to a value of its own, saves, loads
// into a fresh vCPU and checks what the guest can read back: registers, segment
// caches, MSRs through RDMSR's path, x87/SSE state and the run state.
func TestSaveStateRoundTrip(t *testing.T) {
	_, _, a := newSaveRig(t)
	b := longModeBoot(0x10000, Regs{RAX: 1, RBX: 2, RCX: 3, RDX: 4, RSI: 5, RDI: 6, RSP: 0x1f0000, RBP: 8, R8: 9, R15: 0x1515})
	b.SRegs.FS = DescriptorSegment(0x2b, 0x1245f2345678abcd)
	b.SRegs.GS = FlatSegment(0x33, false, false)
	b.SRegs.TR = Segment{Base: 0x5000, Limit: 0x67, Selector: 0x40, Type: 0xb, Present: true}
	b.SRegs.LDT = Segment{Base: 0x6000, Limit: 0xff, Selector: 0x50, Type: 0x2, Present: true}
	b.SRegs.GDT, b.SRegs.IDT = DTable{0x7000, 0x7f}, DTable{0x8000, 0xfff}
	b.SRegs.CR2, b.SRegs.CR8 = 0xdead000, 5
	a.SetBootState(b)
	a.RFLAGS |= 1<<0 | 1<<6 | 1<<11 | RFLAGS_IF // CF, ZF, OF, IF
	for n, v := range map[uint32]uint64{msrSTAR: 0x23001000000000, msrLSTAR: 0xffffffff81000000, msrCSTAR: 0xffffffff81000100,
		msrFMASK: 0x47700, msrKernelGSBase: 0xffff888000000000, msrTSCAux: 7, msrSysenterCS: 0x10, msrSysenterESP: 0x9000,
		msrSysenterEIP: 0xffffffff81000200, msrMiscEnable: 0x81, msrPAT: 0x0007010600070106, msrMTRRdefType: 0xc06,
		0x200: 0x6, 0x201: 0xff0000800, 0x250: 0x0606060606060606, 0x26f: 0x0505050505050505, 0x401: 0x1234,
		msrMCGctl: 0, 0x404: 0, 0x425: 0x55,
		0xc0010015: 0x1000000, msrGSBase: 0xffff888000001000, msrTSC: 1 << 40} {
		if !a.wrmsr(n, v) {
			t.Fatalf("wrmsr %#x refused", n)
		}
	}
	for i := range 16 {
		a.SetXMM(i, uint64(i)*0x0101010101010101, ^uint64(i))
	}
	a.sse.mxcsr, a.sse.fcw, a.sse.fsw, a.sse.ftw, a.sse.top, a.sse.xcr0 = 0x9fc0, 0x27f, 0x20, 0xc1, 6, 7
	a.sse.st = [8]float64{1.5, -2, 3e300, 0, 0.1, -7, 1e-310, 42}
	a.sse.raw80[3], a.sse.rawValid = rawReg{mant: 0x8000_0000_dead_beef, se: 0x7ffe}, 1<<3 // an MMX write
	a.nmiMasked = true
	a.halted.Store(true)
	a.startMu.Lock()
	a.sipi = 0x9a
	a.startMu.Unlock()

	st, err := a.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	_, _, c := newSaveRig(t)
	if err := c.LoadState(st); err != nil {
		t.Fatal(err)
	}
	if c.Regs() != a.Regs() || c.SRegs() != a.SRegs() {
		t.Errorf("registers differ:\n%+v %+v\n%+v %+v", a.Regs(), a.SRegs(), c.Regs(), c.SRegs())
	}
	for _, n := range []uint32{msrSTAR, msrLSTAR, msrCSTAR, msrFMASK, msrKernelGSBase, msrTSCAux, msrSysenterCS,
		msrSysenterESP, msrSysenterEIP, msrMiscEnable, msrPAT, msrMTRRdefType, msrAPICBase, msrFSBase, msrGSBase,
		0x200, 0x201, 0x250, 0x26f, 0x401, msrMCGctl, 0x404, 0x408, 0x425, 0xc0010015, 0xc0010010} {
		va, oka := a.rdmsr(n)
		vc, okc := c.rdmsr(n)
		if va != vc || oka != okc {
			t.Errorf("MSR %#x: saved %#x, restored %#x", n, va, vc)
		}
	}
	// The TSC offset: both vCPUs' engines started within the test, so the TSCs agree
	// to the restored one's (later) start; the offset itself must be the same.
	if a.msr.tscOffset != c.msr.tscOffset || a.msr.tscOffset == 0 {
		t.Errorf("TSC offset %#x restored as %#x", a.msr.tscOffset, c.msr.tscOffset)
	}
	if a.sse != c.sse {
		t.Errorf("x87/SSE state differs:\n%+v\n%+v", a.sse, c.sse)
	}
	if !c.halted.Load() || !c.on.Load() || !c.nmiMasked || c.sipi != 0x9a || c.flags != a.flags || c.cpl != a.cpl {
		t.Errorf("run state: halted %v on %v nmiMasked %v sipi %#x flags %#x/%#x", c.halted.Load(), c.on.Load(),
			c.nmiMasked, c.sipi, c.flags, a.flags)
	}
	again, err := c.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Data, st.Data) {
		t.Error("saving the restored vCPU gives other data")
	}
}

// TestSaveStateRefusesBadData checks that a state this vCPU cannot hold is refused
// with a message and leaves the vCPU unchanged.
func TestSaveStateRefusesBadData(t *testing.T) {
	_, _, a := newSaveRig(t)
	a.SetBootState(longModeBoot(0x10000, Regs{RAX: 77}))
	good, err := a.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	_, _, c := newSaveRig(t)
	c.SetBootState(longModeBoot(0x20000, Regs{RAX: 1}))
	before := c.Regs()
	mutate := func(f func(*cpuSave)) bus.State {
		s := cpuSave{}
		if err := vmstate.DecodeFields(good.Data, &s); err != nil {
			t.Fatal(err)
		}
		f(&s)
		d, err := vmstate.EncodeFields(nil, &s)
		if err != nil {
			t.Fatal(err)
		}
		return bus.State{Name: "cpu", Version: cpuStateVersion, Data: d}
	}
	for name, st := range map[string]bus.State{
		"version":   {Name: "cpu", Version: cpuStateVersion + 1, Data: good.Data},
		"truncated": {Name: "cpu", Version: cpuStateVersion, Data: good.Data[:len(good.Data)-3]},
		"cpl":       mutate(func(s *cpuSave) { s.CPL = 4 }),
		"top":       mutate(func(s *cpuSave) { s.FPU.Top = 8 }),
		"msr":       mutate(func(s *cpuSave) { s.MSR.StoredN[0] = 0x10 }),
		"efer":      mutate(func(s *cpuSave) { s.EFER |= 1 << 12 }),
	} {
		err := c.LoadState(st)
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", name, err)
		}
		if c.Regs() != before {
			t.Errorf("%s: the vCPU changed", name)
		}
	}
}

// TestSaveStateResumesProgram runs a loop (ALU flags, memory, a conditional branch,
// SSE adds and an x87 accumulation) to its HLT on one vCPU without a break, and on a
// second vCPU that is parked in the middle, saved, and restored onto a third vCPU with
// its own engine and a copy of the RAM: both must end with the same registers, FP
// state and memory.
func TestSaveStateResumesProgram(t *testing.T) {
	// 1: adc %rcx,%rax; xor %rax,%rdx; shl $3,%rdx; mov %rdx,(%rsi); mov (%rsi),%rbx;
	//    paddq %xmm1,%xmm0; fadd %st(1),%st; inc %rcx; cmp %rdi,%rcx; jb 1b; hlt
	// (ADC reads the CF the previous iteration's CMP left across the block boundary.)
	code := []byte{0x48, 0x11, 0xc8, 0x48, 0x31, 0xc2, 0x48, 0xc1, 0xe2, 0x03, 0x48, 0x89, 0x16,
		0x48, 0x8b, 0x1e, 0x66, 0x0f, 0xd4, 0xc1, 0xd8, 0xc1, 0x48, 0xff, 0xc1, 0x48, 0x39, 0xf9, 0x72, 0xe2, 0xf4}
	// fld1; fld1 before the loop: ST(0) accumulates ST(1)=1.
	prologue := []byte{0xd9, 0xe8, 0xd9, 0xe8}
	const iters = 3_000_000
	boot := longModeBoot(0x10000, Regs{RSI: 0x20000, RDI: iters, RSP: 0x1f0000})
	start := func(t *testing.T) (*memory.RAM, *CPU, func()) {
		ram, _, c := newSaveRig(t)
		ram.WriteAt(append(append([]byte{}, prologue...), code...), 0x10000)
		c.SetBootState(boot)
		c.SetXMM(1, 3, 5)
		stop := make(chan struct{})
		done := make(chan error, 1)
		go func() { done <- c.Run(stop) }()
		return ram, c, func() {
			close(stop)
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	waitHalt := func(t *testing.T, c *CPU) {
		deadline := time.Now().Add(60 * time.Second)
		for !c.Halted() {
			if time.Now().After(deadline) {
				t.Fatal("the loop did not reach HLT")
			}
			time.Sleep(time.Millisecond)
		}
	}
	ram1, ref, end1 := start(t)
	waitHalt(t, ref)
	end1()

	ram2, src, end2 := start(t)
	for v, _ := ram2.Read64(0x20000); v == 0; v, _ = ram2.Read64(0x20000) {
		time.Sleep(100 * time.Microsecond)
	}
	src.Park()
	if !src.WaitParked(10 * time.Second) {
		t.Fatal("vCPU did not park")
	}
	if src.Halted() {
		t.Skip("the loop finished before the vCPU parked (host too fast for this count)")
	}
	st, err := src.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	mid := src.R[1]
	ram3, _, dst := newSaveRig(t)
	buf := make([]byte, 2<<20)
	ram2.ReadAt(buf, 0)
	ram3.WriteAt(buf, 0)
	src.Unpark()
	end2()
	if err := dst.LoadState(st); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- dst.Run(stop) }()
	waitHalt(t, dst)
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("saved at iteration %d of %d", mid, iters)
	if dst.Regs() != ref.Regs() || dst.sse != ref.sse {
		t.Errorf("restored run ends with\n%+v %+v\nuninterrupted\n%+v %+v", dst.Regs(), dst.sse.st, ref.Regs(), ref.sse.st)
	}
	b1, b3 := make([]byte, 64), make([]byte, 64)
	ram1.ReadAt(b1, 0x20000)
	ram3.ReadAt(b3, 0x20000)
	if !bytes.Equal(b1, b3) {
		t.Errorf("memory differs: %x vs %x", b3, b1)
	}
}

package x86

import (
	"testing"
	"time"

	"gemu/hw/memory"
)

// BenchmarkLoopMIPS runs an integer loop (add, xor, shift, compare, load, store,
// conditional branch: 8 instructions per iteration) through the run loop and reports
// guest instructions per second.
func BenchmarkLoopMIPS(b *testing.B) {
	ram := memory.New()
	if _, err := ram.Add("ram", 0, 2<<20); err != nil {
		b.Fatal(err)
	}
	defer ram.Close()
	for pa, v := range map[uint64]uint64{0x1000: 0x2000 | 3, 0x2000: 0x3000 | 3, 0x3000: 0x83} {
		ram.Write64(pa, v)
	}
	// 1: add %rcx,%rax; xor %rax,%rdx; shl $3,%rdx; mov %rdx,(%rsi); mov (%rsi),%rbx;
	//    inc %rcx; cmp %rdi,%rcx; jb 1b; hlt
	code := []byte{0x48, 0x01, 0xc8, 0x48, 0x31, 0xc2, 0x48, 0xc1, 0xe2, 0x03, 0x48, 0x89, 0x16,
		0x48, 0x8b, 0x1e, 0x48, 0xff, 0xc1, 0x48, 0x39, 0xf9, 0x72, 0xe8, 0xf4}
	ram.WriteAt(code, 0x10000)
	eng := NewEngine(ram)
	defer eng.Close()
	c := New(Config{RAM: ram, Engine: eng})
	defer c.Close()
	iters := uint64(b.N) * 1000
	var bs BootState
	s := &bs.SRegs
	s.CS, s.DS, s.SS = FlatSegment(8, true, true), FlatSegment(16, false, false), FlatSegment(16, false, false)
	s.CR0, s.CR3, s.CR4 = CR0_PE|CR0_PG|CR0_ET, 0x1000, CR4_PAE
	s.EFER = EFER_LME | EFER_LMA
	bs.Regs = Regs{RIP: 0x10000, RSI: 0x20000, RDI: iters, RSP: 0x1f0000, RFLAGS: 2}
	c.SetBootState(bs)
	stop := make(chan struct{})
	done := make(chan struct{})
	b.ResetTimer()
	start := time.Now()
	go func() { c.Run(stop); close(done) }()
	for !c.Halted() {
		time.Sleep(100 * time.Microsecond)
	}
	el := time.Since(start)
	close(stop)
	<-done
	if c.R[1] != iters {
		b.Fatalf("loop ran %d iterations, want %d", c.R[1], iters)
	}
	b.ReportMetric(float64(iters*8)/el.Seconds()/1e6, "MIPS")
}

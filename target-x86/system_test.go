package x86

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"gemu/hw/memory"
)

// TestSystemRunLoop boots testdata/sys64.S through the public API a board uses (New,
// SetBootState, Run, SetIRQ with an Ack callback): the guest loads its GDT, IDT and TR,
// programs STAR/LSTAR/FMASK/EFER with WRMSR, drops to CPL 3 with IRETQ, makes a
// SYSCALL (SYSRET back), takes a user-mode #PF on an unmapped address (delivered on
// the TSS RSP0 stack, error code and CR2 recorded, IRETQ to a fixed-up RIP), runs a
// LOCK'd increment, spins until the test raises an interrupt (vector 0x40 through
// the Ack callback, IF=1 at CPL 3), and finally executes HLT at CPL 3, which must
// raise #GP(0) with the user CS in the frame.
func TestSystemRunLoop(t *testing.T) {
	ram := memory.New()
	if _, err := ram.Add("ram", 0, 2<<20); err != nil {
		t.Fatal(err)
	}
	defer ram.Close()
	w64 := func(pa, v uint64) {
		if err := ram.Write64(pa, v); err != nil {
			t.Fatal(err)
		}
	}
	// Identity map of the first 2 MiB, user-accessible (one large page).
	w64(0x1000, 0x2000|7)
	w64(0x2000, 0x3000|7)
	w64(0x3000, 0|0x80|7)
	// GDT: null, kernel code 0x08, kernel data 0x10, user code32 0x18, user data 0x20,
	// user code64 0x28, TSS 0x30 (16 bytes).
	gdt := []uint64{0, 0x00af9b000000ffff, 0x00cf93000000ffff, 0x00cffb000000ffff, 0x00cff3000000ffff, 0x00affb000000ffff}
	for i, d := range gdt {
		w64(0x5000+8*uint64(i), d)
	}
	tss := uint64(0x7000)
	w64(0x5030, 0x67|(tss&0xffffff)<<16|0x89<<40|(tss>>24&0xff)<<56)
	w64(0x5038, tss>>32)
	w64(tss+4, 0x1e0000) // RSP0
	base := uint64(0x10000)
	gate := func(vec int, handler uint64) {
		h := base + handler
		w64(0x6000+16*uint64(vec), h&0xffff|8<<16|0x8e<<40|(h>>16&0xffff)<<48)
		w64(0x6000+16*uint64(vec)+8, h>>32)
	}
	gate(13, sys64_gp)
	gate(14, sys64_pf)
	gate(0x40, sys64_irq)
	if err := ram.WriteAt(sys64Code, base); err != nil {
		t.Fatal(err)
	}

	eng := NewEngine(ram)
	defer eng.Close()
	acks := make(chan int, 4)
	var c *CPU
	var trace safeBuffer
	c = New(Config{RAM: ram, Engine: eng, Trace: &trace, TraceFlags: TraceInAsm | TraceInt | TraceExec, Ack: func(cpu int) (uint8, bool) {
		acks <- cpu
		c.SetIRQ(false) // the line drops once acknowledged
		return 0x40, true
	}})
	defer c.Close()
	var b BootState
	s := &b.SRegs
	s.CS = FlatSegment(0x08, true, true)
	s.DS, s.SS = FlatSegment(0x10, false, false), FlatSegment(0x10, false, false)
	s.ES, s.FS, s.GS = s.DS, s.DS, s.DS
	s.CR0 = CR0_PE | CR0_PG | CR0_ET | CR0_NE | CR0_WP
	s.CR3 = 0x1000
	s.CR4 = CR4_PAE
	s.EFER = EFER_LME | EFER_LMA | EFER_NXE
	b.Regs.RIP = base
	b.Regs.RSP = 0x1f8000
	b.Regs.RFLAGS = RFLAGS_RESERVED
	c.SetBootState(b)

	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() { errc <- c.Run(stop) }()
	r32 := func(off uint64) uint32 { v, _ := ram.Read32(base + off); return v }
	r64 := func(off uint64) uint64 { v, _ := ram.Read64(base + off); return v }
	deadline := time.Now().Add(10 * time.Second)
	for r32(sys64_ucount) == 0 {
		if time.Now().After(deadline) {
			close(stop)
			t.Fatalf("guest did not reach user mode's locked increment (sysres %#x pferr %#x RIP %#x)", r64(sys64_sysres), r64(sys64_pferr), c.RIP)
		}
		time.Sleep(time.Millisecond)
	}
	c.SetIRQ(true)
	for r32(sys64_done) == 0 {
		if time.Now().After(deadline) {
			close(stop)
			t.Fatalf("guest did not finish (irqs %d)", r32(sys64_irqs))
		}
		time.Sleep(time.Millisecond)
	}
	for !c.Halted() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := r64(sys64_sysres); got != 42 {
		t.Errorf("syscall result %d, want 42", got)
	}
	if got := r64(sys64_pfcr2); got != 0x400000 {
		t.Errorf("#PF CR2 %#x, want 0x400000", got)
	}
	if got := r64(sys64_pferr); got != pfW|pfU {
		t.Errorf("#PF error code %#x, want %#x (user write, not present)", got, pfW|pfU)
	}
	if got := r32(sys64_irqs); got != 1 {
		t.Errorf("interrupts taken %d, want 1", got)
	}
	if got := r64(sys64_gperr); got != 0 {
		t.Errorf("#GP error code %#x, want 0", got)
	}
	if got := r64(sys64_gpcs); got != 0x2b {
		t.Errorf("#GP frame CS %#x, want 0x2b (CPL 3 user code)", got)
	}
	if len(acks) != 1 {
		t.Errorf("%d interrupt acknowledges, want 1", len(acks))
	}
	if !c.Halted() {
		t.Error("vCPU not halted after cli; hlt")
	}
	if regs := c.Regs(); regs.RBX != 42 {
		t.Errorf("user RBX %d after syscall, want 42", regs.RBX)
	}
	// The -d traces: in_asm disassembles (x86asm), int logs the #PF, exec each block.
	tr := trace.String()
	for _, w := range []string{"syscall", "sysretq", "iretq", "int vec=0xe err=0x6", "int vec=0x40", "cpu0 Trace 0x10000"} {
		if !strings.Contains(tr, w) {
			t.Errorf("trace lacks %q", w)
		}
	}
}

type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestStartupIPIToLongMode starts a powered-off vCPU with StartupIPI (vector 0x08: real
// mode at 0800:0000) running testdata/apboot.S, the shape of Linux's SMP trampoline:
// real mode (a near CALL that must push the IP, not the linear address; a DS-relative
// store), LGDT, CR0.PE, a far jump to 32-bit protected mode, PAE, CR3, EFER.LME, CR0.PG
// (long mode becomes active), and a far jump to a 64-bit code segment.
func TestStartupIPIToLongMode(t *testing.T) {
	ram := memory.New()
	if _, err := ram.Add("ram", 0, 2<<20); err != nil {
		t.Fatal(err)
	}
	defer ram.Close()
	for pa, v := range map[uint64]uint64{0x1000: 0x2000 | 3, 0x2000: 0x3000 | 3, 0x3000: 0x83} {
		if err := ram.Write64(pa, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := ram.WriteAt(apbootCode, 0x8000); err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(ram)
	defer eng.Close()
	c := New(Config{ID: 1, RAM: ram, Engine: eng})
	defer c.Close()
	if !c.Halted() {
		t.Fatal("a new vCPU is not powered off")
	}
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() { errc <- c.Run(stop) }()
	c.StartupIPI(0x08)
	r := func(off uint64, n int) uint64 {
		b := make([]byte, 8)
		ram.ReadAt(b[:n], 0x8000+off)
		return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
			uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
	}
	deadline := time.Now().Add(10 * time.Second)
	for r(apboot_done, 4) != 0x64 || !c.Halted() {
		if time.Now().After(deadline) {
			close(stop)
			<-errc
			t.Fatalf("AP did not reach 64-bit mode: r16 %#x ip16 %#x, RIP %#x CR0 %#x EFER %#x", r(apboot_r16, 2), r(apboot_ip16, 2), c.RIP, c.CR0, c.EFER)
		}
		time.Sleep(time.Millisecond)
	}
	close(stop)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := r(apboot_ip16, 2); got != apboot_aftercall {
		t.Errorf("real-mode CALL pushed IP %#x, want %#x", got, apboot_aftercall)
	}
	if got := r(apboot_r16, 2); got != 0x1234 {
		t.Errorf("DS-relative real-mode store: %#x", got)
	}
	if got := r(apboot_rip64, 8); got != 0x8000+apboot_lm64+5 {
		t.Errorf("64-bit CALL pushed %#x, want %#x", got, 0x8000+apboot_lm64+5)
	}
	sr := c.SRegs()
	if sr.EFER&EFER_LMA == 0 || !sr.CS.L || sr.CS.Selector != 8 {
		t.Errorf("not in 64-bit mode: EFER %#x CS %+v", sr.EFER, sr.CS)
	}
	if c.ID() != 1 {
		t.Errorf("ID %d", c.ID())
	}
}

// TestLockedOpsAcrossVCPUs runs testdata/smp.S on two vCPUs of one engine at once (on
// separate goroutines, so on both host cores): LOCK XADD, a LOCK CMPXCHG retry loop, a
// LOCK BTS/BTR spin lock around plain read-modify-write code, and LOCK CMPXCHG16B
// must lose no update.
func TestLockedOpsAcrossVCPUs(t *testing.T) {
	ram := memory.New()
	if _, err := ram.Add("ram", 0, 2<<20); err != nil {
		t.Fatal(err)
	}
	defer ram.Close()
	for pa, v := range map[uint64]uint64{0x1000: 0x2000 | 3, 0x2000: 0x3000 | 3, 0x3000: 0x83} {
		ram.Write64(pa, v)
	}
	base := uint64(0x10000)
	ram.WriteAt(smpCode, base)
	eng := NewEngine(ram)
	defer eng.Close()
	const iters = 20000
	var cpus []*CPU
	stop := make(chan struct{})
	done := make(chan error, 2)
	for i := 0; i < 2; i++ {
		c := New(Config{ID: i, RAM: ram, Engine: eng})
		defer c.Close()
		var b BootState
		s := &b.SRegs
		s.CS, s.DS, s.SS = FlatSegment(8, true, true), FlatSegment(16, false, false), FlatSegment(16, false, false)
		s.CR0, s.CR3, s.CR4 = CR0_PE|CR0_PG|CR0_ET, 0x1000, CR4_PAE
		s.EFER = EFER_LME | EFER_LMA
		b.Regs = Regs{RIP: base, RDI: iters, RSP: 0x1f0000 - uint64(i)*0x1000, RFLAGS: 2}
		c.SetBootState(b)
		cpus = append(cpus, c)
		go func() { done <- c.Run(stop) }()
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		f, _ := ram.Read32(base + smp_finished)
		if f == 2 {
			break
		}
		if time.Now().After(deadline) {
			close(stop)
			t.Fatalf("vCPUs did not finish (finished=%d)", f)
		}
		time.Sleep(time.Millisecond)
	}
	close(stop)
	for range cpus {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for name, off := range map[string]uint64{"lock xadd": smp_c1, "lock cmpxchg": smp_c2, "bts/btr lock": smp_c3} {
		if v, _ := ram.Read32(base + off); v != 2*iters {
			t.Errorf("%s counter %d, want %d", name, v, 2*iters)
		}
	}
	lo, _ := ram.Read64(base + smp_p16)
	hi, _ := ram.Read64(base + smp_p16 + 8)
	if lo != 2*iters || hi != 2*iters {
		t.Errorf("cmpxchg16b pair %d:%d, want %d:%d", lo, hi, 2*iters, 2*iters)
	}
}

// TestParkAndClock parks a running vCPU (it stops executing: its loop counter stays
// put) and pauses the engine clock (RDTSC does not advance while paused).
func TestParkAndClock(t *testing.T) {
	ram := memory.New()
	if _, err := ram.Add("ram", 0, 2<<20); err != nil {
		t.Fatal(err)
	}
	defer ram.Close()
	for pa, v := range map[uint64]uint64{0x1000: 0x2000 | 3, 0x2000: 0x3000 | 3, 0x3000: 0x83} {
		ram.Write64(pa, v)
	}
	// 1: inc %rcx; mov %rcx,(%rsi); rdtsc; mov %eax,8(%rsi); jmp 1b
	ram.WriteAt([]byte{0x48, 0xff, 0xc1, 0x48, 0x89, 0x0e, 0x0f, 0x31, 0x89, 0x46, 0x08, 0xeb, 0xf3}, 0x10000)
	eng := NewEngine(ram)
	defer eng.Close()
	c := New(Config{RAM: ram, Engine: eng})
	defer c.Close()
	var b BootState
	s := &b.SRegs
	s.CS, s.DS, s.SS = FlatSegment(8, true, true), FlatSegment(16, false, false), FlatSegment(16, false, false)
	s.CR0, s.CR3, s.CR4, s.EFER = CR0_PE|CR0_PG|CR0_ET, 0x1000, CR4_PAE, EFER_LME|EFER_LMA
	b.Regs = Regs{RIP: 0x10000, RSI: 0x20000, RSP: 0x1f0000, RFLAGS: 2}
	c.SetBootState(b)
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- c.Run(stop) }()
	defer func() { close(stop); <-done }()
	for v, _ := ram.Read64(0x20000); v == 0; v, _ = ram.Read64(0x20000) {
		time.Sleep(time.Millisecond)
	}
	c.PauseClock()
	c.Park()
	if !c.WaitParked(5 * time.Second) {
		t.Fatal("vCPU did not park")
	}
	n1, _ := ram.Read64(0x20000)
	t1, _ := ram.Read32(0x20008)
	time.Sleep(20 * time.Millisecond)
	if n2, _ := ram.Read64(0x20000); n2 != n1 {
		t.Errorf("parked vCPU ran: counter %d -> %d", n1, n2)
	}
	c.Unpark()
	for v, _ := ram.Read64(0x20000); v < n1+1000; v, _ = ram.Read64(0x20000) {
		time.Sleep(time.Millisecond)
	}
	// Signed: tcg's PauseClock can freeze the clock a little before a value a vCPU read
	// just then (it takes time.Now, then publishes the frozen value), so under load
	// the TSC may step back by the scheduling delay between the two.
	if t2, _ := ram.Read32(0x20008); int32(t2-t1) > int32(10*time.Millisecond) {
		t.Errorf("TSC advanced %d ns across a 20 ms pause (%#x -> %#x)", t2-t1, t1, t2)
	}
	c.ResumeClock()
}

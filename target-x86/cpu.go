package x86

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"gemu/hw/bus"
	"gemu/hw/memory"
	"gemu/tcg"
)

// Config describes one x86-64 vCPU for the TCG accelerator. The vCPUs of one guest
// share one Engine (translation cache, TLB-shootdown domain, clock).
type Config struct {
	ID  int         // initial APIC ID (CPUID leaf 1 EBX[31:24], leaf 0xb)
	RAM *memory.RAM // guest RAM; physical accesses elsewhere go to MMIO
	// Engine is the guest's translator engine (NewEngine(RAM)), owned by the caller.
	Engine *Engine
	MMIO   *bus.Bus // guest-physical MMIO (LAPIC, IOAPIC, HPET, PCI BARs)
	IO     *bus.Bus // the I/O-port space (IN/OUT, INS/OUTS); nil: reads all-ones
	// Ack is the interrupt acknowledge cycle (INTA): called on the vCPU's goroutine when
	// the INTR line (SetIRQ) is raised and RFLAGS.IF allows it; it returns the vector to
	// deliver, ok=false for a spurious request (nothing delivered).
	Ack func(cpu int) (vector uint8, ok bool)
	// MSR serves model-specific registers the CPU does not implement itself (the
	// x2APIC range, for instance); nil: unknown MSRs raise #GP(0).
	MSR MSRHandler
	// Model is the CPUID model; nil: Qemu64.
	Model *Model
	// Shutdown is called on a triple fault (the CPU then stays halted until Reset).
	Shutdown func(cpu int)
	// Trace, if non-nil, receives the traces TraceFlags selects.
	Trace      io.Writer
	TraceFlags TraceFlags
}

// MSRHandler serves MSRs the CPU model does not know; ok=false raises #GP(0).
type MSRHandler interface {
	ReadMSR(cpu int, msr uint32) (uint64, bool)
	WriteMSR(cpu int, msr uint32, v uint64) bool
}

// TraceFlags selects QEMU-style -d traces.
type TraceFlags uint32

const (
	TraceInAsm TraceFlags = 1 << iota // each instruction when translated ("in_asm")
	TraceExec                         // each block executed ("exec")
	TraceInt                          // exceptions and interrupts delivered ("int")
)

// ParseTraceFlags parses a comma-separated -d list (in_asm, exec, int).
func ParseTraceFlags(s string) (TraceFlags, error) {
	var f TraceFlags
	for _, w := range strings.Split(s, ",") {
		switch w {
		case "in_asm":
			f |= TraceInAsm
		case "exec":
			f |= TraceExec
		case "int":
			f |= TraceInt
		case "":
		default:
			return 0, fmt.Errorf("unknown -d item %q (known: in_asm, exec, int)", w)
		}
	}
	return f, nil
}

// Engine is the translator state the vCPUs of one guest share (tcg.Engine).
type Engine = tcg.Engine[CPU]

// NewEngine returns the engine of a guest whose RAM is ram.
func NewEngine(ram *memory.RAM) *Engine { return tcg.NewEngine[CPU](ram) }

type tb = tcg.Block[CPU]

// Exit-request bits of the target.
const (
	reqIRQ   = tcg.ExitTarget << iota // INTR/NMI lines or IF changed
	reqPower                          // halt, reset, INIT/SIPI
)

// Segment register indices (the ModRM sreg encoding).
const (
	segES = iota
	segCS
	segSS
	segDS
	segFS
	segGS
)

// CPU is one x86-64 vCPU executed by the TCG engine.
type CPU struct {
	// R holds RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15 in encoding order.
	R   [16]uint64
	RIP uint64
	// RFLAGS holds every flag; its arithmetic bits are stale while cc.op != 0 (lazy
	// flags of IR-lowered instructions, flags.go), which Go code reading or writing them
	// mid-block settles with syncFlags first.
	RFLAGS uint64
	cc     ccState

	Seg                           [6]Segment // ES, CS, SS, DS, FS, GS
	TR, LDTR                      Segment
	GDT, IDT                      DTable
	CR0, CR2, CR3, CR4, CR8, EFER uint64
	cpl                           uint64

	msr msrState
	sse sseState

	flags uint64 // translation flags of the current mode (tbFlags)

	tlb   [2]tcg.TLB // per MMU index: 0 supervisor, 1 user (CPL 3)
	mmu   *tcg.TLB
	temps [tcg.MaxTemps]uint64

	cfg    Config
	eng    *Engine
	access bus.Access

	irq, nmi  atomic.Bool
	halted    atomic.Bool
	on        atomic.Bool
	startMu   sync.Mutex
	sipi      int  // pending SIPI vector + 1, under startMu
	initReq   bool // pending INIT, under startMu
	nmiMasked bool
	// delivering counts nested exception deliveries (for #DF and triple faults).
	delivering int
	delivVec   int // the vector being delivered while delivering > 0
	// LastVector and LastError record the last exception or interrupt delivered (for
	// traces and tests): vector, error code (or -1 when it has none).
	LastVector int
	LastError  int64

	trace io.Writer
	tflag TraceFlags

	v tcg.VCPU[CPU]
}

var cpuOps, cpuOpsTraced = tcg.CPUOps[CPU]{
	Fetch:         (*CPU).fetch,
	Translate:     (*CPU).translateBlock,
	Probe:         (*CPU).probe,
	HandleExit:    (*CPU).handleExit,
	ExecInterrupt: (*CPU).execInterrupt,
}, tcg.CPUOps[CPU]{
	Fetch:         (*CPU).fetch,
	Translate:     (*CPU).translateBlock,
	Probe:         (*CPU).probe,
	HandleExit:    (*CPU).handleExit,
	ExecInterrupt: (*CPU).execInterrupt,
	TraceExec: func(c *CPU, t *tb) {
		fmt.Fprintf(c.trace, "cpu%d Trace %#x [%016x] CPL%d\n", c.cfg.ID, c.RIP, t.Phys, c.cpl)
	},
}

var irTarget = func() *tcg.Target[CPU] {
	t := tcg.Target[CPU]{
		PC:    unsafe.Offsetof(CPU{}.RIP),
		TLB:   unsafe.Offsetof(CPU{}.mmu),
		Temps: unsafe.Offsetof(CPU{}.temps),
		Flags: unsafe.Offsetof(CPU{}.flags),
		LoadSlow: func(c *CPU, va uint64, size int) (uint64, bool) {
			c.syncFlags()
			return c.ldSlow(va, size, c.mmuIdx())
		},
		StoreSlow: func(c *CPU, va uint64, size int, v uint64) bool {
			c.syncFlags()
			return c.stSlow(va, size, v, c.mmuIdx())
		},
	}
	t.SetVCPU(unsafe.Offsetof(CPU{}.v))
	return &t
}()

// New creates a vCPU in the RESET state, powered off: SetBootState (the boot CPU) or
// an INIT/SIPI sequence (StartupIPI) starts it. cfg.Engine must be set.
func New(cfg Config) *CPU {
	c := &CPU{cfg: cfg, trace: cfg.Trace, tflag: cfg.TraceFlags, access: bus.CPUAccess(cfg.ID)}
	if c.trace == nil {
		c.tflag = 0
	}
	if cfg.Engine == nil {
		panic("x86: Config.Engine is nil")
	}
	ops := &cpuOps
	if c.tflag&TraceExec != 0 {
		ops = &cpuOpsTraced
	}
	c.eng = cfg.Engine
	c.v.Init(c.eng, c, ops, &c.RIP, &c.flags, &c.mmu, &c.tlb[0], &c.tlb[1])
	b := ResetState(0xf000)
	b.Regs.RIP = 0xfff0
	b.SRegs.CS.Base = 0xffff0000
	c.SetBootState(b)
	c.on.Store(false)
	c.v.Request(reqPower)
	return c
}

// SetBuses sets where the vCPU's accesses outside RAM go: guest-physical MMIO and the
// port space (Config.MMIO and Config.IO), for an engine that receives them when it
// starts running (accel.CPU.Run's IO). Call it before Run, not while running.
func (c *CPU) SetBuses(mmio, pio *bus.Bus) { c.cfg.MMIO, c.cfg.IO = mmio, pio }

// Close leaves the engine. The vCPU must not be running.
func (c *CPU) Close() { c.v.Close() }

// ID returns the vCPU's APIC ID.
func (c *CPU) ID() int { return c.cfg.ID }

// SetBootState loads a complete register file (a loader's BootState, or ResetState)
// and powers the vCPU on. Call it before Run or from the vCPU's own goroutine.
func (c *CPU) SetBootState(b BootState) {
	r := &b.Regs
	c.R = [16]uint64{r.RAX, r.RCX, r.RDX, r.RBX, r.RSP, r.RBP, r.RSI, r.RDI,
		r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15}
	c.RFLAGS = r.RFLAGS | RFLAGS_RESERVED
	s := &b.SRegs
	c.Seg = [6]Segment{s.ES, s.CS, s.SS, s.DS, s.FS, s.GS}
	c.TR, c.LDTR, c.GDT, c.IDT = s.TR, s.LDT, s.GDT, s.IDT
	c.CR0, c.CR2, c.CR3, c.CR4, c.CR8, c.EFER = s.CR0, s.CR2, s.CR3, s.CR4, s.CR8, s.EFER
	c.RIP = r.RIP // RIP holds the linear PC: CS.Base + EIP outside 64-bit mode
	if !(s.EFER&EFER_LMA != 0 && s.CS.L) {
		c.RIP = (s.CS.Base + r.RIP) & 0xffffffff
	}
	c.cpl = uint64(s.CS.DPL)
	if c.CR0&CR0_PE == 0 {
		c.cpl = 0
	}
	c.msr = msrState{apicBase: 0xfee00900, pat: 0x0007040600070406, miscEnable: 1}
	if s.APICBase != 0 {
		c.msr.apicBase = s.APICBase
	}
	if c.cfg.ID != 0 {
		c.msr.apicBase &^= 1 << 8
	}
	c.sse = sseState{mxcsr: 0x1f80, fcw: 0x37f}
	c.halted.Store(false)
	c.delivering = 0
	c.LastVector, c.LastError = -1, -1
	c.modeChanged()
	c.v.FlushTLB()
	c.on.Store(true)
	c.v.Request(reqPower)
	c.v.Kick()
}

// Reset powers the vCPU on in the architectural RESET state: real mode, fetching the
// first instruction at the reset vector 0xfffffff0 (CS selector 0xf000, base
// 0xffff0000, IP 0xfff0), as a board with firmware starts its boot CPU. Call it before
// Run or from the vCPU's own goroutine.
func (c *CPU) Reset() {
	b := ResetState(0xf000)
	b.Regs.RIP, b.SRegs.CS.Base = 0xfff0, 0xffff0000
	c.SetBootState(b)
}

// Regs returns the general registers, RIP and RFLAGS.
func (c *CPU) Regs() Regs {
	return Regs{RAX: c.R[0], RCX: c.R[1], RDX: c.R[2], RBX: c.R[3], RSP: c.R[4], RBP: c.R[5],
		RSI: c.R[6], RDI: c.R[7], R8: c.R[8], R9: c.R[9], R10: c.R[10], R11: c.R[11],
		R12: c.R[12], R13: c.R[13], R14: c.R[14], R15: c.R[15], RIP: c.ip(), RFLAGS: c.RFLAGS}
}

// ip returns the architectural RIP/EIP/IP: the offset of the linear PC in CS outside
// 64-bit mode.
func (c *CPU) ip() uint64 {
	if c.flags&flagLong != 0 {
		return c.RIP
	}
	return (c.RIP - c.Seg[segCS].Base) & 0xffffffff
}

// SRegs returns the segment, descriptor-table and control registers.
func (c *CPU) SRegs() SRegs {
	return SRegs{ES: c.Seg[segES], CS: c.Seg[segCS], SS: c.Seg[segSS], DS: c.Seg[segDS],
		FS: c.Seg[segFS], GS: c.Seg[segGS], TR: c.TR, LDT: c.LDTR, GDT: c.GDT, IDT: c.IDT,
		CR0: c.CR0, CR2: c.CR2, CR3: c.CR3, CR4: c.CR4, CR8: c.CR8, EFER: c.EFER, APICBase: c.msr.apicBase}
}

// SetIRQ sets the level of the vCPU's INTR input (from the LAPIC or PIC). Safe from
// any goroutine.
func (c *CPU) SetIRQ(level bool) {
	if c.irq.Swap(level) != level {
		c.v.Request(reqIRQ)
		c.v.Kick()
	}
}

// NMI raises a non-maskable interrupt (edge). Safe from any goroutine.
func (c *CPU) NMI() {
	c.nmi.Store(true)
	c.v.Request(reqIRQ)
	c.v.Kick()
}

// INIT puts the vCPU in the wait-for-SIPI state (an INIT IPI): it stops executing
// until StartupIPI. Safe from any goroutine.
func (c *CPU) INIT() {
	c.startMu.Lock()
	c.initReq = true
	c.sipi = 0
	c.startMu.Unlock()
	c.v.Request(reqPower)
	c.v.Kick()
}

// StartupIPI starts a vCPU waiting for SIPI (INIT, then SIPI with vector v): it begins
// in real mode at v<<12. Safe from any goroutine.
func (c *CPU) StartupIPI(v uint8) {
	c.startMu.Lock()
	c.sipi = int(v) + 1
	c.startMu.Unlock()
	c.v.Request(reqPower)
	c.v.Kick()
}

// Run executes the vCPU until stop is closed (tcg.VCPU.Run with this target's hooks).
func (c *CPU) Run(stop <-chan struct{}) error { return c.v.Run(stop) }

// Stop makes Run return at the next block boundary.
func (c *CPU) Stop() { c.v.Stop() }

// Halted reports whether the vCPU is in HLT (or powered off).
func (c *CPU) Halted() bool { return c.halted.Load() || !c.on.Load() }

func (c *CPU) handleExit(req uint32) bool {
	c.startMu.Lock()
	if c.initReq {
		c.initReq = false
		b := ResetState(0xf000)
		b.Regs.RIP, b.SRegs.CS.Base = 0xfff0, 0xffff0000
		c.SetBootState(b)
		c.on.Store(false)
	}
	if c.sipi != 0 && !c.on.Load() {
		v := uint16(c.sipi - 1)
		c.sipi = 0
		c.startMu.Unlock()
		b := ResetState(v << 8)
		b.Regs.RIP = 0
		c.SetBootState(b)
	} else {
		c.startMu.Unlock()
	}
	if !c.on.Load() {
		return false
	}
	if c.halted.Load() {
		if c.nmi.Load() || c.irq.Load() && c.RFLAGS&RFLAGS_IF != 0 {
			c.halted.Store(false)
			return true
		}
		return false
	}
	return true
}

func (c *CPU) execInterrupt() {
	if c.halted.Load() {
		return
	}
	if c.nmi.Load() && !c.nmiMasked {
		c.nmi.Store(false)
		c.nmiMasked = true
		c.deliver(2, -1, intHW, c.RIP)
		return
	}
	if c.irq.Load() && c.RFLAGS&RFLAGS_IF != 0 && c.cfg.Ack != nil {
		if vec, ok := c.cfg.Ack(c.cfg.ID); ok {
			c.deliver(int(vec), -1, intHW, c.RIP)
		}
	}
}

// Translation flags: what changes the meaning of the same code bytes.
const (
	flagCPL3  = 1 << 0
	flagLong  = 1 << 1 // CS.L in long mode: 64-bit code
	flagCS32  = 1 << 2 // CS.D: 32-bit default operand size (legacy/compat)
	flagPE    = 1 << 3
	flagOSFXS = 1 << 4 // CR4.OSFXSR and !CR0.EM: SSE usable
)

func (c *CPU) tbFlags() uint64 {
	var f uint64
	if c.cpl == 3 {
		f |= flagCPL3
	}
	if c.EFER&EFER_LMA != 0 && c.Seg[segCS].L {
		f |= flagLong
	} else if c.Seg[segCS].DB {
		f |= flagCS32
	}
	if c.CR0&CR0_PE != 0 {
		f |= flagPE
	}
	if c.CR4&CR4_OSFXSR != 0 && c.CR0&cr0EM == 0 {
		f |= flagOSFXS
	}
	return f
}

func (c *CPU) mmuIdx() int {
	if c.cpl == 3 {
		return 1
	}
	return 0
}

// modeChanged recomputes derived state after a change of CPL, CS, CR0, CR4 or EFER.
func (c *CPU) modeChanged() {
	c.mmu = &c.tlb[c.mmuIdx()]
	c.flags = c.tbFlags()
}

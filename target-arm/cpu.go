package arm

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"gemu/hw/bus"
	"gemu/hw/memory"
	"gemu/tcg"
)

// SysRegHandler serves system registers the CPU does not implement itself: the GICv3
// CPU interface (ICC_*) and IMPLEMENTATION DEFINED registers. It is called on the vCPU's
// goroutine for MRS/MSR with op0=3 encodings the CPU does not know; ok=false makes the
// instruction UNDEFINED.
type SysRegHandler interface {
	ReadSysReg(cpu int, op0, op1, crn, crm, op2 uint32) (uint64, bool)
	WriteSysReg(cpu int, op0, op1, crn, crm, op2 uint32, v uint64) bool
}

// Config describes one vCPU. The vCPUs of one guest share one Engine (translation
// cache, TLB-maintenance broadcast domain, clock).
type Config struct {
	ID  int         // MPIDR_EL1.Aff0
	RAM *memory.RAM // guest RAM; physical accesses elsewhere go to MMIO
	// Engine is the guest's translator engine (NewEngine(RAM)), owned by the caller.
	// nil: vCPUs with the same RAM share one New creates and the last Close drops.
	Engine  *Engine
	MMIO    *bus.Bus
	SysRegs SysRegHandler // may be nil
	GICv3   bool          // advertise the GIC system-register interface (ID_AA64PFR0.GIC)
	// Model is the CPU model (-cpu): identification, ID registers and the optional
	// instructions it executes. nil: DefaultModel (Cortex-A57).
	Model *Model
	// HVC is called for HVC #imm at EL1 (PSCI): it reads c.X(0..3) and sets X0. The
	// instruction's return address is already in c.PC. nil makes HVC UNDEFINED.
	HVC func(c *CPU)
	// SMC is the same for SMC; nil makes SMC UNDEFINED.
	SMC func(c *CPU)
	// TimerIRQ reports a level change of a generic-timer output: timer 0 is the EL1
	// physical timer (PPI 30), 1 the virtual timer (PPI 27), 2 the EL2 physical timer
	// (PPI 26, never raised: EL2 is not implemented). Called on the vCPU's goroutine.
	TimerIRQ func(cpu int, timer int, level bool)
	// PMUIRQ reports a level change of the PMU's overflow interrupt (PPI 23 on virt).
	// Called on the vCPU's goroutine; nil leaves it unconnected.
	PMUIRQ func(cpu int, level bool)
	// Trace, if non-nil, receives the traces selected by TraceFlags.
	Trace      io.Writer
	TraceFlags TraceFlags
}

// TraceFlags selects QEMU-style -d traces.
type TraceFlags uint32

const (
	TraceInAsm TraceFlags = 1 << iota // disassembly of each block when translated ("in_asm")
	TraceExec                         // each block executed ("exec")
	TraceInt                          // exceptions and interrupts taken, ERET ("int")
	TraceOp                           // the IR of each block when translated ("op")
)

// ParseTraceFlags parses a comma-separated -d list (in_asm, op, exec, int).
func ParseTraceFlags(s string) (TraceFlags, error) {
	var f TraceFlags
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != ',' {
			continue
		}
		switch w := s[start:i]; w {
		case "in_asm":
			f |= TraceInAsm
		case "exec":
			f |= TraceExec
		case "int":
			f |= TraceInt
		case "op":
			f |= TraceOp
		case "":
		default:
			return 0, fmt.Errorf("unknown -d item %q (known: in_asm, op, exec, int)", w)
		}
		start = i + 1
	}
	return f, nil
}

// op is a helper: the closure the decoder builds for one guest instruction that is not
// lowered to IR ops, called from translated code. It returns false when the block must
// end after it (taken branch, exception, state change); it has then set PC.
type op = func(c *CPU) bool

// Engine is the translator state the vCPUs of one guest share (tcg.Engine): block
// cache, TLB-shootdown domain, clock epoch. A board creates one per guest with
// NewEngine, passes it in every vCPU's Config and closes it after the vCPUs.
type Engine = tcg.Engine[CPU]

// NewEngine returns the engine of a guest whose RAM is ram.
func NewEngine(ram *memory.RAM) *Engine { return tcg.NewEngine[CPU](ram) }

type tb = tcg.Block[CPU]

// Engines of vCPUs created without Config.Engine, one per guest RAM, dropped when the
// last of their vCPUs is closed. This keeps boards that predate Config.Engine working.
var (
	systemsMu sync.Mutex
	systems   = map[*memory.RAM]*Engine{}
)

// Exit-request bits of the target (tcg.VCPU.Request), checked once per block; the run
// loop owns stop and TLB-shootdown requests.
const (
	reqIRQ   = tcg.ExitTarget << iota // interrupt lines or masks changed
	reqTimer                          // a timer deadline passed
	reqPower                          // power state changed
	reqPMU                            // a PMU counter may have overflowed
)

// CPU is one AArch64 vCPU.
type CPU struct {
	State
	cfg Config
	eng *Engine
	// ownEng: eng comes from the per-RAM registry (systems), not from Config.
	ownEng bool

	el    uint64  // current exception level, 0 or 1
	spsel uint64  // PSTATE.SP
	daif  uint64  // PSTATE.DAIF in SPSR bit positions
	pss   uint64  // PSTATE.SS (software step), 0 or 1
	pan   uint64  // PSTATE.PAN, 0 or 1 (pan.go)
	uao   uint64  // PSTATE.UAO, 0 or 1 (pan.go)
	midx  uint64  // MMU index of data accesses: el, or mmuEL1PAN
	uidx  uint64  // MMU index of unprivileged accesses (LDTR/STTR)
	sp    *uint64 // &SP_EL0 or &SP_EL1 as selected by el/spsel
	flags uint64  // translation flags of the current mode (see tbFlags)

	model *Model // cfg.Model or DefaultModel
	lse   bool   // model has the LSE atomics (lse.go)
	rcpc  bool   // model has LDAPR
	// rndrOn: model has RNDR/RNDRRS (MRS sets NZCV).
	rndrOn bool
	isa    isaFeat // FP/AdvSIMD extensions the model has (isaext.go)
	// pacHints: the model has FEAT_PAuth, so the PAC hints are not NOPs (pauth.go)
	pacHints bool
	pacCache *pacCache // recent PACs (pauth.go)

	sr  sysRegs
	dbg debugRegs // debug.go
	pmu pmu       // pmu.go
	// excCount counts exceptions taken (a stepped instruction's wrapper sees whether
	// the instruction raised one).
	excCount uint64

	tlb   [3]tcg.TLB           // per MMU index: 0 = EL0 permissions, 1 = EL1, 2 = EL1 with PAN
	mmu   *tcg.TLB             // &tlb[midx]
	utlb  *tcg.TLB             // &tlb[uidx]: unprivileged accesses (LDTR/STTR) in IR
	temps [tcg.MaxTemps]uint64 // IR scratch temporaries
	// access is this vCPU's bus.Access for MMIO (banked devices select by it).
	access bus.Access
	fence  atomic.Uint32
	excl   monitor
	timers [2]genTimer

	irq, fiq atomic.Bool
	on       atomic.Bool
	startMu  sync.Mutex
	startPC  uint64
	startX0  uint64
	starting bool

	trace io.Writer
	tflag TraceFlags

	// v is the tcg run loop's state: exit requests, jump cache and table, chaining,
	// TLB shootdowns (the hooks it calls are cpuOps).
	v tcg.VCPU[CPU]
}

// cpuOps are the hooks the tcg run loop calls; cpuOpsTraced adds -d exec.
var cpuOps, cpuOpsTraced = tcg.CPUOps[CPU]{
	Fetch:         (*CPU).fetch,
	Translate:     (*CPU).translateBlock,
	HandleExit:    (*CPU).handleExit,
	ExecInterrupt: (*CPU).checkInterrupts,
}, tcg.CPUOps[CPU]{
	Fetch:         (*CPU).fetch,
	Translate:     (*CPU).translateBlock,
	HandleExit:    (*CPU).handleExit,
	ExecInterrupt: (*CPU).checkInterrupts,
	TraceExec: func(c *CPU, t *tb) {
		fmt.Fprintf(c.trace, "cpu%d Trace %#x [%016x] EL%d\n", c.cfg.ID, c.PC, t.Phys, c.el)
	},
}

// New creates a powered-off vCPU. Reset (boot CPU) or Start (PSCI CPU_ON) powers it on.
func New(cfg Config) *CPU {
	c := &CPU{cfg: cfg, trace: cfg.Trace, tflag: cfg.TraceFlags, access: bus.CPUAccess(cfg.ID)}
	c.model = cfg.Model
	if c.model == nil {
		c.model = DefaultModel
	}
	c.lse, c.rcpc, c.rndrOn = c.model.hasLSE(), c.model.hasRCpc(), c.model.hasRNDR()
	c.isa = c.model.isaFeatures()
	c.pacHints = c.model.hasPAuth()
	c.pacCache = new(pacCache)
	if c.trace == nil {
		c.tflag = 0
	}
	ops := &cpuOps
	if c.tflag&TraceExec != 0 {
		ops = &cpuOpsTraced
	}
	init := func(eng *Engine) {
		c.eng = eng
		c.v.Init(eng, c, ops, &c.PC, &c.flags, &c.mmu, &c.tlb[0], &c.tlb[1], &c.tlb[2])
	}
	if cfg.Engine != nil {
		init(cfg.Engine)
	} else {
		systemsMu.Lock()
		eng := systems[cfg.RAM]
		if eng == nil {
			eng = NewEngine(cfg.RAM)
			systems[cfg.RAM] = eng
		}
		c.ownEng = true
		init(eng)
		systemsMu.Unlock()
	}
	c.resetState(0, 0)
	c.v.Request(reqPower) // Run starts by parking the powered-off vCPU
	return c
}

// Close releases the vCPU's host resources (its timers) and leaves its engine; when the
// last vCPU of an engine New created (no Config.Engine) is closed, the engine is
// closed too. The vCPU must not be running and must not be used afterwards.
func (c *CPU) Close() {
	for i := range c.timers {
		if c.timers[i].t != nil {
			c.timers[i].t.Stop()
		}
	}
	if c.pmu.t != nil {
		c.pmu.t.Stop()
	}
	if !c.ownEng {
		c.v.Close()
		return
	}
	systemsMu.Lock()
	defer systemsMu.Unlock()
	c.v.Close()
	if c.eng.VCPUs() == 0 && systems[c.cfg.RAM] == c.eng {
		delete(systems, c.cfg.RAM)
		c.eng.Close() // unregisters from the RAM's code-write notification
	}
}

// ID returns the vCPU's MPIDR Aff0.
func (c *CPU) ID() int { return c.cfg.ID }

// Reset puts the vCPU in its reset state at EL1h (SP_EL1 selected), MMU and caches off,
// DAIF masked, PC=pc, X0=x0, other registers zero, and powers it on.
func (c *CPU) Reset(pc, x0 uint64) {
	c.resetState(pc, x0)
	c.on.Store(true)
	c.v.Request(reqPower)
	c.kick()
}

func (c *CPU) resetState(pc, x0 uint64) {
	c.State = State{PC: pc}
	c.State.X[0] = x0
	c.el, c.spsel, c.daif, c.pss, c.pan, c.uao = 1, 1, pstateDAIF, 0, 0, 0
	c.sr = sysRegs{sctlr: sctlrRES1, oslsr: oslsrReset}
	c.dbg = debugRegs{}
	c.pmuReset()
	c.excl = monitor{}
	for i := range c.timers {
		if c.timers[i].t != nil {
			c.timers[i].t.Stop()
		}
		c.timers[i] = genTimer{}
	}
	c.modeChanged()
	c.flushTLB()
}

// X returns general-purpose register n (31 reads as zero).
func (c *CPU) X(n int) uint64 {
	if n < 0 || n >= 31 {
		return 0
	}
	return c.State.X[n]
}

// SetX sets general-purpose register n (writes to 31 are ignored).
func (c *CPU) SetX(n int, v uint64) {
	if n >= 0 && n < 31 {
		c.State.X[n] = v
	}
}

// ExceptionInfo returns ESR_EL1, FAR_EL1 and ELR_EL1, for HVC/SMC hooks and test
// harnesses that handle exceptions on the guest's behalf.
func (c *CPU) ExceptionInfo() (esr, far, elr uint64) { return c.sr.esr, c.sr.far, c.sr.elr }

// EL returns the current exception level.
func (c *CPU) EL() int { return int(c.el) }

// SetIRQ sets the level of the vCPU's IRQ input. Safe from any goroutine.
func (c *CPU) SetIRQ(level bool) {
	if c.irq.Swap(level) != level {
		c.v.Request(reqIRQ)
		c.kick()
	}
}

// SetFIQ sets the level of the vCPU's FIQ input. Safe from any goroutine.
func (c *CPU) SetFIQ(level bool) {
	if c.fiq.Swap(level) != level {
		c.v.Request(reqIRQ)
		c.kick()
	}
}

// kick wakes the vCPU if it sleeps in WFI or powered off.
func (c *CPU) kick() { c.v.Kick() }

// PowerOff powers the vCPU off (PSCI CPU_OFF, called from the HVC hook on the vCPU's own
// goroutine): Run stops executing it until Start.
func (c *CPU) PowerOff() {
	c.on.Store(false)
	c.v.Request(reqPower)
	c.kick()
}

// PoweredOn reports whether the vCPU is on (PSCI AFFINITY_INFO).
func (c *CPU) PoweredOn() bool {
	c.startMu.Lock()
	defer c.startMu.Unlock()
	return c.on.Load() || c.starting
}

// Start powers on an off vCPU at pc in EL1h with the MMU off and X0=contextID (PSCI
// CPU_ON). It may be called from any goroutine; it reports false if the vCPU was
// already on or starting.
func (c *CPU) Start(pc, contextID uint64) bool {
	c.startMu.Lock()
	defer c.startMu.Unlock()
	if c.on.Load() || c.starting {
		return false
	}
	c.starting, c.startPC, c.startX0 = true, pc, contextID
	c.v.Request(reqPower)
	c.kick()
	return true
}

// Run executes the vCPU until stop is closed, then returns nil. Guest errors never stop
// it: they become guest exceptions (UNDEFINED, aborts), as on hardware, so nothing ends
// Run early today; the error result is for host-side failures (a native backend's code
// arena, for instance). A powered-off vCPU waits in Run for Start. The loop itself is
// tcg's (tcg.VCPU.Run); the hooks it calls are fetch, translateBlock, handleExit and
// checkInterrupts.
func (c *CPU) Run(stop <-chan struct{}) error { return c.v.Run(stop) }

// handleExit is the run loop's HandleExit hook: a pending PSCI CPU_ON, timer deadlines
// and power changes. It reports whether the vCPU is on.
func (c *CPU) handleExit(req uint32) bool {
	c.startMu.Lock()
	if c.starting {
		c.starting = false
		c.resetState(c.startPC, c.startX0)
		c.on.Store(true)
	}
	c.startMu.Unlock()
	if req&(reqTimer|reqPower) != 0 {
		c.updateTimers()
	}
	if req&reqPMU != 0 {
		c.pmuSync(0)
		c.pmuUpdate()
	}
	return c.on.Load()
}

// checkInterrupts takes a pending unmasked FIQ or IRQ (the run loop's ExecInterrupt).
func (c *CPU) checkInterrupts() {
	if c.fiq.Load() && c.daif&pstateF == 0 {
		c.takeException(excFIQ, 0, 0, false, c.PC)
	} else if c.irq.Load() && c.daif&pstateI == 0 {
		c.takeException(excIRQ, 0, 0, false, c.PC)
	}
}

// wfi implements WFI: return at once if an interrupt is pending (even masked),
// otherwise sleep until something changes.
func (c *CPU) wfi() {
	if c.irq.Load() || c.fiq.Load() || c.v.ExitRequested() {
		return
	}
	c.v.Sleep()
}

// tbFlags returns the translation flags for the current mode: things that change what
// the same guest bytes mean once translated.
func (c *CPU) tbFlags() uint64 {
	f := c.el // flagEL1
	if c.fpEnabled() {
		f |= flagFP
	}
	if c.spsel != 0 {
		f |= flagSPSel
	}
	if c.pmu.counting {
		f |= flagPMU
	}
	return f | c.debugFlags()
}

// modeChanged recomputes derived state after a change of EL, SPSel or CPACR.
func (c *CPU) modeChanged() {
	if c.el == 0 || c.spsel == 0 {
		c.sp = &c.SP_EL0
	} else {
		c.sp = &c.SP_EL1
	}
	c.midx, c.uidx = c.mmuIndices()
	c.mmu, c.utlb = &c.tlb[c.midx], &c.tlb[c.uidx]
	c.flags = c.tbFlags()
}

// flushTLB drops this vCPU's softmmu TLBs. The jump cache survives: its hits are
// checked against the instruction TLB.
func (c *CPU) flushTLB() { c.v.FlushTLB() }

// broadcastTLBFlush flushes every vCPU's TLB (TLBI ... IS): this one at once, the others
// at their next block boundary.
func (c *CPU) broadcastTLBFlush() { c.v.BroadcastFlushTLB() }

// flushTLBPage drops the translations of the page holding va, on every vCPU when
// broadcast (TLBI VAE1IS and friends).
func (c *CPU) flushTLBPage(va uint64, broadcast bool) {
	if broadcast {
		c.v.BroadcastFlushTLBPage(va)
	} else {
		c.v.FlushTLBPage(va)
	}
}

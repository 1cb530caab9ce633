package arm

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

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

// Config describes one vCPU. vCPUs created with the same RAM share one translation
// cache, TLB-maintenance broadcast domain and clock.
type Config struct {
	ID      int         // MPIDR_EL1.Aff0
	RAM     *memory.RAM // guest RAM; physical accesses elsewhere go to MMIO
	MMIO    *bus.Bus
	SysRegs SysRegHandler // may be nil
	GICv3   bool          // advertise the GIC system-register interface (ID_AA64PFR0.GIC)
	// HVC is called for HVC #imm at EL1 (PSCI): it reads c.X(0..3) and sets X0. The
	// instruction's return address is already in c.PC. nil makes HVC UNDEFINED.
	HVC func(c *CPU)
	// SMC is the same for SMC; nil makes SMC UNDEFINED.
	SMC func(c *CPU)
	// TimerIRQ reports a level change of a generic-timer output: timer 0 is the EL1
	// physical timer (PPI 30), 1 the virtual timer (PPI 27), 2 the EL2 physical timer
	// (PPI 26, never raised: EL2 is not implemented). Called on the vCPU's goroutine.
	TimerIRQ func(cpu int, timer int, level bool)
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

// code is a compiled translation block.
type code = func(c *CPU)

type tb = tcg.TB[code]

// system is what the vCPUs of one guest share.
type system struct {
	cache *tcg.Cache[code]
	start time.Time
	// clockOff is the time the guest was paused (PauseClock), taken off the counter;
	// pausedAt is when the current pause began (zero when running).
	clockOff atomic.Int64
	frozen   atomic.Int64 // while paused: the counter's nanoseconds + 1; else 0
	clockMu  sync.Mutex
	pausedAt time.Time
	mu       sync.Mutex
	cpus     []*CPU
	pair     sync.Mutex // serialises 128-bit exclusive pair stores
}

var (
	systemsMu sync.Mutex
	systems   = map[*memory.RAM]*system{}
)

func systemFor(ram *memory.RAM) *system {
	systemsMu.Lock()
	defer systemsMu.Unlock()
	s := systems[ram]
	if s == nil {
		s = &system{cache: tcg.NewCache[code](ram), start: time.Now()}
		systems[ram] = s
	}
	return s
}

// Exit-request bits, checked once per block.
const (
	reqIRQ   = 1 << iota // interrupt lines or masks changed
	reqTimer             // a timer deadline passed
	reqTLB               // another vCPU broadcast a TLB invalidation
	reqStop              // Run's stop channel closed
	reqPower             // power state changed
)

// CPU is one AArch64 vCPU.
type CPU struct {
	State
	cfg Config
	sys *system

	el    uint64  // current exception level, 0 or 1
	spsel uint64  // PSTATE.SP
	daif  uint64  // PSTATE.DAIF in SPSR bit positions
	sp    *uint64 // &SP_EL0 or &SP_EL1 as selected by el/spsel
	flags uint64  // translation flags of the current mode (see tbFlags)

	sr sysRegs

	tlb    [2]tcg.TLB // per MMU index: 0 = EL0 permissions, 1 = EL1
	mmu    *tcg.TLB   // &tlb[el]
	utlb   *tcg.TLB   // &tlb[0]: unprivileged accesses (LDTR/STTR) in IR
	tlbGen uint64     // counts TLB flushes, so chained blocks know their mapping held
	jc     tcg.JumpCache[code]
	temps  [tcg.MaxTemps]uint64 // IR scratch temporaries
	// lastExit is the chainable exit the last native block left through (tcg
	// Target.LastExit), linked by Run to the block found next.
	lastExit *tcg.LinkRec
	// jumps is the jump table native blocks probe for computed and other-page exits
	// (tcg Target.Jumps); Run records every block it finds in it.
	jumps *tcg.JumpTable
	// access is this vCPU's bus.Access for MMIO (banked devices select by it).
	access bus.Access
	fence  atomic.Uint32
	excl   monitor
	tlbReq tlbRequests
	timers [2]genTimer

	exitReq  atomic.Uint32
	irq, fiq atomic.Bool
	wake     chan struct{}
	on       atomic.Bool
	startMu  sync.Mutex
	startPC  uint64
	startX0  uint64
	starting bool
	stopped  bool
	park     parking

	trace io.Writer
	tflag TraceFlags
}

// New creates a powered-off vCPU. Reset (boot CPU) or Start (PSCI CPU_ON) powers it on.
func New(cfg Config) *CPU {
	c := &CPU{cfg: cfg, sys: systemFor(cfg.RAM), wake: make(chan struct{}, 1), trace: cfg.Trace, tflag: cfg.TraceFlags,
		jumps: new(tcg.JumpTable), access: bus.CPUAccess(cfg.ID)}
	if c.trace == nil {
		c.tflag = 0
	}
	c.park.init()
	c.sys.mu.Lock()
	c.sys.cpus = append(c.sys.cpus, c)
	c.sys.mu.Unlock()
	c.resetState(0, 0)
	c.exitReq.Store(reqPower) // Run starts by parking the powered-off vCPU
	return c
}

// Close releases the vCPU's host resources (its timers) and its share of the
// translation cache; when the last vCPU of a guest is closed the cache is dropped. The
// vCPU must not be running and must not be used afterwards.
func (c *CPU) Close() {
	for i := range c.timers {
		if c.timers[i].t != nil {
			c.timers[i].t.Stop()
		}
	}
	c.sys.mu.Lock()
	for i, o := range c.sys.cpus {
		if o == c {
			c.sys.cpus = append(c.sys.cpus[:i], c.sys.cpus[i+1:]...)
			break
		}
	}
	empty := len(c.sys.cpus) == 0
	c.sys.mu.Unlock()
	if empty {
		systemsMu.Lock()
		if systems[c.cfg.RAM] == c.sys {
			delete(systems, c.cfg.RAM)
			c.sys.cache.Close() // unregisters from the RAM's code-write notification
		}
		systemsMu.Unlock()
	}
}

// ID returns the vCPU's MPIDR Aff0.
func (c *CPU) ID() int { return c.cfg.ID }

// Reset puts the vCPU in its reset state at EL1h (SP_EL1 selected), MMU and caches off,
// DAIF masked, PC=pc, X0=x0, other registers zero, and powers it on.
func (c *CPU) Reset(pc, x0 uint64) {
	c.resetState(pc, x0)
	c.on.Store(true)
	c.exitReq.Or(reqPower)
	c.kick()
}

func (c *CPU) resetState(pc, x0 uint64) {
	c.State = State{PC: pc}
	c.State.X[0] = x0
	c.el, c.spsel, c.daif = 1, 1, pstateDAIF
	c.sr = sysRegs{sctlr: sctlrRES1}
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
		c.exitReq.Or(reqIRQ)
		c.kick()
	}
}

// SetFIQ sets the level of the vCPU's FIQ input. Safe from any goroutine.
func (c *CPU) SetFIQ(level bool) {
	if c.fiq.Swap(level) != level {
		c.exitReq.Or(reqIRQ)
		c.kick()
	}
}

// kick wakes the vCPU if it sleeps in WFI or powered off.
func (c *CPU) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// PowerOff powers the vCPU off (PSCI CPU_OFF, called from the HVC hook on the vCPU's own
// goroutine): Run stops executing it until Start.
func (c *CPU) PowerOff() {
	c.on.Store(false)
	c.exitReq.Or(reqPower)
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
	c.exitReq.Or(reqPower)
	c.kick()
	return true
}

// Run executes the vCPU until stop is closed, then returns nil. Guest errors never stop
// it: they become guest exceptions (UNDEFINED, aborts), as on hardware, so nothing ends
// Run early today; the error result is for host-side failures (a native backend's code
// arena, for instance). A powered-off vCPU waits in Run for Start.
func (c *CPU) Run(stop <-chan struct{}) error {
	done := make(chan struct{})
	defer close(done)
	c.setRunning(true)
	defer c.setRunning(false)
	go func() {
		select {
		case <-stop:
			c.startMu.Lock()
			c.stopped = true
			c.startMu.Unlock()
			c.exitReq.Or(reqStop)
			c.kick()
			c.stopParked()
		case <-done:
		}
	}()
	var prevGen uint64
	var prev *tb // the block just executed, while its page mapping is known unchanged
	var link *tcg.LinkRec
	for {
		if c.exitReq.Load() != 0 {
			prev, link = nil, nil
			if stopped := c.service(); stopped {
				return nil
			}
			if !c.on.Load() {
				continue
			}
		}
		var t *tb
		if prev != nil && c.tlbGen == prevGen {
			t = prev.Next(c.PC, c.flags)
		}
		if t == nil {
			if t = c.lookupTB(); t == nil {
				if t = c.findTB(); t == nil {
					prev, link = nil, nil
					continue // the fetch raised an exception
				}
			}
			if h := t.JumpHdr(); h != nil && c.tflag&TraceExec == 0 {
				c.jumps.Set(t.PC, h)
			}
			if prev != nil && c.tlbGen == prevGen && t.Flags == prev.Flags {
				prev.Chain(t)
			}
		}
		if link != nil {
			// The previous block left through a chainable exit to this block: from
			// now on its code jumps straight here (tcg/link.go says why that is safe).
			c.sys.cache.Link(link, t)
		}
		prev, prevGen = t, c.tlbGen
		tracing := c.tflag&TraceExec != 0
		if tracing {
			fmt.Fprintf(c.trace, "cpu%d Trace %#x [%016x] EL%d\n", c.cfg.ID, c.PC, t.Phys, c.el)
		}
		c.lastExit = nil
		t.Code(c)
		switch link = c.lastExit; {
		case tracing:
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
func (c *CPU) service() bool {
	for {
		req := c.exitReq.Swap(0)
		c.startMu.Lock()
		stopped := c.stopped
		if c.starting {
			c.starting = false
			c.resetState(c.startPC, c.startX0)
			c.on.Store(true)
		}
		c.startMu.Unlock()
		if stopped {
			return true
		}
		if req&reqPark != 0 && c.parkNow() {
			return true
		}
		if req&reqTLB != 0 {
			c.applyTLBRequests()
		}
		if req&reqTimer != 0 || req&reqPower != 0 {
			c.updateTimers()
		}
		if !c.on.Load() {
			c.sleep()
			continue
		}
		c.checkInterrupts()
		return false
	}
}

// checkInterrupts takes a pending unmasked FIQ or IRQ.
func (c *CPU) checkInterrupts() {
	if c.fiq.Load() && c.daif&pstateF == 0 {
		c.takeException(excFIQ, 0, 0, false, c.PC)
	} else if c.irq.Load() && c.daif&pstateI == 0 {
		c.takeException(excIRQ, 0, 0, false, c.PC)
	}
}

// sleep blocks until kicked or a timer deadline passes (WFI, powered off).
func (c *CPU) sleep() {
	<-c.wake
}

// wfi implements WFI: return at once if an interrupt is pending (even masked),
// otherwise sleep until something changes.
func (c *CPU) wfi() {
	if c.irq.Load() || c.fiq.Load() || c.exitReq.Load() != 0 {
		return
	}
	c.sleep()
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
	return f
}

// modeChanged recomputes derived state after a change of EL, SPSel or CPACR.
func (c *CPU) modeChanged() {
	if c.el == 0 || c.spsel == 0 {
		c.sp = &c.SP_EL0
	} else {
		c.sp = &c.SP_EL1
	}
	c.mmu, c.utlb = &c.tlb[c.el], &c.tlb[0]
	c.flags = c.tbFlags()
}

// flushTLB drops this vCPU's softmmu TLBs. The jump cache survives: its hits are
// checked against the instruction TLB (see lookupTB).
func (c *CPU) flushTLB() {
	c.tlb[0].Flush()
	c.tlb[1].Flush()
	c.tlbGen++
}

// broadcastTLBFlush flushes every vCPU's TLB (TLBI ... IS): this one at once, the others
// at their next block boundary.
func (c *CPU) broadcastTLBFlush() {
	c.flushTLB()
	c.sys.mu.Lock()
	for _, o := range c.sys.cpus {
		if o != c {
			o.tlbReq.Lock()
			o.tlbReq.all = true
			o.tlbReq.Unlock()
			o.exitReq.Or(reqTLB)
		}
	}
	c.sys.mu.Unlock()
}

// maxPendingPages bounds the per-vCPU queue of by-VA invalidations from other vCPUs;
// beyond it the whole TLB is flushed.
const maxPendingPages = 64

// tlbRequests are invalidations other vCPUs asked for, applied at the next block
// boundary.
type tlbRequests struct {
	sync.Mutex
	all   bool
	pages []uint64
}

// flushTLBPage drops the translations of the page holding va, on every vCPU when
// broadcast (TLBI VAE1IS and friends).
func (c *CPU) flushTLBPage(va uint64, broadcast bool) {
	c.tlb[0].FlushPage(va)
	c.tlb[1].FlushPage(va)
	c.tlbGen++
	if !broadcast {
		return
	}
	c.sys.mu.Lock()
	for _, o := range c.sys.cpus {
		if o != c {
			o.tlbReq.Lock()
			if len(o.tlbReq.pages) < maxPendingPages {
				o.tlbReq.pages = append(o.tlbReq.pages, va)
			} else {
				o.tlbReq.all = true
			}
			o.tlbReq.Unlock()
			o.exitReq.Or(reqTLB)
		}
	}
	c.sys.mu.Unlock()
}

// applyTLBRequests performs the invalidations other vCPUs queued for this one.
func (c *CPU) applyTLBRequests() {
	c.tlbReq.Lock()
	all, pages := c.tlbReq.all, c.tlbReq.pages
	c.tlbReq.all, c.tlbReq.pages = false, c.tlbReq.pages[:0]
	if all {
		c.flushTLB()
	} else {
		for _, va := range pages {
			c.tlb[0].FlushPage(va)
			c.tlb[1].FlushPage(va)
		}
		c.tlbGen++
	}
	c.tlbReq.Unlock()
}

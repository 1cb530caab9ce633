// Package apic owns the x86 local APICs of a userspace PC chipset (what a TCG x86
// guest needs; under KVM the kernel emulates them): the xAPIC register page at
// 0xfee00000, banked per vCPU by bus.Access.CPU; interrupt acceptance (IRR, ISR, TMR),
// task and processor priority, EOI with the broadcast a level-triggered IOAPIC
// interrupt needs, inter-processor interrupts through the ICR (fixed, lowest priority,
// SMI, NMI, INIT, SIPI; physical and logical flat/cluster destinations; the self, all
// and all-but-self shorthands), the LVT (timer, thermal, performance, LINT0, LINT1,
// error), the APIC timer (one-shot, periodic and TSC-deadline on a timer.Clock), and
// message delivery for the IOAPIC and PCI MSI.
//
// The register behaviour follows QEMU's hw/intc/apic.c (version 0x50014, a timer
// counting at 1 GHz before the divider, APR reading 0), with the ESR latched on write
// as the SDM describes. x2APIC mode (entered through SetBase) exposes the registers as
// MSRs 0x800-0x8ff (ReadMSR, WriteMSR: the 64-bit ICR, SELF IPI, the derived logical
// id, 32-bit destinations) for the vCPU's RDMSR/WRMSR.
//
// Interface to the vCPU (QEMU's apic_get_interrupt and cpu_interrupt): the vCPU polls
// HighestPending at instruction boundaries and calls Acknowledge when it delivers an
// external interrupt; INIT, SIPI, NMI and SMI are latched as events (TakeEvents). The
// APIC calls the vCPU's kick function whenever any of these changes. It knows nothing
// of the CPU's internals, of accelerators or of boards (the board wires the 8259's
// INTR to LINT0 with SetLINT0 and gives the ExtINT source).
//
// A vCPU uses its APIC (System.CPU(i)) like this: SetKick(f) where f sets the
// vCPU's exit request and wakes it (non-blocking); at an exit request, TakeEvents:
// INIT → InitReset and wait for SIPI, SIPI → start at vector << 12 (CS = vector <<
// 8), NMI and SMI → deliver; at an instruction boundary with EFLAGS.IF=1,
// HighestPending() >= 0 → Acknowledge() gives the vector to deliver (-1: none any
// more); HLT wakes when HighestPending() >= 0 or an event is pending. MSRs:
// IA32_APIC_BASE (0x1b) → Base/SetBase, IA32_TSC_DEADLINE (0x6e0) →
// WriteTSCDeadline/TSCDeadline, 0x800-0x8ff → ReadMSR/WriteMSR; CR8 → TPR() >> 4 and
// SetTPR(v << 4). The xAPIC page is on the machine's MMIO bus and banked by the
// access's vCPU index, so the vCPU needs nothing else for it.
package apic

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"gemu/hw/bus"
	"gemu/hw/timer"
)

// Addresses and identification.
const (
	DefaultBase = 0xfee00000 // xAPIC register page (and the MSI window)
	PageSize    = 0x1000
	Version     = 0x50014 // version 0x14, 6 LVT entries (QEMU's value)
	// BaseEnable and BaseBSP are IA32_APIC_BASE's global-enable and BSP bits.
	BaseEnable = 1 << 11
	BaseX2APIC = 1 << 10
	BaseBSP    = 1 << 8
)

// Delivery modes (ICR, LVT, IOAPIC redirection entries and MSI data bits 10:8).
const (
	ModeFixed  = 0
	ModeLowest = 1
	ModeSMI    = 2
	ModeNMI    = 4
	ModeINIT   = 5
	ModeSIPI   = 6
	ModeExtINT = 7
)

// ICR destination shorthands (bits 19:18).
const (
	ShortNone = iota
	ShortSelf
	ShortAll
	ShortOthers
)

// Events latched for the vCPU (TakeEvents).
const (
	EventINIT = 1 << iota
	EventSIPI
	EventNMI
	EventSMI
)

// PendingExtINT is what HighestPending returns when the interrupt to take comes from
// the 8259 (LINT0 in ExtINT mode, or an ExtINT message): its vector is known only
// when Acknowledge asks the PIC.
const PendingExtINT = 256

// Register offsets in the xAPIC page.
const (
	RegID       = 0x20
	RegVersion  = 0x30
	RegTPR      = 0x80
	RegAPR      = 0x90
	RegPPR      = 0xa0
	RegEOI      = 0xb0
	RegLDR      = 0xd0
	RegDFR      = 0xe0
	RegSVR      = 0xf0
	RegISR      = 0x100
	RegTMR      = 0x180
	RegIRR      = 0x200
	RegESR      = 0x280
	RegICRLow   = 0x300
	RegICRHigh  = 0x310
	RegLVTTimer = 0x320
	RegLVTTherm = 0x330
	RegLVTPerf  = 0x340
	RegLINT0    = 0x350
	RegLINT1    = 0x360
	RegLVTError = 0x370
	RegInitial  = 0x380
	RegCurrent  = 0x390
	RegDivide   = 0x3e0
)

// LVT indexes.
const (
	lvtTimer = iota
	lvtTherm
	lvtPerf
	lvtLINT0
	lvtLINT1
	lvtError
	numLVT
)

const (
	lvtMasked    = 1 << 16
	lvtLevelTrig = 1 << 15
	lvtRemoteIRR = 1 << 14
	svrEnable    = 1 << 8

	timerOneShot  = 0
	timerPeriodic = 1
	timerDeadline = 2

	esrSendIllegal = 1 << 5
	esrRecvIllegal = 1 << 6
	esrIllegalReg  = 1 << 7
)

// Message is one interrupt message on the APIC bus: from the IOAPIC, a PCI MSI, or an
// IPI (Shorthand and the source are only meaningful for IPIs).
type Message struct {
	Dest      uint32 // physical APIC id (Broadcast: all) or logical destination
	Logical   bool
	Mode      uint8 // Mode*
	Vector    uint8
	Level     bool // assert (INIT level de-assert has it false)
	LevelTrig bool // level-triggered: the EOI is broadcast to the IOAPIC
	Shorthand uint8
}

// Broadcast is the destination of a message to every APIC (an 8-bit 0xff from the
// IOAPIC, an MSI or the xAPIC ICR; 0xffffffff in x2APIC mode).
const Broadcast = 0xffffffff

// Dest8 widens an 8-bit destination (IOAPIC entry, MSI address, xAPIC ICR).
func Dest8(d uint8) uint32 {
	if d == 0xff {
		return Broadcast
	}
	return uint32(d)
}

// ExtINTSource is the 8259 as the APIC sees it in ExtINT mode: Acknowledge runs the
// PIC's interrupt-acknowledge cycle and returns the vector.
type ExtINTSource interface {
	Acknowledge() uint8
}

// System is the set of local APICs of one machine: the banked xAPIC page (a
// bus.Device), message delivery between them and from the IOAPIC and MSI.
type System struct {
	apics []*APIC
	clock timer.Clock

	mu  sync.Mutex
	eoi func(vector uint8)
}

// New creates n local APICs with APIC ids 0..n-1; APIC 0 is the BSP.
func New(n int, clk timer.Clock) *System {
	s := &System{clock: clk}
	for i := 0; i < n; i++ {
		a := &APIC{sys: s, index: i, kick: func() {}}
		a.resetLocked(true)
		s.apics = append(s.apics, a)
	}
	return s
}

// NumCPUs returns the number of APICs.
func (s *System) NumCPUs() int { return len(s.apics) }

// CPU returns vCPU i's local APIC.
func (s *System) CPU(i int) *APIC { return s.apics[i] }

// SetEOIBroadcast sets the function told of the EOI of a level-triggered vector (the
// IOAPIC's EOI, clearing remote IRR). It is called with no APIC lock held.
func (s *System) SetEOIBroadcast(f func(vector uint8)) {
	s.mu.Lock()
	s.eoi = f
	s.mu.Unlock()
}

func (s *System) broadcastEOI(v uint8) {
	s.mu.Lock()
	f := s.eoi
	s.mu.Unlock()
	if f != nil {
		f(v)
	}
}

// Reset returns every APIC to its power-on state (machine reset).
func (s *System) Reset() {
	for _, a := range s.apics {
		a.mu.Lock()
		a.resetLocked(true)
		a.mu.Unlock()
	}
}

// Read reads the xAPIC page of the accessing vCPU. Accesses with no vCPU (DMA) read
// zeros: a device's write to this window is an MSI, which the board sends to
// SignalMSI instead.
func (s *System) Read(a bus.Access, off uint64, data []byte) {
	clear(data)
	if a.CPU < 0 || a.CPU >= len(s.apics) || len(data) != 4 || off&3 != 0 {
		return
	}
	c := s.apics[a.CPU]
	if c.X2APIC() {
		return // in x2APIC mode the registers are MSRs only
	}
	binary.LittleEndian.PutUint32(data, c.ReadReg(uint32(off&0xff0)))
}

// Write writes the xAPIC page of the accessing vCPU; an access with no vCPU is an MSI.
func (s *System) Write(a bus.Access, off uint64, data []byte) {
	if a.CPU < 0 || a.CPU >= len(s.apics) {
		if len(data) == 4 {
			s.SignalMSI(DefaultBase+off, binary.LittleEndian.Uint32(data))
		}
		return
	}
	if len(data) != 4 || off&3 != 0 || s.apics[a.CPU].X2APIC() {
		return
	}
	s.apics[a.CPU].WriteReg(uint32(off&0xff0), binary.LittleEndian.Uint32(data))
}

// MSIMessage decodes a PCI MSI address/data pair in the 0xfee00000 window.
func MSIMessage(addr uint64, data uint32) (Message, error) {
	if addr>>20 != 0xfee {
		return Message{}, fmt.Errorf("apic: MSI address %#x is outside the 0xfee00000 window", addr)
	}
	return Message{
		Dest:      Dest8(uint8(addr >> 12)),
		Logical:   addr&(1<<2) != 0,
		Mode:      uint8(data>>8) & 7,
		Vector:    uint8(data),
		Level:     true,
		LevelTrig: data&(1<<15) != 0,
	}, nil
}

// SignalMSI delivers a message-signalled interrupt: addr = 0xfee00000 | dest << 12
// (bit 2: logical destination), data = vector | mode << 8 | trigger << 15. It is
// hw/pci's MSISink under TCG and accel.MSI's implementation.
func (s *System) SignalMSI(addr uint64, data uint32) error {
	m, err := MSIMessage(addr, data)
	if err != nil {
		return err
	}
	s.Deliver(m)
	return nil
}

// SendMSI is SignalMSI without the error (hw/pci's MSISink): a message outside the
// window is dropped, as the chipset ignores it.
func (s *System) SendMSI(addr uint64, data uint32) { _ = s.SignalMSI(addr, data) }

// Deliver sends m to the APICs its destination names (m.Shorthand is ignored: there
// is no source APIC).
func (s *System) Deliver(m Message) {
	m.Shorthand = ShortNone
	s.deliverFrom(nil, m)
}

func (s *System) deliverFrom(src *APIC, m Message) {
	var targets []*APIC
	switch m.Shorthand {
	case ShortSelf:
		targets = []*APIC{src}
	case ShortAll:
		targets = s.apics
	case ShortOthers:
		for _, a := range s.apics {
			if a != src {
				targets = append(targets, a)
			}
		}
	default:
		for _, a := range s.apics {
			if a.matches(m.Dest, m.Logical) {
				targets = append(targets, a)
			}
		}
	}
	if len(targets) == 0 {
		return
	}
	if m.Mode == ModeLowest {
		// Lowest priority: the target with the lowest task priority (QEMU arbitrates
		// the same way; ties go to the lowest APIC id).
		best := targets[0]
		bt := best.TPR()
		for _, a := range targets[1:] {
			if t := a.TPR(); t < bt {
				best, bt = a, t
			}
		}
		targets = []*APIC{best}
	}
	for _, a := range targets {
		a.accept(m)
	}
}

// APIC is one vCPU's local APIC.
type APIC struct {
	sys   *System
	index int

	mu     sync.Mutex
	kick   func()
	ext    ExtINTSource
	base   uint64
	x2     bool // x2APIC mode (IA32_APIC_BASE bit 10)
	id     uint8
	tpr    uint32
	ldr    uint32
	dfr    uint32
	svr    uint32
	isr    [8]uint32
	tmr    [8]uint32
	irr    [8]uint32
	esr    uint32 // latched (readable) errors
	errAcc uint32 // errors since the last ESR write
	icr    [2]uint32
	lvt    [numLVT]uint32

	lint0, lint1 bool // input levels
	extMsg       bool // an ExtINT message is pending
	events       uint32
	sipi         uint8

	// Timer: the count runs from initial at loadTime, one tick per 1 << shift ns.
	initial  uint32
	divide   uint32
	shift    uint
	loadTime time.Duration
	deadline uint64 // IA32_TSC_DEADLINE as last written
	// deadlineAt is the clock time the armed TSC deadline fires (for save/restore).
	deadlineAt time.Duration
	tmrGen     uint64
	tmrStop    timer.Stopper
}

// SetKick sets the function the APIC calls (from any goroutine, possibly with APIC
// locks held: it must not call back into the APIC) when HighestPending or the events
// may have changed; the vCPU sets an exit request and wakes itself.
func (a *APIC) SetKick(f func()) {
	a.mu.Lock()
	a.kick = f
	a.mu.Unlock()
}

// SetExtINT sets the 8259 that ExtINT interrupts are acknowledged from.
func (a *APIC) SetExtINT(src ExtINTSource) {
	a.mu.Lock()
	a.ext = src
	a.mu.Unlock()
}

func (a *APIC) resetLocked(power bool) {
	a.stopTimerLocked()
	if power {
		a.base = DefaultBase | BaseEnable
		if a.index == 0 {
			a.base |= BaseBSP
		}
		a.id = uint8(a.index)
		a.events, a.lint0, a.lint1 = 0, false, false
	}
	a.tpr, a.ldr, a.dfr, a.svr = 0, 0, 0xffffffff, 0xff
	a.isr, a.tmr, a.irr = [8]uint32{}, [8]uint32{}, [8]uint32{}
	a.esr, a.errAcc, a.icr = 0, 0, [2]uint32{}
	for i := range a.lvt {
		a.lvt[i] = lvtMasked
	}
	a.initial, a.divide, a.shift, a.deadline, a.extMsg = 0, 0, 1, 0, false
}

// InitReset is the APIC side of INIT: the vCPU calls it when it processes an INIT
// event. Everything but the APIC id, the base MSR and pending events returns to its
// power-on value.
func (a *APIC) InitReset() {
	a.mu.Lock()
	a.resetLocked(false)
	a.mu.Unlock()
}

// ID returns the APIC id.
func (a *APIC) ID() uint8 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.id
}

// Base returns IA32_APIC_BASE.
func (a *APIC) Base() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.base
}

// SetBase writes IA32_APIC_BASE (the vCPU's WRMSR 0x1b); an error means #GP.
// Relocating the page is refused; x2APIC mode (bit 10) may be entered from an enabled
// xAPIC and left only by disabling the APIC (SDM 10.12.5); disabling resets it.
func (a *APIC) SetBase(v uint64) error {
	en, x2 := v&BaseEnable != 0, v&BaseX2APIC != 0
	if v&0xfffff000 != DefaultBase {
		return fmt.Errorf("apic: relocating the APIC page to %#x is not supported", v&0xfffff000)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case x2 && !en:
		return fmt.Errorf("apic: x2APIC mode without the global enable")
	case a.x2 && en && !x2:
		return fmt.Errorf("apic: leaving x2APIC mode without disabling the APIC first")
	}
	a.base = (a.base & BaseBSP) | (v & (0xfffff000 | BaseEnable | BaseX2APIC))
	a.x2 = x2
	if !en {
		a.resetLocked(false)
	}
	a.kick()
	return nil
}

// X2APIC reports whether the APIC is in x2APIC mode (its registers are then MSRs
// 0x800-0x8ff, and the xAPIC page reads zeros).
func (a *APIC) X2APIC() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.x2
}

// x2APIC MSRs that are not plain xAPIC registers.
const (
	MSRBase    = 0x800
	msrSelfIPI = 0x83f
)

// ReadMSR is RDMSR of an x2APIC register (0x800 + xAPIC offset >> 4); ok=false means
// #GP (not in x2APIC mode, a write-only or missing register).
func (a *APIC) ReadMSR(msr uint32) (v uint64, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.x2 || msr < MSRBase || msr > MSRBase+0xff {
		return 0, false
	}
	off := (msr - MSRBase) << 4
	switch {
	case off == RegID:
		return uint64(a.index), true
	case off == RegLDR:
		return uint64(a.x2LDR()), true
	case off == RegICRLow:
		return uint64(a.icr[0]&^(1<<12)) | uint64(a.icr[1])<<32, true
	case off == RegVersion, off == RegTPR, off == RegPPR, off == RegSVR,
		off >= RegISR && off < RegIRR+0x80, off == RegESR,
		off >= RegLVTTimer && off <= RegLVTError, off == RegInitial, off == RegCurrent, off == RegDivide:
		return uint64(a.readLocked(off)), true
	}
	return 0, false // APR, EOI, DFR, ICR high, self IPI, reserved
}

// WriteMSR is WRMSR of an x2APIC register; false means #GP (not in x2APIC mode, a
// read-only or missing register, reserved bits set).
func (a *APIC) WriteMSR(msr uint32, v uint64) bool {
	a.mu.Lock()
	if !a.x2 || msr < MSRBase || msr > MSRBase+0xff {
		a.mu.Unlock()
		return false
	}
	off := (msr - MSRBase) << 4
	switch {
	case off == RegICRLow:
		a.icr[0], a.icr[1] = uint32(v)&^(1<<12), uint32(v>>32)
		msg, ok := a.icrMessageLocked(uint32(v), uint32(v>>32))
		a.mu.Unlock()
		if ok {
			a.sys.deliverFrom(a, msg)
		}
		return true
	case msr == msrSelfIPI:
		a.mu.Unlock()
		if v>>8 != 0 {
			return false
		}
		a.sys.deliverFrom(a, Message{Mode: ModeFixed, Vector: uint8(v), Level: true, Shorthand: ShortSelf})
		return true
	case (off == RegEOI || off == RegESR) && v != 0:
	case off == RegEOI, off == RegESR, off == RegTPR, off == RegSVR,
		off >= RegLVTTimer && off <= RegLVTError, off == RegInitial, off == RegDivide:
		if v>>32 == 0 {
			a.writeRegLocked(off, uint32(v)) // unlocks
			return true
		}
	}
	a.mu.Unlock()
	return false
}

// TPR returns the task priority register (CR8 is TPR >> 4).
func (a *APIC) TPR() uint8 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return uint8(a.tpr)
}

// SetTPR writes the task priority (a MOV to CR8 writes v << 4).
func (a *APIC) SetTPR(v uint8) {
	a.mu.Lock()
	a.tpr = uint32(v)
	a.kick()
	a.mu.Unlock()
}

func (a *APIC) enabledLocked() bool { return a.base&BaseEnable != 0 }
func (a *APIC) swEnabledLocked() bool {
	return a.enabledLocked() && a.svr&svrEnable != 0
}

func highest(v *[8]uint32) int {
	for i := 7; i >= 0; i-- {
		if w := v[i]; w != 0 {
			b := 31
			for w&(1<<uint(b)) == 0 {
				b--
			}
			return i*32 + b
		}
	}
	return -1
}

func setBit(v *[8]uint32, n uint8)       { v[n>>5] |= 1 << (n & 31) }
func clearBit(v *[8]uint32, n uint8)     { v[n>>5] &^= 1 << (n & 31) }
func testBit(v *[8]uint32, n uint8) bool { return v[n>>5]&(1<<(n&31)) != 0 }

func (a *APIC) pprLocked() uint32 {
	isrv := highest(&a.isr)
	if isrv < 0 {
		isrv = 0
	}
	if a.tpr>>4 >= uint32(isrv)>>4 {
		return a.tpr & 0xff
	}
	return uint32(isrv) & 0xf0
}

func (a *APIC) extINTLocked() bool {
	if a.ext == nil {
		return false
	}
	if a.extMsg {
		return true
	}
	if !a.lint0 {
		return false
	}
	if !a.enabledLocked() {
		return true // APIC off: the PIC's INTR goes straight to the CPU
	}
	l := a.lvt[lvtLINT0]
	return l&lvtMasked == 0 && (l>>8)&7 == ModeExtINT
}

// fixedLocked returns the highest IRR vector above the processor priority, or -1.
func (a *APIC) fixedLocked() int {
	if !a.swEnabledLocked() {
		return -1
	}
	v := highest(&a.irr)
	if v < 0 {
		return -1
	}
	if ppr := a.pprLocked(); ppr != 0 && uint32(v)&0xf0 <= ppr&0xf0 {
		return -1
	}
	return v
}

// HighestPending returns the vector of the interrupt the vCPU takes when it next
// accepts external interrupts (EFLAGS.IF=1 at an instruction boundary): a fixed
// vector in the IRR above the processor priority, else PendingExtINT for an 8259
// interrupt, else -1. NMI, SMI, INIT and SIPI are events, not reported here.
func (a *APIC) HighestPending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if v := a.fixedLocked(); v >= 0 {
		return v
	}
	if a.extINTLocked() {
		return PendingExtINT
	}
	return -1
}

// Acknowledge is the interrupt-acknowledge cycle (QEMU's apic_get_interrupt): the
// highest pending fixed vector moves from IRR to ISR and is returned; else an ExtINT
// is acknowledged at the 8259 and its vector returned; else, if the APIC has requests
// masked by priority, the spurious vector. -1: nothing to deliver.
func (a *APIC) Acknowledge() int {
	a.mu.Lock()
	if v := a.fixedLocked(); v >= 0 {
		clearBit(&a.irr, uint8(v))
		setBit(&a.isr, uint8(v))
		a.mu.Unlock()
		return v
	}
	if a.extINTLocked() {
		a.extMsg = false
		ext := a.ext
		a.mu.Unlock()
		return int(ext.Acknowledge())
	}
	defer a.mu.Unlock()
	if a.swEnabledLocked() && highest(&a.irr) >= 0 {
		return int(a.svr & 0xff)
	}
	return -1
}

// TakeEvents returns and clears the latched INIT, SIPI, NMI and SMI events, with the
// vector of the last SIPI.
func (a *APIC) TakeEvents() (events uint32, sipiVector uint8) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ev := a.events
	a.events = 0
	return ev, a.sipi
}

// SetLINT0 drives the LINT0 input (the PC wires the 8259 master's INTR to it).
func (a *APIC) SetLINT0(level bool) { a.setLINT(lvtLINT0, level) }

// SetLINT1 drives the LINT1 input (NMI on the PC).
func (a *APIC) SetLINT1(level bool) { a.setLINT(lvtLINT1, level) }

func (a *APIC) setLINT(n int, level bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := &a.lint0
	if n == lvtLINT1 {
		p = &a.lint1
	}
	old := *p
	*p = level
	l := a.lvt[n]
	mode := (l >> 8) & 7
	if mode == ModeExtINT {
		a.kick()
		return
	}
	if level && !old {
		a.localDeliverLocked(n)
	} else if !level && mode == ModeFixed && l&lvtLevelTrig != 0 {
		clearBit(&a.irr, uint8(l))
		a.kick()
	}
}

// localDeliverLocked raises LVT entry n's interrupt (QEMU's apic_local_deliver).
func (a *APIC) localDeliverLocked(n int) {
	l := a.lvt[n]
	if l&lvtMasked != 0 || !a.enabledLocked() {
		return
	}
	switch (l >> 8) & 7 {
	case ModeFixed:
		trig := n == lvtLINT0 || n == lvtLINT1
		a.setIRRLocked(uint8(l), trig && l&lvtLevelTrig != 0)
	case ModeSMI:
		a.events |= EventSMI
		a.kick()
	case ModeNMI:
		a.events |= EventNMI
		a.kick()
	case ModeINIT:
		a.events |= EventINIT
		a.kick()
	case ModeExtINT:
		a.kick()
	}
}

func (a *APIC) setIRRLocked(v uint8, level bool) {
	if v < 16 {
		a.errorLocked(esrRecvIllegal)
		return
	}
	setBit(&a.irr, v)
	if level {
		setBit(&a.tmr, v)
	} else {
		clearBit(&a.tmr, v)
	}
	a.kick()
}

func (a *APIC) errorLocked(bits uint32) {
	first := a.errAcc&bits != bits
	a.errAcc |= bits
	if first {
		a.localDeliverLocked(lvtError)
	}
}

func (a *APIC) matches(dest uint32, logical bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.enabledLocked() {
		return false
	}
	if a.x2 {
		if dest == Broadcast {
			return true
		}
		if !logical {
			return dest == uint32(a.index)
		}
		ldr := a.x2LDR()
		return dest>>16 == ldr>>16 && dest&ldr&0xffff != 0
	}
	if !logical {
		return dest == Broadcast || dest == uint32(a.id)
	}
	// xAPIC logical: an 8-bit destination (0xff matches every APIC whose logical id
	// has a bit in it, not those left at LDR 0).
	d := uint8(dest)
	ldr := uint8(a.ldr >> 24)
	if a.dfr>>28 == 0xf { // flat
		return d&ldr != 0
	}
	// cluster: high nibble the cluster (0xf: all), low nibble a member bitmap
	return (d>>4 == 0xf || d>>4 == ldr>>4) && d&ldr&0xf != 0
}

// x2LDR is the x2APIC logical id, derived from the x2APIC id: cluster id << 16 | one
// bit of 16 (SDM 10.12.10.2).
func (a *APIC) x2LDR() uint32 {
	id := uint32(a.index)
	return (id>>4)<<16 | 1<<(id&0xf)
}

func (a *APIC) accept(m Message) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch m.Mode {
	case ModeFixed, ModeLowest:
		a.setIRRLocked(m.Vector, m.LevelTrig)
	case ModeSMI:
		a.events |= EventSMI
	case ModeNMI:
		a.events |= EventNMI
	case ModeINIT:
		if !m.Level && m.LevelTrig {
			return // INIT level de-assert: arbitration ids only
		}
		a.events |= EventINIT
	case ModeSIPI:
		a.events |= EventSIPI
		a.sipi = m.Vector
	case ModeExtINT:
		a.extMsg = true
	default:
		return
	}
	a.kick()
}

func (a *APIC) eoiLocked() (broadcast int) {
	v := highest(&a.isr)
	if v < 0 {
		return -1
	}
	clearBit(&a.isr, uint8(v))
	a.kick()
	if testBit(&a.tmr, uint8(v)) {
		return v
	}
	return -1
}

// ReadReg reads the 32-bit register at offset off of the xAPIC page.
func (a *APIC) ReadReg(off uint32) uint32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.readLocked(off)
}

func (a *APIC) readLocked(off uint32) uint32 {
	switch {
	case off == RegID:
		return uint32(a.id) << 24
	case off == RegVersion:
		return Version
	case off == RegTPR:
		return a.tpr
	case off == RegAPR:
		return 0
	case off == RegPPR:
		return a.pprLocked()
	case off == RegEOI:
		return 0
	case off == RegLDR:
		return a.ldr
	case off == RegDFR:
		return a.dfr
	case off == RegSVR:
		return a.svr
	case off >= RegISR && off < RegISR+0x80:
		return a.isr[(off-RegISR)>>4]
	case off >= RegTMR && off < RegTMR+0x80:
		return a.tmr[(off-RegTMR)>>4]
	case off >= RegIRR && off < RegIRR+0x80:
		return a.irr[(off-RegIRR)>>4]
	case off == RegESR:
		return a.esr
	case off == RegICRLow:
		return a.icr[0] &^ (1 << 12) // delivery is instantaneous: never "send pending"
	case off == RegICRHigh:
		return a.icr[1]
	case off >= RegLVTTimer && off <= RegLVTError:
		return a.lvt[(off-RegLVTTimer)>>4]
	case off == RegInitial:
		return a.initial
	case off == RegCurrent:
		return a.currentLocked()
	case off == RegDivide:
		return a.divide
	}
	a.errorLocked(esrIllegalReg)
	return 0
}

var lvtWritable = [numLVT]uint32{
	lvtTimer: 0x700ff, // mode 18:17, mask, vector
	lvtTherm: 0x10000 | 0x7ff,
	lvtPerf:  0x10000 | 0x7ff,
	lvtLINT0: 0x1a7ff, // mask, trigger, polarity, mode, vector
	lvtLINT1: 0x1a7ff,
	lvtError: 0x100ff,
}

// WriteReg writes the 32-bit register at offset off of the xAPIC page.
func (a *APIC) WriteReg(off uint32, v uint32) {
	a.mu.Lock()
	a.writeRegLocked(off, v)
}

// icrMessageLocked builds the IPI an ICR write (low word lo, destination dest) sends;
// ok=false for an illegal vector (the send error is recorded).
func (a *APIC) icrMessageLocked(lo, dest uint32) (Message, bool) {
	msg := Message{
		Dest:      dest,
		Logical:   lo&(1<<11) != 0,
		Mode:      uint8(lo>>8) & 7,
		Vector:    uint8(lo),
		Level:     lo&(1<<14) != 0,
		LevelTrig: lo&(1<<15) != 0,
		Shorthand: uint8(lo>>18) & 3,
	}
	if (msg.Mode == ModeFixed || msg.Mode == ModeLowest) && msg.Vector < 16 {
		a.errorLocked(esrSendIllegal)
		return msg, false
	}
	if msg.Mode == ModeFixed || msg.Mode == ModeLowest || msg.Mode == ModeSIPI {
		msg.Level = true // the level bit only qualifies INIT
	}
	return msg, true
}

// writeRegLocked writes a register with a.mu held and releases it (the EOI broadcast
// and IPIs it causes run unlocked).
func (a *APIC) writeRegLocked(off uint32, v uint32) {
	var (
		ipi bool
		msg Message
		eoi = -1
	)
	switch {
	case off == RegID:
		a.id = uint8(v >> 24)
	case off == RegTPR:
		a.tpr = v & 0xff
		a.kick()
	case off == RegEOI:
		eoi = a.eoiLocked()
	case off == RegLDR:
		a.ldr = v & 0xff000000
	case off == RegDFR:
		a.dfr = v | 0x0fffffff
	case off == RegSVR:
		a.svr = v & 0x1ff // no directed EOI (version bit 24 clear): bit 12 reads 0, as QEMU and KVM
		if v&svrEnable == 0 {
			for i := range a.lvt {
				a.lvt[i] |= lvtMasked
			}
		}
		a.kick()
	case off == RegESR:
		a.esr, a.errAcc = a.errAcc, 0
	case off == RegICRLow:
		a.icr[0] = v &^ (1 << 12)
		msg, ipi = a.icrMessageLocked(v, Dest8(uint8(a.icr[1]>>24)))
	case off == RegICRHigh:
		a.icr[1] = v & 0xff000000
	case off >= RegLVTTimer && off <= RegLVTError:
		n := int(off-RegLVTTimer) >> 4
		keep := a.lvt[n] &^ lvtWritable[n]
		nv := keep | v&lvtWritable[n]
		if !a.swEnabledLocked() {
			nv |= lvtMasked
		}
		if n == lvtTimer && (nv>>17)&3 == 3 {
			nv &^= 3 << 17 // reserved mode: one-shot
		}
		old := a.lvt[n]
		a.lvt[n] = nv
		if n == lvtTimer && ((old>>17)&3 == timerDeadline) != ((nv>>17)&3 == timerDeadline) {
			// Entering or leaving TSC-deadline mode disarms the timer (SDM 10.5.4.1,
			// as KVM does); one-shot ⇄ periodic keeps the count running.
			a.initial, a.deadline = 0, 0
			a.stopTimerLocked()
		} else if n == lvtTimer {
			a.armTimerLocked()
		}
		if n == lvtLINT0 || n == lvtLINT1 {
			a.kick()
		}
	case off == RegInitial:
		if a.timerModeLocked() == timerDeadline {
			break
		}
		a.initial = v
		a.loadTime = a.sys.clock.Now()
		a.armTimer(true)
	case off == RegDivide:
		a.divide = v & 0xb
		d := (a.divide & 3) | ((a.divide >> 1) & 4)
		a.shift = uint((d + 1) & 7)
	case off == RegVersion, off == RegAPR, off == RegPPR, off == RegCurrent,
		off >= RegISR && off < RegIRR+0x80:
		// read-only
	default:
		a.errorLocked(esrIllegalReg)
	}
	a.mu.Unlock()
	if eoi >= 0 {
		a.sys.broadcastEOI(uint8(eoi))
	}
	if ipi {
		a.sys.deliverFrom(a, msg)
	}
}

func (a *APIC) timerModeLocked() uint32 { return (a.lvt[lvtTimer] >> 17) & 3 }

func (a *APIC) stopTimerLocked() {
	a.tmrGen++
	if a.tmrStop != nil {
		a.tmrStop.Stop()
		a.tmrStop = nil
	}
}

func (a *APIC) tickLen() time.Duration { return time.Duration(1) << a.shift }

func (a *APIC) currentLocked() uint32 {
	if a.initial == 0 || a.timerModeLocked() == timerDeadline {
		return 0
	}
	d := uint64((a.sys.clock.Now() - a.loadTime) >> a.shift)
	if a.timerModeLocked() == timerPeriodic {
		return a.initial - uint32(d%uint64(a.initial))
	}
	if d >= uint64(a.initial) {
		return 0
	}
	return a.initial - uint32(d)
}

// armTimerLocked arms the host callback for the next expiry in one-shot or periodic
// mode (the deadline mode arms from WriteTSCDeadline).
func (a *APIC) armTimerLocked() { a.armTimer(false) }

// armTimer is armTimerLocked; loaded says the initial count was just written. A
// one-shot whose count has run out without interrupting yet interrupts at once: right
// after the write (the host clock already reads past a count of a few ticks, which
// Linux programs) or when its callback, late on a busy host, had not run yet (a
// rewrite of the LVT must not lose it). One that has fired stays quiet.
func (a *APIC) armTimer(loaded bool) {
	due := loaded || a.tmrStop != nil
	a.stopTimerLocked()
	mode := a.timerModeLocked()
	if mode == timerDeadline || a.initial == 0 {
		return
	}
	now := a.sys.clock.Now()
	period := time.Duration(a.initial) << a.shift
	at := a.loadTime + period
	if mode == timerPeriodic && at <= now {
		k := (now - a.loadTime) / period
		at = a.loadTime + (k+1)*period
	} else if at <= now {
		if !due {
			return // one-shot already expired and delivered
		}
		at = now
	}
	if mode == timerPeriodic && at-now < timer.MinPeriod {
		at = now + timer.MinPeriod // coalesce a guest's too-short period, as KVM does
	}
	a.scheduleLocked(at - now)
}

func (a *APIC) scheduleLocked(d time.Duration) {
	g := a.tmrGen
	a.tmrStop = a.sys.clock.AfterFunc(d, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.tmrGen != g {
			return
		}
		a.tmrStop = nil
		a.localDeliverLocked(lvtTimer)
		switch a.timerModeLocked() {
		case timerPeriodic:
			a.armTimerLocked()
		case timerDeadline:
			a.deadline = 0
		}
	})
}

// WriteTSCDeadline is the vCPU's WRMSR to IA32_TSC_DEADLINE (0x6e0) in TSC-deadline
// mode: the timer interrupt fires when the TSC reaches deadline, given the TSC's value
// now and its rate. 0 disarms; a deadline already passed fires at once. Writes in
// other timer modes are remembered but arm nothing (SDM 10.5.4.1).
func (a *APIC) WriteTSCDeadline(deadline, tscNow, tscHz uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.deadline = deadline
	if a.timerModeLocked() != timerDeadline {
		return
	}
	a.stopTimerLocked()
	if deadline == 0 || tscHz == 0 {
		return
	}
	var d time.Duration
	if deadline > tscNow {
		delta := deadline - tscNow
		// ns = delta * 1e9 / hz without overflow for deltas up to centuries.
		d = time.Duration(delta/tscHz)*time.Second + time.Duration((delta%tscHz)*1e9/tscHz)
	}
	a.deadlineAt = a.sys.clock.Now() + d
	a.scheduleLocked(d)
}

// TSCDeadline is RDMSR IA32_TSC_DEADLINE: the armed deadline, 0 once it fired.
func (a *APIC) TSCDeadline() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.timerModeLocked() != timerDeadline {
		return 0
	}
	return a.deadline
}

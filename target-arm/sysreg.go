package arm

import (
	"time"
)

// sysRegs holds the EL1/EL0 system registers the CPU implements.
type sysRegs struct {
	sctlr, actlr, cpacr       uint64
	ttbr0, ttbr1, tcr         uint64
	mair, amair               uint64
	vbar, esr, far, elr, spsr uint64
	par, afsr0, afsr1         uint64
	contextidr                uint64
	tpidr0, tpidr1, tpidrro   uint64
	cntkctl                   uint64
	mdscr, oslsr, csselr      uint64
	mdccint                   uint64
	pacKeys                   [10]uint64 // APIAKeyLo_EL1 ... APGAKeyHi_EL1 (pauth.go)
}

// SCTLR_EL1 bits.
const (
	sctlrM    = 1 << 0
	sctlrA    = 1 << 1
	sctlrWXN  = 1 << 19
	sctlrDZE  = 1 << 14
	sctlrUCT  = 1 << 15
	sctlrUMA  = 1 << 9
	sctlrUCI  = 1 << 26
	sctlrNTWI = 1 << 16
	sctlrNTWE = 1 << 18
	sctlrRES1 = 0x30d00800 // RES1 bits of SCTLR_EL1 in ARMv8.0
)

// Identification values common to every model (cpumodels.go has the per-model ones).
const (
	dczidBS     = 4          // DC ZVA block: 2^4 words = 64 bytes
	idDFR0      = 0x10305106 // debug v8.0, 6 breakpoints (2 context-aware), 4 watchpoints, PMUv3 (debug.go, pmu.go)
	oslsrReset  = 0xa        // OSLSR_EL1 at reset: OS lock implemented (OSLM 0b10) and locked
	cntFreq     = 62500000
	cntNsPerTic = 16 // 62.5 MHz
)

// sysKey packs an MRS/MSR/SYS encoding.
func sysKey(op0, op1, crn, crm, op2 uint32) uint32 {
	return op0<<14 | op1<<11 | crn<<7 | crm<<3 | op2
}

const (
	kMIDR        = 3<<14 | 0<<11 | 0<<7 | 0<<3 | 0
	kMPIDR       = 3<<14 | 0<<11 | 0<<7 | 0<<3 | 5
	kREVIDR      = 3<<14 | 0<<11 | 0<<7 | 0<<3 | 6
	kPFR0        = 3<<14 | 0<<11 | 0<<7 | 4<<3 | 0
	kDFR0        = 3<<14 | 0<<11 | 0<<7 | 5<<3 | 0
	kISAR0       = 3<<14 | 0<<11 | 0<<7 | 6<<3 | 0
	kISAR1       = 3<<14 | 0<<11 | 0<<7 | 6<<3 | 1
	kMMFR0       = 3<<14 | 0<<11 | 0<<7 | 7<<3 | 0
	kSCTLR       = 3<<14 | 0<<11 | 1<<7 | 0<<3 | 0
	kACTLR       = 3<<14 | 0<<11 | 1<<7 | 0<<3 | 1
	kCPACR       = 3<<14 | 0<<11 | 1<<7 | 0<<3 | 2
	kTTBR0       = 3<<14 | 0<<11 | 2<<7 | 0<<3 | 0
	kTTBR1       = 3<<14 | 0<<11 | 2<<7 | 0<<3 | 1
	kTCR         = 3<<14 | 0<<11 | 2<<7 | 0<<3 | 2
	kSPSR        = 3<<14 | 0<<11 | 4<<7 | 0<<3 | 0
	kELR         = 3<<14 | 0<<11 | 4<<7 | 0<<3 | 1
	kSP_EL0      = 3<<14 | 0<<11 | 4<<7 | 1<<3 | 0
	kSPSel       = 3<<14 | 0<<11 | 4<<7 | 2<<3 | 0
	kCurrentEL   = 3<<14 | 0<<11 | 4<<7 | 2<<3 | 2
	kAFSR0       = 3<<14 | 0<<11 | 5<<7 | 1<<3 | 0
	kAFSR1       = 3<<14 | 0<<11 | 5<<7 | 1<<3 | 1
	kESR         = 3<<14 | 0<<11 | 5<<7 | 2<<3 | 0
	kFAR         = 3<<14 | 0<<11 | 6<<7 | 0<<3 | 0
	kPAR         = 3<<14 | 0<<11 | 7<<7 | 4<<3 | 0
	kMAIR        = 3<<14 | 0<<11 | 10<<7 | 2<<3 | 0
	kAMAIR       = 3<<14 | 0<<11 | 10<<7 | 3<<3 | 0
	kVBAR        = 3<<14 | 0<<11 | 12<<7 | 0<<3 | 0
	kRVBAR       = 3<<14 | 0<<11 | 12<<7 | 0<<3 | 1
	kISR         = 3<<14 | 0<<11 | 12<<7 | 1<<3 | 0
	kCONTEXTIDR  = 3<<14 | 0<<11 | 13<<7 | 0<<3 | 1
	kTPIDR_EL1   = 3<<14 | 0<<11 | 13<<7 | 0<<3 | 4
	kCNTKCTL     = 3<<14 | 0<<11 | 14<<7 | 1<<3 | 0
	kCCSIDR      = 3<<14 | 1<<11 | 0<<7 | 0<<3 | 0
	kCLIDR       = 3<<14 | 1<<11 | 0<<7 | 0<<3 | 1
	kAIDR        = 3<<14 | 1<<11 | 0<<7 | 0<<3 | 7
	kCSSELR      = 3<<14 | 2<<11 | 0<<7 | 0<<3 | 0
	kCTR         = 3<<14 | 3<<11 | 0<<7 | 0<<3 | 1
	kDCZID       = 3<<14 | 3<<11 | 0<<7 | 0<<3 | 7
	kNZCV        = 3<<14 | 3<<11 | 4<<7 | 2<<3 | 0
	kDAIF        = 3<<14 | 3<<11 | 4<<7 | 2<<3 | 1
	kFPCR        = 3<<14 | 3<<11 | 4<<7 | 4<<3 | 0
	kFPSR        = 3<<14 | 3<<11 | 4<<7 | 4<<3 | 1
	kTPIDR_EL0   = 3<<14 | 3<<11 | 13<<7 | 0<<3 | 2
	kTPIDRRO_EL0 = 3<<14 | 3<<11 | 13<<7 | 0<<3 | 3
	kCNTFRQ      = 3<<14 | 3<<11 | 14<<7 | 0<<3 | 0
	kCNTPCT      = 3<<14 | 3<<11 | 14<<7 | 0<<3 | 1
	kCNTVCT      = 3<<14 | 3<<11 | 14<<7 | 0<<3 | 2
	kCNTP_TVAL   = 3<<14 | 3<<11 | 14<<7 | 2<<3 | 0
	kCNTP_CTL    = 3<<14 | 3<<11 | 14<<7 | 2<<3 | 1
	kCNTP_CVAL   = 3<<14 | 3<<11 | 14<<7 | 2<<3 | 2
	kCNTV_TVAL   = 3<<14 | 3<<11 | 14<<7 | 3<<3 | 0
	kCNTV_CTL    = 3<<14 | 3<<11 | 14<<7 | 3<<3 | 1
	kCNTV_CVAL   = 3<<14 | 3<<11 | 14<<7 | 3<<3 | 2
	kRNDR        = 3<<14 | 3<<11 | 2<<7 | 4<<3 | 0
	kRNDRRS      = 3<<14 | 3<<11 | 2<<7 | 4<<3 | 1
	kMDSCR       = 2<<14 | 0<<11 | 0<<7 | 2<<3 | 2
	kMDCCINT     = 2<<14 | 0<<11 | 0<<7 | 2<<3 | 0
	kOSLAR       = 2<<14 | 0<<11 | 1<<7 | 0<<3 | 4
	kOSLSR       = 2<<14 | 0<<11 | 1<<7 | 1<<3 | 4
)

// EL0 access outcomes for system registers.
const (
	el0Allow = iota
	el0Trap  // disabled by an EL1 control: trap to EL1 with EC 0x18
	el0Undef // an EL1 register, or a write to a read-only one: UNDEFINED
)

// el0Access says what an MRS (read) or MSR at EL0 does. Registers without an EL0 form
// are UNDEFINED there (ARMv8.0 has no FEAT_IDST; Linux emulates ID-register reads from
// the undefined-instruction path); EL0 registers guarded by SCTLR_EL1 or CNTKCTL_EL1
// bits trap when disabled.
func (c *CPU) el0Access(k uint32, read bool) int {
	allowIf := func(ok bool) int {
		if ok {
			return el0Allow
		}
		return el0Trap
	}
	switch k {
	case kNZCV, kFPCR, kFPSR, kTPIDR_EL0:
		return el0Allow
	case kRNDR, kRNDRRS:
		if read && c.rndrOn {
			return el0Allow
		}
		return el0Undef
	case kDAIF:
		return allowIf(c.sr.sctlr&sctlrUMA != 0)
	case kTPIDRRO_EL0, kDCZID, kCNTFRQ, kCNTPCT, kCNTVCT, kCTR:
		if !read {
			return el0Undef
		}
		switch k {
		case kCTR:
			return allowIf(c.sr.sctlr&sctlrUCT != 0)
		case kCNTFRQ:
			return allowIf(c.sr.cntkctl&3 != 0)
		case kCNTVCT:
			return allowIf(c.sr.cntkctl&2 != 0)
		case kCNTPCT:
			return allowIf(c.sr.cntkctl&1 != 0)
		}
		return el0Allow
	case kCNTV_TVAL, kCNTV_CTL, kCNTV_CVAL:
		return allowIf(c.sr.cntkctl&(1<<8) != 0)
	case kCNTP_TVAL, kCNTP_CTL, kCNTP_CVAL:
		return allowIf(c.sr.cntkctl&(1<<9) != 0)
	}
	if pmuClass(k) != pmuNone {
		return c.pmuEL0Access(k, read)
	}
	return el0Undef
}

// counter returns the current CNTPCT/CNTVCT value.
func (c *CPU) counter() uint64 {
	return uint64(c.eng.GuestTime().Nanoseconds()) / cntNsPerTic
}

// readSys implements MRS. ok=false makes the instruction UNDEFINED.
func (c *CPU) readSys(op0, op1, crn, crm, op2 uint32) (uint64, bool) {
	k := sysKey(op0, op1, crn, crm, op2)
	switch k {
	case kMIDR:
		return c.model.MIDR, true
	case kMPIDR:
		return 1<<31 | uint64(c.cfg.ID&0xff) | uint64(c.cfg.ID>>8&0xff)<<8, true
	case kREVIDR, kAIDR:
		return 0, true
	case kPFR0:
		v := 0x11 | c.model.PFR0 // EL0 and EL1 AArch64 only; FP and AdvSIMD implemented (0)
		if c.cfg.GICv3 {
			v |= 1 << 24
		}
		return v, true
	case kDFR0:
		return idDFR0, true
	case kISAR0:
		return c.model.ISAR0, true
	case kISAR1:
		return c.model.ISAR1, true
	case kMMFR0:
		return c.model.mmfr0(), true
	case kSCTLR:
		return c.sr.sctlr, true
	case kACTLR:
		return c.sr.actlr, true
	case kCPACR:
		return c.sr.cpacr, true
	case kTTBR0:
		return c.sr.ttbr0, true
	case kTTBR1:
		return c.sr.ttbr1, true
	case kTCR:
		return c.sr.tcr, true
	case kSPSR:
		return c.sr.spsr, true
	case kELR:
		return c.sr.elr, true
	case kSP_EL0:
		return c.SP_EL0, true
	case kSPSel:
		return c.spsel, true
	case kCurrentEL:
		return c.el << 2, true
	case kAFSR0:
		return c.sr.afsr0, true
	case kAFSR1:
		return c.sr.afsr1, true
	case kESR:
		return c.sr.esr, true
	case kFAR:
		return c.sr.far, true
	case kPAR:
		return c.sr.par, true
	case kMAIR:
		return c.sr.mair, true
	case kAMAIR:
		return c.sr.amair, true
	case kVBAR:
		return c.sr.vbar, true
	case kRVBAR:
		return 0, true
	case kISR:
		var v uint64
		if c.irq.Load() {
			v |= 1 << 7
		}
		if c.fiq.Load() {
			v |= 1 << 6
		}
		return v, true
	case kCONTEXTIDR:
		return c.sr.contextidr, true
	case kTPIDR_EL1:
		return c.sr.tpidr1, true
	case kCNTKCTL:
		return c.sr.cntkctl, true
	case kCCSIDR:
		if c.sr.csselr&1 != 0 { // L1 I-cache
			return c.model.CCSIDR[1], true
		}
		if c.sr.csselr>>1 == 0 { // L1 D-cache
			return c.model.CCSIDR[0], true
		}
		return c.model.CCSIDR[2], true // L2
	case kCLIDR:
		return c.model.CLIDR, true
	case kCSSELR:
		return c.sr.csselr, true
	case kCTR:
		return c.model.CTR, true
	case kDCZID:
		v := uint64(dczidBS)
		if c.el == 0 && c.sr.sctlr&sctlrDZE == 0 {
			v |= 1 << 4
		}
		return v, true
	case kNZCV:
		return c.NZCV & 0xf0000000, true
	case kDAIF:
		return c.daif, true
	case kFPCR:
		return c.FPCR, true
	case kFPSR:
		return c.FPSR, true
	case kTPIDR_EL0:
		return c.sr.tpidr0, true
	case kTPIDRRO_EL0:
		return c.sr.tpidrro, true
	case kCNTFRQ:
		return cntFreq, true
	case kCNTPCT, kCNTVCT:
		return c.counter(), true
	case kCNTP_TVAL, kCNTV_TVAL:
		t := &c.timers[timerIndex(crm)]
		return uint64(uint32(t.cval - c.counter())), true
	case kCNTP_CTL, kCNTV_CTL:
		t := &c.timers[timerIndex(crm)]
		v := t.ctl & 3
		if c.counter() >= t.cval {
			v |= 4
			// The interrupt line follows the condition the guest just observed: raise
			// it now (taken at the next block boundary) rather than when the host timer
			// fires, so a guest that saw ISTATUS and unmasks IRQs takes the interrupt.
			if t.ctl&3 == 1 && !t.level {
				c.updateTimers()
			}
		}
		return v, true
	case kCNTP_CVAL, kCNTV_CVAL:
		return c.timers[timerIndex(crm)].cval, true
	case kMDSCR:
		return c.sr.mdscr, true
	case kOSLSR:
		return c.sr.oslsr, true
	case kMDCCINT:
		return c.sr.mdccint, true
	case kRNDR, kRNDRRS:
		if c.rndrOn {
			return c.rndr(), true
		}
	}
	if v, ok, mine := c.panReadSys(k); mine {
		return v, ok
	}
	if v, ok, mine := c.pacReadSys(k); mine {
		return v, ok
	}
	if op0 == 2 {
		if v, ok := c.debugRead(op1, crn, crm, op2); ok {
			return v, true
		}
	}
	if pmuClass(k) != pmuNone {
		return c.pmuRead(k)
	}
	switch {
	case op0 == 3 && op1 == 0 && crn == 0 && crm >= 1 && crm <= 7:
		return 0, true // other ID registers: reserved or AArch32-only, read as zero
	case op0 == 2:
		return 0, true // debug registers: RAZ/WI
	case op0 == 3 && op1 == 3 && crn == 9:
		return 0, true // other PMU encodings: RAZ/WI
	}
	if c.cfg.SysRegs != nil {
		return c.cfg.SysRegs.ReadSysReg(c.cfg.ID, op0, op1, crn, crm, op2)
	}
	return 0, false
}

// writeSys implements MSR (register). It returns ok=false for UNDEFINED, and end=true
// when the block must end because the CPU mode or translation regime changed.
func (c *CPU) writeSys(op0, op1, crn, crm, op2 uint32, v uint64) (ok, end bool) {
	k := sysKey(op0, op1, crn, crm, op2)
	switch k {
	case kSCTLR:
		c.sr.sctlr = v
		c.flushTLB()
		return true, true
	case kACTLR:
		c.sr.actlr = v
	case kCPACR:
		c.sr.cpacr = v & (3 << 20)
		c.modeChanged()
		return true, true
	case kTTBR0:
		c.sr.ttbr0 = v
		c.flushTLB()
		return true, true
	case kTTBR1:
		c.sr.ttbr1 = v
		c.flushTLB()
		return true, true
	case kTCR:
		c.sr.tcr = v
		c.flushTLB()
		return true, true
	case kSPSR:
		c.sr.spsr = v
	case kELR:
		c.sr.elr = v
	case kSP_EL0:
		c.SP_EL0 = v
	case kSPSel:
		c.spsel = v & 1
		c.modeChanged()
		return true, true
	case kAFSR0:
		c.sr.afsr0 = v
	case kAFSR1:
		c.sr.afsr1 = v
	case kESR:
		c.sr.esr = v
	case kFAR:
		c.sr.far = v
	case kPAR:
		c.sr.par = v
	case kMAIR:
		c.sr.mair = v
	case kAMAIR:
		c.sr.amair = v
	case kVBAR:
		c.sr.vbar = v &^ 0x7ff
	case kCONTEXTIDR:
		c.sr.contextidr = v & 0xffffffff
	case kTPIDR_EL1:
		c.sr.tpidr1 = v
	case kCNTKCTL:
		c.sr.cntkctl = v & 0x3ff
	case kCSSELR:
		c.sr.csselr = v & 0xf
	case kNZCV:
		c.NZCV = v & 0xf0000000
	case kDAIF:
		c.daif = v & pstateDAIF
		c.v.Request(reqIRQ)
		c.modeChanged() // PSTATE.D masks debug exceptions
		return true, true
	case kFPCR:
		c.FPCR = v & 0x07ff9f00
		if !c.model.hasFP16() {
			c.FPCR &^= fpcrFZ16 // RES0 without FEAT_FP16
		}
	case kFPSR:
		c.FPSR = v & 0xf800009f
	case kTPIDR_EL0:
		c.sr.tpidr0 = v
	case kTPIDRRO_EL0:
		c.sr.tpidrro = v
	case kCNTP_TVAL, kCNTV_TVAL:
		t := &c.timers[timerIndex(crm)]
		t.cval = c.counter() + uint64(int64(int32(v)))
		c.updateTimers()
	case kCNTP_CTL, kCNTV_CTL:
		c.timers[timerIndex(crm)].ctl = v & 3
		c.updateTimers()
	case kCNTP_CVAL, kCNTV_CVAL:
		c.timers[timerIndex(crm)].cval = v
		c.updateTimers()
	case kMDSCR:
		c.sr.mdscr = v
		c.modeChanged() // software step, breakpoints
	case kOSLAR:
		c.sr.oslsr = c.sr.oslsr&^2 | (v&1)<<1
		c.modeChanged()
	case kMDCCINT:
		c.sr.mdccint = v
	case kMIDR, kMPIDR, kREVIDR, kAIDR, kPFR0, kDFR0, kISAR0, kISAR1, kMMFR0, kCurrentEL, kISR,
		kCCSIDR, kCLIDR, kCTR, kDCZID, kCNTFRQ, kCNTPCT, kCNTVCT, kOSLSR, kRVBAR:
		return false, false // read-only
	default:
		if ok, end, mine := c.panWriteSys(k, v); mine {
			return ok, end
		}
		if ok, mine := c.pacWriteSys(k, v); mine {
			return ok, false
		}
		if op0 == 2 && c.debugWrite(op1, crn, crm, op2, v) {
			return true, false
		}
		if pmuClass(k) != pmuNone {
			return c.pmuWrite(k, v), false
		}
		switch {
		case op0 == 2:
			return true, false // other debug registers: RAZ/WI
		case op0 == 3 && op1 == 3 && crn == 9:
			return true, false // PMU: RAZ/WI
		case op0 == 3 && op1 == 0 && crn == 0:
			return false, false
		}
		if c.cfg.SysRegs != nil && c.cfg.SysRegs.WriteSysReg(c.cfg.ID, op0, op1, crn, crm, op2, v) {
			// The GIC CPU interface may have changed the IRQ line or priority mask.
			return true, true
		}
		return false, false
	}
	return true, false
}

func timerIndex(crm uint32) int {
	if crm == 3 {
		return 1 // virtual
	}
	return 0 // physical
}

// genTimer is one generic-timer channel.
type genTimer struct {
	ctl, cval uint64
	level     bool
	t         *time.Timer // host timer for the next deadline
}

// updateTimers recomputes both timer outputs, reports changes through Config.TimerIRQ
// and arms a host timer for the next deadline of an enabled, not yet fired channel.
func (c *CPU) updateTimers() {
	now := c.counter()
	for i := range c.timers {
		t := &c.timers[i]
		enabled := t.ctl&1 != 0
		fired := now >= t.cval
		level := enabled && fired && t.ctl&2 == 0
		if level != t.level {
			t.level = level
			if c.cfg.TimerIRQ != nil {
				c.cfg.TimerIRQ(c.cfg.ID, i, level)
			}
		}
		if t.t != nil {
			t.t.Stop()
		}
		if enabled && !fired {
			d := time.Hour
			if diff := t.cval - now; diff < uint64(time.Hour/cntNsPerTic) {
				d = time.Duration(diff) * cntNsPerTic
			}
			if t.t == nil {
				t.t = time.AfterFunc(d, func() {
					c.v.Request(reqTimer)
					c.kick()
				})
			} else {
				t.t.Reset(d)
			}
		}
	}
}

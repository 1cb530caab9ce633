package arm

import "math/bits"

// The self-hosted debug architecture as QEMU's Cortex-A57 shows it (ID_AA64DFR0_EL1:
// 6 breakpoints, the last 2 context-aware, 4 watchpoints): hardware breakpoints and
// watchpoints with BAS/MASK and linked context-ID breakpoints, software step
// (MDSCR_EL1.SS with PSTATE.SS), the OS lock and OS double lock. Debug exceptions go
// to EL1 (no EL2/EL3), enabled at EL0 always and at EL1 with MDSCR_EL1.KDE and
// PSTATE.D clear, none while the OS lock or double lock is set.
//
// The translator pays only while debugging: with an enabled breakpoint (and
// MDSCR_EL1.MDE) blocks are translated with flagBP and check each instruction's PC;
// with software step active, flagSS (and flagPSS for PSTATE.SS) make one-instruction
// blocks; watched pages get no fast-path TLB entries for data, so accesses reach the
// slow paths, which check the watchpoints.

const (
	numBRPs    = 6
	numCtxBRPs = 2
	numWRPs    = 4

	mdscrSS  = 1 << 0
	mdscrKDE = 1 << 13
	mdscrMDE = 1 << 15

	pstateSS = 1 << 21 // in SPSR

	ecBreakLow = 0x30
	ecStepLow  = 0x32
	ecWatchLow = 0x34
	fscDebug   = 0x22
)

// Debug register keys (op0 = 2).
const (
	kOSDLR   = 2<<14 | 0<<11 | 1<<7 | 3<<3 | 4
	kDBGPRCR = 2<<14 | 0<<11 | 1<<7 | 4<<3 | 4
)

type debugRegs struct {
	bvr, bcr [numBRPs]uint64
	wvr, wcr [numWRPs]uint64
	osdlr    uint64
	dbgprcr  uint64

	bpOn bool // some breakpoint enabled: flagBP when MDSCR_EL1.MDE
	wpOn bool // some watchpoint has a range: watched pages take the slow path
	// Watchpoint n covers [wpLo[n], wpLo[n]+wpLen[n]) for the accesses in wpAcc[n]
	// (1 loads, 2 stores); wpLen 0: none.
	wpLo, wpLen [numWRPs]uint64
	wpAcc       [numWRPs]int

	// stepping is set while the instruction of a software-step block runs; stepPC is
	// its address.
	stepping bool
	stepPC   uint64
}

// debugEnabled reports whether debug exceptions other than BRK can be taken from the
// current EL (AArch64.GenerateDebugExceptions with EL1 the debug target).
func (c *CPU) debugEnabled() bool {
	if c.sr.oslsr&2 != 0 || c.dbg.osdlr&1 != 0 {
		return false
	}
	if c.el == 0 {
		return true
	}
	return c.sr.mdscr&mdscrKDE != 0 && c.daif&pstateD == 0
}

// ssActive reports whether software step is active (the flagSS block flag).
func (c *CPU) ssActive() bool { return c.sr.mdscr&mdscrSS != 0 && c.debugEnabled() }

// debugFlags returns the block flags of the debug state.
func (c *CPU) debugFlags() uint64 {
	var f uint64
	if c.dbg.bpOn && c.sr.mdscr&mdscrMDE != 0 {
		f |= flagBP
	}
	if c.ssActive() {
		f |= flagSS
		if c.pss != 0 {
			f |= flagPSS
		}
	}
	return f
}

// debugSyndrome returns the ESR of a debug exception of class ecLow (the lower-EL
// form) taken to EL1 from the current EL.
func (c *CPU) debugSyndrome(ecLow, iss uint64) uint64 {
	ec := ecLow
	if c.el == 1 {
		ec++
	}
	return ec<<26 | 1<<25 | iss
}

// linkedMatch reports whether context-aware breakpoint lbn, as the link of another
// breakpoint or watchpoint, matches (a linked context-ID match on CONTEXTIDR_EL1).
func (c *CPU) linkedMatch(lbn uint64) bool {
	if lbn >= numBRPs || lbn < numBRPs-numCtxBRPs {
		return false
	}
	bcr := c.dbg.bcr[lbn]
	if bcr&1 == 0 || bcr>>20&15 != 3 {
		return false
	}
	return c.sr.contextidr == uint64(uint32(c.dbg.bvr[lbn]))
}

// ctlMatches checks the fields DBGBCR and DBGWCR share: the EL filter (PMC/PAC,
// SSC, HMC) for an access from el and the link.
func (c *CPU) ctlMatches(cr uint64, el uint64) bool {
	if cr>>14&3 == 2 { // secure state only; the vCPU is non-secure
		return false
	}
	pac := cr >> 1 & 3
	if el == 1 && pac&1 == 0 || el == 0 && pac&2 == 0 {
		return false
	}
	if cr>>20&1 != 0 && !c.linkedMatch(cr>>16&15) {
		return false
	}
	return true
}

// bpCheckOp is the helper a flagBP block runs before the instruction at pc: it raises
// the breakpoint exception if an enabled address breakpoint matches.
func bpCheckOp(pc uint64) op {
	return func(c *CPU) bool {
		if c.sr.mdscr&mdscrMDE == 0 || !c.debugEnabled() {
			return true
		}
		for n := range numBRPs {
			bcr := c.dbg.bcr[n]
			if bcr&1 == 0 || bcr>>21&7 != 0 || bcr>>5&15 == 0 { // enabled address match
				continue
			}
			if c.dbg.bvr[n]&^3 != pc || bcr>>5&15 == 0xc || !c.ctlMatches(bcr, c.el) {
				continue
			}
			c.PC = pc
			// FAR is UNKNOWN for breakpoints; QEMU writes 0.
			c.takeException(excSync, c.debugSyndrome(ecBreakLow, fscDebug), 0, true, pc)
			return false
		}
		return true
	}
}

// watchUpdate recomputes watchpoint n's range after a DBGWCR/DBGWVR write, as QEMU
// reads the fields (MASK wins over BAS; a non-contiguous BAS watches its lowest run).
func (c *CPU) watchUpdate(n int) {
	d := &c.dbg
	d.wpLen[n] = 0
	wcr, wvr := d.wcr[n], d.wvr[n]
	lsc := int(wcr >> 3 & 3)
	if wcr&1 != 0 && lsc != 0 {
		if mask := wcr >> 24 & 31; mask == 1 || mask == 2 {
			// reserved: disabled
		} else if mask != 0 {
			d.wpLen[n] = 1 << mask
			d.wpLo[n] = wvr &^ (d.wpLen[n] - 1)
		} else {
			bas := uint32(wcr >> 5 & 0xff)
			if wvr&4 != 0 {
				bas &= 0xf
			}
			if bas != 0 {
				start := bits.TrailingZeros32(bas)
				d.wpLen[n] = uint64(bits.TrailingZeros32(^(bas >> start)))
				d.wpLo[n] = wvr + uint64(start)
			}
		}
	}
	d.wpAcc[n] = lsc
	on := false
	for i := range numWRPs {
		on = on || d.wpLen[i] != 0
	}
	d.wpOn = on
	c.flushTLB() // watched pages lose (or regain) their fast-path entries
}

// watchedPage reports whether the page holding va overlaps a watchpoint's range.
func (c *CPU) watchedPage(va uint64) bool {
	page := va &^ 0xfff
	for n := range numWRPs {
		if l := c.dbg.wpLen[n]; l != 0 && c.dbg.wpLo[n] < page+0x1000 && c.dbg.wpLo[n]+l > page {
			return true
		}
	}
	return false
}

// watchCheck raises the watchpoint exception, and returns true, if an access of size
// bytes at va (a store if write) made with the permissions of MMU index idx hits an
// enabled watchpoint. The access is not performed.
func (c *CPU) watchCheck(va uint64, size int, write bool, idx uint64) bool {
	if c.sr.mdscr&mdscrMDE == 0 || !c.debugEnabled() {
		return false
	}
	acc := 1
	if write {
		acc = 2
	}
	for n := range numWRPs {
		d := &c.dbg
		lo, l := d.wpLo[n], d.wpLen[n]
		if l == 0 || d.wpAcc[n]&acc == 0 || va >= lo+l || va+uint64(size) <= lo {
			continue
		}
		if !c.ctlMatches(d.wcr[n], min(idx, 1)) { // EL1 with PAN is EL1
			continue
		}
		var iss uint64 = fscDebug
		if write {
			iss |= 1 << 6
		}
		c.takeException(excSync, c.debugSyndrome(ecWatchLow, iss), max(va, lo), true, c.PC)
		return true
	}
	return false
}

// stepOp wraps the one instruction of a software-step block (active-not-pending):
// after it completes, PSTATE.SS clears and the step-completed exception is taken
// (ISV=1, EX for a load-exclusive). If the instruction itself took an exception,
// that exception's entry handled PSTATE.SS (takeException).
func stepOp(o op, pc uint64, insn uint32) op {
	var ex uint64
	if insn&0x3fc00000 == 0x08400000 { // LDXR, LDAXR, LDXP, LDAXP
		ex = 1 << 6
	}
	return func(c *CPU) bool {
		n := c.excCount
		c.dbg.stepping, c.dbg.stepPC = true, pc
		cont := o(c)
		c.dbg.stepping = false
		if c.excCount != n {
			return false
		}
		if cont {
			c.PC = pc + 4
		}
		c.pmu.blkEnd = 0 // the instruction retired, wherever it went
		c.pss = 0
		c.takeException(excSync, c.debugSyndrome(ecStepLow, 1<<24|ex|fscDebug), 0, false, c.PC)
		return false
	}
}

// stepPendingOp is a whole block in the active-pending state: the software-step
// exception is taken before the instruction at pc (ISV=0: no instruction stepped).
func stepPendingOp(pc uint64) op {
	return func(c *CPU) bool {
		c.PC = pc
		c.takeException(excSync, c.debugSyndrome(ecStepLow, fscDebug), 0, false, pc)
		return false
	}
}

// debugRead implements MRS of the debug registers (op0 = 2); ok=false: not one.
func (c *CPU) debugRead(op1, crn, crm, op2 uint32) (uint64, bool) {
	d := &c.dbg
	if op1 == 0 && crn == 0 {
		switch {
		case op2 == 4 && crm < numBRPs:
			return d.bvr[crm], true
		case op2 == 5 && crm < numBRPs:
			return d.bcr[crm], true
		case op2 == 6 && crm < numWRPs:
			return d.wvr[crm], true
		case op2 == 7 && crm < numWRPs:
			return d.wcr[crm], true
		}
	}
	switch sysKey(2, op1, crn, crm, op2) {
	case kOSDLR:
		return d.osdlr, true
	case kDBGPRCR:
		return d.dbgprcr, true
	}
	return 0, false
}

// debugWrite implements MSR of the debug registers; ok=false: not one.
func (c *CPU) debugWrite(op1, crn, crm, op2 uint32, v uint64) bool {
	d := &c.dbg
	if op1 == 0 && crn == 0 {
		switch {
		case op2 == 4 && crm < numBRPs:
			d.bvr[crm] = v
			return true
		case op2 == 5 && crm < numBRPs:
			// BAS[3] and BAS[1] read as copies of BAS[2] and BAS[0].
			v = v&^(1<<6|1<<8) | (v>>5&1)<<6 | (v>>7&1)<<8
			d.bcr[crm] = v
			on := false
			for i := range numBRPs {
				on = on || d.bcr[i]&1 != 0
			}
			d.bpOn = on
			c.modeChanged()
			return true
		case op2 == 6 && crm < numWRPs:
			d.wvr[crm] = v &^ 3
			c.watchUpdate(int(crm))
			return true
		case op2 == 7 && crm < numWRPs:
			d.wcr[crm] = v
			c.watchUpdate(int(crm))
			return true
		}
	}
	switch sysKey(2, op1, crn, crm, op2) {
	case kOSDLR:
		d.osdlr = v & 1
		c.modeChanged()
		return true
	case kDBGPRCR:
		d.dbgprcr = v & 1
		return true
	}
	return false
}

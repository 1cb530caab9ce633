package arm

import (
	"time"
)

// PMUv3 as QEMU's Cortex-A57 shows it: PMCR_EL0.N = 6 event counters and the cycle
// counter. Events: SW_INCR (PMSWINC writes), CPU_CYCLES (guest time at 1 GHz, as QEMU
// counts cycles without icount), INST_RETIRED and BR_RETIRED (counted by the
// translator). Counters are kept as QEMU keeps them: each remembers the value of its
// event source at the last synchronisation (pmuSync), and the difference is added
// while the counter is enabled and not filtered at the current EL; so a sync happens
// before every PMU register access, EL change and PMU state change.
//
// The translator counts instructions and branches only while an enabled counter
// wants them (flagPMU in the block key): such blocks start with a helper that adds
// the whole block's counts, and an exception in the middle of a block, or a counter
// read inside it, subtracts what did not (yet) retire, so counts are exact at every
// point the guest can observe them.

const (
	pmuN       = 6          // event counters (PMCR_EL0.N)
	pmcrA57    = 0x41013000 // IMP 0x41, IDCODE 0x01, N = 6
	pmcrE      = 1 << 0
	pmcrP      = 1 << 1
	pmcrC      = 1 << 2
	pmcrD      = 1 << 3
	pmcrLC     = 1 << 6
	pmcrWMask  = 0x79 // LC, DP, X, D, E
	pmccIdx    = 31   // the cycle counter's bit in PMCNTEN/PMOVS/PMINTEN
	pmuCntMask = 1<<pmccIdx | (1<<pmuN - 1)

	evSWIncr   = 0x00
	evInst     = 0x08
	evCycles   = 0x11
	evBranch   = 0x21
	pmcEID0    = 1<<evSWIncr | 1<<evInst | 1<<evCycles
	pmcEID1    = 1 << (evBranch - 0x20)
	evtypeMask = 0xfe00ffff // P, U, NSK, NSU, NSH, M, MT, evtCount
	ccfiltMask = 0xfc000000
	filterP    = 1 << 31 // do not count at EL1
	filterU    = 1 << 30 // do not count at EL0
)

// pmu is one vCPU's performance monitors.
type pmu struct {
	pmcr    uint64 // the writable bits
	cnten   uint64
	inten   uint64
	ovs     uint64
	selr    uint64
	userenr uint64
	ccfiltr uint64
	ccnt    uint64
	cnt     [pmuN]uint32
	typ     [pmuN]uint64
	// last holds each counter's event-source value at the last sync (index pmuN:
	// the cycle counter).
	last [pmuN + 1]uint64

	// insns and brs are the translator's running totals of retired instructions and
	// branches, advanced only while counting (flagPMU).
	insns, brs uint64
	counting   bool // some enabled counter counts insns or branches: flagPMU
	// The block being executed with flagPMU: its start and end PC and whether it ends
	// with a branch; blkEnd 0 when unknown.
	blkStart, blkEnd uint64
	blkBr            uint64
	// checkInsns/checkBrs: totals at which a counter may overflow (sync then).
	checkInsns, checkBrs uint64

	irq bool
	t   *time.Timer
}

// pmuReset puts the PMU in its reset state, dropping the interrupt line if it was up.
func (c *CPU) pmuReset() {
	p := &c.pmu
	if p.t != nil {
		p.t.Stop()
	}
	irq := p.irq
	*p = pmu{t: p.t}
	if irq && c.cfg.PMUIRQ != nil {
		c.cfg.PMUIRQ(c.cfg.ID, false)
	}
}

// pmuCycles is the cycle count: guest nanoseconds (QEMU's 1 GHz ARM_CPU_FREQ).
func (c *CPU) pmuCycles() uint64 { return uint64(c.eng.GuestTime().Nanoseconds()) }

// pmuSource returns counter i's event source now (pmuN: the cycle counter); pc, if
// inside the block being executed, excludes that block's instructions from pc on.
func (c *CPU) pmuSource(i int, insns, brs uint64) uint64 {
	if i == pmuN {
		cy := c.pmuCycles()
		if c.pmu.pmcr&pmcrD != 0 {
			cy /= 64
		}
		return cy
	}
	switch c.pmu.typ[i] & 0xffff {
	case evCycles:
		return c.pmuCycles()
	case evInst:
		return insns
	case evBranch:
		return brs
	}
	return 0
}

func pmuEventSupported(ev uint64) bool {
	switch ev {
	case evSWIncr, evCycles, evInst, evBranch:
		return true
	}
	return false
}

// pmuEnabled says whether counter i (pmccIdx: the cycle counter) counts at the
// current EL.
func (c *CPU) pmuEnabled(i int) bool {
	p := &c.pmu
	if p.pmcr&pmcrE == 0 || p.cnten&(1<<i) == 0 {
		return false
	}
	filter := p.ccfiltr
	if i != pmccIdx {
		filter = p.typ[i]
		if !pmuEventSupported(filter & 0xffff) {
			return false
		}
	}
	if c.el == 0 {
		return filter&filterU == 0
	}
	return filter&filterP == 0
}

// pmuTotals returns the translator totals as of the instruction at pc (0: as of the
// end of the current block).
func (c *CPU) pmuTotals(pc uint64) (insns, brs uint64) {
	p := &c.pmu
	insns, brs = p.insns, p.brs
	if pc != 0 && c.flags&flagPMU != 0 && p.blkEnd != 0 && pc >= p.blkStart && pc < p.blkEnd {
		insns -= (p.blkEnd - pc) / 4
		brs -= p.blkBr
	}
	return insns, brs
}

// pmuSync brings every counter up to date (at the instruction at pc, see pmuTotals),
// recording overflows.
func (c *CPU) pmuSync(pc uint64) {
	p := &c.pmu
	insns, brs := c.pmuTotals(pc)
	for i := 0; i < pmuN; i++ {
		src := c.pmuSource(i, insns, brs)
		if c.pmuEnabled(i) {
			n := p.cnt[i] + uint32(src-p.last[i])
			if p.cnt[i]&^n&(1<<31) != 0 {
				p.ovs |= 1 << i
			}
			p.cnt[i] = n
		}
		p.last[i] = src
	}
	src := c.pmuSource(pmuN, insns, brs)
	if c.pmuEnabled(pmccIdx) {
		n := p.ccnt + (src - p.last[pmuN])
		mask := uint64(1 << 31)
		if p.pmcr&pmcrLC != 0 {
			mask = 1 << 63
		}
		if p.ccnt&^n&mask != 0 {
			p.ovs |= 1 << pmccIdx
		}
		p.ccnt = n
	}
	p.last[pmuN] = src
}

// pmuUpdate recomputes what follows from the PMU state after a change: the interrupt
// line, whether the translator counts (the block flags), the next overflow checks and
// the host timer for cycle-counter overflows. Called right after pmuSync.
func (c *CPU) pmuUpdate() {
	p := &c.pmu
	level := p.pmcr&pmcrE != 0 && p.inten&p.ovs != 0
	if level != p.irq {
		p.irq = level
		if c.cfg.PMUIRQ != nil {
			c.cfg.PMUIRQ(c.cfg.ID, level)
		}
	}
	counting := false
	p.checkInsns, p.checkBrs = ^uint64(0), ^uint64(0)
	next := time.Duration(-1)
	arm := func(ns uint64) {
		if d := time.Duration(min(ns, uint64(time.Hour))); next < 0 || d < next {
			next = d
		}
	}
	if p.pmcr&pmcrE != 0 {
		for i := 0; i < pmuN; i++ {
			if p.cnten&(1<<i) == 0 {
				continue
			}
			left := uint64(-p.cnt[i]) & 0xffffffff
			if left == 0 {
				left = 1 << 32
			}
			switch p.typ[i] & 0xffff {
			case evInst:
				counting = true
				p.checkInsns = min(p.checkInsns, p.insns+left)
			case evBranch:
				counting = true
				p.checkBrs = min(p.checkBrs, p.brs+left)
			case evCycles:
				arm(left)
			}
		}
		if p.cnten&(1<<pmccIdx) != 0 {
			left := -p.ccnt
			if p.pmcr&pmcrLC == 0 {
				left = uint64(uint32(left))
				if left == 0 {
					left = 1 << 32
				}
			}
			if p.pmcr&pmcrD != 0 {
				left *= 64
			}
			arm(left)
		}
	}
	if counting != p.counting {
		p.counting = counting
		c.modeChanged()
	}
	if p.t != nil {
		p.t.Stop()
	}
	if next >= 0 {
		if p.t == nil {
			p.t = time.AfterFunc(next, func() {
				c.v.Request(reqPMU)
				c.kick()
			})
		} else {
			p.t.Reset(next)
		}
	}
}

// pmuELChange syncs the counters before the EL changes (their filters may differ).
func (c *CPU) pmuELChange() {
	if c.pmu.pmcr&pmcrE != 0 && c.pmu.cnten != 0 {
		c.pmuSync(0)
	}
}

// pmuExcFixup undoes the counts of the instructions of the current block from ret
// on, which did not retire: an exception was taken at ret.
func (c *CPU) pmuExcFixup(ret uint64) {
	p := &c.pmu
	if c.flags&flagPMU != 0 && p.blkEnd != 0 && ret >= p.blkStart && ret < p.blkEnd {
		p.insns -= (p.blkEnd - ret) / 4
		p.brs -= p.blkBr
	}
	p.blkEnd = 0
}

// pmuBlockOp is the helper a block translated with flagPMU starts with.
func pmuBlockOp(start uint64, n, br *uint64, end *uint64) op {
	return func(c *CPU) bool {
		p := &c.pmu
		p.insns += *n
		p.brs += *br
		p.blkStart, p.blkEnd, p.blkBr = start, *end, *br
		if p.insns >= p.checkInsns || p.brs >= p.checkBrs {
			c.pmuSync(0)
			c.pmuUpdate()
		}
		return true
	}
}

// isBranch reports whether insn is a branch instruction (BR_RETIRED): B, BL, B.cond,
// CBZ/CBNZ, TBZ/TBNZ, BR, BLR, RET, ERET.
func isBranch(insn uint32) bool {
	switch {
	case insn&0x7c000000 == 0x14000000: // B, BL
		return true
	case insn&0xff000010 == 0x54000000: // B.cond
		return true
	case insn&0x7e000000 == 0x34000000: // CBZ, CBNZ
		return true
	case insn&0x7e000000 == 0x36000000: // TBZ, TBNZ
		return true
	case insn&0xfe000000 == 0xd6000000: // BR, BLR, RET, ERET (unconditional register)
		return true
	}
	return false
}

// PMU register keys.
const (
	kPMCR       = 3<<14 | 3<<11 | 9<<7 | 12<<3 | 0
	kPMCNTENSET = 3<<14 | 3<<11 | 9<<7 | 12<<3 | 1
	kPMCNTENCLR = 3<<14 | 3<<11 | 9<<7 | 12<<3 | 2
	kPMOVSCLR   = 3<<14 | 3<<11 | 9<<7 | 12<<3 | 3
	kPMSWINC    = 3<<14 | 3<<11 | 9<<7 | 12<<3 | 4
	kPMSELR     = 3<<14 | 3<<11 | 9<<7 | 12<<3 | 5
	kPMCEID0    = 3<<14 | 3<<11 | 9<<7 | 12<<3 | 6
	kPMCEID1    = 3<<14 | 3<<11 | 9<<7 | 12<<3 | 7
	kPMCCNTR    = 3<<14 | 3<<11 | 9<<7 | 13<<3 | 0
	kPMXEVTYPER = 3<<14 | 3<<11 | 9<<7 | 13<<3 | 1
	kPMXEVCNTR  = 3<<14 | 3<<11 | 9<<7 | 13<<3 | 2
	kPMUSERENR  = 3<<14 | 3<<11 | 9<<7 | 14<<3 | 0
	kPMOVSSET   = 3<<14 | 3<<11 | 9<<7 | 14<<3 | 3
	kPMINTENSET = 3<<14 | 0<<11 | 9<<7 | 14<<3 | 1
	kPMINTENCLR = 3<<14 | 0<<11 | 9<<7 | 14<<3 | 2
	kPMEVCNTR0  = 3<<14 | 3<<11 | 14<<7 | 8<<3 // + n (crm 8..11)
	kPMEVTYPER0 = 3<<14 | 3<<11 | 14<<7 | 12<<3
	kPMCCFILTR  = kPMEVTYPER0 + 31
)

// pmuKind classifies a PMU register key: 0 not a PMU register.
const (
	pmuNone = iota
	pmuReg
	pmuEvCnt  // PMEVCNTRn
	pmuEvType // PMEVTYPERn, PMCCFILTR
)

func pmuClass(k uint32) int {
	switch k {
	case kPMCR, kPMCNTENSET, kPMCNTENCLR, kPMOVSCLR, kPMSWINC, kPMSELR, kPMCEID0, kPMCEID1,
		kPMCCNTR, kPMXEVTYPER, kPMXEVCNTR, kPMUSERENR, kPMOVSSET, kPMINTENSET, kPMINTENCLR:
		return pmuReg
	}
	switch {
	case k >= kPMEVCNTR0 && k < kPMEVCNTR0+32:
		return pmuEvCnt
	case k >= kPMEVTYPER0 && k < kPMEVTYPER0+32:
		return pmuEvType
	}
	return pmuNone
}

// pmuEL0Access is el0Access for PMU registers (PMUSERENR_EL0: EN, SW, CR, ER).
func (c *CPU) pmuEL0Access(k uint32, read bool) int {
	u := c.pmu.userenr
	allowIf := func(ok bool) int {
		if ok || u&1 != 0 {
			return el0Allow
		}
		return el0Trap
	}
	switch k {
	case kPMINTENSET, kPMINTENCLR:
		return el0Undef
	case kPMUSERENR:
		if !read {
			return el0Undef
		}
		return el0Allow
	case kPMSWINC:
		if read {
			return el0Undef
		}
		return allowIf(u&2 != 0)
	case kPMCEID0, kPMCEID1:
		if !read {
			return el0Undef
		}
		return allowIf(false)
	case kPMSELR:
		return allowIf(u&8 != 0)
	case kPMCCNTR:
		return allowIf(u&4 != 0 && read)
	case kPMXEVCNTR:
		return allowIf(u&8 != 0 && read)
	}
	if pmuClass(k) == pmuEvCnt {
		return allowIf(u&8 != 0 && read)
	}
	return allowIf(false)
}

// pmuRead implements MRS of a PMU register (k of class pmuClass != 0).
func (c *CPU) pmuRead(k uint32) (uint64, bool) {
	p := &c.pmu
	c.pmuSync(c.PC)
	switch k {
	case kPMCR:
		return pmcrA57 | p.pmcr, true
	case kPMCNTENSET, kPMCNTENCLR:
		return p.cnten, true
	case kPMOVSCLR, kPMOVSSET:
		return p.ovs, true
	case kPMINTENSET, kPMINTENCLR:
		return p.inten, true
	case kPMSWINC:
		return 0, false
	case kPMSELR:
		return p.selr, true
	case kPMCEID0:
		return pmcEID0, true
	case kPMCEID1:
		return pmcEID1, true
	case kPMCCNTR:
		return p.ccnt, true
	case kPMUSERENR:
		return p.userenr, true
	case kPMXEVTYPER:
		return c.pmuReadType(int(p.selr)), true
	case kPMXEVCNTR:
		if int(p.selr) < pmuN {
			return uint64(p.cnt[p.selr]), true
		}
		return 0, true
	}
	if pmuClass(k) == pmuEvCnt {
		if n := int(k - kPMEVCNTR0); n < pmuN {
			return uint64(p.cnt[n]), true
		}
		return 0, false
	}
	n := int(k - kPMEVTYPER0)
	if n < pmuN || n == 31 {
		return c.pmuReadType(n), true
	}
	return 0, false
}

func (c *CPU) pmuReadType(n int) uint64 {
	if n == 31 {
		return c.pmu.ccfiltr
	}
	if n < pmuN {
		return c.pmu.typ[n]
	}
	return 0
}

// pmuWrite implements MSR of a PMU register; ok=false for UNDEFINED.
func (c *CPU) pmuWrite(k uint32, v uint64) bool {
	p := &c.pmu
	c.pmuSync(c.PC)
	insns, brs := c.pmuTotals(c.PC)
	switch k {
	case kPMCR:
		if v&pmcrC != 0 {
			p.ccnt = 0
		}
		if v&pmcrP != 0 {
			p.cnt = [pmuN]uint32{}
		}
		p.pmcr = v & pmcrWMask
	case kPMCNTENSET:
		p.cnten |= v & pmuCntMask
	case kPMCNTENCLR:
		p.cnten &^= v & pmuCntMask
	case kPMOVSCLR:
		p.ovs &^= v & pmuCntMask
	case kPMOVSSET:
		p.ovs |= v & pmuCntMask
	case kPMINTENSET:
		p.inten |= v & pmuCntMask
	case kPMINTENCLR:
		p.inten &^= v & pmuCntMask
	case kPMSWINC:
		for i := 0; i < pmuN; i++ {
			if v&(1<<i) != 0 && c.pmuEnabled(i) && p.typ[i]&0xffff == evSWIncr {
				n := p.cnt[i] + 1
				if p.cnt[i]&^n&(1<<31) != 0 {
					p.ovs |= 1 << i
				}
				p.cnt[i] = n
			}
		}
	case kPMSELR:
		p.selr = v & 31
	case kPMCCNTR:
		p.ccnt = v
	case kPMUSERENR:
		p.userenr = v & 0xf
	case kPMXEVTYPER:
		c.pmuWriteType(int(p.selr), v)
	case kPMXEVCNTR:
		if int(p.selr) < pmuN {
			p.cnt[p.selr] = uint32(v)
		}
	case kPMCEID0, kPMCEID1:
		return false
	default:
		if pmuClass(k) == pmuEvCnt {
			n := int(k - kPMEVCNTR0)
			if n >= pmuN {
				return false
			}
			p.cnt[n] = uint32(v)
		} else {
			n := int(k - kPMEVTYPER0)
			if n >= pmuN && n != 31 {
				return false
			}
			c.pmuWriteType(n, v)
		}
	}
	// The sources may have changed meaning (event types, PMCR.D): restart every
	// counter's difference from now.
	for i := 0; i <= pmuN; i++ {
		p.last[i] = c.pmuSource(i, insns, brs)
	}
	c.pmuUpdate()
	return true
}

func (c *CPU) pmuWriteType(n int, v uint64) {
	if n == 31 {
		c.pmu.ccfiltr = v & ccfiltMask
	} else if n < pmuN {
		c.pmu.typ[n] = v & evtypeMask
	}
}

package arm

import "fmt"

// Exception kinds, as offsets within a vector-table quarter.
const (
	excSync   = 0x000
	excIRQ    = 0x080
	excFIQ    = 0x100
	excSError = 0x180
)

// Exception classes (ESR_ELx.EC).
const (
	ecUnknown    = 0x00
	ecWFx        = 0x01
	ecFPAccess   = 0x07
	ecSVC        = 0x15
	ecSysReg     = 0x18
	ecIAbortLow  = 0x20
	ecIAbortSame = 0x21
	ecPCAlign    = 0x22
	ecDAbortLow  = 0x24
	ecDAbortSame = 0x25
	ecBRK        = 0x3c // BRK from AArch64; the other debug classes are in debug.go
)

// pstate returns the PSTATE as saved in SPSR_EL1.
func (c *CPU) pstate() uint64 {
	return c.NZCV&0xf0000000 | c.pstatePANUAO() | c.pss<<21 | c.daif | c.el<<2 | c.spsel
}

// takeException enters EL1 through the vector table. kind is excSync/IRQ/FIQ/SError;
// for synchronous exceptions esr is the syndrome and far, if hasFar, the faulting
// address. ret is the preferred return address written to ELR_EL1.
func (c *CPU) takeException(kind uint64, esr, far uint64, hasFar bool, ret uint64) {
	var off uint64
	switch {
	case c.el == 0:
		off = 0x400
	case c.spsel == 1:
		off = 0x200
	}
	if c.tflag&TraceInt != 0 {
		name := map[uint64]string{excSync: "sync", excIRQ: "irq", excFIQ: "fiq", excSError: "serror"}[kind]
		fmt.Fprintf(c.trace, "cpu%d Taking exception %s [EL%d -> EL1] ESR %#x FAR %#x ELR %#x PC %#x\n",
			c.cfg.ID, name, c.el, esr, far, ret, c.sr.vbar+off+kind)
	}
	c.excCount++
	if kind == excSync {
		c.pmuExcFixup(ret)
	}
	c.pmuELChange()
	spsr := c.pstate()
	if c.dbg.stepping {
		// An exception from the instruction being stepped: PSTATE.SS stays set if
		// the instruction did not complete (it returns to itself), as QEMU saves it.
		spsr &^= pstateSS
		if ret == c.dbg.stepPC {
			spsr |= pstateSS
		}
		c.dbg.stepping = false
	}
	c.sr.spsr = spsr
	c.sr.elr = ret
	if kind == excSync {
		c.sr.esr = esr
		if hasFar {
			c.sr.far = far
		}
	}
	c.el, c.spsel, c.daif, c.pss = 1, 1, pstateDAIF, 0
	c.panEntry()
	c.excl.valid = false
	c.modeChanged()
	c.PC = c.sr.vbar + off + kind
}

// syncException raises a synchronous exception with class ec and syndrome iss for the
// instruction at c.PC (the preferred return address is the instruction itself).
func (c *CPU) syncException(ec, iss uint64) {
	c.takeException(excSync, ec<<26|1<<25|iss, 0, false, c.PC)
}

// undef raises an UNDEFINED-instruction exception for the instruction at pc.
func (c *CPU) undef(pc uint64) bool {
	c.PC = pc
	c.syncException(ecUnknown, 0)
	return false
}

// eret returns from an exception: PC from ELR_EL1, PSTATE from SPSR_EL1.
func (c *CPU) eret() {
	spsr := c.sr.spsr
	c.pmuELChange()
	c.PC = c.sr.elr
	c.NZCV = spsr & 0xf0000000
	c.daif = spsr & pstateDAIF
	c.pss = spsr >> 21 & 1
	c.panReturn(spsr)
	m := spsr & 0x1f
	switch m {
	case 0x0: // EL0t
		c.el, c.spsel = 0, 0
	case 0x4, 0x5: // EL1t, EL1h
		c.el, c.spsel = 1, m&1
	default:
		// Illegal return (AArch32, EL2/EL3): stay at EL1 as an illegal exception return
		// would, with PSTATE.IL set; the next instruction then raises an illegal-state
		// exception.
		c.el = 1
	}
	c.excl.valid = false
	c.modeChanged()
	c.v.Request(reqIRQ) // DAIF may have unmasked a pending interrupt
	if c.tflag&TraceInt != 0 {
		fmt.Fprintf(c.trace, "cpu%d Exception return from EL1 to EL%d PC %#x\n", c.cfg.ID, c.el, c.PC)
	}
}

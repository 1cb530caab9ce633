package arm

// ARMv8.1 FEAT_PAN with ARMv8.2 FEAT_PAN2, and ARMv8.2 FEAT_UAO, on models whose
// ID_AA64MMFR1.PAN / ID_AA64MMFR2.UAO advertise them:
//
//   - PSTATE.PAN (SPSR bit 22): while set, EL1 data accesses (loads, stores,
//     exclusives, atomics, DC ZVA) to pages EL0 may access take a permission fault;
//     instruction fetches are unaffected. Set on exception entry to EL1 when
//     SCTLR_EL1.SPAN is 0, restored by ERET, written by MSR PAN (register and
//     immediate forms). EL1 with PAN has its own MMU index (mmuEL1PAN: its own TLB,
//     so toggling PAN flushes nothing).
//   - AT S1E1RP/S1E1WP: AT S1E1R/W with PSTATE.PAN's permission check.
//   - PSTATE.UAO (SPSR bit 23): while set, LDTR/STTR at EL1 check EL1's permissions
//     (PAN included) instead of EL0's. Cleared on exception entry, restored by ERET,
//     written by MSR UAO.

const (
	pstatePAN = 1 << 22 // in SPSR and the PAN register
	pstateUAO = 1 << 23 // in SPSR and the UAO register
	sctlrSPAN = 1 << 23 // SCTLR_EL1.SPAN: 0 = set PSTATE.PAN on exception entry

	mmfr1PAN2 = 2 << 20 // ID_AA64MMFR1_EL1.PAN: PAN and AT S1E1RP/WP
	mmfr2UAO  = 1 << 4  // ID_AA64MMFR2_EL1.UAO

	kMMFR1 = 3<<14 | 0<<11 | 0<<7 | 7<<3 | 1
	kMMFR2 = 3<<14 | 0<<11 | 0<<7 | 7<<3 | 2
	kPAN   = 3<<14 | 0<<11 | 4<<7 | 2<<3 | 3
	kUAO   = 3<<14 | 0<<11 | 4<<7 | 2<<3 | 4

	// mmuEL1PAN is the MMU index of EL1 data accesses while PSTATE.PAN is set
	// (0 and 1 are EL0's and EL1's).
	mmuEL1PAN = 2
)

func (m *Model) hasPAN() bool  { return m.MMFR1>>20&0xf >= 1 }
func (m *Model) hasPAN2() bool { return m.MMFR1>>20&0xf >= 2 }
func (m *Model) hasUAO() bool  { return m.MMFR2>>4&0xf >= 1 }

// mmuIndices returns the MMU index of the current mode's data accesses and of its
// unprivileged ones (LDTR/STTR).
func (c *CPU) mmuIndices() (data, user uint64) {
	if c.el == 0 {
		return 0, 0
	}
	data = 1
	if c.pan != 0 {
		data = mmuEL1PAN
	}
	if c.uao != 0 {
		return data, data
	}
	return data, 0
}

// panDenies reports whether PSTATE.PAN forbids a data access through MMU index idx
// to a page EL0 may access.
func panDenies(idx int, el0 bool) bool { return idx == mmuEL1PAN && el0 }

// pstatePANUAO returns PSTATE.PAN and UAO in SPSR positions.
func (c *CPU) pstatePANUAO() uint64 { return c.pan<<22 | c.uao<<23 }

// panEntry updates PSTATE.PAN and UAO for an exception entry to EL1.
func (c *CPU) panEntry() {
	if c.model.hasPAN() && c.sr.sctlr&sctlrSPAN == 0 {
		c.pan = 1
	}
	c.uao = 0
}

// panReturn restores PSTATE.PAN and UAO from the SPSR of an exception return.
func (c *CPU) panReturn(spsr uint64) {
	if c.model.hasPAN() {
		c.pan = spsr >> 22 & 1
	}
	if c.model.hasUAO() {
		c.uao = spsr >> 23 & 1
	}
}

// panReadSys implements MRS of the registers of this file (mine = the key is one of
// them).
func (c *CPU) panReadSys(k uint32) (v uint64, ok, mine bool) {
	switch k {
	case kMMFR1:
		return c.model.MMFR1, true, true
	case kMMFR2:
		return c.model.MMFR2, true, true
	case kPAN:
		return c.pan << 22, c.model.hasPAN(), true
	case kUAO:
		return c.uao << 23, c.model.hasUAO(), true
	}
	return 0, false, false
}

// panWriteSys implements MSR (register) of the registers of this file.
func (c *CPU) panWriteSys(k uint32, v uint64) (ok, end, mine bool) {
	switch k {
	case kMMFR1, kMMFR2:
		return false, false, true // read-only
	case kPAN:
		if !c.model.hasPAN() {
			return false, false, true
		}
		c.pan = v >> 22 & 1
	case kUAO:
		if !c.model.hasUAO() {
			return false, false, true
		}
		c.uao = v >> 23 & 1
	default:
		return false, false, false
	}
	c.modeChanged()
	return true, true, true
}

// msrPANUAOImm is MSR PAN, #imm (op2 4) and MSR UAO, #imm (op2 3): EL1 only, and
// UNDEFINED on models without the feature. The block ends after it (the data MMU
// index changed).
func msrPANUAOImm(op2 uint32, imm, pc, next uint64) op {
	return func(c *CPU) bool {
		if c.el == 0 || op2 == 4 && !c.model.hasPAN() || op2 == 3 && !c.model.hasUAO() {
			return c.undef(pc)
		}
		if op2 == 4 {
			c.pan = imm & 1
		} else {
			c.uao = imm & 1
		}
		c.modeChanged()
		c.PC = next
		return false
	}
}

// atS1PANOp is AT S1E1RP (write false) / S1E1WP: the EL1 translation with the
// permission check of PSTATE.PAN.
func atS1PANOp(rt uint32, write bool) func(c *CPU) bool {
	return func(c *CPU) bool {
		idx := 1
		if c.pan != 0 {
			idx = mmuEL1PAN
		}
		c.atS1(c.r(rt), idx, write)
		return true
	}
}

package arm

import "runtime"

// Branches, exception generation and system instructions.

func (c *CPU) decodeBranchSys(insn uint32, pc uint64) (op, bool) {
	switch {
	case insn>>26&31 == 5: // B, BL
		target := pc + signExt(uint64(insn&0x3ffffff)<<2, 28)
		if insn>>31 == 1 {
			ret := pc + 4
			return func(c *CPU) bool { c.State.X[30] = ret; c.PC = target; return false }, true
		}
		return func(c *CPU) bool { c.PC = target; return false }, true
	case insn>>25&63 == 0x1a: // CBZ, CBNZ
		target := pc + signExt(uint64(insn>>5&0x7ffff)<<2, 21)
		rt := insn & 31
		nz := insn>>24&1 == 1
		mask := ^uint64(0)
		if insn>>31 == 0 {
			mask = 0xffffffff
		}
		next := pc + 4
		return func(c *CPU) bool {
			if (c.r(rt)&mask != 0) == nz {
				c.PC = target
			} else {
				c.PC = next
			}
			return false
		}, true
	case insn>>25&63 == 0x1b: // TBZ, TBNZ
		target := pc + signExt(uint64(insn>>5&0x3fff)<<2, 16)
		rt := insn & 31
		bit := insn>>31<<5 | insn>>19&31
		nz := uint64(insn >> 24 & 1)
		next := pc + 4
		return func(c *CPU) bool {
			if c.r(rt)>>bit&1 == nz {
				c.PC = target
			} else {
				c.PC = next
			}
			return false
		}, true
	case insn>>24 == 0x54: // B.cond
		if insn>>4&1 != 0 {
			return undefOp(pc), true
		}
		target := pc + signExt(uint64(insn>>5&0x7ffff)<<2, 21)
		cond := insn & 15
		next := pc + 4
		return func(c *CPU) bool {
			if c.cond(cond) {
				c.PC = target
			} else {
				c.PC = next
			}
			return false
		}, true
	case insn>>24 == 0xd4: // exception generation
		return c.decodeExcGen(insn, pc)
	case insn>>22 == 0x354: // system
		return c.decodeSystem(insn, pc)
	case insn>>25 == 0x6b: // unconditional branch (register)
		if o, ok := c.decodePACBranch(insn, pc); ok { // pauth.go
			return o, true
		}
		opc := insn >> 21 & 15
		if insn>>16&31 != 31 || insn>>10&63 != 0 || insn&31 != 0 {
			return undefOp(pc), true
		}
		rn := insn >> 5 & 31
		switch opc {
		case 0, 2: // BR, RET
			return func(c *CPU) bool { c.PC = c.r(rn); return false }, true
		case 1: // BLR
			ret := pc + 4
			return func(c *CPU) bool { t := c.r(rn); c.State.X[30] = ret; c.PC = t; return false }, true
		case 4: // ERET
			if rn != 31 {
				break
			}
			return func(c *CPU) bool {
				if c.el == 0 {
					return c.undef(pc)
				}
				c.eret()
				return false
			}, true
		}
	}
	return undefOp(pc), true
}

func (c *CPU) decodeExcGen(insn uint32, pc uint64) (op, bool) {
	imm := uint64(insn >> 5 & 0xffff)
	opc, ll := insn>>21&7, insn&31
	switch {
	case opc == 0 && ll == 1: // SVC
		return func(c *CPU) bool {
			c.PC = pc
			c.takeException(excSync, ecSVC<<26|1<<25|imm, 0, false, pc+4)
			return false
		}, true
	case opc == 0 && ll == 2: // HVC
		return func(c *CPU) bool {
			if c.el == 0 || c.cfg.HVC == nil {
				return c.undef(pc)
			}
			c.PC = pc + 4
			c.cfg.HVC(c)
			return false
		}, true
	case opc == 0 && ll == 3: // SMC
		return func(c *CPU) bool {
			if c.el == 0 || c.cfg.SMC == nil {
				return c.undef(pc)
			}
			c.PC = pc + 4
			c.cfg.SMC(c)
			return false
		}, true
	case opc == 1 && ll == 0: // BRK
		return func(c *CPU) bool {
			c.PC = pc
			c.syncException(ecBRK, imm)
			return false
		}, true
	}
	return undefOp(pc), true
}

func (c *CPU) decodeSystem(insn uint32, pc uint64) (op, bool) {
	l := insn >> 21 & 1
	op0 := insn >> 19 & 3
	op1 := insn >> 16 & 7
	crn := insn >> 12 & 15
	crm := insn >> 8 & 15
	op2 := insn >> 5 & 7
	rt := insn & 31
	next := pc + 4
	switch {
	case l == 0 && op0 == 0 && crn == 2 && rt == 31: // hints
		switch crm<<3 | op2 {
		case 1: // YIELD
			return func(c *CPU) bool { c.PC = next; runtime.Gosched(); return false }, true
		case 2: // WFE: no event tracking; behave as a yield
			return func(c *CPU) bool {
				if c.el == 0 && c.sr.sctlr&sctlrNTWE == 0 {
					c.PC = pc
					c.syncException(ecWFx, 1<<24|0xe<<20|1)
					return false
				}
				c.PC = next
				runtime.Gosched()
				return false
			}, true
		case 3: // WFI
			return func(c *CPU) bool {
				if c.el == 0 && c.sr.sctlr&sctlrNTWI == 0 {
					c.PC = pc
					c.syncException(ecWFx, 1<<24|0xe<<20)
					return false
				}
				c.PC = next
				c.wfi()
				return false
			}, true
		}
		if isPACHint(crm<<3|op2) && c.model.hasPAuth() {
			return pacHint(crm<<3 | op2), false // pauth.go
		}
		return func(c *CPU) bool { return true }, false // NOP, SEV, SEVL and other hints
	case l == 0 && op0 == 0 && crn == 3 && rt == 31: // barriers
		switch op2 {
		case 2: // CLREX
			return func(c *CPU) bool { c.excl.valid = false; return true }, false
		case 4, 5: // DSB, DMB: full host fence
			return func(c *CPU) bool { c.fence.Add(1); return true }, false
		case 6: // ISB: end the block so later instructions see new system state
			return func(c *CPU) bool { c.PC = next; return false }, true
		}
		return undefOp(pc), true
	case l == 0 && op0 == 0 && crn == 4 && rt == 31: // MSR (immediate)
		imm := uint64(crm)
		switch op1<<3 | op2 {
		case 0<<3 | 5: // SPSel
			return func(c *CPU) bool {
				if c.el == 0 {
					return c.undef(pc)
				}
				c.spsel = imm & 1
				c.modeChanged()
				c.PC = next
				return false
			}, true
		case 0<<3 | 3, 0<<3 | 4: // UAO, PAN (pan.go)
			return msrPANUAOImm(op2, imm, pc, next), true
		case 3<<3 | 6, 3<<3 | 7: // DAIFSet, DAIFClr
			set := op2 == 6
			return func(c *CPU) bool {
				if c.el == 0 && c.sr.sctlr&sctlrUMA == 0 {
					c.PC = pc
					c.syncException(ecSysReg, sysISS(0, op1, crn, crm, op2, rt, false))
					return false
				}
				if set {
					c.daif |= imm << 6
				} else {
					c.daif &^= imm << 6
				}
				c.v.Request(reqIRQ)
				c.modeChanged() // PSTATE.D masks debug exceptions
				c.PC = next
				return false
			}, true
		}
		return undefOp(pc), true
	case op0 == 1: // SYS, SYSL
		if l == 1 {
			return undefOp(pc), true
		}
		return c.decodeSys(insn, pc, op1, crn, crm, op2, rt)
	case op0 >= 2: // MSR, MRS (register)
		read := l == 1
		return func(c *CPU) bool {
			k := sysKey(op0, op1, crn, crm, op2)
			if c.el == 0 {
				switch c.el0Access(k, read) {
				case el0Trap:
					c.PC = pc
					c.syncException(ecSysReg, sysISS(op0, op1, crn, crm, op2, rt, read))
					return false
				case el0Undef:
					return c.undef(pc)
				}
			}
			if read {
				c.PC = pc
				v, ok := c.readSys(op0, op1, crn, crm, op2)
				if !ok {
					return c.undef(pc)
				}
				c.w(rt, v)
				return true
			}
			c.PC = pc
			ok, end := c.writeSys(op0, op1, crn, crm, op2, c.r(rt))
			if !ok {
				return c.undef(pc)
			}
			if end {
				c.PC = next
				return false
			}
			return true
		}, read == false
	}
	return undefOp(pc), true
}

// sysISS builds the ESR ISS for a trapped MSR/MRS/SYS (EC 0x18).
func sysISS(op0, op1, crn, crm, op2, rt uint32, read bool) uint64 {
	iss := uint64(op0)<<20 | uint64(op2)<<17 | uint64(op1)<<14 | uint64(crn)<<10 | uint64(rt)<<5 | uint64(crm)<<1
	if read {
		iss |= 1
	}
	return iss
}

// decodeSys handles SYS: cache maintenance, address translation, TLB maintenance.
func (c *CPU) decodeSys(insn uint32, pc uint64, op1, crn, crm, op2, rt uint32) (op, bool) {
	next := pc + 4
	// EL0 may execute DC ZVA (if SCTLR_EL1.DZE) and DC CVAU/CVAC/CIVAC, IC IVAU (if
	// SCTLR_EL1.UCI); disabled ones trap with EC 0x18, everything else is UNDEFINED.
	el0ok := false
	el0ctl := uint64(sctlrUCI)
	var f func(c *CPU) bool
	switch {
	case crn == 7 && op1 == 3 && crm == 4 && op2 == 1: // DC ZVA
		el0ok, el0ctl = true, sctlrDZE
		f = func(c *CPU) bool {
			base := c.r(rt) &^ 63
			for i := uint64(0); i < 64; i += 8 {
				if !c.st64(base+i, 0) {
					return false
				}
			}
			return true
		}
	case crn == 7 && op1 == 0 && (crm == 1 || crm == 5) && op2 == 0: // IC IALLUIS, IALLU
		f = func(c *CPU) bool {
			c.eng.Cache().InvalidateAll()
			c.PC = next
			return false
		}
	case crn == 7 && op1 == 3 && crm == 5 && op2 == 1: // IC IVAU
		el0ok = true
		f = func(c *CPU) bool {
			va := c.r(rt)
			w := c.translate(va, int(c.el))
			if !w.faulted {
				c.eng.Cache().InvalidatePage(w.pa)
			}
			return true
		}
	case crn == 7 && op1 == 0 && crm == 8 && op2 < 4: // AT S1E1R/W, S1E0R/W
		idx := 1 - int(op2>>1)
		write := op2&1 == 1
		f = func(c *CPU) bool { c.atS1(c.r(rt), idx, write); return true }
	case crn == 7 && op1 == 0 && crm == 9 && op2 < 2 && c.model.hasPAN2(): // AT S1E1RP/WP (pan.go)
		f = atS1PANOp(rt, op2 == 1)
	case crn == 7 && op1 == 0 && crm == 9 && op2 < 2: // AT S1E1RP/WP without PAN2
		return undefOp(pc), true
	case crn == 7: // DC (clean/invalidate by VA or set/way): no caches to maintain
		el0ok = op1 == 3 && (crm == 10 || crm == 11 || crm == 14) && op2 == 1
		f = func(c *CPU) bool { return true }
	case crn == 8 && op1 == 0 && (crm == 3 || crm == 7): // TLBI
		// The softmmu TLB is not ASID-tagged: by-ASID invalidations flush everything
		// and by-VA ones flush the page for every ASID.
		broadcast := crm == 3
		byVA := op2&1 == 1
		f = func(c *CPU) bool {
			if byVA {
				va := signExt((c.r(rt)&(1<<44-1))<<12, 56)
				c.flushTLBPage(va, broadcast)
			} else if broadcast {
				c.broadcastTLBFlush()
			} else {
				c.flushTLB()
			}
			c.PC = next
			return false
		}
	default:
		return undefOp(pc), true
	}
	return func(c *CPU) bool {
		c.PC = pc
		if c.el == 0 {
			if !el0ok {
				return c.undef(pc)
			}
			if c.sr.sctlr&el0ctl == 0 {
				c.syncException(ecSysReg, sysISS(1, op1, crn, crm, op2, rt, false))
				return false
			}
		}
		return f(c)
	}, false
}

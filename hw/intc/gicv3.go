package intc

import "gemu/hw/bus"

// GICv3 register offsets and sizes.
const (
	gicdTYPER2  = 0x00c
	gicdIROUTER = 0x6000
	gicdPIDR2   = 0xffe8

	gicrCTLR  = 0x0000
	gicrIIDR  = 0x0004
	gicrTYPER = 0x0008
	gicrWAKER = 0x0014
	gicrSGI   = 0x10000 // SGI_base frame

	// RedistStride is the size of one CPU's redistributor (RD_base + SGI_base frames).
	RedistStride = 0x20000

	ctlrDS  = 1 << 6 // single security state
	ctlrARE = 1 << 4 // affinity routing, always on here
)

// GICv3 is a GIC-500 style controller with affinity routing: a distributor for SPIs,
// one redistributor per CPU for its SGIs and PPIs, and the CPU interface as system
// registers (ReadSysReg/WriteSysReg, the vCPU's SysRegHandler).
type GICv3 struct{ *GIC }

// NewV3 returns a GICv3 for len(affinity) CPUs; affinity[c] is CPU c's MPIDR_EL1
// affinity fields (Aff3 in bits 39:32, Aff2-Aff0 in 23:0), used for SPI routing and SGIs.
func NewV3(affinity []uint64) *GICv3 {
	g := &GICv3{newGIC(len(affinity), true)}
	g.aff = make([]uint64, len(affinity))
	for i, a := range affinity {
		g.aff[i] = a & 0xff_00ff_ffff
	}
	g.ctlr = ctlrDS | ctlrARE
	return g
}

// Distributor returns the 64 KiB distributor frame.
func (g *GICv3) Distributor() bus.Device { return v3dist{g.GIC} }

// Redistributors returns the ncpu × RedistStride redistributor region.
func (g *GICv3) Redistributors() bus.Device { return v3redist{g.GIC} }

type v3dist struct{ g *GIC }

func (d v3dist) Read(_ bus.Access, off uint64, data []byte) {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	access(off, data, false, d.read, nil)
}

func (d v3dist) Write(_ bus.Access, off uint64, data []byte) {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	access(off, data, true, nil, d.write)
}

func (d v3dist) read(off uint64) uint32 {
	g := d.g
	switch {
	case off == gicdCTLR:
		return g.ctlr
	case off == gicdTYPER:
		// ITLinesNumber; IDbits = 10 bits (9 in 23:19); no LPIs, no MBIS.
		return uint32(NumIRQ/32-1) | 9<<19
	case off == gicdIIDR:
		return 0x0300143b
	case off >= regIGROUPR && off < regBankEnd:
		return g.bankRead(0, off, NumPriv, NumIRQ)
	case off >= gicdIROUTER+8*NumPriv && off < gicdIROUTER+8*NumIRQ:
		q := &g.spi[(off-gicdIROUTER)/8-NumPriv]
		if off%8 == 0 {
			return uint32(q.route)
		}
		return uint32(q.route >> 32)
	case off == gicdPIDR2:
		return 0x3b // ArchRev 3
	}
	return 0
}

func (d v3dist) write(off uint64, v, mask uint32) {
	g := d.g
	switch {
	case off == gicdCTLR:
		g.ctlr = merge(g.ctlr, v, mask)&3 | ctlrDS | ctlrARE
		g.update()
	case off >= regIGROUPR && off < regBankEnd:
		g.bankWrite(0, off, v, mask, NumPriv, NumIRQ)
	case off >= gicdIROUTER+8*NumPriv && off < gicdIROUTER+8*NumIRQ:
		q := &g.spi[(off-gicdIROUTER)/8-NumPriv]
		if off%8 == 0 {
			q.route = q.route&^uint64(mask) | uint64(v&mask)
		} else {
			q.route = q.route&^(uint64(mask)<<32) | uint64(v&mask)<<32
		}
		q.route &= 0xff_8000_00ff_ffff
		g.update()
	}
}

type v3redist struct{ g *GIC }

func (d v3redist) Read(_ bus.Access, off uint64, data []byte) {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	access(off, data, false, d.read, nil)
}

func (d v3redist) Write(_ bus.Access, off uint64, data []byte) {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	access(off, data, true, nil, d.write)
}

func (d v3redist) read(off uint64) uint32 {
	g := d.g
	c, off := int(off/RedistStride), off%RedistStride
	if c >= g.ncpu {
		return 0
	}
	switch {
	case off == gicrIIDR:
		return 0x0300143b
	case off == gicrTYPER:
		v := uint32(c) << 8 // Processor_Number
		if c == g.ncpu-1 {
			v |= 1 << 4 // Last
		}
		return v
	case off == gicrTYPER+4:
		a := g.aff[c]
		return uint32(a>>32)<<24 | uint32(a&0xffffff)
	case off == gicrWAKER:
		if g.cpu[c].sleeping {
			return 6 // ProcessorSleep | ChildrenAsleep
		}
		return 0
	case off == gicdPIDR2:
		return 0x3b
	case off >= gicrSGI+regIGROUPR && off < gicrSGI+regBankEnd:
		return g.bankRead(c, off-gicrSGI, 0, NumPriv)
	}
	return 0
}

func (d v3redist) write(off uint64, v, mask uint32) {
	g := d.g
	c, off := int(off/RedistStride), off%RedistStride
	if c >= g.ncpu {
		return
	}
	switch {
	case off == gicrWAKER:
		if mask&2 != 0 {
			g.cpu[c].sleeping = v&2 != 0
			g.update()
		}
	case off >= gicrSGI+regIGROUPR && off < gicrSGI+regBankEnd:
		g.bankWrite(c, off-gicrSGI, v, mask, 0, NumPriv)
	}
}

// ICC system register encodings (op0=3, op1=0), as crn<<8 | crm<<4 | op2.
const (
	iccPMR     = 0x460
	iccIAR0    = 0xc80
	iccEOIR0   = 0xc81
	iccHPPIR0  = 0xc82
	iccBPR0    = 0xc83
	iccAP0R0   = 0xc84 // ..0xc87
	iccAP1R0   = 0xc90 // ..0xc93
	iccDIR     = 0xcb1
	iccRPR     = 0xcb3
	iccSGI1R   = 0xcb5
	iccASGI1R  = 0xcb6
	iccSGI0R   = 0xcb7
	iccIAR1    = 0xcc0
	iccEOIR1   = 0xcc1
	iccHPPIR1  = 0xcc2
	iccBPR1    = 0xcc3
	iccCTLR    = 0xcc4
	iccSRE     = 0xcc5
	iccIGRPEN0 = 0xcc6
	iccIGRPEN1 = 0xcc7

	iccCTLRWritable = 3                  // CBPR, EOImode
	iccCTLRRO       = (priBits - 1) << 8 // PRIbits; IDbits 0 = 16 bits
)

func iccEnc(op0, op1, crn, crm, op2 uint32) (uint32, bool) {
	if op0 != 3 || op1 != 0 || crn > 15 || crm > 15 || op2 > 7 {
		return 0, false
	}
	return crn<<8 | crm<<4 | op2, true
}

// ReadSysReg implements the vCPU's system-register hook for the ICC_* registers of CPU
// c. It reports false for registers it does not own (the CPU then treats them as
// undefined or handles them itself).
func (g *GICv3) ReadSysReg(c int, op0, op1, crn, crm, op2 uint32) (uint64, bool) {
	enc, ok := iccEnc(op0, op1, crn, crm, op2)
	if !ok || c < 0 || c >= g.ncpu {
		return 0, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	ci := &g.cpu[c]
	switch enc {
	case iccPMR:
		return uint64(ci.pmr), true
	case iccIAR0:
		return uint64(g.ack(c, 0)), true
	case iccIAR1:
		return uint64(g.ack(c, 1)), true
	case iccHPPIR0, iccHPPIR1:
		grp := 0
		if enc == iccHPPIR1 {
			grp = 1
		}
		if id := g.hppi(c, grp); id >= 0 {
			return uint64(id), true
		}
		return Spurious, true
	case iccBPR0:
		return uint64(ci.bpr0), true
	case iccBPR1:
		if ci.ctlr&1 != 0 {
			return uint64(min(ci.bpr0+1, 7)), true
		}
		return uint64(ci.bpr1), true
	case iccAP0R0, iccAP0R0 + 1, iccAP0R0 + 2, iccAP0R0 + 3, iccAP1R0 + 1, iccAP1R0 + 2, iccAP1R0 + 3:
		return 0, true // one register suffices for 32 levels; group 0 is unused by Linux
	case iccAP1R0:
		return uint64(activeBits(ci.active)), true
	case iccRPR:
		return uint64(g.running(c)), true
	case iccCTLR:
		return uint64(ci.ctlr | iccCTLRRO), true
	case iccSRE:
		return 7, true // SRE, DFB, DIB: system-register interface only
	case iccIGRPEN0:
		return b2u(ci.grpen[0]), true
	case iccIGRPEN1:
		return b2u(ci.grpen[1]), true
	case iccEOIR0, iccEOIR1, iccDIR, iccSGI1R, iccASGI1R, iccSGI0R:
		return 0, true // write-only
	}
	return 0, false
}

// WriteSysReg is the write half of ReadSysReg.
func (g *GICv3) WriteSysReg(c int, op0, op1, crn, crm, op2 uint32, v uint64) bool {
	enc, ok := iccEnc(op0, op1, crn, crm, op2)
	if !ok || c < 0 || c >= g.ncpu {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	ci := &g.cpu[c]
	switch enc {
	case iccPMR:
		ci.pmr = uint8(v) & priMask
	case iccEOIR0, iccEOIR1:
		g.eoi(c, uint32(v), ci.ctlr&2 != 0)
	case iccDIR:
		g.deactivate(c, uint32(v))
	case iccBPR0:
		ci.bpr0 = max(uint8(v&7), g.minBPR(0))
	case iccBPR1:
		if ci.ctlr&1 == 0 {
			ci.bpr1 = max(uint8(v&7), g.minBPR(1))
		}
	case iccAP1R0, iccAP1R0 + 1, iccAP1R0 + 2, iccAP1R0 + 3:
		if enc == iccAP1R0 && v == 0 {
			ci.active = ci.active[:0]
		}
	case iccAP0R0, iccAP0R0 + 1, iccAP0R0 + 2, iccAP0R0 + 3, iccSRE, iccIAR0, iccIAR1, iccHPPIR0, iccHPPIR1, iccRPR:
		// read-only or RAO/WI
	case iccCTLR:
		ci.ctlr = uint32(v) & iccCTLRWritable
	case iccIGRPEN0:
		ci.grpen[0] = v&1 != 0
	case iccIGRPEN1:
		ci.grpen[1] = v&1 != 0
	case iccSGI1R, iccASGI1R, iccSGI0R:
		g.sgi(c, v)
	default:
		return false
	}
	g.update()
	return true
}

// sgi generates the SGI an ICC_SGI*R write describes: to every other CPU (IRM), or to
// the CPUs of the target list within the given Aff3.Aff2.Aff1 cluster.
func (g *GIC) sgi(src int, v uint64) {
	id := int(v >> 24 & 15)
	if v&(1<<40) != 0 {
		for t := range g.ncpu {
			if t != src {
				g.sendSGI(src, t, id)
			}
		}
		return
	}
	cluster := (v>>48&0xff)<<32 | (v>>32&0xff)<<16 | (v>>16&0xff)<<8
	rs := (v >> 44 & 15) * 16
	for t := range g.ncpu {
		a := g.aff[t]
		if a&^0xff != cluster {
			continue
		}
		if a0 := a & 0xff; a0 >= rs && a0 < rs+16 && v&(1<<(a0-rs)) != 0 {
			g.sendSGI(src, t, id)
		}
	}
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

package intc

import "gemu/hw/bus"

// GICv2 register offsets outside the shared bank.
const (
	gicdCTLR      = 0x000
	gicdTYPER     = 0x004
	gicdIIDR      = 0x008
	gicdSGIR      = 0xf00
	gicdCPENDSGIR = 0xf10
	gicdSPENDSGIR = 0xf20
	gicdPIDR2v2   = 0xfe8

	giccCTLR  = 0x00
	giccPMR   = 0x04
	giccBPR   = 0x08
	giccIAR   = 0x0c
	giccEOIR  = 0x10
	giccRPR   = 0x14
	giccHPPIR = 0x18
	giccABPR  = 0x1c
	giccAIAR  = 0x20
	giccAEOIR = 0x24
	giccAHPPI = 0x28
	giccAPR0  = 0xd0
	giccIIDR  = 0xfc
	giccDIR   = 0x1000

	giccEOImode = 1 << 9 // EOImodeS: EOIR only drops priority, DIR deactivates
)

// GICv2 is an ARM GIC-400 style controller for up to 8 CPUs. Its distributor banks the
// SGI/PPI registers per CPU and its CPU interface is per CPU, so each CPU reaches them
// through its own views (a board gives each vCPU its own MMIO bus with these views).
type GICv2 struct{ *GIC }

// NewV2 returns a GICv2 for ncpu (1-8) CPUs.
func NewV2(ncpu int) *GICv2 {
	if ncpu < 1 || ncpu > 8 {
		panic("intc: GICv2 supports 1 to 8 CPUs")
	}
	g := &GICv2{newGIC(ncpu, false)}
	for i := range g.cpu {
		g.cpu[i].pmr = 0 // GICC_PMR resets to 0: everything masked
	}
	return g
}

// Distributor returns the 4 KiB distributor. Its SGI and PPI registers are banked:
// an access sees the bank of the vCPU making it (bus.Access.CPU).
func (g *GICv2) Distributor() bus.Device {
	return banked{g.GIC, func(c int) view { return v2dist{g.GIC, c} }}
}

// CPUInterface returns the 8 KiB CPU interface; each vCPU reaches its own.
func (g *GICv2) CPUInterface() bus.Device {
	return banked{g.GIC, func(c int) view { return v2cpu{g.GIC, c} }}
}

// view is one CPU's bank of a banked register block.
type view interface {
	Read(off uint64, data []byte)
	Write(off uint64, data []byte)
}

// banked dispatches an access to the bank of the CPU making it. An access no vCPU
// makes (none should: the GIC is not a DMA target) reads as zero and is ignored.
type banked struct {
	g    *GIC
	bank func(c int) view
}

func (b banked) Read(a bus.Access, off uint64, data []byte) {
	if a.CPU < 0 || a.CPU >= b.g.ncpu {
		clear(data)
		return
	}
	b.bank(a.CPU).Read(off, data)
}

func (b banked) Write(a bus.Access, off uint64, data []byte) {
	if a.CPU >= 0 && a.CPU < b.g.ncpu {
		b.bank(a.CPU).Write(off, data)
	}
}

type v2dist struct {
	g *GIC
	c int
}

func (d v2dist) Read(off uint64, data []byte) {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	access(off, data, false, d.read, nil)
}

func (d v2dist) Write(off uint64, data []byte) {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	access(off, data, true, nil, d.write)
}

func (d v2dist) read(off uint64) uint32 {
	g := d.g
	switch {
	case off == gicdCTLR:
		return g.ctlr
	case off == gicdTYPER:
		return uint32(NumIRQ/32-1) | uint32(g.ncpu-1)<<5
	case off == gicdIIDR:
		return 0x0200143b
	case off >= regIGROUPR && off < regBankEnd:
		return g.bankRead(d.c, off, 0, NumIRQ)
	case off >= gicdCPENDSGIR && off < gicdCPENDSGIR+0x20:
		first := int(off-gicdCPENDSGIR) % 0x10
		var v uint32
		for i := range 4 {
			v |= uint32(g.priv[d.c][first+i].sgiSrc) << (8 * i)
		}
		return v
	case off == gicdPIDR2v2:
		return 0x2b // ArchRev 2
	}
	return 0
}

func (d v2dist) write(off uint64, v, mask uint32) {
	g := d.g
	switch {
	case off == gicdCTLR:
		g.ctlr = merge(g.ctlr, v, mask) & 3
		g.update()
	case off >= regIGROUPR && off < regBankEnd:
		g.bankWrite(d.c, off, v, mask, 0, NumIRQ)
	case off == gicdSGIR && mask == ^uint32(0):
		id := int(v & 15)
		var list uint32
		switch v >> 24 & 3 {
		case 0:
			list = v >> 16 & 0xff
		case 1:
			list = (1<<g.ncpu - 1) &^ (1 << d.c)
		case 2:
			list = 1 << d.c
		}
		for t := range g.ncpu {
			if list&(1<<t) != 0 {
				g.sendSGI(d.c, t, id)
			}
		}
		g.update()
	case off >= gicdCPENDSGIR && off < gicdSPENDSGIR+0x10:
		set := off >= gicdSPENDSGIR
		first := int(off-gicdCPENDSGIR) % 0x10
		for i := range 4 {
			b := uint8(v>>(8*i)) & uint8(1<<g.ncpu-1)
			if mask&(0xff<<(8*i)) == 0 || b == 0 {
				continue
			}
			q := &g.priv[d.c][first+i]
			if set {
				q.sgiSrc |= b
			} else {
				q.sgiSrc &^= b
			}
			q.latched = q.sgiSrc != 0
		}
		g.update()
	}
}

type v2cpu struct {
	g *GIC
	c int
}

func (d v2cpu) Read(off uint64, data []byte) {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	access(off, data, false, d.read, nil)
}

func (d v2cpu) Write(off uint64, data []byte) {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	access(off, data, true, nil, d.write)
}

func (d v2cpu) read(off uint64) uint32 {
	g, ci := d.g, &d.g.cpu[d.c]
	switch off {
	case giccCTLR:
		return ci.ctlr
	case giccPMR:
		return uint32(ci.pmr)
	case giccBPR, giccABPR:
		return uint32(ci.bpr0)
	case giccIAR, giccAIAR:
		return g.ack(d.c, -1)
	case giccRPR:
		return uint32(g.running(d.c))
	case giccHPPIR, giccAHPPI:
		id := g.hppi(d.c, -1)
		if id < 0 {
			return Spurious
		}
		if id < NumSGI {
			q := g.get(d.c, id)
			src := 0
			for q.sgiSrc&(1<<src) == 0 && src < 7 {
				src++
			}
			return uint32(id) | uint32(src)<<10
		}
		return uint32(id)
	case giccAPR0:
		return activeBits(ci.active)
	case giccIIDR:
		return 0x0202143b
	}
	return 0
}

func (d v2cpu) write(off uint64, v, mask uint32) {
	g, ci := d.g, &d.g.cpu[d.c]
	switch off {
	case giccCTLR:
		ci.ctlr = merge(ci.ctlr, v, mask) & (0x1f | giccEOImode)
		g.update()
	case giccPMR:
		ci.pmr = uint8(v) & priMask
		g.update()
	case giccBPR, giccABPR:
		ci.bpr0 = max(uint8(v&7), g.minBPR(0))
		g.update()
	case giccEOIR, giccAEOIR:
		g.eoi(d.c, v, ci.ctlr&giccEOImode != 0)
	case giccDIR:
		g.deactivate(d.c, v)
	case giccAPR0:
		if v == 0 {
			ci.active = ci.active[:0]
			g.update()
		}
	}
}

// activeBits is the GICC_APR0/ICC_AP1R0 view of the active priorities: bit n set for
// each active group priority n (5 bits of priority → 32 bits).
func activeBits(active []uint8) uint32 {
	var v uint32
	for _, p := range active {
		v |= 1 << (p >> (8 - priBits))
	}
	return v
}

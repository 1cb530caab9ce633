// Package intc owns the ARM Generic Interrupt Controller models of the virt board:
// GICv2 (memory-mapped distributor and CPU interface, 8-CPU target lists) and GICv3
// (distributor with affinity routing, one redistributor per CPU, and the CPU interface
// as ICC_* system registers). Both share one core: per-interrupt enable, pending,
// active, group, priority and trigger state, priority arbitration against each CPU's
// priority mask and running priority, and the CPU's IRQ/FIQ lines.
//
// There is no security extension (GICD_CTLR.DS = 1, a single security state), no LPIs
// and no ITS: what a Linux guest at EL1 uses. It must not know about accelerators,
// boards or devices: the board wires device lines to SPI/PPI inputs and CPU outputs.
package intc

import (
	"encoding/binary"
	"fmt"
	"sync"

	"gemu/hw/bus"
)

// Output is a CPU's interrupt inputs (the arm vCPU implements it).
type Output interface {
	SetIRQ(level bool)
	SetFIQ(level bool)
}

// Interrupt ID space.
const (
	NumSGI   = 16
	NumPriv  = 32 // SGIs and PPIs, banked per CPU
	Spurious = 1023
	// NumIRQ is the number of interrupt IDs implemented: 32 private and 256 SPIs, as
	// QEMU's virt (NUM_IRQS). The virt board's devices use SPIs 0-47, its GICv2m MSI
	// frame SPIs 48-111.
	NumIRQ = 288
)

// priMask keeps the 5 implemented priority bits (32 levels), as QEMU's GICs do.
const (
	priMask = 0xf8
	priBits = 5
	idle    = 0xff
)

type irq struct {
	enabled bool
	latched bool // edge seen, or pending set by software
	level   bool // input line level (level-sensitive interrupts pend while high)
	edge    bool // ICFGR: edge-triggered
	active  bool
	group   uint8 // 0 or 1
	prio    uint8
	targets uint8  // GICv2 ITARGETSR of an SPI
	route   uint64 // GICv3 GICD_IROUTER of an SPI
	sgiSrc  uint8  // GICv2: CPUs that sent this SGI and are not yet acknowledged
}

func (q *irq) pending() bool { return q.latched || (q.level && !q.edge) }

type cpuIface struct {
	ctlr     uint32 // GICC_CTLR (v2) or ICC_CTLR_EL1 (v3)
	pmr      uint8
	bpr0     uint8
	bpr1     uint8
	grpen    [2]bool // v3 ICC_IGRPEN0/1_EL1
	active   []uint8 // priorities of acknowledged, not yet dropped interrupts, in order
	irqOut   bool
	fiqOut   bool
	sleeping bool // v3 GICR_WAKER.ProcessorSleep
}

// GIC is the shared core. All state is under mu; every mutation ends with update,
// which drives the CPU lines.
type GIC struct {
	mu   sync.Mutex
	v3   bool
	ncpu int
	ctlr uint32 // GICD_CTLR
	spi  [NumIRQ - NumPriv]irq
	priv [][NumPriv]irq
	cpu  []cpuIface
	out  []Output
	aff  []uint64 // GICv3: each CPU's MPIDR affinity (Aff3<<32 | Aff2<<16 | Aff1<<8 | Aff0)
}

func newGIC(ncpu int, v3 bool) *GIC {
	g := &GIC{v3: v3, ncpu: ncpu, priv: make([][NumPriv]irq, ncpu), cpu: make([]cpuIface, ncpu), out: make([]Output, ncpu)}
	for c := range g.priv {
		for i := range NumSGI {
			g.priv[c][i].edge = true
			if !v3 {
				g.priv[c][i].enabled = true // GICv2 SGIs: enable bits RAO/WI here, as in QEMU
			}
		}
		g.cpu[c].bpr0, g.cpu[c].bpr1 = g.minBPR(0), g.minBPR(1)
		g.cpu[c].sleeping = true
	}
	return g
}

// Connect attaches CPU c's interrupt inputs. Until then its lines are not driven.
func (g *GIC) Connect(c int, o Output) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.out[c] = o
	g.update()
}

// minBPR is the smallest binary point for 5 priority bits (group 1 is one more).
func (g *GIC) minBPR(group int) uint8 {
	if g.v3 {
		return uint8(7-priBits) + uint8(group)
	}
	return 7 - priBits
}

// get returns interrupt id as seen by CPU c (banked for SGIs and PPIs).
func (g *GIC) get(c, id int) *irq {
	if id < NumPriv {
		return &g.priv[c][id]
	}
	return &g.spi[id-NumPriv]
}

// targets reports whether SPI q is delivered to CPU c.
func (g *GIC) targets(q *irq, c int) bool {
	if !g.v3 {
		return q.targets&(1<<c) != 0
	}
	if q.route&(1<<31) != 0 { // IRM: any participating CPU; gemu picks the first awake one
		for i := range g.cpu {
			if !g.cpu[i].sleeping && g.cpu[i].grpen[1] {
				return i == c
			}
		}
		return c == 0
	}
	return q.route&0xff_00ff_ffff == g.aff[c]
}

func (g *GIC) groupEnabled(c int, grp uint8) bool {
	if g.ctlr&(1<<grp) == 0 {
		return false
	}
	if g.v3 {
		return g.cpu[c].grpen[grp]
	}
	return g.cpu[c].ctlr&(1<<grp) != 0
}

// hppi returns CPU c's highest-priority pending, enabled, inactive interrupt whose group
// is enabled (ties go to the lowest ID), or -1. group < 0 accepts both groups.
func (g *GIC) hppi(c int, group int) int {
	best, bestPrio := -1, 0x100
	consider := func(id int, q *irq) {
		if !q.enabled || q.active || !q.pending() || int(q.prio) >= bestPrio {
			return
		}
		if group >= 0 && int(q.group) != group || !g.groupEnabled(c, q.group) {
			return
		}
		best, bestPrio = id, int(q.prio)
	}
	for id := range NumPriv {
		consider(id, &g.priv[c][id])
	}
	for i := range g.spi {
		if q := &g.spi[i]; q.enabled && g.targets(q, c) {
			consider(i+NumPriv, q)
		}
	}
	return best
}

func (g *GIC) running(c int) uint8 {
	if a := g.cpu[c].active; len(a) > 0 {
		return a[len(a)-1]
	}
	return idle
}

// preempts reports whether priority p may interrupt CPU c now: below the priority mask
// and with a higher group priority (per the binary point) than the running priority.
func (g *GIC) preempts(c int, p uint8, group uint8) bool {
	ci := &g.cpu[c]
	if p >= ci.pmr {
		return false
	}
	shift := uint(ci.bpr0) + 1
	if g.v3 && group == 1 && ci.ctlr&1 == 0 { // ICC_CTLR.CBPR clear: group 1 has its own BPR
		shift = uint(ci.bpr1)
	}
	mask := uint8(0xff << shift)
	r := g.running(c)
	return r == idle || p&mask < r&mask
}

// update recomputes every CPU's IRQ and FIQ line.
func (g *GIC) update() {
	for c := range g.cpu {
		irqL, fiqL := false, false
		if id := g.hppi(c, -1); id >= 0 {
			q := g.get(c, id)
			if g.preempts(c, q.prio, q.group) {
				fiq := q.group == 0 && (g.v3 || g.cpu[c].ctlr&(1<<3) != 0)
				fiqL, irqL = fiq, !fiq
			}
		}
		ci := &g.cpu[c]
		if o := g.out[c]; o != nil {
			if irqL != ci.irqOut {
				o.SetIRQ(irqL)
			}
			if fiqL != ci.fiqOut {
				o.SetFIQ(fiqL)
			}
			ci.irqOut, ci.fiqOut = irqL, fiqL
		}
	}
}

// ack acknowledges CPU c's highest pending interrupt of group (or any group if < 0),
// making it active and raising the running priority. It returns the IAR value.
func (g *GIC) ack(c int, group int) uint32 {
	id := g.hppi(c, group)
	if id < 0 {
		return Spurious
	}
	q := g.get(c, id)
	if !g.preempts(c, q.prio, q.group) {
		return Spurious
	}
	val := uint32(id)
	if !g.v3 && id < NumSGI {
		src := 0
		for q.sgiSrc&(1<<src) == 0 && src < 7 {
			src++
		}
		q.sgiSrc &^= 1 << src
		q.latched = q.sgiSrc != 0
		val |= uint32(src) << 10
	} else {
		q.latched = false
	}
	q.active = true
	g.cpu[c].active = append(g.cpu[c].active, q.prio)
	g.update()
	return val
}

// eoi is a priority drop (and, unless EOImode splits them, a deactivation) of id.
func (g *GIC) eoi(c int, id uint32, eoiMode bool) {
	id &= 0x3ff
	if id >= NumIRQ {
		return
	}
	if a := g.cpu[c].active; len(a) > 0 {
		g.cpu[c].active = a[:len(a)-1]
	}
	if !eoiMode {
		g.get(c, int(id)).active = false
	}
	g.update()
}

func (g *GIC) deactivate(c int, id uint32) {
	if id &= 0x3ff; id < NumIRQ {
		g.get(c, int(id)).active = false
		g.update()
	}
}

// setLine drives an interrupt input: a rising edge latches an edge-triggered interrupt,
// a level-sensitive one pends while the line is high.
func (g *GIC) setLine(q *irq, level bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if level && !q.level && q.edge {
		q.latched = true
	}
	q.level = level
	g.update()
}

// pulseSPI latches SPI n as one edge whatever its line's level: a message-signalled
// interrupt is an event, and two MSIs raised by two goroutines at once must not merge
// into one edge with the second lost while the first held the line high.
func (g *GIC) pulseSPI(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	// Pending as a write to GICD_ISPENDR makes it (for a level-configured SPI too,
	// which has no line to hold the event).
	g.spi[n].latched = true
	g.update()
}

// SPI returns the input line of shared peripheral interrupt n (INTID 32+n).
func (g *GIC) SPI(n int) bus.IRQ {
	if n < 0 || n >= NumIRQ-NumPriv {
		panic(fmt.Sprintf("intc: SPI %d out of range", n))
	}
	return bus.IRQFunc(func(l bool) { g.setLine(&g.spi[n], l) })
}

// PPI returns CPU c's input line of private interrupt INTID id (16-31).
func (g *GIC) PPI(c, id int) bus.IRQ {
	if id < NumSGI || id >= NumPriv || c < 0 || c >= g.ncpu {
		panic(fmt.Sprintf("intc: PPI %d of CPU %d out of range", id, c))
	}
	return bus.IRQFunc(func(l bool) { g.setLine(&g.priv[c][id], l) })
}

// sendSGI pends SGI id on CPU target, sent by CPU src.
func (g *GIC) sendSGI(src, target int, id int) {
	q := &g.priv[target][id&15]
	q.latched = true
	q.sgiSrc |= 1 << src
}

// Register bank shared by GICD (both versions) and the GICv3 redistributor's SGI frame:
// offsets of IGROUPR..ICFGR relative to the frame.
const (
	regIGROUPR    = 0x080
	regISENABLER  = 0x100
	regICENABLER  = 0x180
	regISPENDR    = 0x200
	regICPENDR    = 0x280
	regISACTIVER  = 0x300
	regICACTIVER  = 0x380
	regIPRIORITYR = 0x400
	regITARGETSR  = 0x800
	regICFGR      = 0xc00
	regBankEnd    = 0xd00
)

// bankRead reads the 32-bit word at off (4-aligned) of the per-interrupt bank, for
// CPU c, where only IDs in [lo, hi) exist (others read as zero).
func (g *GIC) bankRead(c int, off uint64, lo, hi int) uint32 {
	var v uint32
	bits := func(base uint64, f func(q *irq) bool) uint32 {
		first := int(off-base) * 8
		for i := range 32 {
			if id := first + i; id >= lo && id < hi && f(g.get(c, id)) {
				v |= 1 << i
			}
		}
		return v
	}
	bytes := func(base uint64, f func(id int, q *irq) uint8) uint32 {
		first := int(off - base)
		for i := range 4 {
			if id := first + i; id >= lo && id < hi {
				v |= uint32(f(id, g.get(c, id))) << (8 * i)
			}
		}
		return v
	}
	switch {
	case off < regIGROUPR:
	case off < regISENABLER:
		return bits(regIGROUPR, func(q *irq) bool { return q.group == 1 })
	case off < regISPENDR:
		return bits(regISENABLER+(off-regISENABLER)/0x80*0x80, func(q *irq) bool { return q.enabled })
	case off < regISACTIVER:
		return bits(regISPENDR+(off-regISPENDR)/0x80*0x80, func(q *irq) bool { return q.pending() })
	case off < regIPRIORITYR:
		return bits(regISACTIVER+(off-regISACTIVER)/0x80*0x80, func(q *irq) bool { return q.active })
	case off < regITARGETSR:
		return bytes(regIPRIORITYR, func(_ int, q *irq) uint8 { return q.prio })
	case off < regICFGR:
		if g.v3 {
			return 0
		}
		return bytes(regITARGETSR, func(id int, q *irq) uint8 {
			if id < NumPriv {
				return 1 << c
			}
			return q.targets
		})
	case off < regBankEnd:
		first := int(off-regICFGR) * 4
		for i := range 16 {
			if id := first + i; id >= lo && id < hi && g.get(c, id).edge {
				v |= 2 << (2 * i)
			}
		}
	}
	return v
}

// bankWrite writes the bytes of val selected by mask to the word at off.
func (g *GIC) bankWrite(c int, off uint64, val, mask uint32, lo, hi int) {
	val &= mask
	bits := func(base uint64, f func(q *irq, id int)) {
		first := int(off-base) * 8
		for i := range 32 {
			if id := first + i; id >= lo && id < hi && val&(1<<i) != 0 {
				f(g.get(c, id), id)
			}
		}
	}
	bytes := func(base uint64, f func(q *irq, id int, b uint8)) {
		first := int(off - base)
		for i := range 4 {
			if id := first + i; id >= lo && id < hi && mask&(0xff<<(8*i)) != 0 {
				f(g.get(c, id), id, uint8(val>>(8*i)))
			}
		}
	}
	switch {
	case off < regIGROUPR:
	case off < regISENABLER:
		first := int(off-regIGROUPR) * 8
		for i := range 32 {
			if id := first + i; id >= lo && id < hi && mask&(1<<i) != 0 {
				g.get(c, id).group = uint8(val >> i & 1)
			}
		}
	case off < regICENABLER:
		bits(regISENABLER, func(q *irq, _ int) { q.enabled = true })
	case off < regISPENDR:
		bits(regICENABLER, func(q *irq, id int) {
			if g.v3 || id >= NumSGI {
				q.enabled = false
			}
		})
	case off < regICPENDR:
		bits(regISPENDR, func(q *irq, id int) {
			if g.v3 || id >= NumSGI { // GICv2 SGIs pend through SPENDSGIR
				q.latched = true
			}
		})
	case off < regISACTIVER:
		bits(regICPENDR, func(q *irq, id int) {
			if g.v3 || id >= NumSGI {
				q.latched = false
			}
		})
	case off < regICACTIVER:
		bits(regISACTIVER, func(q *irq, _ int) { q.active = true })
	case off < regIPRIORITYR:
		bits(regICACTIVER, func(q *irq, _ int) { q.active = false })
	case off < regITARGETSR:
		bytes(regIPRIORITYR, func(q *irq, _ int, b uint8) { q.prio = b & priMask })
	case off < regICFGR:
		if !g.v3 {
			bytes(regITARGETSR, func(q *irq, id int, b uint8) {
				if id >= NumPriv {
					q.targets = b & uint8(1<<g.ncpu-1)
				}
			})
		}
	case off < regBankEnd:
		first := int(off-regICFGR) * 4
		for i := range 16 {
			if id := first + i; id >= NumSGI && id >= lo && id < hi && mask&(2<<(2*i)) != 0 {
				g.get(c, id).edge = val&(2<<(2*i)) != 0
			}
		}
	}
	g.update()
}

// access splits an MMIO access of 1, 2, 4 or 8 bytes into 32-bit word operations.
func access(off uint64, data []byte, write bool, rd func(off uint64) uint32, wr func(off uint64, v, mask uint32)) {
	if len(data) == 8 && off%8 == 0 {
		if write {
			wr(off, binary.LittleEndian.Uint32(data), ^uint32(0))
			wr(off+4, binary.LittleEndian.Uint32(data[4:]), ^uint32(0))
		} else {
			binary.LittleEndian.PutUint32(data, rd(off))
			binary.LittleEndian.PutUint32(data[4:], rd(off+4))
		}
		return
	}
	if len(data) > 4 || off%uint64(len(data)) != 0 {
		for i := range data { // unsupported width or misaligned: RAZ/WI
			data[i] = 0
		}
		return
	}
	shift := (off & 3) * 8
	word := off &^ 3
	if write {
		var b [4]byte
		copy(b[:], data)
		mask := uint32(1<<(8*len(data))-1) << shift
		if len(data) == 4 {
			mask = ^uint32(0)
		}
		wr(word, binary.LittleEndian.Uint32(b[:])<<shift, mask)
		return
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], rd(word)>>shift)
	copy(data, b[:])
}

func merge(old, v, mask uint32) uint32 { return old&^mask | v&mask }

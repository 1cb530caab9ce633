package intc

import (
	"encoding/binary"
	"testing"

	"gemu/hw/bus"
)

type lines struct{ irq, fiq bool }

func (l *lines) SetIRQ(v bool) { l.irq = v }
func (l *lines) SetFIQ(v bool) { l.fiq = v }

func rd32(d bus.Device, off uint64) uint32 {
	var b [4]byte
	d.Read(bus.Host, off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func wr32(d bus.Device, off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	d.Write(bus.Host, off, b[:])
}

func wr8(d bus.Device, off uint64, v uint8) { d.Write(bus.Host, off, []byte{v}) }

func rd8(d bus.Device, off uint64) uint8 {
	var b [1]byte
	d.Read(bus.Host, off, b[:])
	return b[0]
}

// v2 sets up a 2-CPU GICv2 the way Linux's gic driver does: distributor and both CPU
// interfaces enabled, PMR 0xf0.
func v2(t *testing.T) (*GICv2, []*lines) {
	g := NewV2(2)
	out := []*lines{{}, {}}
	for c := range out {
		g.Connect(c, out[c])
		wr32(at(g.CPUInterface(), c), giccPMR, 0xf0)
		wr32(at(g.CPUInterface(), c), giccCTLR, 1)
	}
	wr32(at(g.Distributor(), 0), gicdCTLR, 1)
	return g, out
}

func TestV2Identification(t *testing.T) {
	g := NewV2(2)
	if ty := rd32(at(g.Distributor(), 0), gicdTYPER); ty&0x1f != NumIRQ/32-1 || ty>>5&7 != 1 {
		t.Fatalf("GICD_TYPER %#x", ty)
	}
	// ITARGETSR0-7 are banked: each CPU reads its own bit (Linux derives its CPU mask).
	for c := range 2 {
		if v := rd32(at(g.Distributor(), c), regITARGETSR); v != 0x01010101<<c {
			t.Fatalf("CPU%d ITARGETSR0 = %#x", c, v)
		}
	}
	wr32(at(g.CPUInterface(), 0), giccPMR, 0xff)
	if v := rd32(at(g.CPUInterface(), 0), giccPMR); v != 0xf8 {
		t.Fatalf("PMR keeps %#x, want 5 bits 0xf8", v)
	}
	if v := rd32(at(g.CPUInterface(), 0), giccIAR); v != Spurious {
		t.Fatalf("idle IAR %d", v)
	}
}

func TestV2LevelSPI(t *testing.T) {
	g, out := v2(t)
	d, cpu0 := at(g.Distributor(), 0), at(g.CPUInterface(), 0)
	wr32(d, regISENABLER+4, 1<<1) // SPI 1 = INTID 33
	wr8(d, regIPRIORITYR+33, 0xa0)
	wr8(d, regITARGETSR+33, 1) // CPU 0
	line := g.SPI(1)
	line.Set(true)
	if !out[0].irq || out[1].irq {
		t.Fatalf("IRQ lines %v %v, want CPU0 only", out[0].irq, out[1].irq)
	}
	if p := rd32(d, regISPENDR+4); p != 2 {
		t.Fatalf("ISPENDR1 %#x", p)
	}
	if id := rd32(cpu0, giccIAR); id != 33 {
		t.Fatalf("IAR %d", id)
	}
	if out[0].irq {
		t.Fatal("active interrupt still signalled")
	}
	if rd32(cpu0, giccRPR) != 0xa0 || rd32(d, regISACTIVER+4) != 2 {
		t.Fatal("running priority / active state")
	}
	wr32(cpu0, giccEOIR, 33)
	if !out[0].irq {
		t.Fatal("level still high after EOI: must pend again")
	}
	line.Set(false)
	if out[0].irq || rd32(d, regISPENDR+4) != 0 {
		t.Fatal("lowered level must stop pending")
	}
	// Retarget to CPU 1.
	wr8(d, regITARGETSR+33, 2)
	line.Set(true)
	if out[0].irq || !out[1].irq {
		t.Fatal("retargeted SPI not on CPU1")
	}
	wr32(d, regICENABLER+4, 2)
	if out[1].irq {
		t.Fatal("disabled SPI still signalled")
	}
}

func TestV2EdgePriorityPreemption(t *testing.T) {
	g, out := v2(t)
	d, cpu0 := at(g.Distributor(), 0), at(g.CPUInterface(), 0)
	wr32(d, regISENABLER+4, 0x7) // INTID 32, 33, 34
	for id, p := range map[int]uint8{32: 0xc0, 33: 0x80, 34: 0xa0} {
		wr8(d, regIPRIORITYR+uint64(id), p)
		wr8(d, regITARGETSR+uint64(id), 1)
	}
	wr32(d, regICFGR+8, 0x2a) // 32-34 edge
	for _, n := range []int{0, 2} {
		g.SPI(n).Set(true)
		g.SPI(n).Set(false)
	}
	if !out[0].irq {
		t.Fatal("edge not latched")
	}
	if id := rd32(cpu0, giccIAR); id != 34 {
		t.Fatalf("IAR %d, want 34 (priority 0xa0 beats 0xc0)", id)
	}
	if out[0].irq {
		t.Fatal("0xc0 must not preempt running 0xa0")
	}
	g.SPI(1).Set(true) // 0x80 preempts
	if !out[0].irq || rd32(cpu0, giccHPPIR) != 33 {
		t.Fatal("higher priority does not preempt")
	}
	if id := rd32(cpu0, giccIAR); id != 33 || rd32(cpu0, giccRPR) != 0x80 {
		t.Fatalf("nested IAR %d", id)
	}
	wr32(cpu0, giccEOIR, 33)
	if rd32(cpu0, giccRPR) != 0xa0 {
		t.Fatal("priority drop did not restore 0xa0")
	}
	wr32(cpu0, giccEOIR, 34)
	if id := rd32(cpu0, giccIAR); id != 32 {
		t.Fatalf("IAR %d, want the remaining edge 32", id)
	}
	wr32(cpu0, giccEOIR, 32)
	// PMR masks.
	wr32(cpu0, giccPMR, 0x80)
	wr32(d, regISPENDR+4, 1<<2) // software-pend 34 (0xa0)
	if out[0].irq || rd32(cpu0, giccIAR) != Spurious {
		t.Fatal("PMR 0x80 must mask priority 0xa0")
	}
	wr32(cpu0, giccPMR, 0xf0)
	if !out[0].irq {
		t.Fatal("unmasked")
	}
}

func TestV2SGIAndSplitEOI(t *testing.T) {
	g, out := v2(t)
	d0, d1 := at(g.Distributor(), 0), at(g.Distributor(), 1)
	cpu1 := at(g.CPUInterface(), 1)
	wr32(d1, regIPRIORITYR, 0x80808080)
	wr32(d0, gicdSGIR, 2<<16|3) // CPU0 → CPU1, SGI 3
	if out[0].irq || !out[1].irq {
		t.Fatal("SGI not on CPU1 only")
	}
	wr32(d1, gicdSGIR, 1<<24|3) // CPU1 → all but self (CPU0)
	if !out[0].irq {
		t.Fatal("filter 'all but self'")
	}
	if v := rd32(cpu1, giccIAR); v != 3 { // source CPU 0 in bits 12:10
		t.Fatalf("CPU1 IAR %#x", v)
	}
	if v := rd32(at(g.CPUInterface(), 0), giccIAR); v != 1<<10|3 {
		t.Fatalf("CPU0 IAR %#x, want source CPU1", v)
	}
	// EOImode: EOIR drops priority only, DIR deactivates.
	wr32(cpu1, giccCTLR, 1|giccEOImode)
	wr32(cpu1, giccEOIR, 3)
	if rd32(cpu1, giccRPR) != idle || rd32(d1, regISACTIVER)&8 == 0 {
		t.Fatal("split EOI: priority must drop, SGI stay active")
	}
	wr32(d0, gicdSGIR, 2<<16|3)
	if out[1].irq {
		t.Fatal("active SGI re-signalled before deactivation")
	}
	wr32(cpu1, giccDIR, 3)
	if !out[1].irq {
		t.Fatal("pending SGI not signalled after DIR")
	}
	if rd8(d1, gicdSPENDSGIR+3) != 1 {
		t.Fatal("SPENDSGIR source bits")
	}
}

func v3(t *testing.T) (*GICv3, []*lines) {
	g := NewV3([]uint64{0, 1})
	out := []*lines{{}, {}}
	r := g.Redistributors()
	for c := range out {
		g.Connect(c, out[c])
		wr32(r, uint64(c)*RedistStride+gicrWAKER, 0)
		g.WriteSysReg(c, 3, 0, 4, 6, 0, 0xf0) // PMR
		g.WriteSysReg(c, 3, 0, 12, 12, 7, 1)  // IGRPEN1
	}
	wr32(g.Distributor(), gicdCTLR, 0x13)
	return g, out
}

func TestV3Identification(t *testing.T) {
	g := NewV3([]uint64{0, 1, 2})
	d, r := g.Distributor(), g.Redistributors()
	if rd32(d, gicdPIDR2)>>4&0xf != 3 || rd32(r, gicdPIDR2)>>4&0xf != 3 {
		t.Fatal("PIDR2 ArchRev must be 3 (Linux checks it)")
	}
	for c := uint64(0); c < 3; c++ {
		var b [8]byte
		r.Read(bus.Host, c*RedistStride+gicrTYPER, b[:])
		ty := binary.LittleEndian.Uint64(b[:])
		if ty>>32 != c || ty>>8&0xffff != c || (ty&(1<<4) != 0) != (c == 2) {
			t.Fatalf("GICR_TYPER of CPU%d = %#x", c, ty)
		}
	}
	if rd32(r, gicrWAKER) != 6 {
		t.Fatal("redistributor must reset asleep")
	}
	wr32(r, gicrWAKER, 0)
	if rd32(r, gicrWAKER) != 0 {
		t.Fatal("WAKER did not wake")
	}
	if v, ok := g.ReadSysReg(0, 3, 0, 12, 12, 5); !ok || v&1 == 0 {
		t.Fatal("ICC_SRE_EL1.SRE must read 1")
	}
	v, _ := g.ReadSysReg(0, 3, 0, 12, 12, 4)
	if v>>8&7 != priBits-1 {
		t.Fatalf("ICC_CTLR_EL1 PRIbits %#x", v)
	}
	g.WriteSysReg(0, 3, 0, 4, 6, 0, 0xff)
	if v, _ := g.ReadSysReg(0, 3, 0, 4, 6, 0); v != 0xf8 {
		t.Fatalf("PMR %#x", v)
	}
	if _, ok := g.ReadSysReg(0, 3, 0, 1, 0, 0); ok {
		t.Fatal("SCTLR_EL1 claimed by the GIC")
	}
}

func TestV3SPIRoutingAndAck(t *testing.T) {
	g, out := v3(t)
	d := g.Distributor()
	wr32(d, regIGROUPR+4, ^uint32(0))
	wr32(d, regISENABLER+4, 2) // INTID 33
	wr8(d, regIPRIORITYR+33, 0xa0)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 1) // Aff0 = 1: CPU 1
	d.Write(bus.Host, gicdIROUTER+8*33, b[:])
	g.SPI(1).Set(true)
	if out[0].irq || !out[1].irq {
		t.Fatal("IROUTER not honoured")
	}
	if v, _ := g.ReadSysReg(1, 3, 0, 12, 12, 2); v != 33 {
		t.Fatalf("HPPIR1 %d", v)
	}
	if v, _ := g.ReadSysReg(1, 3, 0, 12, 12, 0); v != 33 {
		t.Fatalf("IAR1 %d", v)
	}
	if v, _ := g.ReadSysReg(1, 3, 0, 12, 11, 3); v != 0xa0 {
		t.Fatalf("RPR %#x", v)
	}
	g.SPI(1).Set(false)
	g.WriteSysReg(1, 3, 0, 12, 12, 1, 33) // EOIR1
	if v, _ := g.ReadSysReg(1, 3, 0, 12, 11, 3); v != 0xff || out[1].irq {
		t.Fatal("EOIR1 did not drop and deactivate")
	}
	// Group 1 disabled at the CPU interface: nothing is signalled.
	g.WriteSysReg(1, 3, 0, 12, 12, 7, 0)
	g.SPI(1).Set(true)
	if out[1].irq {
		t.Fatal("IGRPEN1=0 must mask group 1")
	}
}

func TestV3SGIAndPPI(t *testing.T) {
	g, out := v3(t)
	r := g.Redistributors()
	for c := uint64(0); c < 2; c++ {
		sgi := c*RedistStride + gicrSGI
		wr32(r, sgi+regIGROUPR, ^uint32(0))
		wr32(r, sgi+regISENABLER, 0xffff|1<<27)
		wr8(r, sgi+regIPRIORITYR+27, 0x90)
	}
	// SGI 5 from CPU0 to target list {CPU1} in cluster 0.0.0.
	g.WriteSysReg(0, 3, 0, 12, 11, 5, 5<<24|1<<1)
	if out[0].irq || !out[1].irq {
		t.Fatal("SGI1R target list")
	}
	if v, _ := g.ReadSysReg(1, 3, 0, 12, 12, 0); v != 5 {
		t.Fatalf("IAR1 %d", v)
	}
	g.WriteSysReg(1, 3, 0, 12, 12, 1, 5)
	// IRM: everyone but the sender.
	g.WriteSysReg(1, 3, 0, 12, 11, 5, 1<<40|2<<24)
	if !out[0].irq || out[1].irq {
		t.Fatal("SGI1R IRM")
	}
	g.ReadSysReg(0, 3, 0, 12, 12, 0)
	g.WriteSysReg(0, 3, 0, 12, 12, 1, 2)
	// Virtual timer PPI 27, level.
	g.PPI(0, 27).Set(true)
	if !out[0].irq || out[1].irq {
		t.Fatal("PPI is per CPU")
	}
	if rd32(r, gicrSGI+regISPENDR) != 1<<27 {
		t.Fatal("GICR_ISPENDR0")
	}
	// Split EOI via ICC_CTLR_EL1.EOImode and ICC_DIR_EL1.
	g.WriteSysReg(0, 3, 0, 12, 12, 4, 2)
	g.ReadSysReg(0, 3, 0, 12, 12, 0)
	g.PPI(0, 27).Set(false)
	g.WriteSysReg(0, 3, 0, 12, 12, 1, 27)
	if rd32(r, gicrSGI+regISACTIVER) != 1<<27 {
		t.Fatal("EOImode=1: still active after EOIR")
	}
	g.WriteSysReg(0, 3, 0, 12, 11, 1, 27)
	if rd32(r, gicrSGI+regISACTIVER) != 0 {
		t.Fatal("DIR did not deactivate")
	}
}

// cpuView is a banked device as vCPU c reaches it: accesses carry c's bus.Access.
type cpuView struct {
	d bus.Device
	c int
}

func (v cpuView) Read(_ bus.Access, off uint64, data []byte) { v.d.Read(bus.CPUAccess(v.c), off, data) }
func (v cpuView) Write(_ bus.Access, off uint64, data []byte) {
	v.d.Write(bus.CPUAccess(v.c), off, data)
}

func at(d bus.Device, c int) bus.Device { return cpuView{d, c} }

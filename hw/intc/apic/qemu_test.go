package apic

import (
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/internal/pcoracle"
	"gemu/hw/timer"
)

// TestQEMUDifferential drives the xAPIC page through a guest driver's accesses in
// QEMU's pc (its userspace local APIC on TCG) and in this model, and compares every
// register read. The QEMU guest runs after SeaBIOS, so the script sets every register
// it reads first. Known differences, by choice, are compared on the defined bits
// only: QEMU stores an LVT or ICR-high value with its reserved bits and does not force
// LVT masks while the APIC is software-disabled; this model does as the SDM and KVM's
// in-kernel APIC (the other engine gemu runs the PC on) do.
func TestQEMUDifferential(t *testing.T) {
	const b = DefaultBase
	var s pcoracle.Script
	s.Readl(b+RegID, "ID").Readl(b+RegVersion, "version")
	s.Writel(b+RegSVR, 0x1ff).Readl(b+RegSVR, "SVR enabled")
	s.Writel(b+RegSVR, 0x10ff).Readl(b+RegSVR, "SVR bit 12")
	s.Writel(b+RegSVR, 0x1ff)
	s.Writel(b+RegTPR, 0x35).Readl(b+RegTPR, "TPR").Readl(b+RegPPR, "PPR from TPR")
	s.Writel(b+RegTPR, 0x1ff).Readl(b+RegTPR, "TPR 8 bits")
	s.Writel(b+RegTPR, 0).Readl(b+RegAPR, "APR").Readl(b+RegPPR, "PPR 0")
	s.Writel(b+RegLDR, 0x03000000).Readl(b+RegLDR, "LDR")
	s.Writel(b+RegLDR, 0xffffffff).Readl(b+RegLDR, "LDR reserved bits")
	s.Writel(b+RegDFR, 0x0fffffff).Readl(b+RegDFR, "DFR cluster")
	s.Writel(b+RegDFR, 0xffffffff).Readl(b+RegDFR, "DFR flat")
	s.Writel(b+RegLVTTimer, 0x20020).Readl(b+RegLVTTimer, "LVT timer periodic")
	s.Writel(b+RegLINT0, 0x8700).Readl(b+RegLINT0, "LINT0 ExtINT level")
	s.Writel(b+RegLINT1, 0x400).Readl(b+RegLINT1, "LINT1 NMI")
	s.Writel(b+RegLVTError, 0x1fe).ReadlMask(b+RegLVTError, 0x110ff, "LVT error (defined bits)")
	s.Writel(b+RegLVTTherm, 0x10000).Readl(b+RegLVTTherm, "LVT thermal")
	s.Writel(b+RegLVTPerf, 0x10000).Readl(b+RegLVTPerf, "LVT perf")
	s.Writel(b+RegLVTTimer, 0x10000)
	s.Writel(b+RegICRHigh, 0x01000000).Readl(b+RegICRHigh, "ICR high")
	s.Writel(b+RegICRLow, ShortSelf<<18|0x45).ReadlMask(b+RegICRLow, ^uint32(1<<12), "ICR low")
	s.Readl(b+RegIRR+0x20, "IRR after self IPI 0x45").Readl(b+RegTMR+0x20, "TMR edge")
	s.Writel(b+RegICRLow, ShortSelf<<18|1<<15|1<<14|0x66).Readl(b+RegIRR+0x30, "IRR level self IPI").Readl(b+RegTMR+0x30, "TMR level")
	s.Writel(b+RegICRLow, ShortAll<<18|0x87).Readl(b+RegIRR+0x40, "IRR all-including-self")
	s.Writel(b+RegICRLow, ShortOthers<<18|0x88).Readl(b+RegIRR+0x40, "IRR all-but-self")
	s.Writel(b+RegICRHigh, 0).Writel(b+RegICRLow, 0x99).Readl(b+RegIRR+0x40, "IRR physical to self")
	s.Writel(b+RegTPR, 0x50).Readl(b+RegPPR, "PPR with pending IRR")
	s.Writel(b+RegTPR, 0)
	s.Writel(b+RegEOI, 0).Readl(b+RegIRR+0x20, "IRR after EOI with nothing in service")
	for i := uint32(0); i < 8; i++ {
		s.Readl(b+RegISR+i*0x10, "ISR")
	}
	s.Writel(b+RegDivide, 0xb).Readl(b+RegDivide, "divide 1")
	s.Writel(b+RegDivide, 0xff).Readl(b+RegDivide, "divide reserved bits")
	s.Writel(b+RegInitial, 0).Readl(b+RegInitial, "initial 0").Readl(b+RegCurrent, "current 0")
	s.Writel(b+RegVersion, 0).Readl(b+RegVersion, "version read-only")
	s.Writel(b+RegPPR, 0xff).Readl(b+RegPPR, "PPR read-only")

	clk := timer.NewFake()
	sys := New(1, clk)
	mmio := bus.New()
	mmio.Insert(sys, "lapic", DefaultBase, PageSize)
	pcoracle.Compare(t, s, mmio, bus.New())
}

// TestQEMUDifferentialTimer runs the APIC timer in QEMU and here: one-shot and
// periodic expiries (waited for in the IRR, as the guest runs with interrupts off),
// counts, and mode changes.
func TestQEMUDifferentialTimer(t *testing.T) {
	const b = DefaultBase
	var s pcoracle.Script
	irr := func(v uint32) (uint32, uint32) { return b + RegIRR + (v>>5)<<4, 1 << (v & 31) }
	s.Writel(b+RegSVR, 0x1ff).Writel(b+RegLVTTimer, 0x10000).Writel(b+RegInitial, 0)
	s.Writel(b+RegDivide, 0xb)
	s.Writel(b+RegLVTTimer, 0xe5).Writel(b+RegInitial, 20000)
	a, m := irr(0xe5)
	s.WaitL(a, m, m)
	s.Readl(b+RegCurrent, "one-shot count after expiry").Readl(b+RegInitial, "initial kept").Readl(a, "IRR").Readl(b+RegLVTTimer, "LVT")
	s.Writel(b+RegDivide, 0x1).Writel(b+RegLVTTimer, 0x200e6).Writel(b+RegInitial, 30000)
	a, m = irr(0xe6)
	s.WaitL(a, m, m).Readl(a, "IRR periodic").Readl(b+RegLVTTimer, "LVT periodic")
	s.Writel(b+RegLVTTimer, 0x000e6).Readl(b+RegInitial, "initial after periodic→one-shot")
	s.Writel(b+RegInitial, 0).Readl(b+RegCurrent, "count stopped").Readl(b+RegDivide, "divide")
	s.Writel(b+RegLVTTimer, 0x10000)

	clk := timer.NewFake()
	sys := New(1, clk)
	mmio := bus.New()
	mmio.Insert(sys, "lapic", DefaultBase, PageSize)
	pcoracle.CompareTicks(t, s, mmio, bus.New(), func() { clk.Advance(time.Microsecond) })
}

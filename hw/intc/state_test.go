package intc

import (
	"testing"

	"gemu/hw/bus"
)

// dump reads every side-effect-free register a guest sees: the distributor's bank
// (per CPU for the banked part) and the CPU interface's PMR, BPR, RPR and HPPIR.
func dumpV2(g *GICv2) []uint32 {
	var v []uint32
	for c := range g.ncpu {
		d, ci := at(g.Distributor(), c), at(g.CPUInterface(), c)
		for off := uint64(0); off < regBankEnd; off += 4 {
			v = append(v, rd32(d, off))
		}
		v = append(v, rd32(ci, giccCTLR), rd32(ci, giccPMR), rd32(ci, giccBPR), rd32(ci, giccRPR), rd32(ci, giccHPPIR))
	}
	return v
}

// TestGICv2StateRoundTrip: a GICv2 with an active level SPI, a pending edge SPI
// behind it and a pending SGI is saved and loaded into a fresh one: every register
// reads the same, the CPU lines are driven the same, and the restored GIC carries on
// (EOI of the active interrupt lets the pending one through).
func TestGICv2StateRoundTrip(t *testing.T) {
	g, out := v2(t)
	d, cpu0 := at(g.Distributor(), 0), at(g.CPUInterface(), 0)
	wr32(d, regISENABLER+4, 3) // SPIs 0, 1
	wr8(d, regIPRIORITYR+33, 0x80)
	wr8(d, regIPRIORITYR+32, 0xa0)
	wr8(d, regITARGETSR+33, 1)
	wr8(d, regITARGETSR+32, 1)
	wr32(d, regICFGR+8, 2) // SPI 0 edge
	g.SPI(1).Set(true)
	if id := rd32(cpu0, giccIAR); id != 33 {
		t.Fatalf("IAR %d", id)
	}
	g.SPI(0).Set(true)
	g.SPI(0).Set(false)
	wr32(d, gicdSGIR, 2<<16|5) // SGI 5 to CPU 1
	s, err := g.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	want := dumpV2(g)
	h := NewV2(2)
	hout := []*lines{{}, {}}
	for c := range hout {
		h.Connect(c, hout[c])
	}
	if err := h.LoadState(s); err != nil {
		t.Fatal(err)
	}
	got := dumpV2(h)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("register word %d: restored %#x, saved %#x", i, got[i], want[i])
		}
	}
	for c := range out {
		if *hout[c] != *out[c] {
			t.Fatalf("CPU %d lines %+v, saved GIC drove %+v", c, *hout[c], *out[c])
		}
	}
	if !hout[1].irq {
		t.Fatal("the pending SGI does not signal CPU 1")
	}
	hc0 := at(h.CPUInterface(), 0)
	wr32(hc0, giccEOIR, 33)
	if id := rd32(hc0, giccIAR); id != 33 { // level still high: pends again, higher priority
		t.Fatalf("after EOI, IAR %d (want 33 again)", id)
	}
	if s2, _ := h.SaveState(); len(s2.Data) != len(s.Data) {
		t.Fatal("re-saved state has another size")
	}
	// Another GIC shape, another name, a truncated record: refused, GIC unchanged.
	before := dumpV2(h)
	v3g, _ := v3(t)
	s3, _ := v3g.SaveState()
	for _, bad := range []bus.State{s3, {Name: "pl011", Version: 1, Data: s.Data}, {Name: "gic", Version: 1, Data: s.Data[:len(s.Data)-1]}, {Name: "gic", Version: 1, Data: s.Data[:9]}} {
		if err := h.LoadState(bad); err == nil {
			t.Fatalf("bad state %q (%d bytes) accepted", bad.Name, len(bad.Data))
		}
	}
	after := dumpV2(h)
	for i := range before {
		if before[i] != after[i] {
			t.Fatal("a refused state changed the GIC")
		}
	}
}

// TestGICv3StateRoundTrip: the same for a GICv3 (routing, redistributor wake state,
// CPU interface system registers).
func TestGICv3StateRoundTrip(t *testing.T) {
	g, out := v3(t)
	d := g.Distributor()
	wr32(d, regISENABLER+4, 2)
	wr8(d, regIPRIORITYR+33, 0x80)
	wr32(d, gicdIROUTER+8*33, 1) // CPU 1
	wr32(d, regIGROUPR+4, 2)
	g.SPI(1).Set(true)
	if !out[1].irq {
		t.Fatal("SPI not on CPU 1")
	}
	s, _ := g.SaveState()
	h := NewV3([]uint64{0, 1})
	hout := []*lines{{}, {}}
	for c := range hout {
		h.Connect(c, hout[c])
	}
	if err := h.LoadState(s); err != nil {
		t.Fatal(err)
	}
	if !hout[1].irq || hout[0].irq {
		t.Fatalf("restored lines %+v %+v", *hout[0], *hout[1])
	}
	for _, r := range [][5]uint32{{3, 0, 4, 6, 0}, {3, 0, 12, 12, 7}, {3, 0, 12, 12, 4}} {
		a, _ := g.ReadSysReg(1, r[0], r[1], r[2], r[3], r[4])
		b, _ := h.ReadSysReg(1, r[0], r[1], r[2], r[3], r[4])
		if a != b {
			t.Fatalf("sysreg %v: restored %#x, saved %#x", r, b, a)
		}
	}
	for off := uint64(0); off < regBankEnd; off += 4 {
		if a, b := rd32(d, off), rd32(h.Distributor(), off); a != b {
			t.Fatalf("GICD %#x: restored %#x, saved %#x", off, b, a)
		}
	}
	if a, b := rd32(d, gicdIROUTER+8*33), rd32(h.Distributor(), gicdIROUTER+8*33); a != b {
		t.Fatal("IROUTER differs")
	}
	two := NewV3([]uint64{0})
	if err := two.LoadState(s); err == nil {
		t.Fatal("2-CPU state into a 1-CPU GIC accepted")
	}
}

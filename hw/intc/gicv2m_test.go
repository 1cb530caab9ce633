package intc

import "testing"

// TestV2M: MSI_TYPER names the frame's SPIs, a write of an owned INTID to
// MSI_SETSPI_NS pends that (edge) SPI on the CPU it targets, and INTIDs outside the
// frame are ignored.
func TestV2M(t *testing.T) {
	g, out := v2(t)
	m := g.NewV2M(48, 64)
	if v := rd32(m, v2mTYPER); v != 80<<16|64 {
		t.Fatalf("MSI_TYPER %#x, want base 80 count 64", v)
	}
	const id = 85
	d := at(g.Distributor(), 0)
	wr32(d, regICFGR+4*(id/16), 2<<(2*(id%16))) // edge-triggered, as Linux configures MSIs
	wr8(d, regIPRIORITYR+id, 0x80)
	wr8(d, regITARGETSR+id, 1)
	wr32(d, regISENABLER+4*(id/32), 1<<(id%32))
	wr32(m, v2mSETSPINS, 200) // not the frame's: ignored
	if out[0].irq {
		t.Fatal("IRQ raised by an INTID outside the frame")
	}
	wr32(m, v2mSETSPINS, id)
	if !out[0].irq {
		t.Fatal("MSI did not raise CPU 0's IRQ")
	}
	if v := rd32(at(g.CPUInterface(), 0), giccIAR); v != id {
		t.Fatalf("IAR %d, want %d", v, id)
	}
}

// TestV2MMessagesNeverMerge: each MSI write is an event. One raised while the SPI's line
// is already high (another MSI being raised by another goroutine at that instant, in
// the old line-pulse code) must still pend the interrupt once it has been acknowledged.
func TestV2MMessagesNeverMerge(t *testing.T) {
	g, out := v2(t)
	m := g.NewV2M(48, 64)
	const id = 90
	d := at(g.Distributor(), 0)
	wr32(d, regICFGR+4*(id/16), 2<<(2*(id%16)))
	wr8(d, regIPRIORITYR+id, 0x80)
	wr8(d, regITARGETSR+id, 1)
	wr32(d, regISENABLER+4*(id/32), 1<<(id%32))
	// Message A is being raised by one goroutine: its line is high, the CPU takes it.
	line := g.SPI(id - NumPriv)
	line.Set(true)
	cpu := at(g.CPUInterface(), 0)
	if v := rd32(cpu, giccIAR); v != id {
		t.Fatalf("first MSI: IAR %d", v)
	}
	// Message B arrives from another goroutine before A's raise lowered the line.
	wr32(m, v2mSETSPINS, id)
	line.Set(false)
	wr32(cpu, giccEOIR, id)
	if !out[0].irq {
		t.Fatal("the second MSI was merged into the held line and lost")
	}
	if v := rd32(cpu, giccIAR); v != id {
		t.Fatalf("second MSI: IAR %d, want %d", v, id)
	}
}

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

package apic

import (
	"testing"
)

func TestX2APIC(t *testing.T) {
	s, _, _ := newSys(t, 18)
	const x2 = DefaultBase | BaseEnable | BaseX2APIC
	for i := 0; i < 18; i++ {
		a := s.CPU(i)
		if _, ok := a.ReadMSR(0x802); ok {
			t.Fatal("x2APIC MSR readable in xAPIC mode")
		}
		if err := a.SetBase(x2 | uint64(a.Base()&BaseBSP)); err != nil {
			t.Fatal(err)
		}
		if !a.WriteMSR(0x80f, 0x1ff) {
			t.Fatal("SVR write")
		}
	}
	a := s.CPU(17)
	if v, _ := a.ReadMSR(0x802); v != 17 {
		t.Errorf("x2APIC id %d", v)
	}
	if v, _ := a.ReadMSR(0x803); v != Version {
		t.Errorf("version %#x", v)
	}
	if v, _ := a.ReadMSR(0x80d); v != 1<<16|1<<1 {
		t.Errorf("LDR of id 17 = %#x, want cluster 1 bit 1", v)
	}
	if rd(s, 17, RegVersion) != 0 {
		t.Error("xAPIC page still answers in x2APIC mode")
	}
	// #GP cases.
	for _, c := range []struct {
		msr   uint32
		write bool
		v     uint64
	}{{0x80d, true, 0}, {0x80b, false, 0}, {0x80b, true, 1}, {0x831, false, 0}, {0x80e, false, 0},
		{0x83f, false, 0}, {0x802, true, 5}, {0x808, true, 1 << 32}, {0x83f, true, 0x100}} {
		if c.write && a.WriteMSR(c.msr, c.v) || !c.write && func() bool { _, ok := a.ReadMSR(c.msr); return ok }() {
			t.Errorf("MSR %#x write=%v %#x did not #GP", c.msr, c.write, c.v)
		}
	}
	// Physical IPI with a 32-bit destination through the 64-bit ICR.
	s.CPU(0).WriteMSR(0x830, 17<<32|0x40)
	if a.HighestPending() != 0x40 {
		t.Fatal("physical x2APIC IPI")
	}
	if v, _ := s.CPU(0).ReadMSR(0x830); v != 17<<32|0x40 {
		t.Errorf("ICR readback %#x", v)
	}
	// Logical: cluster 0, ids 2 and 3.
	s.CPU(0).WriteMSR(0x830, 0x000c<<32|1<<11|0x50)
	for i := 0; i < 18; i++ {
		if got := s.CPU(i).HighestPending() == 0x50; got != (i == 2 || i == 3) {
			t.Errorf("logical cluster IPI: cpu %d got=%v", i, got)
		}
	}
	// SELF IPI.
	a.WriteMSR(0x83f, 0x60)
	if v, _ := a.ReadMSR(0x800 + RegIRR>>4 + 3); v != 1 {
		t.Errorf("IRR after SELF IPI %#x", v)
	}
	// Broadcast.
	s.CPU(5).WriteMSR(0x830, 0xffffffff<<32|0x70)
	for i := 0; i < 18; i++ {
		if v, _ := s.CPU(i).ReadMSR(0x800 + RegIRR>>4 + 3); v&(1<<16) == 0 {
			t.Errorf("broadcast missed %d", i)
		}
	}
	// EOI through the MSR.
	v := a.Acknowledge()
	if !a.WriteMSR(0x80b, 0) {
		t.Fatal("EOI")
	}
	if isr, _ := a.ReadMSR(0x800 + RegISR>>4 + uint32(v>>5)); isr != 0 {
		t.Errorf("ISR after x2APIC EOI %#x", isr)
	}
	// Leaving x2APIC needs a disable first.
	if err := a.SetBase(DefaultBase | BaseEnable); err == nil {
		t.Fatal("x2APIC → xAPIC accepted")
	}
	if err := a.SetBase(DefaultBase); err != nil {
		t.Fatal(err)
	}
	if err := a.SetBase(DefaultBase | BaseEnable); err != nil || a.X2APIC() {
		t.Fatal("re-enable as xAPIC")
	}
	if err := a.SetBase(DefaultBase | BaseX2APIC); err == nil {
		t.Fatal("x2APIC without the enable bit accepted")
	}
}

package x86

import "testing"

// The flat segments must match the descriptors Linux's 64-bit boot protocol GDT uses
// (arch/x86/boot: __BOOT_CS 0x10 = 0x00af9b000000ffff, __BOOT_DS 0x18 =
// 0x00cf93000000ffff), and a 32-bit flat code descriptor (0x00cf9b000000ffff).
func TestFlatSegmentsMatchDescriptors(t *testing.T) {
	for _, c := range []struct {
		name string
		got  Segment
		desc uint64
	}{
		{"64-bit code", FlatSegment(0x10, true, true), 0x00af9b000000ffff},
		{"32-bit code", FlatSegment(0x10, true, false), 0x00cf9b000000ffff},
		{"data", FlatSegment(0x18, false, false), 0x00cf93000000ffff},
	} {
		if want := DescriptorSegment(c.got.Selector, c.desc); c.got != want {
			t.Errorf("%s: FlatSegment = %+v, descriptor %#x decodes to %+v", c.name, c.got, c.desc, want)
		}
	}
}

func TestDescriptorSegmentFields(t *testing.T) {
	// A present DPL-3 data segment, base 0x12345678, byte-granular limit 0x5abcd.
	s := DescriptorSegment(0x2b, 0x1245f2345678abcd)
	want := Segment{Base: 0x12345678, Limit: 0x5abcd, Selector: 0x2b, Type: 2, S: true, DPL: 3, Present: true, DB: true}
	if s != want {
		t.Errorf("got %+v, want %+v", s, want)
	}
}

// ResetState's real-mode segments follow the architectural real-mode rule base =
// selector*16 with a 64 KiB limit.
func TestResetState(t *testing.T) {
	b := ResetState(0x1234)
	if b.SRegs.CS.Base != 0x12340 || b.SRegs.CS.Limit != 0xffff || b.SRegs.CS.Selector != 0x1234 {
		t.Errorf("CS = %+v", b.SRegs.CS)
	}
	if b.SRegs.CR0&CR0_PE != 0 || b.Regs.RFLAGS != 2 {
		t.Errorf("CR0 %#x RFLAGS %#x: want real mode, reserved flag bit only", b.SRegs.CR0, b.Regs.RFLAGS)
	}
}

func TestParseTraceFlags(t *testing.T) {
	f, err := ParseTraceFlags("in_asm,int")
	if err != nil || f != TraceInAsm|TraceInt {
		t.Errorf("in_asm,int: %v %v", f, err)
	}
	if _, err := ParseTraceFlags("in_asm,bogus"); err == nil {
		t.Error("bogus item accepted")
	}
}

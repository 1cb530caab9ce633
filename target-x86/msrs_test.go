package x86

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// msrReport formats testdata/msrs.S's output: per MSR its number and, for the RDMSR,
// the WRMSR of the value read and the RDMSR after it, "ok EDX:EAX" or "#GP(error)".
func msrReport(b []byte) string {
	var s strings.Builder
	le := binary.LittleEndian
	for len(b) >= 40 {
		fmt.Fprintf(&s, "%#x:", le.Uint32(b))
		for i := 0; i < 3; i++ {
			r := b[4+12*i:]
			if f := le.Uint32(r); f != 0 {
				fmt.Fprintf(&s, " #GP(%d)", le.Uint32(r[4:]))
			} else {
				fmt.Fprintf(&s, " %#x", uint64(le.Uint32(r[8:]))<<32|uint64(le.Uint32(r[4:])))
			}
		}
		s.WriteByte('\n')
		b = b[40:]
	}
	return s.String()
}

// msrUnimplemented are the MSRs of testdata/msrs.S that QEMU 7.2's TCG reads as 0
// (its helper_rdmsr's default case, "XXX: exception?") and gemu does not implement:
// RDMSR and WRMSR raise #GP(0), as the SDM says for an MSR the CPU lacks and KVM does.
// Linux reads each of them with a fault handler (rdmsrl_safe) or not at all on this
// model.
var msrUnimplemented = map[uint32]string{
	0x49:       "PRED_CMD (write-only, needs CPUID IBPB)",
	0xc1:       "Intel PERFCTR0",
	0xe7:       "MPERF (CPUID 6 ECX.0)",
	0xe8:       "APERF",
	0x10a:      "ARCH_CAPABILITIES (CPUID 7 EDX.29)",
	0x199:      "PERF_CTL (Intel)",
	0x428:      "past the ten MCE banks MCG_CAP announces",
	0x6e0:      "TSC_DEADLINE (the board's LAPIC answers it, not the bare CPU)",
	0xc0010000: "K7 PERF_CTL0 (perf probes it with rdmsrl_safe)",
	0xc0010004: "K7 PERF_CTR0",
	0xc0011004: "CPUID features override (family 15h+)",
	0xc0011005: "CPUID extended features override",
	0x12345678: "nothing",
	0x40000000: "hypervisor range, no hypervisor MSRs",
	0x1234:     "nothing",
}

// TestMSRsMatchQEMU runs testdata/msrs.S (RDMSR, WRMSR of the value read, RDMSR again for
// each MSR of a list: the architectural, MTRR, machine-check, x86-64 and AMD family 0Fh
// MSRs Linux reads on qemu64, and a few unknown ones) on qemu-system-x86_64 -cpu qemu64
// and on gemu. Every MSR gemu implements must read, take the write and read back as on
// QEMU; the others (msrUnimplemented) must raise #GP(0) three times.
func TestMSRsMatchQEMU(t *testing.T) {
	img := biosImage(msrBIOSCode, msrBIOSReset)
	want := strings.Split(msrReport(qemuBIOS(t, img, "qemu64")), "\n")
	got := strings.Split(msrReport(gemuBIOS(t, img, nil)), "\n")
	if len(got) != len(want) || len(want) < 60 {
		t.Fatalf("gemu reported %d MSRs, QEMU %d", len(got), len(want))
	}
	seen := 0
	for i, w := range want {
		if w == "" {
			continue
		}
		v, err := strconv.ParseUint(w[:strings.IndexByte(w, ':')], 0, 32)
		if err != nil {
			t.Fatal(err)
		}
		n := uint32(v)
		if why, ok := msrUnimplemented[n]; ok {
			seen++
			if g := fmt.Sprintf("%#x: #GP(0) #GP(0) #GP(0)", n); got[i] != g {
				t.Errorf("unimplemented MSR (%s): gemu %s, want %s", why, got[i], g)
			}
			continue
		}
		if got[i] != w {
			t.Errorf("gemu %s\n         QEMU %s", got[i], w)
		}
	}
	if seen != len(msrUnimplemented) {
		t.Errorf("%d of the %d unimplemented MSRs are in testdata/msrs.S", seen, len(msrUnimplemented))
	}
}

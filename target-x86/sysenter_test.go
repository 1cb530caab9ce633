package x86

import (
	"bytes"
	"testing"
)

// TestSysenterMatchesQEMU runs testdata/sysenter.S (SYSENTER/SYSEXIT in 32-bit protected
// mode between CPL 0 and 3, the SYSENTER MSRs, the #GP cases, then long mode:
// compatibility-mode SYSENTER into a 64-bit kernel and the 64-bit forms) on
// qemu-system-x86_64 -cpu qemu64 (AuthenticAMD: the 64-bit forms are #UD) and -cpu
// qemu64,vendor=GenuineIntel (every form valid), and on gemu with Qemu64 and Qemu64
// with Intel's vendor string; every word the image writes must agree.
func TestSysenterMatchesQEMU(t *testing.T) {
	img := biosImage(sysenterBIOSCode, sysenterBIOSReset)
	intel := Qemu64
	intel.Vendor = vendorIntel
	for _, c := range []struct {
		cpu   string
		model *Model
		want  string // a step only this vendor's run has
	}{
		{"qemu64", nil, "\nT12: EXC! 0x6 0x0 0x28"},
		{"qemu64,vendor=GenuineIntel", &intel, "\nT10: 0x4b 0x53 0xa800"},
	} {
		t.Run(c.cpu, func(t *testing.T) {
			want := qemuBIOS(t, img, c.cpu)
			got := gemuBIOS(t, img, c.model)
			if !bytes.Equal(got, want) {
				t.Fatalf("gemu and QEMU differ:\n--- gemu%s\n--- QEMU%s", biosWords(got), biosWords(want))
			}
			if w := biosWords(got); !bytes.Contains([]byte(w), []byte(c.want)) {
				t.Errorf("output lacks %q:%s", c.want, w)
			}
		})
	}
}

package armtest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	arm "gemu/target-arm"
)

// cpuIDProgram prints, at EL1: MIDR, REVIDR, CTR, CLIDR, DCZID, CCSIDR of the L1 D,
// L1 I and L2 caches, then ID_AA64ISAR0, ISAR1, PFR0, PFR1, MMFR0, MMFR1, MMFR2.
const cpuIDProgram = `
	.text
	.global _start
_start:
	mrs x0, midr_el1
	bl puthex
	mrs x0, revidr_el1
	bl puthex
	mrs x0, ctr_el0
	bl puthex
	mrs x0, clidr_el1
	bl puthex
	mrs x0, dczid_el0
	bl puthex
	mov x4, #0
	msr csselr_el1, x4
	isb
	mrs x0, ccsidr_el1
	bl puthex
	mov x4, #1
	msr csselr_el1, x4
	isb
	mrs x0, ccsidr_el1
	bl puthex
	mov x4, #2
	msr csselr_el1, x4
	isb
	mrs x0, ccsidr_el1
	bl puthex
	mrs x0, id_aa64isar0_el1
	bl puthex
	mrs x0, id_aa64isar1_el1
	bl puthex
	mrs x0, id_aa64pfr0_el1
	bl puthex
	mrs x0, id_aa64pfr1_el1
	bl puthex
	mrs x0, id_aa64mmfr0_el1
	bl puthex
	mrs x0, id_aa64mmfr1_el1
	bl puthex
	mrs x0, id_aa64mmfr2_el1
	bl puthex
	ldr x0, =0x84000008
	hvc #0
	b .
	.ltorg
`

// TestCPUModelIDsAsQEMU runs cpuIDProgram on every gemu model and on
// qemu-system-aarch64 -cpu of the same name: the identification registers (MIDR,
// REVIDR, CTR, CLIDR, DCZID, CCSIDR) must be QEMU's, except max's cache geometry
// ; every unsigned ID_AA64ISAR0/ISAR1/MMFR1/MMFR2 field gemu advertises must be at most
// QEMU's (a model never claims more than its silicon), and ID_AA64PFR0's CSV2/CSV3
// set where QEMU's are, at most to QEMU's level.
func TestCPUModelIDsAsQEMU(t *testing.T) {
	bin := BuildSys(t, t.TempDir(), cpuIDProgram)
	names := []string{"MIDR", "REVIDR", "CTR", "CLIDR", "DCZID", "CCSIDR L1D", "CCSIDR L1I", "CCSIDR L2",
		"ISAR0", "ISAR1", "PFR0", "PFR1", "MMFR0", "MMFR1", "MMFR2"}
	parse := func(s string) []uint64 {
		var v []uint64
		for _, f := range strings.Fields(s) {
			x, err := strconv.ParseUint(f, 16, 64)
			if err != nil {
				t.Fatalf("output %q: %v", s, err)
			}
			v = append(v, x)
		}
		if len(v) != len(names) {
			t.Fatalf("output %q: %d values, want %d", s, len(v), len(names))
		}
		return v
	}
	for _, m := range arm.Models() {
		t.Run(m.Name, func(t *testing.T) {
			out, err := runSysGemu(bin, 30*time.Second, func(cfg *arm.Config, _ func() *arm.CPU) { cfg.Model = m })
			if err != nil {
				t.Fatalf("gemu: %v (output %q)", err, out)
			}
			g, q := parse(out), parse(runSysQEMUCPU(t, bin, 1, m.Name))
			for i := 0; i < 8; i++ {
				if g[i] != q[i] {
					t.Errorf("%s: gemu %#x, QEMU %#x", names[i], g[i], q[i])
				}
			}
			for _, i := range []int{8, 9, 13, 14} { // ISAR0, ISAR1, MMFR1, MMFR2
				for sh := 0; sh < 64; sh += 4 {
					if gf, qf := g[i]>>sh&0xf, q[i]>>sh&0xf; gf > qf {
						t.Errorf("%s[%d:%d] = %d, QEMU's %s has %d", names[i], sh+3, sh, gf, m.Name, qf)
					}
				}
			}
			for _, sh := range []int{16, 20} { // FP, AdvSIMD: 1 = with FP16
				if gf, qf := g[10]>>sh&0xf, q[10]>>sh&0xf; gf > qf {
					t.Errorf("PFR0[%d:%d] = %d, QEMU %d", sh+3, sh, gf, qf)
				}
			}
			for _, sh := range []int{56, 60} {
				if gf, qf := g[10]>>sh&0xf, q[10]>>sh&0xf; gf > qf || (gf == 0) != (qf == 0) {
					t.Errorf("PFR0[%d:%d] = %d, QEMU %d", sh+3, sh, gf, qf)
				}
			}
			t.Logf("gemu %s", fmt.Sprintf("%x", g))
		})
	}
}

package x86

// MSRs of QEMU's qemu64 model beyond the ones sys.go keeps: the machine-check
// architecture (MCG_CAP with ten banks, MCG_CTL, the MCi_CTL/STATUS/ADDR/MISC banks),
// the microcode revision, PERF_STATUS and DEBUGCTL, with the values and write rules of
// QEMU 7.2's helper_rdmsr/helper_wrmsr (TestMSRsMatchQEMU reads them back from QEMU).
//
// Unlike QEMU's TCG, which reads every other MSR as 0 and ignores writes to it, gemu
// raises #GP(0) for an MSR it does not implement, as the SDM says and KVM does; the
// MSRs Linux reads without a fault handler on this model (the AMD ones in sys.go's
// amdMSRs, INT_PENDING_MSG among them, which KVM also reads as 0) are implemented.
const (
	msrUcodeRev   = 0x8b
	msrMCGctl     = 0x17b
	msrPerfStatus = 0x198
	msrDebugCtl   = 0x1d9
	msrMC0ctl     = 0x400

	mceBanks = 10
	// mcgCap is QEMU's MCE_CAP_DEF | MCE_BANKS_DEF: the bank count, MCG_CTL_P and
	// MCG_SER_P.
	mcgCap      = mceBanks | 1<<8 | 1<<24
	ucodeRevAMD = 0x01000065   // QEMU's microcode revision for an AMD model
	perfStatus  = 1000 | 4<<40 // QEMU's IA32_PERF_STATUS: tick increment, multiplier 4
	allOnes     = ^uint64(0)   // the reset value of MCG_CTL and every MCi_CTL
	mceEnd      = msrMC0ctl + 4*mceBanks
)

// rdmsrModel reads the MSRs of this file.
func (c *CPU) rdmsrModel(n uint32) (uint64, bool) {
	switch {
	case n == msrUcodeRev:
		return ucodeRevAMD, true
	case n == msrPerfStatus:
		return perfStatus, true
	case n == msrDebugCtl:
		return 0, true
	case n == msrMCGctl || n >= msrMC0ctl && n < mceEnd:
		if v, ok := c.msr.mtrr[n]; ok {
			return v, true
		}
		if n == msrMCGctl || (n-msrMC0ctl)%4 == 0 {
			return allOnes, true
		}
		return 0, true
	}
	return 0, false
}

// wrmsrModel writes the MSRs of this file (and ignores writes to the read-only ones
// sys.go reads, MTRRcap and MCG_CAP, as QEMU does). It reports whether n is one.
func (c *CPU) wrmsrModel(n uint32, v uint64) bool {
	switch {
	case n == msrUcodeRev, n == msrPerfStatus, n == msrDebugCtl, n == msrMTRRcap, n == msrMCGcap:
		return true // read-only or without effect here
	case n == msrMCGctl || n >= msrMC0ctl && n < mceEnd:
		// QEMU stores MCG_CTL and MCi_CTL only as all zeros or all ones.
		if (n == msrMCGctl || (n-msrMC0ctl)%4 == 0) && v != 0 && v != allOnes {
			return true
		}
		if c.msr.mtrr == nil {
			c.msr.mtrr = map[uint32]uint64{}
		}
		c.msr.mtrr[n] = v
		return true
	}
	return false
}

package x86

// SYSENTER and SYSEXIT (0F 34, 0F 35), the fast system calls of 32-bit kernels, with
// the IA32_SYSENTER_CS/ESP/EIP MSRs (sys.go stores them), as the Intel SDM describes
// them and QEMU implements them:
//
//   - SYSENTER: #GP(0) in real mode or when SYSENTER_CS is 0 (QEMU tests the whole
//     MSR; the SDM its bits 15:2, which differ only for a selector 1-3, which is not
//     usable anyway); clears VM, IF and RF; CS = SYSENTER_CS&0xfffc and SS = CS+8 as
//     flat ring-0 segments (CS 64-bit in IA-32e mode, else 32-bit); RSP/RIP from the
//     MSRs (ESP/EIP, zero-extended, outside IA-32e mode). RFLAGS otherwise unchanged.
//   - SYSEXIT: #GP(0) in real mode, when SYSENTER_CS is 0 or CPL is not 0; to 32-bit
//     ring 3 with CS = SYSENTER_CS+16, SS = +24 (RPL 3), ESP = ECX, EIP = EDX, or with
//     REX.W to 64-bit ring 3 with CS = +32, SS = +40, RSP = RCX, RIP = RDX (#GP(0) if
//     either is not canonical). RFLAGS unchanged.
//
// For a non-Intel vendor (qemu64 and the models built on it are AuthenticAMD) both are
// #UD in 64-bit mode, as QEMU 7.2 does it; SYSENTER from compatibility mode still enters
// the 64-bit kernel there (real AMD CPUs refuse it too, QEMU does not). A GenuineIntel
// model gets every IA-32e form. QEMU stores SYSENTER_CS as 16 bits (sys.go too) and
// does not check SYSEXIT's RCX/RDX for canonical form, which the SDM asks and gemu does.

const vendorIntel = "GenuineIntel"

// sysenterSupported reports whether SYSENTER/SYSEXIT exist in the mode of in.
func (c *CPU) sysenterSupported(in *insn) bool {
	return !in.mode64 || c.model().Vendor == vendorIntel
}

func (c *CPU) sysenter(in *insn) op {
	return func(c *CPU) bool {
		if !c.sysenterSupported(in) {
			c.raise(excUD, -1)
			return false
		}
		cs := uint16(c.msr.sysenterCS)
		if c.CR0&CR0_PE == 0 || cs == 0 {
			c.raise(excGP, 0)
			return false
		}
		long := c.EFER&EFER_LMA != 0
		c.RFLAGS &^= flagVM | RFLAGS_IF | flagRF
		c.Seg[segCS] = flatRing(cs&0xfffc, 0, true, long)
		c.Seg[segSS] = flatRing((cs+8)&0xfffc, 0, false, false)
		c.cpl = 0
		if long {
			c.R[4], c.RIP = c.msr.sysenterESP, c.msr.sysenter
		} else {
			c.R[4], c.RIP = c.msr.sysenterESP&0xffffffff, c.msr.sysenter&0xffffffff
		}
		c.modeChanged()
		return false
	}
}

func (c *CPU) sysexit(in *insn) op {
	to64 := in.rex&8 != 0
	return func(c *CPU) bool {
		if !c.sysenterSupported(in) {
			c.raise(excUD, -1)
			return false
		}
		cs := uint16(c.msr.sysenterCS)
		if c.CR0&CR0_PE == 0 || cs == 0 || c.cpl != 0 {
			c.raise(excGP, 0)
			return false
		}
		if to64 {
			if !canonical(c.R[1]) || !canonical(c.R[2]) {
				c.raise(excGP, 0)
				return false
			}
			c.Seg[segCS] = flatRing((cs+32)|3, 3, true, true)
			c.Seg[segSS] = flatRing((cs+40)|3, 3, false, false)
			c.R[4], c.RIP = c.R[1], c.R[2]
		} else {
			c.Seg[segCS] = flatRing((cs+16)|3, 3, true, false)
			c.Seg[segSS] = flatRing((cs+24)|3, 3, false, false)
			c.R[4], c.RIP = c.R[1]&0xffffffff, c.R[2]&0xffffffff
		}
		c.cpl = 3
		c.modeChanged()
		return false
	}
}

// flatRing is the flat 4 GiB code or data segment SYSENTER and SYSEXIT load without
// reading a descriptor: accessed, present, at privilege dpl; code is 64-bit (L) when
// long, else 32-bit.
func flatRing(sel uint16, dpl uint8, code, long bool) Segment {
	s := FlatSegment(sel, code, long)
	s.DPL = dpl
	return s
}

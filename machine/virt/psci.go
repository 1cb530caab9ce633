package virt

import arm "gemu/target-arm"

// PSCI 1.0 function IDs (SMC32 0x84..., SMC64 0xc4...) and SMCCC.
const (
	psciVersion         = 0x84000000
	psciCPUSuspend32    = 0x84000001
	psciCPUSuspend64    = 0xc4000001
	psciCPUOff          = 0x84000002
	psciCPUOn32         = 0x84000003
	psciCPUOn64         = 0xc4000003
	psciAffinityInfo32  = 0x84000004
	psciAffinityInfo64  = 0xc4000004
	psciMigrateInfoType = 0x84000006
	psciSystemOff       = 0x84000008
	psciSystemReset     = 0x84000009
	psciFeatures        = 0x8400000a

	psciV10 = 1 << 16 // major 1, minor 0
)

// PSCI return codes.
const (
	psciSuccess        = 0
	psciNotSupported   = -1
	psciInvalidParams  = -2
	psciAlreadyOn      = -4
	psciOnPending      = -5
	psciTOSNotPresent  = 2 // MIGRATE_INFO_TYPE: no Trusted OS needs migration
	affinityOn         = 0
	affinityOff        = 1
	psciFeatureDefault = 0
)

func ret(v int64) uint64 { return uint64(v) }

// hvc is the PSCI conduit: QEMU's virt firmware-less PSCI emulation over HVC.
func (m *Machine) hvc(c *arm.CPU) {
	fn := uint32(c.X(0))
	is32 := fn&0x40000000 == 0
	arg := func(n int) uint64 {
		if is32 {
			return uint64(uint32(c.X(n)))
		}
		return c.X(n)
	}
	var r uint64
	switch fn {
	case psciVersion:
		r = psciV10
	case psciCPUSuspend32, psciCPUSuspend64:
		// Every power state is treated as standby with an immediate wake-up, which the
		// spec allows; the caller sees the call return successfully.
		r = psciSuccess
	case psciCPUOff:
		c.PowerOff()
		return
	case psciCPUOn32, psciCPUOn64:
		t := m.cpuByMPIDR(arg(1))
		switch {
		case t == nil:
			r = ret(psciInvalidParams)
		case t.Start(arg(2), arg(3)):
			m.launch(int(arg(1)))
			r = psciSuccess
		case t.PoweredOn():
			r = ret(psciAlreadyOn)
		default:
			r = ret(psciOnPending)
		}
	case psciAffinityInfo32, psciAffinityInfo64:
		t := m.cpuByMPIDR(arg(1))
		switch {
		case t == nil || arg(2) != 0:
			r = ret(psciInvalidParams)
		case t.PoweredOn():
			r = affinityOn
		default:
			r = affinityOff
		}
	case psciMigrateInfoType:
		r = psciTOSNotPresent
	case psciSystemOff:
		m.finish(ExitPowerOff, nil)
		c.PowerOff()
		return
	case psciSystemReset:
		m.finish(ExitReset, nil)
		c.PowerOff()
		return
	case psciFeatures:
		switch uint32(c.X(1)) {
		case psciVersion, psciCPUSuspend32, psciCPUSuspend64, psciCPUOff, psciCPUOn32, psciCPUOn64,
			psciAffinityInfo32, psciAffinityInfo64, psciMigrateInfoType, psciSystemOff,
			psciSystemReset, psciFeatures:
			r = psciFeatureDefault
		default:
			r = ret(psciNotSupported) // includes SMCCC_VERSION: the guest assumes SMCCC 1.0
		}
	default:
		r = ret(psciNotSupported)
	}
	c.SetX(0, r)
}

// cpuByMPIDR finds the vCPU whose MPIDR affinity (Aff0 = index here) is mpidr.
func (m *Machine) cpuByMPIDR(mpidr uint64) *arm.CPU {
	if mpidr&^0xff != 0 || mpidr >= uint64(len(m.cpus)) {
		return nil
	}
	return m.cpus[mpidr]
}

package arm

import (
	"crypto/rand"
	"encoding/binary"
)

// CPU models (-cpu). Each named model carries its silicon identification (MIDR, CTR,
// CLIDR, CCSIDR; QEMU 7.2's values) and ID registers restricted to what gemu
// implements: a feature the silicon has but gemu does not stays unadvertised, so the
// guest never relies on it. Common to every model (and so not repeated per model): EL0
// and EL1 in AArch64 only (no EL2/EL3, no AArch32), FP and AdvSIMD (with FP16 on max), the
// debug architecture of debug.go (ID_AA64DFR0 of the Cortex-A57), a 4 KiB-granule
// stage-1 MMU with 16-bit ASIDs and, in ID_AA64MMFR1/2, at most PAN and UAO (pan.go).

// Model is one CPU model.
type Model struct {
	Name       string
	Compatible string // device-tree "compatible" of the cpu nodes
	MIDR       uint64
	CTR, CLIDR uint64
	CCSIDR     [3]uint64 // L1 D-cache, L1 I-cache, L2
	ISAR0      uint64    // ID_AA64ISAR0_EL1
	ISAR1      uint64    // ID_AA64ISAR1_EL1
	PARange    uint64    // ID_AA64MMFR0_EL1.PARange
	MMFR1      uint64    // ID_AA64MMFR1_EL1 (PAN, pan.go)
	MMFR2      uint64    // ID_AA64MMFR2_EL1 (UAO, pan.go)
	// PFR0 holds the ID_AA64PFR0_EL1 fields beyond EL0/EL1 and GIC (which readSys
	// fills in): FP and AdvSIMD 1 with FP16 arithmetic (fp16.go), the speculation
	// guarantees CSV2 and CSV3.
	PFR0 uint64
	// Note says where the ID registers differ from the silicon's.
	Note string
}

// ID_AA64ISAR0_EL1 fields gemu implements.
const (
	isar0AES    = 2 << 4  // AESE/AESD/AESMC/AESIMC and PMULL/PMULL2 64-bit (fpsimd_crypto.go)
	isar0SHA1   = 1 << 8  // SHA1C/P/M/H/SU0/SU1
	isar0SHA2   = 1 << 12 // SHA256H/H2/SU0/SU1
	isar0SHA512 = 2 << 12 // SHA256 and SHA512H/H2/SU0/SU1 (sha512.go)
	isar0CRC32  = 1 << 16 // CRC32{B,H,W,X}, CRC32C*
	isar0Atomic = 2 << 20 // ARMv8.1 LSE: CAS, CASP, LD<op>, SWP (lse.go)
	isar0RDM    = 1 << 28 // ARMv8.1 SQRDMLAH/SQRDMLSH (rdm.go)
	isar0SHA3   = 1 << 32 // EOR3, RAX1, XAR, BCAX (sha512.go)
	isar0SM3    = 1 << 36 // SM3SS1, SM3TT1A/1B/2A/2B, SM3PARTW1/2 (sm.go)
	isar0SM4    = 1 << 40 // SM4E, SM4EKEY (sm.go)
	isar0DP     = 1 << 44 // ARMv8.2 SDOT/UDOT (dotprod.go)
	isar0RNDR   = 1 << 60 // ARMv8.5 RNDR/RNDRRS (rndr below)

	isar0Base = isar0AES | isar0SHA1 | isar0SHA2 | isar0CRC32 // ARMv8.0 + crypto + CRC32
	// isar0Max is everything gemu implements (SHA2 at its SHA512 level).
	isar0Max = isar0AES | isar0SHA1 | isar0SHA512 | isar0CRC32 | isar0Atomic | isar0RDM | isar0SHA3 | isar0SM3 | isar0SM4 | isar0DP | isar0RNDR
)

// ID_AA64PFR0_EL1 speculation fields. gemu executes nothing speculatively, so it meets
// both guarantees; the named models advertise them as their silicon does.
const (
	pfr0CSV2 = 1 << 56 // branch targets trained in one context cannot steer speculation in another
	pfr0CSV3 = 1 << 60 // faulting loads cannot feed speculative execution (no KPTI needed)
)

// ID_AA64ISAR1_EL1 fields gemu implements.
const (
	isar1LRCPC = 1 << 20 // ARMv8.3 LDAPR/LDAPRB/LDAPRH (lse.go)
	isar1APA   = 1 << 4  // ARMv8.3 address authentication, QARMA5 (pauth.go)
	isar1GPA   = 1 << 24 // ARMv8.3 generic authentication (PACGA), QARMA5
)

// models lists the models in -cpu help order; the first is the default.
var models = []*Model{
	{
		Name: "cortex-a57", Compatible: "arm,cortex-a57",
		MIDR: 0x411fd070, CTR: 0x8444c004, CLIDR: 0x0a200023,
		CCSIDR: [3]uint64{0x701fe00a, 0x201fe012, 0x70ffe07a},
		ISAR0:  isar0Base, PARange: 5,
		Note: "ID_AA64PFR0 advertises EL0/EL1 AArch64 only (silicon: EL0-EL3 with AArch32); PARange 48 bits (QEMU: 44)",
	},
	{
		Name: "cortex-a53", Compatible: "arm,cortex-a53",
		MIDR: 0x410fd034, CTR: 0x84448004, CLIDR: 0x0a200023,
		CCSIDR: [3]uint64{0x700fe01a, 0x201fe00a, 0x707fe07a},
		ISAR0:  isar0Base, PARange: 2,
		Note: "ID_AA64PFR0 advertises EL0/EL1 AArch64 only (silicon: EL0-EL3 with AArch32)",
	},
	{
		Name: "cortex-a72", Compatible: "arm,cortex-a72",
		MIDR: 0x410fd083, CTR: 0x8444c004, CLIDR: 0x0a200023,
		CCSIDR: [3]uint64{0x701fe00a, 0x201fe012, 0x707fe07a},
		ISAR0:  isar0Base, PARange: 4,
		Note: "ID_AA64PFR0 advertises EL0/EL1 AArch64 only (silicon: EL0-EL3 with AArch32)",
	},
	{
		Name: "neoverse-n1", Compatible: "arm,neoverse-n1",
		MIDR: 0x414fd0c1, CTR: 0x8444c004, CLIDR: 0x82000023,
		CCSIDR: [3]uint64{0x701fe01a, 0x201fe01a, 0x70ffe03a},
		ISAR0:  isar0Base | isar0Atomic | isar0RDM | isar0DP, ISAR1: isar1LRCPC, PARange: 5, PFR0: pfr0CSV2 | pfr0CSV3,
		MMFR1: mmfr1PAN2, MMFR2: mmfr2UAO,
		Note: "silicon also has DC CVAP, FP16, RAS, VHE, HAFDBS, PMUv3.1 " +
			"and debug v8.2, which gemu does not implement and so does not advertise",
	},
	{
		Name: "max", Compatible: "arm,cortex-a57", // as QEMU's max (an "A57 with extras")
		MIDR: 0x000f0510, CTR: 0x8444c004, CLIDR: 0x02000023,
		CCSIDR: [3]uint64{0x701fe00a, 0x201fe012, 0x70ffe07a},
		ISAR0:  isar0Max, ISAR1: isar1LRCPC | isar1APA | isar1GPA, PARange: 5, PFR0: pfr0CSV2 | pfr0CSV3 | pfr0FP16,
		MMFR1: mmfr1PAN2, MMFR2: mmfr2UAO,
		Note: "everything gemu implements: ARMv8.0 with AES/PMULL, SHA1, SHA256, CRC32, " +
			"ARMv8.1 LSE atomics, RDM and PAN (with AT S1E1RP/WP), ARMv8.2 UAO, DotProd, SHA512, SHA3, SM3, SM4 and FP16 arithmetic, ARMv8.3 LDAPR and pointer authentication (QARMA5, PACGA; no EPAC/PAuth2/FPAC, as QEMU 7.2), ARMv8.5 RNDR/RNDRRS, CSV2/CSV3 (no speculation; CSV2 1, not QEMU's 2: no SCXTNUM registers); not yet FHM or BTI",
	},
}

// DefaultModel is the model of vCPUs whose Config.Model is nil (QEMU's virt default
// for gemu: a Cortex-A57).
var DefaultModel = models[0]

// LookupModel returns the model called name (as -cpu spells it).
func LookupModel(name string) (*Model, bool) {
	for _, m := range models {
		if m.Name == name {
			return m, true
		}
	}
	return nil, false
}

// Models returns the models in -cpu help order.
func Models() []*Model { return append([]*Model(nil), models...) }

// mmfr0 returns the model's ID_AA64MMFR0_EL1: its PARange, 16-bit ASIDs, 4 KiB granule
// only (TGran64 = 0xf: not supported, TGran16 = 0: not supported).
func (m *Model) mmfr0() uint64 { return 0x0f000020 | m.PARange }

// hasLSE reports whether the model advertises (and so executes) the LSE atomics.
func (m *Model) hasLSE() bool { return m.ISAR0>>20&0xf >= 2 }

// hasRNDR reports whether the model advertises RNDR and RNDRRS.
func (m *Model) hasRNDR() bool { return m.ISAR0>>60 >= 1 }

// rndr implements MRS RNDR/RNDRRS: a value from the host's cryptographic generator
// (both registers reseed as often as the host's generator does), NZCV 0000; if the
// host cannot supply one, 0 with NZCV 0100, as the architecture allows.
func (c *CPU) rndr() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		c.NZCV = 0x40000000
		return 0
	}
	c.NZCV = 0
	return binary.LittleEndian.Uint64(b[:])
}

// hasRCpc reports whether the model advertises LDAPR.
func (m *Model) hasRCpc() bool { return m.ISAR1>>20&0xf >= 1 }

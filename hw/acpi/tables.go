package acpi

import (
	"encoding/binary"
	"fmt"
)

// Config describes the machine the tables announce.
type Config struct {
	CPUs       int    // Processor Local APIC entries with APIC ids 0..CPUs-1, all enabled
	LAPICAddr  uint32 // local APIC MMIO base (0xfee00000)
	IOAPICAddr uint32 // IOAPIC MMIO base (0xfec00000), GSI base 0
	IOAPICID   uint8
	SCI        uint8 // ISA IRQ of the SCI (9); level, active high

	PM PMPorts // the PM/GPE register block (see PM)

	// ResetPort, if non-zero, is the I/O port of the reset register (0xcf9) and
	// ResetValue the value that resets (6).
	ResetPort  uint16
	ResetValue uint8

	// CenturyReg is the CMOS index of the RTC century register (0x32), 0 for none.
	CenturyReg uint8

	// PCI, if set, adds a PCI0 host bridge on bus 0 to the DSDT with the given 32-bit
	// memory window for BARs.
	PCI            bool
	PCIMem32Start  uint32
	PCIMem32Length uint32
	// PCIRouting, if set, gives PCI0 a _PRT sending INTA-INTD of slots 1-31 to
	// IOAPIC GSIs per PCIIntxGSI, so INTx devices (virtio-pci without MSI-X) work.
	PCIRouting bool
	// PCIHotplug, if non-zero, adds ACPI PCI hotplug (see PCIHotplug) for the bus-0
	// slots whose bits are set: a device per slot under PCI0 and the GPE 1 handler.
	PCIHotplug uint32

	// HPET, if set, adds an HPET table (after the MADT in the RSDT/XSDT) announcing
	// the event timer block at HPETAddr (0xfed00000) whose capabilities register's
	// low half is HPETID (0x8086a201 for hw/timer's 3-timer HPET). Unset, the tables
	// are byte-identical to those of a build without the option (the KVM PC's).
	HPET     bool
	HPETAddr uint32
	HPETID   uint32
}

// PCIIntxGSI is the GSI that INTx pin (0 = INTA .. 3 = INTD) of a device in slot raises
// under the _PRT built with Config.PCIRouting: the eight IOAPIC pins above the ISA
// range, rotated by slot as bridges swizzle them.
func PCIIntxGSI(slot, pin uint8) uint32 { return 16 + (uint32(slot)+uint32(pin))%8 }

// Tables is the built set of tables, laid out for one guest-physical base address.
type Tables struct {
	Blob []byte // copy to guest memory at Base
	Base uint64
	RSDP uint64 // guest-physical address of the RSDP (== Base)
	// Offsets of each table in Blob, by signature, for tests and logs.
	Offsets map[string]int
}

const (
	oemID      = "GEMU  "
	oemTableID = "GEMUPC  "
	creatorID  = "GEMU"
)

// header returns a standard 36-byte table header; length and checksum are fixed up by
// finish.
func header(sig string, rev byte) []byte {
	h := make([]byte, 36)
	copy(h[0:4], sig)
	h[8] = rev
	copy(h[10:16], oemID)
	copy(h[16:24], oemTableID)
	binary.LittleEndian.PutUint32(h[24:], 1) // OEM revision
	copy(h[28:32], creatorID)
	binary.LittleEndian.PutUint32(h[32:], 1)
	return h
}

// finish sets the length and checksum of a table starting with a standard header.
func finish(t []byte) []byte {
	binary.LittleEndian.PutUint32(t[4:], uint32(len(t)))
	t[9] = 0
	t[9] = -checksum(t)
	return t
}

func checksum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

// gas encodes a Generic Address Structure for an I/O port block.
func gasIO(port uint16, bits, access byte) []byte {
	b := []byte{1, bits, 0, access}
	return binary.LittleEndian.AppendUint64(b, uint64(port))
}

// Build lays out RSDP, XSDT, RSDT, FADT, FACS, DSDT and MADT at guest-physical base
// (16-byte aligned, and below 4 GiB since RSDT and the 32-bit FADT fields hold
// addresses). For a legacy-BIOS guest, base in 0xe0000-0xfffff lets the kernel find
// the RSDP by scanning.
func Build(base uint64, c Config) (*Tables, error) {
	if base%16 != 0 || base+0x10000 > 1<<32 {
		return nil, fmt.Errorf("acpi: bad table base %#x", base)
	}
	if c.CPUs < 1 || c.CPUs > 255 {
		return nil, fmt.Errorf("acpi: %d CPUs cannot be described with 8-bit APIC ids", c.CPUs)
	}
	t := &Tables{Base: base, RSDP: base, Offsets: map[string]int{}}
	var blob []byte
	place := func(name string, table []byte, align int) uint64 {
		for len(blob)%align != 0 {
			blob = append(blob, 0)
		}
		t.Offsets[name] = len(blob)
		blob = append(blob, table...)
		return base + uint64(t.Offsets[name])
	}
	// The RSDP first (it must be 16-byte aligned), filled in at the end.
	place("RSD PTR ", make([]byte, 36), 16)
	facs := place("FACS", buildFACS(), 64)
	dsdt := place("DSDT", buildDSDT(c), 16)
	fadt := place("FACP", buildFADT(c, facs, dsdt), 16)
	madt := place("APIC", buildMADT(c), 16)
	entries := []uint64{fadt, madt}
	if c.HPET {
		entries = append(entries, place("HPET", buildHPET(c), 16))
	}

	rsdt := header("RSDT", 1)
	xsdt := header("XSDT", 1)
	for _, e := range entries {
		rsdt = binary.LittleEndian.AppendUint32(rsdt, uint32(e))
		xsdt = binary.LittleEndian.AppendUint64(xsdt, e)
	}
	rsdtAddr := place("RSDT", finish(rsdt), 16)
	xsdtAddr := place("XSDT", finish(xsdt), 16)

	r := blob[0:36]
	copy(r[0:8], "RSD PTR ")
	copy(r[9:15], oemID)
	r[15] = 2 // ACPI 2.0+ RSDP
	binary.LittleEndian.PutUint32(r[16:], uint32(rsdtAddr))
	binary.LittleEndian.PutUint32(r[20:], 36)
	binary.LittleEndian.PutUint64(r[24:], xsdtAddr)
	r[8] = -checksum(r[0:20])
	r[32] = -checksum(r[0:36])
	t.Blob = blob
	return t, nil
}

func buildFACS() []byte {
	f := make([]byte, 64)
	copy(f[0:4], "FACS")
	binary.LittleEndian.PutUint32(f[4:], 64)
	f[32] = 2 // version
	return f
}

// FADT flag and boot-architecture bits used here.
const (
	fadtWBINVD      = 1 << 0
	fadtProcC1      = 1 << 2
	fadtPwrButton   = 1 << 4 // no fixed-feature power button (clear: PM.PowerButton is one)
	fadtSlpButton   = 1 << 5 // no fixed-feature sleep button
	fadtTmrValExt   = 1 << 8 // 32-bit PM timer
	fadtResetRegSup = 1 << 10

	bootArchLegacyDevices = 1 << 0
	bootArchNoVGA         = 1 << 2
)

// fadtRevision 6 is ACPI 6.0's 276-byte FADT (with the hypervisor vendor identity,
// left zero); HW_REDUCED_ACPI stays clear, so the PM1 blocks and SCI are used.
const (
	fadtRevision = 6
	fadtMinor    = 0
	fadtLength   = 276
)

func buildFADT(c Config, facs, dsdt uint64) []byte {
	f := append(header("FACP", fadtRevision), make([]byte, fadtLength-36)...)
	le := binary.LittleEndian
	le.PutUint32(f[36:], uint32(facs))
	le.PutUint32(f[40:], uint32(dsdt))
	le.PutUint16(f[46:], uint16(c.SCI))
	// SMI_CMD 0: the platform is always in ACPI mode (PM1_CNT.SCI_EN reads 1).
	p := c.PM
	le.PutUint32(f[56:], uint32(p.Base+pm1EvtOff))
	le.PutUint32(f[64:], uint32(p.Base+pm1CntOff))
	le.PutUint32(f[76:], uint32(p.Base+pmTmrOff))
	le.PutUint32(f[80:], uint32(p.Base+gpe0Off))
	f[88] = pm1EvtLen
	f[89] = pm1CntLen
	f[91] = pmTmrLen
	f[92] = gpe0Len
	le.PutUint16(f[96:], 101)  // C2 not supported
	le.PutUint16(f[98:], 1001) // C3 not supported
	f[108] = c.CenturyReg
	le.PutUint16(f[109:], bootArchLegacyDevices|bootArchNoVGA)
	flags := uint32(fadtWBINVD | fadtProcC1 | fadtSlpButton | fadtTmrValExt) // a fixed power button, as QEMU's PIIX4 (PM.PowerButton)
	if c.ResetPort != 0 {
		flags |= fadtResetRegSup
		copy(f[116:], gasIO(c.ResetPort, 8, 1))
		f[128] = c.ResetValue
	}
	le.PutUint32(f[112:], flags)
	f[131] = fadtMinor
	le.PutUint64(f[132:], facs)
	le.PutUint64(f[140:], dsdt)
	copy(f[148:], gasIO(p.Base+pm1EvtOff, pm1EvtLen*8, 0))
	copy(f[172:], gasIO(p.Base+pm1CntOff, pm1CntLen*8, 0))
	copy(f[208:], gasIO(p.Base+pmTmrOff, pmTmrLen*8, 0))
	copy(f[220:], gasIO(p.Base+gpe0Off, gpe0Len*8, 0))
	return finish(f)
}

// MADT interrupt-source-override flags (MPS INTI flags).
const (
	intiActiveHigh = 0x1
	intiEdge       = 0x1 << 2
	intiLevel      = 0x3 << 2
)

func buildMADT(c Config) []byte {
	m := header("APIC", 4)
	le := binary.LittleEndian
	m = le.AppendUint32(m, c.LAPICAddr)
	m = le.AppendUint32(m, 1) // PCAT_COMPAT: dual 8259s present (KVM's in-kernel pair or hw/intc/i8259)
	for i := 0; i < c.CPUs; i++ {
		// Processor Local APIC: UID i, APIC id i, enabled.
		m = append(m, 0, 8, byte(i), byte(i))
		m = le.AppendUint32(m, 1)
	}
	m = append(m, 1, 12, c.IOAPICID, 0)
	m = le.AppendUint32(m, c.IOAPICAddr)
	m = le.AppendUint32(m, 0) // GSI base
	iso := func(irq byte, gsi uint32, flags uint16) {
		m = append(m, 2, 10, 0, irq)
		m = le.AppendUint32(m, gsi)
		m = le.AppendUint16(m, flags)
	}
	// The PIT's IRQ0 is wired to IOAPIC pin 2, as on every PC chipset (and in KVM's
	// default GSI routing).
	iso(0, 2, intiActiveHigh|intiEdge)
	iso(c.SCI, uint32(c.SCI), intiActiveHigh|intiLevel)
	// Local APIC NMI on LINT1 for all processors.
	m = append(m, 4, 6, 0xff, 0, 0, 1)
	return finish(m)
}

// buildHPET encodes the IA-PC HPET table (HPET specification 1.0a, section 3.2.4) as
// QEMU's build_hpet does: the event timer block id, its base as a system-memory GAS,
// HPET number 0, no minimum tick, no page protection.
func buildHPET(c Config) []byte {
	h := header("HPET", 1)
	le := binary.LittleEndian
	h = le.AppendUint32(h, c.HPETID)
	h = append(h, 0, 0, 0, 0) // GAS: system memory, width/offset/access 0 as QEMU
	h = le.AppendUint64(h, uint64(c.HPETAddr))
	h = append(h, 0)          // HPET number
	h = le.AppendUint16(h, 0) // minimum clock tick in periodic mode
	h = append(h, 0)          // page protection and OEM attributes
	return finish(h)
}

// SleepTypeS5 is the SLP_TYP value the DSDT's \_S5 names; writing it to PM1_CNT with
// SLP_EN powers the machine off.
const SleepTypeS5 = 5

func buildDSDT(c Config) []byte {
	aml := amlNameDef(`\_S5`, amlPackageOf(amlInteger(SleepTypeS5), amlInteger(SleepTypeS5), amlInteger(0), amlInteger(0)))
	if c.PCI {
		var crs []byte
		crs = append(crs, resWordAddr(2, 0, 0, 0xff)...) // buses 0-255
		crs = append(crs, resIO(0xcf8, 8)...)            // config mechanism #1
		crs = append(crs, resWordAddr(1, 3, 0x0000, 0x0cf7)...)
		crs = append(crs, resWordAddr(1, 3, 0x0d00, 0xffff)...)
		crs = append(crs, resDWordMemory(c.PCIMem32Start, c.PCIMem32Start+c.PCIMem32Length-1)...)
		crs = append(crs, resEnd...)
		terms := [][]byte{
			amlNameDef("_HID", amlEisaID("PNP0A03")),
			amlNameDef("_ADR", amlInteger(0)),
			amlNameDef("_UID", amlInteger(0)),
			amlNameDef("_CRS", amlBufferOf(crs)),
		}
		if c.PCIRouting {
			var prt [][]byte
			for slot := uint8(1); slot < 32; slot++ {
				for pin := uint8(0); pin < 4; pin++ {
					// {address (device, any function), pin, source (none: a GSI), GSI}
					prt = append(prt, amlPackageOf(amlInteger(uint64(slot)<<16|0xffff), amlInteger(uint64(pin)),
						amlInteger(0), amlInteger(uint64(PCIIntxGSI(slot, pin)))))
				}
			}
			terms = append(terms, amlNameDef("_PRT", amlPackageOf(prt...)))
		}
		if c.PCIHotplug != 0 {
			terms = append(terms, pcihpAML(c.PCIHotplug)...)
		}
		aml = append(aml, amlScopeOf(`\_SB`, amlDeviceOf("PCI0", terms...))...)
		if c.PCIHotplug != 0 {
			aml = append(aml, pcihpGPE()...)
		}
	}
	d := header("DSDT", 2) // revision 2: 64-bit AML integers
	return finish(append(d, aml...))
}

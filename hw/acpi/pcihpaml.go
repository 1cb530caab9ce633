package acpi

import "fmt"

// AML opcodes of the PCI hotplug methods (ACPI 6.4 §20.2).
const (
	amlMethod    = 0x14
	amlLocal0    = 0x60
	amlStore     = 0x70
	amlAnd       = 0x7b
	amlNotify    = 0x86
	amlIf        = 0xa0
	amlOpRegion  = 0x80 // after amlExtPrefix
	amlField     = 0x81 // after amlExtPrefix
	amlNullName  = 0x00
	regionSysIO  = 0x01
	fieldDWordWZ = 0x03 | 2<<5 // DWordAcc, NoLock, WriteAsZeros
)

func amlMethodOf(name string, args int, terms ...[]byte) []byte {
	body := append(amlNameString(name), byte(args&7))
	for _, t := range terms {
		body = append(body, t...)
	}
	return append(append([]byte{amlMethod}, amlPkgLength(len(body))...), body...)
}

func amlIfOf(pred []byte, terms ...[]byte) []byte {
	body := append([]byte(nil), pred...)
	for _, t := range terms {
		body = append(body, t...)
	}
	return append(append([]byte{amlIf}, amlPkgLength(len(body))...), body...)
}

func amlStoreOf(src, dst []byte) []byte {
	return append(append([]byte{amlStore}, src...), dst...)
}

func amlAndOf(a, b []byte) []byte {
	return append(append(append([]byte{amlAnd}, a...), b...), amlNullName)
}

// amlSysIORegion declares an OperationRegion in port I/O holding 32-bit fields (each
// name a field of 32 bits, in order from port).
func amlSysIORegion(region string, port uint16, fields ...string) []byte {
	r := append([]byte{amlExtPrefix, amlOpRegion}, amlNameString(region)...)
	r = append(r, regionSysIO)
	r = append(r, amlInteger(uint64(port))...)
	r = append(r, amlInteger(uint64(4*len(fields)))...)
	body := append(amlNameString(region), fieldDWordWZ)
	for _, f := range fields {
		body = append(body, amlNameString(f)...)
		body = append(body, 32) // the field's bit length (a one-byte PkgLength)
	}
	r = append(r, amlExtPrefix, amlField)
	r = append(r, amlPkgLength(len(body))...)
	return append(r, body...)
}

// pcihpSlotName is the ACPI device of a slot, named as QEMU's DSDT names it: S and
// the devfn of its function 0 in hex.
func pcihpSlotName(slot int) string { return fmt.Sprintf("S%02X", slot<<3) }

// pcihpAML returns the terms that go inside PCI0 for ACPI PCI hotplug of the slots in
// mask: the register fields, a Device per slot with _ADR, _SUN and an _EJ0 that writes
// the slot's bit to the eject register, and PCNT, which notifies the slots with
// pending events (Device Check for a plug, Eject Request for an unplug request).
func pcihpAML(mask uint32) [][]byte {
	terms := [][]byte{
		amlSysIORegion("PCST", PCIHPBase+pcihpUp, "PCIU", "PCID"),
		amlSysIORegion("SEJ", PCIHPBase+pcihpEj, "B0EJ"),
		amlSysIORegion("BNMR", PCIHPBase+pcihpSel, "BNUM"),
	}
	selectBus0 := amlStoreOf(amlInteger(0), amlNameString("BNUM"))
	local1 := []byte{amlLocal0 + 1}
	pcnt := [][]byte{
		selectBus0,
		amlStoreOf(amlNameString("PCIU"), []byte{amlLocal0}),
		amlStoreOf(amlNameString("PCID"), local1),
	}
	for s := 0; s < 32; s++ {
		bit := uint64(1) << s
		if mask&uint32(bit) == 0 {
			continue
		}
		name := pcihpSlotName(s)
		terms = append(terms, amlDeviceOf(name,
			amlNameDef("_ADR", amlInteger(uint64(s)<<16)),
			amlNameDef("_SUN", amlInteger(uint64(s))),
			amlMethodOf("_EJ0", 1, selectBus0, amlStoreOf(amlInteger(bit), amlNameString("B0EJ"))),
		))
		pcnt = append(pcnt,
			amlIfOf(amlAndOf([]byte{amlLocal0}, amlInteger(bit)), append(append([]byte{amlNotify}, amlNameString(name)...), amlInteger(1)...)),
			amlIfOf(amlAndOf(local1, amlInteger(bit)), append(append([]byte{amlNotify}, amlNameString(name)...), amlInteger(3)...)))
	}
	return append(terms, amlMethodOf("PCNT", 0, pcnt...))
}

// pcihpGPE is the \_GPE scope whose GPE 1 handler runs PCI0.PCNT.
func pcihpGPE() []byte {
	return amlScopeOf(`\_GPE`,
		amlNameDef("_HID", append([]byte{amlString}, "ACPI0006\x00"...)),
		amlMethodOf(fmt.Sprintf("_E%02X", PCIHPGPE), 0, amlNameString(`\_SB.PCI0.PCNT`)))
}

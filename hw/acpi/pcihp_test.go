package acpi

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gemu/hw/bus"
)

func rd32(d bus.Device, off uint64) uint32 {
	var b [4]byte
	d.Read(bus.Host, off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func wr32(d bus.Device, off uint64, v uint32) {
	d.Write(bus.Host, off, binary.LittleEndian.AppendUint32(nil, v))
}

// TestPCIHotplugSequence drives the block as Linux running the DSDT's AML does: the
// GPE 1 SCI, _E01 (PCNT: select bus 0, read PCIU and PCID), clearing GPE status,
// then for an unplug the slot's _EJ0 writing B0EJ.
func TestPCIHotplugSequence(t *testing.T) {
	sci := &lvl{}
	pm := NewPM(sci, nil)
	var ejected []int
	h := NewPCIHotplug(pm, 0xfffffffc, func(s int) { ejected = append(ejected, s) })
	if got := rd32(h, pcihpRmv); got != 0xfffffffc {
		t.Fatalf("PCRM = %#x, want the removable mask", got)
	}
	// The guest enables GPE 1 (ACPICA does for a GPE with an _E01 method).
	pm.Write(bus.Host, gpe0Off+2, []byte{1 << PCIHPGPE})
	if h.Plug(1) || h.Plug(0) {
		t.Fatal("plug accepted for a slot without hotplug")
	}
	if sci.level {
		t.Fatal("SCI raised by a refused plug")
	}
	if !h.Plug(3) {
		t.Fatal("plug of slot 3 refused")
	}
	if !sci.level {
		t.Fatal("no SCI after a plug with GPE 1 enabled")
	}
	var sts [1]byte
	pm.Read(bus.Host, gpe0Off, sts[:])
	if sts[0] != 1<<PCIHPGPE {
		t.Fatalf("GPE0_STS = %#x, want bit 1", sts[0])
	}
	wr32(h, pcihpSel, 0)
	if up, down := rd32(h, pcihpUp), rd32(h, pcihpDown); up != 1<<3 || down != 0 {
		t.Fatalf("PCIU %#x PCID %#x after plug of slot 3", up, down)
	}
	if up := rd32(h, pcihpUp); up != 0 {
		t.Fatalf("PCIU %#x on the second read: QEMU's PIIX4 clears it when read", up)
	}
	pm.Write(bus.Host, gpe0Off, []byte{1 << PCIHPGPE})
	if sci.level {
		t.Fatal("SCI still high after GPE status cleared")
	}

	// device_del: eject request, _EJ0.
	h.RequestUnplug(3)
	if !sci.level || rd32(h, pcihpDown) != 1<<3 {
		t.Fatalf("no eject request pending (PCID %#x, SCI %v)", rd32(h, pcihpDown), sci.level)
	}
	if rd32(h, pcihpDown) != 1<<3 {
		t.Fatal("PCID cleared by reading: it stays until the eject")
	}
	pm.Write(bus.Host, gpe0Off, []byte{1 << PCIHPGPE})
	wr32(h, pcihpSel, 1) // another bus: no hotplug there, eject ignored
	wr32(h, pcihpEj, 1<<3)
	if len(ejected) != 0 || rd32(h, pcihpDown) != 0 {
		t.Fatalf("bus 1: ejected %v, PCID %#x", ejected, rd32(h, pcihpDown))
	}
	wr32(h, pcihpSel, 0)
	wr32(h, pcihpEj, 1<<3|1<<1)
	if len(ejected) != 1 || ejected[0] != 3 {
		t.Fatalf("ejected %v, want [3] (slot 1 is not removable)", ejected)
	}
	if rd32(h, pcihpDown) != 0 {
		t.Fatal("PCID still set after the eject")
	}
}

// TestPCIHotplugAML decodes the DSDT with ACPICA's disassembler (the oracle for the
// AML encoding) and checks what Linux's acpiphp needs: a Device per hotpluggable slot
// under PCI0 with _ADR, _SUN and _EJ0 writing the slot's bit to B0EJ, the registers at
// QEMU's ports, and \_GPE._E01 calling PCNT, which notifies each slot.
func TestPCIHotplugAML(t *testing.T) {
	iasl, err := exec.LookPath("iasl")
	if err != nil {
		t.Skip("iasl (acpica-tools) is not installed")
	}
	tb, err := Build(0xe0000, Config{CPUs: 1, LAPICAddr: 0xfee00000, IOAPICAddr: 0xfec00000, SCI: 9,
		PM: PMPorts{Base: 0x600}, PCI: true, PCIMem32Start: 0x80000000, PCIMem32Length: 0x7ec00000,
		PCIRouting: true, PCIHotplug: 1<<2 | 1<<31})
	if err != nil {
		t.Fatal(err)
	}
	o := tb.Offsets["DSDT"]
	n := int(binary.LittleEndian.Uint32(tb.Blob[o+4:]))
	dir := t.TempDir()
	aml := filepath.Join(dir, "dsdt.aml")
	if err := os.WriteFile(aml, tb.Blob[o:o+n], 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(iasl, "-d", aml).CombinedOutput(); err != nil {
		t.Fatalf("iasl -d: %v\n%s", err, out)
	}
	dsl, err := os.ReadFile(filepath.Join(dir, "dsdt.dsl"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(dsl)), " ")
	for _, want := range []string{
		"OperationRegion (PCST, SystemIO, 0xAE00, 0x08) Field (PCST, DWordAcc, NoLock, WriteAsZeros) { PCIU, 32, PCID, 32 }",
		"OperationRegion (SEJ, SystemIO, 0xAE08, 0x04) Field (SEJ, DWordAcc, NoLock, WriteAsZeros) { B0EJ, 32 }",
		"OperationRegion (BNMR, SystemIO, 0xAE10, 0x04)",
		"Device (S10) { Name (_ADR, 0x00020000) // _ADR: Address Name (_SUN, 0x02) // _SUN: Slot User Number Method (_EJ0, 1, NotSerialized) // _EJx: Eject Device, x=0-9 { BNUM = Zero B0EJ = 0x04 } }",
		"Device (SF8) { Name (_ADR, 0x001F0000)",
		"B0EJ = 0x80000000",
		"Local0 = PCIU", "Local1 = PCID",
		"If ((Local0 & 0x04)) { Notify (S10, One) // Device Check }",
		"If ((Local1 & 0x04)) { Notify (S10, 0x03) // Eject Request }",
		"Scope (\\_GPE) { Name (_HID, \"ACPI0006\" /* GPE Block Device */) // _HID: Hardware ID Method (_E01, 0, NotSerialized) // _Exx: Edge-Triggered GPE, xx=0x00-0xFF { \\_SB.PCI0.PCNT () } }",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("disassembled DSDT lacks %q", want)
		}
	}
	if strings.Contains(text, "Device (S18)") || strings.Contains(text, "Device (S08)") {
		t.Error("a Device for a slot outside the hotplug mask")
	}
	if t.Failed() {
		t.Logf("DSDT:\n%s", dsl)
	}
}

// Package acpi owns the ACPI firmware tables a PC guest finds in memory (RSDP,
// XSDT/RSDT, FADT, FACS, MADT, optionally the HPET table, and an AML DSDT with \_S5 and the PCI root bridge) and the
// fixed-hardware PM register block (PM1 event/control, PM timer, GPE0) through which
// the guest powers off.
//
// It encodes what a board tells it; it must not know about accelerators, how the
// tables get into guest memory, or other devices' internals.
package acpi

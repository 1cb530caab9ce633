package pc

import (
	"fmt"
	"sync"

	"gemu/hw/acpi"
)

// PCI hotplug as QEMU's pc does it: ACPI PCI hotplug on bus 0 (the PIIX4 PM
// function's register block at acpi.PCIHPBase, the DSDT's slot devices and GPE 1).
// Slots 0 (host bridge) and 1 (where QEMU's pc has its PIIX3, not hotpluggable) have
// none; every other slot, empty or cold-plugged, can be hotplugged and ejected.

// pcihpSlots is the mask of slots with hotplug.
const pcihpSlots = 0xfffffffc

// pciHotplug is the board's side of the block: the ejects device_del waits for.
type pciHotplug struct {
	mu      sync.Mutex
	regs    *acpi.PCIHotplug
	pending map[int]func() // by slot: what runs when the guest ejects it
}

func (m *Machine) newPCIHotplug() *acpi.PCIHotplug {
	m.hp.pending = map[int]func(){}
	m.hp.regs = acpi.NewPCIHotplug(m.pm, pcihpSlots, m.ejected)
	return m.hp.regs
}

// ejected runs on the vCPU thread of the guest's _EJ0 write. An eject nobody asked
// for (the guest powering a slot off by itself) finds no pending device_del and
// leaves the device in place.
func (m *Machine) ejected(slot int) {
	m.hp.mu.Lock()
	done := m.hp.pending[slot]
	delete(m.hp.pending, slot)
	m.hp.mu.Unlock()
	if done != nil {
		done()
	}
}

// RootHotplugSlot implements qdev.RootHotplug.
func (m *Machine) RootHotplugSlot(slot int) bool {
	return slot >= 0 && slot < 32 && pcihpSlots&(1<<slot) != 0
}

// PlugRootSlot implements qdev.RootHotplug: the slot's Device Check is raised.
func (m *Machine) PlugRootSlot(slot int) { m.hp.regs.Plug(slot) }

// RequestRootUnplug implements qdev.RootHotplug: the slot's Eject Request is raised;
// done runs when the guest's _EJ0 writes the slot's bit.
func (m *Machine) RequestRootUnplug(slot int, done func()) error {
	if !m.RootHotplugSlot(slot) {
		return fmt.Errorf("pc: slot %d has no hotplug", slot)
	}
	m.hp.mu.Lock()
	m.hp.pending[slot] = done
	m.hp.mu.Unlock()
	m.hp.regs.RequestUnplug(slot)
	return nil
}

// VirtioPCIRemoved implements qdev.VirtioPCIRemover: an unplugged function is no
// longer saved.
func (m *Machine) VirtioPCIRemoved(slot, fn int) { delete(m.vpci, [2]int{slot, fn}) }

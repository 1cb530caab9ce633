package acpi

import (
	"encoding/binary"
	"sync"

	"gemu/hw/bus"
)

// ACPI PCI hotplug for bus 0, the interface QEMU's PIIX4 PM function gives the pc
// board (QEMU docs/specs/acpi_pci_hotplug.rst, hw/acpi/pcihp.c): a block of 32-bit
// registers in port I/O, one bit per slot, that the DSDT's AML (pcihpAML) reads from
// the GPE 1 handler and writes from each slot's _EJ0.
const (
	// PCIHPBase is where QEMU places the block (ACPI_PCIHP_ADDR).
	PCIHPBase = 0xae00
	// PCIHPSize is its length in ports (QEMU 7.2's ACPI_PCIHP_SIZE).
	PCIHPSize = 0x18

	pcihpUp   = 0x00 // slots with a device-check pending (read clears, as QEMU's non-legacy PIIX4)
	pcihpDown = 0x04 // slots with an eject request pending
	pcihpEj   = 0x08 // write: eject the slots whose bits are set; read: feature set (0)
	pcihpRmv  = 0x0c // slots that can be removed (read only)
	pcihpSel  = 0x10 // bus select (only bus 0 has hotplug here)
	pcihpAidx = 0x14 // acpi-index query: no indices, reads 0

	// PCIHPGPE is the GPE0 bit the block raises (GPE.1, handled by \_GPE._E01).
	PCIHPGPE = 1
)

// PCIHotplug is the register block. Plug and RequestUnplug set a slot's pending bit
// and raise GPE 1 through the PM block; the guest's AML notifies the slot's ACPI
// device, and its _EJ0 writes the eject register, which calls Eject.
type PCIHotplug struct {
	mu        sync.Mutex
	pm        *PM
	removable uint32
	up, down  uint32
	sel       uint32
	eject     func(slot int)
}

// NewPCIHotplug returns the block for the slots in removable (bit n: slot n); eject
// is called, without the block's lock, for each removable slot the guest ejects.
func NewPCIHotplug(pm *PM, removable uint32, eject func(slot int)) *PCIHotplug {
	return &PCIHotplug{pm: pm, removable: removable, eject: eject}
}

func (h *PCIHotplug) raise(reg *uint32, slot int) bool {
	if slot < 0 || slot > 31 || h.removable&(1<<slot) == 0 {
		return false
	}
	h.mu.Lock()
	*reg |= 1 << slot
	h.mu.Unlock()
	if h.pm != nil {
		h.pm.RaiseGPE(PCIHPGPE)
	}
	return true
}

// Plug tells the guest a device appeared in slot (QEMU's acpi_pcihp_device_plug_cb
// for a hotplugged device). It reports false for a slot without hotplug.
func (h *PCIHotplug) Plug(slot int) bool { return h.raise(&h.up, slot) }

// RequestUnplug asks the guest to eject slot (acpi_pcihp_device_unplug_request_cb).
func (h *PCIHotplug) RequestUnplug(slot int) bool { return h.raise(&h.down, slot) }

// Pending returns the up and down bits (for tests and logs).
func (h *PCIHotplug) Pending() (up, down uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.up, h.down
}

// Reset implements bus.Resetter: nothing pending, bus 0 selected.
func (h *PCIHotplug) Reset() {
	h.mu.Lock()
	h.up, h.down, h.sel = 0, 0, 0
	h.mu.Unlock()
}

// Read implements bus.Device.
func (h *PCIHotplug) Read(_ bus.Access, off uint64, data []byte) {
	h.mu.Lock()
	var r [PCIHPSize]byte
	le := binary.LittleEndian
	if h.sel == 0 {
		le.PutUint32(r[pcihpUp:], h.up)
		le.PutUint32(r[pcihpDown:], h.down)
		le.PutUint32(r[pcihpRmv:], h.removable)
	}
	le.PutUint32(r[pcihpSel:], h.sel)
	if h.sel == 0 && off <= pcihpUp+3 && off+uint64(len(data)) > pcihpUp {
		h.up = 0 // the AML reads PCIU once per event
	}
	h.mu.Unlock()
	for i := range data {
		if o := off + uint64(i); o < PCIHPSize {
			data[i] = r[o]
		} else {
			data[i] = 0xff
		}
	}
}

// Write implements bus.Device: the eject and select registers; the rest is read only.
func (h *PCIHotplug) Write(_ bus.Access, off uint64, data []byte) {
	var v uint32
	for i, b := range data {
		v |= uint32(b) << (8 * i)
	}
	switch off {
	case pcihpSel:
		h.mu.Lock()
		h.sel = v
		h.mu.Unlock()
	case pcihpEj:
		h.mu.Lock()
		if h.sel != 0 {
			h.mu.Unlock()
			return
		}
		v &= h.removable
		h.down &^= v
		h.mu.Unlock()
		for s := 0; s < 32; s++ {
			if v&(1<<s) != 0 && h.eject != nil {
				h.eject(s)
			}
		}
	}
}

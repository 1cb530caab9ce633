package virt

import (
	"errors"
	"fmt"

	"gemu/hw/bus"
	"gemu/hw/intc"
	"gemu/hw/pci"
	"gemu/hw/virtio"
	"gemu/hw/virtio/mmio"
	virtiopci "gemu/hw/virtio/pci"
)

// QEMU 7.2 virt's PCIe host (hw/arm/virt.c base_memmap / extended_memmap): the ECAM
// above RAM ("highmem-ecam"), the 32-bit MMIO window, the I/O window, and the 64-bit
// MMIO window at 512 GiB; INTA-INTD of slot 0 on SPIs 3-6, rotated per slot; MSIs
// through the GICv2m frame (SPIs 48-111) when the GIC is a v2.
const (
	PCIeECAMBase   = 0x40_1000_0000
	PCIeECAMSize   = 0x1000_0000
	PCIeMMIOBase   = 0x1000_0000
	PCIeMMIOSize   = 0x2eff_0000
	PCIePIOBase    = 0x3eff_0000
	PCIePIOSize    = 0x1_0000
	PCIeHighMMIO   = 0x80_0000_0000
	PCIeHighSize   = 0x80_0000_0000
	PCIeINTxSPI    = 3
	GICV2MBase     = 0x0802_0000
	GICV2MSPIBase  = 48
	GICV2MSPICount = 64
)

// initPCIe builds the PCIe host: bus 0 with the host bridge, ECAM and the I/O window on
// the MMIO bus, INTx on SPIs 3-6, MSI through the v2m frame on a GICv2.
func (m *Machine) initPCIe(v2m *intc.V2M) error {
	m.pio = bus.New()
	lines := make([]bus.IRQ, 4)
	for i := range lines {
		lines[i] = m.gic.SPI(PCIeINTxSPI + i)
	}
	cfg := pci.BusConfig{MMIO: m.mmio, PIO: m.pio, INTx: pci.RotatingINTx(lines)}
	if v2m != nil {
		cfg.MSI = pci.MSIFunc(func(addr uint64, data uint32) {
			if addr >= GICV2MBase && addr < GICV2MBase+intc.V2MSize {
				v2m.SignalMSI(addr-GICV2MBase, data)
			}
		})
	}
	m.pci = pci.NewBus(cfg)
	m.host = pci.NewPCIeHostBridge()
	if err := m.pci.Add(0, 0, m.host); err != nil {
		return err
	}
	if err := m.mmio.Insert(pci.NewECAM(m.pci), "pcie-ecam", PCIeECAMBase, PCIeECAMSize); err != nil {
		return err
	}
	return m.mmio.Insert(pci.NewIOWindow(m.pio), "pcie-pio", PCIePIOBase, PCIePIOSize)
}

// initVirtioMMIO maps the 32 empty virtio-mmio transports.
func (m *Machine) initVirtioMMIO() error {
	for n := range VirtioSlots {
		d := mmio.New(nil, m.ram, nil)
		m.vmmio[n] = d
		if err := m.mmio.Insert(d, fmt.Sprintf("virtio-mmio%d", n), VirtioBase+uint64(n)*VirtioStride, VirtioStride); err != nil {
			return err
		}
	}
	return nil
}

// Memory implements qdev.Board.
func (m *Machine) Memory() virtio.Memory { return m.ram }

// PCI implements qdev.Board.
func (m *Machine) PCI() *pci.Bus { return m.pci }

// Express implements qdev.Board. The host bridge is PCI Express, but devices on its
// root bus are conventional PCI functions, as QEMU makes virtio-pci there (an Express
// endpoint needs a root port above it).
func (m *Machine) Express() bool { return false }

// FirstPCISlot implements qdev.Board: slot 0 is the host bridge.
func (m *Machine) FirstPCISlot() int { return 1 }

// PCIHooks implements qdev.Board: TCG has no in-kernel fast paths.
func (m *Machine) PCIHooks() virtiopci.Hooks { return virtiopci.Hooks{} }

// VirtioMMIO implements qdev.Board. Devices take the transports from the highest
// address down in command-line order, as QEMU's virt does (its buses are created in
// forward order and prepended); the device tree lists them in ascending order, also as
// QEMU's does, so a guest sees the same device at the same address under both.
func (m *Machine) VirtioMMIO(dev virtio.Device) error {
	for n := VirtioSlots - 1; n >= 0; n-- {
		if m.vmmio[n].Transport() != nil {
			continue
		}
		base := VirtioBase + uint64(n)*VirtioStride
		d := mmio.New(dev, m.ram, m.gic.SPI(VirtioSPI+n))
		if !m.mmio.Remove(base) {
			return errors.New("virtio-mmio: slot vanished")
		}
		m.vmmio[n] = d
		return m.mmio.Insert(d, fmt.Sprintf("virtio-mmio%d", n), base, VirtioStride)
	}
	return errors.New("no free virtio-mmio transport (the virt board has 32)")
}

// releaseDevices stops every device's workers (the mmio transports and the PCI
// functions reset) before guest RAM goes away.
func (m *Machine) releaseDevices() {
	if m.mmio != nil {
		m.mmio.Reset()
	}
	for _, f := range m.onRelease {
		f()
	}
}

// OnRelease registers f to run when the machine releases its devices (qdev.Env.Reset
// for the PCI functions it built).
func (m *Machine) OnRelease(f func()) { m.onRelease = append(m.onRelease, f) }

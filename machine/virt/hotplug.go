package virt

// PCIeRoot implements qdev.ExpressHost: virt's PCI bus is a PCI Express root complex
// reached through ECAM, so pcie-root-port devices (and the buses behind them, numbered
// by the guest) work on it, with native PCIe hotplug as QEMU's virt board has it.
func (m *Machine) PCIeRoot() bool { return true }

// MSIAvailable implements qdev.MSIController: virt delivers MSIs through the GICv2m
// frame, which only a GICv2 board has (gemu's GICv3 has no ITS).
func (m *Machine) MSIAvailable() bool { return m.cfg.GICVersion == 2 }

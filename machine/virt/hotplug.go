package virt

// PCIeRoot implements qdev.ExpressHost: virt's PCI bus is a PCI Express root complex
// reached through ECAM, so pcie-root-port devices (and the buses behind them, numbered
// by the guest) work on it, with native PCIe hotplug as QEMU's virt board has it.
func (m *Machine) PCIeRoot() bool { return true }

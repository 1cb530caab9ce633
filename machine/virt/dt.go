package virt

import (
	"crypto/rand"
	"fmt"

	"gemu/hw/fdt"
	arm "gemu/target-arm"
)

// Phandles, numbered as QEMU's so dumps compare equal, interrupt-map included: the
// clock first, then one per CPU (QEMU's cpu-map refers to them), then the GIC and its
// MSI frame.
const phClock = 0x8000

func (m *Machine) phIntc() uint32 { return phClock + 1 + uint32(m.cfg.SMP) }
func (m *Machine) phV2M() uint32  { return m.phIntc() + 1 }

// GIC interrupt specifier cells: type, number, flags.
const (
	dtSPI       = 0
	dtPPI       = 1
	dtEdgeRise  = 1
	dtLevelHigh = 4
)

// PSCI function IDs named in the psci node (SMC64 CPU_SUSPEND/CPU_ON/MIGRATE).
const (
	dtPSCISuspend = 0xc4000001
	dtPSCIOff     = 0x84000002
	dtPSCIOn      = 0xc4000003
	dtPSCIMigrate = 0xc4000005
)

// deviceTree builds the board's tree: what QEMU 7.2's virt describes for the devices gemu
// has (no flash, platform bus, ITS, or PMU, which gemu's vCPUs do not have).
func (m *Machine) deviceTree() *fdt.Node {
	r := fdt.NewRoot()
	r.SetU32("interrupt-parent", m.phIntc())
	r.SetString("model", "linux,dummy-virt")
	r.SetU32("#size-cells", 2)
	r.SetU32("#address-cells", 2)
	r.SetString("compatible", "linux,dummy-virt")

	psci := r.Child("psci")
	psci.SetU32("migrate", dtPSCIMigrate)
	psci.SetU32("cpu_on", dtPSCIOn)
	psci.SetU32("cpu_off", dtPSCIOff)
	psci.SetU32("cpu_suspend", dtPSCISuspend)
	psci.SetString("method", "hvc")
	psci.SetString("compatible", "arm,psci-1.0", "arm,psci-0.2", "arm,psci")

	mem := r.Child(fmt.Sprintf("memory@%x", RAMBase))
	mem.SetU64("reg", RAMBase, m.cfg.RAMSize)
	mem.SetString("device_type", "memory")

	for n := range VirtioSlots {
		base := uint64(VirtioBase + VirtioStride*n)
		v := r.Child(fmt.Sprintf("virtio_mmio@%x", base))
		v.SetEmpty("dma-coherent")
		v.SetU32("interrupts", dtSPI, uint32(VirtioSPI+n), dtEdgeRise)
		v.SetU64("reg", base, VirtioStride)
		v.SetString("compatible", "virtio,mmio")
	}

	m.pcieNode(r)

	uart := r.Child(fmt.Sprintf("pl011@%x", UARTBase))
	uart.SetString("clock-names", "uartclk", "apb_pclk")
	uart.SetU32("clocks", phClock, phClock)
	uart.SetU32("interrupts", dtSPI, UARTSPI, dtLevelHigh)
	uart.SetU64("reg", UARTBase, UARTSize)
	uart.SetString("compatible", "arm,pl011", "arm,primecell")

	// The PMU's overflow interrupt: PPI 7 (INTID 23), level, CPU mask with GICv2.
	pmuFlags := uint32(dtLevelHigh)
	if m.cfg.GICVersion == 2 {
		pmuFlags |= (1<<m.cfg.SMP - 1) << 8
	}
	pmu := r.Child("pmu")
	pmu.SetU32("interrupts", dtPPI, ppiPMU-16, pmuFlags)
	pmu.SetString("compatible", "arm,armv8-pmuv3")

	intc := r.Child(fmt.Sprintf("intc@%x", GICDistBase))
	intc.SetU32("phandle", m.phIntc())
	if m.cfg.GICVersion == 3 {
		intc.SetU64("reg", GICDistBase, GICDistSize, GICRedistBase, uint64(m.cfg.SMP)*redistStride)
		intc.SetU32("#redistributor-regions", 1)
		intc.SetString("compatible", "arm,gic-v3")
	} else {
		intc.SetU64("reg", GICDistBase, GICDistSize, GICCPUBase, GICCPUSize)
		intc.SetString("compatible", "arm,cortex-a15-gic")
	}
	// #address-cells 2 on the GIC, as QEMU's: the PCIe interrupt-map's parent unit
	// addresses have two cells, and the v2m frame is a child.
	intc.SetEmpty("ranges")
	intc.SetU32("#size-cells", 2)
	intc.SetU32("#address-cells", 2)
	intc.SetEmpty("interrupt-controller")
	intc.SetU32("#interrupt-cells", 3)
	if m.cfg.GICVersion == 2 {
		v2m := intc.Child(fmt.Sprintf("v2m@%x", GICV2MBase))
		v2m.SetU32("phandle", m.phV2M())
		v2m.SetU64("reg", GICV2MBase, 0x1000)
		v2m.SetEmpty("msi-controller")
		v2m.SetString("compatible", "arm,gic-v2m-frame")
	}

	cpus := r.Child("cpus")
	cpus.SetU32("#size-cells", 0)
	cpus.SetU32("#address-cells", 1)
	for i := range m.cfg.SMP {
		c := cpus.Child(fmt.Sprintf("cpu@%d", i))
		c.SetU32("reg", uint32(i))
		c.SetString("enable-method", "psci")
		model := m.cfg.CPU
		if model == nil {
			model = arm.DefaultModel
		}
		c.SetString("compatible", model.Compatible)
		c.SetString("device_type", "cpu")
	}

	// Timer PPIs: secure and non-secure EL1 physical, virtual, EL2 physical. GICv2
	// specifiers carry the CPU mask in bits 15:8.
	flags := uint32(dtLevelHigh)
	if m.cfg.GICVersion == 2 {
		flags |= (1<<m.cfg.SMP - 1) << 8
	}
	timer := r.Child("timer")
	timer.SetU32("interrupts", dtPPI, 13, flags, dtPPI, 14, flags, dtPPI, 11, flags, dtPPI, 10, flags)
	timer.SetEmpty("always-on")
	timer.SetString("compatible", "arm,armv8-timer", "arm,armv7-timer")

	clk := r.Child("apb-pclk")
	clk.SetU32("phandle", phClock)
	clk.SetString("clock-output-names", "clk24mhz")
	clk.SetU32("clock-frequency", 24000000)
	clk.SetU32("#clock-cells", 0)
	clk.SetString("compatible", "fixed-clock")

	chosen := r.Child("chosen")
	chosen.SetString("stdout-path", fmt.Sprintf("/pl011@%x", UARTBase))
	seed := make([]byte, 32)
	rand.Read(seed)
	chosen.Set("rng-seed", seed)
	m.platformNodes(r)
	return r
}

// pcieNode describes the generic ECAM host as QEMU 7.2's create_pcie does: the
// interrupt-map swizzles INTA-INTD of slots 0-3 onto SPIs 3-6 (the mask repeats it for
// every slot), ranges give the I/O, 32-bit and 64-bit windows, msi-map points at the
// v2m frame when there is one.
func (m *Machine) pcieNode(r *fdt.Node) {
	p := r.Child(fmt.Sprintf("pcie@%x", PCIeMMIOBase))
	p.SetU32("interrupt-map-mask", 0x1800, 0, 0, 7)
	var imap []uint32
	for slot := uint32(0); slot < 4; slot++ {
		for pin := uint32(1); pin <= 4; pin++ {
			spi := PCIeINTxSPI + (slot+pin-1)%4
			imap = append(imap, slot<<11, 0, 0, pin, m.phIntc(), 0, 0, dtSPI, spi, dtLevelHigh)
		}
	}
	p.SetU32("interrupt-map", imap...)
	p.SetU32("#interrupt-cells", 1)
	hi, size := uint64(PCIeHighMMIO), uint64(PCIeHighSize)
	p.SetU32("ranges",
		0x1000000, 0, 0, 0, PCIePIOBase, 0, PCIePIOSize,
		0x2000000, 0, PCIeMMIOBase, 0, PCIeMMIOBase, 0, PCIeMMIOSize,
		0x3000000, uint32(hi>>32), uint32(hi), uint32(hi>>32), uint32(hi), uint32(size>>32), uint32(size))
	p.SetU64("reg", PCIeECAMBase, PCIeECAMSize)
	if m.cfg.GICVersion == 2 {
		p.SetU32("msi-map", 0, m.phV2M(), 0, 0x10000)
	}
	p.SetEmpty("dma-coherent")
	p.SetU32("bus-range", 0, PCIeECAMSize>>20-1)
	p.SetU32("linux,pci-domain", 0)
	p.SetU32("#size-cells", 2)
	p.SetU32("#address-cells", 3)
	p.SetString("device_type", "pci")
	p.SetString("compatible", "pci-host-ecam-generic")
}

// setChosen records the boot parameters in /chosen (of the generated tree or a user's
// -dtb).
func setChosen(root *fdt.Node, bootargs string, initrdStart, initrdEnd uint64) {
	c := root.Child("chosen")
	if bootargs != "" {
		c.SetString("bootargs", bootargs)
	}
	if initrdEnd > initrdStart {
		c.SetU64("linux,initrd-start", initrdStart)
		c.SetU64("linux,initrd-end", initrdEnd)
	}
}

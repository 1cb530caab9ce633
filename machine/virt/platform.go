package virt

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"gemu/hw/bus"
	"gemu/hw/fdt"
	"gemu/hw/fwcfg"
	"gemu/hw/gpio"
	"gemu/hw/rtc/pl031"
)

// QEMU 7.2 virt's platform devices (hw/arm/virt.c base_memmap, a15irqmap): the PL031
// RTC, the fw_cfg MMIO interface, the PL061 GPIO controller with the gpio-keys power
// button on line 3.
const (
	RTCBase   = 0x0901_0000
	RTCSPI    = 2
	FwCfgBase = 0x0902_0000
	GPIOBase  = 0x0903_0000
	GPIOSPI   = 7
	// PowerButtonLine is the PL061 line QEMU's gpio-key drives (virt_powerdown_req).
	PowerButtonLine = 3
	// keyPower is Linux's KEY_POWER (input-event-codes.h), the gpio-keys code.
	keyPower = 116
)

// FwCfgFile is one -fw_cfg item: a named file with its contents.
type FwCfgFile struct {
	Name string
	Data []byte
}

// platform holds the devices initPlatform built.
type platform struct {
	rtc   *pl031.RTC
	gpio  *gpio.PL061
	key   *gpio.Key
	fwcfg *fwcfg.Device
}

// initPlatform maps the RTC, fw_cfg and GPIO controller and fills fw_cfg as QEMU's
// virt does for a direct kernel boot (the CPU count, the boot order, the user's files).
func (m *Machine) initPlatform() error {
	p := &m.plat
	p.rtc = pl031.New(m.gic.SPI(RTCSPI))
	if m.cfg.RTCBase != 0 {
		p.rtc.SetBase(m.cfg.RTCBase)
	}
	p.gpio = gpio.NewPL061(m.gic.SPI(GPIOSPI))
	p.key = gpio.NewKey(p.gpio.Input(PowerButtonLine))
	p.fwcfg = fwcfg.New(m.ram)
	p.fwcfg.AddU16(fwcfg.KeyNbCPUs, uint16(m.cfg.SMP))
	p.fwcfg.AddU16(fwcfg.KeyNoGraphic, 1)
	// The files every QEMU 7.2 fw_cfg has (boot order and geometry lists, empty without
	// bootindex; the boot-fail wait, -1: no reboot timeout). QEMU's virt also carries
	// its ACPI and SMBIOS tables (etc/acpi/*, etc/smbios/*, etc/table-loader,
	// etc/tpm/log) for firmware; gemu has no firmware boot, so no tables.
	for _, f := range []FwCfgFile{{"bios-geometry", nil}, {"bootorder", nil}, {"etc/boot-fail-wait", binary.LittleEndian.AppendUint32(nil, 0xffffffff)}} {
		if err := p.fwcfg.AddFile(f.Name, f.Data); err != nil {
			return err
		}
	}
	for _, f := range m.cfg.FwCfg {
		if err := p.fwcfg.AddFile(f.Name, f.Data); err != nil {
			return fmt.Errorf("-fw_cfg name=%s: %w", f.Name, err)
		}
	}
	p.fwcfg.Seal()
	for _, d := range []struct {
		dev        bus.Device
		name       string
		base, size uint64
	}{
		{p.rtc, "pl031", RTCBase, pl031.Size},
		{p.fwcfg, "fw-cfg", FwCfgBase, fwcfg.Size},
		{p.gpio, "pl061", GPIOBase, gpio.Size},
	} {
		if err := m.mmio.Insert(d.dev, d.name, d.base, d.size); err != nil {
			return err
		}
	}
	m.OnRelease(p.key.Reset)
	return nil
}

// RTCBase returns the PL031's distance from host UTC time, guest writes included: a
// reset's new board takes it as Config.RTCBase so the clock survives a reboot.
func (m *Machine) RTCBase() time.Duration { return m.plat.rtc.Base() }

// PowerButton presses the virt board's power button as QEMU's system_powerdown does
// without ACPI: the gpio-key raises PL061 line 3 and lets it go 100 ms later; Linux's
// gpio-keys driver reports KEY_POWER.
func (m *Machine) PowerButton() { m.plat.key.Press() }

// phGPIO is the PL061's phandle: QEMU allocates it after the GIC's MSI frame (the v2m
// frame on a GICv2, the ITS on a GICv3, which gemu does not model but whose number it
// leaves free so the numbers stay QEMU's).
func (m *Machine) phGPIO() uint32 { return m.phIntc() + 2 }

// platformNodes adds the platform devices' nodes to the root where QEMU 7.2's dumpdtb
// has them: fw-cfg before the virtio-mmio nodes, gpio-keys and the PL061 before the
// PCIe host, the PL031 before the PL011. There is no pmu node: gemu's vCPUs advertise
// no PMU (ID_AA64DFR0_EL1.PMUVer = 0), and QEMU adds the node only for a CPU with one.
func (m *Machine) platformNodes(r *fdt.Node) {
	fw := &fdt.Node{Name: fmt.Sprintf("fw-cfg@%x", FwCfgBase)}
	fw.SetEmpty("dma-coherent")
	fw.SetU64("reg", FwCfgBase, fwcfg.Size)
	fw.SetString("compatible", "qemu,fw-cfg-mmio")

	keys := &fdt.Node{Name: "gpio-keys"}
	keys.SetString("compatible", "gpio-keys")
	off := keys.Child("poweroff")
	off.SetU32("gpios", m.phGPIO(), PowerButtonLine, 0)
	off.SetU32("linux,code", keyPower)
	off.SetString("label", "GPIO Key Poweroff")

	g := &fdt.Node{Name: fmt.Sprintf("pl061@%x", GPIOBase)}
	g.SetU32("phandle", m.phGPIO())
	g.SetString("clock-names", "apb_pclk")
	g.SetU32("clocks", phClock)
	g.SetU32("interrupts", dtSPI, GPIOSPI, dtLevelHigh)
	g.SetEmpty("gpio-controller")
	g.SetU32("#gpio-cells", 2)
	g.SetString("compatible", "arm,pl061", "arm,primecell")
	g.SetU64("reg", GPIOBase, gpio.Size)

	rtc := &fdt.Node{Name: fmt.Sprintf("pl031@%x", RTCBase)}
	rtc.SetString("clock-names", "apb_pclk")
	rtc.SetU32("clocks", phClock)
	rtc.SetU32("interrupts", dtSPI, RTCSPI, dtLevelHigh)
	rtc.SetU64("reg", RTCBase, pl031.Size)
	rtc.SetString("compatible", "arm,pl031", "arm,primecell")

	insertBefore(r, "virtio_mmio@", fw)
	insertBefore(r, "pcie@", keys, g)
	insertBefore(r, "pl011@", rtc)
}

// insertBefore puts nodes before the first child whose name starts with prefix (at
// the end if there is none).
func insertBefore(r *fdt.Node, prefix string, nodes ...*fdt.Node) {
	i := slices.IndexFunc(r.Children, func(c *fdt.Node) bool { return strings.HasPrefix(c.Name, prefix) })
	if i < 0 {
		i = len(r.Children)
	}
	r.Children = slices.Insert(r.Children, i, nodes...)
}

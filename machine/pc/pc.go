// Package pc owns the x86 PC board: its guest-physical memory map and e820 table, the
// devices on its port-I/O bus (COM1 8250, i8042, CMOS RTC, PCI configuration
// mechanism #1 with the host bridge, the ACPI PM block, reset and POST ports), the
// ACPI tables in the BIOS area, and direct boot to the boot CPU's register state of a
// Linux bzImage (boot protocol 2.06+) or, as QEMU's -kernel does, a multiboot v1 kernel
// (multiboot.go).
//
// control.go is the control surface a run loop drives: pause through the accelerator,
// host reset, the ACPI power button. migrate.go saves and restores the machine under
// accel/tcg (hw/vmstate's stream: every vCPU and device, guest RAM).
//
// Under KVM the PIC, PIT, IOAPIC and local APICs are the kernel's; the board only
// describes them (MADT) and raises their GSIs. Under accel/tcg (NewTCG, tcg.go) the
// board builds them itself — hw/intc/pcirq's LAPICs, IOAPIC and 8259s, hw/timer's PIT
// and HPET (announced in ACPI) — and creates the target-x86 vCPUs, each wired to its
// LAPIC (interrupt acknowledge, kicks, INIT/SIPI/NMI, the APIC-base, TSC-deadline and
// x2APIC MSRs) through a small accel.CPU adapter. It must not know instruction
// semantics or how the accelerator runs vCPUs.
package pc

import (
	"fmt"
	"sync"

	"gemu/accel"
	"gemu/hw/acpi"
	"gemu/hw/bus"
	"gemu/hw/chardev"
	"gemu/hw/i8042"
	"gemu/hw/intc/pcirq"
	"gemu/hw/memory"
	"gemu/hw/pci"
	"gemu/hw/rtc"
	"gemu/hw/serial"
	"gemu/hw/timer"
	virtiopci "gemu/hw/virtio/pci"
)

// Port-I/O addresses and ISA interrupts of the board's devices.
const (
	COM1Port   = 0x3f8
	COM1IRQ    = 4
	KbdIRQ     = 1
	RTCIRQ     = 8
	SCIIRQ     = 9
	RTCPort    = 0x70
	PMBase     = 0x600
	PCIConfig  = 0xcf8
	postPort   = 0x80
	dmaPage    = 0x87 // DMA page register Linux pokes as an I/O delay on old paths
	ioDelay    = 0xed
	portA      = 0x92 // system control port A: fast A20 and fast reset
	rtcCentury = 0x32
)

// Config is what the board needs from the command line.
type Config struct {
	MemSize uint64
	CPUs    int
	Kernel  KernelImage
	Initrd  KernelImage // nil for none
	Cmdline string
	Serial  chardev.Backend // COM1's host side; nil means null
	// A multiboot kernel (multiboot.go) gets its file name as given (the first word
	// of its command line) and its modules, parsed from -initrd with SplitModules.
	KernelName string
	ModuleSpec string
	Modules    []Module
}

// Machine is one PC guest bound to one accelerator VM.
type Machine struct {
	Layout    Layout
	RAM       *memory.RAM
	MMIO      *bus.Bus
	PIO       *bus.Bus
	VM        accel.X86VM
	Boot      *LinuxBoot     // a bzImage's boot; nil for a multiboot kernel
	Multiboot *MultibootBoot // a multiboot kernel's boot (multiboot.go)
	ACPI      *acpi.Tables
	COM1      *serial.UART8250
	// PCI is bus 0, with the host bridge at 00:00.0; PCI devices (virtio-pci) plug in
	// here, their INTx pins raising acpi.PCIIntxGSI(slot, pin) through VM.IRQ.
	PCIBus    *pci.Bus
	rtc       *rtc.RTC
	onRelease []func()
	pm        *acpi.PM   // the power button (control.go)
	hp        pciHotplug // ACPI PCI hotplug of bus 0 (hotplug.go)
	tcg       *tcgBoard  // the userspace chipset and vCPUs under accel/tcg (tcg.go); nil under KVM
	chip      *pcirq.Chipset
	hpet      *timer.HPET
	kbc       *i8042.I8042
	host      *pci.ConfigSpace             // the host bridge at 00:00.0 (migrate.go saves it)
	vpci      map[[2]int]*virtiopci.Device // virtio-pci functions by slot, fn (migrate.go)
	mu        sync.Mutex                   // paused
	paused    bool                         // control.go
	ramMu     sync.RWMutex                 // Save/Load against the release of guest RAM
	ramGone   bool
}

// New builds the board on vm: RAM slots, ACPI tables, the kernel and its boot state,
// and the devices. On error everything allocated is released (vm is not closed).
func New(vm accel.X86VM, c Config) (*Machine, error) {
	m, err := newBoard(c)
	if err != nil {
		return nil, err
	}
	if err := m.build(vm, c); err != nil {
		m.RAM.Close()
		return nil, err
	}
	return m, nil
}

// newBoard checks c and allocates the guest RAM.
func newBoard(c Config) (*Machine, error) {
	l, err := NewLayout(c.MemSize)
	if err != nil {
		return nil, err
	}
	if c.CPUs < 1 || c.CPUs > 255 {
		return nil, fmt.Errorf("%d CPUs: the PC supports 1 to 255", c.CPUs)
	}
	m := &Machine{Layout: l, RAM: memory.New(), MMIO: bus.New(), PIO: bus.New()}
	if _, err := m.RAM.Add("pc.ram.low", 0, l.LowSize); err != nil {
		m.RAM.Close()
		return nil, err
	}
	if l.HighSize > 0 {
		if _, err := m.RAM.Add("pc.ram.high", HighRAMBase, l.HighSize); err != nil {
			m.RAM.Close()
			return nil, err
		}
	}
	return m, nil
}

// build binds the board to vm: RAM slots, ACPI tables, the kernel and its boot state,
// and the devices.
func (m *Machine) build(vm accel.X86VM, c Config) error {
	m.VM = vm
	var err error
	for _, s := range m.RAM.Slots() {
		if err := vm.AddRAM(s); err != nil {
			return err
		}
	}

	ac := acpi.Config{
		CPUs: c.CPUs, LAPICAddr: LAPICBase, IOAPICAddr: IOAPICBase, SCI: SCIIRQ,
		PM: acpi.PMPorts{Base: PMBase}, ResetPort: PCIConfig + 1, ResetValue: 0x06,
		CenturyReg: rtcCentury,
		PCI:        true, PCIMem32Start: LowRAMTop, PCIMem32Length: PCIHoleEnd - LowRAMTop, PCIRouting: true,
		PCIHotplug: pcihpSlots,
	}
	if m.chip != nil {
		ac.HPET, ac.HPETAddr, ac.HPETID = true, HPETBase, hpetID
	}
	m.ACPI, err = acpi.Build(biosStart, ac)
	if err != nil {
		return err
	}
	if err := m.RAM.WriteAt(m.ACPI.Blob, m.ACPI.Base); err != nil {
		return err
	}

	boot, err := m.loadKernel(c)
	if err != nil {
		return err
	}
	if err := vm.SetBootState(boot); err != nil {
		return err
	}
	return m.addDevices(c)
}

func (m *Machine) addDevices(c Config) error {
	vm := m.VM
	reset := func() { vm.Stop(accel.Reset) }
	m.COM1 = serial.NewUART8250(c.Serial, vm.IRQ(COM1IRQ))
	kbc := i8042.New(reset, vm.IRQ(KbdIRQ))
	m.kbc = kbc
	rtcIRQ := vm.IRQ(RTCIRQ)
	if m.hpet != nil {
		rtcIRQ = m.hpet.RTCInput() // the HPET's legacy replacement can cut it off
	}
	clock := rtc.New(rtcIRQ)
	m.rtc = clock
	setCMOSMemory(clock, m.Layout)
	gsis := make([]bus.IRQ, 8)
	for i := range gsis {
		gsis[i] = vm.IRQ(acpi.PCIIntxGSI(0, uint8(i)))
	}
	cfg := pci.BusConfig{MMIO: m.MMIO, PIO: m.PIO, INTx: pci.RotatingINTx(gsis)}
	if msi, ok := vm.(accel.MSI); ok {
		cfg.MSI = msiSink{msi}
	}
	m.PCIBus = pci.NewBus(cfg)
	m.host = pci.NewHostBridge()
	if err := m.PCIBus.Add(0, 0, m.host); err != nil {
		return err
	}
	pm := acpi.NewPM(vm.IRQ(SCIIRQ), func() { vm.Stop(accel.PowerOff) })
	m.pm = pm

	for _, d := range []struct {
		dev        bus.Device
		name       string
		base, size uint64
	}{
		{m.COM1, "com1", COM1Port, 8},
		{kbc, "i8042-data", 0x60, 1},
		{shifted{kbc, 4}, "i8042-cmd", 0x64, 1},
		{clock, "rtc", RTCPort, 2},
		{sink{}, "post", postPort, 1},
		{sink{}, "dma-page", dmaPage, 1},
		{sink{}, "io-delay", ioDelay, 1},
		{&systemPortA{reset: reset}, "port-a", portA, 1},
		{pci.NewConfigIO(m.PCIBus, reset), "pci-config", PCIConfig, 8},
		{pm, "acpi-pm", PMBase, acpi.PMBlockSize},
		{m.newPCIHotplug(), "acpi-pcihp", acpi.PCIHPBase, acpi.PCIHPSize},
	} {
		if err := m.PIO.Insert(d.dev, d.name, d.base, d.size); err != nil {
			return err
		}
	}
	// A PCI configuration access is a write of the address to 0xcf8 and an access to
	// 0xcfc; where the accelerator can queue the address writes (KVM's coalesced port
	// I/O) the pair costs one exit, and Linux makes thousands at boot (its AGP aperture
	// search probes every slot of all 256 buses, twice). The range also covers the
	// reset control register 0xcf9, whose reset then takes effect at the next exit or
	// within the accelerator's flush interval. Without coalescing every access exits.
	if c, ok := vm.(interface {
		CoalescePIO(port uint64, size uint32) error
	}); ok {
		_ = c.CoalescePIO(PCIConfig, 4)
	}
	return nil
}

// Run runs the guest until it powers off, resets, triple-faults or is stopped.
func (m *Machine) Run() (accel.ExitReason, error) { return m.VM.Run(m.MMIO, m.PIO) }

// Close stops the devices' timers and releases the guest RAM. The VM is the caller's
// to close, before this.
func (m *Machine) Close() error {
	for _, f := range m.onRelease {
		f()
	}
	if m.rtc != nil {
		m.rtc.Close()
	}
	m.ramMu.Lock()
	defer m.ramMu.Unlock()
	m.ramGone = true
	return m.RAM.Close()
}

// setCMOSMemory records the memory size in the CMOS bytes a PC BIOS fills in (base,
// extended, above 16 MiB, above 4 GiB), for guests that read them.
func setCMOSMemory(r *rtc.RTC, l Layout) {
	r.SetByte(0x15, 640&0xff)
	r.SetByte(0x16, 640>>8)
	ext := uint64(0)
	if l.LowSize > 1<<20 {
		ext = (l.LowSize - 1<<20) >> 10
	}
	ext = min(ext, 0xffff)
	for _, i := range []byte{0x17, 0x30} {
		r.SetByte(i, byte(ext))
		r.SetByte(i+1, byte(ext>>8))
	}
	above16 := uint64(0)
	if l.LowSize > 16<<20 {
		above16 = min((l.LowSize-16<<20)>>16, 0xffff)
	}
	r.SetByte(0x34, byte(above16))
	r.SetByte(0x35, byte(above16>>8))
	high := l.HighSize >> 16
	r.SetByte(0x5b, byte(high))
	r.SetByte(0x5c, byte(high>>8))
	r.SetByte(0x5d, byte(high>>16))
}

// msiSink delivers PCI MSI/MSI-X messages through the accelerator (KVM_SIGNAL_MSI).
type msiSink struct{ vm accel.MSI }

func (s msiSink) SendMSI(addr uint64, data uint32) { s.vm.SignalMSI(addr, data) }

// sink is a port that ignores writes and reads as zero (POST codes, I/O delay).
type sink struct{}

func (sink) Read(_ bus.Access, _ uint64, data []byte) { clear(data) }
func (sink) Write(bus.Access, uint64, []byte)         {}

// shifted presents dev at an offset: the i8042's command port 0x64 is its offset 4,
// inserted on its own so that 0x61-0x63 (the in-kernel PIT's speaker port) stay free.
type shifted struct {
	dev bus.Device
	by  uint64
}

func (s shifted) Read(a bus.Access, off uint64, data []byte)  { s.dev.Read(a, off+s.by, data) }
func (s shifted) Write(a bus.Access, off uint64, data []byte) { s.dev.Write(a, off+s.by, data) }

// systemPortA is port 0x92: bit 1 is the A20 gate (always on: the CPU's A20 is never
// masked under KVM), bit 0 a fast CPU reset.
type systemPortA struct{ reset func() }

func (p *systemPortA) Read(_ bus.Access, _ uint64, data []byte) {
	clear(data)
	if len(data) > 0 {
		data[0] = 0x02
	}
}

func (p *systemPortA) Write(_ bus.Access, _ uint64, data []byte) {
	if len(data) > 0 && data[0]&0x01 != 0 {
		p.reset()
	}
}

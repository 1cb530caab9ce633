// Package virt owns the aarch64 `virt` board, laid out like QEMU 7.2's: the memory map,
// the GIC (v2 or v3) and its wiring to the vCPUs' IRQ lines and generic-timer PPIs, the
// PL011 console on one MMIO bus shared by the vCPUs, the virtio-mmio transports and the
// PCIe host, the platform devices (PL031 RTC, fw_cfg, PL061 GPIO with the gpio-keys power
// button: platform.go), PSCI over HVC, the generated flattened device tree, direct
// kernel boot by QEMU's rules (ELF, uImage, arm64 Image, raw binary; loader.go), and the
// control surface a run loop drives (control.go: pause at block boundaries with the
// guest clock stopped, host reset, power button).
//
// It must not know instruction semantics (target-arm), translation (tcg) or host
// terminal handling (hw/chardev): it wires them.
package virt

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"gemu/hw/bus"
	"gemu/hw/chardev"
	"gemu/hw/intc"
	"gemu/hw/memory"
	"gemu/hw/pci"
	"gemu/hw/serial"
	"gemu/hw/virtio/mmio"
	virtiopci "gemu/hw/virtio/pci"
	arm "gemu/target-arm"
)

// QEMU 7.2 virt memory map (hw/arm/virt.c base_memmap) and interrupt numbers.
const (
	GICDistBase   = 0x0800_0000
	GICDistSize   = 0x1_0000
	GICCPUBase    = 0x0801_0000
	GICCPUSize    = 0x1_0000
	GICRedistBase = 0x080a_0000
	redistStride  = intc.RedistStride
	UARTBase      = 0x0900_0000
	UARTSize      = 0x1000
	UARTSPI       = 1
	VirtioBase    = 0x0a00_0000
	VirtioStride  = 0x200
	VirtioSlots   = 32
	VirtioSPI     = 16
	RAMBase       = 0x4000_0000

	// MaxRAM keeps RAM below the 256 GiB high-memory region QEMU places PCIe at.
	MaxRAM = 255 << 30
	// ppi* are the generic timers' INTIDs (timer index 0, 1, 2 of arm.Config.TimerIRQ).
	ppiPhys, ppiVirt, ppiHyp = 30, 27, 26
	ppiPMU                   = 23 // the PMU overflow interrupt (QEMU's VIRTUAL_PMU_IRQ 7)
)

// Config is what the command line selects.
type Config struct {
	RAMSize    uint64
	SMP        int
	GICVersion int // 2 or 3
	Kernel     string
	Initrd     string
	Append     string
	DTB        string // user device tree; nil means generate
	Serial     chardev.Backend
	FwCfg      []FwCfgFile   // -fw_cfg items, added to fw_cfg's file directory
	Warn       func(string)  // one-line warnings while loading (nil: dropped)
	RTCBase    time.Duration // -rtc base=: the PL031 reads host UTC time + this
	Trace      io.Writer
	TraceFlags arm.TraceFlags
	CPU        *arm.Model // -cpu; nil: arm.DefaultModel
	// Incoming: the guest's state will come from a migration stream (-incoming), so
	// the kernel, initrd and device tree are not loaded into RAM, which the stream
	// replaces (the kernel file must still exist; a reset builds a board without it).
	Incoming bool
}

// Exit is why Run returned.
type Exit int

const (
	exitNone     Exit = iota // a vCPU failed (Run's error says why)
	ExitPowerOff             // PSCI SYSTEM_OFF
	ExitReset                // PSCI SYSTEM_RESET
	ExitStopped              // Stop was called
)

// Machine is one built board.
type Machine struct {
	cfg  Config
	ram  *memory.RAM
	mmio *bus.Bus
	pio  *bus.Bus // the PCI I/O space behind the PCIe I/O window
	pci  *pci.Bus
	// vmmio are the 32 virtio-mmio transports (empty until a device is attached).
	vmmio       [VirtioSlots]*mmio.Device
	onRelease   []func()
	vpci        map[[2]int]*virtiopci.Device // virtio-pci functions by slot and function
	releaseOnce sync.Once
	cpus        []*arm.CPU
	engine      *arm.Engine // the translator state the vCPUs share
	gic         *intc.GIC
	uart        *serial.PL011    // the console (migrate.go saves it)
	host        *pci.ConfigSpace // the PCIe host bridge (migrate.go saves it)
	plat        platform         // RTC, GPIO and power button, fw_cfg (platform.go)
	dtb         []byte

	entry, dtbAddr uint64

	mu      sync.Mutex
	done    chan struct{}
	exit    Exit
	err     error
	stop    chan struct{}  // closed when Run ends, to stop the vCPU goroutines
	wg      sync.WaitGroup // the vCPU goroutines
	running map[int]bool   // vCPUs whose goroutine was started
	paused  bool           // Pause was called (control.go)
	ramMu   sync.RWMutex   // ReadPhys against the release of guest RAM
	ramGone bool
	hold    sync.Mutex // one holder of the vCPUs at a time (migrate_live.go)
}

// Validate checks a configuration's sizes without building anything.
func (c *Config) Validate() error {
	switch {
	case c.RAMSize == 0:
		return errors.New("invalid RAM size 0")
	case c.RAMSize%(2<<20) != 0:
		return fmt.Errorf("RAM size %d is not a multiple of 2 MiB", c.RAMSize)
	case c.RAMSize > MaxRAM:
		return fmt.Errorf("RAM size %d MiB exceeds the virt board's %d GiB", c.RAMSize>>20, MaxRAM>>30)
	case c.SMP < 1:
		return fmt.Errorf("invalid number of CPUs %d", c.SMP)
	case c.GICVersion != 2 && c.GICVersion != 3:
		return fmt.Errorf("invalid GIC version %d (want 2 or 3)", c.GICVersion)
	case c.GICVersion == 2 && c.SMP > 8:
		return fmt.Errorf("GICv2 supports at most 8 CPUs, -smp %d given (use gic-version=3)", c.SMP)
	case c.SMP > 16:
		return fmt.Errorf("at most 16 CPUs are supported, -smp %d given", c.SMP)
	}
	return nil
}

// New builds the board and, if cfg.Kernel is set, loads the kernel, initrd and device
// tree into RAM with CPU 0 at the kernel entry.
func New(cfg Config) (*Machine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Serial == nil {
		cfg.Serial = chardev.Null{}
	}
	m := &Machine{cfg: cfg, ram: memory.New(), done: make(chan struct{})}
	if _, err := m.ram.Add("ram", RAMBase, cfg.RAMSize); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			m.release()
		}
	}()

	var sysregs arm.SysRegHandler
	var v2 *intc.GICv2
	var v3 *intc.GICv3
	if cfg.GICVersion == 3 {
		aff := make([]uint64, cfg.SMP)
		for i := range aff {
			aff[i] = uint64(i)
		}
		v3 = intc.NewV3(aff)
		m.gic, sysregs = v3.GIC, v3
	} else {
		v2 = intc.NewV2(cfg.SMP)
		m.gic = v2.GIC
	}
	uart := serial.NewPL011(cfg.Serial, m.gic.SPI(UARTSPI))
	m.uart = uart

	// One MMIO bus for every vCPU: the GICv2's banked registers select the accessing
	// CPU's bank from the access context.
	m.mmio = bus.New()
	ins := func(d bus.Device, name string, base, size uint64) {
		if err := m.mmio.Insert(d, name, base, size); err != nil {
			panic(err) // the fixed map cannot overlap
		}
	}
	ins(uart, "pl011", UARTBase, UARTSize)
	if v3 != nil {
		ins(v3.Distributor(), "gicd", GICDistBase, GICDistSize)
		ins(v3.Redistributors(), "gicr", GICRedistBase, uint64(cfg.SMP)*redistStride)
	} else {
		ins(v2.Distributor(), "gicd", GICDistBase, GICDistSize)
		ins(v2.CPUInterface(), "gicc", GICCPUBase, GICCPUSize)
	}
	if err := m.initVirtioMMIO(); err != nil {
		return nil, err
	}
	var v2m *intc.V2M
	if v2 != nil {
		v2m = m.gic.NewV2M(GICV2MSPIBase, GICV2MSPICount)
		ins(v2m, "gicv2m", GICV2MBase, intc.V2MSize)
	}
	if err := m.initPCIe(v2m); err != nil {
		return nil, err
	}
	if err := m.initPlatform(); err != nil {
		return nil, err
	}
	// One translator engine per guest (block cache, TLB-shootdown domain, clock),
	// owned by the board and closed after the vCPUs.
	m.engine = arm.NewEngine(m.ram)
	for i := range cfg.SMP {
		timers := [3]bus.IRQ{m.gic.PPI(i, ppiPhys), m.gic.PPI(i, ppiVirt), m.gic.PPI(i, ppiHyp)}
		pmuIRQ := m.gic.PPI(i, ppiPMU)
		c := arm.New(arm.Config{
			ID:      i,
			RAM:     m.ram,
			Engine:  m.engine,
			MMIO:    m.mmio,
			SysRegs: sysregs,
			GICv3:   v3 != nil,
			Model:   cfg.CPU,
			HVC:     m.hvc,
			TimerIRQ: func(_ int, t int, level bool) {
				if t >= 0 && t < len(timers) {
					timers[t].Set(level)
				}
			},
			PMUIRQ:     func(_ int, level bool) { pmuIRQ.Set(level) },
			Trace:      cfg.Trace,
			TraceFlags: cfg.TraceFlags,
		})
		m.gic.Connect(i, c)
		m.cpus = append(m.cpus, c)
	}
	if err := m.load(); err != nil {
		return nil, err
	}
	ok = true
	return m, nil
}

// DTB returns the device tree blob given to the guest (built even without a kernel,
// for -machine dumpdtb).
func (m *Machine) DTB() []byte { return m.dtb }

// load (loader.go) places the kernel, initrd and device tree as QEMU does.

// finish records the first reason to stop and wakes Run.
func (m *Machine) finish(e Exit, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.done:
		return
	default:
	}
	m.exit, m.err = e, err
	close(m.done)
}

// release closes the vCPUs, which drops the guest's translation cache from
// target-arm's per-RAM registry (a reboot would otherwise leak one cache), then
// guest RAM. No vCPU may be running.
func (m *Machine) release() {
	m.releaseOnce.Do(m.releaseNow)
}

// Close releases a machine that will not be run (Run releases it itself).
func (m *Machine) Close() { m.release() }

func (m *Machine) releaseNow() {
	m.releaseDevices()
	for _, c := range m.cpus {
		c.Close()
	}
	if m.engine != nil {
		m.engine.Close()
	}
	m.ramMu.Lock()
	m.ramGone = true
	m.ram.Close()
	m.ramMu.Unlock()
}

// Stop makes Run return ExitStopped (the user quit). Safe from any goroutine.
func (m *Machine) Stop() { m.finish(ExitStopped, nil) }

// Run runs the vCPUs until the guest powers off or resets, Stop is called or a vCPU
// fails, then stops them all and releases guest RAM. The Machine cannot be run again.
func (m *Machine) Run() (Exit, error) {
	if m.cfg.Kernel == "" {
		m.release()
		return exitNone, errors.New("no -kernel given: the virt board has no firmware to boot")
	}
	m.mu.Lock()
	m.stop, m.running = make(chan struct{}), map[int]bool{}
	m.mu.Unlock()
	for i, c := range m.cpus {
		if i == 0 || c.PoweredOn() { // a restored guest may have several vCPUs on
			m.launch(i)
		}
	}
	<-m.done
	m.mu.Lock()
	close(m.stop)
	m.mu.Unlock()
	m.wg.Wait()
	m.release()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.exit, m.err
}

// launch starts vCPU i's goroutine if it is not running yet. Only powered-on vCPUs get
// one (the boot CPU at Run, the others at PSCI CPU_ON): an off vCPU needs no host thread.
func (m *Machine) launch(i int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stop == nil {
		return // Run has not begun
	}
	select {
	case <-m.stop:
		return // Run is over
	default:
	}
	if m.running[i] {
		return
	}
	m.running[i] = true
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := m.cpus[i].Run(m.stop); err != nil {
			m.finish(exitNone, fmt.Errorf("cpu %d: %w", i, err))
		}
	}()
}

// Package pci owns PCI bus 0 of a board: the function table; the two configuration
// mechanisms over it — mechanism #1 (address port 0xCF8, data ports 0xCFC-0xCFF; the
// PIIX-style reset control register at 0xCF9 shares the port range and lives here too)
// and ECAM (memory-mapped, 4 KiB per function); the generic type-0 configuration space
// every function builds on (ConfigSpace: write masks, capability lists, PCI Express
// extended space); BARs and their mapping onto the board's MMIO and port-I/O buses;
// MSI and MSI-X; INTx pins, the board's swizzle and the interrupt-disable bit; function
// reset and the save/restore of a function's guest-visible state; and the host bridges (Intel 440FX for pc, the Red Hat generic PCIe host bridge
// for arm virt). Devices such as virtio-pci plug in as Functions.
//
// It must not know about accelerators, which board it is on (the board hands it its
// buses, an MSISink and a swizzle), or what a device does behind its BARs.
package pci

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"sync"

	"gemu/hw/bus"
)

// Function is one PCI function's configuration space. off is the register offset
// (0..255, or 0..4095 for a PCI Express function) and len(data) the access width; the
// configuration mechanisms pass naturally aligned accesses of 1, 2 or 4 bytes, but a
// Function must tolerate anything (bytes past its space read all-ones).
//
// *ConfigSpace implements Function and bus.Resetter; a device type that embeds
// *ConfigSpace is one too, and Bus.Add attaches the embedded space (BAR mapping, INTx
// routing, MSI delivery) all the same. Such a device may override Reset to reset its
// own state as well; the override must call the embedded ConfigSpace's Reset.
type Function interface {
	ConfigRead(off uint32, data []byte)
	ConfigWrite(off uint32, data []byte)
}

// MSISink delivers message-signalled interrupts: the memory write a function makes
// when it raises an MSI or MSI-X vector. The board supplies it (KVM: KVM_SIGNAL_MSI;
// arm virt: a write to the GICv2m or ITS frame). It is called from whichever goroutine
// raised the vector, with no pci lock held.
type MSISink interface {
	SendMSI(addr uint64, data uint32)
}

// MSIFunc adapts a function to MSISink.
type MSIFunc func(addr uint64, data uint32)

// SendMSI calls f(addr, data).
func (f MSIFunc) SendMSI(addr uint64, data uint32) { f(addr, data) }

// BusConfig is what a board gives its PCI bus.
type BusConfig struct {
	// MMIO and PIO are where memory and I/O BARs are mapped when the guest programs
	// and enables them. nil: BARs of that kind are never mapped.
	MMIO, PIO *bus.Bus
	// MSI delivers MSI and MSI-X messages; nil drops them.
	MSI MSISink
	// INTx is the board's interrupt swizzle: the line that pin (0 = INTA .. 3 = INTD)
	// of a function in device slot raises. Functions whose pins land on the same line
	// share it wired-OR (asserted while any of them asserts) when INTx returns the same
	// comparable value for it (a pointer, not a fresh IRQFunc; RotatingINTx does this).
	// nil: INTx goes nowhere.
	INTx func(slot, pin int) bus.IRQ
	// Logf, if set, is told about guest programming that cannot take effect, such as
	// a BAR placed over another device (the BAR stays unmapped).
	Logf func(format string, args ...any)
}

// Bus is PCI bus 0: up to 32 devices of 8 functions.
type Bus struct {
	cfg BusConfig

	mu    sync.RWMutex
	fns   map[uint8]Function // by devfn = device<<3 | function
	wires *wireSet           // INTx lines by the swizzle's value, shared with the buses behind bridges
}

// wireSet is the INTx lines of a bus hierarchy: a bus behind a bridge swizzles its
// pins onto the lines of the bus above, so both must share one wire per line.
type wireSet struct {
	mu sync.Mutex
	m  map[any]*wire
}

// NewBus returns an empty bus wired to the board as cfg says.
func NewBus(cfg BusConfig) *Bus {
	return &Bus{cfg: cfg, fns: map[uint8]Function{}, wires: &wireSet{m: map[any]*wire{}}}
}

// configHolder is implemented by *ConfigSpace and by any type embedding it.
type configHolder interface{ configSpace() *ConfigSpace }

func spaceOf(f Function) *ConfigSpace {
	if h, ok := f.(configHolder); ok {
		return h.configSpace()
	}
	return nil
}

// Add plugs f in at device dev, function fn. If f is (or embeds) a *ConfigSpace it is
// attached to the bus: its INTx pin is routed through the swizzle, its MSI/MSI-X go to
// the sink and its BARs map onto the board's buses when the guest enables them. A
// ConfigSpace can be on one bus at one address only. Adding a function other than 0
// sets the multi-function bit of function 0's header type (whichever comes first).
func (b *Bus) Add(dev, fn uint8, f Function) error {
	if dev > 31 || fn > 7 {
		return fmt.Errorf("pci: bad address %02x.%d", dev, fn)
	}
	if f == nil {
		return fmt.Errorf("pci: nil function at %02x.%d", dev, fn)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	df := dev<<3 | fn
	if _, ok := b.fns[df]; ok {
		return fmt.Errorf("pci: slot %02x.%d already in use", dev, fn)
	}
	c := spaceOf(f)
	if c != nil {
		var w *wire
		if pin := c.pin(); pin != 0 && b.cfg.INTx != nil {
			w = b.wireLocked(int(dev), int(pin)-1)
		}
		if err := c.attach(b, dev, fn, w); err != nil {
			return err
		}
		if w != nil && c.intxOut.Load() {
			w.sync(c) // raised before it was plugged in
		}
	}
	b.fns[df] = f
	if fn != 0 {
		if c0 := spaceOf(b.fns[dev<<3]); c0 != nil {
			c0.setMultifunction()
		}
	} else if c != nil {
		for i := uint8(1); i < 8; i++ {
			if _, ok := b.fns[dev<<3|i]; ok {
				c.setMultifunction()
				break
			}
		}
	}
	return nil
}

func (b *Bus) wireLocked(slot, pin int) *wire {
	irq := b.cfg.INTx(slot, pin)
	if irq == nil {
		irq = bus.NoIRQ
	}
	var key any = [2]int{slot, pin}
	if t := reflect.TypeOf(irq); t.Comparable() {
		key = irq
	}
	b.wires.mu.Lock()
	defer b.wires.mu.Unlock()
	w := b.wires.m[key]
	if w == nil {
		w = &wire{out: irq, up: map[*ConfigSpace]bool{}}
		b.wires.m[key] = w
	}
	return w
}

// Function returns the function at dev.fn, or nil.
func (b *Bus) Function(dev, fn uint8) Function {
	if dev > 31 || fn > 7 {
		return nil
	}
	return b.lookup(dev<<3 | fn)
}

func (b *Bus) lookup(devfn uint8) Function {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.fns[devfn]
}

// Reset resets every function that implements bus.Resetter (every *ConfigSpace does:
// BARs unmapped, command, MSI and MSI-X back to power-on), in slot order.
func (b *Bus) Reset() {
	for _, f := range b.functions() {
		if r, ok := f.(bus.Resetter); ok {
			r.Reset()
		}
	}
}

func (b *Bus) functions() []Function {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var fs []Function
	for df := 0; df < 256; df++ {
		if f, ok := b.fns[uint8(df)]; ok {
			fs = append(fs, f)
		}
	}
	return fs
}

func (b *Bus) logf(format string, args ...any) {
	if b.cfg.Logf != nil {
		b.cfg.Logf(format, args...)
	}
}

// retryBARs gives every function whose BAR could not be mapped (it overlapped
// something) another chance, after some BAR moved away. One function is locked at a
// time.
func (b *Bus) retryBARs(except *ConfigSpace) {
	for _, f := range b.functions() {
		if c := spaceOf(f); c != nil && c != except {
			c.retryBARs()
		}
	}
}

// NewHostBridge returns 00:00.0 as an Intel 440FX PMC (8086:1237, revision 2,
// subsystem 1af4:1100), the host bridge QEMU's "pc" machine has, so guests see a
// familiar chipset. Its standard header matches QEMU's register for register
// (TestHostBridge440FXAgainstQEMU); the chipset registers past 0x40 (PAM, SMRAM)
// are not modelled.
func NewHostBridge() *ConfigSpace {
	c := NewConfigSpace(0x8086, 0x1237, 0x060000, 0x02)
	c.SetSubsystem(0x1af4, 0x1100)
	return c
}

// NewPCIeHostBridge returns the host bridge function of QEMU's generic PCIe host (arm
// virt's "gpex"): "Red Hat, Inc. QEMU PCIe Host bridge", 1b36:0008, class 06.00.00,
// with QEMU's default subsystem ids 1af4:1100.
func NewPCIeHostBridge() *ConfigSpace {
	c := NewConfigSpace(0x1b36, 0x0008, 0x060000, 0x00)
	c.SetSubsystem(0x1af4, 0x1100)
	return c
}

// ConfigIO is the I/O-port side: a bus.Device at 0xCF8 spanning 8 ports. A dword at
// 0xCF8 is the configuration address; 0xCFC-0xCFF is the data window; a byte at 0xCF9
// is the reset control register (bit 2 set resets the machine).
type ConfigIO struct {
	bus   *Bus
	reset func()

	mu   sync.Mutex
	addr uint32
	rcr  byte
}

// NewConfigIO returns the port device for bus; reset is called when the guest writes
// the reset control register with RST_CPU.
func NewConfigIO(bus *Bus, reset func()) *ConfigIO { return &ConfigIO{bus: bus, reset: reset} }

const (
	cfgEnable = 1 << 31
	rcrRstCPU = 0x04
	rcrSysRst = 0x02
)

// target decodes the address register: the function and register for an access at
// data-port byte offset off, or nil when disabled, on another bus, or empty.
func (c *ConfigIO) target(off uint64) (Function, uint32) {
	a := c.addr
	if a&cfgEnable == 0 || (a>>16)&0xff != 0 {
		return nil, 0
	}
	return c.bus.lookup(uint8(a >> 8)), a&0xfc | uint32(off&3)
}

// Read implements bus.Device.
func (c *ConfigIO) Read(_ bus.Access, off uint64, data []byte) {
	for i := range data {
		data[i] = 0xff
	}
	c.mu.Lock()
	switch {
	case off == 0 && len(data) == 4:
		binary.LittleEndian.PutUint32(data, c.addr)
		c.mu.Unlock()
		return
	case off == 1 && len(data) == 1:
		data[0] = c.rcr
		c.mu.Unlock()
		return
	case off >= 4 && off+uint64(len(data)) <= 8:
		f, reg := c.target(off - 4)
		c.mu.Unlock()
		if f != nil {
			f.ConfigRead(reg, data)
		}
		return
	}
	c.mu.Unlock()
}

// Write implements bus.Device.
func (c *ConfigIO) Write(_ bus.Access, off uint64, data []byte) {
	c.mu.Lock()
	switch {
	case off == 0 && len(data) == 4:
		c.addr = binary.LittleEndian.Uint32(data) &^ 0x7f000003
	case off == 1 && len(data) == 1:
		v := data[0]
		c.rcr = v & rcrSysRst
		c.mu.Unlock()
		if v&rcrRstCPU != 0 && c.reset != nil {
			c.reset()
		}
		return
	case off >= 4 && off+uint64(len(data)) <= 8:
		f, reg := c.target(off - 4)
		c.mu.Unlock()
		if f != nil {
			f.ConfigWrite(reg, data)
		}
		return
	}
	// Other widths at 0xCF8-0xCFB (e.g. Linux's byte write to 0xCFB while probing
	// for mechanism #1) are ignored, as the chipset does.
	c.mu.Unlock()
}

// Reset implements bus.Resetter: the address and reset control registers clear and
// every function on the bus is reset, so a machine reset that walks its port bus
// resets PCI too.
func (c *ConfigIO) Reset() {
	c.mu.Lock()
	c.addr, c.rcr = 0, 0
	c.mu.Unlock()
	c.bus.Reset()
}

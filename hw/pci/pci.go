// Package pci owns the PCI bus of a PC: configuration mechanism #1 (address port 0xCF8,
// data ports 0xCFC-0xCFF), the bus's function table, the generic type-0 configuration
// space, and the host bridge at 00:00.0. The PIIX-style reset control register at
// 0xCF9 shares the port range and lives here too. Devices such as virtio-pci plug in
// as Functions.
//
// It must not know about accelerators, boards or what a device does behind its BARs.
package pci

import (
	"encoding/binary"
	"fmt"
	"gemu/hw/bus"
	"sync"
)

// Function is one PCI function's configuration space. off is the register offset
// (0..255) and len(data) the access width (1, 2 or 4, naturally aligned).
type Function interface {
	ConfigRead(off uint32, data []byte)
	ConfigWrite(off uint32, data []byte)
}

// Bus is PCI bus 0: up to 32 devices of 8 functions.
type Bus struct {
	mu  sync.RWMutex
	fns map[uint8]Function // by devfn = device<<3 | function
}

// NewBus returns an empty bus.
func NewBus() *Bus { return &Bus{fns: map[uint8]Function{}} }

// Add plugs f in at device dev, function fn.
func (b *Bus) Add(dev, fn uint8, f Function) error {
	if dev > 31 || fn > 7 {
		return fmt.Errorf("pci: bad address %02x.%d", dev, fn)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	df := dev<<3 | fn
	if _, ok := b.fns[df]; ok {
		return fmt.Errorf("pci: slot %02x.%d already in use", dev, fn)
	}
	b.fns[df] = f
	return nil
}

func (b *Bus) lookup(devfn uint8) Function {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.fns[devfn]
}

// ConfigSpace is a type-0 configuration header with a per-byte write mask: the part
// of a Function most devices share.
type ConfigSpace struct {
	mu       sync.Mutex
	data     [256]byte
	writable [256]byte
}

// Standard header offsets.
const (
	RegVendorID   = 0x00
	RegDeviceID   = 0x02
	RegCommand    = 0x04
	RegStatus     = 0x06
	RegRevision   = 0x08
	RegClass      = 0x09 // prog-if, subclass, class (3 bytes)
	RegHeaderType = 0x0e
	RegSubVendor  = 0x2c
	RegSubsystem  = 0x2e
	RegIntLine    = 0x3c
	RegIntPin     = 0x3d
)

// NewConfigSpace returns a header with the given ids and class code (class<<16 |
// subclass<<8 | prog-if). Command and the interrupt line are writable.
func NewConfigSpace(vendor, device uint16, class uint32, rev byte) *ConfigSpace {
	c := &ConfigSpace{}
	le := binary.LittleEndian
	le.PutUint16(c.data[RegVendorID:], vendor)
	le.PutUint16(c.data[RegDeviceID:], device)
	c.data[RegRevision] = rev
	c.data[RegClass] = byte(class)
	c.data[RegClass+1] = byte(class >> 8)
	c.data[RegClass+2] = byte(class >> 16)
	// Command: I/O, memory, bus master, parity, SERR, interrupt disable.
	le.PutUint16(c.writable[RegCommand:], 0x0547)
	c.writable[RegIntLine] = 0xff
	return c
}

// ConfigRead implements Function.
func (c *ConfigSpace) ConfigRead(off uint32, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range data {
		if o := off + uint32(i); o < 256 {
			data[i] = c.data[o]
		} else {
			data[i] = 0xff
		}
	}
}

// ConfigWrite implements Function.
func (c *ConfigSpace) ConfigWrite(off uint32, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, v := range data {
		if o := off + uint32(i); o < 256 {
			m := c.writable[o]
			c.data[o] = c.data[o]&^m | v&m
		}
	}
}

// NewHostBridge returns 00:00.0 as an Intel 440FX PMC (8086:1237), the host bridge
// QEMU's "pc" machine has, so guests see a familiar chipset.
func NewHostBridge() *ConfigSpace {
	return NewConfigSpace(0x8086, 0x1237, 0x060000, 0x02)
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

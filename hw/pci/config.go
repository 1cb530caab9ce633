package pci

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
)

// Configuration space sizes: conventional PCI, and PCI Express (extended space,
// reachable through ECAM only).
const (
	ConfigSize    = 256
	ExtConfigSize = 4096
)

// Standard type-0 header offsets.
const (
	RegVendorID   = 0x00
	RegDeviceID   = 0x02
	RegCommand    = 0x04
	RegStatus     = 0x06
	RegRevision   = 0x08
	RegClass      = 0x09 // prog-if, subclass, class (3 bytes)
	regCacheLine  = 0x0c
	RegHeaderType = 0x0e
	RegBAR0       = 0x10 // six dwords, 0x10..0x27
	RegSubVendor  = 0x2c
	RegSubsystem  = 0x2e
	RegROM        = 0x30
	RegCapPtr     = 0x34
	RegIntLine    = 0x3c
	RegIntPin     = 0x3d
)

// Command register bits.
const (
	CmdIO          = 1 << 0 // I/O space decoding
	CmdMemory      = 1 << 1 // memory space decoding
	CmdBusMaster   = 1 << 2
	CmdParity      = 1 << 6
	CmdSERR        = 1 << 8
	CmdIntxDisable = 1 << 10
)

// Status register bits.
const (
	StatusIntx    = 1 << 3 // INTx asserted by the function (read-only)
	StatusCapList = 1 << 4
	statusW1C     = 0xf900 // error bits 8 and 11..15 clear on writing 1
)

// Capability IDs.
const (
	CapPM      = 0x01
	CapMSI     = 0x05
	CapVendor  = 0x09
	CapExpress = 0x10
	CapMSIX    = 0x11
)

// ConfigSpace is one function's type-0 configuration space with a per-byte write mask,
// and everything the PCI spec hangs off it: BARs, the capability list (and the extended
// list of a PCI Express function), MSI, MSI-X and the INTx pin. Devices build one with
// NewConfigSpace and the Add*/Set* methods, all before Bus.Add; after that the guest
// drives it through a configuration mechanism and the device through SetIRQ,
// MSI.Notify and MSIX.Notify.
//
// The values the Set*/Add* methods store are the power-on values Reset restores.
type ConfigSpace struct {
	mu    sync.Mutex
	size  uint32
	data  [ExtConfigSize]byte
	power [ExtConfigSize]byte // power-on image (Reset)
	wmask [ExtConfigSize]byte // bits the guest may write
	w1c   [ExtConfigSize]byte // bits a guest 1 clears
	hooks []hook

	capNext uint32 // next free offset in the capability area 0x40..0xff
	capLast uint32 // offset of the last capability in the list, 0 if none
	extNext uint32 // next free offset in the extended area 0x100..0xfff
	extLast uint32 // offset of the last extended capability, 0 if none

	bars  [6]bar
	onBAR func(index int, base uint64, mapped bool)
	msi   *MSI
	msix  *MSIX

	level   bool        // INTx level the device drives
	intxOut atomic.Bool // level && interrupt-disable clear: what the wire sees
	fx      []func()    // effects to run once mu is released

	// Set by attach (Bus.Add).
	bus       *Bus
	slot, fn  uint8
	irq       *wire
	attachErr error
}

type hook struct {
	off, size   uint32
	read, write func(off uint32, data []byte)
}

// NewConfigSpace returns a header with the given ids and class code (class<<16 |
// subclass<<8 | prog-if). Command (I/O, memory, bus master, SERR, interrupt disable:
// QEMU's mask, parity error response stays clear), the status error bits, the cache
// line size and the interrupt line are writable.
func NewConfigSpace(vendor, device uint16, class uint32, rev byte) *ConfigSpace {
	c := &ConfigSpace{size: ConfigSize, capNext: 0x40}
	c.init16(RegVendorID, vendor)
	c.init16(RegDeviceID, device)
	c.init8(RegRevision, rev)
	c.init8(RegClass, byte(class))
	c.init8(RegClass+1, byte(class>>8))
	c.init8(RegClass+2, byte(class>>16))
	le := binary.LittleEndian
	le.PutUint16(c.wmask[RegCommand:], CmdIO|CmdMemory|CmdBusMaster|CmdSERR|CmdIntxDisable)
	le.PutUint16(c.w1c[RegStatus:], statusW1C)
	c.wmask[regCacheLine] = 0xff
	c.wmask[RegIntLine] = 0xff
	return c
}

func (c *ConfigSpace) configSpace() *ConfigSpace { return c }

func (c *ConfigSpace) init8(off uint32, v byte) { c.data[off], c.power[off] = v, v }
func (c *ConfigSpace) init16(off uint32, v uint16) {
	c.init8(off, byte(v))
	c.init8(off+1, byte(v>>8))
}
func (c *ConfigSpace) init32(off uint32, v uint32) {
	c.init16(off, uint16(v))
	c.init16(off+2, uint16(v>>16))
}

func (c *ConfigSpace) setup() error {
	if c.bus != nil {
		return fmt.Errorf("pci: function already on a bus: set it up before Bus.Add")
	}
	return nil
}

// SetSubsystem sets the subsystem vendor and device ids.
func (c *ConfigSpace) SetSubsystem(vendor, id uint16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init16(RegSubVendor, vendor)
	c.init16(RegSubsystem, id)
}

// SetConfig stores power-on bytes at off (device-specific registers, capability
// fields). The write masks are unchanged.
func (c *ConfigSpace) SetConfig(off uint32, val []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if uint64(off)+uint64(len(val)) > uint64(c.size) {
		return fmt.Errorf("pci: config bytes [%#x,+%d) past the %d-byte space", off, len(val), c.size)
	}
	for i, v := range val {
		c.init8(off+uint32(i), v)
	}
	return nil
}

// SetWritable makes the bits set in mask writable by the guest at off..off+len(mask)
// (and the others read-only), e.g. the fields of a capability the driver programs.
// The header's ids, BARs and capability links are not the caller's to open up.
func (c *ConfigSpace) SetWritable(off uint32, mask []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if uint64(off)+uint64(len(mask)) > uint64(c.size) {
		return fmt.Errorf("pci: write mask [%#x,+%d) past the %d-byte space", off, len(mask), c.size)
	}
	if off < 0x40 {
		return fmt.Errorf("pci: write mask at %#x: the standard header is managed by pci", off)
	}
	for i, m := range mask {
		o := off + uint32(i)
		c.wmask[o] = m
		c.w1c[o] &^= m
	}
	return nil
}

// Hook has read and write called for config accesses that overlap [off, off+size),
// with the access's own offset and data, for registers whose value is not plain
// storage (virtio's PCI configuration access capability, for one). read sees data
// filled with the stored bytes and may overwrite it; write runs after the write mask
// has been applied to the stored bytes. Either may be nil. They run with no pci lock
// held, so they may call back into the function.
func (c *ConfigSpace) Hook(off, size uint32, read, write func(off uint32, data []byte)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if size == 0 || uint64(off)+uint64(size) > uint64(c.size) {
		return fmt.Errorf("pci: hook [%#x,+%d) outside the %d-byte space", off, size, c.size)
	}
	c.hooks = append(c.hooks, hook{off, size, read, write})
	return nil
}

// Size is the size of the configuration space: ConfigSize, or ExtConfigSize for a
// PCI Express function.
func (c *ConfigSpace) Size() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}

// Command returns the command register.
func (c *ConfigSpace) Command() uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cmdLocked()
}

func (c *ConfigSpace) cmdLocked() uint16 { return binary.LittleEndian.Uint16(c.data[RegCommand:]) }

// BusMaster reports whether the guest has let the function master the bus (DMA, and
// MSI, which is a memory write).
func (c *ConfigSpace) BusMaster() bool { return c.Command()&CmdBusMaster != 0 }

// Address returns the slot and function the space was added at, and whether it has
// been added to a bus.
func (c *ConfigSpace) Address() (slot, fn uint8, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slot, c.fn, c.bus != nil
}

func (c *ConfigSpace) setMultifunction() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init8(RegHeaderType, c.data[RegHeaderType]|0x80)
}

func (c *ConfigSpace) attach(b *Bus, slot, fn uint8, w *wire) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bus != nil {
		return fmt.Errorf("pci: function already at %02x.%d", c.slot, c.fn)
	}
	c.bus, c.slot, c.fn, c.irq = b, slot, fn, w
	return nil
}

// unlock releases mu and runs the effects queued while it was held (MSI messages,
// OnChange hooks, INTx wire updates, BAR retries), in order.
func (c *ConfigSpace) unlock() {
	fx := c.fx
	c.fx = nil
	c.mu.Unlock()
	for _, f := range fx {
		f()
	}
}

// ConfigRead implements Function.
func (c *ConfigSpace) ConfigRead(off uint32, data []byte) {
	c.mu.Lock()
	size := c.size
	for i := range data {
		if o := uint64(off) + uint64(i); o < uint64(size) {
			data[i] = c.data[o]
		} else {
			data[i] = 0xff
		}
	}
	hooks := c.hooks
	c.mu.Unlock()
	for _, h := range hooks {
		if h.read != nil && overlaps(off, len(data), h.off, h.size) {
			h.read(off, data)
		}
	}
}

func overlaps(off uint32, n int, hoff, hsize uint32) bool {
	lo, hi := uint64(off), uint64(off)+uint64(n)
	return n > 0 && lo < uint64(hoff)+uint64(hsize) && uint64(hoff) < hi
}

// ConfigWrite implements Function.
func (c *ConfigSpace) ConfigWrite(off uint32, data []byte) {
	if len(data) == 0 {
		return
	}
	c.mu.Lock()
	oldCmd := c.cmdLocked()
	for i, v := range data {
		o := uint64(off) + uint64(i)
		if o >= uint64(c.size) {
			break
		}
		d := c.data[o]&^c.wmask[o] | v&c.wmask[o]
		c.data[o] = d &^ (v & c.w1c[o])
	}
	touched := func(a, n uint32) bool { return overlaps(off, len(data), a, n) }
	if touched(RegCommand, 2) || touched(RegBAR0, 24) {
		c.remapLocked()
	}
	bm := (oldCmd^c.cmdLocked())&CmdBusMaster != 0
	if m := c.msi; m != nil && (bm || touched(m.off, m.len())) {
		m.configWrittenLocked()
	}
	if m := c.msix; m != nil && (bm || touched(m.off+2, 2)) {
		m.controlWrittenLocked()
	}
	c.updateINTxLocked()
	hooks := c.hooks
	c.unlock()
	for _, h := range hooks {
		if h.write != nil && overlaps(off, len(data), h.off, h.size) {
			h.write(off, data)
		}
	}
}

// Reset implements bus.Resetter: the power-on configuration (command clear, so every
// BAR unmapped; MSI and MSI-X disabled, the MSI-X table masked and the pending bits
// clear) and the INTx level deasserted.
func (c *ConfigSpace) Reset() {
	c.mu.Lock()
	c.data = c.power
	c.level = false
	if c.msi != nil {
		c.msi.resetLocked()
	}
	if c.msix != nil {
		c.msix.resetLocked()
	}
	c.remapLocked()
	c.updateINTxLocked()
	c.unlock()
}

// AddCapability appends a capability with the given ID to the standard list (setting
// status bit 4 and the pointer at 0x34 for the first), body being its bytes after the
// ID and next-pointer bytes. It returns the capability's offset; body is read-only to
// the guest until SetWritable opens parts of it.
func (c *ConfigSpace) AddCapability(id byte, body []byte) (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.setup(); err != nil {
		return 0, err
	}
	return c.addCapLocked(id, body)
}

func (c *ConfigSpace) addCapLocked(id byte, body []byte) (uint32, error) {
	off := c.capNext
	n := uint32(2 + len(body))
	if uint64(off)+uint64(n) > ConfigSize {
		return 0, fmt.Errorf("pci: no room for a %d-byte capability %#x at %#x", n, id, off)
	}
	c.init8(off, id)
	c.init8(off+1, 0)
	for i, v := range body {
		c.init8(off+2+uint32(i), v)
	}
	if c.capLast == 0 {
		c.init8(RegCapPtr, byte(off))
		c.init16(RegStatus, binary.LittleEndian.Uint16(c.data[RegStatus:])|StatusCapList)
	} else {
		c.init8(c.capLast+1, byte(off))
	}
	c.capLast = off
	c.capNext = (off + n + 3) &^ 3
	return off, nil
}

// AddVendorCapability appends a vendor-specific capability (ID 0x09): ID, next, a
// length byte (3 + len(body), filled in here), then body. virtio-pci's capabilities
// are of this form (cap_len, then cfg_type, bar, ...).
func (c *ConfigSpace) AddVendorCapability(body []byte) (uint32, error) {
	if 3+len(body) > 0xff {
		return 0, fmt.Errorf("pci: vendor capability of %d bytes", 3+len(body))
	}
	return c.AddCapability(CapVendor, append([]byte{byte(3 + len(body))}, body...))
}

// Capabilities walks the standard capability list as a guest does and returns the
// offsets of the capabilities found with the given ID (every one if id is 0). A
// malformed list (loops, pointers into the header) ends the walk.
func (c *ConfigSpace) Capabilities(id byte) []uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var offs []uint32
	if binary.LittleEndian.Uint16(c.data[RegStatus:])&StatusCapList == 0 {
		return nil
	}
	p := uint32(c.data[RegCapPtr] &^ 3)
	for n := 0; p >= 0x40 && n < 48; n++ {
		if id == 0 || c.data[p] == id {
			offs = append(offs, p)
		}
		p = uint32(c.data[p+1] &^ 3)
	}
	return offs
}

// PCIe device/port types for EnableExpress.
const (
	ExpressEndpoint   = 0x0
	ExpressRootPort   = 0x4
	ExpressIntegrated = 0x9 // root complex integrated endpoint
)

// EnableExpress makes the function a PCI Express function of the given device/port
// type: a PCI Express capability (ID 0x10, version 2) in the standard list, and the
// 4 KiB extended configuration space (reachable through ECAM) with an empty extended
// capability list at 0x100. It returns the PCI Express capability's offset.
func (c *ConfigSpace) EnableExpress(portType byte) (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.setup(); err != nil {
		return 0, err
	}
	if c.size == ExtConfigSize {
		return 0, fmt.Errorf("pci: function is PCI Express already")
	}
	body := make([]byte, 0x3c-2)
	binary.LittleEndian.PutUint16(body[0:], 2|uint16(portType&0xf)<<4) // capabilities register
	binary.LittleEndian.PutUint32(body[2:], 1<<15)                     // DevCap: role-based error reporting
	binary.LittleEndian.PutUint16(body[6:], 0x2810)                    // DevCtl: RO, NS, 512-byte MRRS
	off, err := c.addCapLocked(CapExpress, body)
	if err != nil {
		return 0, err
	}
	binary.LittleEndian.PutUint16(c.wmask[off+8:], 0x7fff) // DevCtl (not FLR)
	c.w1c[off+10] = 0x0f                                   // DevSta error bits
	c.size, c.extNext = ExtConfigSize, 0x100
	return off, nil
}

// AddExtCapability appends a capability to the extended list of a PCI Express
// function (header: ID, version, next), body being the bytes after the 4-byte header.
// It returns the capability's offset.
func (c *ConfigSpace) AddExtCapability(id uint16, version byte, body []byte) (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.setup(); err != nil {
		return 0, err
	}
	if c.size != ExtConfigSize {
		return 0, fmt.Errorf("pci: extended capability on a conventional function")
	}
	off := c.extNext
	n := uint32(4 + len(body))
	if uint64(off)+uint64(n) > ExtConfigSize {
		return 0, fmt.Errorf("pci: no room for a %d-byte extended capability at %#x", n, off)
	}
	c.init32(off, uint32(id)|uint32(version&0xf)<<16)
	for i, v := range body {
		c.init8(off+4+uint32(i), v)
	}
	if c.extLast != 0 {
		h := binary.LittleEndian.Uint32(c.data[c.extLast:])
		c.init32(c.extLast, h&0xfffff|off<<20)
	}
	c.extLast = off
	c.extNext = (off + n + 3) &^ 3
	return off, nil
}

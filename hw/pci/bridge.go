package pci

import (
	"encoding/binary"
	"fmt"

	"gemu/hw/bus"
)

// Type-1 (PCI-to-PCI bridge) header offsets past the two BARs.
const (
	RegPrimaryBus     = 0x18
	RegSecondaryBus   = 0x19
	RegSubordinateBus = 0x1a
	regSecLatency     = 0x1b
	regIOBase         = 0x1c // and I/O limit at 0x1d
	regMemBase        = 0x20 // and memory limit at 0x22
	regPrefBase       = 0x24 // and prefetchable limit at 0x26
	regPrefBaseUpper  = 0x28 // and prefetchable limit upper at 0x2c
	regBridgeControl  = 0x3e
)

// Bridge is a PCI-to-PCI bridge function (type-1 header: bus numbers, I/O, memory and
// prefetchable windows, bridge control) and the bus behind it. Configuration accesses
// reach the secondary bus by the bus numbers the guest programs (Bus.ConfigTarget);
// the secondary bus's BARs map straight onto the board's buses, as the root bus's do
// (the windows are storage for the guest's bookkeeping, not filters: a guest that
// assigns resources as Linux does places them inside the windows anyway), its MSIs go
// to the board's sink, and its INTx pins are swizzled onto the bridge's own slot as
// the PCI-to-PCI bridge specification says.
type Bridge struct {
	*ConfigSpace
	sec *Bus
	// dev0 restricts the secondary bus to device 0 (a PCI Express downstream port's
	// link has one device on it).
	dev0 bool
}

// bridgeHolder is implemented by *Bridge and by any type embedding it.
type bridgeHolder interface{ pciBridge() *Bridge }

func (br *Bridge) pciBridge() *Bridge { return br }

// NewBridge returns a bridge function with the given identity under parent: its
// secondary bus shares parent's MMIO, PIO and MSI sink.
func NewBridge(parent *Bus, vendor, device uint16, rev byte) *Bridge {
	c := NewConfigSpace(vendor, device, 0x060400, rev)
	c.init8(RegHeaderType, 0x01)
	le := binary.LittleEndian
	for _, o := range []uint32{RegPrimaryBus, RegSecondaryBus, RegSubordinateBus, regSecLatency} {
		c.wmask[o] = 0xff
	}
	c.wmask[regIOBase], c.wmask[regIOBase+1] = 0xf0, 0xf0 // 16-bit I/O decoding
	le.PutUint16(c.wmask[regMemBase:], 0xfff0)
	le.PutUint16(c.wmask[regMemBase+2:], 0xfff0)
	le.PutUint16(c.wmask[regPrefBase:], 0xfff0)
	le.PutUint16(c.wmask[regPrefBase+2:], 0xfff0)
	// Windows closed at power-on (base above limit), as QEMU's pci_bridge_reset leaves
	// them; the prefetchable one is 64-bit.
	c.init8(regIOBase, 0xf0)
	c.init16(regMemBase, 0xfff0)
	c.init16(regPrefBase, 0xfff1)
	c.init16(regPrefBase+2, 0x0001)
	le.PutUint32(c.wmask[regPrefBaseUpper:], 0xffffffff)
	le.PutUint32(c.wmask[regPrefBaseUpper+4:], 0xffffffff)
	le.PutUint16(c.wmask[regBridgeControl:], 0x007f) // parity, SERR, ISA, VGA, VGA16, master abort, bus reset
	le.PutUint16(c.w1c[0x1e:], statusW1C)            // secondary status error bits
	br := &Bridge{ConfigSpace: c}
	cfg := parent.cfg
	cfg.INTx = nil
	if up := parent.cfg.INTx; up != nil {
		cfg.INTx = func(slot, pin int) bus.IRQ {
			s, _, _ := br.Address()
			return up(int(s), (slot+pin)%4)
		}
	}
	br.sec = &Bus{cfg: cfg, fns: map[uint8]Function{}, wires: parent.wires}
	return br
}

// Secondary is the bus behind the bridge.
func (br *Bridge) Secondary() *Bus { return br.sec }

// busNumbers returns the secondary and subordinate bus numbers the guest programmed.
func (br *Bridge) busNumbers() (sec, sub uint8) {
	c := br.ConfigSpace
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.data[RegSecondaryBus], c.data[RegSubordinateBus]
}

// Reset implements bus.Resetter: the bridge's header and every function behind it.
func (br *Bridge) Reset() {
	br.ConfigSpace.Reset()
	br.sec.Reset()
}

// ConfigTarget returns the function a configuration access to bus number n, devfn
// reaches from this (root) bus: bus 0 is this bus, others are found through the
// bridges' secondary and subordinate numbers; nil when nothing answers.
func (b *Bus) ConfigTarget(n, devfn uint8) Function {
	if n == 0 {
		return b.lookup(devfn)
	}
	return b.below(n, devfn, 0)
}

func (b *Bus) below(n, devfn uint8, depth int) Function {
	if depth > 32 {
		return nil // a guest that numbered its bridges in a loop
	}
	for _, f := range b.functions() {
		h, ok := f.(bridgeHolder)
		if !ok {
			continue
		}
		br := h.pciBridge()
		sec, sub := br.busNumbers()
		switch {
		case sec == 0:
		case n == sec:
			if br.dev0 && devfn>>3 != 0 {
				return nil
			}
			return br.sec.lookup(devfn)
		case n > sec && n <= sub:
			if f := br.sec.below(n, devfn, depth+1); f != nil {
				return f
			}
		}
	}
	return nil
}

// Remove unplugs the function at dev.fn and returns it (nil when the slot is empty).
// A ConfigSpace stops decoding: its BARs leave the board's buses, its INTx line is
// released and its MSIs go nowhere.
func (b *Bus) Remove(dev, fn uint8) (Function, error) {
	if dev > 31 || fn > 7 {
		return nil, fmt.Errorf("pci: bad address %02x.%d", dev, fn)
	}
	b.mu.Lock()
	f := b.fns[dev<<3|fn]
	delete(b.fns, dev<<3|fn)
	b.mu.Unlock()
	if c := spaceOf(f); c != nil {
		c.detach()
	}
	return f, nil
}

func (c *ConfigSpace) detach() {
	c.mu.Lock()
	binary.LittleEndian.PutUint16(c.data[RegCommand:], 0)
	c.level = false
	c.remapLocked()
	c.updateINTxLocked()
	w := c.irq
	c.bus, c.irq = nil, nil
	c.unlock()
	if w != nil {
		w.sync(c)
	}
}

package pci

import (
	"encoding/binary"
	"fmt"
	"sync"

	"gemu/hw/bus"
)

// Interrupt pins, as the interrupt pin register holds them.
const (
	PinNone = 0
	PinA    = 1
	PinB    = 2
	PinC    = 3
	PinD    = 4
)

// SetInterruptPin sets the function's INTx pin (PinA..PinD, or PinNone). It must be
// called before Bus.Add, which routes the pin through the board's swizzle.
func (c *ConfigSpace) SetInterruptPin(pin byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.setup(); err != nil {
		return err
	}
	if pin > PinD {
		return fmt.Errorf("pci: interrupt pin %d", pin)
	}
	c.init8(RegIntPin, pin)
	return nil
}

func (c *ConfigSpace) pin() byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.power[RegIntPin]
}

// SetIRQ sets the level the function drives on its INTx pin (level-triggered, as
// PCI is). Status bit 3 follows it; the line itself is asserted only while the guest
// has not set the command register's interrupt-disable bit and has neither MSI nor
// MSI-X enabled.
func (c *ConfigSpace) SetIRQ(level bool) {
	c.mu.Lock()
	c.level = level
	c.updateINTxLocked()
	c.unlock()
}

// IRQ reports the level the function drives (status bit 3).
func (c *ConfigSpace) IRQ() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.level
}

func (c *ConfigSpace) updateINTxLocked() {
	st := binary.LittleEndian.Uint16(c.data[RegStatus:]) &^ StatusIntx
	if c.level {
		st |= StatusIntx
	}
	binary.LittleEndian.PutUint16(c.data[RegStatus:], st)
	out := c.level && c.cmdLocked()&CmdIntxDisable == 0
	if m := c.msi; m != nil && m.enabledLocked() != 0 {
		out = false
	}
	if m := c.msix; m != nil && m.ctlLocked()&msixEnable != 0 {
		out = false
	}
	if c.intxOut.Swap(out) != out && c.irq != nil {
		w := c.irq
		c.fx = append(c.fx, func() { w.sync(c) })
	}
}

// wire is one interrupt line shared by the functions whose pins the swizzle puts on
// it: asserted while any of them asserts (PCI INTx is wired-OR, active low).
type wire struct {
	mu    sync.Mutex
	out   bus.IRQ
	up    map[*ConfigSpace]bool
	level bool
}

// sync brings the line in line with c's current output. It reads the output under the
// wire's lock, so concurrent updates of one function cannot leave a stale level.
func (w *wire) sync(c *ConfigSpace) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.intxOut.Load() {
		w.up[c] = true
	} else {
		delete(w.up, c)
	}
	if l := len(w.up) > 0; l != w.level {
		w.level = l
		w.out.Set(l)
	}
}

// RotatingINTx returns the swizzle both QEMU boards use: pin (0 = INTA) of slot
// raises lines[(slot + pin) % len(lines)] — on pc the IOAPIC GSIs 16..23 of hw/acpi's
// _PRT (acpi.PCIIntxGSI), on arm virt SPIs 3..6 as its device-tree interrupt-map says.
// The lines it returns are comparable, so functions that share one are wired-OR.
func RotatingINTx(lines []bus.IRQ) func(slot, pin int) bus.IRQ {
	shared := make([]*line, len(lines))
	for i, l := range lines {
		shared[i] = &line{l}
	}
	return func(slot, pin int) bus.IRQ {
		if len(shared) == 0 || slot < 0 || pin < 0 {
			return bus.NoIRQ
		}
		return shared[(slot+pin)%len(shared)]
	}
}

type line struct{ irq bus.IRQ }

func (l *line) Set(level bool) { l.irq.Set(level) }

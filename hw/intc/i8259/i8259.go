// Package i8259 owns the PC's pair of cascaded 8259A programmable interrupt
// controllers of a userspace chipset (under KVM the kernel has its own): ports
// 0x20/0x21 (master) and 0xa0/0xa1 (slave on master input 2), the ELCR edge/level
// registers at 0x4d0/0x4d1, initialization (ICW1-ICW4), OCW1 (mask), OCW2 (EOI,
// specific EOI, rotation, priority), OCW3 (IRR/ISR read, poll, special mask), auto-EOI,
// special fully nested mode, and the interrupt-acknowledge cycle the CPU runs through
// its local APIC's LINT0 in ExtINT mode. Behaviour follows QEMU's hw/intc/i8259.c.
//
// It must not know about accelerators or boards: the board wires device lines to
// SetIRQ and the master's INTR output (SetOutput) to the CPU.
package i8259

import (
	"sync"

	"gemu/hw/bus"
)

// Ports.
const (
	MasterPort = 0x20
	SlavePort  = 0xa0
	ELCRPort   = 0x4d0 // 2 bytes: master, slave
)

type chip struct {
	lastIRR, irr, imr, isr uint8
	priorityAdd            uint8
	irqBase                uint8
	readISR, poll          bool
	specialMask            bool
	initState              int
	autoEOI, rotateAEOI    bool
	sfnm, init4, single    bool
	elcr, elcrMask         uint8
	master                 bool
}

// PIC is the master/slave pair.
type PIC struct {
	mu   sync.Mutex
	c    [2]chip
	out  bus.IRQ
	intr bool
}

// New returns the pair with its INTR output going to out (the LINT0 of the local
// APICs, or the CPU's INTR pin).
func New(out bus.IRQ) *PIC {
	if out == nil {
		out = bus.NoIRQ
	}
	p := &PIC{out: out}
	p.c[0].master, p.c[0].elcrMask, p.c[1].elcrMask = true, 0xf8, 0xde
	p.c[0].initReset()
	p.c[1].initReset()
	return p
}

// SetOutput changes where INTR goes.
func (p *PIC) SetOutput(out bus.IRQ) {
	p.mu.Lock()
	p.out = out
	p.mu.Unlock()
}

func (c *chip) initReset() {
	c.lastIRR = 0
	c.irr &= c.elcr
	c.imr, c.isr, c.priorityAdd, c.irqBase = 0, 0, 0, 0
	c.readISR, c.poll, c.specialMask = false, false, false
	c.initState = 0
	c.autoEOI, c.rotateAEOI, c.sfnm, c.init4, c.single = false, false, false, false, false
}

// Reset returns both chips to their power-on state (ELCR included).
func (p *PIC) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.c {
		p.c[i].elcr = 0
		p.c[i].irr = 0
		p.c[i].initReset()
	}
	p.updateLocked()
}

// priority returns the priority (0 highest) of the highest bit set in mask, 8 if none.
func (c *chip) priority(mask uint8) int {
	if mask == 0 {
		return 8
	}
	p := 0
	for mask&(1<<((uint8(p)+c.priorityAdd)&7)) == 0 {
		p++
	}
	return p
}

// getIRQ returns the input the chip would present, or -1.
func (c *chip) getIRQ() int {
	pr := c.priority(c.irr &^ c.imr)
	if pr == 8 {
		return -1
	}
	mask := c.isr
	if c.specialMask {
		mask &^= c.imr
	}
	if c.sfnm && c.master {
		mask &^= 1 << 2
	}
	if pr < c.priority(mask) {
		return int((uint8(pr) + c.priorityAdd) & 7)
	}
	return -1
}

func (c *chip) setIRQ(n int, level bool) {
	m := uint8(1) << n
	if c.elcr&m != 0 {
		if level {
			c.irr |= m
			c.lastIRR |= m
		} else {
			c.irr &^= m
			c.lastIRR &^= m
		}
		return
	}
	if level {
		if c.lastIRR&m == 0 {
			c.irr |= m
		}
		c.lastIRR |= m
	} else {
		c.lastIRR &^= m
	}
}

func (c *chip) intack(n int) {
	if c.autoEOI {
		if c.rotateAEOI {
			c.priorityAdd = uint8(n+1) & 7
		}
	} else {
		c.isr |= 1 << n
	}
	if c.elcr&(1<<n) == 0 {
		c.irr &^= 1 << n
	}
}

// updateLocked propagates the slave's output to master input 2 and the master's to INTR.
func (p *PIC) updateLocked() {
	p.c[0].setIRQ(2, p.c[1].getIRQ() >= 0)
	level := p.c[0].getIRQ() >= 0
	if level != p.intr {
		p.intr = level
		p.out.Set(level)
	}
}

// SetIRQ drives ISA IRQ n (0..15; 2 is the cascade and ignored).
func (p *PIC) SetIRQ(n int, level bool) {
	if n < 0 || n > 15 || n == 2 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.c[n>>3].setIRQ(n&7, level)
	p.updateLocked()
}

// IRQ returns ISA IRQ n as a line.
func (p *PIC) IRQ(n int) bus.IRQ { return bus.IRQFunc(func(l bool) { p.SetIRQ(n, l) }) }

// INTR reports the master's output level.
func (p *PIC) INTR() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.intr
}

// Acknowledge runs the interrupt-acknowledge cycle and returns the vector (QEMU's
// pic_read_irq): with no request, the spurious IRQ 7 (of the master, or of the slave
// if its request went away).
func (p *PIC) Acknowledge() uint8 {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, s := &p.c[0], &p.c[1]
	var vec uint8
	if irq := m.getIRQ(); irq >= 0 {
		if irq == 2 {
			irq2 := s.getIRQ()
			if irq2 >= 0 {
				s.intack(irq2)
			} else {
				irq2 = 7
			}
			vec = s.irqBase + uint8(irq2)
		} else {
			vec = m.irqBase + uint8(irq)
		}
		m.intack(irq)
	} else {
		vec = m.irqBase + 7
	}
	p.updateLocked()
	return vec
}

func (p *PIC) writeLocked(c *chip, a1 bool, v uint8) {
	if !a1 {
		switch {
		case v&0x10 != 0: // ICW1
			c.initReset()
			c.initState = 1
			c.init4 = v&1 != 0
			c.single = v&2 != 0
		case v&0x08 != 0: // OCW3
			if v&0x04 != 0 {
				c.poll = true
			}
			if v&0x02 != 0 {
				c.readISR = v&1 != 0
			}
			if v&0x40 != 0 {
				c.specialMask = v&0x20 != 0
			}
		default: // OCW2
			switch cmd := v >> 5; cmd {
			case 0, 4:
				c.rotateAEOI = cmd != 0
			case 1, 5:
				if pr := c.priority(c.isr); pr != 8 {
					irq := (uint8(pr) + c.priorityAdd) & 7
					c.isr &^= 1 << irq
					if cmd == 5 {
						c.priorityAdd = (irq + 1) & 7
					}
				}
			case 3:
				c.isr &^= 1 << (v & 7)
			case 6:
				c.priorityAdd = (v + 1) & 7
			case 7:
				c.isr &^= 1 << (v & 7)
				c.priorityAdd = (v + 1) & 7
			}
		}
		p.updateLocked()
		return
	}
	switch c.initState {
	case 0: // OCW1
		c.imr = v
		p.updateLocked()
	case 1: // ICW2
		c.irqBase = v & 0xf8
		c.initState = 2
		if c.single {
			c.initState = 0
			if c.init4 {
				c.initState = 3
			}
		}
	case 2: // ICW3
		c.initState = 0
		if c.init4 {
			c.initState = 3
		}
	case 3: // ICW4
		c.sfnm = v&0x10 != 0
		c.autoEOI = v&0x02 != 0
		c.initState = 0
	}
}

func (p *PIC) readLocked(c *chip, a1 bool) uint8 {
	if c.poll {
		c.poll = false
		irq := c.getIRQ()
		if irq < 0 {
			return 0
		}
		c.intack(irq)
		p.updateLocked()
		return uint8(irq) | 0x80
	}
	if a1 {
		return c.imr
	}
	if c.readISR {
		return c.isr
	}
	return c.irr
}

// Chip is one 8259's two-port window as a bus.Device (insert Master() at 0x20 and
// Slave() at 0xa0, size 2).
type Chip struct {
	p *PIC
	i int
}

// Master returns the master's ports.
func (p *PIC) Master() *Chip { return &Chip{p, 0} }

// Slave returns the slave's ports.
func (p *PIC) Slave() *Chip { return &Chip{p, 1} }

// ELCR returns the edge/level control registers as a bus.Device (0x4d0, size 2).
func (p *PIC) ELCR() bus.Device { return elcr{p} }

// Read implements bus.Device.
func (c *Chip) Read(_ bus.Access, off uint64, data []byte) {
	clear(data)
	if len(data) != 1 || off > 1 {
		return
	}
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	data[0] = c.p.readLocked(&c.p.c[c.i], off == 1)
}

// Write implements bus.Device.
func (c *Chip) Write(_ bus.Access, off uint64, data []byte) {
	if len(data) != 1 || off > 1 {
		return
	}
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	c.p.writeLocked(&c.p.c[c.i], off == 1, data[0])
}

// Reset implements bus.Resetter (the pair resets once, from whichever chip).
func (c *Chip) Reset() {
	if c.i == 0 {
		c.p.Reset()
	}
}

type elcr struct{ p *PIC }

func (e elcr) Read(_ bus.Access, off uint64, data []byte) {
	e.p.mu.Lock()
	defer e.p.mu.Unlock()
	for i := range data {
		data[i] = 0
		if o := off + uint64(i); o < 2 {
			data[i] = e.p.c[o].elcr
		}
	}
}

func (e elcr) Write(_ bus.Access, off uint64, data []byte) {
	e.p.mu.Lock()
	defer e.p.mu.Unlock()
	for i, v := range data {
		if o := off + uint64(i); o < 2 {
			c := &e.p.c[o]
			c.elcr = v & c.elcrMask
		}
	}
	e.p.updateLocked()
}

// Package ioapic owns the PC's I/O APIC of a userspace chipset (under KVM the kernel
// has its own): the IOREGSEL/IOWIN window at 0xfec00000 with the version-0x20 EOI
// register, 24 input pins with their redirection table (vector, delivery mode,
// physical/logical destination, edge/level, mask, remote IRR), and delivery of each
// interrupt as a message to the local APICs; the local APICs' EOI of a level-triggered
// vector comes back through EOI. Behaviour follows QEMU's hw/intc/ioapic.c (polarity is
// recorded but the inputs are logical levels, as the board drives them).
//
// It must not know about accelerators or boards; the PC's ISA-IRQ-to-pin wiring
// (IRQ0 on pin 2) is the board's (hw/intc/pcirq).
package ioapic

import (
	"encoding/binary"
	"sync"

	"gemu/hw/bus"
	"gemu/hw/intc/apic"
)

// Window layout and identification.
const (
	DefaultBase = 0xfec00000
	Size        = 0x1000
	NumPins     = 24
	Version     = 0x170020 // version 0x20, 24 redirection entries

	RegSel = 0x00
	RegWin = 0x10
	RegEOI = 0x40
)

// Redirection entry bits.
const (
	entMask      = 1 << 16
	entLevel     = 1 << 15
	entRemoteIRR = 1 << 14
	entPolarity  = 1 << 13
	entStatus    = 1 << 12
	entLogical   = 1 << 11
	roBits       = entRemoteIRR | entStatus
)

// Sink is where the IOAPIC's messages go (apic.System).
type Sink interface {
	Deliver(m apic.Message)
}

// IOAPIC is one I/O APIC.
type IOAPIC struct {
	sink Sink

	mu    sync.Mutex
	id    uint8
	sel   uint32
	redir [NumPins]uint64
	irr   uint32 // latched requests: edges not yet delivered, levels held high
	level uint32 // input levels
}

// New returns an IOAPIC with id id delivering to sink.
func New(id uint8, sink Sink) *IOAPIC {
	io := &IOAPIC{sink: sink}
	io.reset()
	io.id = id
	return io
}

func (io *IOAPIC) reset() {
	io.sel, io.irr, io.level = 0, 0, 0
	for i := range io.redir {
		io.redir[i] = entMask
	}
}

// Reset returns the redirection table to all-masked (machine reset); the id stays.
func (io *IOAPIC) Reset() {
	io.mu.Lock()
	io.reset()
	io.mu.Unlock()
}

// IRQ returns input pin n (0..23) as a line; it panics for n out of range (a board
// wiring error).
func (io *IOAPIC) IRQ(n int) bus.IRQ {
	if n < 0 || n >= NumPins {
		panic("ioapic: no such pin")
	}
	return bus.IRQFunc(func(level bool) { io.SetPin(n, level) })
}

// SetPin drives input pin n. An edge-triggered pin requests on the rising edge (if
// unmasked); a level-triggered one requests while high.
func (io *IOAPIC) SetPin(n int, level bool) {
	if n < 0 || n >= NumPins {
		return
	}
	io.mu.Lock()
	defer io.mu.Unlock()
	m := uint32(1) << n
	was := io.level&m != 0
	if level {
		io.level |= m
	} else {
		io.level &^= m
	}
	if io.redir[n]&entLevel != 0 {
		if level {
			io.irr |= m
			io.serviceLocked()
		} else {
			io.irr &^= m
		}
		return
	}
	// An edge on a masked pin is ignored, not held pending (82093AA datasheet, and
	// QEMU; KVM's in-kernel IOAPIC latches it).
	if level && !was && io.redir[n]&entMask == 0 {
		io.irr |= m
		io.serviceLocked()
	}
}

// serviceLocked delivers every unmasked request (QEMU's ioapic_service).
func (io *IOAPIC) serviceLocked() {
	for n := 0; n < NumPins; n++ {
		m := uint32(1) << n
		e := io.redir[n]
		if io.irr&m == 0 || e&entMask != 0 {
			continue
		}
		lvl := e&entLevel != 0
		if lvl {
			if e&entRemoteIRR != 0 {
				continue
			}
			io.redir[n] |= entRemoteIRR
		} else {
			io.irr &^= m
		}
		io.sink.Deliver(apic.Message{
			Dest:      apic.Dest8(uint8(e >> 56)),
			Logical:   e&entLogical != 0,
			Mode:      uint8(e>>8) & 7,
			Vector:    uint8(e),
			Level:     true,
			LevelTrig: lvl,
		})
	}
}

// EOI is the local APICs' EOI broadcast for vector (and the EOI register): every
// level-triggered pin with that vector and remote IRR set is cleared, and delivered
// again if its input is still high.
func (io *IOAPIC) EOI(vector uint8) {
	io.mu.Lock()
	defer io.mu.Unlock()
	again := false
	for n := range io.redir {
		e := io.redir[n]
		if e&entLevel != 0 && e&entRemoteIRR != 0 && uint8(e) == vector {
			io.redir[n] &^= entRemoteIRR
			if io.level&(1<<n) != 0 {
				again = true
			}
		}
	}
	if again {
		io.serviceLocked()
	}
}

// Entry returns redirection entry n (for tests and the monitor).
func (io *IOAPIC) Entry(n int) uint64 {
	io.mu.Lock()
	defer io.mu.Unlock()
	return io.redir[n]
}

func (io *IOAPIC) readLocked() uint32 {
	switch s := io.sel & 0xff; {
	case s == 0:
		return uint32(io.id) << 24
	case s == 1:
		return Version
	case s == 2:
		return 0
	case s >= 0x10 && s < 0x10+2*NumPins:
		e := io.redir[(s-0x10)/2]
		if s&1 != 0 {
			return uint32(e >> 32)
		}
		return uint32(e)
	}
	return 0
}

func (io *IOAPIC) writeLocked(v uint32) {
	switch s := io.sel & 0xff; {
	case s == 0:
		io.id = uint8(v>>24) & 0xf
	case s >= 0x10 && s < 0x10+2*NumPins:
		n := (s - 0x10) / 2
		e := io.redir[n]
		ro := e & roBits
		if s&1 != 0 {
			e = e&0xffffffff | uint64(v)<<32
		} else {
			e = e&^0xffffffff | uint64(v)
		}
		e = e&^roBits | ro
		if e&entLevel == 0 {
			e &^= entRemoteIRR
		}
		io.redir[n] = e
		io.serviceLocked()
	}
}

// Read implements bus.Device for the register window.
func (io *IOAPIC) Read(_ bus.Access, off uint64, data []byte) {
	clear(data)
	if len(data) != 4 {
		return
	}
	io.mu.Lock()
	defer io.mu.Unlock()
	var v uint32
	switch off {
	case RegSel:
		v = io.sel
	case RegWin:
		v = io.readLocked()
	}
	binary.LittleEndian.PutUint32(data, v)
}

// Write implements bus.Device for the register window.
func (io *IOAPIC) Write(_ bus.Access, off uint64, data []byte) {
	var v uint32
	switch len(data) {
	case 1:
		v = uint32(data[0])
	case 4:
		v = binary.LittleEndian.Uint32(data)
	default:
		return
	}
	switch {
	case off == RegSel:
		io.mu.Lock()
		io.sel = v & 0xff
		io.mu.Unlock()
	case off == RegWin && len(data) == 4:
		io.mu.Lock()
		io.writeLocked(v)
		io.mu.Unlock()
	case off == RegEOI && len(data) == 4:
		io.EOI(uint8(v))
	}
}

package serial

import (
	"encoding/binary"
	"sync"

	"gemu/hw/bus"
	"gemu/hw/chardev"
)

// PL011 register offsets (ARM PrimeCell UART, DDI 0183).
const (
	plDR    = 0x000
	plRSR   = 0x004 // write: ECR, clears errors
	plFR    = 0x018
	plILPR  = 0x020
	plIBRD  = 0x024
	plFBRD  = 0x028
	plLCRH  = 0x02c
	plCR    = 0x030
	plIFLS  = 0x034
	plIMSC  = 0x038
	plRIS   = 0x03c
	plMIS   = 0x040
	plICR   = 0x044
	plDMACR = 0x048
	plID    = 0xfe0 // PeriphID0..3, then PCellID0..3 at 0xff0
)

// Flag register bits.
const (
	frRXFE = 1 << 4
	frTXFF = 1 << 5
	frRXFF = 1 << 6
	frTXFE = 1 << 7
)

// Interrupt bits (RIS/MIS/IMSC/ICR).
const (
	intRX = 1 << 4
	intTX = 1 << 5
	intRT = 1 << 6
	intOE = 1 << 10

	intAll = 0x7ff
)

const (
	lcrFEN    = 1 << 4
	plFIFO    = 16   // hardware receive FIFO depth
	plHostBuf = 4096 // host bytes held back while the guest's FIFO is full
)

// plIDs are PeriphID0-3 (part 0x011, designer ARM, revision r1p5) and the PrimeCell ID.
var plIDs = [8]byte{0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1}

// PL011 is an ARM PrimeCell UART. Guest output goes to the backend as it is written
// (the transmit FIFO never fills); host input waits in a 16-entry receive FIFO (one
// entry with FIFOs disabled), behind which a host-side buffer holds typed-ahead bytes
// so a paste is not lost while the guest is slow. The interrupt line is the level of
// RIS & IMSC.
type PL011 struct {
	mu  sync.Mutex
	out chardev.Backend
	irq bus.IRQ

	rx         []byte // receive FIFO, oldest first
	host       []byte // bytes the FIFO could not take yet
	ris, imsc  uint32
	lcrh, cr   uint32
	ibrd, fbrd uint32
	ifls       uint32
	ilpr       uint32
	dmacr      uint32
	rsr        uint32
	level      bool
}

// NewPL011 returns a UART in its reset state, writing to out and raising irq. It
// registers itself as out's receiver.
func NewPL011(out chardev.Backend, irq bus.IRQ) *PL011 {
	if irq == nil {
		irq = bus.NoIRQ
	}
	u := &PL011{out: out, irq: irq, cr: 0x300, ifls: 0x12}
	out.SetReceiver(u.Receive)
	return u
}

func (u *PL011) depth() int {
	if u.lcrh&lcrFEN != 0 {
		return plFIFO
	}
	return 1
}

// rxTrigger is the FIFO fill level of IFLS.RXIFLSEL: 1/8, 1/4, 1/2, 3/4, 7/8 of 16.
func (u *PL011) rxTrigger() int {
	if u.lcrh&lcrFEN == 0 {
		return 1
	}
	switch (u.ifls >> 3) & 7 {
	case 0:
		return 2
	case 1:
		return 4
	case 3:
		return 12
	case 4:
		return 14
	}
	return 8
}

// update recomputes the receive interrupts from the FIFO and drives the line. Called
// with mu held.
func (u *PL011) update() {
	for len(u.host) > 0 && len(u.rx) < u.depth() {
		u.rx = append(u.rx, u.host[0])
		u.host = u.host[1:]
	}
	if len(u.rx) >= u.rxTrigger() {
		u.ris |= intRX
	} else {
		u.ris &^= intRX
	}
	// The receive timeout fires when data sits below the trigger level with no more
	// arriving; gemu delivers host bytes in bursts, so it is raised at once.
	if len(u.rx) > 0 {
		u.ris |= intRT
	} else {
		u.ris &^= intRT
	}
	lvl := u.ris&u.imsc != 0
	if lvl != u.level {
		u.level = lvl
		u.irq.Set(lvl)
	}
}

// Receive queues one byte of host input.
func (u *PL011) Receive(b byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.host) >= plHostBuf {
		u.ris |= intOE
		u.rsr |= 8 // overrun
	} else {
		u.host = append(u.host, b)
	}
	u.update()
}

func (u *PL011) Read(_ bus.Access, off uint64, data []byte) {
	u.mu.Lock()
	v := u.read(off)
	u.mu.Unlock()
	var b [8]byte
	binary.LittleEndian.PutUint32(b[:], v)
	copy(data, b[:])
}

func (u *PL011) read(off uint64) uint32 {
	switch off {
	case plDR:
		if len(u.rx) == 0 {
			return 0
		}
		c := u.rx[0]
		u.rx = u.rx[1:]
		u.update()
		return uint32(c)
	case plRSR:
		return u.rsr
	case plFR:
		fr := uint32(frTXFE)
		if len(u.rx) == 0 {
			fr |= frRXFE
		}
		if len(u.rx) >= u.depth() {
			fr |= frRXFF
		}
		return fr
	case plILPR:
		return u.ilpr
	case plIBRD:
		return u.ibrd
	case plFBRD:
		return u.fbrd
	case plLCRH:
		return u.lcrh
	case plCR:
		return u.cr
	case plIFLS:
		return u.ifls
	case plIMSC:
		return u.imsc
	case plRIS:
		return u.ris
	case plMIS:
		return u.ris & u.imsc
	case plDMACR:
		return u.dmacr
	}
	if off >= plID && off < plID+32 && off%4 == 0 {
		return uint32(plIDs[(off-plID)/4])
	}
	return 0
}

func (u *PL011) Write(_ bus.Access, off uint64, data []byte) {
	var b [8]byte
	copy(b[:], data)
	v := binary.LittleEndian.Uint32(b[:])
	u.mu.Lock()
	defer u.mu.Unlock()
	switch off {
	case plDR:
		u.out.Write([]byte{byte(v)})
		// The byte left the (never full) transmit FIFO at once: the FIFO is at or
		// below any trigger level, so the transmit interrupt is raised.
		u.ris |= intTX
	case plRSR:
		u.rsr = 0
	case plILPR:
		u.ilpr = v & 0xff
	case plIBRD:
		u.ibrd = v & 0xffff
	case plFBRD:
		u.fbrd = v & 0x3f
	case plLCRH:
		// Changing FEN flushes nothing on real hardware; a FIFO shrunk to one entry
		// keeps its excess bytes queued on the host side.
		u.lcrh = v & 0xff
		if d := u.depth(); len(u.rx) > d {
			u.host = append(append([]byte{}, u.rx[d:]...), u.host...)
			u.rx = u.rx[:d]
		}
	case plCR:
		u.cr = v & 0xffff
	case plIFLS:
		u.ifls = v & 0x3f
	case plIMSC:
		u.imsc = v & intAll
	case plICR:
		u.ris &^= v & intAll
	case plDMACR:
		u.dmacr = v & 7
	}
	u.update()
}

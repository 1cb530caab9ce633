package serial

import (
	"sync"

	"gemu/hw/bus"
	"gemu/hw/chardev"
)

// 8250/16550A register offsets (DLAB=0 unless noted).
const (
	uartRBR = 0 // read: receive buffer; write: THR; DLAB: DLL
	uartIER = 1 // DLAB: DLM
	uartIIR = 2 // read: interrupt identification; write: FCR
	uartLCR = 3
	uartMCR = 4
	uartLSR = 5
	uartMSR = 6
	uartSCR = 7
)

// Bits Linux's 8250 driver relies on.
const (
	ierRDI  = 0x01 // received data available
	ierTHRI = 0x02 // transmitter holding register empty
	ierRLSI = 0x04 // receiver line status
	ierMSI  = 0x08 // modem status

	iirNoInt = 0x01
	iirMSI   = 0x00
	iirTHRI  = 0x02
	iirRDI   = 0x04
	iirRLSI  = 0x06
	iirCTI   = 0x0c // character timeout (FIFO below trigger level)
	iirFIFO  = 0xc0 // both bits set when FIFOs are enabled (16550A)

	fcrEnable   = 0x01
	fcrClearRX  = 0x02
	fcrClearTX  = 0x04
	fcrTrigMask = 0xc0

	lcrDLAB = 0x80

	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10

	lsrDR   = 0x01
	lsrOE   = 0x02
	lsrBI   = 0x10
	lsrTHRE = 0x20
	lsrTEMT = 0x40

	msrDCTS = 0x01
	msrDDSR = 0x02
	msrTERI = 0x04
	msrDDCD = 0x08
	msrCTS  = 0x10
	msrDSR  = 0x20
	msrRI   = 0x40
	msrDCD  = 0x80
)

// fifoSize is the 16550A's receive and transmit FIFO depth.
const fifoSize = 16

// maxPending bounds host input queued behind a full receive FIFO. Host input is held
// rather than dropped so a paste into the console survives (QEMU achieves the same by
// not reading the host while the FIFO is full); beyond this, bytes are lost with an
// overrun as on real hardware.
const maxPending = 64 << 10

// UART8250 is a 16550A UART: a bus.Device spanning 8 port addresses (COM1 is 0x3F8,
// IRQ 4). Transmission is instantaneous: a byte written to THR goes to the backend at
// once and THR is empty again, which is what the guest observes of a fast line.
type UART8250 struct {
	mu      sync.Mutex
	irq     bus.IRQ
	backend chardev.Backend
	irqHigh bool

	ier, lcr, mcr, lsr, msr, scr, fcr byte
	dll, dlm                          byte
	rx                                []byte // receive FIFO (or holding register when FIFOs are off)
	pending                           []byte // host input waiting for FIFO space
	thrPending                        bool   // THRE interrupt condition, cleared by an IIR read or a THR write
}

// NewUART8250 returns a UART in its reset state whose output goes to be and whose
// interrupt line is irq. It registers itself as be's receiver.
func NewUART8250(be chardev.Backend, irq bus.IRQ) *UART8250 {
	if irq == nil {
		irq = bus.NoIRQ
	}
	if be == nil {
		be = chardev.Null{}
	}
	u := &UART8250{irq: irq, backend: be}
	u.resetLocked()
	be.SetReceiver(u.Receive)
	return u
}

func (u *UART8250) resetLocked() {
	u.ier, u.lcr, u.mcr, u.scr, u.fcr = 0, 0, 0, 0, 0
	u.lsr = lsrTHRE | lsrTEMT
	// With no modem-control lines on the host side, report a live line: carrier,
	// data set ready, clear to send (QEMU reports the same).
	u.msr = msrDCD | msrDSR | msrCTS
	u.dll, u.dlm = 0x0c, 0 // 9600 baud
	u.rx, u.pending = nil, nil
	u.thrPending = false
}

// Reset returns the UART to its power-on state (machine reset) and deasserts its line.
func (u *UART8250) Reset() {
	u.mu.Lock()
	u.resetLocked()
	u.updateIRQLocked()
	u.mu.Unlock()
}

func (u *UART8250) fifoOn() bool { return u.fcr&fcrEnable != 0 }

func (u *UART8250) rxCapacity() int {
	if u.fifoOn() {
		return fifoSize
	}
	return 1
}

func (u *UART8250) rxTrigger() int {
	if !u.fifoOn() {
		return 1
	}
	return [4]int{1, 4, 8, 14}[u.fcr>>6]
}

// iir computes the interrupt identification: the highest-priority pending source
// among the enabled ones.
func (u *UART8250) iirLocked() byte {
	id := byte(iirNoInt)
	switch {
	case u.ier&ierRLSI != 0 && u.lsr&(lsrOE|lsrBI) != 0:
		id = iirRLSI
	case u.ier&ierRDI != 0 && len(u.rx) > 0:
		// Below the trigger level a real 16550A reports a character timeout after
		// four character times; reporting it at once is indistinguishable to a
		// driver that drains the FIFO on either.
		id = iirRDI
		if len(u.rx) < u.rxTrigger() {
			id = iirCTI
		}
	case u.ier&ierTHRI != 0 && u.thrPending:
		id = iirTHRI
	case u.ier&ierMSI != 0 && u.msr&(msrDCTS|msrDDSR|msrTERI|msrDDCD) != 0:
		id = iirMSI
	}
	if u.fifoOn() {
		id |= iirFIFO
	}
	return id
}

func (u *UART8250) updateIRQLocked() {
	level := u.iirLocked()&iirNoInt == 0
	if level != u.irqHigh {
		u.irqHigh = level
		u.irq.Set(level)
	}
}

// refillLocked moves pending host input into the receive FIFO.
func (u *UART8250) refillLocked() {
	for len(u.pending) > 0 && len(u.rx) < u.rxCapacity() {
		u.rx = append(u.rx, u.pending[0])
		u.pending = u.pending[1:]
	}
	if len(u.pending) == 0 {
		u.pending = nil
	}
	if len(u.rx) > 0 {
		u.lsr |= lsrDR
	}
}

// Receive queues one byte of host input. It is the backend's receiver.
func (u *UART8250) Receive(b byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.mcr&mcrLoop != 0 {
		// In loopback the receiver is disconnected from the line.
		return
	}
	u.receiveLocked(b)
	u.updateIRQLocked()
}

func (u *UART8250) receiveLocked(b byte) {
	if len(u.pending) >= maxPending {
		u.lsr |= lsrOE
		return
	}
	u.pending = append(u.pending, b)
	u.refillLocked()
}

// Read implements bus.Device. Only the low byte of a wider access is meaningful.
func (u *UART8250) Read(_ bus.Access, off uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
	if len(data) == 0 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	dlab := u.lcr&lcrDLAB != 0
	var v byte
	switch off {
	case uartRBR:
		if dlab {
			v = u.dll
			break
		}
		if len(u.rx) > 0 {
			v = u.rx[0]
			u.rx = u.rx[1:]
			if len(u.rx) == 0 {
				u.rx = nil
			}
		}
		u.lsr &^= lsrDR
		u.refillLocked()
		u.updateIRQLocked()
	case uartIER:
		if dlab {
			v = u.dlm
		} else {
			v = u.ier
		}
	case uartIIR:
		v = u.iirLocked()
		// Reading IIR while THRE is the reported source acknowledges it.
		if v&0x0f == iirTHRI {
			u.thrPending = false
			u.updateIRQLocked()
		}
	case uartLCR:
		v = u.lcr
	case uartMCR:
		v = u.mcr
	case uartLSR:
		v = u.lsr
		u.lsr &^= lsrOE | lsrBI
		u.updateIRQLocked()
	case uartMSR:
		v = u.msr
		u.msr &^= msrDCTS | msrDDSR | msrTERI | msrDDCD
		u.updateIRQLocked()
	case uartSCR:
		v = u.scr
	}
	data[0] = v
}

// Write implements bus.Device.
func (u *UART8250) Write(_ bus.Access, off uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	v := data[0]
	u.mu.Lock()
	var out []byte
	dlab := u.lcr&lcrDLAB != 0
	switch off {
	case uartRBR:
		if dlab {
			u.dll = v
			break
		}
		if u.mcr&mcrLoop != 0 {
			u.receiveLocked(v)
		} else {
			out = []byte{v}
		}
		// The byte left THR at once: THR empty again, THRE interrupt pending.
		u.lsr |= lsrTHRE | lsrTEMT
		u.thrPending = true
	case uartIER:
		if dlab {
			u.dlm = v
			break
		}
		old := u.ier
		u.ier = v & 0x0f
		// Enabling the THRE interrupt while THR is empty raises it: Linux's
		// driver kicks transmission this way.
		if old&ierTHRI == 0 && u.ier&ierTHRI != 0 && u.lsr&lsrTHRE != 0 {
			u.thrPending = true
		}
	case uartIIR: // FCR
		old := u.fcr
		if v&fcrEnable == 0 {
			u.fcr = 0
		} else {
			u.fcr = v & (fcrEnable | fcrTrigMask)
		}
		// Switching the FIFOs on or off empties them, as does the clear bit.
		if v&fcrClearRX != 0 || (old^u.fcr)&fcrEnable != 0 {
			u.rx = nil
			u.lsr &^= lsrDR
		}
		if v&fcrClearTX != 0 {
			u.lsr |= lsrTHRE | lsrTEMT
		}
		u.refillLocked()
	case uartLCR:
		u.lcr = v
	case uartMCR:
		u.mcr = v & 0x1f
		u.updateMSRLocked()
	case uartLSR:
		// Read-only on a 16550A; writes are ignored (QEMU does the same).
	case uartMSR:
	case uartSCR:
		u.scr = v
	}
	u.updateIRQLocked()
	be := u.backend
	u.mu.Unlock()
	if out != nil {
		be.Write(out)
	}
}

// updateMSRLocked derives the modem status inputs: in loopback they mirror the modem
// control outputs (CTS=RTS, DSR=DTR, RI=OUT1, DCD=OUT2), which is what the 8250
// driver's probe checks; otherwise the line looks live.
func (u *UART8250) updateMSRLocked() {
	var in byte
	if u.mcr&mcrLoop != 0 {
		if u.mcr&mcrRTS != 0 {
			in |= msrCTS
		}
		if u.mcr&mcrDTR != 0 {
			in |= msrDSR
		}
		if u.mcr&mcrOUT1 != 0 {
			in |= msrRI
		}
		if u.mcr&mcrOUT2 != 0 {
			in |= msrDCD
		}
	} else {
		in = msrDCD | msrDSR | msrCTS
	}
	old := u.msr
	delta := old & (msrDCTS | msrDDSR | msrTERI | msrDDCD)
	if (old^in)&msrCTS != 0 {
		delta |= msrDCTS
	}
	if (old^in)&msrDSR != 0 {
		delta |= msrDDSR
	}
	if (old^in)&msrDCD != 0 {
		delta |= msrDDCD
	}
	if old&msrRI != 0 && in&msrRI == 0 {
		delta |= msrTERI
	}
	u.msr = in | delta
}

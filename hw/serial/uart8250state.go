package serial

import (
	"fmt"

	"gemu/hw/bus"
	"gemu/hw/internal/statecodec"
)

var _ bus.Stateful = (*UART8250)(nil)

// uart8250StateVersion is the version of the 8250's saved state: IER, LCR, MCR, LSR,
// MSR, SCR, FCR, DLL, DLM (one byte each), the THRE interrupt condition, then the
// receive FIFO and the host bytes waiting behind it (statecodec byte queues). The
// line level is not saved: LoadState drives it from the restored registers.
const uart8250StateVersion = 1

// SaveState implements bus.Stateful.
func (u *UART8250) SaveState() (bus.State, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var e statecodec.Enc
	for _, v := range []byte{u.ier, u.lcr, u.mcr, u.lsr, u.msr, u.scr, u.fcr, u.dll, u.dlm} {
		e.U8(v)
	}
	e.Bool(u.thrPending)
	e.Bytes(u.rx)
	e.Bytes(u.pending)
	return bus.State{Name: "uart8250", Version: uart8250StateVersion, Data: e.B}, nil
}

// LoadState implements bus.Stateful; on error the UART is unchanged.
func (u *UART8250) LoadState(s bus.State) error {
	if s.Name != "uart8250" || s.Version != uart8250StateVersion {
		return fmt.Errorf("uart8250: cannot load state %q version %d", s.Name, s.Version)
	}
	d := statecodec.Dec{B: s.Data}
	var r [9]byte
	for i := range r {
		r[i] = d.U8()
	}
	thr := d.Bool()
	rx, pending := d.Bytes(fifoSize), d.Bytes(maxPending)
	if err := d.Err(); err != nil {
		return fmt.Errorf("uart8250: %v", err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.ier, u.lcr, u.mcr, u.lsr, u.msr, u.scr, u.fcr, u.dll, u.dlm = r[0]&0x0f, r[1], r[2]&0x1f, r[3], r[4], r[5], r[6], r[7], r[8]
	u.thrPending, u.rx, u.pending = thr, rx, pending
	if len(u.rx) > u.rxCapacity() { // FIFOs off: the holding register keeps one byte
		u.pending = append(u.rx[u.rxCapacity():], u.pending...)
		u.rx = u.rx[:u.rxCapacity()]
	}
	u.refillLocked()
	u.irqHigh = u.iirLocked()&iirNoInt != 0 // force the update to drive the line
	u.updateIRQLocked()
	return nil
}

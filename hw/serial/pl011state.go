package serial

import (
	"fmt"

	"gemu/hw/bus"
	"gemu/hw/internal/statecodec"
)

// pl011StateVersion is the version of the PL011's saved state: RIS, IMSC, LCR_H, CR,
// IBRD, FBRD, IFLS, ILPR, DMACR, RSR, then the receive FIFO and the host bytes behind
// it (u32 length, bytes each). The line level is not saved: LoadState drives it.
const pl011StateVersion = 1

// SaveState implements bus.Stateful.
func (u *PL011) SaveState() (bus.State, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var e statecodec.Enc
	for _, v := range []uint32{u.ris, u.imsc, u.lcrh, u.cr, u.ibrd, u.fbrd, u.ifls, u.ilpr, u.dmacr, u.rsr} {
		e.U32(v)
	}
	for _, q := range [][]byte{u.rx, u.host} {
		e.U32(uint32(len(q)))
		e.B = append(e.B, q...)
	}
	return bus.State{Name: "pl011", Version: pl011StateVersion, Data: e.B}, nil
}

// LoadState implements bus.Stateful; on error the UART is unchanged.
func (u *PL011) LoadState(s bus.State) error {
	if s.Name != "pl011" || s.Version != pl011StateVersion {
		return fmt.Errorf("pl011: cannot load state %q version %d", s.Name, s.Version)
	}
	d := statecodec.Dec{B: s.Data}
	var r [10]uint32
	for i := range r {
		r[i] = d.U32()
	}
	var qs [2][]byte
	for i, limit := range []int{plFIFO, plHostBuf} {
		n := d.U32()
		if d.Err() == statecodec.ErrShort || n > uint32(limit) || int(n) > len(d.B) {
			return fmt.Errorf("pl011: saved state malformed")
		}
		qs[i] = append([]byte(nil), d.B[:n]...)
		d.B = d.B[n:]
	}
	if err := d.Err(); err != nil {
		return fmt.Errorf("pl011: %v", err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.ris, u.imsc, u.lcrh, u.cr = r[0]&intAll, r[1]&intAll, r[2], r[3]
	u.ibrd, u.fbrd, u.ifls, u.ilpr, u.dmacr, u.rsr = r[4], r[5], r[6], r[7], r[8], r[9]
	u.rx, u.host = qs[0], qs[1]
	if len(u.rx) > u.depth() {
		u.host = append(u.rx[u.depth():], u.host...)
		u.rx = u.rx[:u.depth()]
	}
	u.level = !(u.ris&u.imsc != 0) // force update to drive the line
	u.update()
	return nil
}

// Package pl031 owns the ARM PrimeCell PL031 real-time clock (DDI 0224) as QEMU's
// hw/rtc/pl031.c models it: a 32-bit seconds counter that starts at the host's wall
// clock (UTC) and runs with it, a load register that sets it, a match register whose
// interrupt is raised, level, when the counter reaches it and the mask allows, and the
// PrimeCell identification registers Linux's AMBA bus probes (rtc-pl031).
//
// It must not know about accelerators, boards or the device tree.
package pl031

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"gemu/hw/bus"
)

// Register offsets.
const (
	RegDR   = 0x00 // data: the current count (read-only)
	RegMR   = 0x04 // match
	RegLR   = 0x08 // load: writing sets the count
	RegCR   = 0x0c // control: bit 0 start; the counter always runs (reads 1)
	RegIMSC = 0x10 // interrupt mask (bit 0)
	RegRIS  = 0x14 // raw interrupt status
	RegMIS  = 0x18 // masked interrupt status
	RegICR  = 0x1c // interrupt clear (write 1)
	regID   = 0xfe0
	Size    = 0x1000
)

// ids are PeriphID0-3 (part 0x031, designer ARM, revision r1) and the PrimeCell ID.
var ids = [8]byte{0x31, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1}

// RTC is one PL031. Its methods are safe from any goroutine.
type RTC struct {
	irq bus.IRQ
	now func() time.Time

	mu     sync.Mutex
	offset int64 // count = host seconds + offset
	mr     uint32
	imsc   uint32
	ris    uint32
	timer  *time.Timer
}

// New returns an RTC counting from the host's current time, raising irq on a match.
func New(irq bus.IRQ) *RTC { return newRTC(irq, time.Now) }

func newRTC(irq bus.IRQ, now func() time.Time) *RTC {
	if irq == nil {
		irq = bus.NoIRQ
	}
	return &RTC{irq: irq, now: now}
}

// SetBase makes the counter read the host's UTC time plus d (QEMU's -rtc base=:
// localtime is the zone's offset, a date the distance to it), from now on.
func (r *RTC) SetBase(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.offset = int64(d / time.Second)
	r.arm()
}

// Base returns how far the counter is from the host's UTC time (what SetBase sets,
// moved by the guest's LR writes).
func (r *RTC) Base() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return time.Duration(r.offset) * time.Second
}

// count is the counter now (seconds since the epoch, modulo 2^32, as the hardware's).
func (r *RTC) count() uint32 { return uint32(r.now().Unix() + r.offset) }

// Reset implements bus.Resetter: the counter keeps the time (it is battery-backed in
// spirit: QEMU keeps the offset across a reset too), the match interrupt is cleared.
func (r *RTC) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mr, r.imsc, r.ris = 0, 0, 0
	r.stopTimer()
	r.irq.Set(false)
}

// Read implements bus.Device. Registers are 32 bits wide; narrower reads return the
// low bytes of the register, wider ones are zero-filled beyond it.
func (r *RTC) Read(_ bus.Access, off uint64, data []byte) {
	clear(data)
	var v uint32
	r.mu.Lock()
	switch {
	case off == RegDR:
		v = r.count()
	case off == RegMR:
		v = r.mr
	case off == RegLR:
		v = r.count() // QEMU returns the current count for LR too
	case off == RegCR:
		v = 1
	case off == RegIMSC:
		v = r.imsc
	case off == RegRIS:
		v = r.ris
	case off == RegMIS:
		v = r.ris & r.imsc
	case off >= regID && off < regID+32 && off%4 == 0:
		v = uint32(ids[(off-regID)/4])
	}
	r.mu.Unlock()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	copy(data, b[:])
}

// Write implements bus.Device.
func (r *RTC) Write(_ bus.Access, off uint64, data []byte) {
	var b [4]byte
	copy(b[:], data)
	v := binary.LittleEndian.Uint32(b[:])
	r.mu.Lock()
	defer r.mu.Unlock()
	switch off {
	case RegMR:
		r.mr = v
		r.arm()
	case RegLR:
		r.offset = int64(v) - r.now().Unix()
		r.arm()
	case RegIMSC:
		r.imsc = v & 1
		r.update()
	case RegICR:
		r.ris &^= v & 1
		r.update()
	}
}

func (r *RTC) update() { r.irq.Set(r.ris&r.imsc != 0) }

func (r *RTC) stopTimer() {
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
}

// arm schedules the match interrupt for the moment the counter reaches MR (the count
// wraps at 2^32 seconds, so the match is at most that far away). Called with mu held.
func (r *RTC) arm() {
	r.stopTimer()
	now := r.now()
	cur := uint32(now.Unix() + r.offset)
	ahead := time.Duration(r.mr-cur) * time.Second // modulo 2^32, as the hardware
	if r.mr == cur {
		r.ris |= 1
		r.update()
		return
	}
	// From the start of the current second (the counter ticks on whole seconds).
	wait := ahead - time.Duration(now.Nanosecond())
	r.timer = time.AfterFunc(wait, r.fire)
}

func (r *RTC) fire() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.count() == r.mr {
		r.ris |= 1
		r.update()
		r.timer = nil
		return
	}
	r.arm() // woke early (clock step): try again
}

// stateData is the PL031's saved state: the offset from the host clock, MR, IMSC, RIS.
const stateSize = 8 + 4 + 4 + 4

// SaveState implements bus.Stateful.
func (r *RTC) SaveState() (bus.State, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := make([]byte, stateSize)
	le := binary.LittleEndian
	le.PutUint64(d, uint64(r.offset))
	le.PutUint32(d[8:], r.mr)
	le.PutUint32(d[12:], r.imsc)
	le.PutUint32(d[16:], r.ris)
	return bus.State{Name: "pl031", Version: 1, Data: d}, nil
}

// LoadState implements bus.Stateful.
func (r *RTC) LoadState(s bus.State) error {
	if s.Name != "pl031" || s.Version != 1 || len(s.Data) != stateSize {
		return fmt.Errorf("pl031: cannot load state %q version %d (%d bytes)", s.Name, s.Version, len(s.Data))
	}
	le := binary.LittleEndian
	r.mu.Lock()
	defer r.mu.Unlock()
	r.offset = int64(le.Uint64(s.Data))
	r.mr = le.Uint32(s.Data[8:])
	r.imsc = le.Uint32(s.Data[12:]) & 1
	r.ris = le.Uint32(s.Data[16:]) & 1
	r.update()
	if r.ris == 0 {
		r.arm()
	}
	return nil
}

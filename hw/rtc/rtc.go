// Package rtc owns the PC's CMOS real-time clock and NVRAM (a Motorola MC146818 at
// ports 0x70/0x71): the time of day from the host clock in BCD or binary, 12- or
// 24-hour form as register B selects, the UIP window of register A, and the rest of
// the 128 bytes of CMOS the firmware convention gives meaning to.
//
// It must not know about accelerators or boards; interrupts (IRQ 8) are not raised.
package rtc

import (
	"sync"
	"time"
)

// CMOS register indexes.
const (
	RegSeconds   = 0x00
	RegMinutes   = 0x02
	RegHours     = 0x04
	RegWeekday   = 0x06
	RegDay       = 0x07
	RegMonth     = 0x08
	RegYear      = 0x09
	RegA         = 0x0a
	RegB         = 0x0b
	RegC         = 0x0c
	RegD         = 0x0d
	RegCentury   = 0x32
	alarmSeconds = 0x01
	alarmMinutes = 0x03
	alarmHours   = 0x05

	regAUIP  = 0x80
	regBSet  = 0x80
	regBDM   = 0x04 // binary (not BCD) data mode
	regB24h  = 0x02
	regCUF   = 0x10 // update-ended flag
	regCIRQF = 0x80
	regDVRT  = 0x80 // valid RAM and time
)

// uipWindow is how long before each second's update register A shows "update in
// progress" (244 µs on the real part).
const uipWindow = 244 * time.Microsecond

// RTC is the CMOS device, 2 ports: index (bit 7 masks NMI) and data.
type RTC struct {
	mu     sync.Mutex
	now    func() time.Time // host clock, replaceable in tests
	offset time.Duration    // guest time - host time, set when the guest writes the clock
	index  byte
	cmos   [128]byte
	// lastUF is the second at which register C's update-ended flag was last read.
	lastUF int64
}

// New returns an RTC running on the host's clock in UTC, in BCD 24-hour mode.
func New() *RTC { return newRTC(time.Now) }

func newRTC(now func() time.Time) *RTC {
	r := &RTC{now: now}
	r.cmos[RegA] = 0x26 // 32.768 kHz time base, 1024 Hz periodic rate
	r.cmos[RegB] = regB24h
	r.cmos[RegD] = regDVRT
	r.lastUF = now().Unix()
	return r
}

// SetByte stores a CMOS NVRAM byte (for the board's memory-size and equipment bytes).
func (r *RTC) SetByte(index byte, v byte) {
	r.mu.Lock()
	r.cmos[index&0x7f] = v
	r.mu.Unlock()
}

func (r *RTC) guestTime() time.Time { return r.now().Add(r.offset).UTC() }

func (r *RTC) toBCD(v int) byte {
	if r.cmos[RegB]&regBDM != 0 {
		return byte(v)
	}
	return byte(v/10<<4 | v%10)
}

func (r *RTC) fromBCD(b byte) int {
	if r.cmos[RegB]&regBDM != 0 {
		return int(b)
	}
	return int(b>>4)*10 + int(b&0xf)
}

func (r *RTC) encodeHour(h int) byte {
	if r.cmos[RegB]&regB24h != 0 {
		return r.toBCD(h)
	}
	pm := h >= 12
	h %= 12
	if h == 0 {
		h = 12
	}
	v := r.toBCD(h)
	if pm {
		v |= 0x80
	}
	return v
}

func (r *RTC) decodeHour(b byte) int {
	if r.cmos[RegB]&regB24h != 0 {
		return r.fromBCD(b)
	}
	h := r.fromBCD(b&0x7f) % 12
	if b&0x80 != 0 {
		h += 12
	}
	return h
}

// latchLocked writes the current guest time into the time registers.
func (r *RTC) latchLocked() {
	t := r.guestTime()
	r.cmos[RegSeconds] = r.toBCD(t.Second())
	r.cmos[RegMinutes] = r.toBCD(t.Minute())
	r.cmos[RegHours] = r.encodeHour(t.Hour())
	r.cmos[RegWeekday] = r.toBCD(int(t.Weekday()) + 1)
	r.cmos[RegDay] = r.toBCD(t.Day())
	r.cmos[RegMonth] = r.toBCD(int(t.Month()))
	r.cmos[RegYear] = r.toBCD(t.Year() % 100)
	r.cmos[RegCentury] = r.toBCD(t.Year() / 100)
}

// commitLocked takes the time registers as the guest wrote them as the new time.
func (r *RTC) commitLocked() {
	c := &r.cmos
	year := r.fromBCD(c[RegCentury])*100 + r.fromBCD(c[RegYear])
	t := time.Date(year, time.Month(r.fromBCD(c[RegMonth])), r.fromBCD(c[RegDay]),
		r.decodeHour(c[RegHours]), r.fromBCD(c[RegMinutes]), r.fromBCD(c[RegSeconds]), 0, time.UTC)
	host := r.now()
	// Keep the sub-second phase of the host clock so the guest's second ticks with it.
	r.offset = t.Sub(host.Truncate(time.Second))
}

func isTimeReg(i byte) bool {
	switch i {
	case RegSeconds, RegMinutes, RegHours, RegWeekday, RegDay, RegMonth, RegYear, RegCentury:
		return true
	}
	return false
}

// Read implements bus.Device (offset 0: index, 1: data).
func (r *RTC) Read(off uint64, data []byte) {
	for i := range data {
		data[i] = 0xff
	}
	if len(data) == 0 || off != 1 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	i := r.index
	switch {
	case isTimeReg(i):
		if r.cmos[RegB]&regBSet == 0 {
			r.latchLocked()
		}
		data[0] = r.cmos[i]
	case i == RegA:
		v := r.cmos[RegA] &^ regAUIP
		if r.cmos[RegB]&regBSet == 0 {
			frac := time.Duration(r.guestTime().Nanosecond())
			if frac >= time.Second-uipWindow {
				v |= regAUIP
			}
		}
		data[0] = v
	case i == RegC:
		// Update-ended is flagged once per elapsed second; reading clears the flags.
		var v byte
		if s := r.guestTime().Unix(); r.cmos[RegB]&regBSet == 0 && s != r.lastUF {
			v |= regCUF
			r.lastUF = s
		}
		data[0] = v
	case i == RegD:
		data[0] = regDVRT
	default:
		data[0] = r.cmos[i]
	}
}

// Write implements bus.Device.
func (r *RTC) Write(off uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	v := data[0]
	r.mu.Lock()
	defer r.mu.Unlock()
	if off == 0 {
		// Bit 7 masks NMI on a real PC; there is no NMI source to mask here.
		r.index = v & 0x7f
		return
	}
	if off != 1 {
		return
	}
	i := r.index
	switch {
	case isTimeReg(i):
		if r.cmos[RegB]&regBSet == 0 {
			// Writing one field while the clock runs: the others keep their current
			// values.
			r.latchLocked()
			r.cmos[i] = v
			r.commitLocked()
		} else {
			r.cmos[i] = v
		}
	case i == RegA:
		r.cmos[RegA] = v &^ regAUIP
	case i == RegB:
		old := r.cmos[RegB]
		if v&regBSet != 0 && old&regBSet == 0 {
			// Freeze: the registers hold the time at the moment SET went up.
			r.latchLocked()
		}
		r.cmos[RegB] = v
		if v&regBSet == 0 && old&regBSet != 0 {
			// Unfreeze: what the guest wrote (in the data mode it just selected)
			// becomes the time.
			r.commitLocked()
		}
	case i == RegC || i == RegD:
		// read-only
	default:
		r.cmos[i] = v
	}
}

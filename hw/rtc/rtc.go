// Package rtc owns the PC's CMOS real-time clock and NVRAM (a Motorola MC146818 at
// ports 0x70/0x71): the time of day from the host clock in BCD or binary, 12- or
// 24-hour form as register B selects, the UIP window of register A, and the rest of
// the 128 bytes of CMOS the firmware convention gives meaning to.
//
// Periodic, alarm and update-ended interrupts go to IRQ 8 while register B enables
// them; their timers run only then, so an idle RTC costs nothing.
//
// It must not know about accelerators or boards.
package rtc

import (
	"sync"
	"time"

	"gemu/hw/bus"
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
	regBPIE  = 0x40 // periodic interrupt enable (same bit as regCPF)
	regBAIE  = 0x20 // alarm interrupt enable (same bit as regCAF)
	regBUIE  = 0x10 // update-ended interrupt enable (same bit as regCUF)
	regCPF   = 0x40
	regCAF   = 0x20
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

	irq      bus.IRQ
	irqHigh  bool
	flags    byte        // pending PF/AF/UF
	secTimer *time.Timer // per-second update/alarm tick while UIE or AIE is set
	perTimer *time.Timer // periodic tick while PIE is set
	period   time.Duration
	closed   bool
}

// New returns an RTC running on the host's clock in UTC, in BCD 24-hour mode, that
// raises irq (IRQ 8) for enabled events.
func New(irq bus.IRQ) *RTC {
	r := newRTC(time.Now)
	if irq != nil {
		r.irq = irq
	}
	return r
}

// Close stops the RTC's timers (the board is being torn down).
func (r *RTC) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.stopTimersLocked()
}

func (r *RTC) stopTimersLocked() {
	if r.secTimer != nil {
		r.secTimer.Stop()
		r.secTimer = nil
	}
	if r.perTimer != nil {
		r.perTimer.Stop()
		r.perTimer = nil
	}
}

func newRTC(now func() time.Time) *RTC {
	r := &RTC{now: now, irq: bus.NoIRQ}
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
func (r *RTC) Read(_ bus.Access, off uint64, data []byte) {
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
		// Update-ended is flagged once per elapsed second even with its interrupt
		// off (guests poll it); reading clears the flags and the interrupt.
		v := r.flags
		if s := r.guestTime().Unix(); r.cmos[RegB]&regBSet == 0 && s != r.lastUF {
			v |= regCUF
			r.lastUF = s
		}
		if v&r.cmos[RegB]&(regBPIE|regBAIE|regBUIE) != 0 {
			v |= regCIRQF
		}
		data[0] = v
		r.flags = 0
		r.updateIRQLocked()
	case i == RegD:
		data[0] = regDVRT
	default:
		data[0] = r.cmos[i]
	}
}

// Write implements bus.Device.
func (r *RTC) Write(_ bus.Access, off uint64, data []byte) {
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
		r.scheduleLocked()
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
		r.scheduleLocked()
		r.updateIRQLocked()
	case i == RegC || i == RegD:
		// read-only
	default:
		r.cmos[i] = v
	}
}

func (r *RTC) updateIRQLocked() {
	level := r.flags&r.cmos[RegB]&(regBPIE|regBAIE|regBUIE) != 0
	if level != r.irqHigh {
		r.irqHigh = level
		r.irq.Set(level)
	}
}

// periodLocked is the periodic interrupt interval register A selects (rate 0: off).
func (r *RTC) periodLocked() time.Duration {
	rate := r.cmos[RegA] & 0x0f
	switch {
	case rate == 0:
		return 0
	case rate <= 2:
		rate += 7 // rates 1 and 2 alias 8 and 9 (256 and 128 Hz) on a 32.768 kHz base
	}
	return time.Second * time.Duration(1<<(rate-1)) / 32768
}

// scheduleLocked starts or stops the tick timers to match registers A and B.
func (r *RTC) scheduleLocked() {
	if r.closed {
		return
	}
	b := r.cmos[RegB]
	running := b&regBSet == 0
	if running && b&(regBUIE|regBAIE) != 0 {
		if r.secTimer == nil {
			r.secTimer = time.AfterFunc(r.untilNextSecond(), r.secondTick)
		}
	} else if r.secTimer != nil {
		r.secTimer.Stop()
		r.secTimer = nil
	}
	p := r.periodLocked()
	if running && b&regBPIE != 0 && p > 0 {
		if r.perTimer == nil || p != r.period {
			if r.perTimer != nil {
				r.perTimer.Stop()
			}
			r.period = p
			r.perTimer = time.AfterFunc(p, r.periodicTick)
		}
	} else if r.perTimer != nil {
		r.perTimer.Stop()
		r.perTimer = nil
	}
}

func (r *RTC) untilNextSecond() time.Duration {
	return time.Second - time.Duration(r.guestTime().Nanosecond())
}

func (r *RTC) secondTick() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.secTimer == nil || r.closed {
		return
	}
	r.flags |= regCUF
	r.lastUF = r.guestTime().Unix()
	if r.alarmMatchesLocked() {
		r.flags |= regCAF
	}
	r.updateIRQLocked()
	r.secTimer.Reset(r.untilNextSecond())
}

// alarmMatchesLocked compares the time with the alarm registers; values 0xc0-0xff
// are "don't care".
func (r *RTC) alarmMatchesLocked() bool {
	r.latchLocked()
	for _, p := range [][2]byte{{alarmSeconds, RegSeconds}, {alarmMinutes, RegMinutes}, {alarmHours, RegHours}} {
		a := r.cmos[p[0]]
		if a&0xc0 != 0xc0 && a != r.cmos[p[1]] {
			return false
		}
	}
	return true
}

func (r *RTC) periodicTick() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.perTimer == nil || r.closed {
		return
	}
	r.flags |= regCPF
	r.updateIRQLocked()
	r.perTimer.Reset(r.period)
}

package timer

import (
	"sync"
	"time"

	"gemu/hw/bus"
)

// PIT ports and rate.
const (
	PITPort     = 0x40 // 4 ports: counters 0-2, mode/command
	SpeakerPort = 0x61
	PITHz       = 1193182
)

// MinPeriod is the shortest interval between timer callbacks a guest can program
// (PIT, local APIC and HPET periodic timers): shorter periods coalesce their
// interrupts, as KVM limits its in-kernel timers (min_timer_period_us = 200).
const MinPeriod = 200 * time.Microsecond

// maxCatchUp is how far behind the clock a late PIT callback may replay missed
// output transitions (lost ticks beyond it are dropped, as after a host stall).
const maxCatchUp = 100 * time.Millisecond

const (
	rwLSB = 1 + iota
	rwMSB
	rwWord0
	rwWord1
)

type pitChannel struct {
	count      uint32 // reload value, 1..0x10000 (binary)
	loadTime   time.Duration
	mode       uint8 // 0-5 (6 and 7 run as 2 and 3)
	ctrlMode   uint8 // the mode bits as written, for the read-back status
	bcd        bool
	gate       bool
	rwMode     uint8
	readState  uint8
	writeState uint8
	writeLatch uint8

	statusLatched bool
	status        uint8
	countLatched  uint8 // rw state of the latched count, 0 if none
	latched       uint16
}

// PIT is the 8254 programmable interval timer (channels 0-2 at ports 0x40-0x43) with
// the PC's port 0x61 (channel 2's gate and output, the speaker data bit). Channel 0's
// output drives out (ISA IRQ 0, through the HPET's PITInput on QEMU's pc). Counting,
// latches and read-back follow QEMU's hw/timer/i8254*.c (compared in
// qemu_pit_test.go); OUT follows the data sheet (see getOut); BCD counting is
// implemented (QEMU ignores it). Counters are computed from the clock when read; a
// callback is armed only for channel 0's next output transition, and periods below
// MinPeriod coalesce.
type PIT struct {
	clk Clock

	mu      sync.Mutex
	ch      [3]pitChannel
	out     bus.IRQ
	gen     uint64
	stop    Stopper
	edges   uint64 // periods of channel 0 already pulsed in the coalescing mode
	speaker bool   // port 0x61 bit 1
	refresh uint8
}

// NewPIT returns a PIT whose channel 0 output drives out.
func NewPIT(clk Clock, out bus.IRQ) *PIT {
	if out == nil {
		out = bus.NoIRQ
	}
	p := &PIT{clk: clk, out: out}
	p.Reset()
	return p
}

// SetOutput changes where channel 0's output goes (the HPET's legacy replacement
// takes it).
func (p *PIT) SetOutput(out bus.IRQ) {
	p.mu.Lock()
	p.out = out
	p.mu.Unlock()
}

// Reset puts every channel in mode 3 with count 0x10000 (QEMU's pit_reset_common);
// gates are high except channel 2's (port 0x61 bit 0).
func (p *PIT) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.speaker = false
	for i := range p.ch {
		p.ch[i] = pitChannel{mode: 3, ctrlMode: 3, gate: i != 2}
		p.loadLocked(i, 0)
	}
}

func ticksSince(now, t time.Duration) uint64 {
	d := now - t
	if d < 0 {
		return 0
	}
	// d * PITHz / 1e9, exact for intervals up to decades.
	s, ns := uint64(d/time.Second), uint64(d%time.Second)
	return s*PITHz + ns*PITHz/1e9
}

func ticksToTime(ticks uint64) time.Duration {
	s, r := ticks/PITHz, ticks%PITHz
	return time.Duration(s)*time.Second + time.Duration((r*1e9+PITHz-1)/PITHz)
}

func (c *pitChannel) getCount(now time.Duration) uint32 {
	d := ticksSince(now, c.loadTime)
	switch c.mode {
	case 0, 1, 4, 5:
		return uint32((uint64(c.count) - d) & 0xffff)
	case 3:
		return c.count - uint32((2*d)%uint64(c.count))
	default:
		return c.count - uint32(d%uint64(c.count))
	}
}

// getOut returns the channel's OUT level as the 8254 data sheet draws it (QEMU's
// model differs: it inverts modes 1, 2, 4 and 5 and relies on rounding to see mode
// 2's pulse): mode 0 low until terminal count; mode 1 high at terminal count; mode 2
// low for the tick before each reload; mode 3 high for the first half of the period;
// modes 4 and 5 low for the tick at terminal count.
func (c *pitChannel) getOut(now time.Duration) bool {
	d := ticksSince(now, c.loadTime)
	n := uint64(c.count)
	switch c.mode {
	case 0, 1:
		return d >= n
	case 2:
		return n == 1 || d%n != n-1
	case 3:
		return d%n < (n+1)>>1
	default: // 4, 5
		return d != n
	}
}

// nextTransition returns the clock time of the output's next change after now, or -1.
func (c *pitChannel) nextTransition(now time.Duration) time.Duration {
	d := ticksSince(now, c.loadTime)
	n := uint64(c.count)
	var next uint64
	switch c.mode {
	case 0, 1:
		if d >= n {
			return -1
		}
		next = n
	case 2:
		if n == 1 {
			return -1
		}
		base := d / n * n
		if d-base < n-1 {
			next = base + n - 1
		} else {
			next = base + n
		}
	case 3:
		base := d / n * n
		half := (n + 1) >> 1
		if d-base < half {
			next = base + half
		} else {
			next = base + n
		}
	default:
		switch {
		case d < n:
			next = n
		case d == n:
			next = n + 1
		default:
			return -1
		}
	}
	// ticksToTime rounds up, so the tick count at the returned time is exactly next.
	return c.loadTime + ticksToTime(next)
}

func bcdToBin(v uint32) uint32 {
	r, m := uint32(0), uint32(1)
	for i := 0; i < 4; i++ {
		d := v & 0xf
		if d > 9 {
			d = 9
		}
		r += d * m
		m *= 10
		v >>= 4
	}
	return r
}

func binToBCD(v uint32) uint16 {
	var r uint16
	for i := 0; i < 4; i++ {
		r |= uint16(v%10) << (4 * i)
		v /= 10
	}
	return r
}

func (p *PIT) loadLocked(i int, v uint32) {
	c := &p.ch[i]
	if c.bcd {
		v = bcdToBin(v)
		if v == 0 {
			v = 10000
		}
	} else if v == 0 {
		v = 0x10000
	}
	c.count = v
	c.loadTime = p.clk.Now()
	if i == 0 {
		p.edges = 0
		p.updateIRQLocked(c.loadTime)
	}
}

// updateIRQLocked sets channel 0's output level for now and arms the callback for its
// next transition (QEMU's pit_irq_timer_update).
func (p *PIT) updateIRQLocked(now time.Duration) {
	p.gen++
	if p.stop != nil {
		p.stop.Stop()
		p.stop = nil
	}
	c := &p.ch[0]
	if (c.mode == 2 || c.mode == 3) && ticksToTime(uint64(c.count)) < MinPeriod {
		p.fastLocked()
		return
	}
	p.out.Set(c.getOut(now))
	next := c.nextTransition(now)
	if next < 0 {
		return
	}
	g := p.gen
	// The delay is from the clock's real now, not from the (possibly late) time this
	// transition was due: relative delays would add every callback's latency to the
	// period (measured: 68 edges instead of 205 in 205 ms at 1 kHz).
	p.stop = p.clk.AfterFunc(next-p.clk.Now(), func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.gen != g {
			return
		}
		p.stop = nil
		// Evaluate the output at the transition's own time, so a late callback still
		// produces every edge (catching up one transition per callback), unless the
		// host stalled so long that replaying them would be a storm.
		at := next
		if now := p.clk.Now(); now-next > maxCatchUp {
			at = now
		}
		p.updateIRQLocked(at)
	})
}

// fastLocked drives channel 0's output for a period below MinPeriod: instead of a
// callback per transition (a guest-chosen storm: count 2 is 600k edges a second), one
// callback every MinPeriod pulses IRQ0 once if any rising edge (the end of a period,
// in modes 2 and 3) fell since the last, coalescing them as an unserviced request
// would. KVM's in-kernel PIT limits the period the same way (min_timer_period_us).
func (p *PIT) fastLocked() {
	c := &p.ch[0]
	now := p.clk.Now()
	if k := ticksSince(now, c.loadTime) / uint64(c.count); k > p.edges {
		p.edges = k
		p.out.Set(false)
		p.out.Set(true)
	}
	p.out.Set(c.getOut(now))
	g := p.gen
	p.stop = p.clk.AfterFunc(MinPeriod, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.gen == g {
			p.stop = nil
			p.updateIRQLocked(p.clk.Now())
		}
	})
}

func (c *pitChannel) counterValue(now time.Duration) uint16 {
	v := c.getCount(now)
	if c.bcd {
		return binToBCD(v % 10000)
	}
	return uint16(v)
}

func (p *PIT) latchLocked(c *pitChannel, now time.Duration) {
	if c.countLatched == 0 {
		c.latched = c.counterValue(now)
		c.countLatched = c.rwMode
	}
}

func (p *PIT) setGateLocked(i int, gate bool) {
	c := &p.ch[i]
	now := p.clk.Now()
	switch c.mode {
	case 1, 5, 2, 3:
		if gate && !c.gate { // rising edge restarts the count
			c.loadTime = now
			if i == 0 {
				p.edges = 0
				p.updateIRQLocked(now)
			}
		}
	}
	c.gate = gate
}

// Read implements bus.Device for ports 0x40-0x43.
func (p *PIT) Read(_ bus.Access, off uint64, data []byte) {
	clear(data)
	if len(data) != 1 || off > 3 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if off == 3 {
		return // the control word register is write-only
	}
	c := &p.ch[off]
	now := p.clk.Now()
	var r uint8
	switch {
	case c.statusLatched:
		c.statusLatched = false
		r = c.status
	case c.countLatched != 0:
		switch c.countLatched {
		case rwLSB:
			r, c.countLatched = uint8(c.latched), 0
		case rwMSB:
			r, c.countLatched = uint8(c.latched>>8), 0
		default:
			r, c.countLatched = uint8(c.latched), rwMSB
		}
	default:
		v := c.counterValue(now)
		switch c.readState {
		case rwLSB:
			r = uint8(v)
		case rwMSB:
			r = uint8(v >> 8)
		case rwWord0:
			r, c.readState = uint8(v), rwWord1
		default:
			r, c.readState = uint8(v>>8), rwWord0
		}
	}
	data[0] = r
}

// Write implements bus.Device for ports 0x40-0x43.
func (p *PIT) Write(_ bus.Access, off uint64, data []byte) {
	if len(data) != 1 || off > 3 {
		return
	}
	v := data[0]
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clk.Now()
	if off == 3 {
		sel := v >> 6
		if sel == 3 { // read-back
			for i := 0; i < 3; i++ {
				if v&(2<<i) == 0 {
					continue
				}
				c := &p.ch[i]
				if v&0x20 == 0 {
					p.latchLocked(c, now)
				}
				if v&0x10 == 0 && !c.statusLatched {
					var out uint8
					if c.getOut(now) {
						out = 0x80
					}
					var b uint8
					if c.bcd {
						b = 1
					}
					c.status = out | c.rwMode<<4 | c.ctrlMode<<1 | b
					c.statusLatched = true
				}
			}
			return
		}
		c := &p.ch[sel]
		access := (v >> 4) & 3
		if access == 0 {
			p.latchLocked(c, now)
			return
		}
		c.rwMode, c.readState, c.writeState = access, access, access
		c.mode = (v >> 1) & 7
		c.ctrlMode = c.mode
		if c.mode >= 6 {
			c.mode -= 4 // 6 and 7 are aliases of modes 2 and 3
		}
		c.bcd = v&1 != 0
		return
	}
	c := &p.ch[off]
	switch c.writeState {
	case rwLSB:
		p.loadLocked(int(off), uint32(v))
	case rwMSB:
		p.loadLocked(int(off), uint32(v)<<8)
	case rwWord0:
		c.writeLatch, c.writeState = v, rwWord1
	default:
		p.loadLocked(int(off), uint32(c.writeLatch)|uint32(v)<<8)
		c.writeState = rwWord0
	}
}

// Speaker returns the device for port 0x61 (size 1): bit 0 channel 2's gate, bit 1
// the speaker data enable, bit 4 the refresh toggle (flips on every read), bit 5
// channel 2's output.
func (p *PIT) Speaker() bus.Device { return speaker{p} }

type speaker struct{ p *PIT }

func (s speaker) Read(_ bus.Access, off uint64, data []byte) {
	clear(data)
	if len(data) != 1 || off != 0 {
		return
	}
	p := s.p
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refresh ^= 1 << 4
	var v uint8
	if p.ch[2].gate {
		v |= 1
	}
	if p.speaker {
		v |= 2
	}
	if p.ch[2].getOut(p.clk.Now()) {
		v |= 1 << 5
	}
	data[0] = v | p.refresh
}

func (s speaker) Write(_ bus.Access, off uint64, data []byte) {
	if len(data) != 1 || off != 0 {
		return
	}
	p := s.p
	p.mu.Lock()
	defer p.mu.Unlock()
	p.speaker = data[0]&2 != 0
	p.setGateLocked(2, data[0]&1 != 0)
}

// Stop disarms the PIT's callback (the machine is being torn down).
func (p *PIT) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen++
	if p.stop != nil {
		p.stop.Stop()
		p.stop = nil
	}
}

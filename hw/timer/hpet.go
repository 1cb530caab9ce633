package timer

import (
	"encoding/binary"
	"sync"
	"time"

	"gemu/hw/bus"
)

// HPET layout and identification (QEMU's pc: 3 timers, 10 ns period, only GSI 2 in
// the timers' interrupt routing capability).
const (
	HPETBase      = 0xfed00000
	HPETSize      = 0x400
	HPETTimers    = 3
	HPETPeriodFS  = 10_000_000 // 10 ns: a 100 MHz counter
	HPETIntCap    = 1 << 2     // GSI 2
	hpetTick      = 10 * time.Nanosecond
	hpetCapLow    = 0x8086a001 | (HPETTimers-1)<<8 // vendor 8086, legacy route capable, 64-bit counter
	hpetCfgEnable = 1 << 0
	hpetCfgLegacy = 1 << 1

	tnLevel    = 1 << 1
	tnIntEn    = 1 << 2
	tnPeriodic = 1 << 3
	tnPerCap   = 1 << 4
	tnSizeCap  = 1 << 5
	tnSetVal   = 1 << 6
	tn32Bit    = 1 << 8
	tnCfgWrite = 0x7f4e // level, enable, periodic, setval, 32-bit, route, FSB enable
)

type hpetTimer struct {
	config uint64
	cmp    uint64
	period uint64
	gen    uint64
	stop   Stopper
	raised bool // level output asserted
}

// HPET is the High Precision Event Timer at 0xfed00000 (a bus.Device of HPETSize
// bytes, 32- and 64-bit accesses). Its outputs go to irq(gsi): in legacy replacement
// mode timer 0 drives ISA IRQ 0 and timer 1 IRQ 8 and the PIT's and RTC's own outputs
// (PITInput, RTCInput) are cut off, as on QEMU's pc; otherwise each timer drives the
// GSI of its route field.
type HPET struct {
	clk Clock
	irq func(gsi int) bus.IRQ

	mu        sync.Mutex
	config    uint64
	isr       uint64
	counter   uint64        // main counter while halted, value at enabledAt while running
	enabledAt time.Duration // clock time the counter started running
	t         [HPETTimers]hpetTimer
	pitLevel  bool
	rtcLevel  bool
}

// NewHPET returns an HPET whose interrupt outputs are irq(gsi).
func NewHPET(clk Clock, irq func(gsi int) bus.IRQ) *HPET {
	h := &HPET{clk: clk, irq: irq}
	h.Reset()
	return h
}

// Reset halts the counter and returns every timer to its power-on configuration.
func (h *HPET) Reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.config, h.isr, h.counter = 0, 0, 0
	for i := range h.t {
		t := &h.t[i]
		h.delTimerLocked(t)
		*t = hpetTimer{config: tnPerCap | tnSizeCap | uint64(HPETIntCap)<<32, cmp: ^uint64(0), gen: t.gen}
	}
}

func (h *HPET) enabledLocked() bool { return h.config&hpetCfgEnable != 0 }
func (h *HPET) legacyLocked() bool  { return h.config&hpetCfgLegacy != 0 }

func (h *HPET) ticksLocked() uint64 {
	if !h.enabledLocked() {
		return h.counter
	}
	return h.counter + uint64((h.clk.Now()-h.enabledAt)/hpetTick)
}

// PITInput is the PIT channel 0 output as it reaches the HPET: forwarded to ISA IRQ 0
// unless legacy replacement routing is on.
func (h *HPET) PITInput() bus.IRQ {
	return bus.IRQFunc(func(l bool) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.pitLevel = l
		if !h.legacyLocked() {
			h.irq(0).Set(l)
		}
	})
}

// RTCInput is the RTC's IRQ 8 as it reaches the HPET (cut off in legacy mode).
func (h *HPET) RTCInput() bus.IRQ {
	return bus.IRQFunc(func(l bool) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.rtcLevel = l
		if !h.legacyLocked() {
			h.irq(8).Set(l)
		}
	})
}

func (h *HPET) routeLocked(n int) int {
	if n <= 1 && h.legacyLocked() {
		if n == 0 {
			return 0
		}
		return 8
	}
	return int(h.t[n].config>>9) & 0x1f
}

// updateIRQLocked is QEMU's update_irq: set raises timer n's interrupt, !set lowers it.
func (h *HPET) updateIRQLocked(n int, set bool) {
	t := &h.t[n]
	line := h.irq(h.routeLocked(n))
	mask := uint64(1) << n
	if !set || t.config&tnIntEn == 0 || !h.enabledLocked() {
		if t.raised || !set {
			line.Set(false)
			t.raised = false
		}
		return
	}
	if t.config&tnLevel != 0 {
		h.isr |= mask
		line.Set(true)
		t.raised = true
		return
	}
	h.isr &^= mask
	line.Set(true)
	line.Set(false)
}

func (h *HPET) delTimerLocked(t *hpetTimer) {
	t.gen++
	if t.stop != nil {
		t.stop.Stop()
		t.stop = nil
	}
}

// diff is the ticks from cur to the comparator, 0 if it is not ahead (QEMU's
// hpet_calculate_diff).
func (t *hpetTimer) diff(cur uint64) uint64 {
	if t.config&tn32Bit != 0 {
		d := uint32(t.cmp) - uint32(cur)
		if int32(d) > 0 {
			return uint64(d)
		}
		return 0
	}
	d := t.cmp - cur
	if int64(d) > 0 {
		return d
	}
	return 0
}

func (h *HPET) setTimerLocked(n int) {
	t := &h.t[n]
	h.delTimerLocked(t)
	delay := time.Duration(t.diff(h.ticksLocked())) * hpetTick
	if t.config&tnPeriodic != 0 && t.period != 0 && delay < MinPeriod && time.Duration(t.period)*hpetTick < MinPeriod {
		delay = MinPeriod // coalesce a guest's too-short period (see MinPeriod)
	}
	g := t.gen
	t.stop = h.clk.AfterFunc(delay, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if t.gen == g {
			t.stop = nil
			h.fireLocked(n)
		}
	})
}

func (h *HPET) fireLocked(n int) {
	t := &h.t[n]
	cur := h.ticksLocked()
	if t.config&tnPeriodic != 0 && t.period != 0 {
		// Advance the comparator past the counter by whole periods (QEMU loops; a
		// guest's period of 1 tick would make that loop as long as the time elapsed).
		if t.config&tn32Bit != 0 {
			if d := uint32(cur) - uint32(t.cmp); int32(d) >= 0 {
				t.cmp = uint64(uint32(t.cmp) + (d/uint32(t.period)+1)*uint32(t.period))
			}
		} else if d := cur - t.cmp; int64(d) >= 0 {
			t.cmp += (d/t.period + 1) * t.period
		}
		h.setTimerLocked(n)
	}
	h.updateIRQLocked(n, true)
}

func (h *HPET) readLocked(off uint64) uint64 {
	switch {
	case off == 0x000:
		return hpetCapLow | uint64(HPETPeriodFS)<<32
	case off == 0x010:
		return h.config
	case off == 0x020:
		return h.isr
	case off == 0x0f0:
		return h.ticksLocked()
	case off >= 0x100 && off < 0x100+0x20*HPETTimers:
		t := &h.t[(off-0x100)/0x20]
		switch off & 0x1f {
		case 0x00:
			return t.config
		case 0x08:
			return t.cmp
		}
	}
	return 0
}

func (h *HPET) writeLocked(off, v uint64) {
	switch {
	case off == 0x010:
		old := h.config
		h.config = v & (hpetCfgEnable | hpetCfgLegacy)
		now := h.clk.Now()
		switch {
		case old&hpetCfgEnable == 0 && v&hpetCfgEnable != 0:
			h.enabledAt = now
			for i := range h.t {
				if h.t[i].cmp != ^uint64(0) {
					h.setTimerLocked(i)
				}
			}
		case old&hpetCfgEnable != 0 && v&hpetCfgEnable == 0:
			h.counter += uint64((now - h.enabledAt) / hpetTick)
			for i := range h.t {
				h.delTimerLocked(&h.t[i])
			}
		}
		switch {
		case old&hpetCfgLegacy == 0 && v&hpetCfgLegacy != 0:
			h.irq(0).Set(false)
			h.irq(8).Set(false)
		case old&hpetCfgLegacy != 0 && v&hpetCfgLegacy == 0:
			h.irq(0).Set(h.pitLevel)
			h.irq(8).Set(h.rtcLevel)
		}
	case off == 0x020:
		for i := range h.t {
			if v&h.isr&(1<<i) != 0 {
				h.isr &^= 1 << i
				h.updateIRQLocked(i, false)
			}
		}
	case off == 0x0f0:
		if !h.enabledLocked() {
			h.counter = v
		}
	case off >= 0x100 && off < 0x100+0x20*HPETTimers:
		n := int((off - 0x100) / 0x20)
		t := &h.t[n]
		switch off & 0x1f {
		case 0x00:
			old := t.config
			t.config = old&^tnCfgWrite | v&tnCfgWrite
			if old&tnLevel != 0 && t.config&tnLevel == 0 {
				h.isr &^= 1 << n
			}
			if t.config&tn32Bit != 0 {
				t.cmp, t.period = uint64(uint32(t.cmp)), uint64(uint32(t.period))
			}
			if old&tnIntEn != 0 && t.config&tnIntEn == 0 {
				h.updateIRQLocked(n, false)
			}
			t.config &^= tnSetVal // SETVAL applies to the next comparator write only
			if v&tnSetVal != 0 {
				t.config |= tnSetVal
			}
			if h.enabledLocked() && t.cmp != ^uint64(0) {
				h.setTimerLocked(n)
			}
		case 0x08:
			h.writeCmpLocked(n, v, v)
		}
	}
}

// writeCmpLocked writes timer n's comparator: vc is the new comparator value and vp
// the new period (they differ for a 32-bit write to one half, which merges into each
// register's other half).
func (h *HPET) writeCmpLocked(n int, vc, vp uint64) {
	t := &h.t[n]
	if t.config&tn32Bit != 0 {
		vc, vp = uint64(uint32(vc)), uint64(uint32(vp))
	}
	periodic := t.config&tnPeriodic != 0
	if !periodic || t.config&tnSetVal != 0 {
		t.cmp = vc
	}
	if periodic {
		if t.config&tn32Bit != 0 {
			t.period = vp & 0x7fffffff
		} else {
			t.period = vp & (1<<63 - 1)
		}
	}
	t.config &^= tnSetVal
	if h.enabledLocked() {
		h.setTimerLocked(n)
	}
}

// regBase returns the 8-byte register holding off.
func regBase(off uint64) uint64 { return off &^ 7 }

// Read implements bus.Device (4- and 8-byte accesses; a 4-byte access at +4 reads the
// high half).
func (h *HPET) Read(_ bus.Access, off uint64, data []byte) {
	clear(data)
	if (len(data) != 4 && len(data) != 8) || off%uint64(len(data)) != 0 {
		return
	}
	h.mu.Lock()
	v := h.readLocked(regBase(off))
	h.mu.Unlock()
	if len(data) == 8 {
		binary.LittleEndian.PutUint64(data, v)
		return
	}
	binary.LittleEndian.PutUint32(data, uint32(v>>(8*(off&4))))
}

// Write implements bus.Device.
func (h *HPET) Write(_ bus.Access, off uint64, data []byte) {
	if (len(data) != 4 && len(data) != 8) || off%uint64(len(data)) != 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r := regBase(off)
	var v uint64
	if len(data) == 8 {
		v = binary.LittleEndian.Uint64(data)
	} else {
		old := h.readLocked(r)
		if r == 0x0f0 && h.enabledLocked() {
			return
		}
		if r == 0x020 {
			old = 0 // write-1-to-clear: the other half must not clear anything
		}
		w := uint64(binary.LittleEndian.Uint32(data))
		merge := func(old uint64) uint64 {
			if off&4 != 0 {
				return old&0xffffffff | w<<32
			}
			return old&^0xffffffff | w
		}
		if r >= 0x100 && r < 0x100+0x20*HPETTimers && r&0x1f == 0x08 {
			t := &h.t[(r-0x100)/0x20]
			h.writeCmpLocked(int((r-0x100)/0x20), merge(t.cmp), merge(t.period))
			return
		}
		v = merge(old)
	}
	h.writeLocked(r, v)
}

// Stop disarms every timer callback (machine teardown).
func (h *HPET) Stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range h.t {
		h.delTimerLocked(&h.t[i])
	}
}

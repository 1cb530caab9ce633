package rtc

import (
	"gemu/hw/bus"
	"sync"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func rd(r *RTC, i byte) byte {
	r.Write(bus.Host, 0, []byte{i})
	var b [1]byte
	r.Read(bus.Host, 1, b[:])
	return b[0]
}

func wr(r *RTC, i, v byte) {
	r.Write(bus.Host, 0, []byte{i | 0x80}) // with the NMI mask bit, as Linux's CMOS_READ does
	r.Write(bus.Host, 1, []byte{v})
}

func TestBCDAndBinary(t *testing.T) {
	c := &clock{time.Date(2026, 11, 22, 21, 7, 59, 0, time.UTC)} // a Sunday
	r := newRTC(c.now)
	want := map[byte]byte{RegSeconds: 0x59, RegMinutes: 0x07, RegHours: 0x21, RegDay: 0x22,
		RegMonth: 0x11, RegYear: 0x26, RegCentury: 0x20, RegWeekday: 0x01}
	for reg, v := range want {
		if got := rd(r, reg); got != v {
			t.Errorf("BCD reg %#x = %#x, want %#x", reg, got, v)
		}
	}
	if rd(r, RegB) != 0x02 || rd(r, RegD)&0x80 == 0 || rd(r, RegA)&0x7f != 0x26 {
		t.Errorf("status registers A %#x B %#x D %#x", rd(r, RegA), rd(r, RegB), rd(r, RegD))
	}
	// Binary mode, 12-hour clock: 21h is 9 PM.
	wr(r, RegB, regBDM)
	if got := rd(r, RegHours); got != 0x80|9 {
		t.Errorf("12h binary hour %#x, want 0x89", got)
	}
	if rd(r, RegSeconds) != 59 || rd(r, RegYear) != 26 || rd(r, RegCentury) != 20 {
		t.Error("binary mode fields")
	}
	c.t = c.t.Add(time.Second)
	if rd(r, RegSeconds) != 0 || rd(r, RegMinutes) != 8 {
		t.Error("clock does not follow the host")
	}
}

func TestUIPAndUpdateFlag(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 999_900_000, time.UTC)}
	r := newRTC(c.now)
	if rd(r, RegA)&regAUIP == 0 {
		t.Error("UIP clear 100 µs before the update")
	}
	c.t = c.t.Add(200 * time.Microsecond)
	if rd(r, RegA)&regAUIP != 0 {
		t.Error("UIP set right after the update")
	}
	if rd(r, RegC)&regCUF == 0 {
		t.Error("no update-ended flag after a second boundary")
	}
	if rd(r, RegC) != 0 {
		t.Error("register C not cleared by reading")
	}
}

func TestGuestSetsClock(t *testing.T) {
	c := &clock{time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	r := newRTC(c.now)
	// hwclock --systohc: SET, write fields, clear SET.
	wr(r, RegB, regBSet|regB24h)
	wr(r, RegYear, 0x99)
	wr(r, RegCentury, 0x19)
	wr(r, RegMonth, 0x12)
	wr(r, RegDay, 0x31)
	wr(r, RegHours, 0x23)
	wr(r, RegMinutes, 0x59)
	wr(r, RegSeconds, 0x58)
	c.t = c.t.Add(5 * time.Second) // frozen while SET
	if rd(r, RegSeconds) != 0x58 {
		t.Error("clock ran while SET")
	}
	wr(r, RegB, regB24h)
	c.t = c.t.Add(3 * time.Second)
	if rd(r, RegYear) != 0x00 || rd(r, RegCentury) != 0x20 || rd(r, RegMonth) != 0x01 || rd(r, RegSeconds) != 0x01 {
		t.Errorf("after 3 s from 1999-12-31 23:59:58: %x-%x-%x :%x", rd(r, RegCentury), rd(r, RegYear), rd(r, RegMonth), rd(r, RegSeconds))
	}
	// NVRAM bytes hold their values; index 0x80 aliases 0x00 with NMI masked.
	wr(r, 0x40, 0xab)
	if rd(r, 0x40) != 0xab {
		t.Error("NVRAM byte lost")
	}
	var b [1]byte
	r.Read(bus.Host, 0, b[:])
	if b[0] != 0xff {
		t.Errorf("index port reads %#x", b[0])
	}
}

type irqLine struct {
	mu    sync.Mutex
	level bool
	edges int
}

func (l *irqLine) Set(v bool) {
	l.mu.Lock()
	if v && !l.level {
		l.edges++
	}
	l.level = v
	l.mu.Unlock()
}

func (l *irqLine) get() (bool, int) { l.mu.Lock(); defer l.mu.Unlock(); return l.level, l.edges }

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 300; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestInterrupts(t *testing.T) {
	irq := &irqLine{}
	r := New(irq)
	defer r.Close()
	if lvl, _ := irq.get(); lvl || rd(r, RegC) != 0 && rd(r, RegC)&regCIRQF != 0 {
		t.Fatal("interrupt pending at reset")
	}
	// Periodic at 1024 Hz (rate 6): PF and IRQF set, IRQ 8 raised, cleared by reading C.
	wr(r, RegA, 0x26)
	wr(r, RegB, regB24h|regBPIE)
	eventually(t, "periodic interrupt", func() bool { l, _ := irq.get(); return l })
	if c := rd(r, RegC); c&(regCIRQF|regCPF) != regCIRQF|regCPF {
		t.Fatalf("register C %#x after a periodic tick", c)
	}
	eventually(t, "next periodic interrupt", func() bool { _, e := irq.get(); return e >= 2 })
	wr(r, RegB, regB24h)
	rd(r, RegC)
	if l, _ := irq.get(); l {
		t.Fatal("IRQ still up after disabling and reading C")
	}
	// Update-ended interrupt at the next second boundary, with an alarm that matches
	// every second (all don't-care).
	wr(r, alarmSeconds, 0xff)
	wr(r, alarmMinutes, 0xff)
	wr(r, alarmHours, 0xff)
	wr(r, RegB, regB24h|regBUIE|regBAIE)
	eventually(t, "update interrupt", func() bool { l, _ := irq.get(); return l })
	if c := rd(r, RegC); c&(regCIRQF|regCUF|regCAF) != regCIRQF|regCUF|regCAF {
		t.Fatalf("register C %#x after an update with a don't-care alarm", c)
	}
	r.Close()
	r.mu.Lock()
	stopped := r.secTimer == nil && r.perTimer == nil
	r.mu.Unlock()
	if !stopped {
		t.Fatal("timers still armed after Close")
	}
}

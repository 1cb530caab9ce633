package gpio

import (
	"sync"
	"testing"
	"time"

	"gemu/hw/bus"
)

type line struct {
	mu     sync.Mutex
	level  bool
	events []bool
}

func (l *line) Set(v bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if v != l.level {
		l.events = append(l.events, v)
	}
	l.level = v
}

func (l *line) get() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.level }

func rd(g *PL061, off uint64) uint8 {
	var b [4]byte
	g.Read(bus.CPUAccess(0), off, b[:])
	return b[0]
}

func wr(g *PL061, off uint64, v uint8) { g.Write(bus.CPUAccess(0), off, []byte{v, 0, 0, 0}) }

func TestPrimeCellID(t *testing.T) {
	g := NewPL061(nil)
	var pid, cid uint32
	for i := range 4 {
		pid |= uint32(rd(g, 0xfe0+uint64(4*i))) << (8 * i)
		cid |= uint32(rd(g, 0xff0+uint64(4*i))) << (8 * i)
	}
	// Linux's gpio-pl061 matches id 0x00041061 under mask 0x000fffff.
	if pid&0x000fffff != 0x00041061 || cid != 0xb105f00d {
		t.Fatalf("periphid %#x cellid %#x", pid, cid)
	}
}

func TestMaskedData(t *testing.T) {
	g := NewPL061(nil)
	wr(g, RegDir, 0x0f)
	wr(g, RegData+0xff<<2, 0xff) // every line: only outputs take it
	if v := rd(g, RegData+0xff<<2); v != 0x0f {
		t.Fatalf("data %#x", v)
	}
	wr(g, RegData+0x02<<2, 0x00) // clear line 1 only
	if v := rd(g, RegData+0xff<<2); v != 0x0d {
		t.Fatalf("masked write: %#x", v)
	}
	if v := rd(g, RegData+0x0c<<2); v != 0x0c {
		t.Fatalf("masked read: %#x", v)
	}
	g.SetInput(7, true)
	if v := rd(g, RegData+0x80<<2); v != 0x80 {
		t.Fatalf("input line 7: %#x", v)
	}
}

func TestOutputDrivesLine(t *testing.T) {
	g := NewPL061(nil)
	l := &line{}
	g.ConnectOutput(2, l)
	wr(g, RegDir, 1<<2)
	wr(g, RegData+(1<<2)<<2, 1<<2)
	if !l.get() {
		t.Fatal("output line 2 not driven high")
	}
	wr(g, RegData+(1<<2)<<2, 0)
	if l.get() {
		t.Fatal("output line 2 not driven low")
	}
}

// TestBothEdges is how Linux's gpio-keys sets up the power button line (IRQ_TYPE_EDGE_BOTH).
func TestBothEdges(t *testing.T) {
	irq := &line{}
	g := NewPL061(irq)
	wr(g, RegIBE, 1<<3)
	wr(g, RegIE, 1<<3)
	g.SetInput(3, true)
	if !irq.get() || rd(g, RegMIS) != 1<<3 {
		t.Fatal("rising edge not signalled")
	}
	wr(g, RegIC, 1<<3)
	if irq.get() {
		t.Fatal("IC did not clear")
	}
	g.SetInput(3, false)
	if !irq.get() {
		t.Fatal("falling edge not signalled")
	}
	wr(g, RegIC, 1<<3)
	g.SetInput(5, true) // not enabled
	if irq.get() || rd(g, RegRIS) != 0 {
		t.Fatalf("edge on a line without IBE/IEV: ris %#x", rd(g, RegRIS))
	}
}

func TestSingleEdgeAndLevel(t *testing.T) {
	irq := &line{}
	g := NewPL061(irq)
	wr(g, RegIEV, 1<<0) // line 0: rising edge; line 1: falling edge
	wr(g, RegIE, 0x03)
	g.SetInput(1, true)
	if irq.get() {
		t.Fatal("rising edge on a falling-edge line")
	}
	g.SetInput(0, true)
	if !irq.get() {
		t.Fatal("rising edge not signalled")
	}
	wr(g, RegIC, 0xff)
	g.SetInput(1, false)
	if rd(g, RegRIS) != 1<<1 {
		t.Fatalf("falling edge: ris %#x", rd(g, RegRIS))
	}
	wr(g, RegIC, 0xff)
	// Level, active low, on line 4: pending while low, IC does not clear it.
	wr(g, RegIS, 1<<4)
	wr(g, RegIE, 1<<4)
	if !irq.get() {
		t.Fatal("active-low level line low: no interrupt")
	}
	wr(g, RegIC, 1<<4)
	if !irq.get() {
		t.Fatal("IC cleared a level interrupt that is still active")
	}
	g.SetInput(4, true)
	if irq.get() {
		t.Fatal("level interrupt did not follow the line")
	}
}

func TestKeyPulse(t *testing.T) {
	irq := &line{}
	g := NewPL061(irq)
	wr(g, RegIBE, 1<<3)
	wr(g, RegIE, 1<<3)
	k := NewKey(g.Input(3))
	k.Press()
	if rd(g, RegData+(1<<3)<<2) == 0 || !irq.get() {
		t.Fatal("press did not raise line 3")
	}
	wr(g, RegIC, 1<<3)
	start := time.Now()
	for rd(g, RegData+(1<<3)<<2) != 0 {
		if time.Since(start) > 2*time.Second {
			t.Fatal("key never released")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d := time.Since(start); d < KeyLatency/2 {
		t.Fatalf("released after %v", d)
	}
	if !irq.get() {
		t.Fatal("release edge not signalled")
	}
}

func TestState(t *testing.T) {
	g := NewPL061(nil)
	wr(g, RegDir, 0x81)
	wr(g, RegIE, 0x10)
	wr(g, RegData+0xff<<2, 0x01)
	s, _ := g.SaveState()
	h := NewPL061(nil)
	if err := h.LoadState(s); err != nil {
		t.Fatal(err)
	}
	if rd(h, RegDir) != 0x81 || rd(h, RegIE) != 0x10 || rd(h, RegData+0xff<<2) != 0x01 {
		t.Fatal("state did not round-trip")
	}
	if h.LoadState(bus.State{Name: "pl061", Version: 1}) == nil {
		t.Fatal("short state accepted")
	}
}

func TestOutputsDoNotInterrupt(t *testing.T) {
	irq := &line{}
	g := NewPL061(irq)
	wr(g, RegDir, 1)
	wr(g, RegIBE, 1)
	wr(g, RegIE, 1)
	wr(g, RegData+1<<2, 1)
	if irq.get() || rd(g, RegRIS) != 0 {
		t.Fatal("an output line's own write raised an edge interrupt")
	}
}

package i8259

import (
	"testing"

	"gemu/hw/bus"
	"gemu/hw/intc/apic"
	"gemu/hw/timer"
)

type line struct {
	level bool
	rises int
}

func (l *line) Set(v bool) {
	if v && !l.level {
		l.rises++
	}
	l.level = v
}

type io struct {
	b *bus.Bus
	t *testing.T
}

func (x io) out(port uint64, v uint8) {
	if !x.b.Write(bus.CPUAccess(0), port, []byte{v}) {
		x.t.Fatalf("outb %#x: nothing there", port)
	}
}

func (x io) in(port uint64) uint8 {
	d := []byte{0}
	if !x.b.Read(bus.CPUAccess(0), port, d) {
		x.t.Fatalf("inb %#x: nothing there", port)
	}
	return d[0]
}

// setup programs the pair as Linux's init_8259A does (vectors 0x20/0x28, cascade on
// IRQ2, 8086 mode) with icw4 for the master.
func setup(t *testing.T, icw4 uint8) (*PIC, *line, io) {
	out := &line{}
	p := New(out)
	b := bus.New()
	b.Insert(p.Master(), "pic1", MasterPort, 2)
	b.Insert(p.Slave(), "pic2", SlavePort, 2)
	b.Insert(p.ELCR(), "elcr", ELCRPort, 2)
	x := io{b, t}
	x.out(0x21, 0xff)
	x.out(0xa1, 0xff)
	x.out(0x20, 0x11)
	x.out(0x21, 0x20)
	x.out(0x21, 0x04)
	x.out(0x21, icw4)
	x.out(0xa0, 0x11)
	x.out(0xa1, 0x28)
	x.out(0xa1, 0x02)
	x.out(0xa1, 0x01)
	x.out(0x21, 0x00)
	x.out(0xa1, 0x00)
	return p, out, x
}

func TestEdgeAckEOI(t *testing.T) {
	p, out, x := setup(t, 0x01)
	p.SetIRQ(1, true)
	if !out.level {
		t.Fatal("INTR not raised")
	}
	x.out(0x20, 0x0a) // read IRR
	if x.in(0x20) != 0x02 {
		t.Fatal("IRR")
	}
	if v := p.Acknowledge(); v != 0x21 {
		t.Fatalf("vector %#x", v)
	}
	if out.level {
		t.Fatal("INTR still high after acknowledge")
	}
	x.out(0x20, 0x0b) // read ISR
	if x.in(0x20) != 0x02 || x.in(0x20) != 0x02 {
		t.Fatal("ISR (OCW3 read select is sticky)")
	}
	x.out(0x20, 0x20) // non-specific EOI
	if x.in(0x20) != 0 {
		t.Fatal("EOI did not clear ISR")
	}
	// Still high: no new edge, no new request.
	p.SetIRQ(1, true)
	if out.level {
		t.Fatal("edge input retriggered without a new edge")
	}
	p.SetIRQ(1, false)
	p.SetIRQ(1, true)
	if !out.level || p.Acknowledge() != 0x21 {
		t.Fatal("second edge")
	}
}

func TestMaskAndSpurious(t *testing.T) {
	p, out, x := setup(t, 0x01)
	x.out(0x21, 0x10)
	if x.in(0x21) != 0x10 {
		t.Fatal("IMR readback")
	}
	p.SetIRQ(4, true)
	if out.level {
		t.Fatal("masked IRQ raised INTR")
	}
	if v := p.Acknowledge(); v != 0x27 {
		t.Fatalf("spurious vector %#x, want 0x27", v)
	}
	x.out(0x21, 0)
	if !out.level || p.Acknowledge() != 0x24 {
		t.Fatal("unmasking did not deliver the latched edge")
	}
}

func TestCascade(t *testing.T) {
	p, out, x := setup(t, 0x01)
	p.SetIRQ(10, true)
	if !out.level {
		t.Fatal("slave request did not reach INTR")
	}
	if v := p.Acknowledge(); v != 0x2a {
		t.Fatalf("vector %#x, want 0x2a", v)
	}
	x.out(0xa0, 0x0b)
	x.out(0x20, 0x0b)
	if x.in(0xa0) != 0x04 || x.in(0x20) != 0x04 {
		t.Fatalf("ISR slave %#x master %#x", x.in(0xa0), x.in(0x20))
	}
	// Master IRQ 1 preempts (higher priority than the cascade's IRQ 2).
	p.SetIRQ(1, true)
	if p.Acknowledge() != 0x21 {
		t.Fatal("IRQ1 did not preempt")
	}
	// IRQ 11 on the slave is blocked while master IRQ2 is in service (no SFNM).
	p.SetIRQ(11, true)
	x.out(0x20, 0x61) // specific EOI IRQ1
	if out.level {
		t.Fatal("slave IRQ 11 delivered while cascade in service")
	}
	x.out(0xa0, 0x20)
	x.out(0x20, 0x20)
	if !out.level || p.Acknowledge() != 0x2b {
		t.Fatal("IRQ 11 after EOIs")
	}
}

func TestPriorityAndRotation(t *testing.T) {
	p, _, x := setup(t, 0x01)
	p.SetIRQ(5, true)
	p.SetIRQ(3, true)
	if p.Acknowledge() != 0x23 {
		t.Fatal("IRQ3 first")
	}
	p.SetIRQ(0, true)
	if p.Acknowledge() != 0x20 {
		t.Fatal("IRQ0 preempts IRQ3")
	}
	if p.Acknowledge() != 0x27 {
		t.Fatal("IRQ5 must wait behind IRQ3 (spurious expected)")
	}
	x.out(0x20, 0x20) // EOI IRQ0
	x.out(0x20, 0x20) // EOI IRQ3
	if p.Acknowledge() != 0x25 {
		t.Fatal("IRQ5 after EOIs")
	}
	x.out(0x20, 0x20)
	// Set priority: IRQ3 lowest, so IRQ4 highest.
	x.out(0x20, 0xc3)
	p.SetIRQ(1, true)
	p.SetIRQ(6, true)
	if v := p.Acknowledge(); v != 0x26 {
		t.Fatalf("after priority rotation got %#x, want IRQ6 first", v)
	}
	// Rotate on non-specific EOI: IRQ6 becomes lowest, IRQ7 highest, then 0, 1.
	x.out(0x20, 0xa0)
	if v := p.Acknowledge(); v != 0x21 {
		t.Fatalf("got %#x", v)
	}
}

func TestAutoEOIAndPoll(t *testing.T) {
	p, _, x := setup(t, 0x03)
	p.SetIRQ(3, true)
	if p.Acknowledge() != 0x23 {
		t.Fatal("vector")
	}
	x.out(0x20, 0x0b)
	if x.in(0x20) != 0 {
		t.Fatal("auto-EOI left ISR set")
	}
	p.SetIRQ(6, true)
	x.out(0x20, 0x0c) // poll
	if v := x.in(0x20); v != 0x86 {
		t.Fatalf("poll read %#x, want 0x86", v)
	}
	x.out(0x20, 0x0c)
	if v := x.in(0x20); v != 0 {
		t.Fatalf("poll with nothing pending %#x", v)
	}
}

func TestSpecialMask(t *testing.T) {
	p, _, x := setup(t, 0x01)
	p.SetIRQ(3, true)
	p.Acknowledge()
	p.SetIRQ(5, true)
	if p.Acknowledge() != 0x27 {
		t.Fatal("IRQ5 must be blocked by ISR 3")
	}
	x.out(0x21, 0x08) // mask IRQ3
	x.out(0x20, 0x68) // OCW3: set special mask
	if v := p.Acknowledge(); v != 0x25 {
		t.Fatalf("special mask: got %#x, want 0x25", v)
	}
}

func TestELCRLevel(t *testing.T) {
	p, out, x := setup(t, 0x01)
	x.out(0x4d0, 0xff)
	x.out(0x4d1, 0xff)
	if x.in(0x4d0) != 0xf8 || x.in(0x4d1) != 0xde {
		t.Fatalf("ELCR masks: %#x %#x", x.in(0x4d0), x.in(0x4d1))
	}
	x.out(0x4d0, 0)
	x.out(0x4d1, 0x02) // IRQ9 level
	p.SetIRQ(9, true)
	if p.Acknowledge() != 0x29 {
		t.Fatal("IRQ9")
	}
	x.out(0xa0, 0x20)
	x.out(0x20, 0x20)
	if !out.level {
		t.Fatal("level IRQ9 still high must request again after EOI")
	}
	p.SetIRQ(9, false)
	// The cascade input is edge-triggered: the master keeps its IRQ2 request and the
	// acknowledge finds nothing on the slave: the slave's spurious IRQ 15 (as QEMU and
	// the real part do).
	if v := p.Acknowledge(); v != 0x2f {
		t.Fatalf("after the level dropped: vector %#x, want spurious 0x2f", v)
	}
	x.out(0xa0, 0x0a)
	if x.in(0xa0) != 0 {
		t.Fatal("slave IRR kept the dropped level request")
	}
}

// TestExtINTThroughLAPIC wires INTR to LINT0 of a local APIC, as the PC does, and
// takes the interrupt the way the vCPU would.
func TestExtINTThroughLAPIC(t *testing.T) {
	sys := apic.New(1, timer.NewFake())
	cpu := sys.CPU(0)
	p, _, _ := setup(t, 0x01)
	p.SetOutput(bus.IRQFunc(cpu.SetLINT0))
	cpu.SetExtINT(p)
	cpu.WriteReg(apic.RegSVR, 0x1ff)
	cpu.WriteReg(apic.RegLINT0, 0x700)
	p.SetIRQ(0, true)
	if cpu.HighestPending() != apic.PendingExtINT {
		t.Fatal("ExtINT not pending at the APIC")
	}
	if v := cpu.Acknowledge(); v != 0x20 {
		t.Fatalf("vector %#x", v)
	}
	if cpu.HighestPending() != -1 {
		t.Fatal("still pending after acknowledge")
	}
}

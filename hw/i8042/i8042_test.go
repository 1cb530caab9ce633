package i8042

import (
	"testing"

	"gemu/hw/bus"
)

type line struct{ level bool }

func (l *line) Set(v bool) { l.level = v }

func rd(c *I8042, port uint64) byte {
	var b [1]byte
	c.Read(bus.Host, port, b[:])
	return b[0]
}

func TestSelfTestAndConfig(t *testing.T) {
	irq := &line{}
	c := New(nil, irq)
	if rd(c, 4)&0x01 != 0 {
		t.Fatal("output buffer full at reset")
	}
	c.Write(bus.Host, 4, []byte{0xaa})
	if rd(c, 4)&0x01 == 0 || rd(c, 0) != 0x55 {
		t.Fatal("self-test did not answer 0x55")
	}
	c.Write(bus.Host, 4, []byte{0x20})
	ctr := rd(c, 0)
	if ctr&ctrKbdInt == 0 {
		t.Fatalf("config byte %#x", ctr)
	}
	// Linux writes the configuration back with interrupts off, then probes.
	c.Write(bus.Host, 4, []byte{0x60})
	c.Write(bus.Host, 0, []byte{ctr &^ ctrKbdInt})
	c.Write(bus.Host, 4, []byte{0x20})
	if got := rd(c, 0); got != ctr&^ctrKbdInt {
		t.Fatalf("config byte readback %#x", got)
	}
	// Keyboard identify with interrupts off: data but no IRQ.
	c.Write(bus.Host, 0, []byte{0xf2})
	if irq.level {
		t.Fatal("IRQ1 with keyboard interrupt disabled")
	}
	if a, b, d := rd(c, 0), rd(c, 0), rd(c, 0); a != 0xfa || b != 0xab || d != 0x83 {
		t.Fatalf("identify answered %#x %#x %#x", a, b, d)
	}
	c.Write(bus.Host, 4, []byte{0x60})
	c.Write(bus.Host, 0, []byte{ctr | ctrKbdInt})
	c.Write(bus.Host, 0, []byte{0xff})
	if !irq.level {
		t.Fatal("no IRQ1 for keyboard reset reply")
	}
	if rd(c, 0) != 0xfa || rd(c, 0) != 0xaa || irq.level {
		t.Fatal("keyboard reset reply or IRQ drop wrong")
	}
	// No mouse: writes to the aux device time out.
	c.Write(bus.Host, 4, []byte{0xd4})
	c.Write(bus.Host, 0, []byte{0xf2})
	if rd(c, 4)&stsTimeo == 0 || rd(c, 4)&0x01 != 0 {
		t.Fatal("aux write did not time out")
	}
}

func TestReset(t *testing.T) {
	for _, seq := range [][2][]byte{
		{{0xfe}, nil},    // pulse reset line
		{{0xd1}, {0xfe}}, // output port with bit 0 low
		{{0xf0}, nil},    // pulse all lines
	} {
		n := 0
		c := New(func() { n++ }, nil)
		c.Write(bus.Host, 4, seq[0])
		if seq[1] != nil {
			c.Write(bus.Host, 0, seq[1])
		}
		if n != 1 {
			t.Errorf("sequence %x: %d resets", seq, n)
		}
	}
	n := 0
	c := New(func() { n++ }, nil)
	c.Write(bus.Host, 4, []byte{0xff}) // pulse nothing
	c.Write(bus.Host, 4, []byte{0xd1})
	c.Write(bus.Host, 0, []byte{0x03}) // A20 on, reset high
	if n != 0 {
		t.Fatal("reset without the reset line")
	}
}

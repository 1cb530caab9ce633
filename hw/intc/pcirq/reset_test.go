package pcirq

import (
	"encoding/binary"
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/timer"
)

// TestMachineReset programs every controller and timer, resets the buses as a
// machine reset does (bus.Bus.Reset), and checks power-on values and that no timer
// is left armed.
func TestMachineReset(t *testing.T) {
	clk := timer.NewFake()
	c := New(2, 0, clk)
	mmio, pio := bus.New(), bus.New()
	if err := c.Map(mmio, pio); err != nil {
		t.Fatal(err)
	}
	hpet := timer.NewHPET(clk, func(g int) bus.IRQ { return c.IRQ(uint32(g)) })
	pit := timer.NewPIT(clk, hpet.PITInput())
	pio.Insert(pit, "pit", timer.PITPort, 4)
	pio.Insert(pit.Speaker(), "speaker", timer.SpeakerPort, 1)
	mmio.Insert(hpet, "hpet", timer.HPETBase, timer.HPETSize)
	cpu := bus.CPUAccess(1)
	w32 := func(a uint64, v uint32) { mmio.Write(cpu, a, binary.LittleEndian.AppendUint32(nil, v)) }
	r32 := func(a uint64) uint32 {
		b := make([]byte, 4)
		mmio.Read(cpu, a, b)
		return binary.LittleEndian.Uint32(b)
	}
	outb := func(p uint64, v byte) { pio.Write(cpu, p, []byte{v}) }
	inb := func(p uint64) byte {
		b := []byte{0}
		pio.Read(cpu, p, b)
		return b[0]
	}
	w32(0xfee000f0, 0x1ff)
	w32(0xfee00080, 0x40)
	w32(0xfee00320, 0x200ee)
	w32(0xfee00380, 1000000)
	w32(0xfec00000, 0x14)
	w32(0xfec00010, 0x33)
	outb(0x21, 0x5a)
	outb(0x4d1, 0x02)
	outb(0x61, 0x03)
	w32(0xfed00010, 1)
	w32(0xfed00100, 1<<2|1<<3|1<<6)
	w32(0xfed00108, 1000)
	w32(0xfed00108, 1000)
	clk.Advance(time.Millisecond)

	mmio.Reset()
	pio.Reset()
	for a, want := range map[uint64]uint32{0xfee000f0: 0xff, 0xfee00080: 0, 0xfee00320: 0x10000, 0xfee00380: 0,
		0xfee00020: 1 << 24, 0xfed00010: 0, 0xfed000f0: 0, 0xfed00100: 0x30} {
		if g := r32(a); g != want {
			t.Errorf("after reset %#x = %#x, want %#x", a, g, want)
		}
	}
	w32(0xfec00000, 0x14)
	if g := r32(0xfec00010); g != 0x10000 {
		t.Errorf("IOAPIC pin 2 after reset %#x", g)
	}
	if inb(0x21) != 0 || inb(0x4d1) != 0 || inb(0x61)&3 != 0 {
		t.Errorf("8259 IMR %#x ELCR %#x port 0x61 %#x after reset", inb(0x21), inb(0x4d1), inb(0x61))
	}
	pit.Stop() // the PIT's power-on mode 3 runs; everything else must be idle
	if n := clk.Pending(); n != 0 {
		t.Errorf("%d timer callbacks armed after reset", n)
	}
}

package pcirq

import (
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/timer"
)

// FuzzChipset feeds guest-controlled accesses (any offset, size and value) to every
// controller of the chipset, interleaved with interrupt lines, MSIs, timer progress
// and the vCPU's acknowledge cycle: nothing may panic or hang.
func FuzzChipset(f *testing.F) {
	f.Add([]byte{0, 0x20, 0x11, 1, 0x21, 0x20, 2, 0xf0, 0xff, 3, 0x10, 0x30, 4, 2, 1, 5, 0, 0})
	f.Add([]byte{3, 0x00, 0x10, 3, 0x10, 0x00, 6, 1, 0, 2, 0x20, 0x10, 2, 0x80, 0xff, 7, 0, 0})
	f.Fuzz(func(t *testing.T, prog []byte) {
		clk := timer.NewFake()
		c := New(2, 0, clk)
		mmio, pio := bus.New(), bus.New()
		if err := c.Map(mmio, pio); err != nil {
			t.Fatal(err)
		}
		pit := timer.NewPIT(clk, c.IRQ(0))
		pio.Insert(pit, "pit", timer.PITPort, 4)
		pio.Insert(pit.Speaker(), "spk", timer.SpeakerPort, 1)
		hpet := timer.NewHPET(clk, func(g int) bus.IRQ { return c.IRQ(uint32(g)) })
		mmio.Insert(hpet, "hpet", timer.HPETBase, timer.HPETSize)
		sizes := []int{1, 2, 4, 8}
		for i := 0; i+2 < len(prog); i += 3 {
			op, a, v := prog[i], uint64(prog[i+1]), prog[i+2]
			cpu := bus.CPUAccess(int(op>>4) % 3) // includes an out-of-range vCPU index
			data := make([]byte, sizes[int(v)%4])
			for j := range data {
				data[j] = v ^ byte(j*0x5b)
			}
			switch op % 10 {
			case 0:
				pio.Write(cpu, []uint64{0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x40, 0x43, 0x61}[a%9], data[:1])
			case 1:
				pio.Read(cpu, []uint64{0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x40, 0x42, 0x61}[a%9], data[:1])
			case 2:
				mmio.Write(cpu, 0xfee00000+a<<4|uint64(v&3), data)
			case 3:
				mmio.Write(cpu, 0xfec00000+a&0x7f, data)
			case 4:
				c.SetGSI(uint32(a), v&1 != 0)
			case 5:
				mmio.Read(cpu, 0xfee00000+a<<4, data)
				mmio.Read(cpu, 0xfec00010, data)
			case 6:
				mmio.Write(cpu, timer.HPETBase+a<<3, data)
				mmio.Read(cpu, timer.HPETBase+a<<3, data)
			case 7:
				clk.Advance(time.Duration(v) * time.Microsecond)
			case 8:
				c.SendMSI(0xfee00000|uint64(a)<<12|uint64(v&4), uint32(v)<<8|uint32(a))
			case 9:
				ap := c.APIC.CPU(int(v) % 2)
				if ap.HighestPending() >= 0 {
					ap.Acknowledge()
				}
				ap.TakeEvents()
				ap.WriteTSCDeadline(uint64(a)*1000, 0, 1e9)
				if a&1 != 0 {
					ap.SetBase(uint64(a) << 4)
				}
			}
		}
		clk.Advance(time.Second)
		pit.Stop()
		hpet.Stop()
	})
}

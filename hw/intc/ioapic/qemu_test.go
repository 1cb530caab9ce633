package ioapic

import (
	"testing"

	"gemu/hw/bus"
	"gemu/hw/internal/pcoracle"
)

// TestQEMUDifferential compares the register window with QEMU's pc IOAPIC (version
// 0x20, userspace on TCG): identification, IOREGSEL, every redirection entry's
// writable and read-only bits, and the EOI register.
func TestQEMUDifferential(t *testing.T) {
	const b = DefaultBase
	var s pcoracle.Script
	sel := func(i uint32) { s.Writel(b+RegSel, i) }
	sel(0)
	s.Writel(b+RegWin, 0x0f000000)
	s.Readl(b+RegWin, "ID all bits")
	s.Writel(b+RegWin, 0xffffffff)
	s.Readl(b+RegWin, "ID reserved bits")
	s.Writel(b+RegWin, 0)
	sel(1)
	s.Readl(b+RegWin, "version")
	s.Writel(b+RegWin, 0)
	s.Readl(b+RegWin, "version read-only")
	sel(2)
	s.Readl(b+RegWin, "arbitration")
	sel(0x3f)
	s.Readl(b+RegSel, "IOREGSEL")
	s.Readl(b+RegWin, "out-of-range index")
	for pin := uint32(0); pin < NumPins; pin++ {
		sel(0x10 + 2*pin)
		s.Writel(b+RegWin, 0xffffffff) // masked, level, all bits
		s.Readl(b+RegWin, "redirection low, all ones (masked)")
		s.Writel(b+RegWin, 0x00010000|pin<<4|0x0800)
		s.Readl(b+RegWin, "redirection low")
		sel(0x11 + 2*pin)
		s.Writel(b+RegWin, 0xffffffff)
		s.Readl(b+RegWin, "redirection high all ones")
		s.Writel(b+RegWin, pin<<24)
		s.Readl(b+RegWin, "redirection high")
	}
	s.Writel(b+RegEOI, 0x30)
	sel(0x10)
	s.Readl(b+RegWin, "after EOI register")

	mmio := bus.New()
	mmio.Insert(New(0, &rec{}), "ioapic", DefaultBase, Size)
	pcoracle.Compare(t, s, mmio, bus.New())
}

package pci_test

import (
	"encoding/binary"
	"fmt"

	"gemu/hw/bus"
	"gemu/hw/pci"
)

type doorbell struct{}

func (doorbell) Read(_ bus.Access, off uint64, data []byte) { clear(data) }
func (doorbell) Write(_ bus.Access, off uint64, data []byte) {
	fmt.Printf("doorbell write at %#x\n", off)
}

// A board gives the PCI bus its MMIO and port buses, an MSI sink and a swizzle; a
// device declares BARs and capabilities, then plugs in; the guest programs it through
// ECAM (or CF8/CFC) and the BARs appear on the MMIO bus.
func Example() {
	mmio, pio := bus.New(), bus.New()
	spis := []bus.IRQ{bus.NoIRQ, bus.NoIRQ, bus.NoIRQ, bus.NoIRQ} // virt: SPIs 3..6
	pb := pci.NewBus(pci.BusConfig{
		MMIO: mmio, PIO: pio,
		MSI:  pci.MSIFunc(func(addr uint64, data uint32) { fmt.Printf("MSI %#x <- %#x\n", addr, data) }),
		INTx: pci.RotatingINTx(spis),
	})
	_ = pb.Add(0, 0, pci.NewPCIeHostBridge())
	_ = mmio.Insert(pci.NewECAM(pb), "pcie-ecam", 0x40_1000_0000, 256<<20)

	fn := pci.NewConfigSpace(0x1af4, 0x1041, 0x020000, 1)
	_ = fn.AddBAR(1, pci.BARMem32, 0x1000, nil) // MSI-X only
	_ = fn.AddBAR(4, pci.BARMem64|pci.BARPrefetch, 0x4000, doorbell{})
	_ = fn.SetInterruptPin(pci.PinA)
	_, _ = fn.AddVendorCapability([]byte{2 /* cfg_type */, 4 /* bar */, 0, 0, 0, 0, 0, 0x30, 0, 0, 0, 0x10, 0, 0})
	msix, _ := fn.AddMSIX(2, 1, 0, 1, 0x800)
	_ = pb.Add(1, 0, fn)

	cfg := func(reg uint64, n int, v uint32) {
		mmio.Write(bus.Host, 0x40_1000_0000+1<<15+reg, binary.LittleEndian.AppendUint32(nil, v)[:n])
	}
	cfg(0x14, 4, 0x1000_0000) // BAR 1
	cfg(0x20, 4, 0x1000_4000) // BAR 4 (64-bit, high dword 0)
	cfg(pci.RegCommand, 2, pci.CmdMemory|pci.CmdBusMaster)
	cfg(uint64(msix.Offset())+2, 2, 1<<15) // MSI-X enable
	mmio.Write(bus.Host, 0x1000_0000, binary.LittleEndian.AppendUint64(nil, 0x0802_0040))
	mmio.Write(bus.Host, 0x1000_0008, binary.LittleEndian.AppendUint32(nil, 42))
	mmio.Write(bus.Host, 0x1000_000c, []byte{0, 0, 0, 0}) // unmask vector 0

	mmio.Write(bus.Host, 0x1000_4030, []byte{0, 0})
	msix.Notify(0)
	// Output:
	// doorbell write at 0x30
	// MSI 0x8020040 <- 0x2a
}

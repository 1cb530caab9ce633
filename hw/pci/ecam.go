package pci

import "gemu/hw/bus"

// ECAM is the PCI Express enhanced configuration access mechanism: a bus.Device in
// which function dev.fn of bus n has 4 KiB of configuration space at offset
// n<<20 | dev<<15 | fn<<12. Bus 0 is the root bus; other bus numbers reach the buses
// behind bridges as the guest numbered them (Bus.ConfigTarget). Empty slots and
// accesses that are not naturally aligned 1, 2 or 4 bytes read all-ones and ignore
// writes (an 8-byte access is split into two dwords). A conventional function's bytes
// past 256 read all-ones. Map it at the board's ECAM base with a size of 1 MiB per
// bus (256 MiB for all 256 buses).
type ECAM struct{ bus *Bus }

// NewECAM returns the ECAM window over bus.
func NewECAM(b *Bus) *ECAM { return &ECAM{bus: b} }

func (e *ECAM) target(off uint64, n int) (Function, uint32) {
	if off>>28 != 0 || (n != 1 && n != 2 && n != 4) || off&uint64(n-1) != 0 {
		return nil, 0
	}
	return e.bus.ConfigTarget(uint8(off>>20), uint8(off>>12)), uint32(off & 0xfff)
}

// Read implements bus.Device.
func (e *ECAM) Read(a bus.Access, off uint64, data []byte) {
	if len(data) == 8 && off&7 == 0 {
		e.Read(a, off, data[:4])
		e.Read(a, off+4, data[4:])
		return
	}
	f, reg := e.target(off, len(data))
	if f == nil {
		for i := range data {
			data[i] = 0xff
		}
		return
	}
	f.ConfigRead(reg, data)
}

// Write implements bus.Device.
func (e *ECAM) Write(a bus.Access, off uint64, data []byte) {
	if len(data) == 8 && off&7 == 0 {
		e.Write(a, off, data[:4])
		e.Write(a, off+4, data[4:])
		return
	}
	if f, reg := e.target(off, len(data)); f != nil {
		f.ConfigWrite(reg, data)
	}
}

// Reset implements bus.Resetter: every function on the bus is reset, so a machine
// reset that walks its MMIO bus resets PCI too.
func (e *ECAM) Reset() { e.bus.Reset() }

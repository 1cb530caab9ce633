package monitor

import (
	"encoding/binary"

	"gemu/hw/pci"
)

// PCIFromBus describes the functions of a board's PCI bus 0 as query-pci does, from
// their configuration space (read as the guest would, without side effects: the
// header registers read here have none) and the BARs they declared.
func PCIFromBus(b *pci.Bus) []PCIDevice {
	if b == nil {
		return nil
	}
	var out []PCIDevice
	for _, sl := range b.Slots() {
		f := sl.F
		var hdr [0x40]byte
		for off := 0; off < len(hdr); off += 4 {
			f.ConfigRead(uint32(off), hdr[off:off+4])
		}
		le := binary.LittleEndian
		d := PCIDevice{Slot: int(sl.Dev), Function: int(sl.Fn),
			Vendor: le.Uint16(hdr[0:]), Device: le.Uint16(hdr[2:]),
			Class:     le.Uint16(hdr[0x0a:]),
			SubVendor: le.Uint16(hdr[0x2c:]), SubID: le.Uint16(hdr[0x2e:]),
			IRQ: int(hdr[0x3c]), IRQPin: int(hdr[0x3d])}
		if bs, ok := f.(interface{ BARs() []pci.BARDesc }); ok {
			for _, r := range bs.BARs() {
				rg := PCIRegion{BAR: r.Index, IO: r.Kind&pci.BARIO != 0, Size: r.Size, Address: -1,
					Prefetch: r.Kind&pci.BARPrefetch != 0, Mem64: r.Kind&pci.BARMem64 != 0}
				if r.Mapped {
					rg.Address = int64(r.Base)
				}
				out2 := &d.Regions
				*out2 = append(*out2, rg)
			}
		}
		out = append(out, d)
	}
	return out
}

package monitor

import (
	"encoding/binary"

	"gemu/hw/pci"
)

// PCIFromBus describes the functions of a board's PCI bus 0 as query-pci does, from
// their configuration space (read as the guest would, without side effects: the
// header registers read here have none) and the BARs they declared.
func PCIFromBus(b *pci.Bus) []PCIDevice { return pciFromBus(b, 0, 0) }

func pciFromBus(b *pci.Bus, num, depth int) []PCIDevice {
	if b == nil || depth > 8 {
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
		d.Bus = num
		if hdr[0x0e]&0x7f == 1 {
			d.SubVendor, d.SubID = 0, 0
			d.Bridge = bridgeInfo(hdr[:], num)
			if sb, ok := f.(interface{ Secondary() *pci.Bus }); ok && d.Bridge.Secondary != 0 {
				d.Bridge.Devices = pciFromBus(sb.Secondary(), d.Bridge.Secondary, depth+1)
				if d.Bridge.Devices == nil {
					d.Bridge.Devices = []PCIDevice{}
				}
			}
		}
		out = append(out, d)
	}
	return out
}

// bridgeInfo decodes a type-1 header's bus numbers and windows as QEMU's
// pci_bridge_get_base/limit do.
func bridgeInfo(h []byte, num int) *PCIBridge {
	le := binary.LittleEndian
	br := &PCIBridge{Number: num, Secondary: int(h[0x19]), Subordinate: int(h[0x1a])}
	br.IOBase = int64(h[0x1c]&0xf0) << 8
	br.IOLimit = int64(h[0x1d]&0xf0)<<8 | 0xfff
	if h[0x1c]&0xf == 1 { // 32-bit I/O
		br.IOBase |= int64(le.Uint16(h[0x30:])) << 16
		br.IOLimit |= int64(le.Uint16(h[0x32:])) << 16
	}
	br.MemBase = int64(le.Uint16(h[0x20:])&0xfff0) << 16
	br.MemLimit = int64(le.Uint16(h[0x22:])&0xfff0)<<16 | 0xfffff
	br.PrefBase = int64(le.Uint16(h[0x24:])&0xfff0) << 16
	br.PrefLimit = int64(le.Uint16(h[0x26:])&0xfff0)<<16 | 0xfffff
	if h[0x24]&0xf == 1 { // 64-bit prefetchable
		br.PrefBase |= int64(le.Uint32(h[0x28:])) << 32
		br.PrefLimit |= int64(le.Uint32(h[0x2c:])) << 32
	}
	return br
}

package intc

import (
	"encoding/binary"

	"gemu/hw/bus"
)

// V2M is a GICv2m MSI frame (ARM's "GICv2m" extension, as QEMU's virt has at
// 0x08020000): a PCI device's MSI write of an SPI's INTID to MSI_SETSPI_NS raises that
// SPI as an edge. MSI_TYPER tells the guest which SPIs the frame owns.
type V2M struct {
	g          *GIC
	base, num  int // first SPI number (INTID - 32) and count
	firstINTID uint32
}

// V2M register offsets and the frame's identification (QEMU's arm_gicv2m values).
const (
	v2mTYPER    = 0x008
	v2mSETSPINS = 0x040
	v2mIIDR     = 0xfcc
	V2MSize     = 0x1000
)

// NewV2M returns a frame owning num SPIs from SPI number base (INTIDs 32+base ...).
func (g *GIC) NewV2M(base, num int) *V2M {
	if base < 0 || num < 0 || base+num > len(g.spi) {
		panic("intc: GICv2m frame outside the SPIs")
	}
	return &V2M{g: g, base: base, num: num, firstINTID: uint32(NumPriv + base)}
}

// Read implements bus.Device.
func (m *V2M) Read(_ bus.Access, off uint64, data []byte) {
	var v uint32
	switch off &^ 3 {
	case v2mTYPER:
		v = m.firstINTID<<16 | uint32(m.num)
	case v2mIIDR:
		v = 0 // no implementer claimed (Linux reads it only for vendor quirks)
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	copy(data, b[off&3:])
}

// Write implements bus.Device: a write of an owned INTID to MSI_SETSPI_NS raises it;
// anything else is ignored (the frame has no error reporting).
func (m *V2M) Write(_ bus.Access, off uint64, data []byte) {
	if off != v2mSETSPINS || len(data) < 2 {
		return
	}
	var b [4]byte
	copy(b[:], data)
	m.SignalMSI(v2mSETSPINS, binary.LittleEndian.Uint32(b[:]))
}

// SignalMSI delivers an MSI whose data is the INTID (the address within the frame is
// MSI_SETSPI_NS): the path PCI devices take, without going through the bus.
func (m *V2M) SignalMSI(off uint64, data uint32) {
	if off != v2mSETSPINS {
		return
	}
	i := int(data&0x3ff) - int(m.firstINTID)
	if i < 0 || i >= m.num {
		return
	}
	m.g.pulseSPI(m.base + i)
}

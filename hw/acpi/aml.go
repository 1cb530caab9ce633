package acpi

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// A minimal AML encoder: just the opcodes gemu's DSDT uses (ACPI 6.4 §20).
const (
	amlZero        = 0x00
	amlOne         = 0x01
	amlName        = 0x08
	amlBytePrefix  = 0x0a
	amlWordPrefix  = 0x0b
	amlDWordPrefix = 0x0c
	amlString      = 0x0d
	amlQWordPrefix = 0x0e
	amlScope       = 0x10
	amlBuffer      = 0x11
	amlPackage     = 0x12
	amlExtPrefix   = 0x5b
	amlDevice      = 0x82 // after amlExtPrefix
	amlRoot        = '\\'
	amlDualName    = 0x2e
	amlMultiName   = 0x2f
)

// amlNameString encodes a path like `\_SB_.PCI0` or `_HID`; segments shorter than
// four characters are padded with '_'.
func amlNameString(path string) []byte {
	var out []byte
	if strings.HasPrefix(path, `\`) {
		out = append(out, amlRoot)
		path = path[1:]
	}
	segs := strings.Split(path, ".")
	switch len(segs) {
	case 1:
	case 2:
		out = append(out, amlDualName)
	default:
		out = append(out, amlMultiName, byte(len(segs)))
	}
	for _, s := range segs {
		if len(s) == 0 || len(s) > 4 {
			panic(fmt.Sprintf("acpi: bad AML name segment %q", s))
		}
		out = append(out, (s + "___")[:4]...)
	}
	return out
}

// amlPkgLength encodes the PkgLength of a body of n bytes (the encoding counts itself).
func amlPkgLength(n int) []byte {
	switch {
	case n+1 < 1<<6:
		return []byte{byte(n + 1)}
	case n+2 < 1<<12:
		t := n + 2
		return []byte{0x40 | byte(t&0xf), byte(t >> 4)}
	case n+3 < 1<<20:
		t := n + 3
		return []byte{0x80 | byte(t&0xf), byte(t >> 4), byte(t >> 12)}
	}
	t := n + 4
	return []byte{0xc0 | byte(t&0xf), byte(t >> 4), byte(t >> 12), byte(t >> 20)}
}

// amlInteger encodes an integer constant in its shortest form.
func amlInteger(v uint64) []byte {
	switch {
	case v == 0:
		return []byte{amlZero}
	case v == 1:
		return []byte{amlOne}
	case v <= 0xff:
		return []byte{amlBytePrefix, byte(v)}
	case v <= 0xffff:
		return binary.LittleEndian.AppendUint16([]byte{amlWordPrefix}, uint16(v))
	case v <= 0xffffffff:
		return binary.LittleEndian.AppendUint32([]byte{amlDWordPrefix}, uint32(v))
	}
	return binary.LittleEndian.AppendUint64([]byte{amlQWordPrefix}, v)
}

// amlEisaID encodes a PNP id like "PNP0A03" as the compressed 32-bit EISA id.
func amlEisaID(id string) []byte {
	if len(id) != 7 {
		panic("acpi: EISA id must be 7 characters: " + id)
	}
	var hex uint32
	fmt.Sscanf(id[3:], "%04X", &hex)
	v := uint32(id[0]-0x40)<<26 | uint32(id[1]-0x40)<<21 | uint32(id[2]-0x40)<<16 | hex
	// Stored most significant byte first.
	return []byte{amlDWordPrefix, byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

func amlNameDef(name string, value []byte) []byte {
	return append(append([]byte{amlName}, amlNameString(name)...), value...)
}

func amlPackageOf(elems ...[]byte) []byte {
	body := []byte{byte(len(elems))}
	for _, e := range elems {
		body = append(body, e...)
	}
	return append(append([]byte{amlPackage}, amlPkgLength(len(body))...), body...)
}

func amlBufferOf(data []byte) []byte {
	body := append(amlInteger(uint64(len(data))), data...)
	return append(append([]byte{amlBuffer}, amlPkgLength(len(body))...), body...)
}

func amlScopeOf(name string, terms ...[]byte) []byte {
	body := amlNameString(name)
	for _, t := range terms {
		body = append(body, t...)
	}
	return append(append([]byte{amlScope}, amlPkgLength(len(body))...), body...)
}

func amlDeviceOf(name string, terms ...[]byte) []byte {
	body := amlNameString(name)
	for _, t := range terms {
		body = append(body, t...)
	}
	return append(append([]byte{amlExtPrefix, amlDevice}, amlPkgLength(len(body))...), body...)
}

// Resource-template descriptors (ACPI 6.4 §6.4).

// resWordAddr is a Word Address Space Descriptor: a bus-number or I/O window a bridge
// produces, fixed min and max.
func resWordAddr(resType, typeFlags byte, min, max uint16) []byte {
	b := []byte{0x88, 0x0d, 0x00, resType, 0x0c, typeFlags}
	for _, v := range []uint16{0, min, max, 0, max - min + 1} {
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	return b
}

// resDWordMemory is a DWord Address Space Descriptor for a read/write memory window.
func resDWordMemory(min, max uint32) []byte {
	b := []byte{0x87, 0x17, 0x00, 0x00, 0x0c, 0x01}
	for _, v := range []uint32{0, min, max, 0, max - min + 1} {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

// resIO is a 16-bit-decode fixed I/O port range the device itself consumes.
func resIO(base uint16, n byte) []byte {
	b := []byte{0x47, 0x01}
	b = binary.LittleEndian.AppendUint16(b, base)
	b = binary.LittleEndian.AppendUint16(b, base)
	return append(b, 1, n)
}

var resEnd = []byte{0x79, 0x00}

package pci

import (
	"encoding/binary"
	"gemu/hw/bus"
	"testing"
)

func cfgAddr(dev, fn, reg uint32) []byte {
	return binary.LittleEndian.AppendUint32(nil, 1<<31|dev<<11|fn<<8|reg)
}

func TestHostBridgeThroughCF8(t *testing.T) {
	b := NewBus(BusConfig{})
	if err := b.Add(0, 0, NewHostBridge()); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(0, 0, NewHostBridge()); err == nil {
		t.Fatal("double Add accepted")
	}
	io := NewConfigIO(b, nil)

	// Linux's pci_check_type1: byte write to 0xCFB, then the dword address round-trips.
	io.Write(bus.Host, 3, []byte{0x01})
	io.Write(bus.Host, 0, binary.LittleEndian.AppendUint32(nil, 0x80000000))
	var d [4]byte
	io.Read(bus.Host, 0, d[:])
	if binary.LittleEndian.Uint32(d[:]) != 0x80000000 {
		t.Fatalf("address register reads %#x", d)
	}

	io.Write(bus.Host, 0, cfgAddr(0, 0, 0))
	io.Read(bus.Host, 4, d[:])
	if v := binary.LittleEndian.Uint32(d[:]); v != 0x12378086 {
		t.Fatalf("vendor/device %#x, want 8086:1237", v)
	}
	var w [2]byte
	io.Read(bus.Host, 6, w[:]) // device id through the upper half of the data window
	if binary.LittleEndian.Uint16(w[:]) != 0x1237 {
		t.Fatal("word read at 0xCFE")
	}
	io.Write(bus.Host, 0, cfgAddr(0, 0, 8))
	io.Read(bus.Host, 4, d[:])
	if d[3] != 0x06 || d[2] != 0x00 {
		t.Fatalf("class %#x.%#x, want host bridge 06.00", d[3], d[2])
	}
	// Command register is writable, vendor id is not.
	io.Write(bus.Host, 0, cfgAddr(0, 0, 4))
	io.Write(bus.Host, 4, []byte{0x07, 0x00})
	io.Write(bus.Host, 0, cfgAddr(0, 0, 0))
	io.Write(bus.Host, 4, []byte{0, 0, 0, 0})
	io.Read(bus.Host, 4, d[:])
	if binary.LittleEndian.Uint32(d[:]) != 0x12378086 {
		t.Fatal("vendor id writable")
	}
	io.Write(bus.Host, 0, cfgAddr(0, 0, 4))
	io.Read(bus.Host, 4, d[:])
	if d[0] != 0x07 {
		t.Fatalf("command %#x", d[0])
	}
	// Empty slot and other buses read all-ones.
	for _, a := range [][]byte{cfgAddr(5, 0, 0), binary.LittleEndian.AppendUint32(nil, 1<<31|1<<16)} {
		io.Write(bus.Host, 0, a)
		io.Read(bus.Host, 4, d[:])
		if binary.LittleEndian.Uint32(d[:]) != 0xffffffff {
			t.Fatalf("absent function reads %#x", d)
		}
	}
	// Disabled address (bit 31 clear) reads all-ones too.
	io.Write(bus.Host, 0, binary.LittleEndian.AppendUint32(nil, 0))
	io.Read(bus.Host, 4, d[:])
	if binary.LittleEndian.Uint32(d[:]) != 0xffffffff {
		t.Fatal("config access with enable bit clear")
	}
}

func TestResetControl(t *testing.T) {
	n := 0
	io := NewConfigIO(NewBus(BusConfig{}), func() { n++ })
	io.Write(bus.Host, 1, []byte{0x02}) // Linux: SYS_RST first ...
	if n != 0 {
		t.Fatal("reset on SYS_RST alone")
	}
	var b [1]byte
	io.Read(bus.Host, 1, b[:])
	if b[0] != 0x02 {
		t.Fatalf("RCR reads %#x", b[0])
	}
	io.Write(bus.Host, 1, []byte{0x06}) // ... then SYS_RST|RST_CPU
	if n != 1 {
		t.Fatal("RST_CPU did not reset")
	}
}

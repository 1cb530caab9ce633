package bus

import (
	"encoding/binary"
	"testing"
)

type regDev struct {
	regs  [16]byte
	reads int
}

func (d *regDev) Read(off uint64, data []byte)  { d.reads++; copy(data, d.regs[off:]) }
func (d *regDev) Write(off uint64, data []byte) { copy(d.regs[off:], data) }

func TestDispatch(t *testing.T) {
	b := New()
	a, c := &regDev{}, &regDev{}
	if err := b.Insert(a, "a", 0x3f8, 8); err != nil {
		t.Fatal(err)
	}
	if err := b.Insert(c, "c", 0x1000, 16); err != nil {
		t.Fatal(err)
	}
	if err := b.Insert(c, "clash", 0x3ff, 2); err == nil {
		t.Fatal("overlapping insert accepted")
	}
	if err := b.Insert(c, "empty", 0x5000, 0); err == nil {
		t.Fatal("empty range accepted")
	}
	var v [4]byte
	binary.LittleEndian.PutUint32(v[:], 0xdeadbeef)
	if !b.Write(0x1004, v[:]) {
		t.Fatal("write to c not claimed")
	}
	if got := binary.LittleEndian.Uint32(c.regs[4:]); got != 0xdeadbeef {
		t.Fatalf("c reg = %#x", got)
	}
	var r [1]byte
	a.regs[5] = 0x60
	if !b.Read(0x3fd, r[:]) || r[0] != 0x60 {
		t.Fatalf("read LSR = %#x", r[0])
	}
	var miss []uint64
	b.Unhandled = func(addr uint64, _ []byte, _ bool) { miss = append(miss, addr) }
	if b.Read(0x400, r[:]) || r[0] != 0xff {
		t.Fatal("unclaimed read must return 0xff and false")
	}
	if b.Write(0x3f7, r[:]) {
		t.Fatal("write below a device claimed")
	}
	if len(miss) != 2 {
		t.Fatalf("unhandled calls = %v", miss)
	}
	if dev, off, ok := b.Lookup(0x100f); !ok || dev != Device(c) || off != 15 {
		t.Fatal("Lookup")
	}
	if !b.Remove(0x1000) || b.Write(0x1004, v[:]) {
		t.Fatal("Remove")
	}
}

func BenchmarkDispatch(b *testing.B) {
	bus := New()
	for i := uint64(0); i < 32; i++ {
		bus.Insert(&regDev{}, "d", 0x1000*i, 16)
	}
	var d [4]byte
	for i := 0; i < b.N; i++ {
		bus.Read(0x1000*uint64(i&31)+4, d[:])
	}
}

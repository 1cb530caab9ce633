package bus

import (
	"encoding/binary"
	"testing"
)

type regDev struct {
	regs  [16]byte
	reads int
}

func (d *regDev) Read(_ Access, off uint64, data []byte)  { d.reads++; copy(data, d.regs[off:]) }
func (d *regDev) Write(_ Access, off uint64, data []byte) { copy(d.regs[off:], data) }

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
	if !b.Write(Host, 0x1004, v[:]) {
		t.Fatal("write to c not claimed")
	}
	if got := binary.LittleEndian.Uint32(c.regs[4:]); got != 0xdeadbeef {
		t.Fatalf("c reg = %#x", got)
	}
	var r [1]byte
	a.regs[5] = 0x60
	if !b.Read(Host, 0x3fd, r[:]) || r[0] != 0x60 {
		t.Fatalf("read LSR = %#x", r[0])
	}
	var miss []uint64
	b.Unhandled = func(addr uint64, _ []byte, _ bool) { miss = append(miss, addr) }
	if b.Read(Host, 0x400, r[:]) || r[0] != 0xff {
		t.Fatal("unclaimed read must return 0xff and false")
	}
	if b.Write(Host, 0x3f7, r[:]) {
		t.Fatal("write below a device claimed")
	}
	if len(miss) != 2 {
		t.Fatalf("unhandled calls = %v", miss)
	}
	if dev, off, ok := b.Lookup(0x100f); !ok || dev != Device(c) || off != 15 {
		t.Fatal("Lookup")
	}
	if !b.Remove(0x1000) || b.Write(Host, 0x1004, v[:]) {
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
		bus.Read(Host, 0x1000*uint64(i&31)+4, d[:])
	}
}

// ctxDev records the access context it was given and counts resets.
type ctxDev struct {
	last   Access
	resets int
}

func (d *ctxDev) Read(a Access, _ uint64, data []byte) { d.last = a; clear(data) }
func (d *ctxDev) Write(a Access, _ uint64, _ []byte)   { d.last = a }
func (d *ctxDev) Reset()                               { d.resets++ }

func TestAccessContextAndReset(t *testing.T) {
	b := New()
	d := &ctxDev{}
	// One device mapped twice (as a BAR and its alias might be) is reset once.
	if err := b.Insert(d, "d", 0x100, 0x10); err != nil {
		t.Fatal(err)
	}
	if err := b.Insert(d, "d-alias", 0x200, 0x10); err != nil {
		t.Fatal(err)
	}
	b.Insert(&regDev{}, "plain", 0x300, 0x10) // no Resetter: skipped
	var v [4]byte
	b.Read(CPUAccess(3), 0x104, v[:])
	if d.last.CPU != 3 {
		t.Fatalf("read saw CPU %d, want 3", d.last.CPU)
	}
	b.Write(Host, 0x204, v[:])
	if d.last.CPU != NoCPU {
		t.Fatalf("host write saw CPU %d, want NoCPU", d.last.CPU)
	}
	b.Reset()
	if d.resets != 1 {
		t.Fatalf("resets = %d, want 1", d.resets)
	}
	var names []string
	b.Devices(func(name string, _, _ uint64, _ Device) { names = append(names, name) })
	if len(names) != 3 || names[0] != "d" || names[2] != "plain" {
		t.Fatalf("Devices = %v", names)
	}
}

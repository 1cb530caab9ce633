package pci

import (
	"encoding/binary"
	"testing"

	"gemu/hw/bus"
)

// FuzzConfig drives two functions (one conventional with BARs, MSI-X and INTx, one
// PCI Express with MSI) through sequences of configuration reads and writes of any
// width and offset, by CF8/CFC and ECAM, BAR-window accesses, interrupts and resets,
// and checks after every step that nothing panicked, the read-only identity and the
// capability lists are intact, and every mapped BAR is on its bus where BAR says.
func FuzzConfig(f *testing.F) {
	le := binary.LittleEndian
	seed := func(ops ...[8]byte) []byte {
		var b []byte
		for _, o := range ops {
			b = append(b, o[:]...)
		}
		return b
	}
	op := func(kind, which byte, off uint16, width byte, val uint32) [8]byte {
		var o [8]byte
		o[0], o[1], o[4] = kind, which, width
		le.PutUint16(o[2:], off)
		o[5], o[6], o[7] = byte(val), byte(val>>8), byte(val>>16)
		return o
	}
	f.Add(seed(op(0, 0, 0x14, 4, 0xfe0000), op(0, 0, 4, 2, 7), op(2, 0, 0, 4, 0)))
	f.Add(seed(op(1, 1, 0x10, 4, 0xffffff), op(1, 1, 0x100, 4, 1), op(0, 0, 0x18, 4, 0xffffff)))
	f.Add(seed(op(0, 0, 0x42, 2, 0xc000), op(4, 0, 1, 0, 0), op(5, 0, 0, 0, 0)))
	f.Add(seed(op(0, 0, 0xfff, 3, 0xffffff), op(1, 1, 0xffd, 4, 0xffffff), op(6, 0, 0, 0, 0)))
	f.Fuzz(runProg)
}

// runProg runs one FuzzConfig program: 8-byte steps of kind, function, offset, width
// (bit 7: read) and a 24-bit value.
func runProg(t *testing.T, prog []byte) {
	le := binary.LittleEndian
	r := newRig(t)
	a, mx, _ := newDev(t, 0x100)
	e := NewConfigSpace(0x1b36, 0x0010, 0x010802, 0)
	if _, err := e.EnableExpress(ExpressEndpoint); err != nil {
		t.Fatal(err)
	}
	ms, err := e.AddMSI(8, true)
	must(t, err)
	must(t, e.AddBAR(0, BARMem64, 0x4000, &regs{tag: 7}))
	_, err = e.AddExtCapability(3, 1, make([]byte, 8))
	must(t, err)
	must(t, e.SetInterruptPin(PinB))
	must(t, r.pci.Add(1, 0, a))
	must(t, r.pci.Add(2, 0, e))
	fns := []*ConfigSpace{a, e}
	ids := []uint32{r.cfgRead(1, 0, 0, 4), r.cfgRead(2, 0, 0, 4)}
	caps := [][]uint32{a.Capabilities(0), e.Capabilities(0)}
	if len(prog) > 8*256 {
		prog = prog[:8*256]
	}
	for ; len(prog) >= 8; prog = prog[8:] {
		kind, which := prog[0]%8, uint32(prog[1]%2)
		off := uint32(le.Uint16(prog[2:]))
		n := int(prog[4]%8) + 1
		var val [8]byte
		copy(val[:], prog[5:8])
		val[3] = prog[5] ^ prog[7]
		dev := which + 1
		switch kind {
		case 0: // CF8/CFC: address dword, then an access of any width in the window
			r.pio.Write(bus.Host, 0xcf8, le.AppendUint32(nil, 1<<31|dev<<11|off&0xfc))
			if prog[4]&0x80 != 0 {
				var d [8]byte
				r.pio.Read(bus.Host, 0xcfc+uint64(off&3), d[:n])
			} else {
				r.pio.Write(bus.Host, 0xcfc+uint64(off&3), val[:n])
			}
		case 1: // ECAM, any offset and width
			addr := 0x3000_0000 + uint64(dev<<15) + uint64(off&0xfff)
			if prog[4]&0x80 != 0 {
				var d [8]byte
				r.mmio.Read(bus.Host, addr, d[:n])
			} else {
				r.mmio.Write(bus.Host, addr, val[:n])
			}
		case 2: // direct ConfigWrite of any offset and width
			fns[which].ConfigWrite(off, val[:n])
		case 3: // accesses where BARs may be mapped
			addr := uint64(0xfe00_0000) + uint64(off)<<4
			if prog[4]&0x80 != 0 {
				var d [8]byte
				r.mmio.Read(bus.Host, addr, d[:n])
			} else {
				r.mmio.Write(bus.Host, addr, val[:n])
			}
		case 4:
			mx.Notify(int(off % 6))
			ms.Notify(int(off % 10))
		case 5:
			fns[which].SetIRQ(off&1 != 0)
		case 6:
			fns[which].Reset()
		case 7:
			fns[which].ConfigRead(off, make([]byte, n))
		}
		for i, c := range fns {
			if got := r.cfgRead(uint32(i+1), 0, 0, 4); got != ids[i] {
				t.Fatalf("function %d ids %#x, want %#x", i, got, ids[i])
			}
			if got := c.Capabilities(0); len(got) != len(caps[i]) {
				t.Fatalf("function %d capability list %v, want %v", i, got, caps[i])
			}
			for b := 0; b < 6; b++ {
				base, ok := c.BAR(b)
				if !ok {
					continue
				}
				on := r.mmio
				if c.bars[b].kind == BARIO {
					on = r.pio
				}
				dev, o, hit := on.Lookup(base)
				if !hit || o != 0 || dev != bus.Device(c.bars[b].rgn) {
					t.Fatalf("function %d BAR %d reported at %#x but the bus has %v", i, b, base, dev)
				}
			}
		}
		// a is slot 1 INTA: line 1; e is slot 2 INTB: line 3.
		if r.line(1) != a.intxOut.Load() || r.line(3) != e.intxOut.Load() {
			t.Fatalf("INTx lines %v, outputs %v %v", r.lines, a.intxOut.Load(), e.intxOut.Load())
		}
	}
}

// FuzzLoadConfig feeds LoadConfig hostile state: it is refused or restored, never a
// panic, and restored state keeps the function's identity.
func FuzzLoadConfig(f *testing.F) {
	c, _, _ := newDev(&testing.T{}, 0)
	f.Add(c.SaveConfig())
	f.Add([]byte{1, 0, 0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, state []byte) {
		r := newRig(t)
		c, _, _ := newDev(t, 0)
		must(t, r.pci.Add(1, 0, c))
		if c.LoadConfig(state) != nil {
			return
		}
		if v := r.cfgRead(1, 0, 0, 4); v != 0x10411af4 {
			t.Fatalf("ids %#x after load", v)
		}
		c.Reset()
	})
}

package fwcfg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"gemu/hw/bus"
)

// ram is a flat guest memory at base 0x1000.
type ram struct{ b []byte }

const ramBase = 0x1000

func (r *ram) ReadAt(p []byte, gpa uint64) error {
	if gpa < ramBase || gpa-ramBase+uint64(len(p)) > uint64(len(r.b)) {
		return errors.New("out of RAM")
	}
	copy(p, r.b[gpa-ramBase:])
	return nil
}

func (r *ram) WriteAt(p []byte, gpa uint64) error {
	if gpa < ramBase || gpa-ramBase+uint64(len(p)) > uint64(len(r.b)) {
		return errors.New("out of RAM")
	}
	copy(r.b[gpa-ramBase:], p)
	return nil
}

var cpu = bus.CPUAccess(0)

func sel(d *Device, key uint16) { d.Write(cpu, RegSelector, binary.BigEndian.AppendUint16(nil, key)) }

// stream reads n bytes through the data register w bytes at a time.
func stream(d *Device, n, w int) []byte {
	var out []byte
	for len(out) < n {
		b := make([]byte, w)
		d.Read(cpu, RegData, b)
		out = append(out, b...)
	}
	return out[:n]
}

func TestSignatureAndID(t *testing.T) {
	d := New(nil)
	for _, w := range []int{1, 2, 4, 8} {
		sel(d, KeySignature)
		if s := stream(d, 4, w); string(s) != "QEMU" {
			t.Fatalf("width %d: signature %q", w, s)
		}
	}
	sel(d, KeyID)
	if id := binary.LittleEndian.Uint32(stream(d, 4, 4)); id != 3 {
		t.Fatalf("ID %#x, want traditional|DMA", id)
	}
	var sig [8]byte
	d.Read(cpu, RegDMA, sig[:])
	if string(sig[:]) != "QEMU CFG" {
		t.Fatalf("DMA register reads %q", sig)
	}
	sel(d, 0x3000) // no such item: zeros
	if s := stream(d, 8, 8); !bytes.Equal(s, make([]byte, 8)) {
		t.Fatalf("invalid key reads %x", s)
	}
}

func TestFileDirectory(t *testing.T) {
	d := New(nil)
	for _, n := range []string{"opt/zeta", "bootorder", "opt/alpha"} {
		if err := d.AddFile(n, []byte("data of "+n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.AddFile("opt/alpha", nil); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate: %v", err)
	}
	if err := d.AddFile("opt/"+strings.Repeat("x", 52), nil); err == nil {
		t.Fatal("56-char name accepted")
	}
	sel(d, KeyFileDir)
	hdr := stream(d, 4, 4)
	if n := binary.BigEndian.Uint32(hdr); n != 3 {
		t.Fatalf("%d files", n)
	}
	want := []string{"bootorder", "opt/alpha", "opt/zeta"}
	sels := map[string]uint16{}
	for i, name := range want {
		e := stream(d, 64, 8)
		size, s := binary.BigEndian.Uint32(e), binary.BigEndian.Uint16(e[4:])
		got := string(bytes.TrimRight(e[8:], "\x00"))
		if got != name || s != uint16(KeyFileFirst+i) || size != uint32(len("data of "+name)) {
			t.Fatalf("entry %d: %q select %#x size %d", i, got, s, size)
		}
		sels[name] = s
	}
	sel(d, sels["opt/zeta"])
	if s := stream(d, 16, 1); string(s) != "data of opt/zeta" {
		t.Fatalf("file reads %q", s)
	}
	if d.AddFile("opt/late", nil) == nil {
		t.Fatal("file added after the guest read the directory")
	}
}

func dmaDesc(r *ram, at uint64, control, length uint32, addr uint64) {
	var b [16]byte
	binary.BigEndian.PutUint32(b[0:], control)
	binary.BigEndian.PutUint32(b[4:], length)
	binary.BigEndian.PutUint64(b[8:], addr)
	r.WriteAt(b[:], at)
}

func kick(d *Device, at uint64, split bool) {
	if split { // as Linux's driver: high half, then low half triggers
		d.Write(cpu, RegDMA, binary.BigEndian.AppendUint32(nil, uint32(at>>32)))
		d.Write(cpu, RegDMA+4, binary.BigEndian.AppendUint32(nil, uint32(at)))
		return
	}
	d.Write(cpu, RegDMA, binary.BigEndian.AppendUint64(nil, at))
}

func TestDMA(t *testing.T) {
	r := &ram{b: make([]byte, 0x4000)}
	d := New(r)
	d.AddFile("opt/hello", []byte("hello, guest"))
	sel := d.Files()["opt/hello"]
	// select + read the first 5 bytes, then skip 2, then read past the end (zero fill).
	dmaDesc(r, 0x1000, uint32(sel)<<16|dmaSelect|dmaRead, 5, 0x2000)
	kick(d, 0x1000, true)
	if c := binary.BigEndian.Uint32(r.b[0:]); c != 0 {
		t.Fatalf("control after read %#x", c)
	}
	dmaDesc(r, 0x1000, dmaSkip, 2, 0)
	kick(d, 0x1000, false)
	for i := range 16 {
		r.b[0x1100+i] = 0xee
	}
	dmaDesc(r, 0x1000, dmaRead, 8, 0x2005)
	kick(d, 0x1000, false)
	got := r.b[0x1000 : 0x1000+13]
	if string(got) != "hello"+"guest\x00\x00\x00" {
		t.Fatalf("DMA read %q", got)
	}
	// A write (no item is writable) and a read into non-RAM report the error bit.
	dmaDesc(r, 0x1000, dmaWrite, 4, 0x2000)
	kick(d, 0x1000, false)
	if c := binary.BigEndian.Uint32(r.b[0:]); c != dmaError {
		t.Fatalf("write: control %#x", c)
	}
	dmaDesc(r, 0x1000, uint32(sel)<<16|dmaSelect|dmaRead, 0xffffffff, 0x9000_0000)
	kick(d, 0x1000, false)
	if c := binary.BigEndian.Uint32(r.b[0:]); c != dmaError {
		t.Fatalf("read to nowhere: control %#x", c)
	}
	// A huge read into RAM stops at the end of RAM with the error bit, not unbounded work.
	dmaDesc(r, 0x1000, dmaRead, 0xffffffff, 0x3000)
	kick(d, 0x1000, false)
	if c := binary.BigEndian.Uint32(r.b[0:]); c != dmaError {
		t.Fatalf("overlong read: control %#x", c)
	}
	kick(d, 0x10, false) // descriptor outside RAM: ignored
}

func FuzzRegisters(f *testing.F) {
	f.Add([]byte{8, 0, 0x19, 0, 1, 0, 16, 0, 0, 0, 0, 0, 0, 0x10, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		r := &ram{b: make([]byte, 0x2000)}
		d := New(r)
		d.AddFile("opt/x", []byte("x"))
		for len(ops) >= 3 {
			off, w := uint64(ops[0]%0x18), []int{1, 2, 4, 8}[ops[1]%4]
			b := make([]byte, w)
			copy(b, ops[2:])
			if ops[1]&0x80 != 0 {
				d.Write(cpu, off, b)
			} else {
				d.Read(cpu, off, b)
			}
			ops = ops[3:]
		}
	})
}

func TestState(t *testing.T) {
	d := New(nil)
	sel(d, KeySignature)
	stream(d, 2, 1)
	s, err := d.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	e := New(nil)
	if err := e.LoadState(s); err != nil {
		t.Fatal(err)
	}
	if got := stream(e, 2, 1); string(got) != "MU" {
		t.Fatalf("restored stream continues with %q", got)
	}
	if e.LoadState(bus.State{Name: "fw_cfg", Version: 2, Data: s.Data}) == nil {
		t.Fatal("unknown version accepted")
	}
}

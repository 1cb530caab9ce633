package serial

import (
	"bytes"
	"encoding/binary"
	"gemu/hw/bus"
	"sync"
	"testing"
)

type plBackend struct {
	mu   sync.Mutex
	out  bytes.Buffer
	recv func(byte)
}

func (s *plBackend) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Write(p)
}
func (s *plBackend) SetReceiver(f func(byte)) { s.recv = f }
func (s *plBackend) Close() error             { return nil }

type plLine struct{ level bool }

func (l *plLine) Set(v bool) { l.level = v }

func plRd(u *PL011, off uint64) uint32 {
	var b [4]byte
	u.Read(bus.Host, off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func plWr(u *PL011, off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	u.Write(bus.Host, off, b[:])
}

// TestPL011IDs checks the PrimeCell identification Linux's AMBA bus matches on
// (periphid 0x00041011, cellid 0xb105f00d).
func TestPL011IDs(t *testing.T) {
	u := NewPL011(&plBackend{}, nil)
	var pid, cid uint32
	for i := uint64(0); i < 4; i++ {
		pid |= (plRd(u, 0xfe0+4*i) & 0xff) << (8 * i)
		cid |= (plRd(u, 0xff0+4*i) & 0xff) << (8 * i)
	}
	if pid&0x000fffff != 0x00041011 || cid != 0xb105f00d {
		t.Fatalf("periphid %#x cellid %#x", pid, cid)
	}
	if fr := plRd(u, plFR); fr != frTXFE|frRXFE {
		t.Fatalf("reset FR = %#x", fr)
	}
	if cr := plRd(u, plCR); cr != 0x300 {
		t.Fatalf("reset CR = %#x", cr)
	}
}

func TestPL011TransmitInterrupt(t *testing.T) {
	be, irq := &plBackend{}, &plLine{}
	u := NewPL011(be, irq)
	plWr(u, plIMSC, intTX)
	if irq.level {
		t.Fatal("TX interrupt before any write")
	}
	for _, c := range []byte("hi\n") {
		plWr(u, plDR, uint32(c))
	}
	if be.out.String() != "hi\n" {
		t.Fatalf("output %q", be.out.String())
	}
	if !irq.level || plRd(u, plMIS) != intTX {
		t.Fatalf("TX interrupt not raised: MIS %#x", plRd(u, plMIS))
	}
	plWr(u, plICR, intTX)
	if irq.level || plRd(u, plRIS)&intTX != 0 {
		t.Fatal("ICR did not clear TX")
	}
	plWr(u, plDR, 'x')
	plWr(u, plIMSC, 0)
	if irq.level || plRd(u, plRIS)&intTX == 0 {
		t.Fatal("masking must drop the line but keep the raw status")
	}
}

func TestPL011ReceiveFIFO(t *testing.T) {
	be, irq := &plBackend{}, &plLine{}
	u := NewPL011(be, irq)
	plWr(u, plIMSC, intRX|intRT)
	plWr(u, plLCRH, lcrFEN|0x60)
	plWr(u, plIFLS, 2<<3) // RX at half full: 8 bytes
	be.recv('a')
	if !irq.level || plRd(u, plMIS) != intRT {
		t.Fatalf("one byte: want timeout only, MIS %#x", plRd(u, plMIS))
	}
	for i := 1; i < 8; i++ {
		be.recv(byte('a' + i))
	}
	if plRd(u, plMIS) != intRX|intRT {
		t.Fatalf("8 bytes: MIS %#x", plRd(u, plMIS))
	}
	for i := 8; i < 40; i++ { // overfill: FIFO holds 16, host buffer the rest
		be.recv(byte('a' + i%26))
	}
	if fr := plRd(u, plFR); fr&frRXFF == 0 || fr&frRXFE != 0 {
		t.Fatalf("full FIFO FR = %#x", fr)
	}
	var got []byte
	for plRd(u, plFR)&frRXFE == 0 {
		got = append(got, byte(plRd(u, plDR)))
	}
	want := make([]byte, 40)
	for i := range want {
		want[i] = byte('a' + i%26)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("received %q", got)
	}
	if irq.level || plRd(u, plRIS)&(intRX|intRT) != 0 {
		t.Fatal("empty FIFO must clear RX and RT")
	}
	if plRd(u, plRIS)&intOE != 0 {
		t.Fatal("overrun without loss")
	}
}

// TestPL011NoFIFO: with FEN clear the FIFO is one byte deep and each byte raises RX.
func TestPL011NoFIFO(t *testing.T) {
	be, irq := &plBackend{}, &plLine{}
	u := NewPL011(be, irq)
	plWr(u, plIMSC, intRX)
	be.recv('1')
	be.recv('2')
	if !irq.level || plRd(u, plFR)&frRXFF == 0 {
		t.Fatal("one byte must fill the 1-entry FIFO and raise RX")
	}
	if c := plRd(u, plDR); c != '1' {
		t.Fatalf("DR = %c", c)
	}
	if !irq.level { // '2' moved in from the host buffer
		t.Fatal("second byte did not refill")
	}
	if c := plRd(u, plDR); c != '2' || irq.level {
		t.Fatalf("DR = %c level %v", c, irq.level)
	}
}

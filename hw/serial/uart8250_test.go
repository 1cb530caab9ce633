package serial

import (
	"bytes"
	"gemu/hw/bus"
	"sync"
	"testing"
)

type sink struct {
	mu   sync.Mutex
	out  bytes.Buffer
	recv func(byte)
}

func (s *sink) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.out.Write(p) }
func (s *sink) SetReceiver(f func(byte))    { s.recv = f }
func (s *sink) Close() error                { return nil }

type line struct {
	level bool
	edges int
}

func (l *line) Set(v bool) {
	if v && !l.level {
		l.edges++
	}
	l.level = v
}

func newUART() (*UART8250, *sink, *line) {
	s, l := &sink{}, &line{}
	return NewUART8250(s, l), s, l
}

func in(u *UART8250, reg uint64) byte {
	var b [1]byte
	u.Read(bus.Host, reg, b[:])
	return b[0]
}

func out(u *UART8250, reg uint64, v byte) { u.Write(bus.Host, reg, []byte{v}) }

// TestLinuxProbe replays the register dance of Linux's 8250 autoconfig() and checks it
// identifies a 16550A.
func TestLinuxProbe(t *testing.T) {
	u, _, _ := newUART()
	// Scratch register check.
	out(u, uartSCR, 0xa5)
	if in(u, uartSCR) != 0xa5 {
		t.Fatal("scratch register does not hold its value")
	}
	// IER: all four interrupt enables read back, the upper nibble does not exist.
	out(u, uartIER, 0)
	if in(u, uartIER) != 0 {
		t.Fatal("IER not cleared")
	}
	out(u, uartIER, 0xff)
	if got := in(u, uartIER); got != 0x0f {
		t.Fatalf("IER readback %#x, want 0x0f", got)
	}
	out(u, uartIER, 0)
	// Loopback: MCR = LOOP|OUT2|RTS must show CTS|DCD in the MSR status bits.
	out(u, uartMCR, mcrLoop|mcrOUT2|mcrRTS)
	if got := in(u, uartMSR) & 0xf0; got != 0x90 {
		t.Fatalf("loopback MSR %#x, want 0x90", got)
	}
	out(u, uartMCR, 0)
	// FIFO detection: IIR bits 7:6 = 3 after enabling the FIFOs means 16550A.
	out(u, uartIIR, fcrEnable)
	if got := in(u, uartIIR) >> 6; got != 3 {
		t.Fatalf("IIR FIFO bits %d, want 3 (16550A)", got)
	}
	out(u, uartIIR, 0)
	if got := in(u, uartIIR) >> 6; got != 0 {
		t.Fatalf("IIR FIFO bits %d with FIFOs off", got)
	}
	// Divisor latch behind DLAB, not aliasing IER/RBR.
	out(u, uartLCR, lcrDLAB|0x03)
	out(u, uartRBR, 0x01)
	out(u, uartIER, 0x00)
	if in(u, uartRBR) != 0x01 || in(u, uartIER) != 0 {
		t.Fatal("divisor latch does not read back")
	}
	out(u, uartLCR, 0x03)
	if in(u, uartLCR) != 0x03 {
		t.Fatal("LCR readback")
	}
	if got := in(u, uartLSR); got&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT {
		t.Fatalf("idle LSR %#x lacks THRE|TEMT", got)
	}
}

func TestTransmitAndTHREInterrupt(t *testing.T) {
	u, s, irq := newUART()
	if got := in(u, uartIIR); got != iirNoInt {
		t.Fatalf("reset IIR %#x", got)
	}
	for _, c := range []byte("hi\n") {
		out(u, uartRBR, c)
	}
	if s.out.String() != "hi\n" {
		t.Fatalf("backend got %q", s.out.String())
	}
	if irq.level {
		t.Fatal("IRQ asserted with IER=0")
	}
	// Enabling THRI while THR is empty raises the interrupt (the driver's tx kick).
	out(u, uartIER, ierTHRI)
	if !irq.level || in(u, uartIIR)&0x0f != iirTHRI {
		t.Fatalf("THRE interrupt not raised on IER enable (irq %v)", irq.level)
	}
	// That IIR read acknowledged it.
	if irq.level || in(u, uartIIR)&0x0f != iirNoInt {
		t.Fatal("IIR read did not acknowledge THRE")
	}
	// Each transmitted byte empties THR again and re-raises it.
	out(u, uartRBR, 'x')
	if !irq.level {
		t.Fatal("no THRE interrupt after a THR write")
	}
	out(u, uartIER, 0)
	if irq.level {
		t.Fatal("IRQ still asserted after disabling interrupts")
	}
	// Linux's UART_BUG_THRE test: IER=THRI, read IIR, IER=0, IER=THRI, read IIR; the
	// second read must still show THRE.
	out(u, uartIER, ierTHRI)
	in(u, uartIIR)
	out(u, uartIER, 0)
	out(u, uartIER, ierTHRI)
	if in(u, uartIIR)&iirNoInt != 0 {
		t.Fatal("THRE not re-asserted after IER toggle (driver would flag UART_BUG_THRE)")
	}
}

func TestReceiveInterruptsAndPriority(t *testing.T) {
	u, s, irq := newUART()
	out(u, uartIIR, fcrEnable|0x80) // FIFOs on, trigger level 8
	out(u, uartIER, ierRDI|ierTHRI|ierRLSI)
	in(u, uartIIR) // ack the THRE raised by the enable
	if irq.level {
		t.Fatal("IRQ up with nothing pending")
	}
	s.recv('a')
	if !irq.level {
		t.Fatal("no IRQ for received data")
	}
	if got := in(u, uartIIR); got != iirFIFO|iirCTI {
		t.Fatalf("IIR %#x with one byte under trigger 8, want %#x", got, iirFIFO|iirCTI)
	}
	for _, c := range []byte("bcdefgh") {
		s.recv(c)
	}
	if got := in(u, uartIIR); got != iirFIFO|iirRDI {
		t.Fatalf("IIR %#x at trigger level, want %#x", got, iirFIFO|iirRDI)
	}
	// Received data outranks THRE.
	out(u, uartRBR, '!')
	if got := in(u, uartIIR) & 0x0f; got != iirRDI {
		t.Fatalf("IIR %#x: data must outrank THRE", got)
	}
	var got []byte
	for in(u, uartLSR)&lsrDR != 0 {
		got = append(got, in(u, uartRBR))
	}
	if string(got) != "abcdefgh" {
		t.Fatalf("read %q", got)
	}
	// Now only THRE is left.
	if got := in(u, uartIIR) & 0x0f; got != iirTHRI {
		t.Fatalf("IIR %#x after draining, want THRE", got)
	}
	if irq.level {
		t.Fatal("IRQ still up after draining and acknowledging")
	}
}

func TestReceiveOverflowHeldAndOverrun(t *testing.T) {
	u, s, irq := newUART()
	out(u, uartIIR, fcrEnable)
	out(u, uartIER, ierRDI|ierRLSI)
	// A paste longer than the FIFO is held back, not lost.
	msg := bytes.Repeat([]byte("0123456789"), 10)
	for _, c := range msg {
		s.recv(c)
	}
	var got []byte
	for in(u, uartLSR)&lsrDR != 0 {
		got = append(got, in(u, uartRBR))
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("read %d bytes %q", len(got), got)
	}
	// Beyond the host-side bound the line overruns: LSR.OE and a line-status interrupt,
	// which outranks data and is cleared by reading LSR.
	for i := 0; i < maxPending+fifoSize+1; i++ {
		s.recv('z')
	}
	if got := in(u, uartIIR) & 0x0f; got != iirRLSI {
		t.Fatalf("IIR %#x after overrun, want line status", got)
	}
	if lsr := in(u, uartLSR); lsr&lsrOE == 0 {
		t.Fatalf("LSR %#x lacks OE", lsr)
	}
	if lsr := in(u, uartLSR); lsr&lsrOE != 0 {
		t.Fatal("OE not cleared by reading LSR")
	}
	if got := in(u, uartIIR) & 0x0f; got != iirRDI {
		t.Fatalf("IIR %#x: data interrupt should follow", got)
	}
	out(u, uartIIR, fcrEnable|fcrClearRX)
	if in(u, uartRBR); !irq.level {
		// The FIFO was refilled from the held input after the clear.
		t.Fatal("held input not delivered after a FIFO clear")
	}
}

func TestLoopbackData(t *testing.T) {
	u, s, _ := newUART()
	out(u, uartMCR, mcrLoop)
	out(u, uartRBR, 'L')
	if s.out.Len() != 0 {
		t.Fatalf("loopback byte reached the line: %q", s.out.String())
	}
	s.recv('X') // line input is disconnected in loopback
	if in(u, uartLSR)&lsrDR == 0 || in(u, uartRBR) != 'L' {
		t.Fatal("loopback byte not received")
	}
	if in(u, uartLSR)&lsrDR != 0 {
		t.Fatal("line input leaked in during loopback")
	}
	// Leaving loopback flags the modem-status change (delta bits) once.
	out(u, uartMCR, mcrLoop|mcrDTR|mcrRTS|mcrOUT1|mcrOUT2)
	if got := in(u, uartMSR); got&0xf0 != 0xf0 || got&(msrDCTS|msrDDSR|msrDDCD) == 0 {
		t.Fatalf("loopback MSR %#x", got)
	}
	if got := in(u, uartMSR); got&0x0f != 0 {
		t.Fatalf("MSR deltas %#x not cleared by the read", got)
	}
}

func TestReset(t *testing.T) {
	u, s, irq := newUART()
	out(u, uartIER, ierRDI)
	s.recv('q')
	if !irq.level {
		t.Fatal("no IRQ")
	}
	u.Reset()
	if irq.level || in(u, uartLSR)&lsrDR != 0 || in(u, uartIER) != 0 {
		t.Fatal("reset left state behind")
	}
}

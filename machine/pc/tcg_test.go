package pc

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"gemu/accel"
)

// Guest addresses of the interrupt test's IDT, its IDTR and the handlers' counters.
const (
	tIDT   = 0x50000
	tIDTR  = 0x51000
	tCount = 0x51100 // three dwords: PIC, IOAPIC and MSI interrupts taken
)

func d32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// waitCount is "1: hlt; cmp dword [abs addr], n; jb 1b".
func waitCount(addr uint32, n byte) []byte {
	b := []byte{0xf4, 0x83, 0x3c, 0x25}
	b = append(b, d32(addr)...)
	return append(b, n, 0x72, 0xf6)
}

// outb is "mov al, v; out port, al".
func outb(port, v byte) []byte { return []byte{0xb0, v, 0xe6, port} }

// movRBX stores imm to [rbx+off] (the LAPIC page), movRCX to [rcx+off] (the IOAPIC).
func movRBX(off, imm uint32) []byte {
	return append(append([]byte{0xc7, 0x83}, d32(off)...), d32(imm)...)
}
func movRCX(off byte, imm uint32) []byte {
	return append([]byte{0xc7, 0x41, off}, d32(imm)...)
}

// irqGuest is a bare-metal 64-bit guest (entered through the bzImage loader's long-mode
// entry) that takes interrupts the way a kernel does: the PIT's IRQ 0 through the
// 8259 (ExtINT on LINT0), then through the IOAPIC (pin 2, the ISA override), then an
// MSI the host sends to the LAPIC. It prints P, I and M to COM1 after each and powers
// off. It returns the code and the offsets of its three handlers.
func irqGuest() (code []byte, handlers [3]int) {
	var c []byte
	c = append(c, 0x0f, 0x01, 0x1c, 0x25) // lidt [abs tIDTR]
	c = append(c, d32(tIDTR)...)
	c = append(c, 0xbb) // mov ebx, LAPIC
	c = append(c, d32(LAPICBase)...)
	c = append(c, 0xb9) // mov ecx, IOAPIC
	c = append(c, d32(IOAPICBase)...)
	c = append(c, movRBX(0xf0, 0x1ff)...)  // SVR: enabled, spurious 0xff
	c = append(c, movRBX(0x350, 0x700)...) // LINT0: ExtINT (virtual wire)
	for _, p := range [][2]byte{{0x20, 0x11}, {0x21, 0x20}, {0x21, 0x04}, {0x21, 0x01}, {0x21, 0xfe},
		{0xa0, 0x11}, {0xa1, 0x28}, {0xa1, 0x02}, {0xa1, 0x01}, {0xa1, 0xff}} {
		c = append(c, outb(p[0], p[1])...) // 8259s: base 0x20/0x28, only IRQ 0 unmasked
	}
	c = append(c, outb(0x43, 0x34)...) // PIT channel 0, mode 2, count 1193 (1 kHz)
	c = append(c, outb(0x40, 1193&0xff)...)
	c = append(c, outb(0x40, 1193>>8)...)
	c = append(c, 0xfb) // sti
	c = append(c, waitCount(tCount, 3)...)
	c = append(c, 0xfa)                // cli
	c = append(c, outb(0x21, 0xff)...) // mask the 8259
	c = append(c, comOut...)
	c = append(c, putc('P')...)
	// IOAPIC pin 2 -> vector 0x30, edge, fixed, APIC 0.
	c = append(c, movRCX(0, 0x15)...)
	c = append(c, movRCX(0x10, 0)...)
	c = append(c, movRCX(0, 0x14)...)
	c = append(c, movRCX(0x10, 0x30)...)
	c = append(c, 0xfb)
	c = append(c, waitCount(tCount+4, 3)...)
	c = append(c, 0xfa)
	c = append(c, movRCX(0, 0x14)...)
	c = append(c, movRCX(0x10, 0x10030)...) // masked
	c = append(c, comOut...)
	c = append(c, putc('I')...)
	c = append(c, 0xfb)
	c = append(c, waitCount(tCount+8, 1)...)
	c = append(c, 0xfa)
	c = append(c, comOut...)
	c = append(c, putc('M')...)
	c = append(c, putc('\n')...)
	c = append(c,
		0x66, 0xba, 0x04, 0x06, // mov dx, 0x604 (PM1a_CNT)
		0x66, 0xb8, 0x01, 0x34, // mov ax, SLP_TYP=5 | SLP_EN | SCI_EN
		0x66, 0xef, // out dx, ax
	)
	c = append(c, haltLoop...)

	// Vector 0x20 (8259): count, EOI at the master.
	handlers[0] = len(c)
	c = append(c, 0x50, 0xff, 0x04, 0x25) // push rax; inc dword [abs]
	c = append(c, d32(tCount)...)
	c = append(c, outb(0x20, 0x20)...)
	c = append(c, 0x58, 0x48, 0xcf) // pop rax; iretq
	// Vectors 0x30 (IOAPIC) and 0x40 (MSI): count, EOI at the LAPIC.
	for i := 1; i < 3; i++ {
		handlers[i] = len(c)
		c = append(c, 0xff, 0x04, 0x25)
		c = append(c, d32(tCount+4*uint32(i))...)
		c = append(c, movRBX(0xb0, 0)...)
		c = append(c, 0x48, 0xcf)
	}
	return c, handlers
}

// installIDT writes the 64-bit IDT at tIDT and its IDTR at tIDTR: an interrupt gate
// per vector to the handler at that offset from the kernel's entry.
func installIDT(t *testing.T, m *Machine, handlers map[int]int) {
	t.Helper()
	entry := m.Boot.State.Regs.RIP
	sel := m.Boot.State.SRegs.CS.Selector
	idt := make([]byte, 256*16)
	for vec, off := range handlers {
		a := entry + uint64(off)
		g := idt[vec*16:]
		binary.LittleEndian.PutUint16(g[0:], uint16(a))
		binary.LittleEndian.PutUint16(g[2:], sel)
		g[5] = 0x8e // present, DPL 0, 64-bit interrupt gate
		binary.LittleEndian.PutUint16(g[6:], uint16(a>>16))
		binary.LittleEndian.PutUint32(g[8:], uint32(a>>32))
	}
	if err := m.RAM.WriteAt(idt, tIDT); err != nil {
		t.Fatal(err)
	}
	idtr := binary.LittleEndian.AppendUint16(nil, 0xfff)
	idtr = binary.LittleEndian.AppendUint64(idtr, tIDT)
	if err := m.RAM.WriteAt(idtr, tIDTR); err != nil {
		t.Fatal(err)
	}
}

// TestTCGInterrupts runs irqGuest on gemu's translator with the userspace chipset:
// the PIT's interrupt reaches the vCPU through the 8259 and the LAPIC's ExtINT, then
// through the IOAPIC, and a host MSI through the LAPIC; every handler EOIs, so each
// later interrupt also proves the EOI reached the right controller.
func TestTCGInterrupts(t *testing.T) {
	code, h := irqGuest()
	con := &capture{}
	m, err := NewTCG(Config{MemSize: 64 << 20, CPUs: 1, Kernel: image(guestImage(code)), Cmdline: "console=ttyS0", Serial: con}, TCGConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.VM.(accel.Chipset); !ok || m.Chipset() == nil {
		t.Fatal("TCG board has no userspace chipset")
	}
	installIDT(t, m, map[int]int{0x20: h[0], 0x30: h[1], 0x40: h[2]})

	hung := false
	t.Cleanup(func() {
		if !hung {
			m.VM.Close()
			m.Close()
		}
	})
	msi, ok := m.VM.(accel.MSI)
	if !ok {
		t.Fatal("TCG VM has no MSI")
	}
	stopMSI := make(chan struct{})
	go func() { // once the guest waits for it, send MSIs (vector 0x40, APIC 0) until it is done
		for {
			select {
			case <-stopMSI:
				return
			case <-time.After(5 * time.Millisecond):
			}
			con.mu.Lock()
			ready := strings.Contains(con.out.String(), "I")
			con.mu.Unlock()
			if ready {
				msi.SignalMSI(0xfee00000, 0x40)
			}
		}
	}()
	defer close(stopMSI)
	stop := time.AfterFunc(60*time.Second, func() { m.VM.Stop(accel.Stopped) })
	defer stop.Stop()
	type result struct {
		r   accel.ExitReason
		err error
	}
	done := make(chan result, 1)
	go func() { r, err := m.Run(); done <- result{r, err} }()
	var res result
	select {
	case res = <-done:
	case <-time.After(90 * time.Second):
		hung = true
		t.Fatalf("Run did not return after Stop (console %q)", con.out.String())
	}
	con.mu.Lock()
	out := con.out.String()
	con.mu.Unlock()
	var n [3]uint32
	for i := range n {
		n[i] = u32(m.RAM, tCount+4*uint64(i))
	}
	if res.err != nil || res.r != accel.PowerOff || out != "PIM\n" {
		t.Fatalf("exit %v (%v), console %q, interrupts taken (PIC, IOAPIC, MSI) %v; want power off and \"PIM\\n\"",
			res.r, res.err, out, n)
	}
	if n[0] < 3 || n[1] < 3 || n[2] < 1 {
		t.Fatalf("interrupts taken (PIC, IOAPIC, MSI) %v", n)
	}
}

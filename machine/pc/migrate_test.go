package pc

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"gemu/accel"
)

const tBoots = 0x51200 // a dword the tick guest increments once when it starts

// tickGuest counts the PIT's 1 kHz IRQ 0 (through the 8259 and the LAPIC's ExtINT) in
// a dword at tCount until it reaches n, then prints D on COM1 and powers off. It
// counts its starts at tBoots. It returns the code and the offset of its handler.
func tickGuest(n uint32) (code []byte, handler int) {
	var c []byte
	c = append(c, 0x0f, 0x01, 0x1c, 0x25) // lidt [abs tIDTR]
	c = append(c, d32(tIDTR)...)
	c = append(c, 0xff, 0x04, 0x25) // inc dword [abs tBoots]
	c = append(c, d32(tBoots)...)
	c = append(c, 0xbb) // mov ebx, LAPIC
	c = append(c, d32(LAPICBase)...)
	c = append(c, movRBX(0xf0, 0x1ff)...)
	c = append(c, movRBX(0x350, 0x700)...)
	for _, p := range [][2]byte{{0x20, 0x11}, {0x21, 0x20}, {0x21, 0x04}, {0x21, 0x01}, {0x21, 0xfe}} {
		c = append(c, outb(p[0], p[1])...)
	}
	c = append(c, outb(0x43, 0x34)...)
	c = append(c, outb(0x40, 1193&0xff)...)
	c = append(c, outb(0x40, 1193>>8)...)
	c = append(c, 0xfb)                   // sti
	c = append(c, 0xf4, 0x81, 0x3c, 0x25) // 1: hlt; cmp dword [abs tCount], n; jb 1b
	c = append(c, d32(tCount)...)
	c = append(c, d32(n)...)
	c = append(c, 0x72, 0xf2)
	c = append(c, 0xfa)
	c = append(c, comOut...)
	c = append(c, putc('D')...)
	c = append(c,
		0x66, 0xba, 0x04, 0x06, // mov dx, 0x604 (PM1a_CNT)
		0x66, 0xb8, 0x01, 0x34, // mov ax, SLP_TYP=5 | SLP_EN | SCI_EN
		0x66, 0xef, // out dx, ax
	)
	c = append(c, haltLoop...)
	handler = len(c)
	c = append(c, 0x50, 0xff, 0x04, 0x25) // push rax; inc dword [abs tCount]
	c = append(c, d32(tCount)...)
	c = append(c, outb(0x20, 0x20)...)
	c = append(c, 0x58, 0x48, 0xcf) // pop rax; iretq
	return c, handler
}

// TestTCGSaveLoad saves a running tick guest (paused in the middle of its count) and
// loads it into a second board built from the same configuration, which runs it on:
// the count goes on from the saved value to the end without a second start, the
// guest's COM1 output and power-off arrive on the second board. A board with other
// RAM refuses the stream naming the difference, before its guest changes.
func TestTCGSaveLoad(t *testing.T) {
	const total = 400
	code, h := tickGuest(total)
	build := func(mem uint64, con *capture) *Machine {
		m, err := NewTCG(Config{MemSize: mem, CPUs: 1, Kernel: image(guestImage(code)), Serial: con}, TCGConfig{})
		if err != nil {
			t.Fatal(err)
		}
		installIDT(t, m, map[int]int{0x20: h})
		t.Cleanup(func() { m.VM.Close(); m.Close() })
		return m
	}
	run := func(m *Machine) chan accel.ExitReason {
		done := make(chan accel.ExitReason, 1)
		go func() { r, _ := m.Run(); done <- r }()
		return done
	}
	conA := &capture{}
	a := build(64<<20, conA)
	doneA := run(a)
	deadline := time.Now().Add(60 * time.Second)
	for u32(a.RAM, tCount) < 100 {
		if time.Now().After(deadline) {
			t.Fatalf("the guest counted %d ticks in 60 s", u32(a.RAM, tCount))
		}
		time.Sleep(time.Millisecond)
	}
	if err := a.Pause(); err != nil {
		t.Fatal(err)
	}
	var stream bytes.Buffer
	if _, err := a.Save(&stream); err != nil {
		t.Fatal(err)
	}
	saved := u32(a.RAM, tCount)
	if saved >= total {
		t.Skipf("the guest finished (%d ticks) before it was paused", saved)
	}
	a.VM.Stop(accel.Stopped)
	<-doneA

	other := build(128<<20, &capture{})
	if err := other.Pause(); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Load(bytes.NewReader(stream.Bytes())); err == nil || !strings.Contains(err.Error(), "ram=64M, this one ram=128M") {
		t.Fatalf("load into 128 MiB: %v", err)
	}

	conB := &capture{}
	b := build(64<<20, conB)
	if err := b.Pause(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Load(bytes.NewReader(stream.Bytes())); err != nil {
		t.Fatal(err)
	}
	if got := u32(b.RAM, tCount); got != saved {
		t.Fatalf("restored count %d, saved %d", got, saved)
	}
	doneB := run(b)
	b.Resume()
	select {
	case r := <-doneB:
		if r != accel.PowerOff {
			t.Fatalf("restored guest ended with %v", r)
		}
	case <-time.After(60 * time.Second):
		b.VM.Stop(accel.Stopped)
		<-doneB
		t.Fatalf("restored guest did not finish: count %d (saved at %d)", u32(b.RAM, tCount), saved)
	}
	conB.mu.Lock()
	out := conB.out.String()
	conB.mu.Unlock()
	if out != "D" || u32(b.RAM, tCount) < total || u32(b.RAM, tBoots) != 1 {
		t.Fatalf("restored guest: console %q, count %d, starts %d", out, u32(b.RAM, tCount), u32(b.RAM, tBoots))
	}
	t.Logf("saved at tick %d, %d bytes", saved, stream.Len())
}

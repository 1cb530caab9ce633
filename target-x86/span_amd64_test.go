package x86

import (
	"encoding/binary"
	"runtime"
	"testing"
)

func runtimeGosched() { runtime.Gosched() }

// TestPageStraddle runs instructions that straddle a page boundary: a MOV r64, imm64
// whose immediate continues into the next (mapped) page, a block the run loop must
// record on both physical pages (a write to the second page must invalidate it), and
// one whose second page is not mapped, which must raise #PF for the fetch (I/D set, CR2
// the second page) with the saved RIP at the instruction's start.
func TestPageStraddle(t *testing.T) {
	h := newGemuHarness(t, nil)
	c := h.c
	// movabs $imm,%rax at the last 5 bytes of the code page; the rest (5 bytes of the
	// immediate) and a HLT at the start of the data page.
	insn := func(imm uint64) []byte {
		b := []byte{0x48, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0xf4}
		binary.LittleEndian.PutUint64(b[2:], imm)
		return b
	}
	write := func(imm uint64) {
		b := insn(imm)
		if err := h.ram.WriteAt(b[:5], dtRAMPA+0xffb); err != nil {
			t.Fatal(err)
		}
		if err := h.ram.WriteAt(b[5:], dtRAMPA+0x1000); err != nil {
			t.Fatal(err)
		}
	}
	write(0x1122334455667788)
	res := h.runAt(t, dtCode+0xffb, dtData+6)
	if res.vector >= 0 || c.R[0] != 0x1122334455667788 {
		t.Fatalf("straddling mov: vector %d, rax %#x", res.vector, c.R[0])
	}
	// Through the run loop and its block cache: the spanning block is cached on both
	// pages, so a write to the second page alone must make the next run use new bytes.
	loop := func() {
		c.RIP = dtCode + 0xffb
		c.halted.Store(false)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { c.Run(stop); close(done) }()
		for !c.Halted() {
			runtimeGosched()
		}
		close(stop)
		<-done
	}
	loop()
	if c.R[0] != 0x1122334455667788 {
		t.Fatalf("run loop: rax %#x", c.R[0])
	}
	b := insn(0x99aabbccddeeff00)
	if err := h.ram.WriteAt(b[5:], dtRAMPA+0x1000); err != nil {
		t.Fatal(err)
	}
	loop()
	if c.R[0]>>24 != 0x99aabbccdd {
		t.Fatalf("after rewriting the second page: rax %#x (stale translation)", c.R[0])
	}

	// The page after the stack page is unmapped: an instruction straddling into it.
	if err := h.ram.WriteAt([]byte{0x48, 0xb8, 0x11}, dtRAMPA+0x3ffd); err != nil {
		t.Fatal(err)
	}
	res = h.runAt(t, dtStack+0xffd, 0)
	if res.vector != excPF || res.err != pfI || res.cr2 != dtStack+0x1000 {
		t.Fatalf("fetch across into an unmapped page: vector %d err %#x cr2 %#x", res.vector, res.err, res.cr2)
	}
	// The frame went onto the IST1 stack, which is the page holding the instruction's
	// first bytes: RIP is at the top minus 40.
	rip, _ := h.ram.Read64(dtRAMPA + 0x4000 - 40)
	if rip != dtStack+0xffd {
		t.Errorf("saved RIP %#x, want %#x", rip, dtStack+0xffd)
	}
}

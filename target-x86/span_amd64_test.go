package x86

import (
	"encoding/binary"
	"runtime"
	"testing"
	"time"
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

// TestPageStraddleMappedLater: an instruction straddling into a not-present page faults
// (#PF on the fetch); once the handler maps that page, re-executing the instruction
// must run it. The block the run loop cached for the first attempt holds only the
// faulting fetch, so it must not survive the page becoming present: Linux demand-pages
// busybox's text this way, and a stale stub left /init spinning on one RIP.
func TestPageStraddleMappedLater(t *testing.T) {
	h := newGemuHarness(t, nil)
	c := h.c
	next := uint64(0x40000) // page-table pages for the new mappings
	mapPage := func(va, pa uint64) {
		table := uint64(0x1000)
		for lvl := 3; lvl >= 1; lvl-- {
			ea := table + 8*(va>>(12+9*uint(lvl))&511)
			e, _ := h.ram.Read64(ea)
			if e&1 == 0 {
				e = next | 7
				next += 0x1000
				if err := h.ram.Write64(ea, e); err != nil {
					t.Fatal(err)
				}
			}
			table = e &^ 0xfff
		}
		if err := h.ram.Write64(table+8*(va>>12&511), pa|3); err != nil {
			t.Fatal(err)
		}
	}
	va := dtCode + 0x4000 // past the harness's four pages; va+0x1000 is not mapped
	mapPage(va, 0x30000)
	// movabs $0x1122334455667788,%rax from va+0xffd: 3 bytes here, 7 on the next page,
	// then HLT.
	if err := h.ram.WriteAt([]byte{0x48, 0xb8, 0x88}, 0x30ffd); err != nil {
		t.Fatal(err)
	}
	if err := h.ram.WriteAt([]byte{0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xf4}, 0x31000); err != nil {
		t.Fatal(err)
	}
	// run goes through the run loop and its block cache, from va+0xffd to a HLT.
	run := func() {
		c.RIP = va + 0xffd
		c.CR2 = 0
		c.halted.Store(false)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { c.Run(stop); close(done) }()
		deadline := time.Now().Add(30 * time.Second) // a hang guard, not a speed assertion
		for !c.Halted() {
			if time.Now().After(deadline) {
				close(stop)
				<-done
				t.Fatalf("no HLT reached: RIP %#x (stuck on a stale translation?)", c.RIP)
			}
			runtimeGosched()
		}
		close(stop)
		<-done
	}
	c.R[0] = 0
	run()
	if c.RIP != dtHandlr+16*excPF+1 || c.CR2 != va+0x1000 {
		t.Fatalf("first run: halted at %#x (want the #PF handler), CR2 %#x", c.RIP, c.CR2)
	}
	mapPage(va+0x1000, 0x31000) // what the guest's #PF handler does
	run()
	if c.RIP != va+0x1000+8 || c.R[0] != 0x1122334455667788 {
		t.Fatalf("after mapping the page: halted at %#x, rax %#x (want %#x, 0x1122334455667788)", c.RIP, c.R[0], va+0x1000+8)
	}
}

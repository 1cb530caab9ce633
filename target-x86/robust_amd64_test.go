package x86

import (
	"math/rand"
	"testing"

	"gemu/tcg"
)

// TestRandomBytesNeverPanic decodes, translates and runs random byte strings (random
// prefixes, opcode-map escapes and ModRM bytes over random registers) in 64-bit mode in
// the translator alone: guest code must only ever raise guest exceptions, never panic
// or hang the host. Whatever it does is bounded to a few thousand blocks per case.
func TestRandomBytesNeverPanic(t *testing.T) {
	h := newGemuHarness(t, nil)
	c := h.c
	r := rand.New(rand.NewSource(3))
	prefixes := []byte{0x66, 0x67, 0xf2, 0xf3, 0xf0, 0x2e, 0x64, 0x65, 0x40, 0x48, 0x4c, 0x41}
	cases := 20000
	if testing.Short() {
		cases = 2000
	}
	vectors := map[int]int{}
	type sys struct {
		flags, cr0, cr3, cr4, efer, cpl uint64
		idt, gdt                        DTable
		cs, ss                          Segment
	}
	snap := func(c *CPU) sys {
		return sys{c.flags, c.CR0, c.CR3, c.CR4, c.EFER, c.cpl, c.IDT, c.GDT, c.Seg[segCS], c.Seg[segSS]}
	}
	initial := snap(c)
	fresh := 0
	for i := 0; i < cases; i++ {
		code := make([]byte, 0, 24)
		for k := r.Intn(3); k > 0; k-- {
			code = append(code, prefixes[r.Intn(len(prefixes))])
		}
		switch r.Intn(4) {
		case 0:
			code = append(code, 0x0f)
		case 1:
			code = append(code, 0x0f, []byte{0x38, 0x3a}[r.Intn(2)])
		}
		for k := 0; k < 12; k++ {
			code = append(code, byte(r.Intn(256)))
		}
		s := randomState(r)
		page := make([]byte, 4096)
		copy(page[0x100:], code)
		page[0x100+len(code)] = 0xf4
		h.ram.WriteAt(page, dtRAMPA)
		h.ram.WriteAt(s.Data[:], dtRAMPA+0x1000)
		c.R = s.R
		c.RFLAGS = s.Flags | RFLAGS_RESERVED
		c.RIP = dtStart
		c.halted.Store(false)
		c.LastVector = -1
		for n := 0; n < 2000 && !c.halted.Load() && c.on.Load(); n++ {
			pa, host, ok := c.fetch(c.RIP)
			if !ok {
				continue
			}
			tr := c.translateBlock(tcg.Key{PC: c.RIP, Phys: pa, Flags: c.flags}, host)
			tr.Code(c)
		}
		vectors[c.LastVector]++
		// Start over on a fresh vCPU when the random code changed system state.
		if snap(c) != initial || !c.on.Load() {
			h = newGemuHarness(t, nil)
			c = h.c
			fresh++
		}
	}
	t.Logf("%d random byte strings (%d changed system state); last vectors delivered: %v", cases, fresh, vectors)
}

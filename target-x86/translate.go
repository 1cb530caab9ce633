package x86

import (
	"fmt"
	"unsafe"

	"golang.org/x/arch/x86/x86asm"

	"gemu/tcg"
)

// op is a helper: the closure the translator builds for one guest instruction, called
// from translated code. It returns false when the block must end after it (control
// transfer, exception, mode change); it has then set RIP.
type op = func(c *CPU) bool

// lowerIR selects lowering the forms lower.go handles to IR ops (tests turn it off to
// compare with the helpers).
var lowerIR = true

// maxBlockInsns bounds a translation block so interrupts are checked often enough.
const maxBlockInsns = 64

// translateBlock is the run loop's Translate hook.
func (c *CPU) translateBlock(k tcg.Key, host unsafe.Pointer) tcg.Translation[CPU] {
	var b tcg.Builder[CPU]
	r := &byteReader{c: c, page: k.PC &^ 0xfff, host: unsafe.Slice((*byte)(host), 0x1000)}
	pc := k.PC
	mode64 := k.Flags&flagLong != 0
	def32 := k.Flags&flagCS32 != 0
	var spans bool
	var page2 uint64
	var st lowerState
	for n := 0; n < maxBlockInsns; n++ {
		r.va, r.n, r.bad = pc, 0, false
		in, ok := decode(r, mode64, def32)
		if !mode64 {
			in.csBase = c.Seg[segCS].Base
		}
		if !ok {
			if n > 0 {
				break // the faulting fetch is the next block's first instruction
			}
			b.SetPC(pc)
			ipc := pc
			if r.bad {
				// The block is cached: once the guest maps the page (the #PF handler's
				// job), the fetch succeeds and this stub must go, or RIP would stay here.
				va, phys := r.badVA, k.Phys
				b.Call(func(c *CPU) bool {
					c.RIP = ipc
					if _, ok := c.codeByte(va); ok {
						c.eng.Cache().InvalidateRange(phys, 1)
					}
					return false
				})
			} else {
				b.Call(func(c *CPU) bool { c.RIP = ipc; c.raise(excGP, 0); return false })
			}
			pc = in.next
			break
		}
		if r.spans {
			spans, page2 = true, r.page2
		}
		if c.tflag&TraceInAsm != 0 {
			c.traceInsn(r, &in)
		}
		b.SetPC(pc)
		handled, end := false, false
		if lowerIR {
			handled, end = lower(&b, &in, &st)
		}
		if !handled {
			var h op
			h, end = c.translate(&in, k.Flags)
			ipc := pc
			b.Call(func(c *CPU) bool { c.RIP = ipc; c.syncFlags(); return h(c) })
			st.pend = 0 // the helper settled the lazy flags
		}
		pc = in.next
		if in.mapn == 0 && in.opc == 0xfb && n == maxBlockInsns-1 {
			n-- // STI's interrupt shadow: the next instruction runs in this block too
		}
		if end || spans || pc&0xfff == 0 {
			break
		}
	}
	b.SetPC(pc)
	flush(&b, &st)
	b.Exit(tcg.Imm(pc))
	f, lk, err := tcg.CompileLinked(irTarget, b.Ops)
	if err != nil {
		start := k.PC
		f, lk = func(c *CPU) { c.RIP = start; c.raise(excUD, -1) }, tcg.Linkage{}
	}
	return tcg.Translation[CPU]{Code: f, End: pc, Link: lk, Spans: spans, Page2: page2}
}

func (c *CPU) traceInsn(r *byteReader, in *insn) {
	code := make([]byte, in.length)
	rr := *r
	rr.va, rr.n = in.pc, 0
	for i := range code {
		code[i] = rr.byte()
	}
	mode := 64
	if !in.mode64 {
		mode = 32
	}
	text := "(bad)"
	if d, err := x86asm.Decode(code, mode); err == nil {
		text = x86asm.GNUSyntax(d, in.pc, nil)
	}
	fmt.Fprintf(c.trace, "0x%016x:  % x  %s\n", in.pc, code, text)
}

func ud(c *CPU) bool { c.raise(excUD, -1); return false }

// translate returns the helper for in and whether the block ends after it.
func (c *CPU) translate(in *insn, flags uint64) (op, bool) {
	if in.lock && !lockOK(in) {
		return ud, true
	}
	switch in.mapn {
	case 0:
		return c.translate1(in, flags)
	case 1:
		return c.translate0F(in, flags)
	case 2, 3:
		return c.translateSSE(in, flags)
	}
	return ud, true
}

// lockOK reports whether LOCK is allowed: a memory destination of ADD, OR, ADC, SBB,
// AND, SUB, XOR, BTS, BTR, BTC, XCHG, XADD, CMPXCHG, CMPXCHG8B/16B, INC, DEC, NOT, NEG.
func lockOK(in *insn) bool {
	if !in.hasMem {
		return false
	}
	o := in.opc
	if in.mapn == 0 {
		switch {
		case o < 0x38 && o&7 < 2:
			return true
		case o >= 0x80 && o <= 0x83:
			return in.reg&7 != 7
		case o == 0x86 || o == 0x87:
			return true
		case o == 0xf6 || o == 0xf7:
			return in.reg&7 == 2 || in.reg&7 == 3
		case o == 0xfe || o == 0xff:
			return in.reg&7 < 2
		}
		return false
	}
	if in.mapn == 1 {
		switch o {
		case 0xab, 0xb3, 0xbb, 0xb0, 0xb1, 0xc0, 0xc1:
			return true
		case 0xba:
			return in.reg&7 >= 5
		case 0xc7:
			return in.reg&7 == 1
		}
	}
	return false
}

// opSize8 is the operand size of a byte/full pair (bit 0 of the opcode clear: byte).
func opSize8(in *insn) int {
	if in.opc&1 == 0 {
		return 1
	}
	return in.opsz
}

package x86

import (
	"sync/atomic"
	"unsafe"
)

// Operand access for instruction helpers: registers (with the legacy high-byte
// registers AH..BH when there is no REX prefix), effective addresses and the
// read-modify-write paths (atomic ones for LOCK and XCHG).

func (c *CPU) getReg(n byte, size int, rex byte) uint64 {
	if size == 1 {
		if rex == 0 && n >= 4 && n < 8 {
			return c.R[n-4] >> 8 & 0xff
		}
		return c.R[n] & 0xff
	}
	return c.R[n] & sizeMask(size)
}

func (c *CPU) setReg(n byte, size int, rex byte, v uint64) {
	switch size {
	case 1:
		if rex == 0 && n >= 4 && n < 8 {
			c.R[n-4] = c.R[n-4]&^0xff00 | (v&0xff)<<8
			return
		}
		c.R[n] = c.R[n]&^0xff | v&0xff
	case 2:
		c.R[n] = c.R[n]&^0xffff | v&0xffff
	case 4:
		c.R[n] = v & 0xffffffff
	default:
		c.R[n] = v
	}
}

// ea returns the linear address of the memory operand.
func (c *CPU) ea(in *insn) uint64 {
	a := in.disp
	if !in.ripRel {
		if in.base >= 0 {
			a += c.R[in.base]
		}
		if in.index >= 0 {
			a += c.R[in.index] << in.scale
		}
	}
	return c.linear(in, a, in.base == 4 || in.base == 5 && !in.ripRel)
}

// linear truncates offset a to the address size and adds the segment base (FS/GS in
// 64-bit mode; the override or default segment otherwise; stack says SS is the default).
func (c *CPU) linear(in *insn, a uint64, stack bool) uint64 {
	switch in.adsz {
	case 4:
		a &= 0xffffffff
	case 2:
		a &= 0xffff
	}
	s := in.seg
	if in.mode64 {
		if s == segFS || s == segGS {
			return a + c.Seg[s].Base
		}
		return a
	}
	if s < 0 {
		s = segDS
		if stack {
			s = segSS
		}
	}
	return (a + c.Seg[s].Base) & 0xffffffff
}

// readRM reads the r/m operand; for memory it also returns the address.
func (c *CPU) readRM(in *insn, size int) (v, ea uint64, ok bool) {
	if !in.hasMem {
		return c.getReg(in.rm, size, in.rex), 0, true
	}
	ea = c.ea(in)
	v, ok = c.ld(ea, size)
	return v, ea, ok
}

// writeRM writes the r/m operand (ea from readRM, or computed when the operand is
// write-only).
func (c *CPU) writeRM(in *insn, size int, ea, v uint64) bool {
	if !in.hasMem {
		c.setReg(in.rm, size, in.rex, v)
		return true
	}
	return c.st(ea, size, v)
}

// rmw applies f to the r/m operand: f returns the new value and whether to store it.
// atomic makes a memory operand's update atomic across vCPUs (LOCK, XCHG): a
// compare-and-swap loop on host memory, f possibly called again.
func (c *CPU) rmw(in *insn, size int, atomicOp bool, f func(old uint64) (uint64, bool)) bool {
	if !in.hasMem {
		old := c.getReg(in.rm, size, in.rex)
		if n, w := f(old); w {
			c.setReg(in.rm, size, in.rex, n)
		}
		return true
	}
	ea := c.ea(in)
	if !atomicOp {
		old, ok := c.ld(ea, size)
		if !ok {
			return false
		}
		if n, w := f(old); w {
			return c.st(ea, size, n)
		}
		return true
	}
	return c.atomicRMW(ea, size, f)
}

func (c *CPU) atomicRMW(ea uint64, size int, f func(old uint64) (uint64, bool)) bool {
	host, ok := c.hostRMW(ea, size)
	if !ok {
		return false
	}
	off := uintptr(host) & 7
	if host == nil || int(off)+size > 8 {
		// MMIO, page- or word-crossing (a split lock): serialise through the engine.
		c.eng.Exclusive.Lock()
		defer c.eng.Exclusive.Unlock()
		old, ok := c.ld(ea, size)
		if !ok {
			return false
		}
		if n, w := f(old); w {
			return c.st(ea, size, n)
		}
		return true
	}
	word := (*uint64)(unsafe.Pointer(uintptr(host) &^ 7))
	sh := 8 * off
	m := sizeMask(size) << sh
	for {
		w := atomic.LoadUint64(word)
		n, store := f(w & m >> sh)
		if !store {
			return true
		}
		if atomic.CompareAndSwapUint64(word, w, w&^m|n<<sh&m) {
			return true
		}
	}
}

// push and pop use the stack-address size (64-bit in long mode; SS.B elsewhere).
func (c *CPU) stackSize(in *insn) int {
	if in.mode64 {
		return 8
	}
	if c.Seg[segSS].DB {
		return 4
	}
	return 2
}

func (c *CPU) push(in *insn, size int, v uint64) bool {
	ss := c.stackSize(in)
	sp := (c.R[4] - uint64(size)) & sizeMask(ss)
	a := sp
	if !in.mode64 {
		a = (a + c.Seg[segSS].Base) & 0xffffffff
	}
	if !c.st(a, size, v) {
		return false
	}
	c.R[4] = c.R[4]&^sizeMask(ss) | sp
	return true
}

func (c *CPU) pop(in *insn, size int) (uint64, bool) {
	ss := c.stackSize(in)
	sp := c.R[4] & sizeMask(ss)
	a := sp
	if !in.mode64 {
		a = (a + c.Seg[segSS].Base) & 0xffffffff
	}
	v, ok := c.ld(a, size)
	if !ok {
		return 0, false
	}
	c.R[4] = c.R[4]&^sizeMask(ss) | (sp+uint64(size))&sizeMask(ss)
	return v, true
}

// stackOpSize is the operand size of PUSH/POP/CALL/RET: 8 in 64-bit mode unless 66.
func stackOpSize(in *insn) int {
	if in.mode64 {
		if in.pfx66 {
			return 2
		}
		return 8
	}
	return in.opsz
}

package x86

import (
	"math/bits"
	"sync/atomic"
	"unsafe"
)

// The 0F opcode map: integer and system instructions (SSE is in sse.go).

func (c *CPU) translate0F(in *insn, flags uint64) (op, bool) {
	o := in.opc
	switch {
	case o == 0x00:
		return c.group6(in), true
	case o == 0x01:
		return c.group7(in)
	case o == 0x05:
		return c.syscall(in), true
	case o == 0x06: // CLTS
		return c.priv(func(c *CPU) bool { c.CR0 &^= cr0TS; c.modeChanged(); c.RIP = in.next; return false }), true
	case o == 0x07:
		return c.sysret(in), true
	case o == 0x34:
		return c.sysenter(in), true
	case o == 0x35:
		return c.sysexit(in), true
	case o == 0x08 || o == 0x09: // INVD, WBINVD
		return c.priv(func(c *CPU) bool { return true }), false
	case o == 0x0b:
		return ud, true
	case o == 0x77: // EMMS: every x87 tag empty and TOP 0, as the host CPU does (#UD with CR0.EM, #NM with CR0.TS)
		return func(c *CPU) bool {
			switch {
			case c.CR0&cr0EM != 0:
				c.raise(excUD, -1)
				return false
			case c.CR0&cr0TS != 0:
				c.raise(excNM, -1)
				return false
			}
			c.sse.ftw, c.sse.top = 0, 0
			return true
		}, false
	case o == 0x0d || o == 0x18 || o >= 0x19 && o <= 0x1f && in.hasMem || o == 0x1e || o == 0x1f:
		if o == 0x0d || o == 0x18 {
			if !in.hasMem {
				if o == 0x18 {
					return func(c *CPU) bool { return true }, false // reserved NOP space
				}
				return ud, true
			}
		}
		return func(c *CPU) bool { return true }, false // prefetch, hint NOPs, ENDBR64
	case o >= 0x19 && o <= 0x1d:
		return func(c *CPU) bool { return true }, false
	case o == 0x20 || o == 0x22:
		return c.movCR(in), o == 0x22
	case o == 0x21 || o == 0x23:
		return c.movDR(in), o == 0x23
	case o == 0x30:
		return c.priv(func(c *CPU) bool {
			if !c.wrmsr(uint32(c.R[1]), c.R[2]<<32|c.R[0]&0xffffffff) {
				c.raise(excGP, 0)
				return false
			}
			c.RIP = in.next
			return false
		}), true
	case o == 0x31: // RDTSC
		return func(c *CPU) bool {
			if c.CR4&cr4TSD != 0 && c.cpl != 0 {
				c.raise(excGP, 0)
				return false
			}
			t := c.tsc()
			c.R[0], c.R[2] = t&0xffffffff, t>>32
			return true
		}, false
	case o == 0x32:
		return c.priv(func(c *CPU) bool {
			v, ok := c.rdmsr(uint32(c.R[1]))
			if !ok {
				c.raise(excGP, 0)
				return false
			}
			c.R[0], c.R[2] = v&0xffffffff, v>>32
			return true
		}), false
	case o >= 0x40 && o <= 0x4f:
		cc := o & 0xf
		return func(c *CPU) bool {
			v, _, ok := c.readRM(in, in.opsz)
			if !ok {
				return false
			}
			if cond(c.RFLAGS, cc) {
				c.setReg(in.reg, in.opsz, in.rex, v)
			} else if in.opsz == 4 {
				c.R[in.reg] &= 0xffffffff
			}
			return true
		}, false
	case o >= 0x80 && o <= 0x8f:
		cc := o & 0xf
		target := c.branchTarget(in, in.next+in.imm)
		return func(c *CPU) bool {
			if cond(c.RFLAGS, cc) {
				c.RIP = target
			} else {
				c.RIP = in.next
			}
			return false
		}, true
	case o >= 0x90 && o <= 0x9f:
		cc := o & 0xf
		return func(c *CPU) bool {
			var v uint64
			if cond(c.RFLAGS, cc) {
				v = 1
			}
			var ea uint64
			if in.hasMem {
				ea = c.ea(in)
			}
			return c.writeRM(in, 1, ea, v)
		}, false
	case o == 0xa0 || o == 0xa8: // PUSH FS/GS
		s := segFS
		if o == 0xa8 {
			s = segGS
		}
		size := stackOpSize(in)
		return func(c *CPU) bool { return c.push(in, size, uint64(c.Seg[s].Selector)) }, false
	case o == 0xa1 || o == 0xa9:
		s := segFS
		if o == 0xa9 {
			s = segGS
		}
		size := stackOpSize(in)
		return func(c *CPU) bool {
			v, ok := c.pop(in, size)
			return ok && c.loadSeg(s, uint16(v))
		}, false
	case o == 0xa2:
		return func(c *CPU) bool { c.cpuid(); return true }, false
	case o == 0xa3 || o == 0xab || o == 0xb3 || o == 0xbb || o == 0xba:
		return c.bitTest(in), false
	case o == 0xa4 || o == 0xa5 || o == 0xac || o == 0xad:
		right := o >= 0xac
		return func(c *CPU) bool {
			cnt := in.imm
			if o&1 != 0 {
				cnt = c.R[1]
			}
			src := c.getReg(in.reg, in.opsz, in.rex)
			return c.rmw(in, in.opsz, false, func(a uint64) (uint64, bool) { return c.shiftd(a, src, cnt, in.opsz, right), true })
		}, false
	case o == 0xaf:
		return func(c *CPU) bool {
			b, _, ok := c.readRM(in, in.opsz)
			if ok {
				c.setReg(in.reg, in.opsz, in.rex, c.imul2(c.getReg(in.reg, in.opsz, in.rex), b, in.opsz))
			}
			return ok
		}, false
	case o == 0xae:
		return c.group15(in, flags)
	case o == 0xb0 || o == 0xb1: // CMPXCHG
		size := opSize8(in)
		return func(c *CPU) bool {
			src := c.getReg(in.reg, size, in.rex)
			acc := c.getReg(0, size, 1)
			var old uint64
			// A failed compare writes nothing (AMD; Intel writes the old value back,
			// zero-extending a 32-bit register): the destination's write permission is
			// still checked, as for any locked RMW.
			ok := c.rmw(in, size, true, func(a uint64) (uint64, bool) {
				old = a
				_, f := subFlags(acc, a, 0, size)
				c.setArith(f, flagsArith)
				if a == acc {
					return src, true
				}
				return a, false
			})
			if !ok {
				return false
			}
			if old != acc {
				c.setReg(0, size, 1, old)
			}
			return true
		}, false
	case o == 0xb6 || o == 0xb7 || o == 0xbe || o == 0xbf:
		ssize := 1
		if o&1 != 0 {
			ssize = 2
		}
		signed := o >= 0xbe
		return func(c *CPU) bool {
			v, _, ok := c.readRM(in, ssize)
			if !ok {
				return false
			}
			if signed {
				v = sext(v, ssize)
			}
			c.setReg(in.reg, in.opsz, in.rex, v&sizeMask(in.opsz))
			return true
		}, false
	case o == 0xb8:
		if in.rep != 0xf3 || !c.model().has(featPOPCNT) {
			return ud, true
		}
		return func(c *CPU) bool {
			v, _, ok := c.readRM(in, in.opsz)
			if !ok {
				return false
			}
			n := uint64(bits.OnesCount64(v))
			c.setReg(in.reg, in.opsz, in.rex, n)
			f := uint64(0)
			if v == 0 {
				f = flagZF
			}
			c.setArith(f, flagsArith)
			return true
		}, false
	case o == 0xbc || o == 0xbd:
		lz := in.rep == 0xf3 && (o == 0xbd && c.model().has(featABM) || o == 0xbc && c.model().has(featBMI1))
		rev := o == 0xbd
		return func(c *CPU) bool {
			v, _, ok := c.readRM(in, in.opsz)
			if !ok {
				return false
			}
			nb := uint64(8 * in.opsz)
			if lz {
				var n uint64
				if rev {
					n = uint64(bits.LeadingZeros64(v)) - (64 - nb)
				} else {
					n = uint64(bits.TrailingZeros64(v))
					if n > nb {
						n = nb
					}
				}
				c.setReg(in.reg, in.opsz, in.rex, n)
				f := uint64(0)
				if n == nb {
					f |= flagCF
				}
				if n == 0 {
					f |= flagZF
				}
				c.setArith(f, flagCF|flagZF)
				return true
			}
			if v == 0 {
				c.setArith(flagZF, flagZF)
				return true
			}
			n := uint64(bits.TrailingZeros64(v))
			if rev {
				n = 63 - uint64(bits.LeadingZeros64(v))
			}
			c.setReg(in.reg, in.opsz, in.rex, n)
			c.setArith(0, flagZF)
			return true
		}, false
	case o == 0xc0 || o == 0xc1: // XADD
		size := opSize8(in)
		return func(c *CPU) bool {
			src := c.getReg(in.reg, size, in.rex)
			if !in.hasMem {
				// The source register is written first, so XADD r, r leaves the sum.
				a := c.getReg(in.rm, size, in.rex)
				r, f := addFlags(a, src, 0, size)
				c.setArith(f, flagsArith)
				c.setReg(in.reg, size, in.rex, a)
				c.setReg(in.rm, size, in.rex, r)
				return true
			}
			var old uint64
			if !c.rmw(in, size, in.lock, func(a uint64) (uint64, bool) {
				old = a
				r, f := addFlags(a, src, 0, size)
				c.setArith(f, flagsArith)
				return r, true
			}) {
				return false
			}
			c.setReg(in.reg, size, in.rex, old)
			return true
		}, false
	case o == 0xc7:
		return c.group9(in), false
	case o >= 0xc8 && o <= 0xcf:
		reg := o&7 | (in.rex&1)<<3
		return func(c *CPU) bool {
			switch in.opsz {
			case 8:
				c.R[reg] = bits.ReverseBytes64(c.R[reg])
			case 4:
				c.R[reg] = uint64(bits.ReverseBytes32(uint32(c.R[reg])))
			default:
				c.R[reg] &^= 0xffff // BSWAP r16: undefined; zero as hardware does
			}
			return true
		}, false
	}
	return c.translateSSE(in, flags)
}

// priv wraps a CPL-0-only helper.
func (c *CPU) priv(h op) op {
	return func(c *CPU) bool {
		if c.cpl != 0 {
			c.raise(excGP, 0)
			return false
		}
		return h(c)
	}
}

// bitTest implements BT, BTS, BTR, BTC with a register or immediate bit offset (a
// register offset addresses memory beyond the operand, as the SDM says).
func (c *CPU) bitTest(in *insn) op {
	kind := byte(0)
	switch in.opc {
	case 0xab:
		kind = 1
	case 0xb3:
		kind = 2
	case 0xbb:
		kind = 3
	case 0xba:
		if in.reg&7 < 4 {
			return ud
		}
		kind = in.reg&7 - 4
	}
	size := in.opsz
	nb := uint64(8 * size)
	return func(c *CPU) bool {
		var bit uint64
		sub := *in
		if in.opc == 0xba {
			bit = in.imm & (nb - 1)
		} else {
			off := c.getReg(in.reg, size, in.rex)
			if in.hasMem {
				so := int64(sext(off, size))
				sub.disp += uint64(so>>(3+bitsLog(size))) * uint64(size)
				bit = uint64(so) & (nb - 1)
			} else {
				bit = off & (nb - 1)
			}
		}
		return c.rmw(&sub, size, in.lock && kind != 0, func(a uint64) (uint64, bool) {
			cf := a >> bit & 1
			c.setArith(cf, flagCF)
			switch kind {
			case 1:
				return a | 1<<bit, true
			case 2:
				return a &^ (1 << bit), true
			case 3:
				return a ^ 1<<bit, true
			}
			return a, false
		})
	}
}

func bitsLog(size int) uint {
	switch size {
	case 2:
		return 1
	case 4:
		return 2
	}
	return 3
}

// shiftd implements SHLD/SHRD.
func (c *CPU) shiftd(a, src, cnt uint64, size int, right bool) uint64 {
	nb := uint64(8 * size)
	if size == 8 {
		cnt &= 63
	} else {
		cnt &= 31
	}
	if cnt == 0 {
		return a & sizeMask(size)
	}
	m := sizeMask(size)
	a, src = a&m, src&m
	var r, cf uint64
	if size == 2 {
		// 16-bit: the 32-bit src:dst pattern repeated (count > 16 is undefined).
		if right {
			x := a | src<<16 | a<<32
			r, cf = x>>cnt&m, x>>(cnt-1)&1
		} else {
			x := a<<32 | src<<16 | a
			r, cf = x>>(32-cnt)&m, x>>(48-cnt)&1
			_ = nb
		}
	} else if right {
		r = (a>>cnt | src<<(nb-cnt)) & m
		cf = a >> (cnt - 1) & 1
	} else {
		r = (a<<cnt | src>>(nb-cnt)) & m
		cf = a >> (nb - cnt) & 1
	}
	f := cf | szp(r, size)
	if (r^a)&signBit(size) != 0 {
		f |= flagOF
	}
	c.setArith(f, flagsArith)
	return r
}

func (c *CPU) group9(in *insn) op {
	switch in.reg & 7 {
	case 1: // CMPXCHG8B / CMPXCHG16B
		if !in.hasMem {
			return ud
		}
		wide := in.rex&8 != 0
		return func(c *CPU) bool {
			ea := c.ea(in)
			if wide {
				if ea&15 != 0 {
					c.raise(excGP, 0)
					return false
				}
				return c.cmpxchg16b(ea)
			}
			cmp := c.R[2]<<32 | c.R[0]&0xffffffff
			nw := c.R[1]<<32 | c.R[3]&0xffffffff
			var old uint64
			if !c.atomicRMW(ea, 8, func(a uint64) (uint64, bool) { old = a; return nw, a == cmp }) {
				return false
			}
			if old == cmp {
				c.RFLAGS |= flagZF
			} else {
				c.RFLAGS &^= flagZF
				c.R[0], c.R[2] = old&0xffffffff, old>>32
			}
			return true
		}
	case 6, 7: // RDRAND/RDSEED: not advertised
		return ud
	}
	return ud
}

func (c *CPU) cmpxchg16b(ea uint64) bool {
	host, ok := c.hostRMW(ea, 16)
	if !ok {
		return false
	}
	var lo, hi uint64
	var swapped bool
	if host != nil {
		lo, hi, swapped = cas128((*[2]uint64)(unsafe.Pointer(host)), c.R[0], c.R[2], c.R[3], c.R[1])
	} else {
		c.eng.Exclusive.Lock()
		l, ok1 := c.ld(ea, 8)
		h, ok2 := c.ld(ea+8, 8)
		if !ok1 || !ok2 {
			c.eng.Exclusive.Unlock()
			return false
		}
		lo, hi = l, h
		if l == c.R[0] && h == c.R[2] {
			swapped = c.st(ea, 8, c.R[3]) && c.st(ea+8, 8, c.R[1])
		}
		c.eng.Exclusive.Unlock()
	}
	if swapped {
		c.RFLAGS |= flagZF
	} else {
		c.RFLAGS &^= flagZF
		c.R[0], c.R[2] = lo, hi
	}
	return true
}

// cas128 is LOCK CMPXCHG16B on host memory (cas128_amd64.s): it compares *p with
// oldLo:oldHi and, if equal, stores newLo:newHi; it returns the value found.
func cas128(p *[2]uint64, oldLo, oldHi, newLo, newHi uint64) (lo, hi uint64, swapped bool)

// tsc returns the time-stamp counter: the engine's guest time in nanoseconds (a 1 GHz
// invariant TSC, the same on every vCPU, stopped while the guest is paused) plus the
// vCPU's TSC offset.
func (c *CPU) tsc() uint64 {
	return uint64(c.eng.GuestTime().Nanoseconds()) + c.msr.tscOffset
}

var _ = atomic.LoadUint64

package arm

import "unsafe"

// Loads and stores: general-purpose and SIMD&FP registers, all addressing modes.

// vbytes returns SIMD&FP register n as 16 little-endian bytes.
func (c *CPU) vbytes(n uint32) *[16]byte {
	return (*[16]byte)(unsafe.Pointer(&c.V[n]))
}

// addrMode describes how an instruction computes its address and writes it back.
type addrMode struct {
	rn     uint32
	off    uint64 // immediate offset (pre-index, offset) or post-index amount
	post   bool   // post-index: access at Xn, then Xn += off
	wback  bool
	rm     uint32 // register offset when regOff
	regOff bool
	option uint32
	shift  uint32
}

// addr returns the access address and the write-back value.
func (c *CPU) addr(m *addrMode) (va, wb uint64) {
	base := c.rsp(m.rn)
	off := m.off
	if m.regOff {
		off = aluExtend(c.r(m.rm), m.option, m.shift)
	}
	if m.post {
		return base, base + off
	}
	return base + off, base + off
}

func decodeLdSt(insn uint32, pc uint64, flags uint64) (op, bool) {
	switch {
	case insn>>31 == 0 && insn>>24&0x3f == 0x0c: // SIMD load/store multiple structures
		return decodeLdStMulti(insn, pc)
	case insn>>31 == 0 && insn>>24&0x3f == 0x0d: // SIMD load/store single structure
		return decodeLdStSingle(insn, pc)
	case insn>>24&0x3f == 0x08: // exclusives, acquire/release
		return decodeLdStExcl(insn, pc)
	case insn>>27&7 == 3 && insn>>24&3 == 0: // load literal
		return decodeLdLiteral(insn, pc)
	case insn>>27&7 == 5: // load/store pair
		return decodeLdStPair(insn, pc)
	case insn>>27&7 == 7: // load/store register
		return decodeLdStReg(insn, pc)
	}
	return undefOp(pc), true
}

func decodeLdLiteral(insn uint32, pc uint64) (op, bool) {
	rt := insn & 31
	va := pc + signExt(uint64(insn>>5&0x7ffff)<<2, 21)
	opc := insn >> 30
	if insn>>26&1 == 1 {
		if opc == 3 {
			return undefOp(pc), true
		}
		size := 4 << opc
		return func(c *CPU) bool { c.PC = pc; return c.ldV(va, size, rt) }, false
	}
	switch opc {
	case 0:
		return func(c *CPU) bool {
			c.PC = pc
			v, ok := c.ld32(va)
			if ok {
				c.w(rt, v)
			}
			return ok
		}, false
	case 1:
		return func(c *CPU) bool {
			c.PC = pc
			v, ok := c.ld64(va)
			if ok {
				c.w(rt, v)
			}
			return ok
		}, false
	case 2:
		return func(c *CPU) bool {
			c.PC = pc
			v, ok := c.ld32(va)
			if ok {
				c.w(rt, uint64(int64(int32(v))))
			}
			return ok
		}, false
	}
	return func(c *CPU) bool { return true }, false // PRFM literal
}

// ldV loads a SIMD&FP register (B/H/S/D/Q), zeroing the rest of it.
func (c *CPU) ldV(va uint64, size int, rt uint32) bool {
	if size == 16 {
		lo, ok := c.ld64(va)
		if !ok {
			return false
		}
		hi, ok := c.ld64(va + 8)
		if !ok {
			return false
		}
		c.V[rt] = [2]uint64{lo, hi}
		return true
	}
	v, ok := c.ld(va, size, c.midx)
	if ok {
		c.V[rt] = [2]uint64{v, 0}
	}
	return ok
}

// stV stores the low size bytes of a SIMD&FP register.
func (c *CPU) stV(va uint64, size int, rt uint32) bool {
	if size == 16 {
		// Check both halves' pages before writing either (precise faults).
		if !c.st64(va, c.V[rt][0]) {
			return false
		}
		return c.st64(va+8, c.V[rt][1])
	}
	return c.st(va, size, c.V[rt][0], c.midx)
}

func decodeLdStReg(insn uint32, pc uint64) (op, bool) {
	size := insn >> 30
	vec := insn>>26&1 == 1
	opc := insn >> 22 & 3
	rt := insn & 31
	m := addrMode{rn: insn >> 5 & 31}
	unpriv := false
	var scale uint32
	if vec {
		scale = size
		if opc&2 != 0 {
			if size != 0 {
				return undefOp(pc), true
			}
			scale = 4
		}
	} else {
		scale = size
	}
	switch {
	case insn>>24&1 == 1: // unsigned immediate offset
		m.off = uint64(insn>>10&0xfff) << scale
	case insn>>21&1 == 0:
		imm := signExt(uint64(insn>>12&0x1ff), 9)
		m.off = imm
		switch insn >> 10 & 3 {
		case 0: // unscaled (LDUR/STUR)
		case 1: // post-index
			m.post, m.wback = true, true
		case 2: // unprivileged (LDTR/STTR)
			if vec {
				return undefOp(pc), true
			}
			unpriv = true
		case 3: // pre-index
			m.wback = true
		}
	case insn>>10&3 == 2: // register offset
		m.regOff = true
		m.rm = insn >> 16 & 31
		m.option = insn >> 13 & 7
		if m.option&2 == 0 {
			return undefOp(pc), true
		}
		if insn>>12&1 == 1 {
			m.shift = scale
		}
	case !vec && insn>>10&3 == 0: // atomic memory operations (LSE, lse.go)
		return decodeAtomicMem(insn, pc)
	default: // LDRAA, LDRAB (pauth.go)
		return ldraa(insn, pc)
	}
	if vec {
		bytes := 1 << scale
		load := opc&1 == 1
		return func(c *CPU) bool {
			c.PC = pc
			va, wb := c.addr(&m)
			var ok bool
			if load {
				ok = c.ldV(va, bytes, rt)
			} else {
				ok = c.stV(va, bytes, rt)
			}
			if ok && m.wback {
				c.wsp(m.rn, wb)
			}
			return ok
		}, false
	}
	bytes := 1 << size
	// Kinds: 0 store, 1 zero-extending load, 2 sign-extend to 64, 3 sign-extend to 32,
	// 4 prefetch.
	kind := 0
	switch opc {
	case 1:
		kind = 1
	case 2:
		if size == 3 {
			kind = 4
		} else {
			kind = 2
		}
	case 3:
		if size >= 2 {
			return undefOp(pc), true
		}
		kind = 3
	}
	if kind == 4 {
		return func(c *CPU) bool { return true }, false
	}
	sbits := uint(8 * bytes)
	// Fast, common forms: 64/32/8-bit load/store with immediate offset and no
	// write-back, 64-bit ones with write-back or a register offset.
	if m.regOff && bytes == 8 && (kind == 0 || kind == 1) {
		rn, rm, option, shift := m.rn, m.rm, m.option, m.shift
		if kind == 1 {
			return func(c *CPU) bool {
				c.PC = pc
				v, ok := c.ld64(c.rsp(rn) + aluExtend(c.r(rm), option, shift))
				if ok {
					c.w(rt, v)
				}
				return ok
			}, false
		}
		return func(c *CPU) bool {
			c.PC = pc
			return c.st64(c.rsp(rn)+aluExtend(c.r(rm), option, shift), c.r(rt))
		}, false
	}
	if m.wback && bytes == 8 && (kind == 0 || kind == 1) {
		rn, off, post := m.rn, m.off, m.post
		if kind == 1 {
			return func(c *CPU) bool {
				c.PC = pc
				base := c.rsp(rn)
				va := base + off
				if post {
					va = base
				}
				v, ok := c.ld64(va)
				if !ok {
					return false
				}
				c.wsp(rn, base+off)
				c.w(rt, v)
				return true
			}, false
		}
		return func(c *CPU) bool {
			c.PC = pc
			base := c.rsp(rn)
			va := base + off
			if post {
				va = base
			}
			if !c.st64(va, c.r(rt)) {
				return false
			}
			c.wsp(rn, base+off)
			return true
		}, false
	}
	if !m.wback && !m.regOff && !unpriv {
		rn, off := m.rn, m.off
		switch {
		case kind == 1 && bytes == 1:
			return func(c *CPU) bool {
				c.PC = pc
				v, ok := c.ld8(c.rsp(rn) + off)
				if ok {
					c.w(rt, v)
				}
				return ok
			}, false
		case kind == 0 && bytes == 1:
			return func(c *CPU) bool { c.PC = pc; return c.st8(c.rsp(rn)+off, c.r(rt)) }, false
		case kind == 1 && bytes == 8:
			return func(c *CPU) bool {
				va := c.rsp(rn) + off
				if p := c.hostR(va, 7); p != nil {
					c.w(rt, *(*uint64)(p))
					return true
				}
				c.PC = pc
				v, ok := c.ldSlow(va, 8, c.midx)
				if ok {
					c.w(rt, v)
				}
				return ok
			}, false
		case kind == 1 && bytes == 4:
			return func(c *CPU) bool {
				c.PC = pc
				v, ok := c.ld32(c.rsp(rn) + off)
				if ok {
					c.w(rt, v)
				}
				return ok
			}, false
		case kind == 0 && bytes == 8:
			return func(c *CPU) bool {
				va := c.rsp(rn) + off
				if p := c.hostW(va, 7); p != nil {
					*(*uint64)(p) = c.r(rt)
					return true
				}
				c.PC = pc
				return c.stSlow(va, 8, c.r(rt), c.midx)
			}, false
		case kind == 0 && bytes == 4:
			return func(c *CPU) bool { c.PC = pc; return c.st32(c.rsp(rn)+off, c.r(rt)) }, false
		}
	}
	return func(c *CPU) bool {
		c.PC = pc
		va, wb := c.addr(&m)
		idx := c.midx
		if unpriv {
			idx = c.uidx
		}
		if kind == 0 {
			if !c.st(va, bytes, c.r(rt), idx) {
				return false
			}
		} else {
			v, ok := c.ld(va, bytes, idx)
			if !ok {
				return false
			}
			switch kind {
			case 2:
				v = signExt(v, sbits)
			case 3:
				v = uint64(uint32(signExt(v, sbits)))
			}
			if m.wback {
				c.wsp(m.rn, wb)
			}
			c.w(rt, v)
			return true
		}
		if m.wback {
			c.wsp(m.rn, wb)
		}
		return true
	}, false
}

func decodeLdStPair(insn uint32, pc uint64) (op, bool) {
	opc := insn >> 30
	vec := insn>>26&1 == 1
	load := insn>>22&1 == 1
	rt, rt2 := insn&31, insn>>10&31
	m := addrMode{rn: insn >> 5 & 31}
	switch insn >> 23 & 3 {
	case 1:
		m.post, m.wback = true, true
	case 3:
		m.wback = true
	}
	var scale uint32
	signed := false
	if vec {
		if opc == 3 {
			return undefOp(pc), true
		}
		scale = 2 + opc
	} else {
		switch opc {
		case 0:
			scale = 2
		case 1:
			if !load {
				return undefOp(pc), true
			}
			scale, signed = 2, true
		case 2:
			scale = 3
		default:
			return undefOp(pc), true
		}
	}
	m.off = signExt(uint64(insn>>15&0x7f), 7) << scale
	bytes := 1 << scale
	step := uint64(bytes)
	if vec {
		return func(c *CPU) bool {
			c.PC = pc
			va, wb := c.addr(&m)
			if load {
				a := c.V[rt]
				if !c.ldV(va, bytes, rt) {
					return false
				}
				save := c.V[rt]
				if !c.ldV(va+step, bytes, rt2) {
					c.V[rt] = a // keep the registers unchanged on a fault
					return false
				}
				c.V[rt] = save
			} else {
				if !c.stV(va, bytes, rt) || !c.stV(va+step, bytes, rt2) {
					return false
				}
			}
			if m.wback {
				c.wsp(m.rn, wb)
			}
			return true
		}, false
	}
	if bytes == 8 && m.wback {
		rn, off, post := m.rn, m.off, m.post
		if load {
			return func(c *CPU) bool {
				c.PC = pc
				base := c.rsp(rn)
				va := base + off
				if post {
					va = base
				}
				var a, b uint64
				if p := c.hostR(va, 15); p != nil {
					a, b = *(*uint64)(p), *(*uint64)(unsafe.Add(p, 8))
				} else {
					var ok bool
					if a, ok = c.ld64(va); !ok {
						return false
					}
					if b, ok = c.ld64(va + 8); !ok {
						return false
					}
				}
				c.wsp(rn, base+off)
				c.w(rt, a)
				c.w(rt2, b)
				return true
			}, false
		}
		return func(c *CPU) bool {
			c.PC = pc
			base := c.rsp(rn)
			va := base + off
			if post {
				va = base
			}
			if p := c.hostW(va, 15); p != nil {
				*(*uint64)(p) = c.r(rt)
				*(*uint64)(unsafe.Add(p, 8)) = c.r(rt2)
			} else if !c.st64(va, c.r(rt)) || !c.st64(va+8, c.r(rt2)) {
				return false
			}
			c.wsp(rn, base+off)
			return true
		}, false
	}
	if bytes == 8 && !load {
		rn, off := m.rn, m.off
		return func(c *CPU) bool {
			c.PC = pc
			va := c.rsp(rn) + off
			return c.st64(va, c.r(rt)) && c.st64(va+8, c.r(rt2))
		}, false
	}
	if load {
		if bytes == 8 && !m.wback {
			rn, off := m.rn, m.off
			return func(c *CPU) bool {
				c.PC = pc
				va := c.rsp(rn) + off
				a, ok := c.ld64(va)
				if !ok {
					return false
				}
				b, ok := c.ld64(va + 8)
				if !ok {
					return false
				}
				c.w(rt, a)
				c.w(rt2, b)
				return true
			}, false
		}
		return func(c *CPU) bool {
			c.PC = pc
			va, wb := c.addr(&m)
			a, ok := c.ld(va, bytes, c.midx)
			if !ok {
				return false
			}
			b, ok := c.ld(va+step, bytes, c.midx)
			if !ok {
				return false
			}
			if signed {
				a, b = signExt(a, 32), signExt(b, 32)
			}
			if m.wback {
				c.wsp(m.rn, wb)
			}
			c.w(rt, a)
			c.w(rt2, b)
			return true
		}, false
	}
	return func(c *CPU) bool {
		c.PC = pc
		va, wb := c.addr(&m)
		a, b := c.r(rt), c.r(rt2)
		if !c.st(va, bytes, a, c.midx) || !c.st(va+step, bytes, b, c.midx) {
			return false
		}
		if m.wback {
			c.wsp(m.rn, wb)
		}
		return true
	}, false
}

func decodeLdStExcl(insn uint32, pc uint64) (op, bool) {
	size := insn >> 30
	o2, l, o1, o0 := insn>>23&1, insn>>22&1, insn>>21&1, insn>>15&1
	rs, rt2, rn, rt := insn>>16&31, insn>>10&31, insn>>5&31, insn&31
	bytes := 1 << size
	switch {
	case o2 == 1 && o1 == 0 && o0 == 1: // LDAR / STLR
		if l == 1 {
			return func(c *CPU) bool {
				c.PC = pc
				va := c.rsp(rn)
				if va&uint64(bytes-1) != 0 {
					c.alignFault(va, false)
					return false
				}
				v, ok := c.ld(va, bytes, c.midx)
				if ok {
					c.w(rt, v)
				}
				return ok
			}, false
		}
		return func(c *CPU) bool {
			c.PC = pc
			va := c.rsp(rn)
			if va&uint64(bytes-1) != 0 {
				c.alignFault(va, true)
				return false
			}
			c.fence.Add(1) // release: order earlier accesses before the store
			ok := c.st(va, bytes, c.r(rt), c.midx)
			c.fence.Add(1) // and the store before later load-acquires
			return ok
		}, false
	case o2 == 0 && o1 == 0: // LDXR/LDAXR, STXR/STLXR
		if l == 1 {
			return func(c *CPU) bool {
				c.PC = pc
				lo, _, ok := c.ldExcl(c.rsp(rn), bytes, false)
				if ok {
					c.w(rt, lo)
				}
				return ok
			}, false
		}
		return func(c *CPU) bool {
			c.PC = pc
			st, ok := c.stExcl(c.rsp(rn), bytes, c.r(rt), 0)
			if ok {
				c.w(rs, st)
			}
			return ok
		}, false
	case o2 == 0 && o1 == 1 && size >= 2: // LDXP/LDAXP, STXP/STLXP
		if l == 1 {
			if size == 2 {
				return func(c *CPU) bool {
					c.PC = pc
					lo, _, ok := c.ldExcl(c.rsp(rn), 8, true)
					if ok {
						c.w(rt, uint64(uint32(lo)))
						c.w(rt2, lo>>32)
					}
					return ok
				}, false
			}
			return func(c *CPU) bool {
				c.PC = pc
				lo, hi, ok := c.ldExcl(c.rsp(rn), 16, true)
				if ok {
					c.w(rt, lo)
					c.w(rt2, hi)
				}
				return ok
			}, false
		}
		if size == 2 {
			return func(c *CPU) bool {
				c.PC = pc
				v := uint64(uint32(c.r(rt))) | c.r(rt2)<<32
				st, ok := c.stExcl(c.rsp(rn), 8, v, 0)
				if ok {
					c.w(rs, st)
				}
				return ok
			}, false
		}
		return func(c *CPU) bool {
			c.PC = pc
			st, ok := c.stExcl(c.rsp(rn), 16, c.r(rt), c.r(rt2))
			if ok {
				c.w(rs, st)
			}
			return ok
		}, false
	case o2 == 1 && o1 == 1 && rt2 == 31: // CAS (lse.go)
		return decodeCAS(insn, pc)
	case o2 == 0 && o1 == 1 && size < 2 && rt2 == 31: // CASP (lse.go)
		return decodeCASP(insn, pc)
	}
	return undefOp(pc), true
}

package arm

// Advanced SIMD structure loads and stores (LD1-LD4, ST1-ST4, LD1R-LD4R).

import (
	"sync/atomic"
	"unsafe"

	"gemu/tcg"
)

// structAddr computes the base and post-index write-back for LDn/STn.
func structPost(c *CPU, rn, rm uint32, total uint64) uint64 {
	if rm == 31 {
		return c.rsp(rn) + total
	}
	return c.rsp(rn) + c.r(rm)
}

// structFast is LD1/ST1 to rpt consecutive registers (memory holds their bytes in
// order) done as 64-bit host accesses, when the whole access hits the TLB on one
// page of RAM (for a store, one holding no translated code) and needs no alignment
// fault: every element access would then succeed, so the result is the element
// loop's. It reports false, having done nothing, otherwise.
func (c *CPU) structFast(addr, total uint64, esize int, load bool, rt, rpt, q uint32) bool {
	if addr&0xfff+total > 0x1000 || addr&uint64(esize-1) != 0 && c.sr.sctlr&sctlrA != 0 {
		return false
	}
	e := c.mmu.Entry(addr)
	page := addr &^ 0xfff
	if load {
		if e.Read != page {
			return false
		}
	} else if e.Write != page || atomic.LoadUint32(e.Code)&tcg.CodeBit != 0 {
		return false
	}
	host := unsafe.Add(e.Host, addr&0xfff)
	for r := uint32(0); r < rpt; r++ {
		v := &c.V[(rt+r)%32]
		p := unsafe.Add(host, 16*r>>(1-q))
		if load {
			v[0] = *(*uint64)(p)
			v[1] = 0
			if q == 1 {
				v[1] = *(*uint64)(unsafe.Add(p, 8))
			}
		} else {
			*(*uint64)(p) = v[0]
			if q == 1 {
				*(*uint64)(unsafe.Add(p, 8)) = v[1]
			}
		}
	}
	return true
}

func decodeLdStMulti(insn uint32, pc uint64) (op, bool) {
	q := insn >> 30 & 1
	load := insn>>22&1 == 1
	post := insn>>23&1 == 1
	rm := insn >> 16 & 31
	if !post && rm != 0 {
		return undefOp(pc), true
	}
	opcode := insn >> 12 & 15
	size := insn >> 10 & 3
	rn, rt := insn>>5&31, insn&31
	var rpt, selem uint32
	switch opcode {
	case 0:
		rpt, selem = 1, 4
	case 2:
		rpt, selem = 4, 1
	case 4:
		rpt, selem = 1, 3
	case 6:
		rpt, selem = 3, 1
	case 7:
		rpt, selem = 1, 1
	case 8:
		rpt, selem = 1, 2
	case 10:
		rpt, selem = 2, 1
	default:
		return undefOp(pc), true
	}
	if size == 3 && q == 0 && selem != 1 {
		return undefOp(pc), true
	}
	esize := 1 << size
	elements := (8 << q) / esize
	total := uint64(rpt * selem * uint32(elements*esize))
	return func(c *CPU) bool {
		c.PC = pc
		addr := c.rsp(rn)
		if selem == 1 && c.structFast(addr, total, esize, load, rt, rpt, q) {
			if post {
				c.wsp(rn, structPost(c, rn, rm, total))
			}
			return true
		}
		// Collect results first so a fault leaves the registers unchanged.
		var regs [4][16]byte
		if load {
			for r := uint32(0); r < rpt*selem; r++ {
				regs[r] = *c.vbytes((rt + r) % 32)
				if q == 0 {
					clear(regs[r][8:])
				}
			}
		}
		off := uint64(0)
		for r := uint32(0); r < rpt; r++ {
			for e := 0; e < elements; e++ {
				for s := uint32(0); s < selem; s++ {
					reg := r + s
					t := (rt + reg) % 32
					if load {
						v, ok := c.ld(addr+off, esize, c.midx)
						if !ok {
							return false
						}
						for i := 0; i < esize; i++ {
							regs[reg][e*esize+i] = byte(v >> (8 * i))
						}
					} else {
						b := c.vbytes(t)
						var v uint64
						for i := 0; i < esize; i++ {
							v |= uint64(b[e*esize+i]) << (8 * i)
						}
						if !c.st(addr+off, esize, v, c.midx) {
							return false
						}
					}
					off += uint64(esize)
				}
			}
		}
		if load {
			for r := uint32(0); r < rpt*selem; r++ {
				*c.vbytes((rt + r) % 32) = regs[r]
			}
		}
		if post {
			c.wsp(rn, structPost(c, rn, rm, total))
		}
		return true
	}, false
}

func decodeLdStSingle(insn uint32, pc uint64) (op, bool) {
	q := insn >> 30 & 1
	load := insn>>22&1 == 1
	post := insn>>23&1 == 1
	rm := insn >> 16 & 31
	if !post && rm != 0 {
		return undefOp(pc), true
	}
	r := insn >> 21 & 1
	opcode := insn >> 13 & 7
	s := insn >> 12 & 1
	size := insn >> 10 & 3
	rn, rt := insn>>5&31, insn&31
	selem := (opcode&1)<<1 | r + 1
	replicate := false
	var scale, index uint32
	switch opcode >> 1 {
	case 0:
		scale, index = 0, q<<3|s<<2|size
	case 1:
		if size&1 != 0 {
			return undefOp(pc), true
		}
		scale, index = 1, q<<2|s<<1|size>>1
	case 2:
		if size&2 != 0 {
			return undefOp(pc), true
		}
		if size == 0 {
			scale, index = 2, q<<1|s
		} else {
			if s != 0 {
				return undefOp(pc), true
			}
			scale, index = 3, q
		}
	case 3:
		if !load || s != 0 {
			return undefOp(pc), true
		}
		scale, replicate = size, true
	}
	esize := 1 << scale
	total := uint64(selem) * uint64(esize)
	return func(c *CPU) bool {
		c.PC = pc
		addr := c.rsp(rn)
		var vals [4]uint64
		for k := uint32(0); k < selem; k++ {
			a := addr + uint64(k)*uint64(esize)
			if load {
				v, ok := c.ld(a, esize, c.midx)
				if !ok {
					return false
				}
				vals[k] = v
			} else {
				b := c.vbytes((rt + k) % 32)
				var v uint64
				for i := 0; i < esize; i++ {
					v |= uint64(b[int(index)*esize+i]) << (8 * i)
				}
				if !c.st(a, esize, v, c.midx) {
					return false
				}
			}
		}
		if load {
			for k := uint32(0); k < selem; k++ {
				b := c.vbytes((rt + k) % 32)
				if replicate {
					n := (8 << q) / esize
					for e := 0; e < n; e++ {
						for i := 0; i < esize; i++ {
							b[e*esize+i] = byte(vals[k] >> (8 * i))
						}
					}
					if q == 0 {
						clear(b[8:])
					}
				} else {
					for i := 0; i < esize; i++ {
						b[int(index)*esize+i] = byte(vals[k] >> (8 * i))
					}
				}
			}
		}
		if post {
			c.wsp(rn, structPost(c, rn, rm, total))
		}
		return true
	}, false
}

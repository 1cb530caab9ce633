package x86

import "math"

// The rest of the SSE2 integer instructions (packs, saturating arithmetic, multiplies,
// averages, signed word min/max, PINSRW/PEXTRW) and SSE3 (which qemu64 advertises:
// MOVDDUP, MOVSLDUP, MOVSHDUP, LDDQU, HADDPS/PD, HSUBPS/PD, ADDSUBPS/PD).

func satS(v int64, w int) uint64 {
	lo, hi := -(int64(1) << (8*w - 1)), int64(1)<<(8*w-1)-1
	return uint64(min(max(v, lo), hi))
}

func satU(v int64, w int) uint64 {
	return uint64(min(max(v, 0), int64(1)<<(8*w)-1))
}

// pack narrows the w-byte lanes of a then b to w/2 bytes with saturation.
func pack(a, b [2]uint64, w int, signed bool) [2]uint64 {
	var out [2]uint64
	n := 16 / w // lanes per source
	idx := 0
	for _, src := range [][2]uint64{a, b} {
		for i := 0; i < n; i++ {
			v := int64(sext(src[i*w/8]>>(8*uint(i*w%8))&sizeMask(w), w))
			var r uint64
			if signed {
				r = satS(v, w/2) & sizeMask(w/2)
			} else {
				r = satU(v, w/2)
			}
			bit := uint(idx * w / 2 * 8)
			out[bit/64] |= r << (bit % 64)
			idx++
		}
	}
	return out
}

// sse2MoreOp returns the 66-prefixed operation for opcode o among the instructions this
// file adds, or nil.
func sse2MoreOp(o byte) func(a, b [2]uint64) [2]uint64 {
	l := func(w int, f func(x, y uint64) uint64) func(a, b [2]uint64) [2]uint64 {
		return func(a, b [2]uint64) [2]uint64 { return lanes(a, b, w, f) }
	}
	s := func(w int) func(x uint64) int64 { return func(x uint64) int64 { return int64(sext(x, w)) } }
	switch o {
	case 0x63:
		return func(a, b [2]uint64) [2]uint64 { return pack(a, b, 2, true) }
	case 0x67:
		return func(a, b [2]uint64) [2]uint64 { return pack(a, b, 2, false) }
	case 0x6b:
		return func(a, b [2]uint64) [2]uint64 { return pack(a, b, 4, true) }
	case 0xd8, 0xd9:
		w := int(o-0xd8) + 1
		return l(w, func(x, y uint64) uint64 { return satU(int64(x)-int64(y), w) })
	case 0xdc, 0xdd:
		w := int(o-0xdc) + 1
		return l(w, func(x, y uint64) uint64 { return satU(int64(x)+int64(y), w) })
	case 0xe8, 0xe9:
		w := int(o-0xe8) + 1
		return l(w, func(x, y uint64) uint64 { return satS(s(w)(x)-s(w)(y), w) })
	case 0xec, 0xed:
		w := int(o-0xec) + 1
		return l(w, func(x, y uint64) uint64 { return satS(s(w)(x)+s(w)(y), w) })
	case 0xd5:
		return l(2, func(x, y uint64) uint64 { return x * y })
	case 0xe5:
		return l(2, func(x, y uint64) uint64 { return uint64(s(2)(x)*s(2)(y)) >> 16 })
	case 0xe4:
		return l(2, func(x, y uint64) uint64 { return x * y >> 16 })
	case 0xf4:
		return func(a, b [2]uint64) [2]uint64 {
			return [2]uint64{a[0] & 0xffffffff * (b[0] & 0xffffffff), a[1] & 0xffffffff * (b[1] & 0xffffffff)}
		}
	case 0xf5:
		return func(a, b [2]uint64) [2]uint64 {
			var r [2]uint64
			for h := 0; h < 2; h++ {
				for k := uint(0); k < 64; k += 32 {
					p0 := s(2)(a[h]>>k&0xffff) * s(2)(b[h]>>k&0xffff)
					p1 := s(2)(a[h]>>(k+16)&0xffff) * s(2)(b[h]>>(k+16)&0xffff)
					r[h] |= uint64(uint32(p0+p1)) << k
				}
			}
			return r
		}
	case 0xe0:
		return l(1, func(x, y uint64) uint64 { return (x + y + 1) >> 1 })
	case 0xe3:
		return l(2, func(x, y uint64) uint64 { return (x + y + 1) >> 1 })
	case 0xea:
		return l(2, func(x, y uint64) uint64 { return uint64(min(s(2)(x), s(2)(y))) })
	case 0xee:
		return l(2, func(x, y uint64) uint64 { return uint64(max(s(2)(x), s(2)(y))) })
	}
	return nil
}

// translateSSE3 handles PINSRW/PEXTRW, the extra SSE2 integer ops and SSE3; nil if o
// is none of them.
func (c *CPU) translateSSE3(in *insn, form int) op {
	o := in.opc
	reg := in.reg
	wrap := func(h func(c *CPU) bool) op { return func(c *CPU) bool { return c.sseOK() && h(c) } }
	full := func(c *CPU, aligned bool) ([2]uint64, bool) { return c.xmmRM(in, aligned) }
	switch {
	case form == ssePD && o == 0xc4: // PINSRW
		sel := uint(in.imm & 7)
		return wrap(func(c *CPU) bool {
			v, _, ok := c.readRM(in, 2)
			if !ok {
				return false
			}
			d := &c.sse.xmm[reg]
			sh := 16 * (sel % 4)
			d[sel/4] = d[sel/4]&^(0xffff<<sh) | (v&0xffff)<<sh
			return true
		})
	case form == ssePD && o == 0xc5 && !in.hasMem: // PEXTRW
		sel := uint(in.imm & 7)
		src := in.rm
		return wrap(func(c *CPU) bool {
			c.R[reg] = c.sse.xmm[src][sel/4] >> (16 * (sel % 4)) & 0xffff
			return true
		})
	case form == ssePD && sse2MoreOp(o) != nil:
		f := sse2MoreOp(o)
		return wrap(func(c *CPU) bool {
			b, ok := full(c, true)
			if ok {
				c.sse.xmm[reg] = f(c.sse.xmm[reg], b)
			}
			return ok
		})
	case form == sseSD && o == 0x12: // MOVDDUP
		return wrap(func(c *CPU) bool {
			var v uint64
			if in.hasMem {
				var ok bool
				if v, ok = c.ld(c.ea(in), 8); !ok {
					return false
				}
			} else {
				v = c.sse.xmm[in.rm][0]
			}
			c.sse.xmm[reg] = [2]uint64{v, v}
			return true
		})
	case form == sseSS && (o == 0x12 || o == 0x16): // MOVSLDUP, MOVSHDUP
		high := o == 0x16
		return wrap(func(c *CPU) bool {
			b, ok := full(c, true)
			if !ok {
				return false
			}
			for h := 0; h < 2; h++ {
				w := b[h] & 0xffffffff
				if high {
					w = b[h] >> 32
				}
				b[h] = w | w<<32
			}
			c.sse.xmm[reg] = b
			return true
		})
	case form == sseSD && o == 0xf0 && in.hasMem: // LDDQU
		return wrap(func(c *CPU) bool {
			v, ok := full(c, false)
			if ok {
				c.sse.xmm[reg] = v
			}
			return ok
		})
	case (form == ssePD || form == sseSD) && (o == 0x7c || o == 0x7d || o == 0xd0):
		return wrap(func(c *CPU) bool {
			b, ok := full(c, true)
			if !ok {
				return false
			}
			a := c.sse.xmm[reg]
			d := &c.sse.xmm[reg]
			if form == ssePD {
				switch o {
				case 0x7c:
					d[0], d[1] = fpOp64(0x58, a[0], a[1]), fpOp64(0x58, b[0], b[1])
				case 0x7d:
					d[0], d[1] = fpOp64(0x5c, a[0], a[1]), fpOp64(0x5c, b[0], b[1])
				default:
					d[0], d[1] = fpOp64(0x5c, a[0], b[0]), fpOp64(0x58, a[1], b[1])
				}
				return true
			}
			f := func(v [2]uint64, i int) uint32 { return uint32(v[i/2] >> (32 * uint(i%2))) }
			var r [4]uint32
			switch o {
			case 0x7c, 0x7d:
				opc := byte(0x58)
				if o == 0x7d {
					opc = 0x5c
				}
				r = [4]uint32{fpOp32(opc, f(a, 0), f(a, 1)), fpOp32(opc, f(a, 2), f(a, 3)),
					fpOp32(opc, f(b, 0), f(b, 1)), fpOp32(opc, f(b, 2), f(b, 3))}
			default:
				for i := range r {
					opc := byte(0x5c)
					if i%2 == 1 {
						opc = 0x58
					}
					r[i] = fpOp32(opc, f(a, i), f(b, i))
				}
			}
			*d = [2]uint64{uint64(r[0]) | uint64(r[1])<<32, uint64(r[2]) | uint64(r[3])<<32}
			return true
		})
	}
	return nil
}

var _ = math.Float64bits

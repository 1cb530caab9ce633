package x86

import (
	"encoding/binary"
	"math/bits"
)

// SSE/SSE2 (the integer and move subset userland needs first: glibc's and busybox's
// string and memory routines), MXCSR, FXSAVE/FXRSTOR, fences, CLFLUSH. Floating-point
// arithmetic and x87 are not implemented yet (they raise #UD).

type sseState struct {
	xmm   [16][2]uint64
	mxcsr uint32
	fcw   uint16
	fsw   uint16 // without TOP (kept in top)
	ftw   uint8  // abridged tag: bit i set = physical register i valid
	st    [8]float64
	// raw80 holds the exact contents of the physical registers in rawValid (an MMX
	// write, or an FXRSTOR value a float64 cannot hold; mmx.go).
	raw80    [8]rawReg
	rawValid uint8
	top      uint8
	xcr0     uint64
}

// XMM returns XMM register n (low, high quadwords), for tests and debuggers.
func (c *CPU) XMM(n int) (lo, hi uint64) { return c.sse.xmm[n][0], c.sse.xmm[n][1] }

// SetXMM sets XMM register n.
func (c *CPU) SetXMM(n int, lo, hi uint64) { c.sse.xmm[n] = [2]uint64{lo, hi} }

// sseOK checks CR0.EM/TS and CR4.OSFXSR for an SSE instruction.
func (c *CPU) sseOK() bool {
	if c.CR0&cr0EM != 0 || c.CR4&CR4_OSFXSR == 0 {
		c.raise(excUD, -1)
		return false
	}
	if c.CR0&cr0TS != 0 {
		c.raise(excNM, -1)
		return false
	}
	return true
}

// xmmRM reads the 128-bit r/m operand (aligned says #GP on a misaligned address).
func (c *CPU) xmmRM(in *insn, aligned bool) (v [2]uint64, ok bool) {
	if !in.hasMem {
		return c.sse.xmm[in.rm], true
	}
	ea := c.ea(in)
	if aligned && ea&15 != 0 {
		c.raise(excGP, 0)
		return v, false
	}
	if v[0], ok = c.ld(ea, 8); !ok {
		return
	}
	v[1], ok = c.ld(ea+8, 8)
	return
}

func (c *CPU) xmmStore(in *insn, aligned bool, v [2]uint64) bool {
	if !in.hasMem {
		c.sse.xmm[in.rm] = v
		return true
	}
	ea := c.ea(in)
	if aligned && ea&15 != 0 {
		c.raise(excGP, 0)
		return false
	}
	// Check both halves' pages before writing (stSlow checks a crossing store itself).
	if ea&0xfff > 0xff0 {
		if _, _, ok := c.writable(ea+8, 8, c.mmuIdx()); !ok {
			return false
		}
	}
	return c.st(ea, 8, v[0]) && c.st(ea+8, 8, v[1])
}

func bytesOf(v [2]uint64) (b [16]byte) {
	binary.LittleEndian.PutUint64(b[:], v[0])
	binary.LittleEndian.PutUint64(b[8:], v[1])
	return
}

func fromBytes(b [16]byte) [2]uint64 {
	return [2]uint64{binary.LittleEndian.Uint64(b[:]), binary.LittleEndian.Uint64(b[8:])}
}

// lanes applies f to each lane of width w bytes of a and b.
func lanes(a, b [2]uint64, w int, f func(x, y uint64) uint64) [2]uint64 {
	var r [2]uint64
	m := sizeMask(w)
	for h := 0; h < 2; h++ {
		for i := 0; i < 8; i += w {
			s := uint(8 * i)
			r[h] |= f(a[h]>>s&m, b[h]>>s&m) & m << s
		}
	}
	return r
}

type sseKind int

const (
	ssePS = iota // no prefix
	ssePD        // 66
	sseSS        // F3
	sseSD        // F2
)

func sseForm(in *insn) int {
	switch {
	case in.rep == 0xf3:
		return sseSS
	case in.rep == 0xf2:
		return sseSD
	case in.pfx66:
		return ssePD
	}
	return ssePS
}

// translateSSE handles the 0F, 0F38 and 0F3A opcodes of SSE/SSE2 that are implemented.
func (c *CPU) translateSSE(in *insn, flags uint64) (op, bool) {
	if in.mapn != 1 {
		return ud, true
	}
	o := in.opc
	form := sseForm(in)
	reg := in.reg
	if h := c.translateMMX(in); h != nil { // mmx.go: the no-prefix forms on MMX registers
		return h, false
	}
	if h := c.translateMMXConv(in); h != nil { // mmx.go: between XMM and MMX registers
		return h, false
	}
	if h := c.translateSSE3(in, form); h != nil {
		return h, false
	}
	wrap := func(h func(c *CPU) bool) (op, bool) {
		return func(c *CPU) bool { return c.sseOK() && h(c) }, false
	}
	binop := func(f func(a, b [2]uint64) [2]uint64) (op, bool) {
		return wrap(func(c *CPU) bool {
			b, ok := c.xmmRM(in, true)
			if ok {
				c.sse.xmm[reg] = f(c.sse.xmm[reg], b)
			}
			return ok
		})
	}
	switch o {
	case 0x10, 0x11: // MOVUPS/MOVUPD/MOVSS/MOVSD
		load := o == 0x10
		return wrap(func(c *CPU) bool {
			switch form {
			case sseSS, sseSD:
				size := 4
				if form == sseSD {
					size = 8
				}
				m := sizeMask(size)
				if load {
					if in.hasMem {
						v, ok := c.ld(c.ea(in), size)
						if ok {
							c.sse.xmm[reg] = [2]uint64{v, 0}
						}
						return ok
					}
					c.sse.xmm[reg][0] = c.sse.xmm[reg][0]&^m | c.sse.xmm[in.rm][0]&m
					return true
				}
				if in.hasMem {
					return c.st(c.ea(in), size, c.sse.xmm[reg][0])
				}
				c.sse.xmm[in.rm][0] = c.sse.xmm[in.rm][0]&^m | c.sse.xmm[reg][0]&m
				return true
			}
			if load {
				v, ok := c.xmmRM(in, false)
				if ok {
					c.sse.xmm[reg] = v
				}
				return ok
			}
			return c.xmmStore(in, false, c.sse.xmm[reg])
		})
	case 0x12, 0x13, 0x16, 0x17: // MOVLPS/MOVLPD/MOVHPS/MOVHPD (and MOVHLPS/MOVLHPS)
		if form == sseSS || form == sseSD {
			return ud, true
		}
		hi := 0
		if o >= 0x16 {
			hi = 1
		}
		load := o&1 == 0
		return wrap(func(c *CPU) bool {
			if !in.hasMem {
				if !load {
					c.raise(excUD, -1)
					return false
				}
				src := c.sse.xmm[in.rm][1-hi] // MOVHLPS: high to low; MOVLHPS: low to high
				c.sse.xmm[reg][hi] = src
				return true
			}
			ea := c.ea(in)
			if load {
				v, ok := c.ld(ea, 8)
				if ok {
					c.sse.xmm[reg][hi] = v
				}
				return ok
			}
			return c.st(ea, 8, c.sse.xmm[reg][hi])
		})
	case 0x14, 0x15: // UNPCKLPS/PD, UNPCKHPS/PD
		h := int(o & 1)
		if form == ssePD {
			return binop(func(a, b [2]uint64) [2]uint64 { return [2]uint64{a[h], b[h]} })
		}
		return binop(func(a, b [2]uint64) [2]uint64 {
			x, y := a[h], b[h]
			return [2]uint64{x&0xffffffff | y<<32, x>>32 | y&^0xffffffff}
		})
	case 0x28, 0x29: // MOVAPS/MOVAPD
		if form >= sseSS {
			return ud, true
		}
		if o == 0x28 {
			return wrap(func(c *CPU) bool {
				v, ok := c.xmmRM(in, true)
				if ok {
					c.sse.xmm[reg] = v
				}
				return ok
			})
		}
		return wrap(func(c *CPU) bool { return c.xmmStore(in, true, c.sse.xmm[reg]) })
	case 0x2b, 0xe7: // MOVNTPS/PD, MOVNTDQ
		if !in.hasMem {
			return ud, true
		}
		return wrap(func(c *CPU) bool { return c.xmmStore(in, true, c.sse.xmm[reg]) })
	case 0xc3: // MOVNTI
		if !in.hasMem {
			return ud, true
		}
		return func(c *CPU) bool { return c.st(c.ea(in), in.opsz, c.getReg(reg, in.opsz, in.rex)) }, false
	case 0x54, 0x55, 0x56, 0x57: // ANDPS ANDNPS ORPS XORPS (and PD)
		if form >= sseSS {
			return ud, true
		}
		n := o
		return binop(func(a, b [2]uint64) [2]uint64 {
			switch n {
			case 0x54:
				return [2]uint64{a[0] & b[0], a[1] & b[1]}
			case 0x55:
				return [2]uint64{^a[0] & b[0], ^a[1] & b[1]}
			case 0x56:
				return [2]uint64{a[0] | b[0], a[1] | b[1]}
			}
			return [2]uint64{a[0] ^ b[0], a[1] ^ b[1]}
		})
	case 0x6e: // MOVD/MOVQ xmm, r/m
		if form != ssePD {
			return ud, true
		}
		size := 4
		if in.rex&8 != 0 {
			size = 8
		}
		return wrap(func(c *CPU) bool {
			v, _, ok := c.readRM(in, size)
			if ok {
				c.sse.xmm[reg] = [2]uint64{v, 0}
			}
			return ok
		})
	case 0x7e:
		if form == sseSS { // MOVQ xmm, xmm/m64
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
				c.sse.xmm[reg] = [2]uint64{v, 0}
				return true
			})
		}
		if form != ssePD {
			return ud, true
		}
		size := 4
		if in.rex&8 != 0 {
			size = 8
		}
		return wrap(func(c *CPU) bool { // MOVD/MOVQ r/m, xmm
			var ea uint64
			if in.hasMem {
				ea = c.ea(in)
			}
			return c.writeRM(in, size, ea, c.sse.xmm[reg][0]&sizeMask(size))
		})
	case 0xd6: // MOVQ xmm/m64, xmm
		if form != ssePD {
			return ud, true
		}
		return wrap(func(c *CPU) bool {
			if in.hasMem {
				return c.st(c.ea(in), 8, c.sse.xmm[reg][0])
			}
			c.sse.xmm[in.rm] = [2]uint64{c.sse.xmm[reg][0], 0}
			return true
		})
	case 0x6f, 0x7f: // MOVDQA (66), MOVDQU (F3)
		if form != ssePD && form != sseSS {
			return ud, true // MMX forms are not implemented
		}
		aligned := form == ssePD
		if o == 0x6f {
			return wrap(func(c *CPU) bool {
				v, ok := c.xmmRM(in, aligned)
				if ok {
					c.sse.xmm[reg] = v
				}
				return ok
			})
		}
		return wrap(func(c *CPU) bool { return c.xmmStore(in, aligned, c.sse.xmm[reg]) })
	case 0x70: // PSHUFD (66), PSHUFHW (F3), PSHUFLW (F2)
		if form == ssePS {
			return ud, true
		}
		imm := in.imm
		return wrap(func(c *CPU) bool {
			s, ok := c.xmmRM(in, true)
			if !ok {
				return false
			}
			var r [2]uint64
			switch form {
			case ssePD:
				w := [4]uint64{s[0] & 0xffffffff, s[0] >> 32, s[1] & 0xffffffff, s[1] >> 32}
				r[0] = w[imm&3] | w[imm>>2&3]<<32
				r[1] = w[imm>>4&3] | w[imm>>6&3]<<32
			case sseSS, sseSD:
				h := 1
				if form == sseSD {
					h = 0
				}
				r = s
				var q uint64
				for i := uint(0); i < 4; i++ {
					q |= (s[h] >> (16 * (imm >> (2 * i) & 3)) & 0xffff) << (16 * i)
				}
				r[h] = q
			}
			c.sse.xmm[reg] = r
			return true
		})
	case 0x71, 0x72, 0x73: // shifts by immediate
		if form != ssePD || in.hasMem {
			return ud, true
		}
		w := map[byte]int{0x71: 2, 0x72: 4, 0x73: 8}[o]
		n := in.reg & 7
		imm := in.imm & 0xff
		dst := in.rm
		return wrap(func(c *CPU) bool {
			v := c.sse.xmm[dst]
			switch {
			case o == 0x73 && n == 3: // PSRLDQ
				c.sse.xmm[dst] = byteShift(v, int(imm), true)
			case o == 0x73 && n == 7: // PSLLDQ
				c.sse.xmm[dst] = byteShift(v, int(imm), false)
			case n == 2 || n == 4 || n == 6:
				c.sse.xmm[dst] = laneShift(v, w, n, imm)
			default:
				c.raise(excUD, -1)
				return false
			}
			return true
		})
	case 0xd1, 0xd2, 0xd3, 0xe1, 0xe2, 0xf1, 0xf2, 0xf3: // shifts by xmm
		if form != ssePD {
			return ud, true
		}
		w := [4]int{0, 2, 4, 8}[o&3]
		n := map[byte]byte{0xd0: 2, 0xe0: 4, 0xf0: 6}[o&0xf0]
		return binop(func(a, b [2]uint64) [2]uint64 {
			cnt := b[0]
			if b[1] != 0 {
				cnt = 1 << 32
			}
			return laneShift(a, w, n, cnt)
		})
	case 0xd7: // PMOVMSKB
		if form != ssePD || in.hasMem {
			return ud, true
		}
		src := in.rm
		return wrap(func(c *CPU) bool {
			b := bytesOf(c.sse.xmm[src])
			var m uint64
			for i, x := range b {
				m |= uint64(x>>7) << i
			}
			c.R[reg] = m
			return true
		})
	}
	if form == ssePD {
		if f := sseIntOp(o); f != nil {
			return binop(f)
		}
	}
	if h := c.translateSSEFP(in, form); h != nil {
		return h, false
	}
	return ud, true
}

func byteShift(v [2]uint64, n int, right bool) [2]uint64 {
	if n > 16 {
		n = 16
	}
	b := bytesOf(v)
	var r [16]byte
	for i := range r {
		j := i - n
		if right {
			j = i + n
		}
		if j >= 0 && j < 16 {
			r[i] = b[j]
		}
	}
	return fromBytes(r)
}

// laneShift shifts each w-byte lane: n 2 = logical right, 4 = arithmetic right, 6 = left.
func laneShift(v [2]uint64, w int, n byte, cnt uint64) [2]uint64 {
	nb := uint64(8 * w)
	return lanes(v, v, w, func(x, _ uint64) uint64 {
		switch n {
		case 2:
			if cnt >= nb {
				return 0
			}
			return x >> cnt
		case 4:
			s := 64 - nb
			if cnt >= nb {
				cnt = nb - 1
			}
			return uint64(int64(x<<s) >> s >> cnt)
		}
		if cnt >= nb {
			return 0
		}
		return x << cnt
	})
}

// sseIntOp returns the 66-prefixed two-operand SSE2 integer operation for opcode o.
func sseIntOp(o byte) func(a, b [2]uint64) [2]uint64 {
	l := func(w int, f func(x, y uint64) uint64) func(a, b [2]uint64) [2]uint64 {
		return func(a, b [2]uint64) [2]uint64 { return lanes(a, b, w, f) }
	}
	eq := func(x, y uint64) uint64 {
		if x == y {
			return ^uint64(0)
		}
		return 0
	}
	gt := func(w int) func(x, y uint64) uint64 {
		return func(x, y uint64) uint64 {
			if int64(sext(x, w)) > int64(sext(y, w)) {
				return ^uint64(0)
			}
			return 0
		}
	}
	add := func(x, y uint64) uint64 { return x + y }
	sub := func(x, y uint64) uint64 { return x - y }
	unpack := func(w int, hi int) func(a, b [2]uint64) [2]uint64 {
		return func(a, b [2]uint64) [2]uint64 {
			x, y := a[hi], b[hi]
			var r [2]uint64
			m := sizeMask(w)
			for i := 0; i < 8/w; i++ {
				s := uint(8 * w * i)
				xv, yv := x>>s&m, y>>s&m
				pos := uint(2 * i * w * 8)
				r[pos/64] |= xv << (pos % 64)
				pos += uint(8 * w)
				r[pos/64] |= yv << (pos % 64)
			}
			return r
		}
	}
	switch o {
	case 0x60:
		return unpack(1, 0)
	case 0x61:
		return unpack(2, 0)
	case 0x62:
		return unpack(4, 0)
	case 0x6c:
		return unpack(8, 0)
	case 0x68:
		return unpack(1, 1)
	case 0x69:
		return unpack(2, 1)
	case 0x6a:
		return unpack(4, 1)
	case 0x6d:
		return unpack(8, 1)
	case 0x64:
		return l(1, gt(1))
	case 0x65:
		return l(2, gt(2))
	case 0x66:
		return l(4, gt(4))
	case 0x74:
		return l(1, eq)
	case 0x75:
		return l(2, eq)
	case 0x76:
		return l(4, eq)
	case 0xd4:
		return l(8, add)
	case 0xfc:
		return l(1, add)
	case 0xfd:
		return l(2, add)
	case 0xfe:
		return l(4, add)
	case 0xf8:
		return l(1, sub)
	case 0xf9:
		return l(2, sub)
	case 0xfa:
		return l(4, sub)
	case 0xfb:
		return l(8, sub)
	case 0xda: // PMINUB
		return l(1, func(x, y uint64) uint64 { return min(x, y) })
	case 0xde: // PMAXUB
		return l(1, func(x, y uint64) uint64 { return max(x, y) })
	case 0xdb:
		return func(a, b [2]uint64) [2]uint64 { return [2]uint64{a[0] & b[0], a[1] & b[1]} }
	case 0xdf:
		return func(a, b [2]uint64) [2]uint64 { return [2]uint64{^a[0] & b[0], ^a[1] & b[1]} }
	case 0xeb:
		return func(a, b [2]uint64) [2]uint64 { return [2]uint64{a[0] | b[0], a[1] | b[1]} }
	case 0xef:
		return func(a, b [2]uint64) [2]uint64 { return [2]uint64{a[0] ^ b[0], a[1] ^ b[1]} }
	case 0xf6: // PSADBW
		return func(a, b [2]uint64) [2]uint64 {
			var r [2]uint64
			for h := 0; h < 2; h++ {
				var s uint64
				for i := uint(0); i < 64; i += 8 {
					x, y := a[h]>>i&0xff, b[h]>>i&0xff
					if x > y {
						s += x - y
					} else {
						s += y - x
					}
				}
				r[h] = s
			}
			return r
		}
	}
	return nil
}

// group15: FXSAVE, FXRSTOR, LDMXCSR, STMXCSR, XSAVE/XRSTOR (not advertised), fences,
// CLFLUSH.
func (c *CPU) group15(in *insn, flags uint64) (op, bool) {
	if !in.hasMem {
		switch in.reg & 7 {
		case 5, 6, 7: // LFENCE, MFENCE, SFENCE: host atomics order guest accesses already
			return func(c *CPU) bool { return true }, false
		}
		return ud, true
	}
	switch in.reg & 7 {
	case 0: // FXSAVE
		return func(c *CPU) bool {
			ea := c.ea(in)
			if ea&15 != 0 {
				c.raise(excGP, 0)
				return false
			}
			var img [512]byte
			c.fxsaveImage(&img, in.rex&8 != 0)
			for i := 0; i < 416; i += 8 { // bytes 416-511 are left alone

				if !c.st(ea+uint64(i), 8, binary.LittleEndian.Uint64(img[i:])) {
					return false
				}
			}
			return true
		}, false
	case 1: // FXRSTOR
		return func(c *CPU) bool {
			ea := c.ea(in)
			if ea&15 != 0 {
				c.raise(excGP, 0)
				return false
			}
			var img [512]byte
			for i := 0; i < 416; i += 8 {
				v, ok := c.ld(ea+uint64(i), 8)
				if !ok {
					return false
				}
				binary.LittleEndian.PutUint64(img[i:], v)
			}
			mx := binary.LittleEndian.Uint32(img[24:])
			if mx&^0xffff != 0 {
				c.raise(excGP, 0)
				return false
			}
			c.sse.fcw = binary.LittleEndian.Uint16(img[0:])
			fsw := binary.LittleEndian.Uint16(img[2:])
			c.sse.fsw, c.sse.top = fsw&^0x3800, uint8(fsw>>11&7)
			c.sse.ftw = img[4]
			for i := 0; i < 8; i++ {
				c.loadExt80((int(c.sse.top)+i)&7, img[32+16*i:])
			}
			c.sse.mxcsr = mx
			for i := 0; i < 16; i++ {
				o := 160 + 16*i
				c.sse.xmm[i] = [2]uint64{binary.LittleEndian.Uint64(img[o:]), binary.LittleEndian.Uint64(img[o+8:])}
			}
			return true
		}, false
	case 2: // LDMXCSR
		return func(c *CPU) bool {
			if !c.sseOK() {
				return false
			}
			v, ok := c.ld(c.ea(in), 4)
			if !ok {
				return false
			}
			if v&^0xffff != 0 {
				c.raise(excGP, 0)
				return false
			}
			c.sse.mxcsr = uint32(v)
			return true
		}, false
	case 3: // STMXCSR
		return func(c *CPU) bool { return c.sseOK() && c.st(c.ea(in), 4, uint64(c.sse.mxcsr)) }, false
	case 7: // CLFLUSH
		return func(c *CPU) bool { _, ok := c.ld(c.ea(in), 1); return ok }, false
	}
	return ud, true
}

func (c *CPU) fxsaveImage(img *[512]byte, _ bool) {
	binary.LittleEndian.PutUint16(img[0:], c.sse.fcw)
	binary.LittleEndian.PutUint16(img[2:], c.fswValue())
	img[4] = c.sse.ftw
	for i := 0; i < 8; i++ {
		c.storeExt80((int(c.sse.top)+i)&7, img[32+16*i:])
	}
	binary.LittleEndian.PutUint32(img[24:], c.sse.mxcsr)
	binary.LittleEndian.PutUint32(img[28:], 0xffff) // MXCSR_MASK
	for i := 0; i < 16; i++ {
		o := 160 + 16*i
		binary.LittleEndian.PutUint64(img[o:], c.sse.xmm[i][0])
		binary.LittleEndian.PutUint64(img[o+8:], c.sse.xmm[i][1])
	}
}

var _ = bits.Len

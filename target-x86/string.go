package x86

import (
	"sync/atomic"
	"unsafe"

	"gemu/tcg"
)

// String instructions (MOVS, CMPS, STOS, LODS, SCAS, INS, OUTS) with REP/REPE/REPNE.
// A REP form runs a bounded number of iterations per helper call and then re-executes
// itself (RIP stays on the instruction), so interrupts and exit requests are served
// between chunks and a fault leaves rCX/rSI/rDI at the faulting iteration.

const repChunk = 4096

func (c *CPU) translateString(in *insn) (op, bool) {
	o := in.opc
	size := opSize8(in)
	if o >= 0x6c && o <= 0x6f {
		size = 1
		if o&1 != 0 {
			size = in.opsz
			if size == 8 {
				size = 4
			}
		}
	}
	rep := in.rep != 0
	cmp := o == 0xa6 || o == 0xa7 || o == 0xae || o == 0xaf
	one := func(c *CPU) bool {
		am := sizeMask(in.adsz)
		step := uint64(size)
		if c.RFLAGS&flagDF != 0 {
			step = -step
		}
		si, di := c.R[6]&am, c.R[7]&am
		src := c.linear(in, si, false)
		dst := (di + c.Seg[segES].Base) & 0xffffffff
		if in.mode64 {
			dst = di
		}
		switch o {
		case 0xa4, 0xa5: // MOVS
			v, ok := c.ld(src, size)
			if !ok || !c.st(dst, size, v) {
				return false
			}
			c.setIdx(6, in, si+step)
			c.setIdx(7, in, di+step)
		case 0xa6, 0xa7: // CMPS
			a, ok := c.ld(src, size)
			if !ok {
				return false
			}
			b, ok := c.ld(dst, size)
			if !ok {
				return false
			}
			_, f := subFlags(a, b, 0, size)
			c.setArith(f, flagsArith)
			c.setIdx(6, in, si+step)
			c.setIdx(7, in, di+step)
		case 0xaa, 0xab: // STOS
			if !c.st(dst, size, c.R[0]) {
				return false
			}
			c.setIdx(7, in, di+step)
		case 0xac, 0xad: // LODS
			v, ok := c.ld(src, size)
			if !ok {
				return false
			}
			c.setReg(0, size, 1, v)
			c.setIdx(6, in, si+step)
		case 0xae, 0xaf: // SCAS
			b, ok := c.ld(dst, size)
			if !ok {
				return false
			}
			_, f := subFlags(c.R[0], b, 0, size)
			c.setArith(f, flagsArith)
			c.setIdx(7, in, di+step)
		case 0x6c, 0x6d: // INS
			if !c.ioAllowed(uint16(c.R[2]), size) {
				return false
			}
			v := c.portIn(uint16(c.R[2]), size)
			if !c.st(dst, size, v) {
				return false
			}
			c.setIdx(7, in, di+step)
		case 0x6e, 0x6f: // OUTS
			if !c.ioAllowed(uint16(c.R[2]), size) {
				return false
			}
			v, ok := c.ld(src, size)
			if !ok {
				return false
			}
			c.portOut(uint16(c.R[2]), size, v)
			c.setIdx(6, in, si+step)
		}
		return true
	}
	if !rep {
		return one, false
	}
	repne := in.rep == 0xf2
	bulk := in.mode64 && in.adsz == 8 && (o == 0xa4 || o == 0xa5 || o == 0xaa || o == 0xab)
	return func(c *CPU) bool {
		am := sizeMask(in.adsz)
		for i := 0; i < repChunk; i++ {
			if c.R[1]&am == 0 {
				c.RIP = in.next
				return false
			}
			if bulk {
				if n := c.repBulk(in, o, size, uint64(repChunk-i)); n > 0 {
					i += int(n) - 1
					continue
				}
			}
			if !one(c) {
				return false
			}
			c.setIdx(1, in, c.R[1]-1)
			if cmp && (c.RFLAGS&flagZF != 0) == repne {
				c.RIP = in.next
				return false
			}
		}
		if c.R[1]&am == 0 {
			c.RIP = in.next
		}
		return false // RIP still on the instruction: run it again (after any interrupt)
	}, true
}

// repBulk runs up to max iterations of REP MOVS or STOS (64-bit addressing) directly
// on host memory while source and destination stay within pages the TLB holds as RAM
// (the destination writable and not holding translated code) and do not overlap,
// updating rCX, rSI and rDI; it returns the iterations done, 0 when the next one must
// take the ordinary path (DF set, a page or TLB miss, an element across a page, MMIO).
func (c *CPU) repBulk(in *insn, o byte, size int, max uint64) uint64 {
	if c.RFLAGS&flagDF != 0 {
		return 0
	}
	sz := uint64(size)
	di := c.R[7]
	n := min(c.R[1], max, (0x1000-di&0xfff)/sz)
	movs := o == 0xa4 || o == 0xa5
	si := c.R[6]
	if movs {
		n = min(n, (0x1000-si&0xfff)/sz)
	}
	if n == 0 {
		return 0
	}
	ed := c.mmu.Entry(di)
	if ed.Write != di&tcg.PageMask || atomic.LoadUint32(ed.Code)&tcg.CodeBit != 0 {
		return 0
	}
	dst := unsafe.Slice((*byte)(unsafe.Add(ed.Host, di&0xfff)), n*sz)
	if movs {
		src := c.linear(in, si, false)
		es := c.mmu.Entry(src)
		if es.Read != src&tcg.PageMask {
			return 0
		}
		sp := unsafe.Add(es.Host, src&0xfff)
		lo, hi := uintptr(sp), uintptr(sp)+uintptr(n*sz)
		if d := uintptr(unsafe.Pointer(&dst[0])); d < hi && lo < d+uintptr(n*sz) {
			return 0 // overlapping: element by element
		}
		copy(dst, unsafe.Slice((*byte)(sp), n*sz))
		c.R[6] = si + n*sz
	} else {
		v := c.R[0]
		for i := uint64(0); i < n*sz; i += sz {
			tcg.StoreHost(unsafe.Pointer(&dst[i]), size, v)
		}
	}
	c.R[7] = di + n*sz
	c.R[1] -= n
	return n
}

// setIdx writes rSI/rDI/rCX with the address size.
func (c *CPU) setIdx(r int, in *insn, v uint64) {
	switch in.adsz {
	case 8:
		c.R[r] = v
	case 4:
		c.R[r] = v & 0xffffffff
	default:
		c.R[r] = c.R[r]&^0xffff | v&0xffff
	}
}

// I/O ports.

func (c *CPU) ioAllowed(port uint16, size int) bool {
	if c.iopl() {
		return true
	}
	// The TSS I/O permission bitmap.
	base, ok := c.ldSup(c.TR.Base+0x66, 2)
	if ok && base+uint64(port)/8+1 <= uint64(c.TR.Limit) {
		bm, ok := c.ldSup(c.TR.Base+base+uint64(port)/8, 2)
		if ok && bm>>(port%8)&(1<<size-1) == 0 {
			return true
		}
	}
	c.raise(excGP, 0)
	return false
}

func (c *CPU) portIn(port uint16, size int) uint64 {
	var buf [4]byte
	if c.cfg.IO == nil || !c.cfg.IO.Read(c.access, uint64(port), buf[:size]) {
		return sizeMask(size)
	}
	return uint64(buf[0]) | uint64(buf[1])<<8 | uint64(buf[2])<<16 | uint64(buf[3])<<24
}

func (c *CPU) portOut(port uint16, size int, v uint64) {
	if c.cfg.IO == nil {
		return
	}
	buf := [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
	c.cfg.IO.Write(c.access, uint64(port), buf[:size])
}

func (c *CPU) translateIO(in *insn) op {
	o := in.opc
	size := 1
	if o&1 != 0 {
		size = in.opsz
		if size == 8 {
			size = 4
		}
	}
	out := o&2 != 0
	imm := o < 0xe8
	return func(c *CPU) bool {
		port := uint16(c.R[2])
		if imm {
			port = uint16(in.imm & 0xff)
		}
		if !c.ioAllowed(port, size) {
			return false
		}
		if out {
			c.portOut(port, size, c.R[0])
		} else {
			c.setReg(0, size, 1, c.portIn(port, size))
		}
		return true
	}
}

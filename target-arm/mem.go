package arm

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"

	"gemu/hw/memory"
	"gemu/tcg"
)

// Guest memory accesses. The fast paths compare the TLB tag (which also rejects
// misaligned accesses) and access host memory directly; naturally aligned accesses are
// single host loads/stores and so single-copy atomic, as the architecture requires for
// concurrent vCPUs. Everything else goes to the slow paths, which walk page tables,
// raise precise aborts for the instruction at c.PC, split page-crossing accesses,
// dispatch MMIO, invalidate translated code on stores to code pages and mark pages
// dirty for a migration's dirty log (stores to pages it tracks come here: tcg.CodeBit).

// hostR and hostW return the host address for an aligned access (align = size-1) that
// the TLB allows through the fast path, or nil. They are small enough to inline into
// the hottest ops, which then call the slow paths themselves.
func (c *CPU) hostR(va, align uint64) unsafe.Pointer {
	e := &c.mmu.E[(va>>tcg.PageBits)&(1<<tcg.TLBBits-1)]
	if e.Read != va&(tcg.PageMask|align) {
		return nil
	}
	return unsafe.Add(e.Host, va&0xfff)
}

func (c *CPU) hostW(va, align uint64) unsafe.Pointer {
	e := &c.mmu.E[(va>>tcg.PageBits)&(1<<tcg.TLBBits-1)]
	if e.Write != va&(tcg.PageMask|align) || atomic.LoadUint32(e.Code)&tcg.CodeBit != 0 {
		return nil
	}
	return unsafe.Add(e.Host, va&0xfff)
}

func (c *CPU) ld8(va uint64) (uint64, bool) {
	e := c.mmu.Entry(va)
	if e.Read == va&tcg.PageMask {
		return uint64(*(*uint8)(unsafe.Add(e.Host, va&0xfff))), true
	}
	return c.ldSlow(va, 1, c.midx)
}

func (c *CPU) ld16(va uint64) (uint64, bool) {
	e := c.mmu.Entry(va)
	if e.Read == va&(tcg.PageMask|1) {
		return uint64(*(*uint16)(unsafe.Add(e.Host, va&0xfff))), true
	}
	return c.ldSlow(va, 2, c.midx)
}

func (c *CPU) ld32(va uint64) (uint64, bool) {
	e := c.mmu.Entry(va)
	if e.Read == va&(tcg.PageMask|3) {
		return uint64(*(*uint32)(unsafe.Add(e.Host, va&0xfff))), true
	}
	return c.ldSlow(va, 4, c.midx)
}

func (c *CPU) ld64(va uint64) (uint64, bool) {
	e := c.mmu.Entry(va)
	if e.Read == va&(tcg.PageMask|7) {
		return *(*uint64)(unsafe.Add(e.Host, va&0xfff)), true
	}
	return c.ldSlow(va, 8, c.midx)
}

func (c *CPU) st8(va, v uint64) bool {
	e := c.mmu.Entry(va)
	if e.Write == va&tcg.PageMask && atomic.LoadUint32(e.Code)&tcg.CodeBit == 0 {
		*(*uint8)(unsafe.Add(e.Host, va&0xfff)) = uint8(v)
		return true
	}
	return c.stSlow(va, 1, v, c.midx)
}

func (c *CPU) st16(va, v uint64) bool {
	e := c.mmu.Entry(va)
	if e.Write == va&(tcg.PageMask|1) && atomic.LoadUint32(e.Code)&tcg.CodeBit == 0 {
		*(*uint16)(unsafe.Add(e.Host, va&0xfff)) = uint16(v)
		return true
	}
	return c.stSlow(va, 2, v, c.midx)
}

func (c *CPU) st32(va, v uint64) bool {
	e := c.mmu.Entry(va)
	if e.Write == va&(tcg.PageMask|3) && atomic.LoadUint32(e.Code)&tcg.CodeBit == 0 {
		*(*uint32)(unsafe.Add(e.Host, va&0xfff)) = uint32(v)
		return true
	}
	return c.stSlow(va, 4, v, c.midx)
}

func (c *CPU) st64(va, v uint64) bool {
	e := c.mmu.Entry(va)
	if e.Write == va&(tcg.PageMask|7) && atomic.LoadUint32(e.Code)&tcg.CodeBit == 0 {
		*(*uint64)(unsafe.Add(e.Host, va&0xfff)) = v
		return true
	}
	return c.stSlow(va, 8, v, c.midx)
}

// ld loads size bytes (1, 2, 4, 8) zero-extended, with the permissions of MMU index idx.
func (c *CPU) ld(va uint64, size int, idx uint64) (uint64, bool) {
	if idx == c.el {
		switch size {
		case 1:
			return c.ld8(va)
		case 2:
			return c.ld16(va)
		case 4:
			return c.ld32(va)
		}
		return c.ld64(va)
	}
	return c.ldSlow(va, size, idx)
}

// st stores the low size bytes of v with the permissions of MMU index idx.
func (c *CPU) st(va uint64, size int, v uint64, idx uint64) bool {
	if idx == c.el {
		switch size {
		case 1:
			return c.st8(va, v)
		case 2:
			return c.st16(va, v)
		case 4:
			return c.st32(va, v)
		}
		return c.st64(va, v)
	}
	return c.stSlow(va, size, v, idx)
}

// alignFault raises an alignment fault for an access at va.
func (c *CPU) alignFault(va uint64, write bool) {
	acc := accRead
	if write {
		acc = accWrite
	}
	c.abort(va, acc, fscAlignment)
}

func (c *CPU) ldSlow(va uint64, size int, idx uint64) (uint64, bool) {
	if c.dbg.wpOn && c.watchCheck(va, size, false, idx) {
		return 0, false
	}
	if va&uint64(size-1) != 0 {
		if c.sr.sctlr&sctlrA != 0 {
			c.alignFault(va, false)
			return 0, false
		}
		if va&0xfff+uint64(size) > 0x1000 {
			// Page-crossing: byte by byte, each byte translated on its own.
			var v uint64
			for i := 0; i < size; i++ {
				b, ok := c.ldSlow(va+uint64(i), 1, idx)
				if !ok {
					return 0, false
				}
				v |= b << (8 * i)
			}
			return v, true
		}
	}
	e := c.tlb[idx].Entry(va)
	if e.Read == va&tcg.PageMask {
		return tcg.LoadHostUnaligned(unsafe.Add(e.Host, va&0xfff), size), true
	}
	pa, host, ok := c.fill(va, accRead, int(idx))
	if !ok {
		return 0, false
	}
	if host != nil {
		return tcg.LoadHostUnaligned(unsafe.Add(host, va&0xfff), size), true
	}
	var buf [8]byte
	if c.cfg.MMIO == nil {
		c.abort(va, accRead, fscExtAbort)
		return 0, false
	}
	c.cfg.MMIO.Read(c.access, pa, buf[:size])
	return binary.LittleEndian.Uint64(buf[:]), true
}

// writable returns the host address for a store of size bytes at va (nil for MMIO, with
// pa set), after invalidating translated code the store would overwrite.
func (c *CPU) writable(va uint64, size int, idx uint64) (host unsafe.Pointer, pa uint64, ok bool) {
	e := c.tlb[idx].Entry(va)
	if e.Write == va&tcg.PageMask {
		pa, host = e.Phys|va&0xfff, unsafe.Add(e.Host, va&0xfff)
	} else {
		pa, host, ok = c.fill(va, accWrite, int(idx))
		if !ok {
			return nil, 0, false
		}
		if host == nil {
			return nil, pa, true
		}
		host = unsafe.Add(host, va&0xfff)
	}
	// The page is written (the dirty log's PageTrack may be what sent the store here:
	// marking it lets the next stores to it take the fast path); translated code on it
	// goes. The caller stores right after: a migration's dirty-log sync makes every
	// vCPU pass a block boundary before it reads the pages, so marking first loses
	// nothing.
	if memory.MarkDirty(c.eng.Cache().CodeFlag(pa))&memory.PageCode != 0 {
		c.eng.Cache().InvalidateRange(pa, uint64(size))
	}
	return host, pa, true
}

func (c *CPU) stSlow(va uint64, size int, v uint64, idx uint64) bool {
	if c.dbg.wpOn && c.watchCheck(va, size, true, idx) {
		return false
	}
	if va&uint64(size-1) != 0 {
		if c.sr.sctlr&sctlrA != 0 {
			c.alignFault(va, true)
			return false
		}
		if va&0xfff+uint64(size) > 0x1000 {
			// Page-crossing: check both pages before writing anything.
			n := 0x1000 - int(va&0xfff)
			if _, _, ok := c.writable(va, n, idx); !ok {
				return false
			}
			if _, _, ok := c.writable(va+uint64(n), size-n, idx); !ok {
				return false
			}
			for i := 0; i < size; i++ {
				if !c.stSlow(va+uint64(i), 1, v>>(8*i), idx) {
					return false
				}
			}
			return true
		}
	}
	host, pa, ok := c.writable(va, size, idx)
	if !ok {
		return false
	}
	if host != nil {
		tcg.StoreHostUnaligned(host, size, v)
		return true
	}
	if c.cfg.MMIO == nil {
		c.abort(va, accWrite, fscExtAbort)
		return false
	}
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], v)
	c.cfg.MMIO.Write(c.access, pa, buf[:size])
	return true
}

// monitor is the vCPU's local exclusive monitor. Exclusivity is checked by value when
// the store-exclusive compares-and-swaps guest memory, which makes any intervening
// store by another vCPU that changed the value fail the store-exclusive.
type monitor struct {
	valid    bool
	va       uint64
	size     int // total bytes (pairs: both registers)
	val, hi  uint64
	pairWide bool // 2 x 64-bit
}

// ldExcl implements LDXR/LDAXR/LDXP (pair=true) of total size bytes.
func (c *CPU) ldExcl(va uint64, size int, pair bool) (lo, hi uint64, ok bool) {
	if va&uint64(size-1) != 0 {
		c.alignFault(va, false)
		return 0, 0, false
	}
	if size == 16 {
		if lo, ok = c.ld64(va); !ok {
			return
		}
		if hi, ok = c.ld64(va + 8); !ok {
			return
		}
	} else if lo, ok = c.ld(va, size, c.midx); !ok {
		return
	}
	c.excl = monitor{valid: true, va: va, size: size, val: lo, hi: hi, pairWide: size == 16}
	return lo, hi, true
}

// stExcl implements STXR/STLXR/STXP. It returns the status (0 success, 1 failure) and
// ok=false if a fault was raised.
func (c *CPU) stExcl(va uint64, size int, lo, hi uint64) (status uint64, ok bool) {
	if va&uint64(size-1) != 0 {
		c.alignFault(va, true)
		return 0, false
	}
	if c.dbg.wpOn && c.watchCheck(va, size, true, c.midx) {
		return 0, false
	}
	m := c.excl
	c.excl.valid = false
	host, _, ok := c.writable(va, min(size, 8), c.midx)
	if !ok {
		return 0, false
	}
	if !m.valid || m.va != va || m.size != size || host == nil {
		return 1, true
	}
	switch size {
	case 1, 2:
		// CAS the aligned word containing the byte/halfword.
		wp := (*uint32)(unsafe.Pointer(uintptr(host) &^ 3))
		sh := (uintptr(host) & 3) * 8
		mask := uint32(1)<<(8*size) - 1
		if size == 2 {
			mask = 0xffff
		}
		for {
			old := atomic.LoadUint32(wp)
			if uint64(old>>sh&mask) != m.val {
				return 1, true
			}
			nw := old&^(mask<<sh) | (uint32(lo)&mask)<<sh
			if atomic.CompareAndSwapUint32(wp, old, nw) {
				return 0, true
			}
		}
	case 4:
		if atomic.CompareAndSwapUint32((*uint32)(host), uint32(m.val), uint32(lo)) {
			return 0, true
		}
		return 1, true
	case 8:
		if atomic.CompareAndSwapUint64((*uint64)(host), m.val, lo) {
			return 0, true
		}
		return 1, true
	}
	// 16 bytes: both halves lie in the same page (16-byte aligned).
	c.eng.Exclusive.Lock()
	defer c.eng.Exclusive.Unlock()
	p0 := (*uint64)(host)
	p1 := (*uint64)(unsafe.Add(host, 8))
	if atomic.LoadUint64(p0) != m.val || atomic.LoadUint64(p1) != m.hi {
		return 1, true
	}
	atomic.StoreUint64(p0, lo)
	atomic.StoreUint64(p1, hi)
	return 0, true
}

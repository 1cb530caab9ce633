package arm

import (
	"sync/atomic"
	"unsafe"

	"gemu/tcg"
)

// ARMv8.1 Large System Extensions (FEAT_LSE): CAS, CASP, the LD<op> atomic memory
// operations (ADD, CLR, EOR, SET, SMAX, SMIN, UMAX, UMIN) with their ST<op> aliases,
// and SWP, each with the acquire/release variants; and ARMv8.3 LDAPR (FEAT_LRCPC).
// They execute only on models that advertise them (ID_AA64ISAR0.Atomic,
// ID_AA64ISAR1.LRCPC) and are UNDEFINED otherwise, as on the silicon.
//
// Atomicity across vCPUs: up to 8 bytes, the read-modify-write is a host
// compare-and-swap loop on guest RAM (bytes and halfwords through the aligned 32-bit
// word that contains them), as the store-exclusives do, so it is atomic against
// every other vCPU's plain stores, exclusives and atomics. The 16-byte CASP holds the
// engine's Exclusive lock like the 16-byte store-exclusive. Host compare-and-swap is
// a full barrier, which covers the acquire and release semantics. Like QEMU, the
// access is a write for permissions and watchpoints even when a compare fails and
// must be naturally aligned (an alignment fault with WnR 0 otherwise); unlike QEMU,
// which serialises the vCPUs and does the access on the device, an atomic to MMIO is
// an external abort.

// Atomic memory operations (opc field; o3=1 opc=0 is SWP, given lseSWP).
const (
	lseADD = iota
	lseCLR
	lseEOR
	lseSET
	lseSMAX
	lseSMIN
	lseUMAX
	lseUMIN
	lseSWP
	lseCAS // compare with cmp, store s if equal
)

// lseApply returns the value an atomic operation stores given the old memory value
// (zero-extended from size bytes) and whether it stores at all.
func lseApply(kind int, size int, old, s, cmp uint64) (uint64, bool) {
	sh := uint(64 - 8*size)
	switch kind {
	case lseADD:
		return old + s, true
	case lseCLR:
		return old &^ s, true
	case lseEOR:
		return old ^ s, true
	case lseSET:
		return old | s, true
	case lseSMAX, lseSMIN:
		o, v := int64(old<<sh)>>sh, int64(s<<sh)>>sh
		if (o > v) == (kind == lseSMAX) {
			return old, true
		}
		return s, true
	case lseUMAX:
		return max(old, s), true
	case lseUMIN:
		return min(old, s), true
	case lseSWP:
		return s, true
	}
	// lseCAS
	return s, old == cmp
}

// atomicRMW performs an atomic operation on the size-byte (1, 2, 4, 8) value at va
// and returns the old value; ok=false if it raised an exception.
func (c *CPU) atomicRMW(va uint64, size int, kind int, s, cmp uint64) (old uint64, ok bool) {
	host, ok := c.atomicHost(va, size)
	if !ok {
		return 0, false
	}
	mask := ^uint64(0) >> (64 - 8*size)
	s, cmp = s&mask, cmp&mask
	switch size {
	case 1, 2:
		wp := (*uint32)(unsafe.Pointer(uintptr(host) &^ 3))
		sh := (uintptr(host) & 3) * 8
		m := uint32(mask)
		for {
			w := atomic.LoadUint32(wp)
			old = uint64(w >> sh & m)
			nv, store := lseApply(kind, size, old, s, cmp)
			if !store || atomic.CompareAndSwapUint32(wp, w, w&^(m<<sh)|(uint32(nv)&m)<<sh) {
				return old, true
			}
		}
	case 4:
		p := (*uint32)(host)
		for {
			old = uint64(atomic.LoadUint32(p))
			nv, store := lseApply(kind, size, old, s, cmp)
			if !store || atomic.CompareAndSwapUint32(p, uint32(old), uint32(nv)) {
				return old, true
			}
		}
	default:
		p := (*uint64)(host)
		for {
			old = atomic.LoadUint64(p)
			nv, store := lseApply(kind, size, old, s, cmp)
			if !store || atomic.CompareAndSwapUint64(p, old, nv) {
				return old, true
			}
		}
	}
}

// atomicHost checks an atomic access of size bytes at va (alignment, watchpoints,
// write permission, RAM) and returns its host address.
func (c *CPU) atomicHost(va uint64, size int) (unsafe.Pointer, bool) {
	if va&uint64(size-1) != 0 {
		c.alignFault(va, false) // WnR 0, as QEMU reports it (the read is checked first)
		return nil, false
	}
	if c.dbg.wpOn && c.watchCheck(va, size, true, c.midx) {
		return nil, false
	}
	// An unreadable location faults as a read (WnR 0), as the architecture's
	// AccType_ATOMICRW permission check and QEMU do; a read-only one as a write.
	if e := c.tlb[c.midx].Entry(va); e.Read != va&tcg.PageMask {
		if _, _, ok := c.fill(va, accRead, int(c.midx)); !ok {
			return nil, false
		}
	}
	host, _, ok := c.writable(va, size, c.midx)
	if !ok {
		return nil, false
	}
	if host == nil {
		c.abort(va, accWrite, fscExtAbort)
		return nil, false
	}
	return host, true
}

// casp128 is CASP with 64-bit registers: compare the 16 bytes at va with cmpLo:cmpHi
// and store lo:hi if equal; it returns the old value.
func (c *CPU) casp128(va, cmpLo, cmpHi, lo, hi uint64) (oldLo, oldHi uint64, ok bool) {
	host, ok := c.atomicHost(va, 16)
	if !ok {
		return 0, 0, false
	}
	c.eng.Exclusive.Lock()
	defer c.eng.Exclusive.Unlock()
	p0 := (*uint64)(host)
	p1 := (*uint64)(unsafe.Add(host, 8))
	oldLo, oldHi = atomic.LoadUint64(p0), atomic.LoadUint64(p1)
	if oldLo == cmpLo && oldHi == cmpHi {
		atomic.StoreUint64(p0, lo)
		atomic.StoreUint64(p1, hi)
	}
	return oldLo, oldHi, true
}

// decodeAtomicMem decodes the atomic memory operations class (load/store register,
// V=0, bit 21 set, bits 11:10 = 00): LD<op>, SWP and LDAPR.
func decodeAtomicMem(insn uint32, pc uint64) (op, bool) {
	size := insn >> 30
	a := insn >> 23 & 1
	rs, rn, rt := insn>>16&31, insn>>5&31, insn&31
	o3, opc := insn>>15&1, int(insn>>12&7)
	bytes := 1 << size
	kind := opc
	if o3 == 1 {
		switch {
		case opc == 0:
			kind = lseSWP
		case opc == 4 && a == 1 && insn>>22&1 == 0 && rs == 31: // LDAPR
			return func(c *CPU) bool {
				if !c.rcpc {
					return c.undef(pc)
				}
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
		default:
			return undefOp(pc), true
		}
	}
	return func(c *CPU) bool {
		if !c.lse {
			return c.undef(pc)
		}
		c.PC = pc
		old, ok := c.atomicRMW(c.rsp(rn), bytes, kind, c.r(rs), 0)
		if ok {
			c.w(rt, old)
		}
		return ok
	}, false
}

// decodeCAS decodes CAS{A,L,AL}{B,H} (size 0-3; Rs receives the old value).
func decodeCAS(insn uint32, pc uint64) (op, bool) {
	bytes := 1 << (insn >> 30)
	rs, rn, rt := insn>>16&31, insn>>5&31, insn&31
	return func(c *CPU) bool {
		if !c.lse {
			return c.undef(pc)
		}
		c.PC = pc
		old, ok := c.atomicRMW(c.rsp(rn), bytes, lseCAS, c.r(rt), c.r(rs))
		if ok {
			c.w(rs, old)
		}
		return ok
	}, false
}

// decodeCASP decodes CASP{A,L,AL} (sz=0: two W registers, sz=1: two X registers; Rs
// and Rt even, Rs:Rs+1 receive the old value).
func decodeCASP(insn uint32, pc uint64) (op, bool) {
	wide := insn>>30&1 == 1
	rs, rn, rt := insn>>16&31, insn>>5&31, insn&31
	if rs&1 != 0 || rt&1 != 0 {
		return undefOp(pc), true
	}
	if wide {
		return func(c *CPU) bool {
			if !c.lse {
				return c.undef(pc)
			}
			c.PC = pc
			lo, hi, ok := c.casp128(c.rsp(rn), c.r(rs), c.r(rs+1), c.r(rt), c.r(rt+1))
			if ok {
				c.w(rs, lo)
				c.w(rs+1, hi)
			}
			return ok
		}, false
	}
	return func(c *CPU) bool {
		if !c.lse {
			return c.undef(pc)
		}
		c.PC = pc
		cmp := uint64(uint32(c.r(rs))) | c.r(rs+1)<<32
		nv := uint64(uint32(c.r(rt))) | c.r(rt+1)<<32
		old, ok := c.atomicRMW(c.rsp(rn), 8, lseCAS, nv, cmp)
		if ok {
			c.w(rs, uint64(uint32(old)))
			c.w(rs+1, old>>32)
		}
		return ok
	}, false
}

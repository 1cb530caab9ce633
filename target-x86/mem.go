package x86

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"

	"gemu/tcg"
)

// Guest memory: the 4-level (long mode) and 2-level/PAE-less legacy page walk that
// fills the softmmu TLB, #PF with CR2 and the error code, and the load/store paths
// instruction helpers use (TLB fast path, page-crossing and MMIO slow paths).

// Access kinds.
const (
	accRead = iota
	accWrite
	accExec
)

// #PF error-code bits.
const (
	pfP    = 1 << 0
	pfW    = 1 << 1
	pfU    = 1 << 2
	pfRSVD = 1 << 3
	pfI    = 1 << 4
)

const (
	pteP   = 1 << 0
	pteW   = 1 << 1
	pteU   = 1 << 2
	pteA   = 1 << 5
	pteD   = 1 << 6
	ptePS  = 1 << 7
	pteNX  = 1 << 63
	cr0EM  = 1 << 2
	cr0TS  = 1 << 3
	cr4PSE = 1 << 4
	cr4PGE = 1 << 7
)

const addrMask = 0x000ffffffffff000 // physical-address bits of a PTE (52-bit)

// canonical reports whether va is a canonical 48-bit address.
func canonical(va uint64) bool { return uint64(int64(va<<16)>>16) == va }

func (c *CPU) hostPage(pa uint64) unsafe.Pointer {
	b, ok := c.cfg.RAM.Slice(pa&^0xfff, 0x1000)
	if !ok {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

// physLoad64 reads a page-table entry (RAM only; elsewhere reads as zero, not present).
func (c *CPU) physLoad64(pa uint64) uint64 {
	b, ok := c.cfg.RAM.Slice(pa, 8)
	if !ok {
		return 0
	}
	return atomic.LoadUint64((*uint64)(unsafe.Pointer(&b[0])))
}

// physOr64 atomically sets bits in a page-table entry (A/D updates).
func (c *CPU) physOr64(pa, bits uint64) {
	if b, ok := c.cfg.RAM.Slice(pa, 8); ok {
		p := (*uint64)(unsafe.Pointer(&b[0]))
		if atomic.LoadUint64(p)&bits != bits {
			atomic.OrUint64(p, bits)
			c.cfg.RAM.Written(pa, 8)
		}
	}
}

func (c *CPU) physLoad32(pa uint64) uint64 {
	b, ok := c.cfg.RAM.Slice(pa, 4)
	if !ok {
		return 0
	}
	return uint64(atomic.LoadUint32((*uint32)(unsafe.Pointer(&b[0]))))
}

func (c *CPU) physOr32(pa uint64, bits uint32) {
	if b, ok := c.cfg.RAM.Slice(pa, 4); ok {
		p := (*uint32)(unsafe.Pointer(&b[0]))
		if atomic.LoadUint32(p)&bits != bits {
			atomic.OrUint32(p, bits)
			c.cfg.RAM.Written(pa, 4)
		}
	}
}

// walkResult is a page-table walk's outcome.
type walkResult struct {
	pa      uint64
	w, u, x bool // writable, user, executable (accumulated over the levels)
	dirty   bool // the leaf's D bit is set (or was set by this walk)
	fault   bool
	err     uint64 // #PF error code (P, RSVD) when fault
}

// walk translates va. write sets the leaf's D bit when the access is a write that the
// permissions allow (checked by the caller; D is set only if w). A/D bits are updated
// as the walk goes.
func (c *CPU) walk(va uint64, write bool) walkResult {
	if c.CR0&CR0_PG == 0 {
		return walkResult{pa: va & 0xffffffff, w: true, u: true, x: true, dirty: true}
	}
	nxe := c.EFER&EFER_NXE != 0
	if c.CR4&CR4_PAE == 0 {
		// 32-bit paging (no NX).
		pde := c.CR3&0xfffff000 | (va>>22&0x3ff)<<2
		e := c.physLoad32(pde)
		if e&pteP == 0 {
			return walkResult{fault: true}
		}
		r := walkResult{w: e&pteW != 0, u: e&pteU != 0, x: true}
		if e&ptePS != 0 && c.CR4&cr4PSE != 0 {
			c.physOr32(pde, pteA)
			if write && r.w {
				c.physOr32(pde, pteD)
				e |= pteD
			}
			r.pa, r.dirty = (e&0xffc00000|(e>>13&0xff)<<32)|va&0x3fffff, e&pteD != 0
			return r
		}
		c.physOr32(pde, pteA)
		ptea := e&0xfffff000 | (va>>12&0x3ff)<<2
		p := c.physLoad32(ptea)
		if p&pteP == 0 {
			return walkResult{fault: true}
		}
		r.w, r.u = r.w && p&pteW != 0, r.u && p&pteU != 0
		c.physOr32(ptea, pteA)
		if write && r.w {
			c.physOr32(ptea, pteD)
			p |= pteD
		}
		r.pa, r.dirty = p&0xfffff000|va&0xfff, p&pteD != 0
		return r
	}
	var levels int
	var table uint64
	if c.EFER&EFER_LMA != 0 {
		levels, table = 4, c.CR3&addrMask
	} else {
		// PAE: the 4 PDPTEs.
		pdpte := c.physLoad64(c.CR3&0xffffffe0 | (va>>30&3)<<3)
		if pdpte&pteP == 0 {
			return walkResult{fault: true}
		}
		levels, table = 2, pdpte&addrMask
	}
	r := walkResult{w: true, u: true, x: true}
	resv := uint64(0x000fff0000000000) // bits 51:40 (MAXPHYADDR 40, as CPUID says)
	if !nxe {
		resv |= pteNX
	}
	for lvl := levels; lvl >= 1; lvl-- {
		shift := 12 + 9*uint(lvl-1)
		ea := table + (va>>shift&0x1ff)<<3
		e := c.physLoad64(ea)
		if e&pteP == 0 {
			return walkResult{fault: true}
		}
		if e&resv != 0 || lvl == 4 && e&ptePS != 0 || lvl == 3 && e&ptePS != 0 && e&0x3fffe000 != 0 ||
			lvl == 2 && e&ptePS != 0 && e&0x1fe000 != 0 {
			return walkResult{fault: true, err: pfP | pfRSVD}
		}
		r.w = r.w && e&pteW != 0
		r.u = r.u && e&pteU != 0
		if nxe && e&pteNX != 0 {
			r.x = false
		}
		c.physOr64(ea, pteA)
		if lvl == 1 || e&ptePS != 0 {
			if write && r.w {
				c.physOr64(ea, pteD)
				e |= pteD
			}
			mask := uint64(1)<<shift - 1
			r.pa = e&addrMask&^mask | va&mask
			r.dirty = e&pteD != 0
			return r
		}
		table = e & addrMask
	}
	return r
}

// fill translates va for access acc with the permissions of MMU index idx (0
// supervisor, 1 user), installs the page in that TLB when it is RAM, and returns the
// physical address and host page. On a fault it raises #PF (or #GP for a
// non-canonical address) for the instruction at c.RIP and returns ok=false.
func (c *CPU) fill(va uint64, acc int, idx int) (pa uint64, host unsafe.Pointer, ok bool) {
	if c.EFER&EFER_LMA != 0 && !canonical(va) {
		c.raise(excGP, 0)
		return 0, nil, false
	}
	user := idx == 1
	wp := c.CR0&CR0_WP != 0
	r := c.walk(va, acc == accWrite && (user || wp))
	if !r.fault && acc == accWrite && !user && !wp && !r.dirty {
		r = c.walk(va, true) // supervisor writes ignore W when CR0.WP=0: set D anyway
		r.dirty = true
	}
	perm := func(a int) bool {
		switch a {
		case accRead:
			return !user || r.u
		case accWrite:
			return (!user || r.u) && (r.w || !user && !wp)
		}
		return r.x && (!user || r.u)
	}
	if r.fault || !perm(acc) {
		e := r.err
		if !r.fault {
			e |= pfP
		}
		if acc == accWrite {
			e |= pfW
		}
		if user {
			e |= pfU
		}
		if acc == accExec && c.EFER&EFER_NXE != 0 {
			e |= pfI
		}
		c.CR2 = va
		c.raise(excPF, int64(e))
		return 0, nil, false
	}
	host = c.hostPage(r.pa)
	if host != nil {
		code := c.eng.Cache().CodeFlag(r.pa)
		c.tlb[idx].Fill(va, r.pa, host, code, perm(accRead), perm(accWrite) && r.dirty && code != nil, perm(accExec), 0)
	}
	return r.pa, host, true
}

// probe is the run loop's Probe hook: the translation of va for an instruction fetch,
// with no exception.
func (c *CPU) probe(va uint64) (uint64, bool) {
	if c.EFER&EFER_LMA != 0 && !canonical(va) {
		return 0, false
	}
	r := c.walk(va, false)
	user := c.cpl == 3
	if r.fault || !r.x || user && !r.u || c.hostPage(r.pa) == nil {
		return 0, false
	}
	return r.pa, true
}

// fetch is the run loop's Fetch hook.
func (c *CPU) fetch(pc uint64) (pa uint64, host unsafe.Pointer, ok bool) {
	e := c.mmu.Entry(pc)
	if e.Exec == pc&tcg.PageMask {
		return e.Phys | pc&0xfff, e.Host, true
	}
	pa, host, ok = c.fill(pc, accExec, c.mmuIdx())
	if !ok {
		return 0, nil, false
	}
	if host == nil {
		// Executing from MMIO or unbacked memory: not supported; report as #PF-less
		// machine check stand-in (#GP(0)).
		c.raise(excGP, 0)
		return 0, nil, false
	}
	return pa, host, true
}

// fetchCode reads n code bytes at va for the decoder (instructions may straddle a
// page boundary); ok=false after raising the fault.
func (c *CPU) codeByte(va uint64) (byte, bool) {
	e := c.mmu.Entry(va)
	if e.Exec == va&tcg.PageMask {
		return *(*byte)(unsafe.Add(e.Host, va&0xfff)), true
	}
	_, host, ok := c.fill(va, accExec, c.mmuIdx())
	if !ok || host == nil {
		return 0, false
	}
	return *(*byte)(unsafe.Add(host, va&0xfff)), true
}

// ld loads size (1, 2, 4, 8) bytes zero-extended at linear address va with the current
// privilege.
func (c *CPU) ld(va uint64, size int) (uint64, bool) {
	e := c.mmu.Entry(va)
	if e.Read == va&(tcg.PageMask|uint64(size-1)) {
		return tcg.LoadHost(unsafe.Add(e.Host, va&0xfff), size), true
	}
	return c.ldSlow(va, size, c.mmuIdx())
}

// st stores the low size bytes of v at va with the current privilege.
func (c *CPU) st(va uint64, size int, v uint64) bool {
	e := c.mmu.Entry(va)
	if e.Write == va&(tcg.PageMask|uint64(size-1)) && atomic.LoadUint32(e.Code)&tcg.CodeBit == 0 {
		tcg.StoreHost(unsafe.Add(e.Host, va&0xfff), size, v)
		return true
	}
	return c.stSlow(va, size, v, c.mmuIdx())
}

func (c *CPU) ldSlow(va uint64, size int, idx int) (uint64, bool) {
	if va&0xfff+uint64(size) > 0x1000 {
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
	e := c.tlb[idx].Entry(va)
	if e.Read == va&tcg.PageMask {
		return tcg.LoadHostUnaligned(unsafe.Add(e.Host, va&0xfff), size), true
	}
	pa, host, ok := c.fill(va, accRead, idx)
	if !ok {
		return 0, false
	}
	if host != nil {
		return tcg.LoadHostUnaligned(unsafe.Add(host, va&0xfff), size), true
	}
	var buf [8]byte
	if c.cfg.MMIO == nil || !c.cfg.MMIO.Read(c.access, pa, buf[:size]) {
		return 1<<(8*size) - 1 | -(uint64(size) >> 3), true // unassigned: all ones
	}
	return binary.LittleEndian.Uint64(buf[:]), true
}

// writable returns the host address for a store of size bytes at va (nil for MMIO,
// with pa set) within one page, after invalidating translated code there.
func (c *CPU) writable(va uint64, size int, idx int) (host unsafe.Pointer, pa uint64, ok bool) {
	e := c.tlb[idx].Entry(va)
	if e.Write == va&tcg.PageMask {
		pa, host = e.Phys|va&0xfff, unsafe.Add(e.Host, va&0xfff)
	} else {
		pa, host, ok = c.fill(va, accWrite, idx)
		if !ok {
			return nil, 0, false
		}
		if host == nil {
			return nil, pa, true
		}
		host = unsafe.Add(host, va&0xfff)
	}
	if c.eng.Cache().IsCode(pa) {
		c.eng.Cache().InvalidateRange(pa, uint64(size))
	}
	return host, pa, true
}

func (c *CPU) stSlow(va uint64, size int, v uint64, idx int) bool {
	if va&0xfff+uint64(size) > 0x1000 {
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
	host, pa, ok := c.writable(va, size, idx)
	if !ok {
		return false
	}
	if host != nil {
		tcg.StoreHostUnaligned(host, size, v)
		return true
	}
	if c.cfg.MMIO != nil {
		var buf [8]byte
		binary.LittleEndian.PutUint64(buf[:], v)
		c.cfg.MMIO.Write(c.access, pa, buf[:size])
	}
	return true
}

// hostRMW returns a host pointer for an atomic read-modify-write of size bytes at va
// (nil when the location is MMIO or crosses a page), having checked write permission.
func (c *CPU) hostRMW(va uint64, size int) (unsafe.Pointer, bool) {
	if va&0xfff+uint64(size) > 0x1000 {
		// Check both pages (a fault must come before any write).
		if _, _, ok := c.writable(va, 1, c.mmuIdx()); !ok {
			return nil, false
		}
		if _, _, ok := c.writable(va+uint64(size-1), 1, c.mmuIdx()); !ok {
			return nil, false
		}
		return nil, true
	}
	h, _, ok := c.writable(va, size, c.mmuIdx())
	return h, ok
}

// ldSup and stSup access memory with supervisor permissions (descriptor tables, TSS,
// exception frames pushed on a CPL-0 stack).
func (c *CPU) ldSup(va uint64, size int) (uint64, bool) { return c.ldSlow(va, size, 0) }
func (c *CPU) stSup(va uint64, size int, v uint64) bool { return c.stSlow(va, size, v, 0) }

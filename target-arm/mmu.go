package arm

import (
	"sync/atomic"
	"unsafe"
)

// Access kinds for translation.
const (
	accRead = iota
	accWrite
	accExec
)

// Fault status codes (DFSC/IFSC) for a given level.
const (
	fscTranslation = 0x04
	fscAccessFlag  = 0x08
	fscPermission  = 0x0c
	fscExtAbort    = 0x10
	fscAlignment   = 0x21
)

// walkResult is a successful stage-1 translation of one 4 KiB page.
type walkResult struct {
	pa         uint64 // physical address of the accessed byte
	r, w, x    bool   // permissions for the MMU index walked for
	fault, lvl uint64 // fault status code (valid when faulted)
	faulted    bool
}

// fscAddrSize is the address size fault (the level is added as for the others).
const fscAddrSize = 0x00

// paBits is the physical address size of each ID_AA64MMFR0_EL1.PARange.
var paBits = [...]uint{32, 36, 40, 42, 44, 48, 52}

// translateOff is the translation with stage 1 disabled: the identity, but an address
// with bits set between the top of the physical address range and bit 63 (bit 55
// with TBI) takes an address size fault at level 0, as
// AArch64.TranslateAddressS1Off says (QEMU 7.2 alike): an address an authentication
// failure corrupted (pauth.go) faults there.
func (c *CPU) translateOff(va uint64) walkResult {
	tbi := c.sr.tcr >> 37 & 1
	if va>>55&1 != 0 {
		tbi = c.sr.tcr >> 38 & 1
	}
	v := va
	if tbi != 0 {
		v &= 1<<56 - 1
	}
	if v>>paBits[min(c.model.PARange, 6)] != 0 {
		return walkResult{faulted: true, fault: fscAddrSize, lvl: 0}
	}
	return walkResult{pa: va & (1<<52 - 1), r: true, w: true, x: true}
}

// translate walks the stage-1 tables for va as seen from MMU index idx (0 = EL0
// permissions, 1 = EL1) and returns the page's permissions.
func (c *CPU) translate(va uint64, idx int) walkResult {
	if c.sr.sctlr&sctlrM == 0 {
		return c.translateOff(va)
	}
	tcr := c.sr.tcr
	var ttbr, tsz uint64
	var tbi, epd bool
	if va>>55&1 == 0 {
		ttbr, tsz, tbi, epd = c.sr.ttbr0, tcr&0x3f, tcr>>37&1 != 0, tcr>>7&1 != 0
	} else {
		ttbr, tsz, tbi, epd = c.sr.ttbr1, tcr>>16&0x3f, tcr>>38&1 != 0, tcr>>23&1 != 0
	}
	if tsz < 16 {
		tsz = 16
	} else if tsz > 39 {
		tsz = 39
	}
	inBits := 64 - tsz
	// The bits above the input range must all equal bit 55 (the top byte is ignored when
	// TBI says so).
	v := va
	if tbi {
		v = uint64(int64(va<<8) >> 8)
	}
	want := uint64(0)
	if va>>55&1 != 0 {
		want = ^uint64(0) >> inBits
	}
	if v>>inBits != want || epd {
		return walkResult{faulted: true, fault: fscTranslation, lvl: 0}
	}
	level := uint64(4) - (inBits-12+8)/9 // 4K granule: 9 bits per level
	table := ttbr & 0x0000fffffffffffe
	apTable, xnTable, pxnTable := uint64(0), false, false
	for {
		shift := 12 + 9*(3-level)
		idxBits := uint64(9)
		if level == 4-(inBits-12+8)/9 {
			idxBits = inBits - shift
		}
		i := (va >> shift) & (1<<idxBits - 1)
		desc, ok := c.loadPhys64(table + i*8)
		if !ok {
			return walkResult{faulted: true, fault: fscExtAbort, lvl: level}
		}
		if desc&1 == 0 || (level == 3 && desc&2 == 0) {
			return walkResult{faulted: true, fault: fscTranslation, lvl: level}
		}
		if level < 3 && desc&2 != 0 {
			// Table descriptor.
			apTable |= desc >> 61 & 3
			xnTable = xnTable || desc>>60&1 != 0
			pxnTable = pxnTable || desc>>59&1 != 0
			table = desc & 0x0000fffffffff000
			level++
			continue
		}
		if level == 0 {
			return walkResult{faulted: true, fault: fscTranslation, lvl: level}
		}
		// Block (levels 1, 2) or page (level 3).
		oaMask := uint64(1)<<shift - 1
		pa := desc&0x0000fffffffff000&^oaMask | va&oaMask
		if desc&(1<<10) == 0 {
			return walkResult{faulted: true, fault: fscAccessFlag, lvl: level}
		}
		ap := desc >> 6 & 3
		el0 := ap&1 != 0 && apTable&1 == 0
		ro := ap&2 != 0 || apTable&2 != 0
		uxn := desc>>54&1 != 0 || xnTable
		pxn := desc>>53&1 != 0 || pxnTable
		r := walkResult{pa: pa}
		if idx == 0 {
			r.r = el0
			r.w = el0 && !ro
			r.x = !uxn
		} else {
			r.r = true
			r.w = !ro
			r.x = !pxn && !(el0 && !ro) // EL0-writable memory is never EL1-executable
		}
		if panDenies(idx, el0) {
			r.r, r.w = false, false // data only: fetches keep r.x
		}
		if c.sr.sctlr&sctlrWXN != 0 && r.w {
			r.x = false
		}
		return r
	}
}

// loadPhys64 reads a naturally aligned doubleword of guest RAM atomically (page-table
// walks); ok=false when pa is not RAM.
func (c *CPU) loadPhys64(pa uint64) (uint64, bool) {
	b, ok := c.cfg.RAM.Slice(pa&^7, 8)
	if !ok {
		return 0, false
	}
	return atomic.LoadUint64((*uint64)(unsafe.Pointer(&b[0]))), true
}

// hostPage returns the host address of the RAM page holding pa, or nil.
func (c *CPU) hostPage(pa uint64) unsafe.Pointer {
	b, ok := c.cfg.RAM.Slice(pa&^0xfff, 0x1000)
	if !ok {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

// fill translates va for access acc in MMU index idx, installs the page in the TLB when
// it is RAM, and returns the translation. On a fault it raises the abort (data or
// instruction, per acc) for the instruction at c.PC and returns ok=false.
func (c *CPU) fill(va uint64, acc int, idx int) (pa uint64, host unsafe.Pointer, ok bool) {
	w := c.translate(va, idx)
	if !w.faulted {
		switch acc {
		case accRead:
			w.faulted = !w.r
		case accWrite:
			w.faulted = !w.w
		case accExec:
			w.faulted = !w.x
		}
		if w.faulted {
			w.fault, w.lvl = fscPermission, 3
		}
	}
	if w.faulted {
		c.abort(va, acc, w.fault|w.lvl)
		return 0, nil, false
	}
	host = c.hostPage(w.pa)
	if host != nil {
		code := c.eng.Cache().CodeFlag(w.pa)
		r, wr := w.r, w.w && code != nil
		if c.dbg.wpOn && c.watchedPage(va) {
			r, wr = false, false // data accesses take the slow path (watchCheck)
		}
		c.tlb[idx].Fill(va, w.pa, host, code, r, wr, w.x, 0)
	}
	return w.pa, host, true
}

// abort raises a data abort (acc read/write) or instruction abort (acc exec) at va with
// fault status fsc, for the instruction at c.PC.
func (c *CPU) abort(va uint64, acc int, fsc uint64) {
	var ec, iss uint64
	if acc == accExec {
		ec = ecIAbortLow
	} else {
		ec = ecDAbortLow
		if acc == accWrite {
			iss |= 1 << 6
		}
	}
	if c.el == 1 {
		ec++
	}
	iss |= fsc
	c.takeException(excSync, ec<<26|1<<25|iss, va, true, c.PC)
}

// atS1 implements AT S1E{0,1}{R,W}: PAR_EL1 gets the result, no exception.
func (c *CPU) atS1(va uint64, idx int, write bool) {
	w := c.translate(va, idx)
	if !w.faulted && (!w.r || write && !w.w) {
		w.faulted, w.fault, w.lvl = true, fscPermission, 3
	}
	if w.faulted {
		c.sr.par = 1 | (w.fault|w.lvl)<<1
		return
	}
	c.sr.par = w.pa &^ 0xfff & (1<<48 - 1)
}

package x86

import "fmt"

// Exceptions and interrupt delivery: long-mode IDT (16-byte gates: interrupt/trap,
// IST, privilege change through the TSS RSPn), protected-mode 8-byte gates (same
// privilege only) and the real-mode IVT; #DF on a fault while delivering, triple fault
// (Config.Shutdown) on a fault while delivering #DF.

// Exception vectors.
const (
	excDE = 0
	excDB = 1
	excBP = 3
	excOF = 4
	excBR = 5
	excUD = 6
	excNM = 7
	excDF = 8
	excTS = 10
	excNP = 11
	excSS = 12
	excGP = 13
	excPF = 14
	excMF = 16
	excAC = 17
	excXM = 19
)

// Kinds of event delivery.
const (
	intFault = iota // an exception (fault or trap) raised by the instruction
	intHW           // an external interrupt or NMI
	intSoft         // INT n, INT3, INTO: gate DPL checked, RIP is the next instruction
)

// raise delivers exception vec with error code err (-1: none) for the instruction at
// c.RIP. Helpers return false after it.
func (c *CPU) raise(vec int, err int64) {
	c.deliver(vec, err, intFault, c.RIP)
}

// contributory reports whether vec is a contributory exception (#DE, #TS, #NP, #SS,
// #GP).
func contributory(vec int) bool {
	switch vec {
	case excDE, excTS, excNP, excSS, excGP:
		return true
	}
	return false
}

func hasErrorCode(vec int) bool {
	switch vec {
	case excDF, excTS, excNP, excSS, excGP, excPF, excAC:
		return true
	}
	return false
}

// deliver delivers event vec through the IDT; ret is the RIP saved in the frame.
func (c *CPU) deliver(vec int, err int64, kind int, ret uint64) {
	c.syncFlags()
	if c.tflag&TraceInt != 0 {
		fmt.Fprintf(c.trace, "cpu%d int vec=%#x err=%#x rip=%#x cpl=%d cr2=%#x\n", c.cfg.ID, vec, err, c.RIP, c.cpl, c.CR2)
	}
	if kind == intFault && !hasErrorCode(vec) {
		err = -1
	}
	c.LastVector, c.LastError = vec, err
	if c.delivering > 0 {
		// An exception while delivering another (SDM "Conditions for Generating a
		// Double Fault"): contributory after contributory, or contributory or #PF
		// after #PF, is #DF; any exception while delivering #DF is a triple fault;
		// other combinations are handled one after the other.
		first := c.delivVec
		switch {
		case first == excDF || c.delivering > 3:
			c.delivering = 0
			c.tripleFault()
			return
		case contributory(first) && contributory(vec), first == excPF && (contributory(vec) || vec == excPF):
			vec, err, kind = excDF, 0, intFault
			c.LastVector, c.LastError = vec, err
		}
	}
	saved := c.delivVec
	c.delivVec = vec
	c.delivering++
	defer func() { c.delivering--; c.delivVec = saved }()
	var ok bool
	switch {
	case c.CR0&CR0_PE == 0:
		ok = c.deliverReal(vec, ret)
	case c.EFER&EFER_LMA != 0:
		ok = c.deliverLong(vec, err, kind, ret)
	default:
		ok = c.deliverProt(vec, err, kind, ret)
	}
	_ = ok
	c.modeChanged()
}

func (c *CPU) tripleFault() {
	if c.tflag&TraceInt != 0 {
		fmt.Fprintf(c.trace, "cpu%d triple fault at rip=%#x\n", c.cfg.ID, c.RIP)
	}
	c.halted.Store(true)
	c.on.Store(false)
	c.v.Request(reqPower)
	if c.cfg.Shutdown != nil {
		c.cfg.Shutdown(c.cfg.ID)
	}
}

func (c *CPU) deliverReal(vec int, ret uint64) bool {
	off, ok1 := c.ldSup(c.IDT.Base+uint64(vec)*4, 2)
	sel, ok2 := c.ldSup(c.IDT.Base+uint64(vec)*4+2, 2)
	if !ok1 || !ok2 {
		return false
	}
	sp := c.R[4]
	push := func(v uint64) bool {
		sp = sp&^0xffff | (sp-2)&0xffff
		return c.stSup(c.Seg[segSS].Base+sp&0xffff, 2, v)
	}
	if !push(c.RFLAGS) || !push(uint64(c.Seg[segCS].Selector)) || !push(ret-c.Seg[segCS].Base) {
		return false
	}
	c.R[4] = sp
	c.RFLAGS &^= RFLAGS_IF | flagTF | flagAC | flagRF
	c.Seg[segCS] = RealModeSegment(uint16(sel), true)
	c.RIP = c.Seg[segCS].Base + off
	return true
}

// gate reads IDT entry vec: 16 bytes in long mode, 8 otherwise.
func (c *CPU) gate(vec int, long bool) (lo, hi uint64, ok bool) {
	size := uint64(8)
	if long {
		size = 16
	}
	if uint64(vec)*size+size-1 > uint64(c.IDT.Limit) {
		c.raise(excGP, int64(vec*8+2))
		return 0, 0, false
	}
	a := c.IDT.Base + uint64(vec)*size
	if lo, ok = c.ldSup(a, 8); !ok {
		return
	}
	if long {
		if hi, ok = c.ldSup(a+8, 8); !ok {
			return
		}
	}
	return lo, hi, true
}

func (c *CPU) deliverLong(vec int, err int64, kind int, ret uint64) bool {
	lo, hi, ok := c.gate(vec, true)
	if !ok {
		return false
	}
	typ := lo >> 40 & 0xf
	dpl := lo >> 45 & 3
	if typ != 0xe && typ != 0xf {
		c.raise(excGP, int64(vec*8+2))
		return false
	}
	if kind == intSoft && dpl < c.cpl {
		c.raise(excGP, int64(vec*8+2))
		return false
	}
	if lo>>47&1 == 0 {
		c.raise(excNP, int64(vec*8+2))
		return false
	}
	sel := uint16(lo >> 16)
	target := lo&0xffff | (lo>>48)<<16 | hi<<32
	ist := lo >> 32 & 7
	cs, ok := c.loadDesc(sel, excGP)
	if !ok {
		return false
	}
	if !cs.S || cs.Type&8 == 0 || !cs.L || !cs.Present {
		c.raise(excGP, int64(sel&^3))
		return false
	}
	newCPL := uint64(cs.DPL)
	if cs.Type&4 != 0 { // conforming
		newCPL = c.cpl
	}
	oldSS, oldRSP := uint64(c.Seg[segSS].Selector), c.R[4]
	rsp := c.R[4]
	if newCPL < c.cpl {
		v, ok := c.ldSup(c.TR.Base+4+8*newCPL, 8)
		if !ok {
			return false
		}
		rsp = v
	}
	if ist != 0 {
		v, ok := c.ldSup(c.TR.Base+0x24+8*(ist-1), 8)
		if !ok {
			return false
		}
		rsp = v
	}
	rsp &^= 0xf
	frame := []uint64{oldSS, oldRSP, c.RFLAGS, uint64(c.Seg[segCS].Selector), ret - c.Seg[segCS].Base}
	if err >= 0 {
		frame = append(frame, uint64(err))
	}
	for _, v := range frame {
		rsp -= 8
		if !c.stSup(rsp, 8, v) {
			return false
		}
	}
	if newCPL < c.cpl {
		c.Seg[segSS] = Segment{Selector: uint16(newCPL), Unusable: true, DPL: uint8(newCPL)}
	}
	c.R[4] = rsp
	cs.Selector = sel&^3 | uint16(newCPL)
	c.Seg[segCS] = cs
	c.cpl = newCPL
	c.RFLAGS &^= flagTF | flagNT | flagRF | flagVM
	if typ == 0xe {
		c.RFLAGS &^= RFLAGS_IF
	}
	c.RIP = target
	return true
}

func (c *CPU) deliverProt(vec int, err int64, kind int, ret uint64) bool {
	lo, _, ok := c.gate(vec, false)
	if !ok {
		return false
	}
	typ := lo >> 40 & 0xf
	if typ != 0xe && typ != 0xf && typ != 6 && typ != 7 {
		c.raise(excGP, int64(vec*8+2))
		return false
	}
	if kind == intSoft && lo>>45&3 < c.cpl {
		c.raise(excGP, int64(vec*8+2))
		return false
	}
	sel := uint16(lo >> 16)
	target := lo&0xffff | (lo>>48)<<16
	cs, ok := c.loadDesc(sel, excGP)
	if !ok {
		return false
	}
	if uint64(cs.DPL) < c.cpl && cs.Type&4 == 0 {
		// Privilege change through the 32-bit TSS: SS0:ESP0.
		esp, ok1 := c.ldSup(c.TR.Base+4, 4)
		ssSel, ok2 := c.ldSup(c.TR.Base+8, 2)
		if !ok1 || !ok2 {
			return false
		}
		ss, ok := c.loadDesc(uint16(ssSel), excTS)
		if !ok {
			return false
		}
		oldSS, oldESP := uint64(c.Seg[segSS].Selector), c.R[4]
		c.Seg[segSS] = ss
		c.R[4] = esp
		if !c.push32sup(oldSS) || !c.push32sup(oldESP) {
			return false
		}
		c.cpl = uint64(cs.DPL)
	}
	if !c.push32sup(c.RFLAGS) || !c.push32sup(uint64(c.Seg[segCS].Selector)) || !c.push32sup(ret-c.Seg[segCS].Base) {
		return false
	}
	if err >= 0 && !c.push32sup(uint64(err)) {
		return false
	}
	cs.Selector = sel&^3 | uint16(c.cpl)
	c.Seg[segCS] = cs
	c.RFLAGS &^= flagTF | flagNT | flagRF | flagVM
	if typ&1 == 0 {
		c.RFLAGS &^= RFLAGS_IF
	}
	c.RIP = (cs.Base + target) & 0xffffffff
	return true
}

func (c *CPU) push32sup(v uint64) bool {
	sp := uint32(c.R[4]) - 4
	if !c.stSup(c.Seg[segSS].Base+uint64(sp), 4, v) {
		return false
	}
	c.R[4] = c.R[4]&^0xffffffff | uint64(sp)
	return true
}

// loadDesc reads the GDT/LDT descriptor of sel and returns its cached form; a null or
// out-of-limit selector raises exc with the selector as the error code.
func (c *CPU) loadDesc(sel uint16, exc int) (Segment, bool) {
	idx := uint64(sel &^ 7)
	tbl := c.GDT.Base
	limit := uint64(c.GDT.Limit)
	if sel&4 != 0 {
		tbl, limit = c.LDTR.Base, uint64(c.LDTR.Limit)
	}
	if sel&^3 == 0 || idx+7 > limit {
		c.raise(exc, int64(sel&^3))
		return Segment{}, false
	}
	d, ok := c.ldSup(tbl+idx, 8)
	if !ok {
		return Segment{}, false
	}
	s := DescriptorSegment(sel, d)
	if !s.Present {
		c.raise(excNP, int64(sel&^3))
		return Segment{}, false
	}
	return s, true
}

package x86

// System instructions: segment loads, descriptor tables, control and debug registers,
// MSRs, CPUID, SYSCALL/SYSRET, IRET, far transfers.

const (
	cr4TSD        = 1 << 2
	cr4OSXMMEXCPT = 1 << 10
)

// MSR numbers.
const (
	msrTSC          = 0x10
	msrAPICBase     = 0x1b
	msrFeatureCtl   = 0x3a
	msrTSCAdjust    = 0x3b
	msrSpecCtrl     = 0x48
	msrMTRRcap      = 0xfe
	msrSysenterCS   = 0x174
	msrSysenterESP  = 0x175
	msrSysenterEIP  = 0x176
	msrMCGcap       = 0x179
	msrMCGstatus    = 0x17a
	msrMiscEnable   = 0x1a0
	msrPAT          = 0x277
	msrMTRRdefType  = 0x2ff
	msrEFER         = 0xc0000080
	msrSTAR         = 0xc0000081
	msrLSTAR        = 0xc0000082
	msrCSTAR        = 0xc0000083
	msrFMASK        = 0xc0000084
	msrFSBase       = 0xc0000100
	msrGSBase       = 0xc0000101
	msrKernelGSBase = 0xc0000102
	msrTSCAux       = 0xc0000103
)

// amdMSRs are the AMD model-specific registers Linux reads on an AuthenticAMD family
// 0xf CPU (K8 SYSCFG, HWCR, NB_CFG, TOP_MEM, OSVW, DE_CFG, LS_CFG...) with their reset
// values; writes are stored and have no effect. (Found by booting Debian's 6.1 kernel:
// mtrr_bp_init reads SYSCFG unchecked.)
var amdMSRs = map[uint32]uint64{
	0xc0010010: 0, // SYSCFG
	0xc0010015: 0, // HWCR
	0xc001001a: 0, // TOP_MEM
	0xc001001d: 0, // TOP_MEM2
	0xc001001f: 0, // NB_CFG
	0xc0010055: 0, // INT_PENDING_MSG: read unchecked for erratum 400 (arch_post_acpi_subsys_init)
	0xc0010058: 0, // MMIO_CONF_BASE (family 10h+; Linux reads it checked)
	0xc0010114: 0, // VM_CR
	0xc0010117: 0, // VM_HSAVE_PA (QEMU keeps what is written)
	0xc0010140: 0, // OSVW_ID_LENGTH
	0xc0010141: 0, // OSVW_STATUS
	0xc0011020: 0, // LS_CFG
	0xc0011021: 0, // IC_CFG
	0xc0011022: 0, // DC_CFG
	0xc0011029: 0, // DE_CFG
}

type msrState struct {
	apicBase, pat, miscEnable         uint64
	star, lstar, cstar, fmask         uint64
	kernelGSBase, tscAux, tscOffset   uint64
	sysenterCS, sysenterESP, sysenter uint64
	mtrrDef                           uint64
	mtrr                              map[uint32]uint64
}

func (c *CPU) rdmsr(n uint32) (uint64, bool) {
	m := &c.msr
	switch n {
	case msrTSC:
		return c.tsc(), true
	case msrAPICBase:
		return m.apicBase, true
	case msrFeatureCtl, msrTSCAdjust, msrSpecCtrl, msrMCGstatus:
		return 0, true
	case msrMTRRcap:
		return 0x508, true // 8 variable ranges, fixed ranges, WC
	case msrMCGcap:
		return mcgCap, true
	case msrSysenterCS:
		return m.sysenterCS, true
	case msrSysenterESP:
		return m.sysenterESP, true
	case msrSysenterEIP:
		return m.sysenter, true
	case msrMiscEnable:
		return m.miscEnable, true
	case msrPAT:
		return m.pat, true
	case msrMTRRdefType:
		return m.mtrrDef, true
	case msrEFER:
		return c.EFER, true
	case msrSTAR:
		return m.star, true
	case msrLSTAR:
		return m.lstar, true
	case msrCSTAR:
		return m.cstar, true
	case msrFMASK:
		return m.fmask, true
	case msrFSBase:
		return c.Seg[segFS].Base, true
	case msrGSBase:
		return c.Seg[segGS].Base, true
	case msrKernelGSBase:
		return m.kernelGSBase, true
	case msrTSCAux:
		return m.tscAux, true
	}
	if n >= 0x200 && n < 0x210 || n >= 0x250 && n <= 0x26f {
		return m.mtrr[n], true // MTRRs: stored, no effect
	}
	if v, ok := c.rdmsrModel(n); ok { // msr.go
		return v, true
	}
	if v, ok := amdMSRs[n]; ok {
		if w, ok := m.mtrr[n]; ok {
			return w, true
		}
		return v, true
	}
	if c.cfg.MSR != nil {
		return c.cfg.MSR.ReadMSR(c.cfg.ID, n)
	}
	return 0, false
}

func (c *CPU) wrmsr(n uint32, v uint64) bool {
	m := &c.msr
	switch n {
	case msrTSC:
		m.tscOffset = v - (c.tsc() - m.tscOffset)
	case msrAPICBase:
		m.apicBase = v
		if c.cfg.MSR != nil {
			c.cfg.MSR.WriteMSR(c.cfg.ID, n, v)
		}
	case msrFeatureCtl, msrTSCAdjust, msrSpecCtrl, msrMCGstatus:
	case msrSysenterCS:
		m.sysenterCS = v & 0xffff // a selector: QEMU keeps 16 bits
	case msrSysenterESP:
		m.sysenterESP = v
	case msrSysenterEIP:
		m.sysenter = v
	case msrMiscEnable:
		m.miscEnable = v
	case msrPAT:
		m.pat = v
	case msrMTRRdefType:
		m.mtrrDef = v
	case msrEFER:
		allowed := uint64(EFER_SCE | EFER_LME | EFER_NXE)
		if v&^(allowed|EFER_LMA) != 0 {
			return false
		}
		lma := c.EFER & EFER_LMA
		if c.CR0&CR0_PG != 0 && (v^c.EFER)&EFER_LME != 0 {
			return false
		}
		c.EFER = v&allowed | lma
		c.modeChanged()
		c.v.FlushTLB()
	case msrSTAR:
		m.star = v
	case msrLSTAR:
		if !canonical(v) {
			return false
		}
		m.lstar = v
	case msrCSTAR:
		m.cstar = v
	case msrFMASK:
		m.fmask = v & 0xffffffff
	case msrFSBase:
		if !canonical(v) {
			return false
		}
		c.Seg[segFS].Base = v
	case msrGSBase:
		if !canonical(v) {
			return false
		}
		c.Seg[segGS].Base = v
	case msrKernelGSBase:
		if !canonical(v) {
			return false
		}
		m.kernelGSBase = v
	case msrTSCAux:
		m.tscAux = v & 0xffffffff
	default:
		if c.wrmsrModel(n, v) { // msr.go
			return true
		}
		if _, amd := amdMSRs[n]; amd || n >= 0x200 && n < 0x210 || n >= 0x250 && n <= 0x26f {
			if m.mtrr == nil {
				m.mtrr = map[uint32]uint64{}
			}
			m.mtrr[n] = v
			return true
		}
		if c.cfg.MSR != nil {
			return c.cfg.MSR.WriteMSR(c.cfg.ID, n, v)
		}
		return false
	}
	return true
}

// loadSeg loads segment register s with selector sel (MOV Sreg, POP Sreg).
func (c *CPU) loadSeg(s int, sel uint16) bool {
	if c.CR0&CR0_PE == 0 {
		c.Seg[s] = RealModeSegment(sel, false)
		c.Seg[s].Limit = 0xffff
		return true
	}
	if sel&^3 == 0 {
		if s == segSS && (c.EFER&EFER_LMA == 0 || c.cpl == 3) {
			c.raise(excGP, 0)
			return false
		}
		// A null selector clears the base (as Intel does; Linux detects either
		// behaviour, X86_BUG_NULL_SEG).
		c.Seg[s] = Segment{Selector: sel, Unusable: true}
		return true
	}
	d, ok := c.loadDesc(sel, excGP)
	if !ok {
		return false
	}
	if !d.S || s == segSS && (d.Type&8 != 0 || d.Type&2 == 0 || uint64(d.DPL) != c.cpl) ||
		s != segSS && d.Type&8 != 0 && d.Type&2 == 0 {
		c.raise(excGP, int64(sel&^3))
		return false
	}
	c.Seg[s] = d
	if s == segSS {
		c.modeChanged()
	}
	return true
}

func (c *CPU) group6(in *insn) op {
	switch in.reg & 7 {
	case 0, 1: // SLDT, STR
		tr := in.reg&7 == 1
		return func(c *CPU) bool {
			v := uint64(c.LDTR.Selector)
			if tr {
				v = uint64(c.TR.Selector)
			}
			size := in.opsz
			var ea uint64
			if in.hasMem {
				size, ea = 2, c.ea(in)
			}
			if !c.writeRM(in, size, ea, v) {
				return false
			}
			c.RIP = in.next
			return false
		}
	case 2, 3: // LLDT, LTR
		tr := in.reg&7 == 3
		return c.priv(func(c *CPU) bool {
			v, _, ok := c.readRM(in, 2)
			if !ok {
				return false
			}
			sel := uint16(v)
			if sel&^3 == 0 && !tr {
				c.LDTR = Segment{Unusable: true}
				c.RIP = in.next
				return false
			}
			if sel&4 != 0 || uint64(sel&^7)+7 > uint64(c.GDT.Limit) {
				c.raise(excGP, int64(sel&^3))
				return false
			}
			a := c.GDT.Base + uint64(sel&^7)
			lo, ok := c.ldSup(a, 8)
			if !ok {
				return false
			}
			var hi uint64
			if c.EFER&EFER_LMA != 0 {
				if hi, ok = c.ldSup(a+8, 8); !ok {
					return false
				}
			}
			d := DescriptorSegment(sel, lo)
			d.Base |= hi << 32 & 0xffffffff00000000
			if tr {
				if d.S || d.Type != 9 && d.Type != 1 {
					c.raise(excGP, int64(sel&^3))
					return false
				}
				d.Type |= 2 // busy
				c.stSup(a, 8, lo|1<<41)
				c.TR = d
			} else {
				if d.S || d.Type != 2 {
					c.raise(excGP, int64(sel&^3))
					return false
				}
				c.LDTR = d
			}
			c.RIP = in.next
			return false
		})
	case 4, 5: // VERR, VERW: report not accessible (ZF=0)
		return func(c *CPU) bool { c.RFLAGS &^= flagZF; c.RIP = in.next; return false }
	}
	return ud
}

func (c *CPU) group7(in *insn) (op, bool) {
	if !in.hasMem {
		switch in.reg&7<<3 | in.rm&7 {
		case 0x08 | 0, 0x08 | 1: // MONITOR, MWAIT: treated as NOPs at CPL 0
			return c.priv(func(c *CPU) bool { return true }), false
		case 0x10: // XGETBV
			return func(c *CPU) bool {
				if c.CR4&cr4OSXSAVE == 0 {
					c.raise(excUD, -1)
					return false
				}
				c.R[0], c.R[2] = c.sse.xcr0, 0
				return true
			}, false
		case 0x11: // XSETBV
			return c.priv(func(c *CPU) bool {
				if c.CR4&cr4OSXSAVE == 0 {
					c.raise(excUD, -1)
					return false
				}
				v := c.R[0]&0xffffffff | c.R[2]<<32
				if uint32(c.R[1]) != 0 || v&1 == 0 || v&^3 != 0 {
					c.raise(excGP, 0)
					return false
				}
				c.sse.xcr0 = v
				return true
			}), false
		case 0x38 | 0: // SWAPGS
			if !in.mode64 {
				return ud, true
			}
			return c.priv(func(c *CPU) bool {
				c.Seg[segGS].Base, c.msr.kernelGSBase = c.msr.kernelGSBase, c.Seg[segGS].Base
				return true
			}), false
		case 0x38 | 1: // RDTSCP
			return func(c *CPU) bool {
				if c.CR4&cr4TSD != 0 && c.cpl != 0 {
					c.raise(excGP, 0)
					return false
				}
				t := c.tsc()
				c.R[0], c.R[2], c.R[1] = t&0xffffffff, t>>32, c.msr.tscAux
				return true
			}, false
		case 0x20 | 0, 0x20 | 1, 0x20 | 2, 0x20 | 3, 0x20 | 4, 0x20 | 5, 0x20 | 6, 0x20 | 7:
			// SMSW register form.
			return func(c *CPU) bool { c.setReg(in.rm, in.opsz, in.rex, c.CR0&sizeMask(in.opsz)); return true }, false
		case 0x30 | 0, 0x30 | 1, 0x30 | 2, 0x30 | 3, 0x30 | 4, 0x30 | 5, 0x30 | 6, 0x30 | 7:
			return c.lmsw(in), true
		}
		return ud, true
	}
	limSize := 4
	if in.mode64 {
		limSize = 8
	}
	switch in.reg & 7 {
	case 0, 1: // SGDT, SIDT
		idt := in.reg&7 == 1
		return func(c *CPU) bool {
			t := c.GDT
			if idt {
				t = c.IDT
			}
			ea := c.ea(in)
			return c.st(ea, 2, uint64(t.Limit)) && c.st(ea+2, limSize, t.Base)
		}, false
	case 2, 3: // LGDT, LIDT
		idt := in.reg&7 == 3
		return c.priv(func(c *CPU) bool {
			ea := c.ea(in)
			lim, ok := c.ld(ea, 2)
			if !ok {
				return false
			}
			base, ok := c.ld(ea+2, limSize)
			if !ok {
				return false
			}
			if !in.mode64 && in.opsz == 2 {
				base &= 0xffffff
			}
			t := DTable{Base: base, Limit: uint16(lim)}
			if idt {
				c.IDT = t
			} else {
				c.GDT = t
			}
			return true
		}), false
	case 4: // SMSW m16
		return func(c *CPU) bool { return c.st(c.ea(in), 2, c.CR0) }, false
	case 6:
		return c.lmsw(in), true
	case 7: // INVLPG
		return c.priv(func(c *CPU) bool {
			c.v.FlushTLBPage(c.ea(in))
			c.RIP = in.next
			return false
		}), true
	}
	return ud, true
}

func (c *CPU) lmsw(in *insn) op {
	return c.priv(func(c *CPU) bool {
		v, _, ok := c.readRM(in, 2)
		if !ok {
			return false
		}
		// LMSW sets PE (never clears it), MP, EM, TS.
		c.CR0 = c.CR0&^0xe | v&0xf | c.CR0&1
		c.modeChanged()
		c.RIP = in.next
		return false
	})
}

const cr4OSXSAVE = 1 << 18

// CR4 bits the model supports.
const cr4Valid = 0x1 | 0x2 | cr4TSD | 0x8 | cr4PSE | CR4_PAE | 0x40 | cr4PGE | 0x100 | CR4_OSFXSR | cr4OSXMMEXCPT | 1<<16 /*FSGSBASE*/

func (c *CPU) movCR(in *insn) op {
	n := in.reg
	return c.priv(func(c *CPU) bool {
		r := in.rm
		if in.opc == 0x20 {
			var v uint64
			switch n {
			case 0:
				v = c.CR0
			case 2:
				v = c.CR2
			case 3:
				v = c.CR3
			case 4:
				v = c.CR4
			case 8:
				v = c.CR8
			default:
				c.raise(excUD, -1)
				return false
			}
			c.R[r] = v
			if !in.mode64 {
				c.R[r] &= 0xffffffff
			}
			return true
		}
		v := c.R[r]
		if !in.mode64 {
			v &= 0xffffffff
		}
		switch n {
		case 0:
			if v>>32 != 0 || v&CR0_PG != 0 && v&CR0_PE == 0 {
				c.raise(excGP, 0)
				return false
			}
			old := c.CR0
			if v&CR0_PG != 0 && old&CR0_PG == 0 && c.EFER&EFER_LME != 0 {
				if c.CR4&CR4_PAE == 0 {
					c.raise(excGP, 0)
					return false
				}
				c.EFER |= EFER_LMA
			}
			if v&CR0_PG == 0 && old&CR0_PG != 0 && c.EFER&EFER_LMA != 0 {
				if c.Seg[segCS].L {
					c.raise(excGP, 0)
					return false
				}
				c.EFER &^= EFER_LMA
			}
			c.CR0 = v | CR0_ET
			if v&CR0_PE == 0 {
				c.cpl = 0
			}
			c.v.FlushTLB()
		case 2:
			c.CR2 = v
		case 3:
			c.CR3 = v
			c.v.FlushTLB()
		case 4:
			if v&^uint64(cr4Valid|cr4OSXSAVE) != 0 || c.EFER&EFER_LMA != 0 && v&CR4_PAE == 0 {
				c.raise(excGP, 0)
				return false
			}
			c.CR4 = v
			c.v.FlushTLB()
		case 8:
			c.CR8 = v & 0xf
		default:
			c.raise(excUD, -1)
			return false
		}
		c.modeChanged()
		c.RIP = in.next
		return false
	})
}

func (c *CPU) movDR(in *insn) op {
	n := in.reg & 7
	return c.priv(func(c *CPU) bool {
		if in.opc == 0x21 {
			var v uint64
			switch n {
			case 6:
				v = 0xffff0ff0
			case 7:
				v = 0x400
			}
			c.R[in.rm] = v
			return true
		}
		c.RIP = in.next
		return false // writes are accepted and ignored (no debug breakpoints)
	})
}

// syscall implements SYSCALL from 64-bit mode (to LSTAR) and compatibility mode (to
// CSTAR, for 32-bit processes of a 64-bit kernel); legacy-mode SYSCALL is not
// implemented (#UD).
func (c *CPU) syscall(in *insn) op {
	return func(c *CPU) bool {
		if c.EFER&EFER_SCE == 0 || c.EFER&EFER_LMA == 0 {
			c.raise(excUD, -1)
			return false
		}
		target := c.msr.lstar
		if !in.mode64 {
			target = c.msr.cstar
		}
		c.R[1] = in.eip(in.next)
		c.R[11] = c.RFLAGS &^ flagRF
		sel := uint16(c.msr.star >> 32 & 0xfffc)
		c.Seg[segCS] = Segment{Selector: sel, Type: 0xb, Present: true, S: true, L: true, Limit: 0xffffffff, G: true}
		c.Seg[segSS] = Segment{Selector: sel + 8, Type: 0x3, Present: true, S: true, DB: true, Limit: 0xffffffff, G: true}
		c.cpl = 0
		c.RFLAGS = (c.RFLAGS &^ c.msr.fmask &^ flagRF) | RFLAGS_RESERVED
		c.RIP = target
		c.modeChanged()
		return false
	}
}

// sysret implements SYSRET to 64-bit (REX.W) or compatibility mode.
func (c *CPU) sysret(in *insn) op {
	return func(c *CPU) bool {
		if c.EFER&EFER_SCE == 0 || c.EFER&EFER_LMA == 0 {
			c.raise(excUD, -1)
			return false
		}
		if c.cpl != 0 {
			c.raise(excGP, 0)
			return false
		}
		base := uint16(c.msr.star >> 48)
		if in.rex&8 != 0 {
			if !canonical(c.R[1]) {
				c.raise(excGP, 0)
				return false
			}
			c.Seg[segCS] = Segment{Selector: (base + 16) | 3, Type: 0xb, Present: true, S: true, L: true, DPL: 3, Limit: 0xffffffff, G: true}
			c.RIP = c.R[1]
		} else {
			c.Seg[segCS] = Segment{Selector: base | 3, Type: 0xb, Present: true, S: true, DB: true, DPL: 3, Limit: 0xffffffff, G: true}
			c.RIP = c.R[1] & 0xffffffff
		}
		c.Seg[segSS] = Segment{Selector: (base + 8) | 3, Type: 0x3, Present: true, S: true, DB: true, DPL: 3, Limit: 0xffffffff, G: true}
		c.cpl = 3
		c.RFLAGS = c.R[11]&^(flagRF|flagVM) | RFLAGS_RESERVED
		c.modeChanged()
		c.v.Request(reqIRQ)
		return false
	}
}

// iret implements IRET/IRETD/IRETQ (long mode, and same-privilege protected and real
// mode).
func (c *CPU) iret(in *insn) op {
	return func(c *CPU) bool {
		size := in.opsz
		if c.CR0&CR0_PE == 0 {
			ip, ok1 := c.pop(in, size)
			cs, ok2 := c.pop(in, size)
			fl, ok3 := c.pop(in, size)
			if !ok1 || !ok2 || !ok3 {
				return false
			}
			c.Seg[segCS] = RealModeSegment(uint16(cs), true)
			c.RIP = c.Seg[segCS].Base + ip&0xffff
			c.writeFlags(fl, size)
			c.modeChanged()
			return false
		}
		sp := c.R[4]
		ip, ok1 := c.pop(in, size)
		csSel, ok2 := c.pop(in, size)
		fl, ok3 := c.pop(in, size)
		if !ok1 || !ok2 || !ok3 {
			c.R[4] = sp
			return false
		}
		rpl := csSel & 3
		var rsp, ssSel uint64
		pops := in.mode64 || rpl > c.cpl
		if pops {
			var ok4, ok5 bool
			rsp, ok4 = c.pop(in, size)
			ssSel, ok5 = c.pop(in, size)
			if !ok4 || !ok5 {
				c.R[4] = sp
				return false
			}
		}
		if rpl < c.cpl {
			c.R[4] = sp
			c.raise(excGP, int64(csSel&^3))
			return false
		}
		cs, ok := c.loadDesc(uint16(csSel), excGP)
		if !ok {
			c.R[4] = sp
			return false
		}
		if !cs.S || cs.Type&8 == 0 {
			c.R[4] = sp
			c.raise(excGP, int64(csSel&^3))
			return false
		}
		oldCPL := c.cpl
		c.Seg[segCS] = cs
		c.cpl = rpl
		if pops {
			if uint16(ssSel)&^3 == 0 {
				c.Seg[segSS] = Segment{Selector: uint16(ssSel), Unusable: true, DPL: uint8(rpl)}
			} else {
				ss, ok := c.loadDesc(uint16(ssSel), excGP)
				if !ok {
					return false
				}
				c.Seg[segSS] = ss
			}
			c.R[4] = rsp
		}
		// Flags with the privilege of the old CPL.
		cur := c.cpl
		c.cpl = oldCPL
		c.writeFlags(fl, size)
		c.cpl = cur
		if size == 8 || size == 4 {
			c.RFLAGS = c.RFLAGS&^(flagVIF|flagVIP) | fl&(flagVIF|flagVIP)
		}
		c.RIP = ip
		if !cs.L || c.EFER&EFER_LMA == 0 {
			c.RIP = (cs.Base + ip&sizeMask(size)) & 0xffffffff
		}
		c.nmiMasked = false
		c.modeChanged()
		c.v.Request(reqIRQ)
		return false
	}
}

// farIndirect implements CALL/JMP m16:32/m16:64 to a code segment of the same privilege.
func (c *CPU) farIndirect(in *insn, call bool) bool {
	ea := c.ea(in)
	size := in.opsz
	off, ok := c.ld(ea, size)
	if !ok {
		return false
	}
	sel, ok := c.ld(ea+uint64(size), 2)
	if !ok {
		return false
	}
	return c.farTransfer(in, uint16(sel), off, call)
}

func (c *CPU) farTransfer(in *insn, sel uint16, off uint64, call bool) bool {
	if c.CR0&CR0_PE == 0 {
		if call && (!c.push(in, in.opsz, uint64(c.Seg[segCS].Selector)) || !c.push(in, in.opsz, in.eip(in.next))) {
			return false
		}
		c.Seg[segCS] = RealModeSegment(sel, true)
		c.RIP = c.Seg[segCS].Base + off
		c.modeChanged()
		return false
	}
	cs, ok := c.loadDesc(sel, excGP)
	if !ok {
		return false
	}
	if !cs.S || cs.Type&8 == 0 {
		c.raise(excGP, int64(sel&^3))
		return false
	}
	if call {
		size := in.opsz
		if !c.push(in, size, uint64(c.Seg[segCS].Selector)) || !c.push(in, size, in.eip(in.next)) {
			return false
		}
	}
	cs.Selector = sel&^3 | uint16(c.cpl)
	c.Seg[segCS] = cs
	c.RIP = off
	if !cs.L || c.EFER&EFER_LMA == 0 {
		c.RIP = (cs.Base + off&sizeMask(in.opsz)) & 0xffffffff
	}
	c.modeChanged()
	return false
}

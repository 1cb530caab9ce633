package x86

import (
	"fmt"
	"math"
	"slices"

	"gemu/hw/bus"
	"gemu/hw/vmstate"
)

// cpuStateVersion is the version of the vCPU's saved state: vmstate.EncodeFields of
// cpuSave, every field by name (a field added later is absent from older records and
// keeps its reset value on load). RIP is saved in the vCPU's own form (the linear PC,
// CS.Base included outside 64-bit mode) next to the segment caches it depends on;
// RFLAGS is the materialised architectural value (lazy flags settled first, flags.go).
// The MSRs the vCPU keeps in msrState.mtrr (MTRRs, MCG_CTL and the MCE banks, the AMD
// model registers) are saved as (index, value) pairs. The x87 registers are their
// float64 bits plus the exact 80-bit contents of those an MMX write or FXRSTOR set. The debug registers are not saved: the vCPU ignores
// writes to them and reads fixed values. The guest clock (the TSC's time base) is the
// engine's, saved once by the board for every vCPU; the TSC offset is per vCPU.
const cpuStateVersion = 1

// maxStoredMSRs bounds the (index, value) pairs of msrState.mtrr a save holds: 16
// variable and 32 fixed MTRR slots, MCG_CTL and 40 MCE bank registers, and the AMD
// registers.
const maxStoredMSRs = 128

type msrSave struct {
	APICBase, PAT, MiscEnable            uint64
	STAR, LSTAR, CSTAR, FMASK            uint64
	KernelGSBase, TSCAux, TSCOffset      uint64
	SysenterCS, SysenterESP, SysenterEIP uint64
	MTRRDefType                          uint64
	StoredN                              [maxStoredMSRs]uint32 // 0: unused slot
	StoredV                              [maxStoredMSRs]uint64
}

type fpuSave struct {
	XMM      [16][2]uint64
	MXCSR    uint32
	FCW, FSW uint16
	FTW, Top uint8
	ST       [8]uint64 // float64 bits of ST(physical i)
	XCR0     uint64
	RawMant  [8]uint64 // the 80-bit contents of physical register i, where RawValid bit i is set
	RawSE    [8]uint16
	RawValid uint8
}

type cpuSave struct {
	R                             [16]uint64
	RIP, RFLAGS                   uint64
	Seg                           [6]Segment
	TR, LDTR                      Segment
	GDT, IDT                      DTable
	CR0, CR2, CR3, CR4, CR8, EFER uint64
	CPL                           uint64
	MSR                           msrSave
	FPU                           fpuSave
	On, Halted, NMI, NMIMasked    bool
	InitReq                       bool
	SIPI                          int // pending SIPI vector + 1
}

// storedMSR reports whether the vCPU keeps MSR n in msrState.mtrr.
func storedMSR(n uint32) bool {
	_, amd := amdMSRs[n]
	return amd || n >= 0x200 && n < 0x210 || n >= 0x250 && n <= 0x26f || n == msrMCGctl || n >= msrMC0ctl && n < mceEnd
}

// SaveState implements bus.Stateful: the vCPU's complete architectural state. Call it
// only while the vCPU is parked or not running. The INTR line is not saved: it is the
// interrupt controller's output, driven again after a restore.
func (c *CPU) SaveState() (bus.State, error) {
	if c.delivering != 0 {
		return bus.State{}, fmt.Errorf("cpu %d: saved in the middle of an exception delivery", c.cfg.ID)
	}
	c.syncFlags()
	m := &c.msr
	s := cpuSave{R: c.R, RIP: c.RIP, RFLAGS: c.RFLAGS, Seg: c.Seg, TR: c.TR, LDTR: c.LDTR, GDT: c.GDT, IDT: c.IDT,
		CR0: c.CR0, CR2: c.CR2, CR3: c.CR3, CR4: c.CR4, CR8: c.CR8, EFER: c.EFER, CPL: c.cpl,
		MSR: msrSave{APICBase: m.apicBase, PAT: m.pat, MiscEnable: m.miscEnable,
			STAR: m.star, LSTAR: m.lstar, CSTAR: m.cstar, FMASK: m.fmask,
			KernelGSBase: m.kernelGSBase, TSCAux: m.tscAux, TSCOffset: m.tscOffset,
			SysenterCS: m.sysenterCS, SysenterESP: m.sysenterESP, SysenterEIP: m.sysenter, MTRRDefType: m.mtrrDef},
		FPU: fpuSave{XMM: c.sse.xmm, MXCSR: c.sse.mxcsr, FCW: c.sse.fcw, FSW: c.sse.fsw, FTW: c.sse.ftw,
			Top: c.sse.top, XCR0: c.sse.xcr0, RawValid: c.sse.rawValid},
		On: c.on.Load(), Halted: c.halted.Load(), NMI: c.nmi.Load(), NMIMasked: c.nmiMasked}
	for i, v := range c.sse.st {
		s.FPU.ST[i] = math.Float64bits(v)
		s.FPU.RawMant[i], s.FPU.RawSE[i] = c.sse.raw80[i].mant, c.sse.raw80[i].se
	}
	keys := make([]uint32, 0, len(m.mtrr))
	for n := range m.mtrr {
		keys = append(keys, n)
	}
	if len(keys) > maxStoredMSRs {
		return bus.State{}, fmt.Errorf("cpu %d: %d stored MSRs, the state holds %d", c.cfg.ID, len(keys), maxStoredMSRs)
	}
	slices.Sort(keys)
	for i, n := range keys {
		s.MSR.StoredN[i], s.MSR.StoredV[i] = n, m.mtrr[n]
	}
	c.startMu.Lock()
	s.InitReq, s.SIPI = c.initReq, c.sipi
	c.startMu.Unlock()
	d, err := vmstate.EncodeFields(nil, &s)
	if err != nil {
		return bus.State{}, err
	}
	return bus.State{Name: "cpu", Version: cpuStateVersion, Data: d}, nil
}

// LoadState implements bus.Stateful: the vCPU takes the saved state with its TLBs
// flushed and its translation mode recomputed. Call it only while the vCPU is parked
// or not running; on error the vCPU is unchanged.
func (c *CPU) LoadState(st bus.State) error {
	if st.Name != "cpu" || st.Version != cpuStateVersion {
		return fmt.Errorf("cpu %d: cannot load state %q version %d", c.cfg.ID, st.Name, st.Version)
	}
	s := cpuSave{RFLAGS: RFLAGS_RESERVED, MSR: msrSave{APICBase: 0xfee00900, PAT: 0x0007040600070406, MiscEnable: 1},
		FPU: fpuSave{MXCSR: 0x1f80, FCW: 0x37f}}
	if err := vmstate.DecodeFields(st.Data, &s); err != nil {
		return fmt.Errorf("cpu %d: %v", c.cfg.ID, err)
	}
	if err := s.check(); err != nil {
		return fmt.Errorf("cpu %d: %v", c.cfg.ID, err)
	}
	c.R, c.RIP, c.RFLAGS, c.cc = s.R, s.RIP, s.RFLAGS|RFLAGS_RESERVED, ccState{}
	c.Seg, c.TR, c.LDTR, c.GDT, c.IDT = s.Seg, s.TR, s.LDTR, s.GDT, s.IDT
	c.CR0, c.CR2, c.CR3, c.CR4, c.CR8, c.EFER, c.cpl = s.CR0, s.CR2, s.CR3, s.CR4, s.CR8, s.EFER, s.CPL
	sm := &s.MSR
	c.msr = msrState{apicBase: sm.APICBase, pat: sm.PAT, miscEnable: sm.MiscEnable,
		star: sm.STAR, lstar: sm.LSTAR, cstar: sm.CSTAR, fmask: sm.FMASK,
		kernelGSBase: sm.KernelGSBase, tscAux: sm.TSCAux, tscOffset: sm.TSCOffset,
		sysenterCS: sm.SysenterCS, sysenterESP: sm.SysenterESP, sysenter: sm.SysenterEIP, mtrrDef: sm.MTRRDefType}
	for i, n := range sm.StoredN {
		if n != 0 {
			if c.msr.mtrr == nil {
				c.msr.mtrr = map[uint32]uint64{}
			}
			c.msr.mtrr[n] = sm.StoredV[i]
		}
	}
	f := &s.FPU
	c.sse = sseState{xmm: f.XMM, mxcsr: f.MXCSR, fcw: f.FCW, fsw: f.FSW, ftw: f.FTW, top: f.Top, xcr0: f.XCR0,
		rawValid: f.RawValid}
	for i, b := range f.ST {
		c.sse.st[i] = math.Float64frombits(b)
		c.sse.raw80[i] = rawReg{mant: f.RawMant[i], se: f.RawSE[i]}
	}
	c.nmiMasked = s.NMIMasked
	c.nmi.Store(s.NMI)
	c.halted.Store(s.Halted)
	c.delivering = 0
	c.LastVector, c.LastError = -1, -1
	c.startMu.Lock()
	c.initReq, c.sipi = s.InitReq, s.SIPI
	c.startMu.Unlock()
	c.on.Store(s.On)
	c.modeChanged()
	c.v.FlushTLB()
	c.v.Request(reqPower | reqIRQ)
	c.v.Kick()
	return nil
}

// check refuses a saved state this vCPU cannot hold.
func (s *cpuSave) check() error {
	switch {
	case s.CPL > 3:
		return fmt.Errorf("saved CPL %d", s.CPL)
	case s.FPU.Top > 7:
		return fmt.Errorf("saved x87 TOP %d", s.FPU.Top)
	case s.SIPI < 0 || s.SIPI > 256:
		return fmt.Errorf("saved SIPI vector %d", s.SIPI-1)
	case s.EFER&^uint64(EFER_SCE|EFER_LME|EFER_LMA|EFER_NXE) != 0:
		return fmt.Errorf("saved EFER %#x has bits this vCPU does not model", s.EFER)
	}
	seen := map[uint32]bool{}
	for _, n := range s.MSR.StoredN {
		if n == 0 {
			continue
		}
		if !storedMSR(n) || seen[n] {
			return fmt.Errorf("saved MSR %#x is not one this vCPU stores", n)
		}
		seen[n] = true
	}
	return nil
}

package arm

import (
	"fmt"
	"unsafe"

	"golang.org/x/arch/arm64/arm64asm"

	"gemu/tcg"
)

// maxBlockInsns bounds a translation block so interrupts are checked often enough.
const maxBlockInsns = 128

// fetch is the run loop's Fetch hook: the PC alignment check, then the instruction
// TLB or a stage-1 walk for the fetch at pc. It returns false after raising the PC
// alignment fault or instruction abort.
func (c *CPU) fetch(pc uint64) (pa uint64, host unsafe.Pointer, ok bool) {
	c.pmu.blkEnd = 0 // between blocks: every instruction counted so far retired
	if pc&3 != 0 {
		c.takeException(excSync, ecPCAlign<<26|1<<25, pc, true, pc)
		return 0, nil, false
	}
	e := c.mmu.Entry(pc)
	if e.Exec == pc&tcg.PageMask {
		return e.Phys | pc&0xfff, e.Host, true
	}
	pa, host, ok = c.fill(pc, accExec, int(c.midx))
	if !ok {
		return 0, nil, false
	}
	if host == nil {
		c.abort(pc, accExec, fscExtAbort)
		return 0, nil, false
	}
	return pa, host, true
}

// translateBlock is the run loop's Translate hook: it decodes guest code from host page
// memory (the page holding k.Phys) into IR and compiles it.
func (c *CPU) translateBlock(k tcg.Key, host unsafe.Pointer) tcg.Translation[CPU] {
	var b tcg.Builder[CPU]
	pc := k.PC
	// With flagPMU the block starts by counting its instructions and branches, known
	// once it is decoded (the helper reads them through these pointers).
	var nInsns, nBr, end uint64
	if k.Flags&flagPMU != 0 {
		b.SetPC(pc)
		b.Call(pmuBlockOp(k.PC, &nInsns, &nBr, &end))
	}
	dbg := k.Flags&(flagBP|flagSS) != 0
	if k.Flags&flagSS != 0 && k.Flags&flagPSS == 0 {
		// Software step, active-pending: the step exception before any instruction.
		b.SetPC(pc)
		b.Call(stepPendingOp(pc))
	}
	for off, n := k.Phys&0xfff, 0; off < 0x1000 && n < maxBlockInsns && k.Flags&(flagSS|flagPSS) != flagSS; off, n = off+4, n+1 {
		insn := *(*uint32)(unsafe.Add(host, off))
		if c.tflag&TraceInAsm != 0 {
			c.traceInsn(pc, insn)
		}
		b.SetPC(pc)
		if k.Flags&flagBP != 0 {
			b.Call(bpCheckOp(pc))
		}
		if k.Flags&flagSS != 0 {
			// Software step, active-not-pending: this one instruction, then the
			// step-completed exception (debug.go).
			o, _ := c.decode(insn, pc, k.Flags)
			b.Call(stepOp(o, pc, insn))
			nInsns++
			if isBranch(insn) {
				nBr = 1
			}
			pc += 4
			break
		}
		nInsns++
		nBr = 0
		if isBranch(insn) {
			nBr = 1
		}
		if off+4 < 0x1000 && !wideLowering && !dbg { // the native backend gets the pair as IR
			next := *(*uint32)(unsafe.Add(host, off+4))
			if f := fuseCmpBranch(insn, next, pc); f != nil {
				if c.tflag&TraceInAsm != 0 {
					c.traceInsn(pc+4, next)
				}
				b.Call(f)
				nInsns++
				if isBranch(next) {
					nBr = 1
				}
				pc += 8
				break
			}
		}
		handled, end := false, false
		if !c.pacHints || !pacHintInsn(insn) { // lower turns every PAC hint into a NOP
			handled, end = lower(&b, insn, pc, k.Flags)
		}
		if !handled {
			var o op
			o, end = c.decode(insn, pc, k.Flags)
			if registersOnly(insn) || c.pacHints && pacHintInsn(insn) { // PAC hints: registers and keys only
				b.CallPure(o)
			} else {
				b.Call(o)
			}
		}
		pc += 4
		if end {
			break
		}
	}
	end = pc
	// Fall through to the next instruction if nothing ended the block earlier.
	b.SetPC(pc)
	b.Exit(tcg.Imm(pc))
	if c.tflag&TraceInAsm != 0 {
		fmt.Fprintln(c.trace)
	}
	if c.tflag&TraceOp != 0 {
		for i := range b.Ops {
			fmt.Fprintf(c.trace, "  %v\n", &b.Ops[i])
		}
		fmt.Fprintln(c.trace)
	}
	f, lk, err := tcg.CompileLinked(irTarget, b.Ops)
	if err != nil {
		// The frontend emitted IR the backend rejects: a gemu bug. Raise UNDEFINED
		// at the block start rather than crash the host.
		start := k.PC
		f, lk = func(c *CPU) { c.undef(start) }, tcg.Linkage{}
	}
	if pc == k.PC {
		pc += 4 // a software-step pending block: it stands for the instruction at k.PC
	}
	return tcg.Translation[CPU]{Code: f, End: pc, Link: lk}
}

func (c *CPU) traceInsn(pc uint64, insn uint32) {
	text := "unknown"
	if in, err := arm64asm.Decode(binaryLE(insn)); err == nil {
		text = arm64asm.GNUSyntax(in)
	}
	fmt.Fprintf(c.trace, "0x%016x:  %08x      %s\n", pc, insn, text)
}

func binaryLE(insn uint32) []byte {
	return []byte{byte(insn), byte(insn >> 8), byte(insn >> 16), byte(insn >> 24)}
}

// decode translates one instruction at pc. end reports that the block must end after
// it (control transfer or mode change).
func (c *CPU) decode(insn uint32, pc uint64, flags uint64) (op, bool) {
	switch {
	case insn>>26&7 == 4: // 100x: data processing, immediate
		return decodeDPImm(insn, pc)
	case insn>>26&7 == 5: // 101x: branches, exception generation, system
		return c.decodeBranchSys(insn, pc)
	case insn>>25&5 == 4: // x1x0: loads and stores
		return decodeLdSt(insn, pc, flags)
	case insn>>25&7 == 5: // x101: data processing, register
		return decodeDPReg(insn, pc)
	case insn>>25&7 == 7: // x111: SIMD&FP data processing
		if flags&flagFP == 0 {
			return fpTrap(pc), true
		}
		if f := decodeFPSIMDFeat(insn, c.isa); f != nil {
			return func(c *CPU) bool { f(&c.State); return true }, false
		}
	}
	return undefOp(pc), true
}

// registersOnly reports whether the helper decode builds for insn touches only
// registers (tcg.Op.Pure): the data-processing classes, immediate, register and
// SIMD&FP. Their helpers read and write State (FPCR, FPSR included) and nothing else;
// one that raises an exception (UNDEFINED, the FP access trap) returns false, which
// ends the block before anything runs on.
func registersOnly(insn uint32) bool {
	return insn>>26&7 == 4 || insn>>25&7 == 5 || insn>>25&7 == 7
}

func undefOp(pc uint64) op { return func(c *CPU) bool { return c.undef(pc) } }

func fpTrap(pc uint64) op {
	return func(c *CPU) bool {
		c.PC = pc
		c.syncException(ecFPAccess, 0)
		return false
	}
}

// fpEnabled reports whether CPACR_EL1.FPEN lets the current EL use FP/SIMD.
func (c *CPU) fpEnabled() bool {
	switch c.sr.cpacr >> 20 & 3 {
	case 1:
		return c.el == 1
	case 3:
		return true
	}
	return false
}

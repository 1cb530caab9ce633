// Package x86 owns the x86 CPU: the register-state types a machine's loader fills in
// for the boot CPU and an accelerator (accel/kvm, or this package's TCG vCPU) loads
// (BootState, Regs, SRegs, Segment), and the x86-64 frontend for gemu's TCG engine:
// the decoder (legacy prefixes, REX, the 1-byte/0F/0F38/0F3A maps, ModRM/SIB/RIP-
// relative addressing; decode.go), instruction semantics as helpers the translator
// emits into tcg IR (integer, string, system, SSE/SSE2/SSE3, MMX, x87 with 80-bit values where float64 differs; int.go,
// int0f.go, string.go, sys.go, sysenter.go, msr.go, sse*.go, mmx.go, x87.go, x87ext.go) with the flag-free commonest forms
// (MOV, LEA, PUSH/POP, JMP/CALL, Jcc) lowered to IR ops (lower.go), the softmmu MMU (4-level, PAE and 32-bit paging with
// NX/WP/U and A/D bits, #PF with CR2; mem.go), exception and interrupt delivery
// (long-mode IDT with IST and RSP0 stack switches, protected-mode and real-mode
// vectors, #DF and triple fault; exc.go), MSRs, CPUID (QEMU's qemu64 model; cpuid.go)
// and the hooks tcg's run loop calls (cpu.go). A board creates one Engine per guest
// and one CPU per vCPU with New(Config{RAM, Engine, MMIO, IO, Ack, ...}), loads the
// boot CPU with SetBootState and runs each vCPU's Run on its own goroutine; the
// interrupt controllers drive SetIRQ/NMI/StartupIPI and answer Ack.
//
// Its tests compare the translator instruction by instruction with this host's own
// x86-64 CPU (difftest_amd64_test.go and the files it names).
//
// It must not know about devices, machines or which accelerator runs the guest; the
// TCG side talks to devices only through hw/bus (MMIO and the port space) and to
// interrupt controllers through Config callbacks and the SetIRQ/NMI/StartupIPI inputs.
package x86

// Segment is one segment register in its cached (descriptor) form, as the CPU holds it
// after a segment load. The fields mirror the bits of a GDT descriptor so a loader can
// describe "flat 64-bit code" without a GDT in memory, though a guest that reloads its
// segments needs a matching GDT anyway.
type Segment struct {
	Base     uint64
	Limit    uint32 // byte-granular limit (already scaled if G is set: 4 GiB-1 is 0xffffffff)
	Selector uint16
	Type     uint8 // descriptor type nibble: 0xb = execute/read accessed code, 0x3 = read/write accessed data, 0xb = busy 64-bit TSS
	Present  bool
	DPL      uint8
	DB       bool // default operation size (32-bit) / big
	S        bool // code or data segment (false for system segments: TSS, LDT)
	L        bool // 64-bit code segment
	G        bool // granularity (4 KiB)
	AVL      bool
	Unusable bool // null selector loaded; KVM and VMX need this on unused data segments
}

// DTable is a descriptor-table register (GDTR or IDTR).
type DTable struct {
	Base  uint64
	Limit uint16
}

// Regs holds the general-purpose registers, RIP and RFLAGS.
type Regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

// SRegs holds the segment, descriptor-table and control registers.
type SRegs struct {
	CS, DS, ES, FS, GS, SS, TR, LDT Segment
	GDT, IDT                        DTable
	CR0, CR2, CR3, CR4, CR8         uint64
	EFER                            uint64
	APICBase                        uint64 // 0 keeps the accelerator's reset value (0xfee00900 on the BSP)
}

// BootState is what a loader sets on the boot CPU before the first instruction: the
// complete register file. An accelerator loads it verbatim onto vCPU 0; other vCPUs
// stay in their reset/wait-for-SIPI state.
type BootState struct {
	Regs  Regs
	SRegs SRegs
}

// Control-register, EFER and RFLAGS bits loaders commonly need.
const (
	CR0_PE = 1 << 0
	CR0_MP = 1 << 1
	CR0_ET = 1 << 4
	CR0_NE = 1 << 5
	CR0_WP = 1 << 16
	CR0_PG = 1 << 31

	CR4_PAE    = 1 << 5
	CR4_OSFXSR = 1 << 9

	EFER_SCE = 1 << 0
	EFER_LME = 1 << 8
	EFER_LMA = 1 << 10
	EFER_NXE = 1 << 11

	RFLAGS_RESERVED = 1 << 1 // bit 1 always reads as 1
	RFLAGS_IF       = 1 << 9
)

// RealModeSegment returns the cached form of a real-mode segment with the given selector
// (base = selector*16, 64 KiB limit).
func RealModeSegment(sel uint16, code bool) Segment {
	t := uint8(0x3)
	if code {
		t = 0xb
	}
	return Segment{Base: uint64(sel) << 4, Limit: 0xffff, Selector: sel, Type: t, Present: true, S: true}
}

// FlatSegment returns a flat 4 GiB code or data segment with the given selector.
// long selects a 64-bit code segment (L=1, D=0); otherwise code and data are 32-bit.
func FlatSegment(sel uint16, code, long bool) Segment {
	s := Segment{Base: 0, Limit: 0xffffffff, Selector: sel, Type: 0x3, Present: true, S: true, G: true, DB: true}
	if code {
		s.Type = 0xb
		if long {
			s.L, s.DB = true, false
		}
	}
	return s
}

// ResetState returns the architectural state of an x86 CPU after RESET/INIT, in the
// real-mode form where the first instruction is fetched at CS:IP = seg:0 with CS base
// seg*16 (a loader that does not run firmware starts real-mode code anywhere this way).
func ResetState(seg uint16) BootState {
	var b BootState
	b.Regs.RFLAGS = RFLAGS_RESERVED
	s := &b.SRegs
	s.CS = RealModeSegment(seg, true)
	s.DS, s.ES, s.FS, s.GS, s.SS = RealModeSegment(0, false), RealModeSegment(0, false),
		RealModeSegment(0, false), RealModeSegment(0, false), RealModeSegment(0, false)
	s.TR = Segment{Limit: 0xffff, Type: 0xb, Present: true}
	s.LDT = Segment{Limit: 0xffff, Type: 0x2, Present: true}
	s.GDT.Limit, s.IDT.Limit = 0xffff, 0xffff
	s.CR0 = CR0_ET | 1<<30 | 1<<29 // CD, NW set as at reset
	return b
}

// DescriptorSegment returns the cached form a CPU loads from the 8-byte GDT/LDT
// descriptor desc through selector sel, so a loader that writes a GDT can set BootState
// segments that agree with it.
func DescriptorSegment(sel uint16, desc uint64) Segment {
	limit := uint32(desc&0xffff | (desc>>48&0xf)<<16)
	g := desc>>55&1 == 1
	if g {
		limit = limit<<12 | 0xfff
	}
	return Segment{
		Base:     desc>>16&0xffffff | (desc>>56&0xff)<<24,
		Limit:    limit,
		Selector: sel,
		Type:     uint8(desc >> 40 & 0xf),
		S:        desc>>44&1 == 1,
		DPL:      uint8(desc >> 45 & 3),
		Present:  desc>>47&1 == 1,
		AVL:      desc>>52&1 == 1,
		L:        desc>>53&1 == 1,
		DB:       desc>>54&1 == 1,
		G:        g,
	}
}

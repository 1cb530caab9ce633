package x86

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/arch/x86/x86asm"

	"gemu/hw/memory"
	"gemu/tcg"
)

// The differential test harness: an instruction sequence runs natively on this host's
// x86-64 CPU (in an RWX page at a fixed address, with memory operands pointing into a
// data page at a fixed address) and in the translator from the same register, flag and
// memory state; every GPR, the defined RFLAGS bits, XMM0-3 and the data page must
// agree. Faulting cases run only in the translator, which delivers them through a
// real IDT (interrupt gates on IST1) to per-vector handlers; the vector, error code
// and CR2 are checked against what the SDM specifies.

// Virtual addresses of the test pages: where the host mapped them (the translator maps
// the same addresses through its page tables).
var (
	dtCode   uint64 // code page (native: prologue, code, epilogue, context)
	dtData   uint64 // data page, right after the code page
	dtSys    uint64 // IDT, handlers, GDT, TSS (translator only)
	dtStack  uint64 // exception stack (translator only)
	dtStart  uint64 // where the code under test starts
	dtCtx    uint64 // the native register context
	dtHandlr uint64 // exception handler v is at dtHandlr+16v
)

const (
	dtXMM   = 0x90 // context offset of XMM0..3
	dtRAMPA = 0x10000
)

type dtState struct {
	R     [16]uint64
	Flags uint64
	XMM   [4][2]uint64
	Data  [4096]byte
}

// dtCase is one differential test case.
type dtCase struct {
	name string
	code []byte
	in   dtState
	mask uint64 // RFLAGS bits compared
	xmm  bool
}

var (
	nativeOnce sync.Once
	nativeErr  error
	nativeCode []byte
	nativeData []byte
)

func setupNative() {
	// Four pages: code and data for both sides, then two the translator alone uses.
	var m []byte
	m, nativeErr = syscall.Mmap(-1, 0, 4*4096, syscall.PROT_READ|syscall.PROT_WRITE|syscall.PROT_EXEC,
		syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if nativeErr != nil {
		return
	}
	nativeCode, nativeData = m[:4096], m[4096:8192]
	dtCode = uint64(uintptr(unsafe.Pointer(&m[0])))
	dtData, dtSys, dtStack = dtCode+0x1000, dtCode+0x2000, dtCode+0x3000
	dtStart, dtCtx, dtHandlr = dtCode+0x100, dtCode+0xe00, dtSys+0x400
}

// Register encodings for the generated prologue/epilogue.
func movLoad(reg int, off byte) []byte { // mov reg, [rax+off]
	rex := byte(0x48)
	if reg >= 8 {
		rex |= 4
	}
	return []byte{rex, 0x8b, 0x40 | byte(reg&7)<<3, off}
}

func movStore(reg int, off byte) []byte { // mov [rax+off], reg
	rex := byte(0x48)
	if reg >= 8 {
		rex |= 4
	}
	return []byte{rex, 0x89, 0x40 | byte(reg&7)<<3, off}
}

func movabsRAX(v uint64) []byte {
	b := []byte{0x48, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint64(b[2:], v)
	return b
}

func xmmMove(store bool, n int) []byte { // movdqu xmmN, [rax+dtXMM+16n] (or the store)
	op := byte(0x6f)
	if store {
		op = 0x7f
	}
	b := []byte{0xf3, 0x0f, op, 0x80 | byte(n)<<3, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(b[4:], uint32(dtXMM+16*n))
	return b
}

func prologue() []byte {
	var p []byte
	p = append(p, movabsRAX(dtCtx)...)
	p = append(p, 0x48, 0x89, 0xa0, 0x88, 0, 0, 0) // mov [rax+0x88], rsp
	p = append(p, 0x48, 0x8d, 0xa0, 0x80, 0, 0, 0) // lea rsp, [rax+0x80]
	p = append(p, 0x9d)                            // popfq
	for n := 0; n < 4; n++ {
		p = append(p, xmmMove(false, n)...)
	}
	for r := 1; r < 16; r++ {
		if r != 4 {
			p = append(p, movLoad(r, byte(8*r))...)
		}
	}
	p = append(p, movLoad(4, 32)...)
	p = append(p, 0x48, 0x8b, 0x00) // mov rax, [rax]
	return p
}

func epilogue() []byte {
	p := []byte{0x48, 0xa3, 0, 0, 0, 0, 0, 0, 0, 0} // movabs [ctx], rax
	binary.LittleEndian.PutUint64(p[2:], dtCtx)
	p = append(p, movabsRAX(dtCtx)...)
	for r := 1; r < 16; r++ {
		p = append(p, movStore(r, byte(8*r))...)
	}
	for n := 0; n < 4; n++ {
		p = append(p, xmmMove(true, n)...)
	}
	p = append(p, 0x48, 0x8d, 0xa0, 0x88, 0, 0, 0) // lea rsp, [rax+0x88]
	p = append(p, 0x9c)                            // pushfq (to ctx+0x80)
	p = append(p, 0xfc)                            // cld
	p = append(p, 0x48, 0x8b, 0xa0, 0x88, 0, 0, 0) // mov rsp, [rax+0x88]
	p = append(p, 0xc3)
	return p
}

var nativeMu sync.Mutex

// runNative runs code on the host CPU from state in.
func runNative(t *testing.T, code []byte, in *dtState) dtState {
	nativeMu.Lock()
	defer nativeMu.Unlock()
	pro := prologue()
	if len(pro) > 0x100 {
		panic("prologue too long")
	}
	clear(nativeCode)
	copy(nativeCode, pro)
	// jmp to the code start
	j := len(pro)
	nativeCode[j] = 0xe9
	binary.LittleEndian.PutUint32(nativeCode[j+1:], uint32(0x100-(j+5)))
	copy(nativeCode[0x100:], code)
	copy(nativeCode[0x100+len(code):], epilogue())
	ctx := nativeCode[0xe00:]
	for r := 0; r < 16; r++ {
		binary.LittleEndian.PutUint64(ctx[8*r:], in.R[r])
	}
	binary.LittleEndian.PutUint64(ctx[0x80:], in.Flags&(flagsArith|flagDF)|RFLAGS_RESERVED|RFLAGS_IF)
	for n := 0; n < 4; n++ {
		binary.LittleEndian.PutUint64(ctx[dtXMM+16*n:], in.XMM[n][0])
		binary.LittleEndian.PutUint64(ctx[dtXMM+16*n+8:], in.XMM[n][1])
	}
	copy(nativeData, in.Data[:])
	callNative(uintptr(dtCode))
	var out dtState
	for r := 0; r < 16; r++ {
		out.R[r] = binary.LittleEndian.Uint64(ctx[8*r:])
	}
	out.Flags = binary.LittleEndian.Uint64(ctx[0x80:])
	for n := 0; n < 4; n++ {
		out.XMM[n] = [2]uint64{binary.LittleEndian.Uint64(ctx[dtXMM+16*n:]), binary.LittleEndian.Uint64(ctx[dtXMM+16*n+8:])}
	}
	copy(out.Data[:], nativeData)
	return out
}

// gemuHarness is a translator vCPU with the test pages mapped at the native addresses.
type gemuHarness struct {
	ram *memory.RAM
	eng *Engine
	c   *CPU
}

func newGemuHarness(t testing.TB, model *Model) *gemuHarness {
	nativeOnce.Do(setupNative)
	if nativeErr != nil {
		t.Skipf("cannot map the native test pages: %v", nativeErr)
	}
	ram := memory.New()
	if _, err := ram.Add("ram", 0, 1<<20); err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(ram)
	c := New(Config{RAM: ram, Engine: eng, Model: model})
	h := &gemuHarness{ram: ram, eng: eng, c: c}
	t.Cleanup(func() { c.Close(); eng.Close(); ram.Close() })
	w64 := func(pa, v uint64) {
		if err := ram.Write64(pa, v); err != nil {
			t.Fatal(err)
		}
	}
	// Page tables from 0x1000 up (PML4 first), mapping the four test pages.
	next := uint64(0x2000)
	for i := uint64(0); i < 4; i++ {
		va := dtCode + 0x1000*i
		table := uint64(0x1000)
		for lvl := 3; lvl >= 1; lvl-- {
			ea := table + 8*(va>>(12+9*uint(lvl))&511)
			e, _ := ram.Read64(ea)
			if e&1 == 0 {
				e = next | 7
				next += 0x1000
				w64(ea, e)
			}
			table = e &^ 0xfff
		}
		w64(table+8*(va>>12&511), (dtRAMPA+0x1000*i)|3) // P, W, supervisor
	}
	sys := uint64(dtRAMPA + 0x2000)
	// IDT: 32 interrupt gates, selector 8, IST 1, handler dtHandlr+16v.
	for v := uint64(0); v < 32; v++ {
		hnd := uint64(dtHandlr + 16*v)
		lo := hnd&0xffff | 8<<16 | 1<<32 | 0x8e<<40 | (hnd>>16&0xffff)<<48
		w64(sys+16*v, lo)
		w64(sys+16*v+8, hnd>>32)
		w64(sys+0x400+16*v, 0xf4f4f4f4f4f4f4f4) // hlt
	}
	// GDT at +0x800: null, 64-bit code, data. TSS at +0xc00: IST1 = top of stack page.
	w64(sys+0x808, 0x00af9b000000ffff)
	w64(sys+0x810, 0x00cf93000000ffff)
	w64(sys+0xc00+0x24, dtStack+0x1000)
	b := BootState{}
	s := &b.SRegs
	s.CS = DescriptorSegment(8, 0x00af9b000000ffff)
	s.DS = DescriptorSegment(0x10, 0x00cf93000000ffff)
	s.ES, s.SS = s.DS, s.DS
	s.GDT = DTable{Base: dtSys + 0x800, Limit: 0x17}
	s.IDT = DTable{Base: dtSys, Limit: 32*16 - 1}
	s.TR = Segment{Base: dtSys + 0xc00, Limit: 0x67, Type: 0xb, Present: true}
	s.CR0 = CR0_PE | CR0_PG | CR0_ET | CR0_NE | CR0_WP | CR0_MP
	s.CR3 = 0x1000
	s.CR4 = CR4_PAE | CR4_OSFXSR | cr4OSXMMEXCPT
	s.EFER = EFER_LME | EFER_LMA | EFER_NXE | EFER_SCE
	c.SetBootState(b)
	return h
}

// gemuResult is what the translator did with a case.
type gemuResult struct {
	out    dtState
	vector int   // -1: ran to the end
	err    int64 // error code pushed, -1 none
	cr2    uint64
}

// run executes code from state in until the HLT placed after it (or an exception
// handler is reached).
func (h *gemuHarness) run(t testing.TB, code []byte, in *dtState) gemuResult {
	c := h.c
	page := make([]byte, 4096)
	copy(page[0x100:], code)
	page[0x100+len(code)] = 0xf4
	if err := h.ram.WriteAt(page, dtRAMPA); err != nil {
		t.Fatal(err)
	}
	if err := h.ram.WriteAt(in.Data[:], dtRAMPA+0x1000); err != nil {
		t.Fatal(err)
	}
	c.R = in.R
	c.RFLAGS = in.Flags&(flagsArith|flagDF) | RFLAGS_RESERVED
	for n := 0; n < 4; n++ {
		c.sse.xmm[n] = in.XMM[n]
	}
	end := dtStart + uint64(len(code)) + 1
	return h.runAt(t, dtStart, end)
}

// runAt runs from rip with the current state until HLT; end is the RIP after the
// expected final HLT.
func (h *gemuHarness) runAt(t testing.TB, rip, end uint64) gemuResult {
	c := h.c
	c.RIP = rip
	c.halted.Store(false)
	c.LastVector, c.LastError = -1, -1
	c.CR2 = 0
	res := gemuResult{vector: -1, err: -1}
	for n := 0; ; n++ {
		if n > 100000 {
			t.Fatalf("translator did not finish (RIP %#x)", c.RIP)
		}
		if c.halted.Load() {
			break
		}
		pa, host, ok := c.fetch(c.RIP)
		if !ok {
			continue
		}
		tr := c.translateBlock(tcg.Key{PC: c.RIP, Phys: pa, Flags: c.flags}, host)
		tr.Code(c)
	}
	hr := c.RIP - 1
	switch {
	case c.RIP == end:
	case hr >= dtHandlr && hr < dtHandlr+32*16:
		res.vector = int((hr - dtHandlr) / 16)
		res.err = c.LastError
		res.cr2 = c.CR2
	default:
		t.Fatalf("translator halted at unexpected RIP %#x", c.RIP)
	}
	res.out.R = c.R
	res.out.Flags = c.RFLAGS
	for n := 0; n < 4; n++ {
		res.out.XMM[n] = c.sse.xmm[n]
	}
	if err := h.ram.ReadAt(res.out.Data[:], dtRAMPA+0x1000); err != nil {
		t.Fatal(err)
	}
	return res
}

func disasm(code []byte) string {
	var parts []string
	for len(code) > 0 {
		in, err := x86asm.Decode(code, 64)
		if err != nil {
			parts = append(parts, fmt.Sprintf("(bad % x)", code))
			break
		}
		parts = append(parts, x86asm.GNUSyntax(in, 0, nil))
		code = code[in.Len:]
	}
	return strings.Join(parts, "; ")
}

var regNames = [16]string{"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"}

// compare runs tc natively and in the translator and reports differences.
func compare(t *testing.T, h *gemuHarness, tc *dtCase) bool {
	t.Helper()
	g := h.run(t, tc.code, &tc.in)
	if g.vector >= 0 {
		t.Errorf("%s [% x] %s: translator raised vector %d (err %#x); native would run it", tc.name, tc.code, disasm(tc.code), g.vector, g.err)
		return false
	}
	n := runNative(t, tc.code, &tc.in)
	var diffs []string
	for r := 0; r < 16; r++ {
		if n.R[r] != g.out.R[r] {
			diffs = append(diffs, fmt.Sprintf("%s native %#x gemu %#x", regNames[r], n.R[r], g.out.R[r]))
		}
	}
	if (n.Flags^g.out.Flags)&tc.mask != 0 {
		diffs = append(diffs, fmt.Sprintf("rflags native %#x gemu %#x (mask %#x, in %#x)", n.Flags&tc.mask, g.out.Flags&tc.mask, tc.mask, tc.in.Flags))
	}
	if tc.xmm && n.XMM != g.out.XMM {
		diffs = append(diffs, fmt.Sprintf("xmm native %x gemu %x", n.XMM, g.out.XMM))
	}
	if n.Data != g.out.Data {
		for i := range n.Data {
			if n.Data[i] != g.out.Data[i] {
				diffs = append(diffs, fmt.Sprintf("data[%#x] native %#x gemu %#x", i, n.Data[i], g.out.Data[i]))
				break
			}
		}
	}
	if len(diffs) > 0 {
		var in []string
		for r := 0; r < 16; r++ {
			in = append(in, fmt.Sprintf("%s=%#x", regNames[r], tc.in.R[r]))
		}
		t.Errorf("%s [% x] %s:\n  %s\n  input: %s", tc.name, tc.code, disasm(tc.code), strings.Join(diffs, "\n  "), strings.Join(in, " "))
		return false
	}
	return true
}

// randomState returns random registers, with RSP in the data page and the registers a
// memory operand uses pointing into it, arithmetic flags random, DF clear.
func randomState(r *rand.Rand) dtState {
	var s dtState
	for i := range s.R {
		switch r.Intn(4) {
		case 0:
			s.R[i] = uint64(r.Intn(256))
		case 1:
			s.R[i] = r.Uint64() >> uint(r.Intn(64))
		default:
			s.R[i] = r.Uint64()
		}
	}
	s.R[4] = dtData + 0x800
	s.Flags = r.Uint64() & flagsArith
	for i := range s.Data {
		s.Data[i] = byte(r.Intn(256))
	}
	for n := range s.XMM {
		s.XMM[n] = [2]uint64{r.Uint64(), r.Uint64()}
	}
	return s
}

// Package armtest owns gemu's A64 differential-test harness: it wraps a snippet of A64
// assembly into a static aarch64 Linux program, builds it with aarch64-linux-gnu-gcc,
// runs it under qemu-aarch64 (the oracle) and under gemu's target-arm engine (a minimal
// user-mode runner: EL0 with the MMU off over flat RAM, write/exit system calls served in
// Go), and compares the final registers, flags and a scratch memory buffer.
//
// It must not reach into target-arm's internals: it drives the CPU only through its
// public API, as a machine would.
package armtest

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gemu/hw/memory"
	arm "gemu/target-arm"
)

// ScratchSize is the size of the `scratch` buffer a snippet may read and write. It starts
// filled with the byte pattern i&0xff and is compared after the run.
const ScratchSize = 4096

// Result is the final state of one run.
type Result struct {
	X          [31]uint64
	SP         uint64
	NZCV       uint64
	FPSR, FPCR uint64
	V          [32][2]uint64
	Mem        []byte // the scratch buffer
}

const dumpSize = 288 + 512

// Program returns the assembly source of the test program for a snippet. The snippet
// runs with all general registers zero, SP at a private 64 KiB stack, and the label
// `scratch` (16-byte aligned, ScratchSize bytes) available; it must fall through at its
// end.
func Program(body string) string {
	var b strings.Builder
	b.WriteString(`	.text
	.global _start
_start:
	adrp x0, stack_top
	add x0, x0, :lo12:stack_top
	mov sp, x0
	msr nzcv, xzr
`)
	for i := 0; i <= 30; i++ {
		fmt.Fprintf(&b, "\tmov x%d, #0\n", i)
	}
	b.WriteString("// --- snippet ---\n")
	b.WriteString(body)
	b.WriteString(`
// --- dump ---
	msr tpidr_el0, x28
	adrp x28, dumparea
	add x28, x28, :lo12:dumparea
	stp x0, x1, [x28, #0]
	stp x2, x3, [x28, #16]
	stp x4, x5, [x28, #32]
	stp x6, x7, [x28, #48]
	stp x8, x9, [x28, #64]
	stp x10, x11, [x28, #80]
	stp x12, x13, [x28, #96]
	stp x14, x15, [x28, #112]
	stp x16, x17, [x28, #128]
	stp x18, x19, [x28, #144]
	stp x20, x21, [x28, #160]
	stp x22, x23, [x28, #176]
	stp x24, x25, [x28, #192]
	stp x26, x27, [x28, #208]
	mrs x0, tpidr_el0
	stp x0, x29, [x28, #224]
	str x30, [x28, #240]
	mov x0, sp
	str x0, [x28, #248]
	mrs x0, nzcv
	str x0, [x28, #256]
	mrs x0, fpsr
	str x0, [x28, #264]
	mrs x0, fpcr
	str x0, [x28, #272]
	add x1, x28, #288
	stp q0, q1, [x1], #32
	stp q2, q3, [x1], #32
	stp q4, q5, [x1], #32
	stp q6, q7, [x1], #32
	stp q8, q9, [x1], #32
	stp q10, q11, [x1], #32
	stp q12, q13, [x1], #32
	stp q14, q15, [x1], #32
	stp q16, q17, [x1], #32
	stp q18, q19, [x1], #32
	stp q20, q21, [x1], #32
	stp q22, q23, [x1], #32
	stp q24, q25, [x1], #32
	stp q26, q27, [x1], #32
	stp q28, q29, [x1], #32
	stp q30, q31, [x1], #32
	mov x0, #1
	mov x1, x28
	mov x2, #` + fmt.Sprint(dumpSize) + `
	mov x8, #64
	svc #0
	mov x0, #1
	adrp x1, scratch
	add x1, x1, :lo12:scratch
	mov x2, #` + fmt.Sprint(ScratchSize) + `
	mov x8, #64
	svc #0
	mov x0, #0
	mov x8, #93
	svc #0
	.data
	.balign 16
scratch:
	.rept ` + fmt.Sprint(ScratchSize) + `
	.byte (. - scratch) & 0xff
	.endr
	.balign 16
dumparea:
	.space ` + fmt.Sprint(dumpSize) + `
	.bss
	.balign 16
	.space 65536
stack_top:
`)
	return b.String()
}

// Build assembles and links the program for body into dir and returns the executable's
// path. It skips the test when the cross toolchain is missing.
func Build(t testing.TB, dir, body string, ldflags ...string) string {
	t.Helper()
	return buildMarch(t, dir, body, "armv8-a+crc+crypto", ldflags...)
}

// buildMarch is Build for the architecture level march (gcc's -march).
func buildMarch(t testing.TB, dir, body, march string, ldflags ...string) string {
	t.Helper()
	gcc, err := exec.LookPath("aarch64-linux-gnu-gcc")
	if err != nil {
		t.Skip("aarch64-linux-gnu-gcc not installed (apt-get install gcc-aarch64-linux-gnu)")
	}
	src := filepath.Join(dir, "prog.S")
	bin := filepath.Join(dir, "prog")
	if err := os.WriteFile(src, []byte(Program(body)), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-static", "-nostdlib", "-no-pie", "-march=" + march, "-o", bin, src}, ldflags...)
	out, err := exec.Command(gcc, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("assembling snippet: %v\n%s", err, out)
	}
	return bin
}

// RunQEMU runs the program under qemu-aarch64 and returns its output.
func RunQEMU(t testing.TB, bin string) []byte {
	t.Helper()
	return runQEMUCPU(t, bin, "cortex-a57")
}

// runQEMUCPU runs the program under qemu-aarch64 -cpu cpu.
func runQEMUCPU(t testing.TB, bin, cpu string) []byte {
	t.Helper()
	q, err := exec.LookPath("qemu-aarch64")
	if err != nil {
		t.Skip("qemu-aarch64 not installed (apt-get install qemu-user)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, q, "-cpu", cpu, bin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("qemu-aarch64: %v\n%s", err, stderr.Bytes())
	}
	return stdout.Bytes()
}

// Guest physical layout of the gemu user-mode runner (MMU off: VA = PA).
const (
	ramSize    = 64 << 20
	vectorBase = 0x3000000
	trampoline = 0x3001000
)

// A64 encodings the runner writes itself.
func msrEnc(op0, op1, crn, crm, op2, rt uint32) uint32 {
	return 0xd5000000 | op0<<19 | op1<<16 | crn<<12 | crm<<8 | op2<<5 | rt
}

func movz(rd uint32, imm16 uint32, hw uint32) uint32 { return 0xd2800000 | hw<<21 | imm16<<5 | rd }

const (
	insnHVC  = 0xd4000002
	insnERET = 0xd69f03e0
)

// RunGemu runs the program on gemu's A64 engine and returns its output.
func RunGemu(t testing.TB, bin string) []byte {
	t.Helper()
	out, err := runGemu(bin, 30*time.Second)
	if err != nil {
		t.Fatalf("gemu: %v", err)
	}
	return out
}

func runGemu(bin string, timeout time.Duration) ([]byte, error) {
	return runGemuModel(bin, timeout, nil)
}

// runGemuModel runs the program on a vCPU of the given model (nil: the default).
func runGemuModel(bin string, timeout time.Duration, model *arm.Model) ([]byte, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ram := memory.New()
	if _, err := ram.Add("ram", 0, ramSize); err != nil {
		return nil, err
	}
	defer ram.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD {
			continue
		}
		if p.Vaddr+p.Memsz > vectorBase {
			return nil, fmt.Errorf("segment at %#x does not fit the runner's RAM", p.Vaddr)
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			return nil, err
		}
		if err := ram.WriteAt(data, p.Vaddr); err != nil {
			return nil, err
		}
	}
	// Vectors: every entry calls back into Go (HVC), then returns (ERET).
	for off := uint64(0); off < 0x800; off += 0x80 {
		_ = ram.Write32(vectorBase+off, insnHVC)
		_ = ram.Write32(vectorBase+off+4, insnERET)
	}
	// EL1 trampoline: ELR=entry (X0), SPSR=EL0t, CPACR.FPEN=3, VBAR, then ERET to EL0.
	tramp := []uint32{
		msrEnc(3, 0, 4, 0, 1, 0),  // msr elr_el1, x0
		msrEnc(3, 0, 4, 0, 0, 31), // msr spsr_el1, xzr
		movz(1, 0x30, 1),          // mov x1, #0x300000
		msrEnc(3, 0, 1, 0, 2, 1),  // msr cpacr_el1, x1
		movz(1, vectorBase>>16, 1),
		msrEnc(3, 0, 12, 0, 0, 1), // msr vbar_el1, x1
		movz(1, 0x34d5, 1),        // SCTLR_EL1: RES1 bits, UCI, UCT, DZE; MMU off
		0xf2800001 | 0xd800<<5,    // movk x1, #0xd800
		msrEnc(3, 0, 1, 0, 0, 1),
		movz(1, 2, 0),             // CNTKCTL_EL1.EL0VCTEN, as Linux sets it
		msrEnc(3, 0, 14, 1, 0, 1), // msr cntkctl_el1, x1
		movz(0, 0, 0),
		movz(1, 0, 0),
		insnERET,
	}
	for i, w := range tramp {
		_ = ram.Write32(trampoline+uint64(4*i), w)
	}
	var out bytes.Buffer
	var runErr error
	stop := make(chan struct{})
	halted := false
	halt := func(err error) {
		// The vCPU notices stop at its next block boundary; anything it does after the
		// first halt (such as running past the exit call) is ignored.
		if halted {
			return
		}
		halted, runErr = true, err
		close(stop)
	}
	exited := false
	cpu := arm.New(arm.Config{ID: 0, RAM: ram, Model: model, HVC: func(c *arm.CPU) {
		esr, far, elr := c.ExceptionInfo()
		if esr>>26 != 0x15 || c.EL() != 1 {
			halt(fmt.Errorf("unexpected exception: ESR %#x (EC %#x) FAR %#x ELR %#x", esr, esr>>26, far, elr))
			return
		}
		switch c.X(8) {
		case 64: // write
			n := c.X(2)
			if n > 1<<20 {
				halt(fmt.Errorf("write of %d bytes", n))
				return
			}
			buf := make([]byte, n)
			if err := ram.ReadAt(buf, c.X(1)); err != nil {
				halt(err)
				return
			}
			out.Write(buf)
			c.SetX(0, n)
		case 93, 94: // exit, exit_group
			exited = true
			if c.X(0) != 0 {
				halt(fmt.Errorf("exit status %d", c.X(0)))
			}
			halt(nil)
		default:
			halt(fmt.Errorf("unsupported system call %d", c.X(8)))
		}
	}})
	defer cpu.Close()
	cpu.Reset(trampoline, f.Entry)
	done := make(chan error, 1)
	go func() { done <- cpu.Run(stop) }()
	select {
	case err := <-done:
		if err != nil {
			return nil, err
		}
	case <-time.After(timeout):
		halt(errors.New("timed out"))
		<-done
	}
	if runErr != nil {
		return out.Bytes(), runErr
	}
	if !exited {
		return out.Bytes(), errors.New("program did not exit")
	}
	return out.Bytes(), nil
}

// Parse decodes a program's output.
func Parse(out []byte) (*Result, error) {
	if len(out) != dumpSize+ScratchSize {
		return nil, fmt.Errorf("output is %d bytes, want %d", len(out), dumpSize+ScratchSize)
	}
	le := binary.LittleEndian
	r := &Result{}
	for i := 0; i < 31; i++ {
		r.X[i] = le.Uint64(out[8*i:])
	}
	r.SP = le.Uint64(out[248:])
	r.NZCV = le.Uint64(out[256:])
	r.FPSR = le.Uint64(out[264:])
	r.FPCR = le.Uint64(out[272:])
	for i := 0; i < 32; i++ {
		r.V[i][0] = le.Uint64(out[288+16*i:])
		r.V[i][1] = le.Uint64(out[288+16*i+8:])
	}
	r.Mem = append([]byte(nil), out[dumpSize:]...)
	return r, nil
}

// RunBoth builds the snippet (ldflags are extra linker arguments, such as "-Wl,-N" for
// writable code) and runs it under gemu and qemu-aarch64.
func RunBoth(t testing.TB, body string, ldflags ...string) (gemu, qemu *Result) {
	t.Helper()
	bin := Build(t, t.TempDir(), body, ldflags...)
	q, err := Parse(RunQEMU(t, bin))
	if err != nil {
		t.Fatalf("qemu output: %v", err)
	}
	g, err := Parse(RunGemu(t, bin))
	if err != nil {
		t.Fatalf("gemu output: %v", err)
	}
	return g, q
}

// Diff lists the differences between two results.
func Diff(g, q *Result) []string {
	var d []string
	for i := range g.X {
		if g.X[i] != q.X[i] {
			d = append(d, fmt.Sprintf("x%d: gemu %#x, qemu %#x", i, g.X[i], q.X[i]))
		}
	}
	if g.SP != q.SP {
		d = append(d, fmt.Sprintf("sp: gemu %#x, qemu %#x", g.SP, q.SP))
	}
	if g.NZCV != q.NZCV {
		d = append(d, fmt.Sprintf("nzcv: gemu %#x, qemu %#x", g.NZCV, q.NZCV))
	}
	if g.FPSR != q.FPSR {
		d = append(d, fmt.Sprintf("fpsr: gemu %#x, qemu %#x", g.FPSR, q.FPSR))
	}
	if g.FPCR != q.FPCR {
		d = append(d, fmt.Sprintf("fpcr: gemu %#x, qemu %#x", g.FPCR, q.FPCR))
	}
	for i := range g.V {
		if g.V[i] != q.V[i] {
			d = append(d, fmt.Sprintf("v%d: gemu %#016x:%016x, qemu %#016x:%016x", i, g.V[i][1], g.V[i][0], q.V[i][1], q.V[i][0]))
		}
	}
	for i := range g.Mem {
		if g.Mem[i] != q.Mem[i] {
			d = append(d, fmt.Sprintf("scratch[%d]: gemu %#02x, qemu %#02x", i, g.Mem[i], q.Mem[i]))
			if len(d) > 40 {
				break
			}
		}
	}
	return d
}

// Check runs the snippet under both engines and fails the test on any difference.
func Check(t testing.TB, body string, ldflags ...string) {
	t.Helper()
	g, q := RunBoth(t, body, ldflags...)
	if d := Diff(g, q); len(d) > 0 {
		t.Errorf("gemu and qemu-aarch64 disagree:\n  %s\nsnippet:\n%s", strings.Join(d, "\n  "), body)
	}
}

// CheckCPU is Check for the CPU model cpu (as both qemu-aarch64 and gemu spell it),
// with the snippet assembled for march.
func CheckCPU(t testing.TB, cpu, march, body string) {
	t.Helper()
	m, ok := arm.LookupModel(cpu)
	if !ok {
		t.Fatalf("gemu has no CPU model %q", cpu)
	}
	bin := buildMarch(t, t.TempDir(), body, march)
	q, err := Parse(runQEMUCPU(t, bin, cpu))
	if err != nil {
		t.Fatalf("qemu output: %v", err)
	}
	out, err := runGemuModel(bin, 30*time.Second, m)
	if err != nil {
		t.Fatalf("gemu: %v", err)
	}
	g, err := Parse(out)
	if err != nil {
		t.Fatalf("gemu output: %v", err)
	}
	if d := Diff(g, q); len(d) > 0 {
		t.Errorf("gemu and qemu-aarch64 -cpu %s disagree:\n  %s\nsnippet:\n%s", cpu, strings.Join(d, "\n  "), body)
	}
}

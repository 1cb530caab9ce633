// Package pcoracle runs scripts of port-I/O and MMIO accesses both inside QEMU's pc
// machine (on TCG, so QEMU's own userspace PIC, PIT, IOAPIC, local APIC and HPET
// answer) and against gemu's device models, so device tests can compare the two
// register by register. This QEMU build has no qtest accelerator, so the QEMU side is
// a tiny multiboot guest (guest/: built with the host's gcc -m32) that
// replays the script from a multiboot module with interrupts off and reports every
// value read on the debug console.
//
// It is test support for hw/: it must not be imported by non-test code.
package pcoracle

import (
	_ "embed"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"gemu/hw/bus"
)

//go:embed guest/guest.S
var guestS []byte

//go:embed guest/guest.c
var guestC []byte

//go:embed guest/guest.ld
var guestLD []byte

// Op kinds.
const (
	kOutB = 1 + iota
	kInB
	kOutW
	kInW
	kOutL
	kInL
	kWriteL
	kReadL
	kWaitB
	kWaitL
	kIntr
)

// Op is one access. Reads produce one value; Mask selects the bits compared (0: all).
type Op struct {
	Kind, Addr, Val uint32
	Mask            uint32
	Ignore          bool // read for its side effect only (a time-dependent value)
	Note            string
}

// Script is a sequence of accesses.
type Script []Op

func (s *Script) add(k, a, v uint32) *Script { *s = append(*s, Op{Kind: k, Addr: a, Val: v}); return s }

// Outb, Outw, Outl, Writel append writes.
func (s *Script) Outb(port uint16, v uint8) *Script  { return s.add(kOutB, uint32(port), uint32(v)) }
func (s *Script) Outw(port uint16, v uint16) *Script { return s.add(kOutW, uint32(port), uint32(v)) }
func (s *Script) Outl(port uint16, v uint32) *Script { return s.add(kOutL, uint32(port), v) }
func (s *Script) Writel(addr, v uint32) *Script      { return s.add(kWriteL, addr, v) }

// Inb, Inw, Inl, Readl append reads, with a note naming what is read.
func (s *Script) Inb(port uint16, note string) *Script { return s.read(kInB, uint32(port), note, 0) }
func (s *Script) Inw(port uint16, note string) *Script { return s.read(kInW, uint32(port), note, 0) }
func (s *Script) Inl(port uint16, note string) *Script { return s.read(kInL, uint32(port), note, 0) }
func (s *Script) Readl(addr uint32, note string) *Script {
	return s.read(kReadL, addr, note, 0)
}

// InbMask and ReadlMask compare only the bits in mask (time-dependent bits excluded).
func (s *Script) InbMask(port uint16, mask uint32, note string) *Script {
	return s.read(kInB, uint32(port), note, mask)
}
func (s *Script) ReadlMask(addr, mask uint32, note string) *Script {
	return s.read(kReadL, addr, note, mask)
}

// InbIgnore reads a port for its side effect (consuming a latch) without comparing.
func (s *Script) InbIgnore(port uint16) *Script {
	*s = append(*s, Op{Kind: kInB, Addr: uint32(port), Ignore: true, Note: "ignored"})
	return s
}

// ReadlIgnore reads MMIO for its side effect without comparing.
func (s *Script) ReadlIgnore(addr uint32) *Script {
	*s = append(*s, Op{Kind: kReadL, Addr: addr, Ignore: true, Note: "ignored"})
	return s
}

func (s *Script) read(k, a uint32, note string, mask uint32) *Script {
	*s = append(*s, Op{Kind: k, Addr: a, Note: note, Mask: mask})
	return s
}

// WaitB waits until inb(port) & mask == value, writing pre to prePort (if not 0)
// before each read (a PIT latch command, say). QEMU's guest spins in real time; the
// model calls the tick function given to ModelTicks between reads.
func (s *Script) WaitB(port uint16, mask, value uint8, prePort uint16, pre uint8) *Script {
	return s.add(kWaitB, uint32(port)|uint32(prePort)<<16, uint32(mask)|uint32(value)<<8|uint32(pre)<<16)
}

// WaitL waits until readl(addr) & mask == value (encoded as two ops: the second
// carries value).
func (s *Script) WaitL(addr, mask, value uint32) *Script {
	s.add(kWaitL, addr, mask)
	return s.add(0, value, 0)
}

// Intr lets the CPU take one interrupt (sti, wait, cli) and reads its vector, or
// 0xffffffff if none arrived within the wait. The guest's handlers do not EOI: the
// script does.
func (s *Script) Intr(note string) *Script { return s.read(kIntr, 0, note, 0) }

// CPU is the model's side of Intr: the interrupt-acknowledge interface of the vCPU's
// local APIC (apic.APIC).
type CPU interface {
	HighestPending() int
	Acknowledge() int
}

func isRead(k uint32) bool {
	return k == kInB || k == kInW || k == kInL || k == kReadL || k == kIntr
}

var (
	buildOnce sync.Once
	guestPath string
	buildErr  error
)

func buildGuest() (string, error) {
	buildOnce.Do(func() {
		gcc, err := exec.LookPath("gcc")
		if err != nil {
			buildErr = fmt.Errorf("gcc not installed: %v", err)
			return
		}
		dir, err := os.MkdirTemp("", "pcoracle")
		if err != nil {
			buildErr = err
			return
		}
		for name, b := range map[string][]byte{"guest.S": guestS, "guest.c": guestC, "guest.ld": guestLD} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				buildErr = err
				return
			}
		}
		out := filepath.Join(dir, "guest.elf")
		cmd := exec.Command(gcc, "-m32", "-ffreestanding", "-fno-pic", "-fno-stack-protector",
			"-fno-asynchronous-unwind-tables", "-nostdlib", "-static", "-O2", "-Wl,-n",
			"-Wl,-z,noexecstack", "-Wl,--no-warn-rwx-segments", "-Wl,--build-id=none",
			"-T", "guest.ld", "-o", out, "guest.S", "guest.c")
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building the oracle guest with gcc -m32: %v\n%s", err, b)
			return
		}
		guestPath = out
	})
	return guestPath, buildErr
}

// QEMU runs s in qemu-system-x86_64 -machine pc on TCG and returns the values read.
// It skips the test (with the reason) when QEMU or gcc -m32 is missing.
func QEMU(t testing.TB, s Script) []uint32 {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed: no QEMU oracle")
	}
	guest, err := buildGuest()
	if err != nil {
		t.Skipf("no oracle guest: %v", err)
	}
	dir := t.TempDir()
	var mod []byte
	for _, op := range s {
		mod = binary.LittleEndian.AppendUint32(mod, op.Kind)
		mod = binary.LittleEndian.AppendUint32(mod, op.Addr)
		mod = binary.LittleEndian.AppendUint32(mod, op.Val)
	}
	script, out := filepath.Join(dir, "script.bin"), filepath.Join(dir, "out.bin")
	if err := os.WriteFile(script, mod, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(qemu, "-machine", "pc", "-accel", "tcg", "-nodefaults", "-display", "none",
		"-m", "32", "-kernel", guest, "-initrd", script,
		"-chardev", "file,id=o,path="+out, "-device", "isa-debugcon,iobase=0xe9,chardev=o",
		"-device", "isa-debug-exit,iobase=0xf4,iosize=1")
	b, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("QEMU oracle run: %v (want exit status 1 from isa-debug-exit 0)\n%s", err, b)
	}
	res, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) < 4 || binary.LittleEndian.Uint32(res) != 0x4f524347 {
		t.Fatalf("QEMU oracle guest did not start the script (output %x)", res)
	}
	res = res[4:]
	var vals []uint32
	for len(res) >= 4 {
		vals = append(vals, binary.LittleEndian.Uint32(res))
		res = res[4:]
	}
	if n := s.reads(); len(vals) != n {
		t.Fatalf("QEMU oracle returned %d values for %d reads", len(vals), n)
	}
	return vals
}

func (s Script) reads() int {
	n := 0
	for _, op := range s {
		if isRead(op.Kind) {
			n++
		}
	}
	return n
}

// Model runs s against gemu's devices on mmio and pio as vCPU 0 and returns the
// values read (an access nothing claims reads as all ones, as on the PC).
func Model(s Script, mmio, pio *bus.Bus) []uint32 { return ModelTicks(s, mmio, pio, nil) }

// ModelTicks is Model with tick called while a WaitB waits (the test advances its
// fake clock); with tick nil a WaitB whose condition does not hold panics.
func ModelTicks(s Script, mmio, pio *bus.Bus, tick func()) []uint32 {
	return ModelCPU(s, mmio, pio, tick, nil)
}

// ModelCPU is ModelTicks with cpu answering Intr (ticking up to 100000 times while
// nothing is pending).
func ModelCPU(s Script, mmio, pio *bus.Bus, tick func(), cpu CPU) []uint32 {
	var vals []uint32
	a := bus.CPUAccess(0)
	for i := 0; i < len(s); i++ {
		op := s[i]
		if op.Kind == kIntr {
			v := uint32(0xffffffff)
			for n := 0; cpu != nil && n < 100000; n++ {
				if cpu.HighestPending() >= 0 {
					if x := cpu.Acknowledge(); x >= 0 {
						v = uint32(x)
					}
					break
				}
				if tick == nil {
					break
				}
				tick()
			}
			vals = append(vals, v)
			continue
		}
		if op.Kind == kWaitL {
			want := s[i+1].Addr
			i++
			for n := 0; ; n++ {
				d := make([]byte, 4)
				mmio.Read(a, uint64(op.Addr), d)
				if binary.LittleEndian.Uint32(d)&op.Val == want {
					break
				}
				if tick == nil || n == 10_000_000 {
					panic(fmt.Sprintf("pcoracle: wait on %#x never satisfied", op.Addr))
				}
				tick()
			}
			continue
		}
		if op.Kind == kWaitB {
			port, pre := uint64(op.Addr&0xffff), uint64(op.Addr>>16)
			mask, val := byte(op.Val), byte(op.Val>>8)
			for n := 0; ; n++ {
				if pre != 0 {
					pio.Write(a, pre, []byte{byte(op.Val >> 16)})
				}
				d := []byte{0xff}
				pio.Read(a, port, d)
				if d[0]&mask == val {
					break
				}
				if tick == nil || n == 10_000_000 {
					panic(fmt.Sprintf("pcoracle: wait on port %#x never satisfied", port))
				}
				tick()
			}
			continue
		}
		var size int
		b := mmio
		switch op.Kind {
		case kOutB, kInB:
			size, b = 1, pio
		case kOutW, kInW:
			size, b = 2, pio
		case kOutL, kInL:
			size, b = 4, pio
		default:
			size = 4
		}
		buf := make([]byte, 4)
		if isRead(op.Kind) {
			if !b.Read(a, uint64(op.Addr), buf[:size]) {
				for i := range buf[:size] {
					buf[i] = 0xff
				}
			}
			vals = append(vals, binary.LittleEndian.Uint32(buf))
			continue
		}
		binary.LittleEndian.PutUint32(buf, op.Val)
		b.Write(a, uint64(op.Addr), buf[:size])
	}
	return vals
}

// Compare runs s on both sides and reports every read that differs, with its note.
func Compare(t *testing.T, s Script, mmio, pio *bus.Bus) {
	t.Helper()
	CompareTicks(t, s, mmio, pio, nil)
}

// CompareTicks is Compare with a tick function for WaitB (see ModelTicks).
func CompareTicks(t *testing.T, s Script, mmio, pio *bus.Bus, tick func()) {
	t.Helper()
	CompareCPU(t, s, mmio, pio, tick, nil)
}

// CompareCPU is CompareTicks with the model's CPU for Intr.
func CompareCPU(t *testing.T, s Script, mmio, pio *bus.Bus, tick func(), cpu CPU) {
	t.Helper()
	want := QEMU(t, s)
	got := ModelCPU(s, mmio, pio, tick, cpu)
	report(t, s, got, want)
}

// CompareTicksTimed is CompareTicks for scripts whose QEMU reads move with real time
// (live counters compared under a mask): QEMU's guest can be descheduled on a loaded
// host for longer than the mask allows, so a QEMU run that differs is repeated, up to
// three runs. The model runs once on its fake clock; a real difference differs in every
// run and is reported from the last.
func CompareTicksTimed(t *testing.T, s Script, mmio, pio *bus.Bus, tick func()) {
	t.Helper()
	got := ModelTicks(s, mmio, pio, tick)
	var want []uint32
	for run := 1; ; run++ {
		want = QEMU(t, s)
		if diffs(s, got, want) == 0 || run == 3 {
			break
		}
		t.Logf("QEMU run %d differs in %d reads: running it again", run, diffs(s, got, want))
	}
	report(t, s, got, want)
}

// diffs counts the compared reads where got and want differ under their masks.
func diffs(s Script, got, want []uint32) int {
	i, bad := 0, 0
	for _, op := range s {
		if !isRead(op.Kind) {
			continue
		}
		m := op.Mask
		if m == 0 {
			m = ^uint32(0)
		}
		if !op.Ignore && want[i]&m != got[i]&m {
			bad++
		}
		i++
	}
	return bad
}

// report fails t with every compared read that differs, with its note.
func report(t *testing.T, s Script, got, want []uint32) {
	t.Helper()
	i, bad, cmp := 0, 0, 0
	for n, op := range s {
		if !isRead(op.Kind) {
			continue
		}
		if !op.Ignore {
			cmp++
		}
		m := op.Mask
		if m == 0 {
			m = ^uint32(0)
		}
		if !op.Ignore && want[i]&m != got[i]&m {
			t.Errorf("op %d (%s, %#x): gemu %#x, QEMU %#x (mask %#x)", n, op.Note, op.Addr, got[i], want[i], m)
			bad++
		}
		i++
	}
	t.Logf("%d reads compared with QEMU, %d differ", cmp, bad)
}

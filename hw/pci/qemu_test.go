package pci

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"gemu/hw/bus"
)

// QEMU is the oracle for what this package models identically: the host bridges of
// its pc and virt boards, and the generic BAR and header register semantics (checked
// on a twin of QEMU's pci-testdev, whose BARs are a 4 KiB 32-bit memory BAR, a
// 256-byte I/O BAR and, with membar=, a 64-bit prefetchable one). Both sides run the
// same script of configuration accesses through qtest; every read must agree.

type cfgOp struct {
	write bool
	reg   uint32
	n     int
	val   uint32
}

// script sizes, programs and clears every header dword, with byte and word accesses
// to the command, status and interrupt registers.
func script() []cfgOp {
	var ops []cfgOp
	for reg := uint32(0); reg < 0x40; reg += 4 {
		ops = append(ops, cfgOp{reg: reg, n: 4})
		for _, v := range []uint32{0xffffffff, 0x12345678, 0x8765_4321, 0} {
			ops = append(ops, cfgOp{write: true, reg: reg, n: 4, val: v}, cfgOp{reg: reg, n: 4})
		}
	}
	for _, reg := range []uint32{RegCommand, RegCommand + 1, RegStatus, RegStatus + 1, RegIntLine, RegIntPin, 0x0d} {
		ops = append(ops, cfgOp{write: true, reg: reg, n: 1, val: 0xff}, cfgOp{reg: reg &^ 1, n: 2}, cfgOp{reg: reg, n: 1})
	}
	ops = append(ops, cfgOp{write: true, reg: RegCommand, n: 2, val: 0xffff}, cfgOp{reg: RegCommand, n: 4},
		cfgOp{write: true, reg: RegCommand, n: 2, val: 0}, cfgOp{reg: RegCommand, n: 4})
	return ops
}

// runQEMU runs ops against function dev.0 of QEMU's board through qtest (CF8/CFC on
// pc, the high ECAM window on virt) and returns the values read.
func runQEMU(t *testing.T, binary string, args []string, dev uint32, ecam uint64, ops []cfgOp) []uint32 {
	path, err := exec.LookPath(binary)
	if err != nil {
		t.Skipf("%s not installed: no oracle", binary)
	}
	var in bytes.Buffer
	sfx := map[int]string{1: "b", 2: "w", 4: "l"}
	for _, o := range ops {
		if ecam != 0 {
			a := ecam + uint64(dev<<15|o.reg)
			if o.write {
				fmt.Fprintf(&in, "write%s 0x%x 0x%x\n", sfx[o.n], a, o.val&(1<<(8*o.n)-1))
			} else {
				fmt.Fprintf(&in, "read%s 0x%x\n", sfx[o.n], a)
			}
			continue
		}
		fmt.Fprintf(&in, "outl 0xcf8 0x%x\n", 1<<31|dev<<11|o.reg&0xfc)
		p := 0xcfc + o.reg&3
		if o.write {
			fmt.Fprintf(&in, "out%s 0x%x 0x%x\n", sfx[o.n], p, o.val&(1<<(8*o.n)-1))
		} else {
			fmt.Fprintf(&in, "in%s 0x%x\n", sfx[o.n], p)
		}
	}
	ncmds := strings.Count(in.String(), "\n")
	cmd := exec.Command(path, append([]string{"-qtest", "stdio", "-display", "none", "-nodefaults"}, args...)...)
	cmd.Stdin = &in
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// qtest answers every command with a line "OK" or "OK <value>"; QEMU may stay up
	// after its input ends, so it is killed once every answer is in.
	timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	var vals []uint32
	var transcript strings.Builder
	sc := bufio.NewScanner(stdout)
	for n := 0; n < ncmds && sc.Scan(); {
		transcript.WriteString(sc.Text() + "\n")
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "OK" {
			continue
		}
		n++
		if len(f) == 2 {
			v, err := strconv.ParseUint(f[1], 0, 64)
			if err != nil {
				t.Fatalf("qtest answer %q", sc.Text())
			}
			vals = append(vals, uint32(v))
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	nread := 0
	for _, o := range ops {
		if !o.write {
			nread++
		}
	}
	if len(vals) != nread {
		t.Fatalf("qemu answered %d reads of %d:\n%s", len(vals), nread, transcript.String())
	}
	return vals
}

func runOurs(r *rig, dev uint32, viaECAM bool, ops []cfgOp) []uint32 {
	var vals []uint32
	for _, o := range ops {
		switch {
		case o.write && viaECAM:
			r.ecamWrite(dev, 0, o.reg, o.n, o.val)
		case o.write:
			r.cfgWrite(dev, 0, o.reg, o.n, o.val)
		case viaECAM:
			vals = append(vals, r.ecamRead(dev, 0, o.reg, o.n)&(1<<(8*o.n)-1))
		default:
			vals = append(vals, r.cfgRead(dev, 0, o.reg, o.n)&(1<<(8*o.n)-1))
		}
	}
	return vals
}

func compare(t *testing.T, ops []cfgOp, ours, qemu []uint32) {
	t.Helper()
	i := 0
	bad := 0
	for k, o := range ops {
		if o.write {
			continue
		}
		if ours[i] != qemu[i] {
			prev := "start"
			if k > 0 && ops[k-1].write {
				prev = fmt.Sprintf("after writing %#x", ops[k-1].val)
			}
			t.Errorf("reg %#x width %d (%s): ours %#x, QEMU %#x", o.reg, o.n, prev, ours[i], qemu[i])
			if bad++; bad > 10 {
				t.FailNow()
			}
		}
		i++
	}
}

func TestHostBridge440FXAgainstQEMU(t *testing.T) {
	ops := script()
	qemu := runQEMU(t, "qemu-system-x86_64", []string{"-M", "pc"}, 0, 0, ops)
	r := newRig(t)
	must(t, r.pci.Add(0, 0, NewHostBridge()))
	compare(t, ops, runOurs(r, 0, false, ops), qemu)
}

func TestPCIeHostBridgeAgainstQEMU(t *testing.T) {
	ops := script()
	// QEMU 7.2 virt's high ECAM window (256 buses) is at 0x40_1000_0000.
	qemu := runQEMU(t, "qemu-system-aarch64", []string{"-M", "virt"}, 0, 0x40_1000_0000, ops)
	r := newRig(t)
	must(t, r.pci.Add(0, 0, NewPCIeHostBridge()))
	compare(t, ops, runOurs(r, 0, true, ops), qemu)
}

// testdevTwin is QEMU's pci-testdev,membar=1M as this package builds it.
func testdevTwin(t *testing.T) *ConfigSpace {
	c := NewConfigSpace(0x1b36, 0x0005, 0x00ff00, 0) // PCI_CLASS_OTHERS
	c.SetSubsystem(0x1af4, 0x1100)
	must(t, c.AddBAR(0, BARMem32, 0x1000, &regs{}))
	must(t, c.AddBAR(1, BARIO, 0x100, &regs{}))
	must(t, c.AddBAR(2, BARMem64|BARPrefetch, 1<<20, &regs{}))
	return c
}

func TestBARRegistersAgainstQEMU(t *testing.T) {
	ops := script()
	// Program the BARs at real addresses as firmware would, then enable decoding.
	ops = append(ops,
		cfgOp{write: true, reg: 0x10, n: 4, val: 0xfebf_1000}, cfgOp{write: true, reg: 0x14, n: 4, val: 0xc100},
		cfgOp{write: true, reg: 0x18, n: 4, val: 0xfe00_0000}, cfgOp{write: true, reg: 0x1c, n: 4, val: 0},
		cfgOp{write: true, reg: RegCommand, n: 2, val: CmdIO | CmdMemory},
		cfgOp{reg: 0x10, n: 4}, cfgOp{reg: 0x14, n: 4}, cfgOp{reg: 0x18, n: 4}, cfgOp{reg: 0x1c, n: 4}, cfgOp{reg: RegCommand, n: 2},
		cfgOp{write: true, reg: 0x16, n: 2, val: 0xffff}, cfgOp{reg: 0x14, n: 4}, // upper half of the I/O BAR
		cfgOp{write: true, reg: 0x1b, n: 1, val: 0x12}, cfgOp{reg: 0x18, n: 4}) // top byte of the 64-bit BAR's low dword
	qemu := runQEMU(t, "qemu-system-x86_64", []string{"-M", "pc", "-device", "pci-testdev,addr=3,membar=1M"}, 3, 0, ops)
	r := newRig(t)
	c := testdevTwin(t)
	must(t, r.pci.Add(3, 0, c))
	compare(t, ops, runOurs(r, 3, false, ops), qemu)
	// And our side has the BARs where the registers say, on the buses; the I/O BAR,
	// whose upper half the script set, ends past 64 KiB and does not decode.
	if _, ok := c.BAR(1); ok {
		t.Error("I/O BAR at 0xffffc100 decodes")
	}
	r.cfgWrite(3, 0, 0x14, 4, 0xc100)
	for i, want := range map[int]uint64{0: 0xfebf_1000, 1: 0xc100, 2: 0x1200_0000} {
		if base, ok := c.BAR(i); !ok || base != want {
			t.Errorf("BAR %d at %#x (mapped %v), registers say %#x", i, base, ok, want)
		}
	}
	var d [4]byte
	if !r.pio.Read(bus.Host, 0xc1fc, d[:]) {
		t.Error("I/O BAR does not decode at 0xc100")
	}
}

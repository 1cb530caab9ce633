package armtest

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/memory"
	arm "gemu/target-arm"
)

// System-level (EL1) differential tests: a bare-metal program linked at SysBase runs at
// EL1 with the MMU off on qemu-system-aarch64 -M virt and on gemu's CPU with RAM at
// 0x4000_0000 and a transmit-only PL011 data register at 0x0900_0000. It prints its
// results as text on the UART and powers off with PSCI SYSTEM_OFF (HVC); the two
// transcripts must be identical.

// SysBase is the link address of system test programs.
const SysBase = 0x40200000

const (
	sysRAMBase = 0x40000000
	sysRAMSize = 128 << 20
	uartBase   = 0x09000000
	psciOff    = 0x84000008
)

// sysLib is assembled after every system test program: puthex prints a space and x0 in
// hex on the UART (clobbers x1-x3).
const sysLib = `
	.text
	.balign 4
puthex:
	ldr x1, =0x09000000
	mov w2, #' '
	str w2, [x1]
	mov x3, #60
1:	lsr x2, x0, x3
	and x2, x2, #15
	cmp x2, #10
	b.lt 2f
	add x2, x2, #('a' - 10 - '0')
2:	add x2, x2, #'0'
	str w2, [x1]
	subs x3, x3, #4
	b.ge 1b
	ret
	.ltorg
`

// BuildSys assembles and links a bare-metal program at SysBase, followed by sysLib.
func BuildSys(t testing.TB, dir, src string) string {
	t.Helper()
	gcc, err := exec.LookPath("aarch64-linux-gnu-gcc")
	if err != nil {
		t.Skip("aarch64-linux-gnu-gcc not installed (apt-get install gcc-aarch64-linux-gnu)")
	}
	s := filepath.Join(dir, "sys.S")
	bin := filepath.Join(dir, "sys.elf")
	if err := os.WriteFile(s, []byte(src+sysLib), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(gcc, "-static", "-nostdlib", "-no-pie", "-march=armv8-a+crc",
		"-Wl,-N", fmt.Sprintf("-Wl,-Ttext=%#x", SysBase), "-Wl,--build-id=none", "-o", bin, s).CombinedOutput()
	if err != nil {
		t.Fatalf("assembling system test: %v\n%s", err, out)
	}
	return bin
}

// RunSysQEMU runs the program on qemu-system-aarch64 and returns its UART output.
func RunSysQEMU(t testing.TB, bin string) string {
	t.Helper()
	return runSysQEMU(t, bin, 1)
}

// runSysQEMUSMP runs the program on a two-CPU qemu-system-aarch64.
func runSysQEMUSMP(t testing.TB, bin string) string {
	t.Helper()
	return runSysQEMU(t, bin, 2)
}

func runSysQEMU(t testing.TB, bin string, smp int) string {
	t.Helper()
	return runSysQEMUCPU(t, bin, smp, "cortex-a57")
}

// runSysQEMUCPU runs the program on qemu-system-aarch64 -cpu cpu with smp CPUs.
func runSysQEMUCPU(t testing.TB, bin string, smp int, cpu string) string {
	t.Helper()
	q, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Skip("qemu-system-aarch64 not installed (apt-get install qemu-system-arm)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, q, "-M", "virt", "-cpu", cpu, "-m", "128", "-smp", fmt.Sprint(smp),
		"-display", "none", "-monitor", "none", "-serial", "stdio", "-kernel", bin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("qemu-system-aarch64: %v\n%s\noutput so far:\n%s", err, stderr.Bytes(), stdout.Bytes())
	}
	return stdout.String()
}

// uart is a transmit-only PL011: data-register writes are collected, the flag
// register reads as "transmit FIFO empty".
type uart struct {
	mu  sync.Mutex
	out bytes.Buffer
}

func (u *uart) Read(_ bus.Access, off uint64, data []byte) {
	clear(data)
	if off == 0x18 && len(data) > 0 {
		data[0] = 0x90 // TXFE | RXFE
	}
}

func (u *uart) Write(_ bus.Access, off uint64, data []byte) {
	if off == 0 && len(data) > 0 {
		u.mu.Lock()
		u.out.WriteByte(data[0])
		u.mu.Unlock()
	}
}

// RunSysGemu runs the program on gemu's CPU and returns its UART output.
func RunSysGemu(t testing.TB, bin string) string {
	t.Helper()
	out, err := runSysGemu(bin, 60*time.Second, nil)
	if err != nil {
		t.Fatalf("gemu: %v\noutput so far:\n%s", err, out)
	}
	return out
}

// runSysGemu runs a system test program on one vCPU; tweak, if non-nil, may adjust the
// CPU's configuration (for example to wire the timer outputs), getting the CPU through
// cpu.
func runSysGemu(bin string, timeout time.Duration, tweak func(cfg *arm.Config, cpu func() *arm.CPU)) (string, error) {
	return runSysGemuSMP(bin, 1, timeout, tweak)
}

// PSCI function IDs the system runner implements.
const (
	psciCPUOn64 = 0xc4000003
	psciSuccess = 0
)

// runSysGemuSMP runs a system test program on n vCPUs, vCPU 0 starting at the entry and
// the others powered off until PSCI CPU_ON.
func runSysGemuSMP(bin string, n int, timeout time.Duration, tweak func(cfg *arm.Config, cpu func() *arm.CPU)) (string, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return "", err
	}
	defer f.Close()
	ram := memory.New()
	if _, err := ram.Add("ram", sysRAMBase, sysRAMSize); err != nil {
		return "", err
	}
	defer ram.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Filesz == 0 {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			return "", err
		}
		if err := ram.WriteAt(data, p.Paddr); err != nil {
			return "", err
		}
	}
	mmio := bus.New()
	u := &uart{}
	if err := mmio.Insert(u, "pl011", uartBase, 0x1000); err != nil {
		return "", err
	}
	stop := make(chan struct{})
	var once sync.Once
	var offMu sync.Mutex
	off := false
	cpus := make([]*arm.CPU, n)
	for i := range cpus {
		cfg := arm.Config{ID: i, RAM: ram, MMIO: mmio, HVC: func(c *arm.CPU) {
			switch c.X(0) {
			case psciOff:
				offMu.Lock()
				off = true
				offMu.Unlock()
				once.Do(func() { close(stop) })
			case psciCPUOn64:
				t := c.X(1) & 0xff
				if t >= uint64(len(cpus)) {
					c.SetX(0, ^uint64(1)) // INVALID_PARAMETERS
					return
				}
				if !cpus[t].Start(c.X(2), c.X(3)) {
					c.SetX(0, ^uint64(3)) // ALREADY_ON
					return
				}
				c.SetX(0, psciSuccess)
			default:
				c.SetX(0, ^uint64(0)) // NOT_SUPPORTED
			}
		}}
		if tweak != nil {
			tweak(&cfg, func() *arm.CPU { return cpus[i] })
		}
		cpus[i] = arm.New(cfg)
		defer cpus[i].Close()
	}
	cpus[0].Reset(f.Entry, 0)
	done := make(chan error, n)
	for _, c := range cpus {
		go func() { done <- c.Run(stop) }()
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for range cpus {
		select {
		case e := <-done:
			if e != nil && err == nil {
				err = e
			}
			once.Do(func() { close(stop) })
		case <-timer.C:
			once.Do(func() { close(stop) })
			if err == nil {
				err = errors.New("timed out")
			}
			<-done
		}
	}
	u.mu.Lock()
	out := u.out.String()
	u.mu.Unlock()
	offMu.Lock()
	defer offMu.Unlock()
	if err == nil && !off {
		err = errors.New("program stopped without PSCI SYSTEM_OFF")
	}
	return out, err
}

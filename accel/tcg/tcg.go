// Package tcg owns the userspace engine behind accel's interface: a VM whose vCPUs
// are the board's CPUs (accel.Target: target-x86's or target-arm's vCPU on gemu's
// translator) and whose interrupt lines and MSIs go to the board's userspace
// interrupt controllers (accel.IRQChip: hw/intc/pcirq on the PC). It owns the vCPU
// goroutines and their lifecycle — created → running ⇄ paused → exited — with Run and
// Stop behaving as accel/kvm's: the first Stop reason wins, Stop may come from any
// goroutine including a device callback on a vCPU, and Run returns only when no vCPU
// executes and no vCPU's device callback is in flight.
//
// It must not know about any ISA, device or board, nor about accel/kvm.
package tcg

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"gemu/accel"
	"gemu/hw/bus"
	"gemu/hw/memory"
	x86 "gemu/target-x86"
)

// MaxCPUs is the most vCPUs a VM may have.
const MaxCPUs = 255

// Accel is the "tcg" accelerator for the CLI's -accel choice.
var Accel accel.Accelerator = accelerator{}

type accelerator struct{}

func (accelerator) Name() string     { return "tcg" }
func (accelerator) Available() error { return nil }
func (accelerator) NewX86(cfg accel.Config) (accel.X86VM, error) {
	return New(cfg)
}

// VM is one guest run in userspace. It implements accel.X86VM, accel.MSI,
// accel.Pauser and accel.Chipset.
type VM struct {
	cpus []accel.CPU
	chip accel.IRQChip
	ram  []*memory.Slot

	stopping atomic.Bool
	mu       sync.Mutex // guards reason, err and the pause state
	reason   accel.ExitReason
	err      error
	pause    bool
	parked   int        // vCPU goroutines parked by a pause
	running  int        // vCPU goroutines of the Run in progress
	live     []bool     // vCPU i's goroutine is in the Run in progress
	cond     *sync.Cond // signals parked/running changes and resume/stop
	life     sync.Mutex // orders Run's start against Close
	ran      bool
	closed   bool
	threads  sync.WaitGroup
}

var (
	_ accel.X86VM   = (*VM)(nil)
	_ accel.MSI     = (*VM)(nil)
	_ accel.Pauser  = (*VM)(nil)
	_ accel.Chipset = (*VM)(nil)
)

// New creates the VM and its vCPUs (cfg.Target.NewCPU for 0..CPUs-1).
func New(cfg accel.Config) (*VM, error) {
	if cfg.CPUs < 1 || cfg.CPUs > MaxCPUs {
		return nil, fmt.Errorf("tcg: %d vCPUs requested; gemu supports 1 to %d", cfg.CPUs, MaxCPUs)
	}
	if cfg.Target == nil {
		return nil, errors.New("tcg: the board gave no vCPU target (accel.Config.Target)")
	}
	if cfg.IRQChip == nil {
		return nil, errors.New("tcg: the board gave no interrupt controllers (accel.Config.IRQChip)")
	}
	v := &VM{chip: cfg.IRQChip}
	v.cond = sync.NewCond(&v.mu)
	for i := 0; i < cfg.CPUs; i++ {
		c, err := cfg.Target.NewCPU(i)
		if err != nil {
			return nil, fmt.Errorf("tcg: vCPU %d: %w", i, err)
		}
		if c == nil {
			return nil, fmt.Errorf("tcg: vCPU %d: the target returned no CPU", i)
		}
		v.cpus = append(v.cpus, c)
	}
	return v, nil
}

// InEngineChipset reports false: the board emulates the interrupt controllers.
func (v *VM) InEngineChipset() bool { return false }

// AddRAM records a RAM slot. The vCPUs reach RAM through the board's hw/memory.RAM
// (their softmmu maps it); the VM checks that slots do not overlap.
func (v *VM) AddRAM(s *memory.Slot) error {
	for _, o := range v.ram {
		if s.GPA < o.End() && o.GPA < s.End() {
			return fmt.Errorf("tcg: RAM slot [%#x, %#x) overlaps [%#x, %#x)", s.GPA, s.End(), o.GPA, o.End())
		}
	}
	v.ram = append(v.ram, s)
	sort.Slice(v.ram, func(i, j int) bool { return v.ram[i].GPA < v.ram[j].GPA })
	return nil
}

// RAM returns the slots added, in address order.
func (v *VM) RAM() []*memory.Slot { return v.ram }

// IRQ returns the board's line for gsi.
func (v *VM) IRQ(gsi uint32) bus.IRQ { return v.chip.IRQ(gsi) }

// SignalMSI delivers an MSI through the board's interrupt controllers.
func (v *VM) SignalMSI(addr uint64, data uint32) error {
	m, ok := v.chip.(accel.MSI)
	if !ok {
		return errors.New("tcg: the board's interrupt controllers take no MSIs")
	}
	return m.SignalMSI(addr, data)
}

// NumCPUs returns the number of vCPUs.
func (v *VM) NumCPUs() int { return len(v.cpus) }

// CPU returns vCPU i (for the board's monitor and error reports).
func (v *VM) CPU(i int) accel.CPU { return v.cpus[i] }

// SetBootState loads the loader's registers into vCPU 0, which must implement
// accel.X86BootCPU.
func (v *VM) SetBootState(bs *x86.BootState) error {
	b, ok := v.cpus[0].(accel.X86BootCPU)
	if !ok {
		return fmt.Errorf("tcg: vCPU 0 (%T) takes no x86 boot state", v.cpus[0])
	}
	return b.SetBootState(bs)
}

// Stop ends the run with reason (the first reason wins) and kicks every vCPU.
func (v *VM) Stop(reason accel.ExitReason) {
	v.mu.Lock()
	if v.reason == 0 {
		v.reason = reason
	}
	v.stopping.Store(true)
	v.cond.Broadcast()
	v.mu.Unlock()
	for _, c := range v.cpus {
		c.Kick()
	}
}

func (v *VM) fail(err error) {
	v.mu.Lock()
	if v.reason == 0 {
		v.reason, v.err = accel.Error, err
	}
	v.mu.Unlock()
	v.Stop(accel.Error)
}

// Run runs every vCPU on its own goroutine until the guest or Stop ends the run.
func (v *VM) Run(mmio, pio *bus.Bus) (accel.ExitReason, error) {
	v.life.Lock()
	if v.ran || v.closed {
		v.life.Unlock()
		return accel.Error, errors.New("tcg: Run called twice on one VM, or after Close")
	}
	v.ran = true
	v.threads.Add(len(v.cpus))
	v.mu.Lock()
	v.running = len(v.cpus)
	v.live = make([]bool, len(v.cpus))
	for i := range v.live {
		v.live[i] = true
	}
	v.mu.Unlock()
	v.life.Unlock()
	if mmio == nil {
		mmio = bus.New()
	}
	if pio == nil {
		pio = bus.New()
	}
	io := accel.IO{MMIO: mmio, PIO: pio}
	for i, c := range v.cpus {
		go func() {
			defer func() {
				v.mu.Lock()
				v.running--
				v.live[i] = false
				v.cond.Broadcast()
				v.mu.Unlock()
				v.threads.Done()
			}()
			v.loop(i, c, io)
		}()
	}
	v.threads.Wait()
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.reason, v.err
}

// loop is one vCPU goroutine: CPU.Run until the VM stops, parking while paused.
func (v *VM) loop(i int, c accel.CPU, io accel.IO) {
	for {
		v.mu.Lock()
		for v.pause && !v.stopping.Load() {
			v.parked++
			v.cond.Broadcast()
			v.cond.Wait()
			v.parked--
		}
		v.mu.Unlock()
		if v.stopping.Load() {
			return
		}
		r, err := c.Run(io)
		switch r {
		case accel.Stopped:
			continue // kicked: Stop or Pause, checked at the top
		case accel.Error:
			if err == nil {
				err = errors.New("unknown error")
			}
			v.fail(fmt.Errorf("tcg: vCPU %d: %w", i, err))
			return
		case accel.PowerOff, accel.Reset, accel.Shutdown:
			v.Stop(r)
			return
		default:
			v.fail(fmt.Errorf("tcg: vCPU %d returned %v", i, r))
			return
		}
	}
}

// Pause stops every vCPU at an instruction boundary and returns once all are parked
// (or the run ended). Before Run it makes the vCPUs start paused.
func (v *VM) Pause() error {
	v.mu.Lock()
	if v.pause {
		v.mu.Unlock()
		return nil
	}
	v.pause = true
	v.mu.Unlock()
	kicked := 0
	for _, c := range v.cpus {
		if p, ok := c.(accel.ParkingCPU); ok {
			p.Park()
		} else {
			c.Kick()
			kicked++
		}
	}
	for _, c := range v.cpus {
		if p, ok := c.(accel.ParkingCPU); ok {
			for !p.WaitParked(100*time.Millisecond) && !v.stopping.Load() {
			}
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	// Kicked CPUs return from Run and park in loop; parking CPUs stay in Run.
	for v.running > 0 && v.parked < v.kickable() && !v.stopping.Load() {
		v.cond.Wait()
	}
	return nil
}

// kickable is the number of running vCPU goroutines whose CPU pauses by returning
// from Run (not a ParkingCPU); called with v.mu held.
func (v *VM) kickable() int {
	n := 0
	for i, c := range v.cpus {
		if _, ok := c.(accel.ParkingCPU); !ok && v.live[i] {
			n++
		}
	}
	return n
}

// Resume lets paused vCPUs run again.
func (v *VM) Resume() {
	v.mu.Lock()
	v.pause = false
	v.cond.Broadcast()
	v.mu.Unlock()
	for _, c := range v.cpus {
		if p, ok := c.(accel.ParkingCPU); ok {
			p.Unpark()
		}
	}
}

// Close stops a Run in progress (reason Stopped unless one was given) and waits for
// it. The CPUs are the board's to release.
func (v *VM) Close() error {
	v.life.Lock()
	if v.closed {
		v.life.Unlock()
		return nil
	}
	v.closed = true
	ran := v.ran
	v.life.Unlock()
	if ran {
		v.Stop(accel.Stopped)
		v.threads.Wait()
	}
	return nil
}

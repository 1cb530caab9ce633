package pc

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"gemu/accel"
	acceltcg "gemu/accel/tcg"
	"gemu/hw/bus"
	"gemu/hw/intc/apic"
	"gemu/hw/intc/pcirq"
	"gemu/hw/timer"
	x86 "gemu/target-x86"
)

// HPETBase is the HPET's MMIO block (userspace chipset only; KVM's PC has none).
const (
	HPETBase = 0xfed0_0000
	hpetID   = 0x8086a201 // hw/timer's 3-timer HPET capabilities, low half
	ioapicID = 0          // the MADT's IOAPIC id (hw/acpi)
	pitPort  = 0x40
	spkPort  = 0x61
)

// TCGConfig adds what the translator needs beyond Config.
type TCGConfig struct {
	Trace      interface{ Write([]byte) (int, error) } // -d output; nil: none
	TraceFlags x86.TraceFlags
}

// tcgBoard is the board's side of the userspace engine: the shared translator
// engine, the vCPUs and their event pumps.
type tcgBoard struct {
	eng  *x86.Engine
	cpus []*tcgCPU
	pit  *timer.PIT
	done chan struct{}
	wg   sync.WaitGroup
}

// NewTCG builds the board on gemu's own translator (accel/tcg): the board creates the
// userspace chipset (hw/intc/pcirq's LAPICs, IOAPIC and 8259s, hw/timer's PIT and
// HPET, announced in ACPI) and one target-x86 vCPU per CPU wired to its LAPIC.
func NewTCG(c Config, tc TCGConfig) (*Machine, error) {
	m, err := newBoard(c)
	if err != nil {
		return nil, err
	}
	clk := timer.Host()
	chip := pcirq.New(c.CPUs, ioapicID, clk)
	m.chip = chip
	m.hpet = timer.NewHPET(clk, func(gsi int) bus.IRQ { return chip.IRQ(uint32(gsi)) })
	tb := &tcgBoard{eng: x86.NewEngine(m.RAM), done: make(chan struct{})}
	m.tcg = tb
	tb.pit = timer.NewPIT(clk, m.hpet.PITInput())
	fail := func(err error) (*Machine, error) {
		tb.close()
		m.hpet.Stop()
		m.RAM.Close()
		return nil, err
	}
	target := accel.TargetFunc(func(i int) (accel.CPU, error) {
		return tb.newCPU(i, m, chip, tc), nil
	})
	vm, err := acceltcg.New(accel.Config{CPUs: c.CPUs, Target: target, IRQChip: chip})
	if err != nil {
		return fail(err)
	}
	if err := chip.Map(m.MMIO, m.PIO); err != nil {
		return fail(err)
	}
	for _, d := range []struct {
		b          *bus.Bus
		dev        bus.Device
		name       string
		base, size uint64
	}{
		{m.PIO, tb.pit, "pit", pitPort, 4},
		{m.PIO, tb.pit.Speaker(), "pit-speaker", spkPort, 1},
		{m.MMIO, m.hpet, "hpet", HPETBase, timer.HPETSize},
	} {
		if err := d.b.Insert(d.dev, d.name, d.base, d.size); err != nil {
			return fail(err)
		}
	}
	if err := m.build(vm, c); err != nil {
		return fail(err)
	}
	m.OnRelease(func() {
		tb.close()
		m.hpet.Stop()
	})
	return m, nil
}

// Chipset returns the userspace interrupt controllers under accel/tcg (nil under KVM).
func (m *Machine) Chipset() *pcirq.Chipset { return m.chip }

func (tb *tcgBoard) close() {
	select {
	case <-tb.done:
		return
	default:
	}
	close(tb.done)
	tb.wg.Wait()
	if tb.pit != nil {
		tb.pit.Stop()
	}
	// The VM is closed first (Machine.Close's contract): no vCPU runs any more.
	for _, c := range tb.cpus {
		c.cpu.Close()
	}
	tb.eng.Close() // the translated code
}

// tcgCPU adapts a target-x86 vCPU to accel.CPU (accel.ParkingCPU, accel.X86BootCPU)
// and connects it to its local APIC.
type tcgCPU struct {
	cpu  *x86.CPU
	apic *apic.APIC
	eng  *x86.Engine
	shut atomic.Bool
	wake chan struct{} // the APIC's kick: events or the pending vector changed
}

func (tb *tcgBoard) newCPU(i int, m *Machine, chip *pcirq.Chipset, tc TCGConfig) *tcgCPU {
	t := &tcgCPU{apic: chip.APIC.CPU(i), eng: tb.eng, wake: make(chan struct{}, 1)}
	cfg := x86.Config{ID: i, RAM: m.RAM, Engine: tb.eng, MMIO: m.MMIO, IO: m.PIO,
		Ack: t.ack, MSR: t, Shutdown: func(int) { t.shut.Store(true); t.cpu.Stop() }}
	if tc.Trace != nil {
		cfg.Trace, cfg.TraceFlags = tc.Trace, tc.TraceFlags
	}
	t.cpu = x86.New(cfg)
	t.apic.SetKick(t.kick)
	tb.cpus = append(tb.cpus, t)
	tb.wg.Add(1)
	go func() {
		defer tb.wg.Done()
		for {
			select {
			case <-tb.done:
				return
			case <-t.wake:
				t.pump()
			}
		}
	}()
	return t
}

// kick asks the vCPU's event goroutine to pump the APIC's events.
func (t *tcgCPU) kick() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// pump takes the APIC's latched events to the vCPU and sets its INTR line to whether
// a vector is pending. It runs on the vCPU's event goroutine, outside the APIC's locks.
func (t *tcgCPU) pump() {
	ev, sipi := t.apic.TakeEvents()
	if ev&apic.EventINIT != 0 {
		t.apic.InitReset()
		t.cpu.INIT()
	}
	if ev&apic.EventSIPI != 0 {
		t.cpu.StartupIPI(sipi)
	}
	if ev&(apic.EventNMI|apic.EventSMI) != 0 {
		t.cpu.NMI()
	}
	t.cpu.SetIRQ(t.apic.HighestPending() >= 0)
}

// ack is the vCPU's interrupt acknowledge: the LAPIC's highest pending vector, or an
// ExtINT acknowledged at the 8259 through it.
func (t *tcgCPU) ack(int) (uint8, bool) {
	t.cpu.SetIRQ(false)
	if t.apic.HighestPending() < 0 {
		return 0, false
	}
	v := t.apic.Acknowledge()
	if t.apic.HighestPending() >= 0 {
		t.cpu.SetIRQ(true)
	}
	if v < 0 {
		return 0, false
	}
	return uint8(v), true
}

// MSRs the vCPU leaves to the board: IA32_APIC_BASE (kept in step with the LAPIC),
// IA32_TSC_DEADLINE and the x2APIC range.
const (
	msrAPICBase    = 0x1b
	msrTSCDeadline = 0x6e0
	tscHz          = 1_000_000_000 // target-x86's TSC counts guest nanoseconds
)

func (t *tcgCPU) ReadMSR(_ int, msr uint32) (uint64, bool) {
	switch {
	case msr == msrTSCDeadline:
		return t.apic.TSCDeadline(), true
	case msr >= 0x800 && msr <= 0x8ff:
		return t.apic.ReadMSR(msr)
	}
	return 0, false
}

func (t *tcgCPU) WriteMSR(_ int, msr uint32, v uint64) bool {
	switch {
	case msr == msrAPICBase:
		return t.apic.SetBase(v) == nil
	case msr == msrTSCDeadline:
		t.apic.WriteTSCDeadline(v, uint64(t.eng.GuestTime().Nanoseconds()), tscHz)
		return true
	case msr >= 0x800 && msr <= 0x8ff:
		return t.apic.WriteMSR(msr, v)
	}
	return false
}

// Run implements accel.CPU.
func (t *tcgCPU) Run(io accel.IO) (accel.ExitReason, error) {
	t.cpu.SetBuses(io.MMIO, io.PIO)
	if err := t.cpu.Run(nil); err != nil {
		return accel.Error, err
	}
	if t.shut.Load() {
		return accel.Shutdown, nil
	}
	return accel.Stopped, nil
}

// Kick implements accel.CPU: target-x86's Stop is sticky (accel.ParkingCPU).
func (t *tcgCPU) Kick() { t.cpu.Stop() }

func (t *tcgCPU) Park()                                 { t.cpu.Park() }
func (t *tcgCPU) Unpark()                               { t.cpu.Unpark() }
func (t *tcgCPU) WaitParked(timeout time.Duration) bool { return t.cpu.WaitParked(timeout) }

// SetBootState implements accel.X86BootCPU.
func (t *tcgCPU) SetBootState(bs *x86.BootState) error {
	if bs == nil {
		return errors.New("pc: no boot state")
	}
	t.cpu.SetBootState(*bs)
	return nil
}

var (
	_ accel.ParkingCPU = (*tcgCPU)(nil)
	_ accel.X86BootCPU = (*tcgCPU)(nil)
	_ x86.MSRHandler   = (*tcgCPU)(nil)
)

package tcg

import (
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gemu/accel"
	"gemu/hw/bus"
	"gemu/hw/intc/apic"
	"gemu/hw/intc/pcirq"
	"gemu/hw/timer"
	x86 "gemu/target-x86"
)

// fakeCPU is a vCPU whose "instructions" are Go functions making bus accesses, with
// x86-like interrupt acceptance through a local APIC: at each instruction boundary it
// takes the highest pending vector and runs handler, and it halts when its program
// ends (unless spin is set), waking on an APIC kick.
type fakeCPU struct {
	idx     int
	prog    []func(io accel.IO) (accel.ExitReason, error)
	spin    bool
	apic    *apic.APIC
	handler func(io accel.IO, vec int)

	kick  chan struct{}
	wake  chan struct{}
	pc    int
	steps atomic.Int64
	inRun atomic.Int32
	mu    sync.Mutex
	got   []int
	boot  *x86.BootState
}

func newFake(idx int) *fakeCPU {
	return &fakeCPU{idx: idx, kick: make(chan struct{}, 1), wake: make(chan struct{}, 1)}
}

func (c *fakeCPU) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *fakeCPU) SetBootState(bs *x86.BootState) error { c.boot = bs; return nil }

func (c *fakeCPU) wakeup() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *fakeCPU) vectors() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.got...)
}

func (c *fakeCPU) Run(io accel.IO) (accel.ExitReason, error) {
	c.inRun.Add(1)
	defer c.inRun.Add(-1)
	for {
		select {
		case <-c.kick:
			return accel.Stopped, nil
		default:
		}
		if c.apic != nil && c.apic.HighestPending() >= 0 {
			v := c.apic.Acknowledge()
			c.mu.Lock()
			c.got = append(c.got, v)
			c.mu.Unlock()
			if c.handler != nil {
				c.handler(io, v)
			}
			continue
		}
		if c.pc < len(c.prog) {
			r, err := c.prog[c.pc](io)
			c.pc++
			c.steps.Add(1)
			if r != 0 {
				return r, err
			}
			continue
		}
		if c.spin {
			c.steps.Add(1)
			continue
		}
		select { // HLT
		case <-c.kick:
			return accel.Stopped, nil
		case <-c.wake:
		}
	}
}

type chipIRQ struct{ lines func(gsi uint32) bus.IRQ }

func (c chipIRQ) IRQ(gsi uint32) bus.IRQ { return c.lines(gsi) }

func newVM(t *testing.T, cpus ...*fakeCPU) *VM {
	t.Helper()
	vm, err := New(accel.Config{
		CPUs:    len(cpus),
		Target:  accel.TargetFunc(func(i int) (accel.CPU, error) { return cpus[i], nil }),
		IRQChip: chipIRQ{func(uint32) bus.IRQ { return bus.NoIRQ }},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	return vm
}

func runAsync(vm *VM, mmio, pio *bus.Bus) chan [2]any {
	done := make(chan [2]any, 1)
	go func() {
		r, err := vm.Run(mmio, pio)
		done <- [2]any{r, err}
	}()
	return done
}

func wait(t *testing.T, done chan [2]any) (accel.ExitReason, error) {
	t.Helper()
	select {
	case d := <-done:
		err, _ := d[1].(error)
		return d[0].(accel.ExitReason), err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	return 0, nil
}

func until(t *testing.T, what string, f func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if f() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestConfigErrors(t *testing.T) {
	if _, err := New(accel.Config{CPUs: 1}); err == nil {
		t.Error("no Target accepted")
	}
	if _, err := New(accel.Config{CPUs: 0, Target: accel.TargetFunc(nil)}); err == nil {
		t.Error("0 CPUs accepted")
	}
	_, err := New(accel.Config{CPUs: 2, IRQChip: chipIRQ{}, Target: accel.TargetFunc(func(i int) (accel.CPU, error) {
		if i == 1 {
			return nil, errors.New("no such model")
		}
		return newFake(i), nil
	})})
	if err == nil || !strings.Contains(err.Error(), "vCPU 1") {
		t.Errorf("target error: %v", err)
	}
	var ch accel.Chipset = &VM{}
	if ch.InEngineChipset() {
		t.Error("tcg claims an in-engine chipset")
	}
}

func TestStopBeforeRun(t *testing.T) {
	c := newFake(0)
	c.spin = true
	vm := newVM(t, c)
	vm.Stop(accel.PowerOff)
	vm.Stop(accel.Reset)
	r, err := vm.Run(nil, nil)
	if r != accel.PowerOff || err != nil {
		t.Fatalf("Run = %v, %v; want power off (the first reason)", r, err)
	}
	if c.steps.Load() != 0 {
		t.Error("a vCPU ran after a Stop given before Run")
	}
	if _, err := vm.Run(nil, nil); err == nil {
		t.Error("second Run accepted")
	}
}

func TestStopFromHostQuiesces(t *testing.T) {
	a, b := newFake(0), newFake(1)
	a.spin, b.spin = true, true
	vm := newVM(t, a, b)
	done := runAsync(vm, nil, nil)
	until(t, "both vCPUs running", func() bool { return a.steps.Load() > 1000 && b.steps.Load() > 1000 })
	vm.Stop(accel.Stopped)
	if r, err := wait(t, done); r != accel.Stopped || err != nil {
		t.Fatalf("Run = %v, %v", r, err)
	}
	if a.inRun.Load() != 0 || b.inRun.Load() != 0 {
		t.Fatal("a vCPU is still inside CPU.Run after VM.Run returned")
	}
	sa, sb := a.steps.Load(), b.steps.Load()
	time.Sleep(10 * time.Millisecond)
	if a.steps.Load() != sa || b.steps.Load() != sb {
		t.Fatal("vCPUs executed after Run returned")
	}
}

// poweroffPort is a device whose write stops the VM from the vCPU's own goroutine, as
// the ACPI PM block's SLP_EN does.
type poweroffPort struct{ vm *VM }

func (p poweroffPort) Read(bus.Access, uint64, []byte) {}
func (p poweroffPort) Write(a bus.Access, _ uint64, _ []byte) {
	p.vm.Stop(accel.PowerOff)
	p.vm.Stop(accel.Reset)
}

func TestStopFromDeviceOnVCPU(t *testing.T) {
	a, b := newFake(0), newFake(1)
	b.spin = true
	vm := newVM(t, a, b)
	pio := bus.New()
	pio.Insert(poweroffPort{vm}, "pm", 0x604, 2)
	a.prog = []func(io accel.IO) (accel.ExitReason, error){
		func(io accel.IO) (accel.ExitReason, error) {
			if !io.PIO.Write(bus.CPUAccess(0), 0x604, []byte{0, 0x20}) {
				t.Error("PIO write not dispatched")
			}
			return 0, nil
		},
	}
	if r, err := wait(t, runAsync(vm, nil, pio)); r != accel.PowerOff || err != nil {
		t.Fatalf("Run = %v, %v", r, err)
	}
}

func TestGuestShutdownAndError(t *testing.T) {
	for _, c := range []struct {
		r   accel.ExitReason
		err error
	}{{accel.Shutdown, nil}, {accel.Error, errors.New("unhandled opcode")}} {
		a, b := newFake(0), newFake(1)
		a.spin = true
		b.prog = []func(accel.IO) (accel.ExitReason, error){
			func(accel.IO) (accel.ExitReason, error) { return 0, nil },
			func(accel.IO) (accel.ExitReason, error) { return c.r, c.err },
		}
		vm := newVM(t, a, b)
		r, err := wait(t, runAsync(vm, nil, nil))
		if r != c.r {
			t.Errorf("Run = %v, want %v", r, c.r)
		}
		if c.err != nil && (err == nil || !strings.Contains(err.Error(), "vCPU 1: unhandled opcode")) {
			t.Errorf("error %v", err)
		}
		if c.err == nil && err != nil {
			t.Errorf("error %v with reason %v", err, r)
		}
	}
}

func TestPauseResume(t *testing.T) {
	a, b := newFake(0), newFake(1)
	a.spin, b.spin = true, true
	vm := newVM(t, a, b)
	done := runAsync(vm, nil, nil)
	until(t, "running", func() bool { return a.steps.Load() > 100 && b.steps.Load() > 100 })
	for round := 0; round < 3; round++ {
		if err := vm.Pause(); err != nil {
			t.Fatal(err)
		}
		if a.inRun.Load() != 0 || b.inRun.Load() != 0 {
			t.Fatal("Pause returned with a vCPU in CPU.Run")
		}
		sa, sb := a.steps.Load(), b.steps.Load()
		time.Sleep(5 * time.Millisecond)
		if a.steps.Load() != sa || b.steps.Load() != sb {
			t.Fatal("vCPUs ran while paused")
		}
		vm.Resume()
		until(t, "resumed", func() bool { return a.steps.Load() > sa+100 && b.steps.Load() > sb+100 })
	}
	vm.Pause()
	vm.Stop(accel.Stopped) // a paused VM stops
	if r, _ := wait(t, done); r != accel.Stopped {
		t.Fatalf("Run = %v", r)
	}
}

func TestBootState(t *testing.T) {
	a := newFake(0)
	vm := newVM(t, a, newFake(1))
	bs := &x86.BootState{}
	if err := vm.SetBootState(bs); err != nil || a.boot != bs {
		t.Fatalf("boot state not at vCPU 0: %v", err)
	}
	type noBoot struct{ accel.CPU } // hides SetBootState
	vm2, err := New(accel.Config{CPUs: 1, IRQChip: chipIRQ{},
		Target: accel.TargetFunc(func(int) (accel.CPU, error) { return noBoot{newFake(0)}, nil })})
	if err != nil {
		t.Fatal(err)
	}
	if err := vm2.SetBootState(bs); err == nil {
		t.Fatal("boot state accepted by a CPU without SetBootState")
	}
}

// levelDev raises a GSI on the host's request and lowers it when the guest writes its
// port, like a level-triggered PCI INTx device with an interrupt-status register.
type levelDev struct{ line bus.IRQ }

func (d levelDev) Read(bus.Access, uint64, []byte)  {}
func (d levelDev) Write(bus.Access, uint64, []byte) { d.line.Set(false) }

// TestIRQRoutingAndMSI runs two fake vCPUs on the PC's userspace chipset: vCPU 0
// programs the IOAPIC and both APICs through the MMIO bus (banked by the access's
// vCPU), a device's level GSI wakes halted vCPU 1, whose handler quiets the device
// and EOIs through its APIC page (which clears the IOAPIC's remote IRR); an MSI
// reaches vCPU 1 through VM.SignalMSI; and a PIT interrupt reaches vCPU 0 through the
// 8259 and LINT0 in ExtINT mode.
func TestIRQRoutingAndMSI(t *testing.T) {
	clk := timer.NewFake()
	chip := pcirq.New(2, 0, clk)
	a, b := newFake(0), newFake(1)
	a.apic, b.apic = chip.APIC.CPU(0), chip.APIC.CPU(1)
	a.apic.SetKick(a.wakeup)
	b.apic.SetKick(b.wakeup)
	vm, err := New(accel.Config{
		CPUs:    2,
		Target:  accel.TargetFunc(func(i int) (accel.CPU, error) { return []*fakeCPU{a, b}[i], nil }),
		IRQChip: chip,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	mmio, pio := bus.New(), bus.New()
	if err := chip.Map(mmio, pio); err != nil {
		t.Fatal(err)
	}
	pio.Insert(levelDev{vm.IRQ(19)}, "dev", 0x510, 1)
	pit := timer.NewPIT(clk, vm.IRQ(0))
	pio.Insert(pit, "pit", timer.PITPort, 4)

	w32 := func(cpu int, addr uint64, v uint32) func(accel.IO) (accel.ExitReason, error) {
		return func(io accel.IO) (accel.ExitReason, error) {
			io.MMIO.Write(bus.CPUAccess(cpu), addr, binary.LittleEndian.AppendUint32(nil, v))
			return 0, nil
		}
	}
	outb := func(port uint64, v uint8) func(accel.IO) (accel.ExitReason, error) {
		return func(io accel.IO) (accel.ExitReason, error) {
			io.PIO.Write(bus.CPUAccess(0), port, []byte{v})
			return 0, nil
		}
	}
	var bReady, aReady atomic.Bool
	b.prog = []func(accel.IO) (accel.ExitReason, error){
		w32(1, 0xfee000f0, 0x1ff),
		func(accel.IO) (accel.ExitReason, error) { bReady.Store(true); return 0, nil },
	}
	b.handler = func(io accel.IO, vec int) {
		if vec == 0x61 {
			io.PIO.Write(bus.CPUAccess(1), 0x510, []byte{1})
		}
		io.MMIO.Write(bus.CPUAccess(1), 0xfee000b0, make([]byte, 4))
	}
	a.prog = []func(accel.IO) (accel.ExitReason, error){
		w32(0, 0xfee000f0, 0x1ff),
		w32(0, 0xfec00000, 0x10+2*19+1),
		w32(0, 0xfec00010, 1<<24),
		w32(0, 0xfec00000, 0x10+2*19),
		w32(0, 0xfec00010, 1<<15|0x61), // level, vector 0x61, APIC 1
		// 8259: vectors 0x20-0x2f, only IRQ0 unmasked.
		outb(0x20, 0x11), outb(0x21, 0x20), outb(0x21, 0x04), outb(0x21, 0x01),
		outb(0xa0, 0x11), outb(0xa1, 0x28), outb(0xa1, 0x02), outb(0xa1, 0x01),
		outb(0x21, 0xfe), outb(0xa1, 0xff),
		w32(0, 0xfee00350, 0x700), // LINT0 ExtINT, once the 8259 is programmed
		func(accel.IO) (accel.ExitReason, error) { aReady.Store(true); return 0, nil },
	}
	a.handler = func(io accel.IO, vec int) {
		if vec >= 0x20 && vec < 0x30 {
			io.PIO.Write(bus.CPUAccess(0), 0x20, []byte{0x20}) // 8259 EOI
		}
	}
	done := runAsync(vm, mmio, pio)
	until(t, "guest setup", func() bool { return aReady.Load() && bReady.Load() })

	vm.IRQ(19).Set(true) // from a device goroutine
	until(t, "vector 0x61 at vCPU 1", func() bool { return len(b.vectors()) == 1 })
	until(t, "remote IRR cleared", func() bool { return chip.IOAPIC.Entry(19)&(1<<14) == 0 })
	if v := b.vectors(); v[0] != 0x61 {
		t.Fatalf("vCPU 1 took %#x", v)
	}
	if err := vm.SignalMSI(0xfee01000, 0x71); err != nil {
		t.Fatal(err)
	}
	until(t, "MSI at vCPU 1", func() bool { return len(b.vectors()) == 2 })
	if v := b.vectors(); v[1] != 0x71 || len(a.vectors()) != 0 {
		t.Fatalf("vCPU 1 took %#x, vCPU 0 %#x", v, a.vectors())
	}
	// PIT channel 0 after reset: mode 3, count 0x10000 → IRQ0 edge at ~27.5 ms of
	// guest time, through the 8259 to LINT0 (the IOAPIC's pin 2 stays masked).
	clk.Advance(60 * time.Millisecond)
	until(t, "PIT interrupt at vCPU 0", func() bool { return len(a.vectors()) >= 1 })
	if v := a.vectors(); v[0] != 0x20 {
		t.Fatalf("vCPU 0 took %#x, want the PIT's 0x20", v)
	}
	if len(b.vectors()) != 2 {
		t.Fatalf("vCPU 1 took extra vectors %#x", b.vectors())
	}
	vm.Stop(accel.Stopped)
	if r, err := wait(t, done); r != accel.Stopped || err != nil {
		t.Fatalf("Run = %v, %v", r, err)
	}
	pit.Stop()
}

// parkCPU pauses inside Run like tcg.VCPU (Park/Unpark/WaitParked), and its Kick is
// final like tcg.VCPU.Stop.
type parkCPU struct {
	mu            sync.Mutex
	cond          *sync.Cond
	want, parked  bool
	stopped       atomic.Bool
	steps, inRuns atomic.Int64
	runs          atomic.Int64
}

func newParkCPU() *parkCPU { c := &parkCPU{}; c.cond = sync.NewCond(&c.mu); return c }

func (c *parkCPU) Kick() {
	c.stopped.Store(true)
	c.mu.Lock()
	c.cond.Broadcast()
	c.mu.Unlock()
}
func (c *parkCPU) Park() { c.mu.Lock(); c.want = true; c.mu.Unlock() }
func (c *parkCPU) Unpark() {
	c.mu.Lock()
	c.want = false
	c.cond.Broadcast()
	c.mu.Unlock()
}
func (c *parkCPU) WaitParked(d time.Duration) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		c.mu.Lock()
		p := c.parked || c.inRuns.Load() == 0
		c.mu.Unlock()
		if p {
			return true
		}
		time.Sleep(100 * time.Microsecond)
	}
	return false
}

func (c *parkCPU) Run(accel.IO) (accel.ExitReason, error) {
	c.runs.Add(1)
	c.inRuns.Add(1)
	defer c.inRuns.Add(-1)
	for !c.stopped.Load() {
		c.mu.Lock()
		for c.want && !c.stopped.Load() {
			c.parked = true
			c.cond.Wait()
		}
		c.parked = false
		c.mu.Unlock()
		c.steps.Add(1)
	}
	return accel.Stopped, nil
}

func TestPauseParkingCPU(t *testing.T) {
	a, b := newParkCPU(), newFake(1)
	b.spin = true
	vm, err := New(accel.Config{CPUs: 2, IRQChip: chipIRQ{},
		Target: accel.TargetFunc(func(i int) (accel.CPU, error) { return []accel.CPU{a, b}[i], nil })})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	done := runAsync(vm, nil, nil)
	until(t, "running", func() bool { return a.steps.Load() > 100 && b.steps.Load() > 100 })
	for round := 0; round < 3; round++ {
		vm.Pause()
		sa, sb := a.steps.Load(), b.steps.Load()
		time.Sleep(5 * time.Millisecond)
		if a.steps.Load() != sa || b.steps.Load() != sb {
			t.Fatal("ran while paused")
		}
		if a.inRuns.Load() != 1 || a.runs.Load() != 1 {
			t.Fatal("the parking CPU left Run to pause")
		}
		vm.Resume()
		until(t, "resumed", func() bool { return a.steps.Load() > sa+100 && b.steps.Load() > sb+100 })
	}
	vm.Stop(accel.Stopped)
	if r, _ := wait(t, done); r != accel.Stopped || a.runs.Load() != 1 {
		t.Fatalf("Run = %v after %d CPU.Run calls", r, a.runs.Load())
	}
}

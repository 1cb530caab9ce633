// Package accel owns the accelerator interface: what a machine (machine/pc,
// machine/virt) programs against to run a guest, whichever engine executes the guest's
// instructions (accel/kvm through /dev/kvm, or accel/tcg in userspace). A machine adds
// its RAM slots, takes interrupt lines for its devices, sets the boot CPU's state and
// calls Run with its MMIO and port-I/O buses; devices and the host UI call Stop to end
// the run.
//
// One VM interface for every engine (as Cloud Hypervisor's hypervisor crate has one
// Vm/Vcpu trait for KVM and MSHV): what differs is what the engine emulates itself.
//
//   - KVM runs the vCPUs in the kernel and emulates the interrupt controllers and the
//     PIT there (accel/kvm); IRQ lines are KVM_IRQ_LINE.
//   - A userspace engine (accel/tcg) emulates neither the ISA nor the chipset: the
//     board supplies both in Config. Target creates one CPU per vCPU (the guest ISA's
//     vCPU, e.g. target-x86's on tcg's run loop: accel knows no ISA) and IRQChip is the
//     board's interrupt controllers (hw/intc/pcirq on the PC), to which the VM's IRQ
//     lines and MSIs go. A board asks Chipset.InEngineChipset to know which case it
//     is in.
//
// The vCPU lifecycle is Firecracker's state machine, driven by the engine: created
// (New) → running (Run) ⇄ paused (Pauser.Pause/Resume) → exited (the guest's or
// Stop's ExitReason). A userspace engine owns one goroutine per vCPU and calls
// CPU.Run in a loop on it: Run returns Stopped when CPU.Kick asked it to (Stop, Pause),
// any other reason ends the whole VM's run with that reason. A ParkingCPU pauses inside
// Run instead.
//
// It must not know about any device, board or instruction semantics.
package accel

import (
	"fmt"
	"time"

	"gemu/hw/bus"
	"gemu/hw/memory"
	x86 "gemu/target-x86"
)

// ExitReason says why Run returned.
type ExitReason int

const (
	// PowerOff: the guest powered the machine off (ACPI S5, KVM system event, …).
	PowerOff ExitReason = iota + 1
	// Reset: the guest asked for a reboot (i8042 0xFE, ACPI reset, KVM system event).
	Reset
	// Shutdown: the CPU entered the shutdown state, i.e. a triple fault.
	Shutdown
	// Stopped: the host stopped the guest (user quit with Ctrl-A x, a signal, a test).
	Stopped
	// Error: the accelerator could not continue; Run's error says why.
	Error
)

func (r ExitReason) String() string {
	switch r {
	case PowerOff:
		return "power off"
	case Reset:
		return "reset"
	case Shutdown:
		return "shutdown (triple fault)"
	case Stopped:
		return "stopped"
	case Error:
		return "error"
	}
	return fmt.Sprintf("ExitReason(%d)", int(r))
}

// Config is what every accelerator needs to create a VM.
type Config struct {
	// CPUs is the number of vCPUs (1..MaxCPUs of the accelerator). vCPU i has APIC id /
	// MPIDR affinity i; vCPU 0 is the boot CPU, the others wait for the guest to start
	// them (x86: INIT/SIPI through the local APIC).
	CPUs int

	// Target and IRQChip are what a userspace engine (accel/tcg) needs from the board
	// and an in-kernel one (accel/kvm) ignores: see the package doc.
	Target  Target
	IRQChip IRQChip
}

// IO is where a vCPU's accesses outside RAM go: MMIO always, PIO on architectures with
// port I/O (nil elsewhere). Accesses carry bus.CPUAccess(vCPU index).
type IO struct {
	MMIO, PIO *bus.Bus
}

// CPU is one vCPU run by a userspace engine, implemented by the guest ISA's package
// and created by the board's Target. The engine calls Run on a goroutine it owns, one
// per vCPU, and Kick from any goroutine.
type CPU interface {
	// Run executes guest code until Kick asks it to return (reason Stopped) or the guest
	// ends the run: Shutdown (x86 triple fault), PowerOff or Reset where the CPU itself
	// decides them (PSCI on arm; on the PC, devices call VM.Stop instead), Error with
	// err set when the CPU cannot go on. A halted CPU (HLT, WFI, an AP waiting for
	// SIPI) sleeps inside Run until an interrupt or Kick. After a Stopped return the
	// engine may call Run again, which continues where the CPU stopped.
	Run(io IO) (ExitReason, error)
	// Kick makes the Run in progress return Stopped at its next instruction boundary,
	// or, if none is in progress, the next Run return Stopped at once; one Kick causes
	// at most one such return (a ParkingCPU's may be final). It must not block.
	Kick()
}

// ParkingCPU is a CPU that pauses inside Run (tcg.VCPU's Park/Unpark/WaitParked):
// the engine's Pause parks it at an instruction boundary instead of kicking it out of
// Run, and then kicks it only to stop, so its Kick may be final (every later Run
// returns Stopped at once, as tcg.VCPU.Stop is).
type ParkingCPU interface {
	CPU
	// Park asks the CPU to stop executing at its next boundary and wait inside Run
	// (or before its first instruction) until Unpark; it does not wait.
	Park()
	Unpark()
	// WaitParked waits until the CPU executes no guest code after Park (parked, or
	// Run not running), false if timeout passed first.
	WaitParked(timeout time.Duration) bool
}

// Target creates the vCPUs of a userspace engine. NewCPU is called once per vCPU,
// index 0..CPUs-1, when the VM is created (vCPU 0 is the boot CPU; the others wait for
// the guest to start them).
type Target interface {
	NewCPU(index int) (CPU, error)
}

// TargetFunc adapts a function to Target.
type TargetFunc func(index int) (CPU, error)

// NewCPU calls f(index).
func (f TargetFunc) NewCPU(index int) (CPU, error) { return f(index) }

// IRQChip is the board's userspace interrupt controllers as a userspace engine sees
// them: IRQ returns the line of global system interrupt gsi (the PC: ISA IRQs 0-15 to
// the 8259s and the IOAPIC, 16-23 to the IOAPIC). If it also implements MSI, the VM's
// SignalMSI delivers through it (the local APICs).
type IRQChip interface {
	IRQ(gsi uint32) bus.IRQ
}

// X86BootCPU is implemented by x86 CPUs of a userspace engine that take the loader's
// register state (X86VM.SetBootState reaches vCPU 0 through it).
type X86BootCPU interface {
	SetBootState(bs *x86.BootState) error
}

// Chipset is implemented by accelerators to say whether they emulate the platform's
// interrupt controllers and timers themselves (KVM's in-kernel irqchip and PIT). An
// accelerator without the method does (the historical KVM behaviour); accel/tcg says
// false, and the board then builds them (hw/intc, hw/timer) and passes
// Config.IRQChip.
type Chipset interface {
	InEngineChipset() bool
}

// VM is one guest being run by an accelerator. Methods other than Run and Stop must be
// called before Run, from one goroutine.
type VM interface {
	// AddRAM makes a guest RAM slot (allocated by hw/memory) visible to the guest at its
	// GPA. Accesses to guest-physical addresses with no RAM go to the MMIO bus.
	AddRAM(s *memory.Slot) error
	// IRQ returns the interrupt line for a global system interrupt number (x86: GSI
	// 0..23 of the IOAPIC, 0..15 also reaching the 8259 PICs). Set may be called from
	// any goroutine, including device goroutines and vCPU threads.
	IRQ(gsi uint32) bus.IRQ
	// NumCPUs returns the number of vCPUs.
	NumCPUs() int
	// Run runs every vCPU until the guest or Stop ends the run, and returns why.
	// MMIO and port-I/O accesses that no RAM or in-accelerator device handles are
	// dispatched to mmio and pio (pio may be nil on architectures without port I/O).
	// When Run returns, no vCPU is executing and no device callback is in flight from a
	// vCPU. err is non-nil exactly when the reason is Error. Run may be called once.
	Run(mmio, pio *bus.Bus) (ExitReason, error)
	// Stop ends a Run in progress (or the next Run, if called before it) with reason.
	// It may be called from any goroutine, including a device callback on a vCPU thread,
	// and returns without waiting. The first reason given wins.
	Stop(reason ExitReason)
	// Close releases the VM's host resources (not the RAM, which the machine owns).
	Close() error
}

// X86VM is a VM that runs an x86 guest.
type X86VM interface {
	VM
	// SetBootState loads the loader's register state into the boot CPU (vCPU 0).
	SetBootState(bs *x86.BootState) error
}

// MSI is implemented by VMs that can deliver message-signalled interrupts (PCI MSI and
// MSI-X): the effect of a device writing data to addr in the interrupt message window
// (x86: 0xfee00000 | destination APIC id << 12; data holds the vector and delivery
// mode). Machines type-assert for it; it may be called from any goroutine.
type MSI interface {
	SignalMSI(addr uint64, data uint32) error
}

// Accelerator is one way of running guests ("kvm", "tcg"), for the CLI's -accel choice.
type Accelerator interface {
	// Name is the -accel name.
	Name() string
	// Available returns nil if this host can run guests with the accelerator, else a
	// one-line reason.
	Available() error
	// NewX86 creates an x86 VM.
	NewX86(cfg Config) (X86VM, error)
}

// IOEventFD is implemented by VMs that can turn a guest's write to a doorbell register
// into a host notification without a vCPU exit to Go (KVM_IOEVENTFD): a virtio queue
// notify then costs the vCPU one in-kernel signal instead of an exit, a bus dispatch
// and a return. fn runs on a goroutine of the accelerator, never on a vCPU thread.
// The returned cancel removes the doorbell; the write then exits to the bus again.
type IOEventFD interface {
	IOEventFD(addr uint64, size uint32, pio bool, fn func()) (cancel func(), err error)
}

// MSIRoute is one message-signalled interrupt the accelerator can inject without the
// caller's ioctl per interrupt on the accelerator's own thread (KVM: an irqfd bound to a
// GSI routed to the message). Fire may be called from any goroutine.
type MSIRoute interface {
	// Update re-targets the route (the guest rewrote the MSI-X vector).
	Update(addr uint64, data uint32) error
	Fire() error
	Close() error
}

// MSIRouter is implemented by VMs that can allocate MSIRoutes (KVM_IRQFD with MSI
// routing entries).
type MSIRouter interface {
	NewMSIRoute(addr uint64, data uint32) (MSIRoute, error)
}

// Pauser is implemented by VMs that can pause: Pause takes every vCPU out of the guest
// (none executes guest code or a device callback when it returns) until Resume; called
// before Run, the vCPUs wait before their first instruction. Both may be called from
// any goroutine other than a vCPU thread. Stop ends a paused run as any other.
type Pauser interface {
	Pause() error
	Resume()
}

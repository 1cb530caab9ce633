// Package accel owns the accelerator interface: what a machine (machine/pc,
// machine/virt) programs against to run a guest, whichever engine executes the guest's
// instructions (accel/kvm through /dev/kvm, or TCG). A machine adds its RAM slots, takes
// interrupt lines for its devices, sets the boot CPU's state and calls Run with its MMIO
// and port-I/O buses; devices and the host UI call Stop to end the run.
//
// It must not know about any device, board or instruction semantics.
package accel

import (
	"fmt"

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

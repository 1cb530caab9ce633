// Package kvm owns running guests on the host's /dev/kvm: the VM and its in-kernel
// interrupt controllers and PIT, memory slots, one locked OS thread per vCPU, and the
// translation of KVM exits into MMIO/port-I/O accesses on the machine's buses and into
// accel exit reasons, and pausing the vCPUs (pause.go). It implements accel.X86VM and
// accel.Pauser for x86-64 hosts.
//
// It must not know about TCG, devices or boards: a machine hands it RAM slots, buses
// and the boot CPU's register state, and nothing more.
package kvm

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"gemu/accel"
	"gemu/hw/bus"
	"gemu/hw/memory"
	x86 "gemu/target-x86"
)

// Device is the KVM device node.
const Device = "/dev/kvm"

// Guest-physical pages KVM itself needs on Intel hosts without unrestricted guest
// support (the real-mode identity page table and the 3-page TSS for vm86 emulation of
// real mode). They sit where QEMU puts them, just below the 4 GiB BIOS area, and must
// not overlap RAM or MMIO: a machine reserves [ReservedBase, ReservedBase+ReservedSize)
// in its e820 map.
const (
	ReservedBase = 0xfeffc000
	ReservedSize = 0x4000
	identityMap  = ReservedBase
	tssAddr      = ReservedBase + 0x1000
)

// MaxCPUs is the most vCPUs a VM may have: xAPIC ids are 8 bits and 0xff is broadcast.
const MaxCPUs = 254

// required lists the capabilities gemu cannot run without, with why.
var required = []struct {
	cap  uintptr
	name string
}{
	{capUserMemory, "KVM_CAP_USER_MEMORY"},
	{capIRQChip, "KVM_CAP_IRQCHIP"},
	{capPIT2, "KVM_CAP_PIT2"},
	{capIRQRouting, "KVM_CAP_IRQ_ROUTING"},
	{capSetTSSAddr, "KVM_CAP_SET_TSS_ADDR"},
	{capSetIdentityMapAddr, "KVM_CAP_SET_IDENTITY_MAP_ADDR"},
	{capExtCPUID, "KVM_CAP_EXT_CPUID"},
	{capImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"},
}

// ioctlPtr is ioctl with a pointer argument. The pointer stays an unsafe.Pointer until
// the Syscall expression itself, so a stack copy between here and the system call
// cannot leave the kernel a stale address.
func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) (uintptr, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return r, e
		}
		return r, nil
	}
}

// ioctl is an ioctl with an integer argument, retried on EINTR.
func ioctl(fd int, req, arg uintptr) (uintptr, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return r, e
		}
		return r, nil
	}
}

// open opens /dev/kvm and checks the API version and every required capability.
func open() (int, error) { return openDevice(Device) }

func openDevice(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENXIO), errors.Is(err, unix.ENODEV):
			return -1, fmt.Errorf("kvm: %s does not exist: the host kernel has no KVM (or it is not passed into this container)", path)
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return -1, fmt.Errorf("kvm: permission denied opening %s (add the user to the kvm group)", path)
		}
		return -1, fmt.Errorf("kvm: open %s: %w", path, err)
	}
	v, err := ioctl(fd, kvmGetAPIVersion, 0)
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("kvm: %s is not a KVM device (KVM_GET_API_VERSION: %v)", path, err)
	}
	if v != 12 {
		unix.Close(fd)
		return -1, fmt.Errorf("kvm: %s speaks KVM API version %d, gemu needs 12", path, v)
	}
	for _, c := range required {
		if r, err := ioctl(fd, kvmCheckExtension, c.cap); err != nil || r == 0 {
			unix.Close(fd)
			return -1, fmt.Errorf("kvm: the host's KVM (%s) lacks %s", path, c.name)
		}
	}
	return fd, nil
}

// Available returns nil if /dev/kvm can run gemu's guests, or a one-line reason: the
// device is missing, not permitted, speaks another API version, or lacks a capability.
func Available() error {
	fd, err := open()
	if err != nil {
		return err
	}
	unix.Close(fd)
	return nil
}

// Emulated reports whether the host's KVM is not hardware-assisted virtualization but a
// software or paravirtual implementation, which runs guests correctly but slowly (about
// a microsecond per guest instruction for kvm_pvm): the CLI's default accelerator must
// prefer TCG over it.
//
// Detection: such implementations are separate vendor modules of the kvm core, as the
// hardware ones (kvm_intel, kvm_amd) are; today the only one is kvm_pvm
// ("pagetable-based virtual machine"), seen as /sys/module/kvm_pvm. /sys/module lists
// built-in modules with parameters too, so this holds for a built-in kvm_pvm as well.
func Emulated() bool {
	_, err := os.Stat("/sys/module/kvm_pvm")
	return err == nil
}

// Accel is the "kvm" accelerator for the CLI's -accel choice.
var Accel accel.Accelerator = accelerator{}

type accelerator struct{}

func (accelerator) Name() string     { return "kvm" }
func (accelerator) Available() error { return Available() }
func (accelerator) NewX86(cfg accel.Config) (accel.X86VM, error) {
	vm, err := New(cfg)
	if err != nil {
		return nil, err
	}
	return vm, nil
}

// VM is one KVM virtual machine with its vCPUs. It implements accel.X86VM.
type VM struct {
	kvmFD, vmFD int
	irqFD       atomic.Int64 // vmFD for IRQ lines, -1 once closed (devices may outlive the VM)
	vcpus       []*vcpu

	// ring is KVM's coalesced-write ring (in vCPU 0's kvm_run mapping), nil when the
	// host's KVM lacks coalesced port I/O; ringMu serializes vCPUs draining it.
	ring       *coalescedRing
	ringMu     sync.Mutex
	coalescing atomic.Bool // a range was registered: Run also drains the ring periodically

	msi msiRoutes // MSI routes behind irqfds (eventfd.go)

	stopping atomic.Bool
	mu       sync.Mutex // guards reason, err
	reason   accel.ExitReason
	err      error
	life     sync.Mutex // orders Run's start against Close
	ran      bool
	closed   bool
	threads  sync.WaitGroup // vCPU goroutines of a Run in progress
	pause    pausing        // Pause/Resume (pause.go)
}

var (
	_ accel.X86VM  = (*VM)(nil)
	_ accel.MSI    = (*VM)(nil)
	_ accel.Pauser = (*VM)(nil)
)

// New creates a VM with cfg.CPUs vCPUs, the in-kernel PIC/IOAPIC/LAPICs and PIT, the
// PC's interrupt routing, and each vCPU's CPUID, MSRs and FPU set to their boot values.
// vCPU 0 is the boot CPU; the others wait for INIT/SIPI from the guest.
func New(cfg accel.Config) (*VM, error) {
	if cfg.CPUs < 1 || cfg.CPUs > MaxCPUs {
		return nil, fmt.Errorf("kvm: %d vCPUs requested; gemu supports 1 to %d", cfg.CPUs, MaxCPUs)
	}
	kfd, err := open()
	if err != nil {
		return nil, err
	}
	v := &VM{kvmFD: kfd, vmFD: -1}
	v.irqFD.Store(-1)
	if err := v.init(cfg); err != nil {
		v.Close()
		return nil, err
	}
	return v, nil
}

func (v *VM) init(cfg accel.Config) error {
	hostMax, _ := ioctl(v.kvmFD, kvmCheckExtension, capMaxVCPUs)
	if hostMax == 0 {
		hostMax, _ = ioctl(v.kvmFD, kvmCheckExtension, capNrVCPUs)
	}
	if hostMax != 0 && uintptr(cfg.CPUs) > hostMax {
		return fmt.Errorf("kvm: %d vCPUs requested; the host's KVM allows at most %d", cfg.CPUs, hostMax)
	}
	fd, err := ioctl(v.kvmFD, kvmCreateVM, 0)
	if err != nil {
		return fmt.Errorf("kvm: KVM_CREATE_VM: %w", err)
	}
	v.vmFD = int(fd)
	v.irqFD.Store(int64(fd))
	unix.CloseOnExec(v.vmFD)

	ident := uint64(identityMap)
	if _, err := ioctlPtr(v.vmFD, kvmSetIdentityMapAddr, unsafe.Pointer(&ident)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_IDENTITY_MAP_ADDR: %w", err)
	}
	if _, err := ioctl(v.vmFD, kvmSetTSSAddr, tssAddr); err != nil {
		return fmt.Errorf("kvm: KVM_SET_TSS_ADDR: %w", err)
	}
	if _, err := ioctl(v.vmFD, kvmCreateIRQChip, 0); err != nil {
		return fmt.Errorf("kvm: KVM_CREATE_IRQCHIP: %w", err)
	}
	if err := v.setRouting(); err != nil {
		return err
	}
	// KVM_PIT_SPEAKER_DUMMY makes the kernel answer port 0x61 (NMI status and control /
	// PC speaker gate) with the PIT channel 2 gate and output, which is all Linux reads
	// it for (PIT-based TSC calibration). QEMU instead emulates the speaker in user space
	// and fetches channel 2 state with KVM_GET_PIT2 on each access; with no sound to
	// produce the in-kernel dummy is equivalent and saves the exits.
	pc := pitConfig{Flags: pitSpeakerDummy}
	if _, err := ioctlPtr(v.vmFD, kvmCreatePIT2, unsafe.Pointer(&pc)); err != nil {
		return fmt.Errorf("kvm: KVM_CREATE_PIT2: %w", err)
	}

	supported, err := supportedCPUID(v.kvmFD)
	if err != nil {
		return err
	}
	tscDeadline, _ := ioctl(v.kvmFD, kvmCheckExtension, capTSCDeadlineTimer)
	runSize, err := ioctl(v.kvmFD, kvmGetVCPUMmapSize, 0)
	if err != nil {
		return fmt.Errorf("kvm: KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	if runSize < unsafe.Sizeof(kvmRunHeader{}) {
		return fmt.Errorf("kvm: KVM_GET_VCPU_MMAP_SIZE is %d bytes, less than struct kvm_run", runSize)
	}
	for i := 0; i < cfg.CPUs; i++ {
		c, err := newVCPU(v, i, int(runSize))
		if err != nil {
			return err
		}
		v.vcpus = append(v.vcpus, c)
		if err := c.setup(patchCPUID(supported, i, cfg.CPUs, tscDeadline != 0)); err != nil {
			return err
		}
	}
	page := uintptr(os.Getpagesize())
	off, _ := ioctl(v.kvmFD, kvmCheckExtension, capCoalescedMMIO)
	pio, _ := ioctl(v.kvmFD, kvmCheckExtension, capCoalescedPIO)
	if off != 0 && pio != 0 && page == 4096 && (off+1)*page <= runSize {
		v.ring = (*coalescedRing)(unsafe.Pointer(&v.vcpus[0].run[off*page]))
	}
	return nil
}

// CoalescePIO makes the guest's writes to ports [port, port+size) (each write wholly
// inside the range) not exit: KVM queues them in the coalesced ring, and every vCPU
// exit first replays the queue to the port bus in order. A device whose writes only
// matter to a later access that exits anyway profits, as QEMU does with the PCI
// configuration address register 0xcf8: a configuration access (write 0xcf8, access
// 0xcfc) then costs one exit instead of two, and Linux probes thousands at boot.
// A write that has effects of its own is delayed until the next exit of any vCPU, or
// at most coalescedFlush while the VM runs.
func (v *VM) CoalescePIO(port uint64, size uint32) error {
	if v.ring == nil {
		return errors.New("kvm: the host's KVM has no coalesced port I/O")
	}
	z := coalescedZone{Addr: port, Size: size, PIO: 1}
	if _, err := ioctlPtr(v.vmFD, kvmRegisterCoalesced, unsafe.Pointer(&z)); err != nil {
		return fmt.Errorf("kvm: KVM_REGISTER_COALESCED_MMIO port %#x+%d: %w", port, size, err)
	}
	v.coalescing.Store(true)
	return nil
}

// coalescedFlush bounds how long a queued write waits when no vCPU exits. It only
// matters for a guest that halts right after such a write; it is long because each
// tick wakes a host thread, which under nested virtualization costs guest time.
const coalescedFlush = 100 * time.Millisecond

// drainCoalesced replays the queued coalesced writes, oldest first.
func (v *VM) drainCoalesced(mmio, pio *bus.Bus) {
	r := v.ring
	if r == nil || atomic.LoadUint32(&r.First) == atomic.LoadUint32(&r.Last) {
		return
	}
	v.ringMu.Lock()
	defer v.ringMu.Unlock()
	for i := atomic.LoadUint32(&r.First); i != atomic.LoadUint32(&r.Last); i = (i + 1) % coalescedMax {
		if i >= coalescedMax {
			return // a corrupt index; KVM itself never stores one
		}
		// KVM does not reuse the entry before First moves past it.
		e := &r.Entries[i]
		n := min(e.Len, 8)
		if e.PIO != 0 {
			pio.Write(bus.Host, e.PhysAddr, e.Data[:n:n])
		} else {
			mmio.Write(bus.Host, e.PhysAddr, e.Data[:n:n])
		}
		atomic.StoreUint32(&r.First, (i+1)%coalescedMax)
	}
}

// setRouting installs the PC's GSI routing, as QEMU does: ISA IRQs 0-15 reach both the
// 8259 pair and the IOAPIC, except that the PIT's IRQ 0 reaches IOAPIC pin 2 (and GSI 2,
// the PIC cascade, no IOAPIC pin), matching the "IRQ0 → GSI 2" interrupt source
// override every PC MADT carries. With KVM's default routing (GSI 0 → IOAPIC pin 0)
// Linux, following the MADT, would program pin 2 for the timer, see no ticks and panic
// with "IO-APIC + timer doesn't work". GSIs 16-23 are IOAPIC-only (PCI).
func (v *VM) setRouting() error {
	v.msi.mu.Lock()
	defer v.msi.mu.Unlock()
	return v.setRoutingLocked()
}

// setRoutingLocked installs the fixed irqchip routes and the MSI routes of
// NewMSIRoute; v.msi.mu is held.
func (v *VM) setRoutingLocked() error {
	var es []irqRoutingEntry
	add := func(gsi, chip, pin uint32) {
		es = append(es, irqRoutingEntry{GSI: gsi, Type: irqRoutingIRQChip, IRQChip: chip, Pin: pin})
	}
	for i := uint32(0); i < 16; i++ {
		if i < 8 {
			add(i, irqchipPICMaster, i)
		} else {
			add(i, irqchipPICSlave, i-8)
		}
	}
	for i := uint32(0); i < 24; i++ {
		switch i {
		case 0:
			add(0, irqchipIOAPIC, 2)
		case 2:
		default:
			add(i, irqchipIOAPIC, i)
		}
	}
	for _, r := range v.msi.routes {
		es = append(es, irqRoutingEntry{GSI: r.gsi, Type: irqRoutingMSI, IRQChip: uint32(r.addr), Pin: uint32(r.addr >> 32), MSIData: r.data})
	}
	hdr := unsafe.Sizeof(irqRoutingHeader{})
	buf := make([]byte, hdr+uintptr(len(es))*unsafe.Sizeof(irqRoutingEntry{}))
	*(*irqRoutingHeader)(unsafe.Pointer(&buf[0])) = irqRoutingHeader{Nr: uint32(len(es))}
	copy(unsafe.Slice((*irqRoutingEntry)(unsafe.Pointer(&buf[hdr])), len(es)), es)
	if _, err := ioctlPtr(v.vmFD, kvmSetGSIRouting, unsafe.Pointer(&buf[0])); err != nil {
		return fmt.Errorf("kvm: KVM_SET_GSI_ROUTING: %w", err)
	}
	return nil
}

// AddRAM registers a RAM slot as KVM memory slot s.Index.
func (v *VM) AddRAM(s *memory.Slot) error {
	if len(s.Mem) == 0 {
		return fmt.Errorf("kvm: RAM slot %q is empty", s.Name)
	}
	r := userspaceMemoryRegion{
		Slot:          uint32(s.Index),
		GuestPhysAddr: s.GPA,
		MemorySize:    uint64(len(s.Mem)),
		UserspaceAddr: uint64(uintptr(unsafe.Pointer(&s.Mem[0]))),
	}
	if _, err := ioctlPtr(v.vmFD, kvmSetUserMemoryRegion, unsafe.Pointer(&r)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_USER_MEMORY_REGION %q at %#x (%d MiB): %w", s.Name, s.GPA, len(s.Mem)>>20, err)
	}
	return nil
}

// IRQ returns the line for GSI gsi: Set drives it with KVM_IRQ_LINE, through the
// routing described at setRouting (ISA IRQ n is GSI n; PCI INTx are GSIs 16-23).
func (v *VM) IRQ(gsi uint32) bus.IRQ {
	return bus.IRQFunc(func(level bool) {
		l := irqLevel{IRQ: gsi}
		if level {
			l.Level = 1
		}
		// KVM_IRQ_LINE only fails for an unrouted GSI; a device cannot do anything
		// useful about it. After Close the line is dead.
		if fd := v.irqFD.Load(); fd >= 0 {
			ioctlPtr(int(fd), kvmIRQLine, unsafe.Pointer(&l))
		}
	})
}

// SignalMSI delivers a message-signalled interrupt through the in-kernel LAPICs
// (KVM_SIGNAL_MSI). It returns an error if the VM is closed or KVM rejects the message;
// a message KVM accepts but no CPU takes (masked, or filtered) is not an error.
func (v *VM) SignalMSI(addr uint64, data uint32) error {
	fd := v.irqFD.Load()
	if fd < 0 {
		return errors.New("kvm: SignalMSI on a closed VM")
	}
	m := msi{AddressLo: uint32(addr), AddressHi: uint32(addr >> 32), Data: data}
	if _, err := ioctlPtr(int(fd), kvmSignalMSI, unsafe.Pointer(&m)); err != nil {
		return fmt.Errorf("kvm: KVM_SIGNAL_MSI addr %#x data %#x: %w", addr, data, err)
	}
	return nil
}

// NumCPUs returns the number of vCPUs.
func (v *VM) NumCPUs() int { return len(v.vcpus) }

// SetBootState loads bs into vCPU 0. SRegs.APICBase 0 keeps KVM's reset value.
func (v *VM) SetBootState(bs *x86.BootState) error {
	return v.vcpus[0].setState(bs)
}

// Stop ends the run with reason (the first reason wins) and kicks every vCPU out of
// the guest: it sets kvm_run.immediate_exit, so a vCPU about to enter the guest
// returns at once, and signals the vCPU's thread, so one inside the guest (or halted in
// the kernel, or waiting for SIPI) exits with EINTR.
func (v *VM) Stop(reason accel.ExitReason) {
	v.mu.Lock()
	if v.reason == 0 {
		v.reason = reason
	}
	v.mu.Unlock()
	v.stopping.Store(true)
	for _, c := range v.vcpus {
		c.kick()
	}
	v.wakePaused()
}

// fail records err as the reason the run ended and stops every vCPU.
func (v *VM) fail(err error) {
	v.mu.Lock()
	if v.reason == 0 {
		v.reason, v.err = accel.Error, err
	}
	v.mu.Unlock()
	v.Stop(accel.Error)
}

// Run runs every vCPU on its own locked OS thread until a vCPU exit or Stop ends the
// run, and returns the reason. MMIO exits go to mmio, port I/O to pio.
func (v *VM) Run(mmio, pio *bus.Bus) (accel.ExitReason, error) {
	v.life.Lock()
	if v.ran || v.closed {
		v.life.Unlock()
		return accel.Error, errors.New("kvm: Run called twice on one VM, or after Close")
	}
	v.ran = true
	v.threads.Add(len(v.vcpus))
	v.life.Unlock()
	if mmio == nil {
		mmio = bus.New()
	}
	if pio == nil {
		pio = bus.New()
	}
	for _, c := range v.vcpus {
		go func() {
			defer v.threads.Done()
			c.loop(mmio, pio)
		}()
	}
	if v.coalescing.Load() {
		// A queued write with an effect of its own (a reset through 0xcf9) followed by
		// a halt with interrupts off would otherwise never be replayed.
		done := make(chan struct{})
		defer close(done)
		go func() {
			t := time.NewTicker(coalescedFlush)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					v.drainCoalesced(mmio, pio)
				}
			}
		}()
	}
	v.threads.Wait()
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.reason, v.err
}

// Close releases the vCPUs and the VM. A Run in progress is stopped (reason Stopped
// unless one was already given) and waited for first.
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
	for _, c := range v.vcpus {
		c.close()
	}
	v.irqFD.Store(-1)
	if v.vmFD >= 0 {
		unix.Close(v.vmFD)
		v.vmFD = -1
	}
	if v.kvmFD >= 0 {
		unix.Close(v.kvmFD)
		v.kvmFD = -1
	}
	return nil
}

// CPUState describes vCPU cpu's current position (CS:RIP, CS base, CR0, EFER) for
// messages such as the CLI's triple-fault report. Call it after Run has returned.
func (v *VM) CPUState(cpu int) string {
	if cpu < 0 || cpu >= len(v.vcpus) || v.vcpus[cpu].fd < 0 {
		return fmt.Sprintf("vCPU %d: no such vCPU", cpu)
	}
	return fmt.Sprintf("vCPU %d at %s", cpu, v.vcpus[cpu].rip())
}

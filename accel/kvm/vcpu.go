package kvm

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"gemu/accel"
	"gemu/hw/bus"
	x86 "gemu/target-x86"
)

// kickSignal interrupts a vCPU thread inside KVM_RUN. The Go runtime already sends
// SIGURG to threads to preempt goroutines and its handler ignores one that finds
// nothing to preempt, so it needs no signal.Notify, cannot kill the process, and
// KVM_RUN already has to survive it (it returns EINTR / KVM_EXIT_INTR, see loop).
const kickSignal = unix.SIGURG

type vcpu struct {
	vm  *VM
	id  int
	fd  int
	run []byte // the mmap'ed kvm_run page(s)
	hdr *kvmRunHeader
	mu  sync.Mutex // guards tid and the kvm_run mapping against kick racing exit/close
	tid int        // OS thread running KVM_RUN, 0 when none
}

func newVCPU(v *VM, id, runSize int) (*vcpu, error) {
	fd, err := ioctl(v.vmFD, kvmCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("kvm: KVM_CREATE_VCPU %d: %w", id, err)
	}
	unix.CloseOnExec(int(fd))
	run, err := unix.Mmap(int(fd), 0, runSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(int(fd))
		return nil, fmt.Errorf("kvm: mmap kvm_run of vCPU %d: %w", id, err)
	}
	return &vcpu{vm: v, id: id, fd: int(fd), run: run, hdr: (*kvmRunHeader)(unsafe.Pointer(&run[0]))}, nil
}

func (c *vcpu) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.run != nil {
		unix.Munmap(c.run)
		c.run, c.hdr = nil, nil
	}
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

// Boot MSRs. IA32_MISC_ENABLE resets to 0 in KVM, but real firmware leaves fast
// string operations enabled (bit 0) and Linux warns and disables "rep movs" fast paths
// without it. The SYSCALL/SYSENTER MSRs are zeroed explicitly as QEMU does on reset.
var bootMSRs = []msrEntry{
	{Index: 0x1a0, Data: 1},                  // IA32_MISC_ENABLE: fast strings
	{Index: 0x277, Data: 0x0007040600070406}, // IA32_PAT: power-on value
	{Index: 0x174},                           // IA32_SYSENTER_CS
	{Index: 0x175},                           // IA32_SYSENTER_ESP
	{Index: 0x176},                           // IA32_SYSENTER_EIP
	{Index: 0xc0000081},                      // STAR
	{Index: 0xc0000082},                      // LSTAR
	{Index: 0xc0000083},                      // CSTAR
	{Index: 0xc0000084},                      // SFMASK
	{Index: 0xc0000102},                      // KERNEL_GS_BASE
}

// setup loads the vCPU's CPUID, boot MSRs and FPU reset state.
func (c *vcpu) setup(cpuid []cpuidEntry) error {
	if err := setCPUID(c.fd, cpuid); err != nil {
		return fmt.Errorf("kvm: vCPU %d: %w", c.id, err)
	}
	hdr := unsafe.Sizeof(msrsHeader{})
	buf := make([]byte, hdr+uintptr(len(bootMSRs))*unsafe.Sizeof(msrEntry{}))
	*(*msrsHeader)(unsafe.Pointer(&buf[0])) = msrsHeader{NMSRs: uint32(len(bootMSRs))}
	copy(unsafe.Slice((*msrEntry)(unsafe.Pointer(&buf[hdr])), len(bootMSRs)), bootMSRs)
	n, err := ioctlPtr(c.fd, kvmSetMSRs, unsafe.Pointer(&buf[0]))
	if err != nil {
		return fmt.Errorf("kvm: vCPU %d: KVM_SET_MSRS: %w", c.id, err)
	}
	if int(n) != len(bootMSRs) {
		// KVM stops at the first MSR it refuses and returns how many it set.
		return fmt.Errorf("kvm: vCPU %d: the host's KVM refused boot MSR %#x", c.id, bootMSRs[n].Index)
	}
	// x87 and SSE state as after FNINIT / reset: all exceptions masked, no tags.
	// Current kernels already start a vCPU so; stating it keeps the boot state
	// independent of that.
	f := fpu{FCW: 0x37f, MXCSR: 0x1f80}
	if _, err := ioctlPtr(c.fd, kvmSetFPU, unsafe.Pointer(&f)); err != nil {
		return fmt.Errorf("kvm: vCPU %d: KVM_SET_FPU: %w", c.id, err)
	}
	return nil
}

func toKVMSegment(s x86.Segment) segment {
	b := func(v bool) uint8 {
		if v {
			return 1
		}
		return 0
	}
	return segment{Base: s.Base, Limit: s.Limit, Selector: s.Selector, Type: s.Type,
		Present: b(s.Present), DPL: s.DPL, DB: b(s.DB), S: b(s.S), L: b(s.L), G: b(s.G),
		AVL: b(s.AVL), Unusable: b(s.Unusable)}
}

func (c *vcpu) setState(bs *x86.BootState) error {
	var s sregs
	if _, err := ioctlPtr(c.fd, kvmGetSregs, unsafe.Pointer(&s)); err != nil {
		return fmt.Errorf("kvm: vCPU %d: KVM_GET_SREGS: %w", c.id, err)
	}
	in := &bs.SRegs
	s.CS, s.DS, s.ES, s.FS = toKVMSegment(in.CS), toKVMSegment(in.DS), toKVMSegment(in.ES), toKVMSegment(in.FS)
	s.GS, s.SS, s.TR, s.LDT = toKVMSegment(in.GS), toKVMSegment(in.SS), toKVMSegment(in.TR), toKVMSegment(in.LDT)
	s.GDT = dtable{Base: in.GDT.Base, Limit: in.GDT.Limit}
	s.IDT = dtable{Base: in.IDT.Base, Limit: in.IDT.Limit}
	s.CR0, s.CR2, s.CR3, s.CR4, s.CR8, s.EFER = in.CR0, in.CR2, in.CR3, in.CR4, in.CR8, in.EFER
	if in.APICBase != 0 {
		s.APICBase = in.APICBase
	}
	if _, err := ioctlPtr(c.fd, kvmSetSregs, unsafe.Pointer(&s)); err != nil {
		return fmt.Errorf("kvm: vCPU %d: KVM_SET_SREGS: %w", c.id, err)
	}
	r := regs(bs.Regs)
	if _, err := ioctlPtr(c.fd, kvmSetRegs, unsafe.Pointer(&r)); err != nil {
		return fmt.Errorf("kvm: vCPU %d: KVM_SET_REGS: %w", c.id, err)
	}
	return nil
}

// rip returns the vCPU's current instruction pointer, for error messages.
func (c *vcpu) rip() string {
	var r regs
	if _, err := ioctlPtr(c.fd, kvmGetRegs, unsafe.Pointer(&r)); err != nil {
		return "RIP unknown"
	}
	var s sregs
	if _, err := ioctlPtr(c.fd, kvmGetSregs, unsafe.Pointer(&s)); err != nil {
		return fmt.Sprintf("RIP %#x", r.RIP)
	}
	return fmt.Sprintf("CS:RIP %#x:%#x (CS base %#x, CR0 %#x, EFER %#x)", s.CS.Selector, r.RIP, s.CS.Base, s.CR0, s.EFER)
}

func (c *vcpu) kick() {
	c.mu.Lock()
	if c.hdr != nil {
		c.hdr.ImmediateExit = 1
	}
	if c.tid != 0 {
		unix.Tgkill(unix.Getpid(), c.tid, kickSignal)
	}
	c.mu.Unlock()
}

// loop runs KVM_RUN on one locked OS thread until the VM stops.
func (c *vcpu) loop(mmio, pio *bus.Bus) {
	runtime.LockOSThread()
	// Never unlocked: the goroutine exits still locked, which ends the thread, so a
	// vCPU thread never runs other goroutines.
	c.mu.Lock()
	c.tid = unix.Gettid()
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.tid = 0
		c.mu.Unlock()
	}()
	v := c.vm
	v.enterLoop()
	defer v.leaveLoop()
	for !v.stopping.Load() {
		if v.pause.want.Load() {
			c.parkIfPaused()
			continue
		}
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(c.fd), kvmRun, 0)
		if e == unix.EINTR || e == unix.EAGAIN {
			// A kick, a Go preemption signal, or immediate_exit: re-check stopping.
			continue
		}
		if e != 0 {
			v.fail(fmt.Errorf("kvm: vCPU %d: KVM_RUN: %v at %s", c.id, e, c.rip()))
			return
		}
		if !c.exit(mmio, pio) {
			return
		}
	}
}

// exit handles one KVM exit. It returns false when the vCPU must stop.
func (c *vcpu) exit(mmio, pio *bus.Bus) bool {
	v := c.vm
	// Writes KVM queued instead of exiting happened before this exit.
	v.drainCoalesced(mmio, pio)
	switch r := c.hdr.ExitReason; r {
	case exitIO:
		e := (*exitIOData)(unsafe.Pointer(&c.hdr.U[0]))
		size, n := uint64(e.Size), uint64(e.Count)
		if e.DataOffset+size*n > uint64(len(c.run)) {
			v.fail(fmt.Errorf("kvm: vCPU %d: port I/O exit data outside kvm_run", c.id))
			return false
		}
		// A string instruction (rep ins/outs) exits once with count elements packed
		// back to back.
		for i := uint64(0); i < n; i++ {
			off := e.DataOffset + i*size
			d := c.run[off : off+size : off+size]
			if e.Direction == exitIOOut {
				pio.Write(bus.CPUAccess(c.id), uint64(e.Port), d)
			} else {
				pio.Read(bus.CPUAccess(c.id), uint64(e.Port), d)
			}
		}
	case exitMMIO:
		e := (*exitMMIOData)(unsafe.Pointer(&c.hdr.U[0]))
		n := e.Len
		if n > 8 {
			n = 8
		}
		d := e.Data[:n:n]
		if e.IsWrite != 0 {
			mmio.Write(bus.CPUAccess(c.id), e.PhysAddr, d)
		} else {
			mmio.Read(bus.CPUAccess(c.id), e.PhysAddr, d)
		}
	case exitIntr:
		// A signal arrived while in the guest; loop re-checks stopping.
	case exitHLT:
		// Only reached without the in-kernel LAPIC, which gemu always creates: a
		// halted vCPU is otherwise handled inside KVM until an interrupt wakes it.
		v.fail(fmt.Errorf("kvm: vCPU %d: unexpected HLT exit at %s", c.id, c.rip()))
		return false
	case exitShutdown:
		v.Stop(accel.Shutdown)
		return false
	case exitSystemEvent:
		e := (*exitSystemEventData)(unsafe.Pointer(&c.hdr.U[0]))
		switch e.Type {
		case systemEventShutdown:
			v.Stop(accel.PowerOff)
		case systemEventReset:
			v.Stop(accel.Reset)
		case systemEventCrash:
			v.fail(fmt.Errorf("kvm: vCPU %d: guest crashed (system event) at %s", c.id, c.rip()))
		default:
			v.fail(fmt.Errorf("kvm: vCPU %d: unhandled system event %d at %s", c.id, e.Type, c.rip()))
		}
		return false
	case exitFailEntry:
		e := (*exitFailEntryData)(unsafe.Pointer(&c.hdr.U[0]))
		v.fail(fmt.Errorf("kvm: vCPU %d: VM entry failed (hardware reason %#x) at %s", c.id, e.HardwareEntryFailureReason, c.rip()))
		return false
	case exitInternalError:
		e := (*exitInternalData)(unsafe.Pointer(&c.hdr.U[0]))
		what := map[uint32]string{1: "instruction emulation failed", 2: "simultaneous exceptions",
			3: "exit during event delivery", 4: "unexpected exit reason"}[e.Suberror]
		if what == "" {
			what = fmt.Sprintf("suberror %d", e.Suberror)
		}
		v.fail(fmt.Errorf("kvm: vCPU %d: KVM internal error: %s at %s", c.id, what, c.rip()))
		return false
	case exitUnknown:
		v.fail(fmt.Errorf("kvm: vCPU %d: unknown exit (hardware reason %#x) at %s", c.id, *(*uint64)(unsafe.Pointer(&c.hdr.U[0])), c.rip()))
		return false
	default:
		name := exitNames[r]
		if name == "" {
			name = fmt.Sprintf("reason %d", r)
		}
		v.fail(fmt.Errorf("kvm: vCPU %d: unexpected KVM exit (%s) at %s", c.id, name, c.rip()))
		return false
	}
	return true
}

// mpState returns the vCPU's multiprocessing state (tests check that APs wait for SIPI).
func (c *vcpu) mpState() (uint32, error) {
	var s mpState
	_, err := ioctlPtr(c.fd, kvmGetMPState, unsafe.Pointer(&s))
	return s.State, err
}

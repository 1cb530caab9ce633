package kvm

import (
	"strings"
	"testing"
	"unsafe"

	"gemu/accel"
)

// Sizes of the C structs in <linux/kvm.h> and <asm/kvm.h> on x86-64, from the kernel's
// UAPI headers; each must match the Go mirror, and the ioctl numbers that encode a size
// must encode the same one.
func TestABISizes(t *testing.T) {
	for _, c := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"kvm_run header+union", unsafe.Sizeof(kvmRunHeader{}), 32 + 256},
		{"kvm_userspace_memory_region", unsafe.Sizeof(userspaceMemoryRegion{}), 32},
		{"kvm_irq_level", unsafe.Sizeof(irqLevel{}), 8},
		{"kvm_pit_config", unsafe.Sizeof(pitConfig{}), 64},
		{"kvm_irq_routing", unsafe.Sizeof(irqRoutingHeader{}), 8},
		{"kvm_irq_routing_entry", unsafe.Sizeof(irqRoutingEntry{}), 48},
		{"kvm_regs", unsafe.Sizeof(regs{}), 144},
		{"kvm_segment", unsafe.Sizeof(segment{}), 24},
		{"kvm_dtable", unsafe.Sizeof(dtable{}), 16},
		{"kvm_sregs", unsafe.Sizeof(sregs{}), 312},
		{"kvm_fpu", unsafe.Sizeof(fpu{}), 416},
		{"kvm_msrs", unsafe.Sizeof(msrsHeader{}), 8},
		{"kvm_msr_entry", unsafe.Sizeof(msrEntry{}), 16},
		{"kvm_cpuid2", unsafe.Sizeof(cpuidHeader{}), 8},
		{"kvm_cpuid_entry2", unsafe.Sizeof(cpuidEntry{}), 40},
		{"kvm_mp_state", unsafe.Sizeof(mpState{}), 4},
		{"kvm_msi", unsafe.Sizeof(msi{}), 32},
		{"kvm_coalesced_mmio_zone", unsafe.Sizeof(coalescedZone{}), 16},
		{"kvm_coalesced_mmio", unsafe.Sizeof(coalescedEntry{}), 24},
		{"kvm_coalesced_mmio_ring (one page)", unsafe.Sizeof(coalescedRing{}), 8 + 170*24},
		{"exit io", unsafe.Sizeof(exitIOData{}), 16},
		{"exit mmio", unsafe.Sizeof(exitMMIOData{}), 24},
		{"exit internal", unsafe.Sizeof(exitInternalData{}), 136},
		{"exit system_event", unsafe.Sizeof(exitSystemEventData{}), 136},
	} {
		if c.got != c.want {
			t.Errorf("sizeof %s = %d, want %d", c.name, c.got, c.want)
		}
	}
	// Field offsets inside kvm_run and kvm_fpu that the kernel ABI fixes.
	var r kvmRunHeader
	if off := unsafe.Offsetof(r.ExitReason); off != 8 {
		t.Errorf("kvm_run.exit_reason at %d, want 8", off)
	}
	if off := unsafe.Offsetof(r.U); off != 32 {
		t.Errorf("kvm_run exit union at %d, want 32", off)
	}
	var f fpu
	if off := unsafe.Offsetof(f.XMM); off != 152 {
		t.Errorf("kvm_fpu.xmm at %d, want 152", off)
	}
	if off := unsafe.Offsetof(f.MXCSR); off != 416-8 {
		t.Errorf("kvm_fpu.mxcsr at %d, want 408", off)
	}
	var m exitMMIOData
	if off := unsafe.Offsetof(m.Len); off != 16 {
		t.Errorf("mmio.len at %d, want 16", off)
	}
	var s sregs
	if off := unsafe.Offsetof(s.CR0); off != 8*24+2*16 {
		t.Errorf("kvm_sregs.cr0 at %d", off)
	}
}

// Well-known request numbers (as printed by strace / listed in the kernel's ioctl
// documentation) for a sample of the encoded ioctls.
func TestIoctlNumbers(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"KVM_GET_API_VERSION", kvmGetAPIVersion, 0xae00},
		{"KVM_CREATE_VM", kvmCreateVM, 0xae01},
		{"KVM_RUN", kvmRun, 0xae80},
		{"KVM_GET_SUPPORTED_CPUID", kvmGetSupportedCPUID, 0xc008ae05},
		{"KVM_SET_USER_MEMORY_REGION", kvmSetUserMemoryRegion, 0x4020ae46},
		{"KVM_SET_IDENTITY_MAP_ADDR", kvmSetIdentityMapAddr, 0x4008ae48},
		{"KVM_IRQ_LINE", kvmIRQLine, 0x4008ae61},
		{"KVM_SET_GSI_ROUTING", kvmSetGSIRouting, 0x4008ae6a},
		{"KVM_CREATE_PIT2", kvmCreatePIT2, 0x4040ae77},
		{"KVM_GET_REGS", kvmGetRegs, 0x8090ae81},
		{"KVM_SET_REGS", kvmSetRegs, 0x4090ae82},
		{"KVM_GET_SREGS", kvmGetSregs, 0x8138ae83},
		{"KVM_SET_SREGS", kvmSetSregs, 0x4138ae84},
		{"KVM_SET_MSRS", kvmSetMSRs, 0x4008ae89},
		{"KVM_SET_FPU", kvmSetFPU, 0x41a0ae8d},
		{"KVM_SET_CPUID2", kvmSetCPUID2, 0x4008ae90},
		{"KVM_GET_MP_STATE", kvmGetMPState, 0x8004ae98},
		{"KVM_SIGNAL_MSI", kvmSignalMSI, 0x4020aea5},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	for _, c := range []struct{ path, want string }{
		{"/nonexistent/kvm", "/nonexistent/kvm does not exist"},
		{"/dev/null", "/dev/null is not a KVM device"},
	} {
		fd, err := openDevice(c.path)
		if err == nil {
			t.Errorf("openDevice(%s) succeeded (fd %d)", c.path, fd)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("openDevice(%s) = %q, want it to say %q", c.path, err, c.want)
		}
	}
}

func TestNewRejectsCPUCount(t *testing.T) {
	for _, n := range []int{0, -1, MaxCPUs + 1} {
		if vm, err := New(accel.Config{CPUs: n}); err == nil {
			vm.Close()
			t.Errorf("New with %d CPUs succeeded", n)
		}
	}
}

package kvm

import (
	"errors"
	"fmt"
	"math/bits"
	"unsafe"

	"golang.org/x/sys/unix"
)

// supportedCPUID returns KVM_GET_SUPPORTED_CPUID: every leaf KVM can expose, with the
// host's values masked to what KVM virtualizes (including KVM's paravirtual leaves
// 0x40000000 "KVMKVMKVM" and 0x40000001, which give the guest kvmclock).
func supportedCPUID(kvmFD int) ([]cpuidEntry, error) {
	for n := 128; n <= 4096; n *= 2 {
		hdr := unsafe.Sizeof(cpuidHeader{})
		buf := make([]byte, hdr+uintptr(n)*unsafe.Sizeof(cpuidEntry{}))
		*(*cpuidHeader)(unsafe.Pointer(&buf[0])) = cpuidHeader{NEnt: uint32(n)}
		_, err := ioctlPtr(kvmFD, kvmGetSupportedCPUID, unsafe.Pointer(&buf[0]))
		if errors.Is(err, unix.E2BIG) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("kvm: KVM_GET_SUPPORTED_CPUID: %w", err)
		}
		got := (*cpuidHeader)(unsafe.Pointer(&buf[0])).NEnt
		return append([]cpuidEntry(nil), unsafe.Slice((*cpuidEntry)(unsafe.Pointer(&buf[hdr])), got)...), nil
	}
	return nil, errors.New("kvm: KVM_GET_SUPPORTED_CPUID: more than 4096 leaves")
}

func setCPUID(fd int, es []cpuidEntry) error {
	hdr := unsafe.Sizeof(cpuidHeader{})
	buf := make([]byte, hdr+uintptr(len(es))*unsafe.Sizeof(cpuidEntry{}))
	*(*cpuidHeader)(unsafe.Pointer(&buf[0])) = cpuidHeader{NEnt: uint32(len(es))}
	copy(unsafe.Slice((*cpuidEntry)(unsafe.Pointer(&buf[hdr])), len(es)), es)
	if _, err := ioctlPtr(fd, kvmSetCPUID2, unsafe.Pointer(&buf[0])); err != nil {
		return fmt.Errorf("KVM_SET_CPUID2: %w", err)
	}
	return nil
}

// patchCPUID returns the CPUID table of vCPU id out of ncpu: the supported leaves with
// the hypervisor bit set and the topology rewritten to one package of ncpu cores with
// one thread each, whose APIC ids are 0..ncpu-1 (vCPU i has APIC id i). Linux builds
// its CPU topology from these leaves; host values would claim the host's core count.
//
// tscDeadline sets CPUID.1:ECX.TSC_DEADLINE: KVM emulates the LAPIC timer's TSC-deadline
// mode (KVM_CAP_TSC_DEADLINE_TIMER) but does not list it in KVM_GET_SUPPORTED_CPUID,
// because it is a property of the in-kernel LAPIC rather than of the host CPU.
func patchCPUID(supported []cpuidEntry, id, ncpu int, tscDeadline bool) []cpuidEntry {
	apic := uint32(id)
	n := uint32(ncpu)
	coreBits := uint32(bits.Len32(n - 1)) // APIC id bits needed for the core number
	var maxBasic uint32
	out := make([]cpuidEntry, 0, len(supported)+6)
	for _, e := range supported {
		switch e.Function {
		case 0:
			maxBasic = e.EAX
		case 1:
			// EBX[31:24] initial APIC id, [23:16] logical processors per package.
			e.EBX = e.EBX&0xffff | apic<<24 | (n&0xff)<<16
			e.ECX |= 1 << 31 // hypervisor present
			if tscDeadline {
				e.ECX |= 1 << 24
			}
			if n > 1 {
				e.EDX |= 1 << 28 // HTT: the package has more than one logical processor
			} else {
				e.EDX &^= 1 << 28
			}
		case 4:
			// Deterministic cache parameters: EAX[31:26] cores per package - 1,
			// EAX[25:14] logical processors sharing this cache - 1 (L3: all of them).
			if e.EAX&0x1f == 0 {
				break // no cache at this subleaf
			}
			share := uint32(0)
			if (e.EAX>>5)&7 >= 3 {
				share = n - 1
			}
			cores := min(n, 64)
			e.EAX = e.EAX&0x3fff | (cores-1)<<26 | (share&0xfff)<<14
		case 0xb, 0x1f:
			continue // rebuilt below
		case 0x80000008:
			// AMD: ECX[7:0] cores per package - 1, ECX[15:12] APIC id bits for cores.
			e.ECX = e.ECX&^0xf0ff | (n-1)&0xff | coreBits<<12
		case 0x8000001e:
			// AMD extended APIC id, compute unit (core) id, node id.
			e.EAX = apic
			e.EBX = e.EBX&^0xffff | apic&0xff
			e.ECX = 0
		}
		out = append(out, e)
	}
	// x2APIC topology: level 0 SMT (1 thread per core), level 1 core (n cores),
	// then an invalid level terminating the list. EDX is the x2APIC id at every level.
	for _, leaf := range []uint32{0xb, 0x1f} {
		if maxBasic < leaf {
			continue
		}
		out = append(out,
			cpuidEntry{Function: leaf, Index: 0, Flags: cpuidFlagSignificantIndex, EAX: 0, EBX: 1, ECX: 1 << 8, EDX: apic},
			cpuidEntry{Function: leaf, Index: 1, Flags: cpuidFlagSignificantIndex, EAX: coreBits, EBX: n, ECX: 2<<8 | 1, EDX: apic},
			cpuidEntry{Function: leaf, Index: 2, Flags: cpuidFlagSignificantIndex, EAX: 0, EBX: 0, ECX: 2, EDX: apic},
		)
	}
	return out
}

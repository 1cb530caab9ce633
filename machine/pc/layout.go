package pc

import (
	"fmt"
	"sort"
)

// The PC's guest-physical memory map.
//
//	0x0000_0000  low RAM: real-mode area, zero page, boot page tables, command line
//	0x0009_fc00  reserved: extended BIOS data area (what a BIOS would leave)
//	0x000a_0000  (VGA hole in real hardware; plain RAM here, not reported usable)
//	0x000e_0000  reserved: BIOS area holding the ACPI tables (RSDP is found here)
//	0x0010_0000  RAM: kernel, initrd (high, below LowRAMTop), free memory
//	0xe000_0000  PCI hole: 32-bit PCI BARs, IOAPIC 0xfec00000, LAPIC 0xfee00000
//	0x1_0000_0000 RAM above 4 GiB when -m exceeds LowRAMTop
const (
	// LowRAMTop is where RAM below 4 GiB ends when the guest has more: 3.5 GiB, leaving a
	// 512 MiB hole for 32-bit PCI memory and the interrupt controllers.
	LowRAMTop = 0xe000_0000
	// HighRAMBase is where the rest of RAM continues.
	HighRAMBase = 1 << 32
	// PCIHoleEnd is the end of the 32-bit MMIO window usable by PCI BARs (the IOAPIC
	// page starts here).
	PCIHoleEnd = 0xfec0_0000

	ebdaStart    = 0x9fc00
	vgaHoleStart = 0xa0000
	biosStart    = 0xe0000 // ACPI tables live in [biosStart, biosEnd)
	biosEnd      = 0x100000

	// IOAPICBase and LAPICBase are the x86 interrupt controllers' MMIO pages, emulated
	// in the kernel under KVM.
	IOAPICBase = 0xfec0_0000
	LAPICBase  = 0xfee0_0000
	// kvmPrivateStart..kvmPrivateEnd is reserved for the accelerator's own pages (KVM's
	// real-mode TSS and identity page table, as QEMU places them) and reported reserved
	// so no PCI BAR lands on them.
	kvmPrivateStart = 0xfeff_c000
	kvmPrivateEnd   = 0xff00_0000
)

// E820 entry types.
const (
	E820RAM      = 1
	E820Reserved = 2
	E820ACPI     = 3
)

// E820Entry is one range of the BIOS memory map handed to the kernel.
type E820Entry struct {
	Addr, Size uint64
	Type       uint32
}

// Layout is the RAM split of a guest with a given memory size.
type Layout struct {
	MemSize  uint64 // total guest RAM
	LowSize  uint64 // RAM at [0, LowSize)
	HighSize uint64 // RAM at [HighRAMBase, HighRAMBase+HighSize)
}

// MinMemSize is the least RAM the PC accepts: the fixed low areas plus some room.
const MinMemSize = 2 << 20

// NewLayout splits memSize bytes of RAM around the PCI hole. memSize is rounded up to
// a 4 KiB page.
func NewLayout(memSize uint64) (Layout, error) {
	if memSize == 0 {
		return Layout{}, fmt.Errorf("memory size must be positive")
	}
	memSize = (memSize + 0xfff) &^ 0xfff
	if memSize < MinMemSize {
		return Layout{}, fmt.Errorf("memory size %d KiB is too small (need at least %d MiB)", memSize>>10, MinMemSize>>20)
	}
	l := Layout{MemSize: memSize, LowSize: memSize}
	if memSize > LowRAMTop {
		l.LowSize = LowRAMTop
		l.HighSize = memSize - LowRAMTop
	}
	return l, nil
}

// E820 returns the memory map the kernel sees, sorted, without overlaps.
func (l Layout) E820() []E820Entry {
	m := []E820Entry{
		{0, ebdaStart, E820RAM},
		{ebdaStart, vgaHoleStart - ebdaStart, E820Reserved},
		{biosStart, biosEnd - biosStart, E820Reserved},
	}
	if l.LowSize > biosEnd {
		m = append(m, E820Entry{biosEnd, l.LowSize - biosEnd, E820RAM})
	}
	m = append(m, E820Entry{kvmPrivateStart, kvmPrivateEnd - kvmPrivateStart, E820Reserved})
	if l.HighSize > 0 {
		m = append(m, E820Entry{HighRAMBase, l.HighSize, E820RAM})
	}
	sort.Slice(m, func(i, j int) bool { return m[i].Addr < m[j].Addr })
	return m
}

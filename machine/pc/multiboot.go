package pc

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"gemu/hw/memory"
	x86 "gemu/target-x86"
)

// Multiboot (v1) direct boot, as QEMU's -kernel does it for a file without a Linux setup
// header: QEMU's loader (hw/i386/multiboot.c) lays the kernel, the module structures,
// the command lines and the modules out in one run from the kernel's load address, and
// its option ROM (pc-bios/optionrom/multiboot.S) fills in the BIOS memory map and
// mem_lower/mem_upper, then enters the kernel in 32-bit protected mode. gemu has no
// firmware, so this file does both halves and builds the same guest memory: the same
// addresses for the information structure, modules and strings, the same flags and
// segment selectors. Only the memory map is gemu's own (SeaBIOS reserves more).
const (
	multibootMagic       = 0x1badb002 // in the kernel's header
	multibootBootMagic   = 0x2badb002 // in EAX at entry
	multibootSearch      = 8192       // the header lies in the file's first 8 KiB
	multibootHeaderWords = 12         // the longest header QEMU reads: up to the VBE fields

	mbFlagVideoMode = 1 << 2  // header: the kernel wants a video mode (QEMU warns, ignores it)
	mbFlagAddress   = 1 << 16 // header: the address fields are valid (the a.out kludge)

	mbMmapAddr      = 0x9000             // QEMU's ADDR_E820_MAP: mmap entries, 24 bytes each
	mbInfoAddr      = mbMmapAddr + 0x500 // QEMU's ADDR_MBI: the information structure
	mbInfoSize      = 88                 // up to boot_loader_name and the APM/VBE fields after it
	mbMmapMax       = (mbInfoAddr - mbMmapAddr) / 24
	mbModSize       = 16                       // mod_start, mod_end, string, reserved
	mbBootDevice    = 0x8000ffff               // QEMU's fixed "first BIOS disk, no partition"
	mbLoaderName    = "qemu"                   // what QEMU's loader calls itself; kernels may print it
	mbInfoFlags     = 1 | 2 | 4 | 8 | 64 | 512 // memory, boot device, cmdline, modules, mmap, loader name
	mbLoaderDataEnd = mbInfoAddr + mbInfoSize

	// Offsets of the information structure's fields.
	mbiFlags      = 0
	mbiMemLower   = 4
	mbiMemUpper   = 8
	mbiBootDevice = 12
	mbiCmdline    = 16
	mbiModsCount  = 20
	mbiModsAddr   = 24
	mbiMmapLength = 44
	mbiMmapAddr   = 48
	mbiLoaderName = 64

	// The GDT the loader leaves, as QEMU's option ROM builds it: null, flat 32-bit code
	// (0x08) and data (0x10), 16-bit code (0x18) and data (0x20).
	mbCS = 0x08
	mbDS = 0x10
)

var mbGDT = []uint64{
	0,
	0x00cf9b000000ffff, // accessed: the CPU set the bit when it loaded CS
	0x00cf93000000ffff, // likewise for the data segments
	0x00009e000000ffff,
	0x000092000000ffff,
}

// MultibootHeader is the header a multiboot kernel carries in its first 8 KiB.
type MultibootHeader struct {
	Offset int64 // file offset of the magic
	Flags  uint32
	// The address fields (valid when Flags has bit 16, the a.out kludge).
	HeaderAddr, LoadAddr, LoadEndAddr, BSSEndAddr, EntryAddr uint32
}

// HasAddress reports whether the kernel is loaded by its header's address fields rather
// than as an ELF file.
func (h *MultibootHeader) HasAddress() bool { return h.Flags&mbFlagAddress != 0 }

// Module is one multiboot module: its command line (what QEMU passes: the module's part
// of -initrd, file name first) and its contents.
type Module struct {
	Cmdline string
	Image   KernelImage
}

// SplitModules splits a -initrd value for a multiboot kernel into module command lines
// as QEMU does: modules are separated by commas, ",," stands for a comma in a name or
// argument, and each module's file name ends at its first space (ModulePath).
func SplitModules(spec string) []string {
	var mods []string
	var cur strings.Builder
	for i := 0; i < len(spec); i++ {
		if spec[i] == ',' {
			if i+1 < len(spec) && spec[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			mods = append(mods, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(spec[i])
	}
	return append(mods, cur.String())
}

// ModulePath returns the file name of a module command line: everything before the
// first space (the rest is the module's arguments).
func ModulePath(cmdline string) string {
	if i := strings.IndexByte(cmdline, ' '); i >= 0 {
		return cmdline[:i]
	}
	return cmdline
}

// CheckMultiboot looks for a multiboot header in a kernel file that has no Linux setup
// header (QEMU tries Linux first). It returns nil and no error when the file is not a
// multiboot kernel, and an error naming the problem when it has the magic but no valid
// header, or a header QEMU would refuse.
func CheckMultiboot(k KernelImage) (*MultibootHeader, error) {
	head := make([]byte, multibootSearch)
	n, err := k.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading kernel: %w", err)
	}
	if n >= hdrMagic+4 && string(head[hdrMagic:hdrMagic+4]) == "HdrS" {
		return nil, nil // a Linux kernel, whatever else it holds
	}
	// QEMU reads the first 8 KiB (zero beyond a short file) and accepts the first
	// magic whose checksum holds, at any 4-byte aligned offset where the 48-byte
	// header still fits.
	le := binary.LittleEndian
	bad := int64(-1)
	for i := 0; i < multibootSearch-4*multibootHeaderWords; i += 4 {
		if le.Uint32(head[i:]) != multibootMagic {
			continue
		}
		flags, sum := le.Uint32(head[i+4:]), le.Uint32(head[i+8:])
		if multibootMagic+flags+sum != 0 {
			if bad < 0 {
				bad = int64(i)
			}
			continue
		}
		h := &MultibootHeader{Offset: int64(i), Flags: flags}
		w := func(j int) uint32 { return le.Uint32(head[i+4*j:]) }
		if h.HasAddress() {
			h.HeaderAddr, h.LoadAddr, h.LoadEndAddr, h.BSSEndAddr, h.EntryAddr = w(3), w(4), w(5), w(6), w(7)
		} else if err := checkMultibootELF(head[:n]); err != nil {
			return nil, err
		}
		return h, nil
	}
	if bad >= 0 {
		return nil, fmt.Errorf("bad multiboot header at offset %#x: the checksum does not add up (flags %#x, checksum %#x)",
			bad, le.Uint32(head[bad+4:]), le.Uint32(head[bad+8:]))
	}
	return nil, nil
}

// checkMultibootELF refuses, from the file's start, what QEMU's loader refuses: a
// 64-bit kernel and anything that is not a 32-bit x86 ELF file.
func checkMultibootELF(head []byte) error {
	if len(head) >= 20 && binary.LittleEndian.Uint16(head[18:]) == uint16(elf.EM_X86_64) {
		return errors.New("multiboot: cannot load an x86-64 ELF kernel, give a 32-bit one")
	}
	if !bytes.HasPrefix(head, []byte(elf.ELFMAG)) {
		return errors.New("multiboot kernel without load addresses (header flag bit 16) is not an ELF file")
	}
	if len(head) < 20 || elf.Class(head[elf.EI_CLASS]) != elf.ELFCLASS32 || elf.Machine(binary.LittleEndian.Uint16(head[18:])) != elf.EM_386 {
		return errors.New("multiboot ELF kernel is not a 32-bit x86 (i386) ELF file")
	}
	return nil
}

// MultibootConfig is the input of LoadMultiboot.
type MultibootConfig struct {
	Kernel KernelImage
	// KernelName is the kernel's file name as given on the command line: QEMU passes
	// "NAME CMDLINE" as the kernel's command line.
	KernelName string
	Cmdline    string
	// ModuleSpec is the -initrd value the modules came from (QEMU reserves room for
	// it among the command lines, which shifts nothing but the page rounding).
	ModuleSpec string
	Modules    []Module
}

// moduleSpec is ModuleSpec, or for a caller that left it empty the -initrd value that
// gives its modules.
func (c *MultibootConfig) moduleSpec() string {
	if c.ModuleSpec != "" || len(c.Modules) == 0 {
		return c.ModuleSpec
	}
	parts := make([]string, len(c.Modules))
	for i, m := range c.Modules {
		parts[i] = strings.ReplaceAll(m.Cmdline, ",", ",,")
	}
	return strings.Join(parts, ",")
}

// MultibootBoot is what LoadMultiboot placed, for logs and tests.
type MultibootBoot struct {
	Header              *MultibootHeader
	LoadAddr, KernelEnd uint64 // the kernel's image and bss
	Entry               uint64
	InfoAddr            uint64 // the multiboot information structure (EBX)
	Modules             [][2]uint64
	State               x86.BootState
}

// LoadMultiboot loads a multiboot kernel (header h, from CheckMultiboot) and its modules
// into ram (laid out as l) as QEMU does and returns the boot CPU's state: 32-bit
// protected mode, paging off, EAX = 0x2BADB002, EBX = the information structure.
func LoadMultiboot(ram *memory.RAM, l Layout, h *MultibootHeader, c MultibootConfig) (*MultibootBoot, error) {
	b := &MultibootBoot{Header: h, InfoAddr: mbInfoAddr}
	var err error
	if h.HasAddress() {
		err = loadMultibootAout(ram, l, h, c.Kernel, b)
	} else {
		err = loadMultibootELF(ram, l, c.Kernel, b)
	}
	if err != nil {
		return nil, err
	}

	// After the kernel, page-aligned: the module structures, then the command lines
	// (the modules', the kernel's) in room for all of them and the raw -initrd value,
	// then the loader's name; each module follows from a page boundary (QEMU's mb_buf).
	base := b.LoadAddr
	infoOff := pageAlign(b.KernelEnd - base)
	cmdRoom := len(c.KernelName) + 1 + len(c.Cmdline) + 1
	if spec := c.moduleSpec(); spec != "" {
		cmdRoom += len(spec) + 1
	}
	structs := mbModSize * len(c.Modules)
	meta := make([]byte, structs+cmdRoom, structs+cmdRoom+len(mbLoaderName)+1)
	strs := structs // next free byte for a command line
	addCmdline := func(s string) (uint32, error) {
		if strs+len(s)+1 > structs+cmdRoom {
			return 0, errors.New("multiboot command lines do not fit the room reserved for them")
		}
		a := uint32(base + infoOff + uint64(strs))
		strs += copy(meta[strs:], s)
		meta[strs] = 0
		strs++
		return a, nil
	}
	le := binary.LittleEndian
	off := pageAlign(infoOff + uint64(cap(meta)))
	for i, m := range c.Modules {
		size := uint64(m.Image.Size())
		start := base + off
		if err := checkMultibootRange(l, start, size, fmt.Sprintf("multiboot module %d (%s)", i, ModulePath(m.Cmdline))); err != nil {
			return nil, err
		}
		if size > 0 {
			mem, _ := ram.Slice(start, size)
			if _, err := m.Image.ReadAt(mem, 0); err != nil && err != io.EOF {
				return nil, fmt.Errorf("reading multiboot module %s: %w", ModulePath(m.Cmdline), err)
			}
		}
		cl, err := addCmdline(m.Cmdline)
		if err != nil {
			return nil, err
		}
		le.PutUint32(meta[mbModSize*i:], uint32(start))
		le.PutUint32(meta[mbModSize*i+4:], uint32(start+size))
		le.PutUint32(meta[mbModSize*i+8:], cl)
		b.Modules = append(b.Modules, [2]uint64{start, start + size})
		off = pageAlign(off + size)
	}
	info := make([]byte, mbInfoSize)
	cl, err := addCmdline(c.KernelName + " " + c.Cmdline)
	if err != nil {
		return nil, err
	}
	le.PutUint32(info[mbiCmdline:], cl)
	le.PutUint32(info[mbiLoaderName:], uint32(base+infoOff+uint64(len(meta))))
	meta = append(append(meta, mbLoaderName...), 0)
	if err := checkMultibootRange(l, base+infoOff, uint64(len(meta)), "multiboot information"); err != nil {
		return nil, err
	}
	if err := ram.WriteAt(meta, base+infoOff); err != nil {
		return nil, err
	}
	le.PutUint32(info[mbiModsCount:], uint32(len(c.Modules)))
	le.PutUint32(info[mbiModsAddr:], uint32(base+infoOff))
	le.PutUint32(info[mbiFlags:], mbInfoFlags)
	le.PutUint32(info[mbiBootDevice:], mbBootDevice)

	// What the option ROM adds from the BIOS: the e820 map as multiboot mmap entries
	// (a size word of 20 before each), mem_lower (KiB of conventional memory, int 12h)
	// and mem_upper (KiB of RAM contiguous from 1 MiB).
	e820 := l.E820()
	if len(e820) > mbMmapMax {
		return nil, fmt.Errorf("e820 map has %d entries, the multiboot map holds %d", len(e820), mbMmapMax)
	}
	mmap := make([]byte, 0, 24*len(e820))
	for _, e := range e820 {
		mmap = le.AppendUint32(mmap, 20)
		mmap = le.AppendUint64(mmap, e.Addr)
		mmap = le.AppendUint64(mmap, e.Size)
		mmap = le.AppendUint32(mmap, e.Type)
	}
	lower, upper := multibootMemSizes(e820)
	le.PutUint32(info[mbiMemLower:], lower)
	le.PutUint32(info[mbiMemUpper:], upper)
	le.PutUint32(info[mbiMmapLength:], uint32(len(mmap)))
	le.PutUint32(info[mbiMmapAddr:], mbMmapAddr)
	if err := ram.WriteAt(mmap, mbMmapAddr); err != nil {
		return nil, err
	}
	if err := ram.WriteAt(info, mbInfoAddr); err != nil {
		return nil, err
	}
	for i, d := range mbGDT {
		if err := ram.Write64(gdtAddr+uint64(8*i), d); err != nil {
			return nil, err
		}
	}

	st := &b.State
	st.Regs.RAX = multibootBootMagic
	st.Regs.RBX = mbInfoAddr
	st.Regs.RCX = b.Entry // QEMU's option ROM jumps through ECX
	st.Regs.RSP = bootStackTop
	st.Regs.RIP = b.Entry
	st.Regs.RFLAGS = x86.RFLAGS_RESERVED // IF and DF clear
	s := &st.SRegs
	s.GDT = x86.DTable{Base: gdtAddr, Limit: uint16(8*len(mbGDT) - 1)}
	s.IDT = x86.DTable{Base: 0, Limit: 0x3ff} // the real-mode vector table a BIOS leaves
	s.CS = x86.DescriptorSegment(mbCS, mbGDT[1])
	s.DS = x86.DescriptorSegment(mbDS, mbGDT[2])
	s.ES, s.SS, s.FS, s.GS = s.DS, s.DS, s.DS, s.DS
	s.TR = x86.Segment{Limit: 0xffff, Type: 0xb, Present: true}
	s.LDT = x86.Segment{Limit: 0xffff, Type: 0x2, Present: true, Unusable: true}
	s.CR0 = x86.CR0_PE | x86.CR0_ET
	return b, nil
}

// loadMultibootAout loads the kernel by its header's address fields: the file from
// header offset - (header_addr - load_addr) goes to load_addr, load_end_addr - load_addr
// bytes of it (0: to the end of the file), then zeroes up to bss_end_addr. The checks
// are QEMU's.
func loadMultibootAout(ram *memory.RAM, l Layout, h *MultibootHeader, k KernelImage, b *MultibootBoot) error {
	if h.HeaderAddr < h.LoadAddr {
		return fmt.Errorf("bad multiboot header: header_addr %#x is below load_addr %#x", h.HeaderAddr, h.LoadAddr)
	}
	if int64(h.HeaderAddr-h.LoadAddr) > h.Offset {
		return fmt.Errorf("bad multiboot header: header_addr %#x - load_addr %#x exceeds the header's file offset %#x",
			h.HeaderAddr, h.LoadAddr, h.Offset)
	}
	text := h.Offset - int64(h.HeaderAddr-h.LoadAddr)
	var loadSize uint64
	if h.LoadEndAddr != 0 {
		if h.LoadEndAddr < h.LoadAddr {
			return fmt.Errorf("bad multiboot header: load_end_addr %#x is below load_addr %#x", h.LoadEndAddr, h.LoadAddr)
		}
		loadSize = uint64(h.LoadEndAddr - h.LoadAddr)
	} else {
		loadSize = uint64(k.Size() - text)
	}
	if text+int64(loadSize) > k.Size() {
		return fmt.Errorf("truncated multiboot kernel: the header loads %d bytes from offset %#x, the file has %d",
			loadSize, text, k.Size())
	}
	if loadSize > uint64(^uint32(0)-h.LoadAddr) {
		return fmt.Errorf("bad multiboot header: a %d-byte kernel at %#x does not fit below 4 GiB", loadSize, h.LoadAddr)
	}
	end := uint64(h.LoadAddr) + loadSize
	if h.BSSEndAddr != 0 {
		if uint64(h.BSSEndAddr) < end {
			return fmt.Errorf("bad multiboot header: bss_end_addr %#x is below the loaded image's end %#x", h.BSSEndAddr, end)
		}
		end = uint64(h.BSSEndAddr)
	}
	b.LoadAddr, b.KernelEnd, b.Entry = uint64(h.LoadAddr), end, uint64(h.EntryAddr)
	if err := checkMultibootRange(l, b.LoadAddr, end-b.LoadAddr, "multiboot kernel"); err != nil {
		return err
	}
	mem, _ := ram.Slice(b.LoadAddr, end-b.LoadAddr)
	if _, err := k.ReadAt(mem[:loadSize], text); err != nil && err != io.EOF {
		return fmt.Errorf("reading kernel: %w", err)
	}
	clear(mem[loadSize:])
	return nil
}

// loadMultibootELF loads an ELF kernel's PT_LOAD segments at their physical addresses
// (zeroing each beyond its file size); the kernel spans the lowest to the highest
// segment address and is entered at e_entry, as QEMU's load_elf does for it.
func loadMultibootELF(ram *memory.RAM, l Layout, k KernelImage, b *MultibootBoot) error {
	f, err := elf.NewFile(io.NewSectionReader(k, 0, k.Size()))
	if err != nil {
		return fmt.Errorf("multiboot ELF kernel: %v", err)
	}
	if f.Class != elf.ELFCLASS32 || f.Machine != elf.EM_386 {
		return errors.New("multiboot ELF kernel is not a 32-bit x86 (i386) ELF file")
	}
	low, high := uint64(1<<32), uint64(0)
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Memsz == 0 {
			continue
		}
		if p.Filesz > p.Memsz {
			return fmt.Errorf("multiboot ELF kernel: a segment's file size %#x exceeds its memory size %#x", p.Filesz, p.Memsz)
		}
		if p.Paddr+p.Memsz > 1<<32 {
			return fmt.Errorf("multiboot ELF kernel: segment %#x+%#x does not fit below 4 GiB", p.Paddr, p.Memsz)
		}
		if err := checkMultibootRange(l, p.Paddr, p.Memsz, "multiboot kernel segment"); err != nil {
			return err
		}
		mem, _ := ram.Slice(p.Paddr, p.Memsz)
		if _, err := p.ReadAt(mem[:p.Filesz], 0); err != nil && err != io.EOF {
			return fmt.Errorf("reading kernel: %w", err)
		}
		clear(mem[p.Filesz:])
		low, high = min(low, p.Paddr), max(high, p.Paddr+p.Memsz)
	}
	if high == 0 {
		return errors.New("multiboot ELF kernel has nothing to load (no PT_LOAD segment)")
	}
	b.LoadAddr, b.KernelEnd, b.Entry = low, high, uint64(uint32(f.Entry))
	return nil
}

// checkMultibootRange refuses a range outside low RAM or over what the loader and the
// BIOS area hold (GDT, stack, memory map, information structure; EBDA, ACPI tables).
func checkMultibootRange(l Layout, addr, size uint64, what string) error {
	end := addr + size
	if end > l.LowSize || end < addr {
		return fmt.Errorf("%s at %#x-%#x does not fit in the guest's %d MiB of RAM below 4 GiB; give it more memory (-m)",
			what, addr, end, l.LowSize>>20)
	}
	if size > 0 && addr < mbLoaderDataEnd && end > gdtAddr {
		return fmt.Errorf("%s at %#x-%#x overlaps the boot loader's data at %#x-%#x", what, addr, end, gdtAddr, mbLoaderDataEnd)
	}
	if size > 0 && addr < biosEnd && end > ebdaStart {
		return fmt.Errorf("%s at %#x-%#x overlaps the BIOS area %#x-%#x", what, addr, end, ebdaStart, biosEnd)
	}
	return nil
}

// multibootMemSizes returns mem_lower (KiB of RAM from 0, at most 640) and mem_upper (KiB
// of RAM contiguous from 1 MiB below 4 GiB, following RAM entries in any order as the
// option ROM does).
func multibootMemSizes(e820 []E820Entry) (lower, upper uint32) {
	for _, e := range e820 {
		if e.Type == E820RAM && e.Addr == 0 {
			lower = uint32(min(e.Size, vgaHoleStart) >> 10)
		}
	}
	top := uint64(1 << 20)
	for grew := true; grew; {
		grew = false
		for _, e := range e820 {
			if e.Type == E820RAM && e.Addr <= top && top < e.Addr+e.Size && e.Addr+e.Size <= 1<<32 {
				top, grew = e.Addr+e.Size, true
			}
		}
	}
	return lower, uint32((top - 1<<20) >> 10)
}

func pageAlign(v uint64) uint64 { return (v + 0xfff) &^ 0xfff }

// loadKernel boots c.Kernel as QEMU's -kernel does: a bzImage when the file has a Linux
// setup header, else a multiboot kernel when it has a multiboot header, else the
// bzImage loader's error.
func (m *Machine) loadKernel(c Config) (*x86.BootState, error) {
	h, err := CheckMultiboot(c.Kernel)
	if err != nil {
		return nil, err
	}
	if h == nil {
		m.Boot, err = LoadLinux(m.RAM, m.Layout, LinuxConfig{Kernel: c.Kernel, Initrd: c.Initrd, Cmdline: c.Cmdline, RSDP: m.ACPI.RSDP})
		if err != nil {
			return nil, err
		}
		return &m.Boot.State, nil
	}
	mods := c.Modules
	if len(mods) == 0 && c.Initrd != nil {
		mods = []Module{{Image: c.Initrd}}
	}
	m.Multiboot, err = LoadMultiboot(m.RAM, m.Layout, h, MultibootConfig{
		Kernel: c.Kernel, KernelName: c.KernelName, Cmdline: c.Cmdline, ModuleSpec: c.ModuleSpec, Modules: mods})
	if err != nil {
		return nil, err
	}
	return &m.Multiboot.State, nil
}

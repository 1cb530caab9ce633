package pc

import (
	"encoding/binary"
	"fmt"
	"io"

	"gemu/hw/memory"
	x86 "gemu/target-x86"
)

// Fixed guest-physical addresses of what the loader builds below 1 MiB. They sit in
// the first 640 KiB of RAM that the e820 map reports usable: the kernel copies the zero
// page and command line early and may reuse the rest.
const (
	gdtAddr      = 0x0500
	zeroPageAddr = 0x7000
	bootStackTop = 0x8ff0
	pml4Addr     = 0x9000
	pdptAddr     = 0xa000
	pdAddr       = 0xb000 // four page directories, 0xb000..0xefff, map 4 GiB in 2 MiB pages
	cmdlineAddr  = 0x20000
	cmdlineMax   = 0x10000 // ends at 0x30000, well below the EBDA

	// defaultKernelAddr is where a bzImage's protected-mode part goes unless it is
	// relocatable and has room at its preferred address (boot.rst: 0x100000).
	defaultKernelAddr = 0x100000

	// Selectors the boot protocol requires for the 32- and 64-bit entries.
	bootCS = 0x10
	bootDS = 0x18
	bootTS = 0x20
)

// KernelImage is a kernel (or initrd) file: read through ReaderAt, Size bytes long.
// The loader copies it straight into guest RAM, so its size is bounded by the RAM
// rather than by host heap.
type KernelImage interface {
	io.ReaderAt
	Size() int64
}

// SizedReaderAt adapts an io.ReaderAt with a known size (an *os.File and its Stat size,
// or a bytes.Reader).
type SizedReaderAt struct {
	io.ReaderAt
	N int64
}

// Size returns N.
func (s SizedReaderAt) Size() int64 { return s.N }

// LinuxBoot is what LoadLinux placed, for logs and tests.
type LinuxBoot struct {
	Header     *SetupHeader
	KernelAddr uint64 // where the protected-mode kernel was loaded
	Entry      uint64 // first instruction executed
	Long       bool   // 64-bit entry (else 32-bit protected mode)
	InitrdAddr uint64
	InitrdSize uint64
	ZeroPage   uint64
	Cmdline    uint64
	State      x86.BootState
}

// LinuxConfig is the input of LoadLinux.
type LinuxConfig struct {
	Kernel  KernelImage
	Initrd  KernelImage // nil for none
	Cmdline string
	// RSDP is the ACPI root pointer's address, passed in the zero page (0 for none).
	RSDP uint64
}

// LoadLinux loads a bzImage per the x86 boot protocol into ram (laid out as l) and
// returns the boot CPU's state: the 64-bit entry when the kernel has one, else the
// 32-bit protected-mode entry. Errors are one line and name the problem with the input.
func LoadLinux(ram *memory.RAM, l Layout, c LinuxConfig) (*LinuxBoot, error) {
	h, probe, err := readSetupHeader(c.Kernel)
	if err != nil {
		return nil, err
	}
	if uint64(len(c.Cmdline)) > uint64(h.CmdlineSize) || len(c.Cmdline) >= cmdlineMax {
		return nil, fmt.Errorf("kernel command line is %d bytes; this kernel accepts at most %d", len(c.Cmdline), h.CmdlineSize)
	}

	// The kernel needs init_size bytes from its load address (the decompressor's
	// buffer), never less than the payload itself.
	need := uint64(h.InitSize)
	if uint64(h.ProtectedModeLen) > need {
		need = uint64(h.ProtectedModeLen)
	}
	load := uint64(defaultKernelAddr)
	if h.Relocatable && h.PrefAddress >= defaultKernelAddr && h.PrefAddress+need <= l.LowSize &&
		(h.KernelAlignment == 0 || h.PrefAddress%uint64(h.KernelAlignment) == 0) {
		// Loading at the preferred address spares the decompressor a copy.
		load = h.PrefAddress
	}
	if load+need > l.LowSize {
		return nil, fmt.Errorf("not enough memory for the kernel: it needs %d MiB from %#x, the guest has %d MiB below 4 GiB",
			(need+(1<<20)-1)>>20, load, l.LowSize>>20)
	}
	kmem, ok := ram.Slice(load, uint64(h.ProtectedModeLen))
	if !ok {
		return nil, fmt.Errorf("kernel load range %#x+%#x is not RAM", load, h.ProtectedModeLen)
	}
	if _, err := c.Kernel.ReadAt(kmem, int64(h.SetupSize)); err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading kernel: %w", err)
	}

	b := &LinuxBoot{Header: h, KernelAddr: load, ZeroPage: zeroPageAddr, Cmdline: cmdlineAddr}

	if c.Initrd != nil {
		isize := uint64(c.Initrd.Size())
		// Highest page-aligned spot that ends by initrd_addr_max (inclusive) and the
		// top of low RAM; everything reserved lies below 1 MiB or in the PCI hole.
		top := l.LowSize
		if lim := uint64(h.InitrdAddrMax) + 1; h.InitrdAddrMax != 0 && lim < top {
			top = lim
		}
		kernelEnd := load + need
		if isize > top || (top-isize)&^0xfff < kernelEnd {
			return nil, fmt.Errorf("initrd of %d MiB does not fit between the kernel (ends %#x) and %#x; give the guest more memory",
				isize>>20, kernelEnd, top)
		}
		addr := (top - isize) &^ 0xfff
		if isize > 0 {
			imem, _ := ram.Slice(addr, isize)
			if _, err := c.Initrd.ReadAt(imem, 0); err != nil && err != io.EOF {
				return nil, fmt.Errorf("reading initrd: %w", err)
			}
		}
		b.InitrdAddr, b.InitrdSize = addr, isize
	}

	// Command line, NUL-terminated.
	cl := append([]byte(c.Cmdline), 0)
	if err := ram.WriteAt(cl, cmdlineAddr); err != nil {
		return nil, err
	}

	zp, ok := ram.Slice(zeroPageAddr, 4096)
	if !ok {
		return nil, fmt.Errorf("zero page %#x is not RAM", zeroPageAddr)
	}
	clear(zp)
	// The setup header goes into the zero page at its file offsets; then the fields a
	// boot loader owns are filled in.
	copy(zp[hdrSetupSects:h.HeaderEnd], probe[hdrSetupSects:h.HeaderEnd])
	le := binary.LittleEndian
	le.PutUint16(zp[hdrVidMode:], 0xffff) // "normal" text mode; there is no VGA anyway
	zp[hdrTypeOfLoader] = typeOfLoaderUnknown
	zp[hdrLoadflags] = h.Loadflags | loadflagCanUseHeap
	le.PutUint16(zp[hdrHeapEndPtr:], 0xfe00-0x200)
	le.PutUint32(zp[hdrCode32Start:], uint32(load))
	le.PutUint32(zp[hdrCmdLinePtr:], cmdlineAddr)
	le.PutUint32(zp[hdrRamdiskImage:], uint32(b.InitrdAddr))
	le.PutUint32(zp[hdrRamdiskSize:], uint32(b.InitrdSize))
	le.PutUint32(zp[bpExtRamdiskImg:], uint32(b.InitrdAddr>>32))
	le.PutUint32(zp[bpExtRamdiskSize:], uint32(b.InitrdSize>>32))
	le.PutUint64(zp[bpAcpiRsdpAddr:], c.RSDP)
	e820 := l.E820()
	if len(e820) > bpE820Max {
		return nil, fmt.Errorf("e820 map has %d entries, the zero page holds %d", len(e820), bpE820Max)
	}
	zp[bpE820Entries] = byte(len(e820))
	for i, e := range e820 {
		o := bpE820Table + 20*i
		le.PutUint64(zp[o:], e.Addr)
		le.PutUint64(zp[o+8:], e.Size)
		le.PutUint32(zp[o+16:], e.Type)
	}

	b.Long = h.Has64BitEntry()
	if err := writeGDT(ram, b.Long); err != nil {
		return nil, err
	}
	st := &b.State
	st.Regs.RFLAGS = x86.RFLAGS_RESERVED // interrupts off
	st.Regs.RSI = zeroPageAddr
	st.Regs.RSP = bootStackTop
	s := &st.SRegs
	s.GDT = x86.DTable{Base: gdtAddr, Limit: 5*8 - 1}
	s.DS = x86.FlatSegment(bootDS, false, false)
	s.ES, s.SS, s.FS, s.GS = s.DS, s.DS, s.DS, s.DS
	s.TR = x86.Segment{Selector: bootTS, Limit: 0x67, Type: 0xb, Present: true}
	s.LDT = x86.Segment{Limit: 0xffff, Type: 0x2, Present: true, Unusable: true}
	if b.Long {
		if err := writeIdentityPageTables(ram); err != nil {
			return nil, err
		}
		b.Entry = load + 0x200
		s.CS = x86.FlatSegment(bootCS, true, true)
		s.CR3 = pml4Addr
		s.CR4 = x86.CR4_PAE
		s.CR0 = x86.CR0_PE | x86.CR0_PG | x86.CR0_ET | x86.CR0_NE
		s.EFER = x86.EFER_LME | x86.EFER_LMA
	} else {
		b.Entry = load
		s.CS = x86.FlatSegment(bootCS, true, false)
		s.CR0 = x86.CR0_PE | x86.CR0_ET
	}
	st.Regs.RIP = b.Entry
	return b, nil
}

// CheckKernel validates a kernel file's setup header without loading it, so a command
// line can reject a file that is not a bzImage before creating a VM.
func CheckKernel(k KernelImage) (*SetupHeader, error) {
	h, _, err := readSetupHeader(k)
	return h, err
}

func readSetupHeader(k KernelImage) (*SetupHeader, []byte, error) {
	probe := make([]byte, setupProbeSize)
	n, err := k.ReadAt(probe, 0)
	if err != nil && err != io.EOF {
		return nil, nil, fmt.Errorf("reading kernel: %w", err)
	}
	h, err := ParseSetupHeader(probe[:n], k.Size())
	return h, probe, err
}

// GDT descriptors: null, unused, __BOOT_CS, __BOOT_DS, and a TSS so the task register
// the CPU holds matches a real descriptor.
func writeGDT(ram *memory.RAM, long bool) error {
	code := uint64(0x00cf9b000000ffff) // flat 32-bit code, execute/read, accessed
	if long {
		code = 0x00af9b000000ffff // L=1, D=0
	}
	gdt := []uint64{0, 0, code, 0x00cf93000000ffff, 0x00008b0000000067}
	for i, d := range gdt {
		if err := ram.Write64(gdtAddr+uint64(8*i), d); err != nil {
			return err
		}
	}
	return nil
}

// writeIdentityPageTables maps guest-virtual = guest-physical for the first 4 GiB
// with 2 MiB pages (1 GiB pages are not on every CPU model).
func writeIdentityPageTables(ram *memory.RAM) error {
	const present, rw, ps = 1, 2, 0x80
	if err := ram.Write64(pml4Addr, pdptAddr|present|rw); err != nil {
		return err
	}
	for i := uint64(1); i < 512; i++ {
		ram.Write64(pml4Addr+8*i, 0)
	}
	for i := uint64(0); i < 512; i++ {
		var e uint64
		if i < 4 {
			e = (pdAddr + 0x1000*i) | present | rw
		}
		ram.Write64(pdptAddr+8*i, e)
	}
	for i := uint64(0); i < 4*512; i++ {
		if err := ram.Write64(pdAddr+8*i, i<<21|present|rw|ps); err != nil {
			return err
		}
	}
	return nil
}

package virt

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"gemu/hw/fdt"
)

// Direct kernel boot as QEMU 7.2's hw/arm/boot.c (arm_setup_direct_kernel_boot) does
// it for a 64-bit guest. -kernel is tried, in order, as
//
//  1. an ELF file: its PT_LOAD segments at their physical addresses (which must lie in
//     RAM), entry e_entry (moved from the virtual to the physical address when the
//     executable segment holding it has p_vaddr != p_paddr); not a Linux boot;
//  2. a U-Boot legacy uImage (magic 0x27051956) of type kernel or kernel_noload,
//     uncompressed or gzip: the payload at ih_load, entry ih_ep; a Linux boot when
//     ih_os is Linux;
//  3. an arm64 Image (gzip-compressed or not) or any other file as a raw binary: a
//     Linux boot at RAM base + text_offset (+ 2 MiB when the offset is below the 4 KiB
//     QEMU keeps for its boot stub) when the Image header has a non-zero image_size,
//     else at RAM base + 0x80000.
//
// A Linux boot gets the initrd at RAM base + min(RAM/2, 128 MiB), or after the kernel
// if that is higher, page aligned; the DTB at the next 2 MiB boundary after the initrd;
// x0 = the DTB's address. Other kernels get no initrd (QEMU ignores -initrd for them),
// the DTB at RAM base when it fits below the image, and x0 = 0.
//
// gemu refuses, where QEMU would load garbage, a file that claims a format it then
// breaks (a gzip stream that does not decompress, an arm64 Image shorter than its
// PE section table says): the error is `could not load kernel 'PATH': REASON`.
const (
	kernel64LoadAddr = 0x80000 // KERNEL64_LOAD_ADDR
	kernelLoadAddr   = 0x10000 // KERNEL_LOAD_ADDR: where a kernel_noload uImage goes
	bootloaderMax    = 4 << 10 // BOOTLOADER_MAX_SIZE
	initrdMaxOffset  = 128 << 20
	dtbAlign         = 2 << 20
	pageSize         = 4096
	maxGunzip        = 256 << 20 // LOAD_IMAGE_MAX_GUNZIP_BYTES
	maxUImageGunzip  = 64 << 20  // UBOOT_MAX_GUNZIP_BYTES
)

// arm64 Image header (Documentation/arch/arm64/booting.rst): code0/1, text_offset at 8,
// image_size at 16, flags at 24, magic "ARM\x64" at 0x38.
const (
	imageHeaderSize = 64
	imageMagicOff   = 0x38
	imageMagic      = 0x644d5241
)

// U-Boot legacy image header (include/image.h): big-endian, 64 bytes.
const (
	uimageMagic        = 0x27051956
	uimageHeaderSize   = 64
	uimageOSLinux      = 5
	uimageTypeKernel   = 2
	uimageTypeRamdisk  = 3
	uimageTypeNoload   = 14
	uimageCompNone     = 0
	uimageCompGzip     = 1
	uimageSizeOff      = 12
	uimageLoadOff      = 16
	uimageEntryOff     = 20
	uimageOSOff        = 28
	uimageTypeOff      = 30
	uimageCompOff      = 31
	uimageMaxFileBytes = uimageHeaderSize
)

// segment is bytes to place in guest RAM.
type segment struct {
	addr uint64
	data []byte
}

// kernelLoad is a kernel file resolved to what goes where.
type kernelLoad struct {
	format    string // "ELF", "uImage", "arm64 Image", "raw binary"
	segs      []segment
	entry     uint64
	linux     bool   // boot as Linux: initrd, x0 = DTB
	low, high uint64 // image_low_addr, image_high_addr
	size      uint64 // kernel_size as QEMU counts it (image_size for an Image)
}

// kernelError is QEMU's wording for a kernel that cannot be loaded.
func kernelError(path string, err error) error {
	return fmt.Errorf("could not load kernel '%s': %w", path, err)
}

// readBounded reads a whole file of at most limit bytes.
func readBounded(path, what string, limit uint64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot open %s %q: %w", what, path, unwrapPath(err))
	}
	defer f.Close()
	return readAllBounded(f, path, what, limit)
}

func readAllBounded(f *os.File, path, what string, limit uint64) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %q is not a regular file", what, path)
	}
	if uint64(st.Size()) > limit {
		return nil, fmt.Errorf("%s %q (%d bytes) does not fit in guest RAM", what, path, st.Size())
	}
	return io.ReadAll(f)
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// loadKernelFile resolves path by QEMU's order of attempts.
func loadKernelFile(path string, ramBase, ramSize uint64, warn func(string)) (*kernelLoad, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, unwrapPath(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	var magic [4]byte
	if n, _ := f.ReadAt(magic[:], 0); n == 4 && string(magic[:]) == elf.ELFMAG {
		return loadELF(f, ramBase, ramSize)
	}
	if uint64(st.Size()) > ramSize+uimageMaxFileBytes {
		return nil, fmt.Errorf("too large to fit in RAM (file size %d, RAM size %d)", st.Size(), ramSize)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	if len(data) >= uimageHeaderSize && binary.BigEndian.Uint32(data) == uimageMagic {
		k, why := parseUImage(data, ramBase+kernelLoadAddr, false)
		if k != nil {
			return k, nil
		}
		// QEMU says why on stderr and goes on to load the file as an Image/raw binary.
		if warn != nil {
			warn(fmt.Sprintf("kernel '%s': %s; loading it as a raw binary", path, why))
		}
	}
	if len(data) >= 0x206 && string(data[0x202:0x206]) == "HdrS" && warn != nil {
		warn(fmt.Sprintf("kernel '%s' is an x86 bzImage (boot protocol header \"HdrS\"); loading it as a raw binary, as QEMU does", path))
	}
	return loadAArch64Image(data, ramBase, ramSize)
}

// loadELF places an AArch64 ELF's PT_LOAD segments.
func loadELF(f *os.File, ramBase, ramSize uint64) (*kernelLoad, error) {
	ef, err := elf.NewFile(f)
	if err != nil {
		return nil, fmt.Errorf("corrupt ELF file: %w", err)
	}
	if ef.Machine != elf.EM_AARCH64 || ef.Class != elf.ELFCLASS64 {
		return nil, fmt.Errorf("ELF file for %v (%v), not AArch64", ef.Machine, ef.Class)
	}
	if ef.Data != elf.ELFDATA2LSB {
		return nil, errors.New("big-endian ELF files are not supported")
	}
	ramEnd := ramBase + ramSize
	k := &kernelLoad{format: "ELF", entry: ef.Entry, low: ^uint64(0)}
	var total uint64
	for _, p := range ef.Progs {
		if p.Type != elf.PT_LOAD || p.Memsz == 0 {
			continue
		}
		if p.Filesz > p.Memsz {
			return nil, fmt.Errorf("corrupt ELF file: segment at %#x has p_filesz %#x > p_memsz %#x", p.Paddr, p.Filesz, p.Memsz)
		}
		end := p.Paddr + p.Memsz
		if p.Paddr < ramBase || end > ramEnd || end < p.Paddr {
			return nil, fmt.Errorf("ELF segment at %#x-%#x lies outside RAM (%#x-%#x)", p.Paddr, end, ramBase, ramEnd)
		}
		if total += p.Filesz; total > ramSize {
			return nil, errors.New("corrupt ELF file: segments larger than RAM")
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil && p.Filesz > 0 {
			return nil, fmt.Errorf("truncated ELF file: segment at %#x: %w", p.Paddr, err)
		}
		// The bytes past p_filesz stay zero: the board's RAM is fresh.
		k.segs = append(k.segs, segment{p.Paddr, data})
		k.low, k.high = min(k.low, p.Paddr), max(k.high, end)
		if p.Vaddr != p.Paddr && p.Flags&elf.PF_X != 0 && ef.Entry >= p.Vaddr && ef.Entry-p.Vaddr < p.Filesz {
			k.entry = ef.Entry - p.Vaddr + p.Paddr
		}
	}
	if len(k.segs) == 0 {
		return nil, errors.New("ELF file has no loadable segment")
	}
	k.size = total
	return k, nil
}

// parseUImage resolves a U-Boot legacy image of the wanted type (a kernel, or with
// ramdisk a ramdisk). It returns nil and QEMU's reason when the image is not one it
// loads.
func parseUImage(data []byte, loadAddr uint64, ramdisk bool) (*kernelLoad, string) {
	be := binary.BigEndian
	size := uint64(be.Uint32(data[uimageSizeOff:]))
	load, ep := uint64(be.Uint32(data[uimageLoadOff:])), uint64(be.Uint32(data[uimageEntryOff:]))
	typ, comp := data[uimageTypeOff], data[uimageCompOff]
	want := byte(uimageTypeKernel)
	if ramdisk {
		want = uimageTypeRamdisk
	}
	switch {
	case typ == want:
	case !ramdisk && typ == uimageTypeNoload:
		load = loadAddr + uimageHeaderSize
		ep += load
	default:
		return nil, fmt.Sprintf("wrong uImage type %d, expected %d", typ, want)
	}
	if size > uint64(len(data)-uimageHeaderSize) {
		return nil, fmt.Sprintf("truncated uImage (payload %d bytes, file has %d)", size, len(data)-uimageHeaderSize)
	}
	payload := data[uimageHeaderSize : uimageHeaderSize+size]
	switch comp {
	case uimageCompNone:
	case uimageCompGzip:
		out, err := gunzip(payload, maxUImageGunzip)
		if err != nil {
			return nil, "unable to decompress gzipped uImage: " + err.Error()
		}
		payload = out
	default:
		return nil, fmt.Sprintf("unable to load u-boot images with compression type %d", comp)
	}
	k := &kernelLoad{format: "uImage", entry: ep, linux: data[uimageOSOff] == uimageOSLinux,
		low: load, high: load + uint64(len(payload)), size: uint64(len(payload))}
	k.segs = []segment{{load, payload}}
	return k, ""
}

func gunzip(data []byte, limit int64) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	out, err := io.ReadAll(io.LimitReader(zr, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(out)) > limit {
		return nil, fmt.Errorf("decompresses to more than %d MiB", limit>>20)
	}
	return out, nil
}

// loadAArch64Image is QEMU's load_aarch64_image: gzip is decompressed, the arm64
// header's text_offset and image_size are honoured, anything else is a raw binary at
// RAM base + 0x80000. Always a Linux boot.
func loadAArch64Image(data []byte, ramBase, ramSize uint64) (*kernelLoad, error) {
	if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b {
		out, err := gunzip(data, int64(min(ramSize, maxGunzip)))
		if err != nil {
			return nil, fmt.Errorf("corrupt gzip-compressed kernel: %w", err)
		}
		data = out
	}
	k := &kernelLoad{format: "raw binary", linux: true, size: uint64(len(data))}
	offset := uint64(kernel64LoadAddr)
	if len(data) >= imageMagicOff+4 && binary.LittleEndian.Uint32(data[imageMagicOff:]) == imageMagic {
		k.format = "arm64 Image"
		if len(data) < imageHeaderSize {
			return nil, fmt.Errorf("truncated arm64 Image: %d bytes, shorter than its 64-byte header", len(data))
		}
		if end, ok := peRawEnd(data); ok && end > uint64(len(data)) {
			return nil, fmt.Errorf("truncated arm64 Image: %d bytes, its PE/EFI section table needs %d", len(data), end)
		}
		le := binary.LittleEndian
		if size := le.Uint64(data[16:]); size != 0 {
			k.size = size
			offset = le.Uint64(data[8:])
			if offset < bootloaderMax {
				offset += 2 << 20
			}
		}
	}
	if k.size > ramSize || offset > ramSize-min(ramSize, uint64(len(data))) {
		return nil, fmt.Errorf("kernel is too large to fit in RAM (kernel size %d at offset %#x, RAM size %d)", k.size, offset, ramSize)
	}
	k.entry = ramBase + offset
	k.low, k.high = k.entry, k.entry+k.size
	k.segs = []segment{{k.entry, data}}
	return k, nil
}

// peRawEnd returns the end of the last section's raw data of the PE/COFF header an
// EFI-stub kernel carries ("MZ" at 0, PE offset at 0x3c).
func peRawEnd(d []byte) (uint64, bool) {
	le := binary.LittleEndian
	if len(d) < 0x40 || string(d[:2]) != "MZ" {
		return 0, false
	}
	pe := uint64(le.Uint32(d[0x3c:]))
	if pe+24 > uint64(len(d)) || string(d[pe:pe+4]) != "PE\x00\x00" {
		return 0, false
	}
	nsec := uint64(le.Uint16(d[pe+6:]))
	optSize := uint64(le.Uint16(d[pe+20:]))
	sec := pe + 24 + optSize
	if sec+nsec*40 > uint64(len(d)) {
		return sec + nsec*40, true
	}
	var end uint64
	for i := range nsec {
		s := d[sec+40*i:]
		end = max(end, uint64(le.Uint32(s[20:]))+uint64(le.Uint32(s[16:]))) // PointerToRawData + SizeOfRawData
	}
	return end, true
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

// bootLayout is where everything of a direct kernel boot goes.
type bootLayout struct {
	k           *kernelLoad
	initrd      []byte
	initrdStart uint64
	dtbAddr     uint64 // 0: no DTB in memory (a non-Linux image starting at RAM base)
	x0          uint64
}

// layout places the initrd and the DTB (dtbSize bytes) around a resolved kernel.
func layout(k *kernelLoad, initrdPath string, ramBase, ramSize, dtbSize uint64, warn func(string)) (*bootLayout, error) {
	ramEnd := ramBase + ramSize
	b := &bootLayout{k: k}
	b.initrdStart = ramBase + min(ramSize/2, initrdMaxOffset)
	if k.high != 0 {
		b.initrdStart = max(b.initrdStart, k.high)
	}
	b.initrdStart = alignUp(b.initrdStart, pageSize)
	if !k.linux {
		if initrdPath != "" && warn != nil {
			warn(fmt.Sprintf("-initrd ignored: the %s kernel is not booted as Linux (as in QEMU)", k.format))
		}
		// The DTB goes at RAM base if it fits below the image (QEMU's load_dtb limit).
		if k.low > ramBase && dtbSize <= k.low-ramBase {
			b.dtbAddr = ramBase
		}
		return b, nil
	}
	if initrdPath != "" {
		if b.initrdStart >= ramEnd {
			return nil, fmt.Errorf("could not load initrd '%s': too big to fit into RAM after the kernel", initrdPath)
		}
		f, err := os.Open(initrdPath)
		if err != nil {
			return nil, fmt.Errorf("could not load initrd '%s': %w", initrdPath, unwrapPath(err))
		}
		data, err := readAllBounded(f, initrdPath, "initrd", ramEnd-b.initrdStart+uimageHeaderSize)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("could not load initrd '%s': too big to fit into RAM after the kernel", initrdPath)
		}
		// A U-Boot ramdisk image is unwrapped (QEMU's load_ramdisk), else it is raw.
		if len(data) >= uimageHeaderSize && binary.BigEndian.Uint32(data) == uimageMagic {
			if r, _ := parseUImage(data, 0, true); r != nil {
				data = r.segs[0].data
			}
		}
		if uint64(len(data)) > ramEnd-b.initrdStart {
			return nil, fmt.Errorf("could not load initrd '%s': too big to fit into RAM after the kernel", initrdPath)
		}
		b.initrd = data
	}
	b.dtbAddr = alignUp(b.initrdStart+uint64(len(b.initrd)), dtbAlign)
	if b.dtbAddr >= ramEnd || dtbSize > ramEnd-b.dtbAddr {
		return nil, errors.New("not enough space for DTB after kernel/initrd")
	}
	b.x0 = b.dtbAddr
	return b, nil
}

// load places the kernel, initrd and device tree and points CPU 0 at the entry.
func (m *Machine) load() error {
	var root *fdt.Node
	var blob *fdt.Blob
	if m.cfg.DTB != "" {
		raw, err := readBounded(m.cfg.DTB, "device tree", 2<<20)
		if err != nil {
			return err
		}
		if blob, err = fdt.Parse(raw); err != nil {
			return fmt.Errorf("device tree %q: %w", m.cfg.DTB, err)
		}
		root = blob.Root
	} else {
		root = m.deviceTree()
		blob = &fdt.Blob{Root: root}
	}
	if m.cfg.Kernel == "" {
		if m.cfg.Initrd != "" || m.cfg.Append != "" {
			return errors.New("-initrd and -append need -kernel")
		}
		m.dtb = blob.Marshal()
		return nil
	}
	if m.cfg.Incoming {
		// A restore: RAM and the vCPUs come from the stream. Reading and placing a
		// 30 MiB kernel was most of the time a restore took to run.
		if _, err := os.Stat(m.cfg.Kernel); err != nil {
			return kernelError(m.cfg.Kernel, err)
		}
		m.dtb = blob.Marshal()
		return nil
	}
	k, err := loadKernelFile(m.cfg.Kernel, RAMBase, m.cfg.RAMSize, m.cfg.Warn)
	if err != nil {
		return kernelError(m.cfg.Kernel, err)
	}
	for _, s := range k.segs {
		if end := s.addr + uint64(len(s.data)); s.addr < RAMBase || end > RAMBase+m.cfg.RAMSize || end < s.addr {
			return kernelError(m.cfg.Kernel, fmt.Errorf("%s load address %#x-%#x lies outside RAM (%#x-%#x)", k.format, s.addr, end, RAMBase, RAMBase+m.cfg.RAMSize))
		}
	}
	// The DTB's size depends on /chosen, which depends on the initrd's: lay out with
	// the size of a tree carrying initrd properties (the values do not change its size).
	setChosen(root, m.cfg.Append, 1, 2)
	probe := uint64(len(blob.Marshal()))
	b, err := layout(k, m.cfg.Initrd, RAMBase, m.cfg.RAMSize, probe, m.cfg.Warn)
	if err != nil {
		return err
	}
	root.Lookup("chosen").Delete("linux,initrd-start")
	root.Lookup("chosen").Delete("linux,initrd-end")
	if len(b.initrd) > 0 {
		setChosen(root, m.cfg.Append, b.initrdStart, b.initrdStart+uint64(len(b.initrd)))
	}
	m.dtb = blob.Marshal()
	if len(m.dtb) > 2<<20 {
		return fmt.Errorf("device tree is %d bytes, over the 2 MiB the boot protocol allows", len(m.dtb))
	}
	segs := append([]segment(nil), k.segs...)
	if b.dtbAddr != 0 {
		segs = append(segs, segment{b.dtbAddr, m.dtb})
	}
	if len(b.initrd) > 0 {
		segs = append(segs, segment{b.initrdStart, b.initrd})
	}
	for _, s := range segs {
		if err := m.ram.WriteAt(s.data, s.addr); err != nil {
			return kernelError(m.cfg.Kernel, err)
		}
	}
	m.entry, m.dtbAddr = k.entry, b.dtbAddr
	m.cpus[0].Reset(k.entry, b.x0)
	return nil
}

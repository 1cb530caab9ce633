package pc

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Offsets of setup-header fields in a bzImage (and in the zero page, which embeds the
// header at the same offsets). Documentation/arch/x86/boot.rst.
const (
	hdrSetupSects    = 0x1f1
	hdrSyssize       = 0x1f4
	hdrVidMode       = 0x1fa
	hdrBootFlag      = 0x1fe
	hdrJump          = 0x200
	hdrMagic         = 0x202
	hdrVersion       = 0x206
	hdrTypeOfLoader  = 0x210
	hdrLoadflags     = 0x211
	hdrCode32Start   = 0x214
	hdrRamdiskImage  = 0x218
	hdrRamdiskSize   = 0x21c
	hdrHeapEndPtr    = 0x224
	hdrCmdLinePtr    = 0x228
	hdrInitrdAddrMax = 0x22c
	hdrKernelAlign   = 0x230
	hdrRelocatable   = 0x234
	hdrXLoadflags    = 0x236
	hdrCmdlineSize   = 0x238
	hdrPrefAddress   = 0x258
	hdrInitSize      = 0x260

	// Fields of struct boot_params outside the setup header.
	bpAcpiRsdpAddr   = 0x070
	bpExtRamdiskImg  = 0x0c0
	bpExtRamdiskSize = 0x0c4
	bpExtCmdLinePtr  = 0x0c8
	bpE820Entries    = 0x1e8
	bpE820Table      = 0x2d0
	bpE820Max        = 128
)

// Setup-header flag bits.
const (
	loadflagLoadedHigh  = 0x01
	loadflagCanUseHeap  = 0x80
	xlfKernel64         = 0x01
	typeOfLoaderUnknown = 0xff
	minBootProtocol     = 0x0206
)

// SetupHeader is the parsed, validated part of a bzImage's setup header that the
// loader acts on.
type SetupHeader struct {
	Version          uint16
	SetupSects       int    // real-mode setup sectors (0 in the file means 4)
	Loadflags        uint8  //
	Code32Start      uint32 // default protected-mode load/entry address
	InitrdAddrMax    uint32 // highest byte address the initrd may occupy
	KernelAlignment  uint32
	Relocatable      bool
	XLoadflags       uint16 // 0 before protocol 2.12
	CmdlineSize      uint32 // max command line length without the NUL
	PrefAddress      uint64 // preferred load address (2.10+)
	InitSize         uint32 // bytes the kernel needs from its load address to start (2.10+)
	HeaderEnd        int    // offset one past the last setup-header byte
	SetupSize        int    // bytes of real-mode setup code (and boot sector) before the kernel
	ProtectedModeLen int64  // bytes of protected-mode kernel following the setup code
}

// Has64BitEntry reports whether the kernel has the 64-bit entry point at +0x200.
func (h *SetupHeader) Has64BitEntry() bool { return h.XLoadflags&xlfKernel64 != 0 }

// setupProbeSize is how much of the file ParseSetupHeader needs: the boot sector plus
// the setup header (which ends well below 0x300 in every protocol version).
const setupProbeSize = 0x300

// ParseSetupHeader validates the start of a kernel file (at least setupProbeSize bytes,
// or the whole file if shorter) of fileSize bytes and returns its setup header. The
// error says what the file is when it is recognisably not a bzImage.
func ParseSetupHeader(b []byte, fileSize int64) (*SetupHeader, error) {
	if what := identifyNonBzImage(b); what != "" {
		return nil, fmt.Errorf("not a bzImage: %s", what)
	}
	if len(b) < setupProbeSize || fileSize < setupProbeSize {
		return nil, fmt.Errorf("not a bzImage: file too short (%d bytes)", fileSize)
	}
	le := binary.LittleEndian
	if string(b[hdrMagic:hdrMagic+4]) != "HdrS" {
		return nil, fmt.Errorf("not a bzImage: no \"HdrS\" setup header at offset %#x", hdrMagic)
	}
	if le.Uint16(b[hdrBootFlag:]) != 0xaa55 {
		return nil, fmt.Errorf("not a bzImage: boot flag %#x, want 0xaa55", le.Uint16(b[hdrBootFlag:]))
	}
	h := &SetupHeader{Version: le.Uint16(b[hdrVersion:])}
	if h.Version < minBootProtocol {
		return nil, fmt.Errorf("kernel boot protocol %d.%02d is too old (need 2.06 or later)", h.Version>>8, h.Version&0xff)
	}
	h.HeaderEnd = hdrJump + 2 + int(b[hdrJump+1])
	if b[hdrJump] != 0xeb || h.HeaderEnd > len(b) || h.HeaderEnd < hdrCmdlineSize+4 {
		return nil, fmt.Errorf("not a bzImage: malformed setup header (jump %#x %#x)", b[hdrJump], b[hdrJump+1])
	}
	h.SetupSects = int(b[hdrSetupSects])
	if h.SetupSects == 0 {
		h.SetupSects = 4
	}
	h.SetupSize = (h.SetupSects + 1) * 512
	h.ProtectedModeLen = fileSize - int64(h.SetupSize)
	if h.ProtectedModeLen <= 0 {
		return nil, fmt.Errorf("not a bzImage: %d setup sectors but the file has only %d bytes", h.SetupSects, fileSize)
	}
	if syssize := int64(le.Uint32(b[hdrSyssize:])) * 16; syssize > h.ProtectedModeLen {
		return nil, fmt.Errorf("truncated bzImage: header says %d bytes of kernel, file has %d", syssize, h.ProtectedModeLen)
	}
	h.Loadflags = b[hdrLoadflags]
	if h.Loadflags&loadflagLoadedHigh == 0 {
		return nil, fmt.Errorf("zImage kernels (loaded at 0x10000) are not supported; need a bzImage")
	}
	h.Code32Start = le.Uint32(b[hdrCode32Start:])
	h.InitrdAddrMax = le.Uint32(b[hdrInitrdAddrMax:])
	h.KernelAlignment = le.Uint32(b[hdrKernelAlign:])
	h.Relocatable = b[hdrRelocatable] != 0
	h.CmdlineSize = le.Uint32(b[hdrCmdlineSize:])
	if h.Version >= 0x020a && h.HeaderEnd >= hdrInitSize+4 {
		h.PrefAddress = le.Uint64(b[hdrPrefAddress:])
		h.InitSize = le.Uint32(b[hdrInitSize:])
	}
	if h.Version >= 0x020c {
		h.XLoadflags = le.Uint16(b[hdrXLoadflags:])
	}
	if h.KernelAlignment != 0 && h.KernelAlignment&(h.KernelAlignment-1) != 0 {
		return nil, fmt.Errorf("bad bzImage: kernel_alignment %#x is not a power of two", h.KernelAlignment)
	}
	return h, nil
}

// identifyNonBzImage names common kernel-file mistakes so the error helps the user.
func identifyNonBzImage(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("\x7fELF")):
		return "this is an ELF file (an uncompressed vmlinux?); pass arch/x86/boot/bzImage"
	case len(b) >= 0x3c && string(b[0x38:0x3c]) == "ARM\x64":
		return "this is an arm64 Image kernel; use gemu-system-aarch64"
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		return "this is a gzip file; pass the bzImage itself"
	}
	return ""
}

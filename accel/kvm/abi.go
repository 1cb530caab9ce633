package kvm

import "unsafe"

// The KVM ABI, from <linux/kvm.h> and <asm/kvm.h> (x86-64). The Go structs below must
// match the C layouts byte for byte; abi_test.go checks their sizes and the size field
// of every ioctl number that carries one.

const kvmio = 0xAE

func ioc(dir, nr, size uintptr) uintptr { return dir<<30 | size<<16 | kvmio<<8 | nr }
func io(nr uintptr) uintptr             { return ioc(0, nr, 0) }
func iow(nr, size uintptr) uintptr      { return ioc(1, nr, size) }
func ior(nr, size uintptr) uintptr      { return ioc(2, nr, size) }
func iowr(nr, size uintptr) uintptr     { return ioc(3, nr, size) }

var (
	kvmGetAPIVersion       = io(0x00)
	kvmCreateVM            = io(0x01)
	kvmCheckExtension      = io(0x03)
	kvmGetVCPUMmapSize     = io(0x04)
	kvmGetSupportedCPUID   = iowr(0x05, unsafe.Sizeof(cpuidHeader{}))
	kvmCreateVCPU          = io(0x41)
	kvmSetUserMemoryRegion = iow(0x46, unsafe.Sizeof(userspaceMemoryRegion{}))
	kvmSetTSSAddr          = io(0x47)
	kvmSetIdentityMapAddr  = iow(0x48, 8)
	kvmCreateIRQChip       = io(0x60)
	kvmIRQLine             = iow(0x61, unsafe.Sizeof(irqLevel{}))
	kvmSetGSIRouting       = iow(0x6a, unsafe.Sizeof(irqRoutingHeader{}))
	kvmCreatePIT2          = iow(0x77, unsafe.Sizeof(pitConfig{}))
	kvmRun                 = io(0x80)
	kvmGetRegs             = ior(0x81, unsafe.Sizeof(regs{}))
	kvmSetRegs             = iow(0x82, unsafe.Sizeof(regs{}))
	kvmGetSregs            = ior(0x83, unsafe.Sizeof(sregs{}))
	kvmSetSregs            = iow(0x84, unsafe.Sizeof(sregs{}))
	kvmSetMSRs             = iow(0x89, unsafe.Sizeof(msrsHeader{}))
	kvmSetFPU              = iow(0x8d, unsafe.Sizeof(fpu{}))
	kvmSetCPUID2           = iow(0x90, unsafe.Sizeof(cpuidHeader{}))
	kvmGetMPState          = ior(0x98, unsafe.Sizeof(mpState{}))
	kvmSignalMSI           = iow(0xa5, unsafe.Sizeof(msi{}))
	kvmRegisterCoalesced   = iow(0x67, unsafe.Sizeof(coalescedZone{}))
)

// Capabilities (KVM_CHECK_EXTENSION).
const (
	capIRQChip            = 0
	capUserMemory         = 3
	capSetTSSAddr         = 4
	capExtCPUID           = 7
	capNrVCPUs            = 9
	capPIT2               = 33
	capIRQRouting         = 25
	capSetIdentityMapAddr = 37
	capMaxVCPUs           = 66
	capTSCDeadlineTimer   = 72
	capImmediateExit      = 136
	capCoalescedMMIO      = 15 // the check returns the ring's page offset in the vCPU mapping
	capCoalescedPIO       = 162
)

// Exit reasons (kvm_run.exit_reason).
const (
	exitUnknown       = 0
	exitException     = 1
	exitIO            = 2
	exitHypercall     = 3
	exitDebug         = 4
	exitHLT           = 5
	exitMMIO          = 6
	exitIRQWindowOpen = 7
	exitShutdown      = 8
	exitFailEntry     = 9
	exitIntr          = 10
	exitInternalError = 17
	exitSystemEvent   = 24
)

// exitNames names the exit reasons gemu does not expect, for error messages.
var exitNames = map[uint32]string{
	exitException:     "KVM_EXIT_EXCEPTION",
	exitHypercall:     "KVM_EXIT_HYPERCALL",
	exitDebug:         "KVM_EXIT_DEBUG",
	exitIRQWindowOpen: "KVM_EXIT_IRQ_WINDOW_OPEN",
}

const (
	exitIOOut = 1 // kvm_run.io.direction; 0 is in

	systemEventShutdown = 1
	systemEventReset    = 2
	systemEventCrash    = 3

	pitSpeakerDummy = 1

	irqRoutingIRQChip = 1
	irqchipPICMaster  = 0
	irqchipPICSlave   = 1
	irqchipIOAPIC     = 2

	cpuidFlagSignificantIndex = 1

	mpStateRunnable      = 0
	mpStateUninitialized = 1
)

// kvmRunHeader is the start of the vCPU's shared kvm_run page; the exit-specific union
// follows at offset 32 (256 bytes).
type kvmRunHeader struct {
	RequestInterruptWindow     uint8
	ImmediateExit              uint8
	_                          [6]uint8
	ExitReason                 uint32
	ReadyForInterruptInjection uint8
	IfFlag                     uint8
	Flags                      uint16
	CR8                        uint64
	APICBase                   uint64
	U                          [256]byte
}

// Views of kvmRunHeader.U for the exits we handle.
type exitIOData struct {
	Direction  uint8
	Size       uint8
	Port       uint16
	Count      uint32
	DataOffset uint64
}

type exitMMIOData struct {
	PhysAddr uint64
	Data     [8]byte
	Len      uint32
	IsWrite  uint8
	_        [3]uint8
}

type exitFailEntryData struct {
	HardwareEntryFailureReason uint64
	CPU                        uint32
	_                          uint32
}

type exitInternalData struct {
	Suberror uint32
	NData    uint32
	Data     [16]uint64
}

type exitSystemEventData struct {
	Type  uint32
	NData uint32
	Data  [16]uint64
}

type userspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

type irqLevel struct {
	IRQ   uint32
	Level uint32
}

type pitConfig struct {
	Flags uint32
	_     [15]uint32
}

type irqRoutingHeader struct {
	Nr    uint32
	Flags uint32
}

type irqRoutingEntry struct {
	GSI     uint32
	Type    uint32
	Flags   uint32
	_       uint32
	IRQChip uint32 // u.irqchip.irqchip; u.msi.address_lo
	Pin     uint32 // u.irqchip.pin; u.msi.address_hi
	MSIData uint32 // u.msi.data
	_       [5]uint32
}

type regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

type segment struct {
	Base                           uint64
	Limit                          uint32
	Selector                       uint16
	Type                           uint8
	Present, DPL, DB, S, L, G, AVL uint8
	Unusable                       uint8
	_                              uint8
}

type dtable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

type sregs struct {
	CS, DS, ES, FS, GS, SS, TR, LDT segment
	GDT, IDT                        dtable
	CR0, CR2, CR3, CR4, CR8         uint64
	EFER                            uint64
	APICBase                        uint64
	InterruptBitmap                 [4]uint64
}

type fpu struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	_          uint32
}

type msrsHeader struct {
	NMSRs uint32
	_     uint32
}

type msrEntry struct {
	Index uint32
	_     uint32
	Data  uint64
}

type cpuidHeader struct {
	NEnt uint32
	_    uint32
}

type cpuidEntry struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	_        [3]uint32
}

type msi struct {
	AddressLo uint32
	AddressHi uint32
	Data      uint32
	Flags     uint32
	DevID     uint32
	_         [12]uint8
}

type mpState struct {
	State uint32
}

// struct kvm_coalesced_mmio_zone: guest writes that lie wholly inside [Addr, Addr+Size)
// (port I/O when PIO is 1) are queued in the coalesced ring instead of exiting.
type coalescedZone struct {
	Addr uint64
	Size uint32
	PIO  uint32
}

// struct kvm_coalesced_mmio: one queued write.
type coalescedEntry struct {
	PhysAddr uint64
	Len      uint32
	PIO      uint32
	Data     [8]byte
}

// coalescedMax is KVM_COALESCED_MMIO_MAX for 4 KiB pages: the entries after the ring's
// two indexes in one page.
const coalescedMax = (4096 - 8) / 24

// struct kvm_coalesced_mmio_ring, shared by every vCPU's mapping: KVM appends at Last,
// user space consumes from First, both modulo coalescedMax.
type coalescedRing struct {
	First, Last uint32
	Entries     [coalescedMax]coalescedEntry
}

// Package monitor owns gemu's machine monitors: the QMP server (QEMU 7.2's wire
// protocol: greeting, capabilities negotiation, commands with QEMU's argument checks
// and error classes, asynchronous events) and the human monitor (HMP), over any stream
// (Unix or TCP sockets, several clients at once, stdio). It drives a Machine, the
// machine control interface the run loop implements for whichever board runs.
//
// Clients are untrusted: a message is bounded in size and nesting, a malformed one gets
// one error reply, and a client that does not read its replies is dropped once its
// bounded output queue is full; the guest keeps running meanwhile.
//
// It must not know board or device internals: what it reports comes through Machine.
package monitor

// Status is the run state, as query-status names it.
type Status string

// Run states gemu reaches.
const (
	Running   Status = "running"
	Paused    Status = "paused"    // stop
	Prelaunch Status = "prelaunch" // -S, or after system_reset of a stopped guest
	Shutdown  Status = "shutdown"  // the guest powered off under -no-shutdown
)

// Machine is the machine control interface the monitors drive. Methods are called
// from monitor goroutines, concurrently with the guest.
type Machine interface {
	Status() Status
	// Stop pauses the guest: it returns once no vCPU executes guest code, having
	// emitted STOP (nothing if already stopped).
	Stop() error
	// Cont resumes it (RESUME); refused in Shutdown until a reset.
	Cont() error
	// Reset resets the guest as the host's system_reset (RESET follows).
	Reset() error
	// PowerDown asks the guest to power off (POWERDOWN follows).
	PowerDown() error
	// Quit ends the process (the caller has sent its reply and the SHUTDOWN event).
	Quit()
	CPUs() []CPU
	Blocks() []Block
	Chardevs() []Chardev
	PCI() []PCIDevice
	// ReadPhys reads guest-physical memory (xp).
	ReadPhys(addr uint64, p []byte) error
	Info() Info
}

// Info is the machine's fixed identity.
type Info struct {
	Name       string // -name; "" when none
	UUID       string // -uuid; "" means QEMU's all-zero UUID
	Target     string // "aarch64", "x86_64"
	KVMPresent bool
	KVMEnabled bool
	Machines   []MachineType
	Probe      *Probe // the tables the capability probes answer from (probe.go)
}

// MachineType is one entry of query-machines.
type MachineType struct {
	Name             string
	Alias            string
	IsDefault        bool
	CPUMax           int
	HotpluggableCPUs bool
	NUMAMemSupported bool
	DefaultCPUType   string
	DefaultRAMID     string
}

// CPU is one vCPU, as query-cpus-fast reports it.
type CPU struct {
	Index    int
	ThreadID int
	QOMPath  string
	Target   string
	Props    map[string]int // socket-id, core-id, ... as the board's topology has them
	Current  bool           // the monitor's current CPU (info cpus marks it "*")
}

// Block is one block device of query-block.
type Block struct {
	Device    string // the drive id
	QDev      string // the device's QOM path ("" when no device took the drive)
	Removable bool
	Locked    bool
	Inserted  *Inserted // nil: no medium
}

// Inserted is a drive's medium.
type Inserted struct {
	File         string
	NodeName     string
	Format       string
	ReadOnly     bool
	BackingFile  string // "" when none
	BackingDepth int
	VirtualSize  int64
	ActualSize   int64
	Writeback    bool
	Direct       bool
	NoFlush      bool
	DetectZeroes string // off, on, unmap
	Encrypted    bool
}

// Chardev is one character device of query-chardev.
type Chardev struct {
	Label        string
	Filename     string
	FrontendOpen bool
}

// PCIDevice is one function of query-pci (bus 0).
type PCIDevice struct {
	Bus, Slot, Function int
	Vendor, Device      uint16
	SubVendor, SubID    uint16
	Class               uint16 // base class << 8 | subclass
	IRQPin              int    // 0 none, 1 INTA .. 4 INTD
	IRQ                 int
	QDevID              string
	Regions             []PCIRegion
	Bridge              *PCIBridge // a PCI-to-PCI bridge's bus and windows; nil for others
}

// PCIBridge is a bridge's side of query-pci: its bus numbers, windows (base > limit
// when closed) and the functions behind it.
type PCIBridge struct {
	Number, Secondary, Subordinate int
	IOBase, IOLimit                int64
	MemBase, MemLimit              int64
	PrefBase, PrefLimit            int64
	Devices                        []PCIDevice // nil until the guest numbers the secondary bus
}

// PCIRegion is one BAR.
type PCIRegion struct {
	BAR      int
	IO       bool
	Address  int64 // -1 when not mapped
	Size     uint64
	Prefetch bool
	Mem64    bool
}

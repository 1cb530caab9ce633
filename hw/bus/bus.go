// Package bus owns MMIO and port-I/O dispatch: one Device interface that every emulated
// device implements, and a Bus that maps non-overlapping address ranges to devices
// (crosvm's Bus/BusDevice shape). A machine builds one Bus for MMIO and, on x86, one for
// port I/O; accelerators hand exits to them. It also defines the interrupt-line type
// devices raise.
//
// It must not know which accelerator runs the guest, nor any device's internals.
package bus

import (
	"fmt"
	"sort"
	"sync"
)

// Access says who makes an access, as crosvm's BusAccessInfo does: devices whose
// registers are banked per CPU (the GICv2 distributor's SGI/PPI registers and its CPU
// interface) select the bank by it, so one device serves every vCPU on one bus.
type Access struct {
	// CPU is the index of the vCPU making the access, or NoCPU for an access that no
	// vCPU makes (device DMA, the host, a replay of queued writes).
	CPU int
}

// NoCPU is Access.CPU for accesses no vCPU makes.
const NoCPU = -1

// Host is the Access of the host itself (loaders, tests, queued-write replay).
var Host = Access{CPU: NoCPU}

// CPUAccess returns the Access of vCPU i.
func CPUAccess(i int) Access { return Access{CPU: i} }

// Device is an emulated device, or one region of one. Offsets are relative to the base
// the device was inserted at; len(data) is the access width (1, 2, 4 or 8 usually).
// Values are little-endian in data. A device is called from any vCPU thread; it must do
// its own locking.
type Device interface {
	Read(a Access, offset uint64, data []byte)
	Write(a Access, offset uint64, data []byte)
}

// Resetter is a device with state that a machine reset returns to power-on values.
// Machines call Reset with no vCPU running.
type Resetter interface {
	Reset()
}

// State is one device's saved state: Name and Version identify the encoding of Data,
// which is the device's own (each device keeps its save/load code next to its model,
// as Firecracker's persist.rs does, and bumps Version when the encoding changes).
type State struct {
	Name    string
	Version int
	Data    []byte
}

// Stateful is a device whose state can be saved and restored (snapshots, migration).
// SaveState and LoadState are called with no vCPU running and the device quiesced;
// LoadState refuses a State of another Name or an unknown Version with an error.
type Stateful interface {
	SaveState() (State, error)
	LoadState(State) error
}

// IRQ is an interrupt line a device drives. Level-triggered devices call Set(true) to
// assert and Set(false) to deassert; edge-triggered ones pulse. The machine supplies the
// implementation (KVM_IRQ_LINE, or an emulated interrupt controller under TCG).
type IRQ interface {
	Set(level bool)
}

// IRQFunc adapts a function to IRQ.
type IRQFunc func(level bool)

// Set calls f(level).
func (f IRQFunc) Set(level bool) { f(level) }

// NoIRQ is an IRQ that goes nowhere.
var NoIRQ IRQ = IRQFunc(func(bool) {})

type entry struct {
	base, size uint64
	dev        Device
	name       string
}

// Devices calls f for every mapped range in address order (reset and save walk it).
func (b *Bus) Devices(f func(name string, base, size uint64, dev Device)) {
	for _, e := range b.entries.load() {
		f(e.name, e.base, e.size, e.dev)
	}
}

// Reset resets every device on the bus that implements Resetter, once each (a device
// mapped at several ranges is reset once).
func (b *Bus) Reset() {
	seen := map[Device]bool{}
	for _, e := range b.entries.load() {
		if r, ok := e.dev.(Resetter); ok && !seen[e.dev] {
			seen[e.dev] = true
			r.Reset()
		}
	}
}

// Bus maps address ranges to devices. Lookups are lock-free against a copy-on-write
// slice, so vCPU exits never contend with each other.
type Bus struct {
	mu      sync.Mutex // serialises Insert/Remove
	entries atomicEntries
	// Unhandled, if set, is called for accesses no device claims. Reads of unclaimed
	// addresses return all-ones (as an open PCI/ISA bus does) before it is called.
	Unhandled func(addr uint64, data []byte, write bool)
}

// New returns an empty bus.
func New() *Bus { return &Bus{} }

// Insert maps dev at [base, base+size). Ranges must not overlap.
func (b *Bus) Insert(dev Device, name string, base, size uint64) error {
	if size == 0 || base+size-1 < base {
		return fmt.Errorf("bus: bad range for %s: base %#x size %#x", name, base, size)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.entries.load()
	for _, e := range old {
		if base < e.base+e.size && e.base < base+size {
			return fmt.Errorf("bus: %s [%#x,%#x) overlaps %s [%#x,%#x)", name, base, base+size, e.name, e.base, e.base+e.size)
		}
	}
	n := make([]entry, len(old), len(old)+1)
	copy(n, old)
	n = append(n, entry{base, size, dev, name})
	sort.Slice(n, func(i, j int) bool { return n[i].base < n[j].base })
	b.entries.store(n)
	return nil
}

// Remove unmaps the device inserted at base.
func (b *Bus) Remove(base uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.entries.load()
	for i, e := range old {
		if e.base == base {
			n := make([]entry, 0, len(old)-1)
			n = append(n, old[:i]...)
			n = append(n, old[i+1:]...)
			b.entries.store(n)
			return true
		}
	}
	return false
}

func (b *Bus) find(addr uint64) (*entry, bool) {
	es := b.entries.load()
	i := sort.Search(len(es), func(i int) bool { return es[i].base+es[i].size-1 >= addr })
	if i < len(es) && es[i].base <= addr {
		return &es[i], true
	}
	return nil, false
}

// Read dispatches a read of len(data) bytes at addr. It reports whether a device claimed it;
// unclaimed reads fill data with 0xff.
func (b *Bus) Read(a Access, addr uint64, data []byte) bool {
	if e, ok := b.find(addr); ok {
		e.dev.Read(a, addr-e.base, data)
		return true
	}
	for i := range data {
		data[i] = 0xff
	}
	if b.Unhandled != nil {
		b.Unhandled(addr, data, false)
	}
	return false
}

// Write dispatches a write at addr. It reports whether a device claimed it.
func (b *Bus) Write(a Access, addr uint64, data []byte) bool {
	if e, ok := b.find(addr); ok {
		e.dev.Write(a, addr-e.base, data)
		return true
	}
	if b.Unhandled != nil {
		b.Unhandled(addr, data, true)
	}
	return false
}

// Lookup returns the device at addr and the offset within it, for callers (such as a TCG
// TLB slow path) that cache the device for repeated accesses.
func (b *Bus) Lookup(addr uint64) (dev Device, offset uint64, ok bool) {
	if e, ok := b.find(addr); ok {
		return e.dev, addr - e.base, true
	}
	return nil, 0, false
}

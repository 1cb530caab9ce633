// Package fwcfg owns QEMU's firmware configuration device (docs/specs/fw_cfg.rst) in
// its memory-mapped form, as the arm virt board has it: a 16-bit big-endian selector,
// a data register read as a byte stream at any width (bytes land in guest memory in
// stream order), and the DMA interface (a big-endian FWCfgDmaAccess descriptor in
// guest memory: select, read, skip, write, error). The items are the fixed keys
// (signature "QEMU", interface ID with the DMA bit, UUID, ...) and the named files of
// the file directory (key 0x19), sorted by name with selectors from 0x20 as QEMU's.
//
// It must not know about accelerators, boards, the device tree or the command line.
package fwcfg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"

	"gemu/hw/bus"
)

// Fixed item keys (QEMU's include/standard-headers/linux/qemu_fw_cfg.h).
const (
	KeySignature = 0x00
	KeyID        = 0x01
	KeyUUID      = 0x02
	KeyRAMSize   = 0x03
	KeyNoGraphic = 0x04
	KeyNbCPUs    = 0x05
	KeyBootMenu  = 0x0e
	KeyMaxCPUs   = 0x0f
	KeyFileDir   = 0x19
	KeyFileFirst = 0x20

	keyWrite = 0x4000 // the selector's write-channel bit
	keyMask  = 0x3fff // entry number (bit 15 selects the arch-local set)

	// FileSlots is how many named files the device holds (QEMU's default x-file-slots).
	FileSlots = 0x20
	// MaxName is the longest file name (the directory's 56-byte field holds a NUL).
	MaxName = 55
)

// MMIO layout: the data register, the selector, the DMA address (QEMU's
// fw_cfg_init_mem_wide(base+8, base, 8, base+16)).
const (
	RegData     = 0x00
	RegSelector = 0x08
	RegDMA      = 0x10
	Size        = 0x18
)

// Feature bits of KeyID.
const (
	idTraditional = 1 << 0
	idDMA         = 1 << 1
)

// DMA control bits (FWCfgDmaAccess.control).
const (
	dmaError  = 1 << 0
	dmaRead   = 1 << 1
	dmaSkip   = 1 << 2
	dmaSelect = 1 << 3
	dmaWrite  = 1 << 4
)

// dmaSignature is what reading the DMA register returns ("QEMU CFG", big-endian).
const dmaSignature = 0x51454d5520434647

// Memory is the guest-physical view the DMA interface reads and writes.
type Memory interface {
	ReadAt(p []byte, gpa uint64) error
	WriteAt(p []byte, gpa uint64) error
}

type file struct {
	name string
	data []byte
}

// Device is one fw_cfg. Items are added before the guest runs; the register accesses
// are safe from any goroutine.
type Device struct {
	mem Memory

	mu      sync.Mutex
	items   map[uint16][]byte
	files   []file // sorted by name once Seal runs
	sealed  bool
	cur     uint16
	valid   bool
	offset  uint64
	dmaAddr uint64
}

// New returns a device with the keys every QEMU fw_cfg has: the signature, the
// interface ID (traditional and DMA interfaces), a zero UUID, no-graphic and boot-menu
// flags 0. mem is where DMA goes.
func New(mem Memory) *Device {
	d := &Device{mem: mem, items: map[uint16][]byte{}}
	d.AddBytes(KeySignature, []byte("QEMU"))
	d.AddU32(KeyID, idTraditional|idDMA)
	d.AddBytes(KeyUUID, make([]byte, 16))
	d.AddU16(KeyNoGraphic, 0)
	d.AddU16(KeyBootMenu, 0)
	return d
}

// AddBytes sets a fixed-key item (little-endian values are the caller's to encode).
func (d *Device) AddBytes(key uint16, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.items[key&^keyWrite] = slices.Clone(data)
}

// AddU16 sets a fixed-key item to a little-endian 16-bit value.
func (d *Device) AddU16(key uint16, v uint16) {
	d.AddBytes(key, binary.LittleEndian.AppendUint16(nil, v))
}

// AddU32 sets a fixed-key item to a little-endian 32-bit value.
func (d *Device) AddU32(key uint16, v uint32) {
	d.AddBytes(key, binary.LittleEndian.AppendUint32(nil, v))
}

// AddU64 sets a fixed-key item to a little-endian 64-bit value.
func (d *Device) AddU64(key uint16, v uint64) {
	d.AddBytes(key, binary.LittleEndian.AppendUint64(nil, v))
}

// ErrDuplicate is AddFile's error for a name already present.
var ErrDuplicate = errors.New("duplicate fw_cfg file name")

// AddFile adds a named file. The directory and the selectors are built when the guest
// first selects anything (or at Seal), sorted by name as QEMU keeps them.
func (d *Device) AddFile(name string, data []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.sealed:
		return errors.New("fw_cfg: files cannot be added once the guest runs")
	case name == "":
		return errors.New("fw_cfg: empty file name")
	case len(name) > MaxName:
		return fmt.Errorf("fw_cfg: name too long (max. %d char)", MaxName)
	case len(d.files) >= FileSlots:
		return fmt.Errorf("fw_cfg: not enough file slots (%d)", FileSlots)
	}
	for _, f := range d.files {
		if f.name == name {
			return fmt.Errorf("%w: %s", ErrDuplicate, name)
		}
	}
	d.files = append(d.files, file{name, slices.Clone(data)})
	return nil
}

// Seal builds the file directory. Called with mu held; idempotent.
func (d *Device) seal() {
	if d.sealed {
		return
	}
	d.sealed = true
	sort.Slice(d.files, func(i, j int) bool { return d.files[i].name < d.files[j].name })
	dir := binary.BigEndian.AppendUint32(nil, uint32(len(d.files)))
	for i, f := range d.files {
		sel := uint16(KeyFileFirst + i)
		d.items[sel] = f.data
		dir = binary.BigEndian.AppendUint32(dir, uint32(len(f.data)))
		dir = binary.BigEndian.AppendUint16(dir, sel)
		dir = binary.BigEndian.AppendUint16(dir, 0)
		var n [MaxName + 1]byte
		copy(n[:], f.name)
		dir = append(dir, n[:]...)
	}
	d.items[KeyFileDir] = dir
}

// Seal fixes the file directory; later AddFile calls fail.
func (d *Device) Seal() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seal()
}

// Files lists the file names with their selectors, in directory order.
func (d *Device) Files() map[string]uint16 {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seal()
	m := map[string]uint16{}
	for i, f := range d.files {
		m[f.name] = uint16(KeyFileFirst + i)
	}
	return m
}

func (d *Device) selectKey(key uint16) {
	d.seal()
	d.offset = 0
	d.cur = key &^ keyWrite
	_, d.valid = d.items[d.cur]
}

// readStream copies the selected item from the current offset into p (zeros past
// its end or with no valid item) and advances.
func (d *Device) readStream(p []byte) {
	var item []byte
	if d.valid {
		item = d.items[d.cur]
	}
	n := 0
	if d.offset < uint64(len(item)) {
		n = copy(p, item[d.offset:])
	}
	clear(p[n:])
	d.offset += uint64(len(p))
}

// Reset implements bus.Resetter: no item selected.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.valid, d.cur, d.offset, d.dmaAddr = false, 0, 0, 0
}

// Read implements bus.Device.
func (d *Device) Read(_ bus.Access, off uint64, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case off < RegSelector && off+uint64(len(data)) <= RegSelector:
		d.readStream(data)
	case off >= RegDMA && off+uint64(len(data)) <= Size:
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], dmaSignature)
		copy(data, b[off-RegDMA:])
	default:
		clear(data) // the selector is write-only
	}
}

// Write implements bus.Device.
func (d *Device) Write(_ bus.Access, off uint64, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case off == RegSelector && len(data) == 2:
		d.selectKey(binary.BigEndian.Uint16(data))
	case off == RegDMA && len(data) == 8:
		d.dmaAddr = binary.BigEndian.Uint64(data)
		d.dma()
	case off == RegDMA && len(data) == 4:
		d.dmaAddr = uint64(binary.BigEndian.Uint32(data)) << 32
	case off == RegDMA+4 && len(data) == 4:
		d.dmaAddr |= uint64(binary.BigEndian.Uint32(data))
		d.dma()
	}
	// Data-register writes are ignored, as QEMU has since 2.4.
}

// dmaChunk bounds one DMA copy (a long transfer goes in pieces).
const dmaChunk = 64 << 10

// dma runs the transfer whose descriptor is at dmaAddr and writes its status back.
func (d *Device) dma() {
	at := d.dmaAddr
	d.dmaAddr = 0
	var desc [16]byte
	if d.mem == nil || d.mem.ReadAt(desc[:], at) != nil {
		return // no descriptor to report an error in
	}
	be := binary.BigEndian
	control, length, addr := be.Uint32(desc[0:]), be.Uint32(desc[4:]), be.Uint64(desc[8:])
	if control&dmaSelect != 0 {
		d.selectKey(uint16(control >> 16))
	}
	var buf []byte
	for length > 0 && control&dmaError == 0 {
		var item []byte
		if d.valid {
			item = d.items[d.cur]
		}
		switch {
		case control&dmaRead != 0:
			n := min(length, dmaChunk)
			if cap(buf) < int(n) {
				buf = make([]byte, n)
			}
			b := buf[:n]
			d.readStream(b)
			if d.mem.WriteAt(b, addr) != nil {
				control |= dmaError
			}
			addr, length = addr+uint64(n), length-n
		case control&dmaWrite != 0:
			control |= dmaError // no item is writable
		case control&dmaSkip != 0:
			if d.offset < uint64(len(item)) {
				n := min(uint64(length), uint64(len(item))-d.offset)
				d.offset += n
				length -= uint32(n)
			} else {
				length = 0
			}
		default:
			length = 0
		}
	}
	be.PutUint32(desc[0:], control&dmaError)
	d.mem.WriteAt(desc[0:4], at)
}

// stateSize is the encoded selection state: selected key, valid flag, offset, DMA
// address (the items are configuration, rebuilt from the command line).
const stateSize = 2 + 1 + 8 + 8

// SaveState implements bus.Stateful.
func (d *Device) SaveState() (bus.State, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := binary.LittleEndian.AppendUint16(nil, d.cur)
	if d.valid {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.LittleEndian.AppendUint64(b, d.offset)
	b = binary.LittleEndian.AppendUint64(b, d.dmaAddr)
	return bus.State{Name: "fw_cfg", Version: 1, Data: b}, nil
}

// LoadState implements bus.Stateful. The device must hold the same items.
func (d *Device) LoadState(s bus.State) error {
	if s.Name != "fw_cfg" || s.Version != 1 || len(s.Data) != stateSize {
		return fmt.Errorf("fw_cfg: cannot load state %q version %d (%d bytes)", s.Name, s.Version, len(s.Data))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seal()
	le := binary.LittleEndian
	d.cur = le.Uint16(s.Data)
	_, ok := d.items[d.cur]
	d.valid = s.Data[2] == 1 && ok
	d.offset = le.Uint64(s.Data[3:])
	d.dmaAddr = le.Uint64(s.Data[11:])
	return nil
}

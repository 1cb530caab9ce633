package pci

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"testing"

	"gemu/hw/acpi"
	"gemu/hw/bus"
)

// regs is a device behind a BAR: every read returns tag in each dword and records the
// offset; writes are recorded.
type regs struct {
	tag    uint32
	mu     sync.Mutex
	writes []uint64
}

func (r *regs) Read(_ bus.Access, off uint64, data []byte) {
	var d [8]byte
	binary.LittleEndian.PutUint32(d[:], r.tag)
	binary.LittleEndian.PutUint32(d[4:], r.tag)
	copy(data, d[off%4:])
}

func (r *regs) Write(_ bus.Access, off uint64, data []byte) {
	r.mu.Lock()
	r.writes = append(r.writes, off)
	r.mu.Unlock()
}

type msg struct {
	addr uint64
	data uint32
}

type rig struct {
	t         *testing.T
	mmio, pio *bus.Bus
	pci       *Bus
	io        *ConfigIO
	ecam      *ECAM
	mu        sync.Mutex
	msis      []msg
	logs      []string
	lines     [4]bool
}

func newRig(t *testing.T) *rig {
	r := &rig{t: t, mmio: bus.New(), pio: bus.New()}
	var lines []bus.IRQ
	for i := range r.lines {
		lines = append(lines, bus.IRQFunc(func(l bool) { r.mu.Lock(); r.lines[i] = l; r.mu.Unlock() }))
	}
	r.pci = NewBus(BusConfig{
		MMIO: r.mmio, PIO: r.pio,
		MSI:  MSIFunc(func(a uint64, d uint32) { r.mu.Lock(); r.msis = append(r.msis, msg{a, d}); r.mu.Unlock() }),
		INTx: RotatingINTx(lines),
		Logf: func(f string, a ...any) { r.mu.Lock(); r.logs = append(r.logs, fmt.Sprintf(f, a...)); r.mu.Unlock() },
	})
	r.io = NewConfigIO(r.pci, nil)
	r.ecam = NewECAM(r.pci)
	if err := r.pio.Insert(r.io, "pci-config", 0xcf8, 8); err != nil {
		t.Fatal(err)
	}
	if err := r.mmio.Insert(r.ecam, "ecam", 0x3000_0000, 1<<28); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) takeMSIs() []msg {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.msis
	r.msis = nil
	return m
}

func (r *rig) line(i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lines[i]
}

// cfgRead/cfgWrite go through mechanism #1 on the port bus, as Linux on pc does.
func (r *rig) cfgRead(dev, fn, reg uint32, n int) uint32 {
	r.pio.Write(bus.Host, 0xcf8, binary.LittleEndian.AppendUint32(nil, 1<<31|dev<<11|fn<<8|reg&0xfc))
	var d [4]byte
	r.pio.Read(bus.Host, 0xcfc+uint64(reg&3), d[:n])
	return binary.LittleEndian.Uint32(d[:])
}

func (r *rig) cfgWrite(dev, fn, reg uint32, n int, v uint32) {
	r.pio.Write(bus.Host, 0xcf8, binary.LittleEndian.AppendUint32(nil, 1<<31|dev<<11|fn<<8|reg&0xfc))
	r.pio.Write(bus.Host, 0xcfc+uint64(reg&3), binary.LittleEndian.AppendUint32(nil, v)[:n])
}

// ecamRead/ecamWrite go through the ECAM window on the MMIO bus, as Linux on virt does.
func (r *rig) ecamRead(dev, fn, reg uint32, n int) uint32 {
	var d [4]byte
	r.mmio.Read(bus.Host, 0x3000_0000+uint64(dev<<15|fn<<12|reg), d[:n])
	return binary.LittleEndian.Uint32(d[:])
}

func (r *rig) ecamWrite(dev, fn, reg uint32, n int, v uint32) {
	r.mmio.Write(bus.Host, 0x3000_0000+uint64(dev<<15|fn<<12|reg), binary.LittleEndian.AppendUint32(nil, v)[:n])
}

// mmioRead32 reads a dword from the MMIO bus and reports whether a device claimed it.
func mmio32(b *bus.Bus, addr uint64) (uint32, bool) {
	var d [4]byte
	ok := b.Read(bus.Host, addr, d[:])
	return binary.LittleEndian.Uint32(d[:]), ok
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// newDev is a virtio-like function: I/O BAR 0, 32-bit memory BAR 1 (MSI-X table at 0,
// PBA at 0x800), 64-bit prefetchable BAR 2 of 16 KiB, INTA, 4 MSI-X vectors.
func newDev(t *testing.T, tag uint32) (*ConfigSpace, *MSIX, [3]*regs) {
	c := NewConfigSpace(0x1af4, 0x1041, 0x020000, 1)
	devs := [3]*regs{{tag: tag}, {tag: tag + 1}, {tag: tag + 2}}
	must(t, c.AddBAR(0, BARIO, 0x20, devs[0]))
	must(t, c.AddBAR(1, BARMem32, 0x1000, devs[1]))
	must(t, c.AddBAR(2, BARMem64|BARPrefetch, 0x4000, devs[2]))
	must(t, c.SetInterruptPin(PinA))
	m, err := c.AddMSIX(4, 1, 0, 1, 0x800)
	must(t, err)
	return c, m, devs
}

func TestBARSizingAndMoves(t *testing.T) {
	r := newRig(t)
	c, _, _ := newDev(t, 0x1000)
	var moves []string
	c.OnBARChange(func(i int, base uint64, mapped bool) {
		moves = append(moves, fmt.Sprintf("%d@%#x:%v", i, base, mapped))
	})
	must(t, r.pci.Add(3, 0, c))

	// Sizing: all-ones in, size mask and kind bits out (Linux's __pci_read_base).
	for _, tc := range []struct {
		reg  uint32
		want uint32
	}{{0x10, 0xffffffe1}, {0x14, 0xfffff000}, {0x18, 0xffffc00c}, {0x1c, 0xffffffff}, {0x20, 0}, {0x24, 0}, {0x30, 0}} {
		r.cfgWrite(3, 0, tc.reg, 4, 0xffffffff)
		if v := r.cfgRead(3, 0, tc.reg, 4); v != tc.want {
			t.Errorf("BAR %#x sizes as %#x, want %#x", tc.reg, v, tc.want)
		}
	}
	// Sized BARs with decoding enabled sit at the top of the space: not mapped.
	r.cfgWrite(3, 0, RegCommand, 2, CmdIO|CmdMemory)
	for i := 0; i < 3; i++ {
		if _, ok := c.BAR(i); ok {
			t.Errorf("BAR %d mapped at its sizing address", i)
		}
	}
	r.cfgWrite(3, 0, RegCommand, 2, 0)

	r.cfgWrite(3, 0, 0x10, 4, 0xc040)
	r.cfgWrite(3, 0, 0x14, 4, 0xfe00_0000)
	r.cfgWrite(3, 0, 0x18, 4, 0x0000_0000)
	r.cfgWrite(3, 0, 0x1c, 4, 0x80) // 0x80_0000_0000
	if v := r.cfgRead(3, 0, 0x10, 4); v != 0xc041 {
		t.Fatalf("I/O BAR reads %#x", v)
	}
	if v := r.cfgRead(3, 0, 0x18, 4); v != 0xc {
		t.Fatalf("64-bit BAR low reads %#x", v)
	}
	if _, ok := mmio32(r.mmio, 0xfe00_0800); ok {
		t.Fatal("memory BAR decodes with memory space disabled")
	}
	r.cfgWrite(3, 0, RegCommand, 2, CmdIO|CmdMemory)
	if v, ok := mmio32(r.mmio, 0x80_0000_0010); !ok || v != 0x1002 {
		t.Fatalf("64-bit BAR at 0x80_0000_0000: %#x %v", v, ok)
	}
	var b [2]byte
	if !r.pio.Read(bus.Host, 0xc040, b[:]) || binary.LittleEndian.Uint16(b[:]) != 0x1000 {
		t.Fatalf("I/O BAR at 0xc040 reads %#x", b)
	}
	if base, ok := c.BAR(2); !ok || base != 0x80_0000_0000 {
		t.Fatalf("BAR(2) = %#x %v", base, ok)
	}

	// Move the 32-bit BAR: the old address misses, the new one hits.
	moves = nil
	r.cfgWrite(3, 0, 0x14, 4, 0xfe10_0000)
	if fmt.Sprint(moves) != "[1@0xfe000000:false 1@0xfe100000:true]" {
		t.Fatalf("OnBARChange heard %v", moves)
	}
	if _, ok := mmio32(r.mmio, 0xfe00_0800); ok {
		t.Fatal("old BAR address still decodes")
	}
	if v, ok := mmio32(r.mmio, 0xfe10_0ffc); !ok || v != 0x1001 {
		t.Fatalf("moved BAR: %#x %v", v, ok)
	}
	// Move the 64-bit BAR below 4 GiB by its high dword alone.
	r.cfgWrite(3, 0, 0x18, 4, 0xfe20_0000)
	r.cfgWrite(3, 0, 0x1c, 4, 0)
	if _, ok := mmio32(r.mmio, 0x80_0000_0010); ok {
		t.Fatal("64-bit BAR still at its old address")
	}
	if v, ok := mmio32(r.mmio, 0xfe20_3ffc); !ok || v != 0x1002 {
		t.Fatalf("64-bit BAR after move: %#x %v", v, ok)
	}
	// Disabling memory decoding unmaps memory BARs, not the I/O BAR.
	r.cfgWrite(3, 0, RegCommand, 2, CmdIO)
	if _, ok := mmio32(r.mmio, 0xfe10_0000); ok {
		t.Fatal("memory BAR decodes after memory space disable")
	}
	if _, ok := mmio32(r.mmio, 0xfe20_0000); ok {
		t.Fatal("64-bit BAR decodes after memory space disable")
	}
	if !r.pio.Read(bus.Host, 0xc040, b[:]) {
		t.Fatal("I/O BAR lost with memory disable")
	}
	r.cfgWrite(3, 0, RegCommand, 2, 0)
	if r.pio.Read(bus.Host, 0xc040, b[:]) {
		t.Fatal("I/O BAR decodes after I/O space disable")
	}
	// Writes reach the device at BAR-relative offsets.
	r.cfgWrite(3, 0, RegCommand, 2, CmdMemory)
	r.mmio.Write(bus.Host, 0xfe20_0123, []byte{1})
	devs := c.bars[2].dev.(*regs)
	if len(devs.writes) != 1 || devs.writes[0] != 0x123 {
		t.Fatalf("device saw writes at %#x", devs.writes)
	}
}

func TestBAROverlapStaysUnmapped(t *testing.T) {
	r := newRig(t)
	other := &regs{tag: 0xdead}
	must(t, r.mmio.Insert(other, "other", 0xfd00_0000, 0x10_0000))
	a, _, _ := newDev(t, 0x1000)
	b, _, _ := newDev(t, 0x2000)
	must(t, r.pci.Add(1, 0, a))
	must(t, r.pci.Add(2, 0, b))

	r.cfgWrite(1, 0, 0x14, 4, 0xfd00_1000) // inside "other"
	r.cfgWrite(1, 0, RegCommand, 2, CmdMemory)
	if _, ok := a.BAR(1); ok || a.BARError(1) == nil {
		t.Fatal("BAR over another device mapped, or no error noted")
	}
	if v, _ := mmio32(r.mmio, 0xfd00_1000); v != 0xdead {
		t.Fatalf("other device displaced: %#x", v)
	}
	if len(r.logs) != 1 || !strings.Contains(r.logs[0], "bar1") {
		t.Fatalf("logs %q", r.logs)
	}
	r.cfgWrite(1, 0, 0x14, 4, 0xfe00_0000)
	if base, ok := a.BAR(1); !ok || base != 0xfe00_0000 || a.BARError(1) != nil {
		t.Fatal("BAR not mapped once moved to a free address")
	}

	// b's BAR collides with a's; when a moves away, b is mapped.
	r.cfgWrite(2, 0, 0x14, 4, 0xfe00_0000)
	r.cfgWrite(2, 0, RegCommand, 2, CmdMemory)
	if _, ok := b.BAR(1); ok {
		t.Fatal("two functions' BARs mapped at one address")
	}
	if v, _ := mmio32(r.mmio, 0xfe00_0c00); v != 0x1001 {
		t.Fatalf("first BAR displaced: %#x", v)
	}
	r.cfgWrite(1, 0, 0x14, 4, 0xfe10_0000)
	if v, ok := mmio32(r.mmio, 0xfe00_0c00); !ok || v != 0x2001 {
		t.Fatalf("second BAR not mapped after the first moved away: %#x %v", v, ok)
	}
	// Two BARs of one function over each other: the second waits for the first.
	r.cfgWrite(1, 0, 0x18, 4, 0xfe10_0000)
	r.cfgWrite(1, 0, 0x1c, 4, 0)
	if _, ok := a.BAR(2); ok {
		t.Fatal("BAR 2 mapped over BAR 1")
	}
	r.cfgWrite(1, 0, 0x14, 4, 0xfe30_0000)
	if v, ok := mmio32(r.mmio, 0xfe10_0000); !ok || v != 0x1002 {
		t.Fatalf("BAR 2 not mapped once BAR 1 left: %#x %v", v, ok)
	}
}

func TestCapabilityList(t *testing.T) {
	r := newRig(t)
	c := NewConfigSpace(0x1af4, 0x1042, 0x010000, 1)
	must(t, c.AddBAR(4, BARMem64, 0x4000, &regs{}))
	vc, err := c.AddVendorCapability([]byte{1, 4, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0x10, 0, 0})
	must(t, err)
	must(t, c.SetWritable(vc+4, []byte{0xff})) // the BAR field, say
	_, err = c.AddMSI(2, true)
	must(t, err)
	_, err = c.AddMSIX(2, 4, 0x3000, 4, 0x3800)
	must(t, err)
	must(t, r.pci.Add(4, 0, c))

	if r.cfgRead(4, 0, RegStatus, 2)&StatusCapList == 0 {
		t.Fatal("status bit 4 clear")
	}
	// Walk as Linux's __pci_find_next_cap_ttl does.
	var ids []uint32
	var offs []uint32
	for p, n := r.cfgRead(4, 0, RegCapPtr, 1)&^3, 0; p != 0 && n < 48; n++ {
		ids = append(ids, r.cfgRead(4, 0, p, 1))
		offs = append(offs, p)
		p = r.cfgRead(4, 0, p+1, 1) &^ 3
	}
	if fmt.Sprint(ids) != "[9 5 17]" {
		t.Fatalf("capability ids %v", ids)
	}
	if offs[0] != vc || offs[0] < 0x40 || offs[1]%4 != 0 || offs[2]%4 != 0 {
		t.Fatalf("capability offsets %#x", offs)
	}
	if got := c.Capabilities(0); fmt.Sprint(got) != fmt.Sprint(offs) {
		t.Fatalf("Capabilities(0) = %v, walk %v", got, offs)
	}
	if r.cfgRead(4, 0, vc+2, 1) != 19 {
		t.Fatalf("vendor capability length %d", r.cfgRead(4, 0, vc+2, 1))
	}
	// The opened field is writable; its neighbours and the links are not.
	r.cfgWrite(4, 0, vc, 4, 0xffffffff)
	r.cfgWrite(4, 0, vc+4, 4, 0xffffffff)
	if v := r.cfgRead(4, 0, vc, 4); v != uint32(offs[1])<<8|19<<16|9|1<<24 {
		t.Fatalf("capability header changed: %#x", v)
	}
	if v := r.cfgRead(4, 0, vc+4, 4); v != 0xff {
		t.Fatalf("vendor capability dword 1 %#x, want only the opened byte", v)
	}
	// MSI-X capability: table size 1 (2 vectors), table/PBA offset|BIR.
	if v := r.cfgRead(4, 0, offs[2]+2, 2); v != 1 {
		t.Fatalf("MSI-X control %#x", v)
	}
	if v := r.cfgRead(4, 0, offs[2]+4, 4); v != 0x3004 {
		t.Fatalf("MSI-X table %#x", v)
	}
	if v := r.cfgRead(4, 0, offs[2]+8, 4); v != 0x3804 {
		t.Fatalf("MSI-X PBA %#x", v)
	}
	// MSI: 64-bit, per-vector masking, 2 vectors capable.
	if v := r.cfgRead(4, 0, offs[1]+2, 2); v != msi64|msiPVM|1<<1 {
		t.Fatalf("MSI control %#x", v)
	}
}

func TestHookedCapability(t *testing.T) {
	c := NewConfigSpace(0x1af4, 0x1042, 0x010000, 1)
	off, err := c.AddVendorCapability(make([]byte, 17))
	must(t, err)
	must(t, c.SetWritable(off+16, []byte{0xff, 0xff, 0xff, 0xff}))
	var wrote []uint32
	must(t, c.Hook(off+16, 4, func(o uint32, d []byte) { d[0] = 0x5a },
		func(o uint32, d []byte) { wrote = append(wrote, o) }))
	var d [4]byte
	c.ConfigRead(off+16, d[:])
	if d[0] != 0x5a {
		t.Fatal("read hook not applied")
	}
	c.ConfigRead(off, d[:])
	if d[0] != CapVendor {
		t.Fatal("read hook applied outside its range")
	}
	c.ConfigWrite(off+18, []byte{1, 2})
	if len(wrote) != 1 || wrote[0] != off+18 {
		t.Fatalf("write hook saw %v", wrote)
	}
}

func enableMSIX(r *rig, dev uint32, m *MSIX, ctl uint16) {
	r.cfgWrite(dev, 0, m.Offset()+2, 2, uint32(ctl))
}

func TestMSIX(t *testing.T) {
	r := newRig(t)
	c, m, _ := newDev(t, 0x1000)
	var changed []int
	m.OnChange = func(v int) { changed = append(changed, v) }
	must(t, r.pci.Add(3, 0, c))
	r.cfgWrite(3, 0, 0x14, 4, 0xfe00_0000)
	r.cfgWrite(3, 0, RegCommand, 2, CmdMemory|CmdBusMaster)

	tbl := uint64(0xfe00_0000)
	pba := tbl + 0x800
	// Power-on: every vector masked.
	for v := 0; v < 4; v++ {
		if ctl, _ := mmio32(r.mmio, tbl+uint64(v)*16+12); ctl != 1 {
			t.Fatalf("vector %d control %#x at power-on", v, ctl)
		}
	}
	// Program vector 2 with a qword address write and a dword data write.
	changed = nil
	r.mmio.Write(bus.Host, tbl+32, binary.LittleEndian.AppendUint64(nil, 0xfee0_1000))
	r.mmio.Write(bus.Host, tbl+40, binary.LittleEndian.AppendUint32(nil, 0x4041))
	if len(changed) != 2 || changed[0] != 2 {
		t.Fatalf("OnChange %v", changed)
	}
	if a, d, masked := m.Vector(2); a != 0xfee0_1000 || d != 0x4041 || !masked {
		t.Fatalf("Vector(2) = %#x %#x %v", a, d, masked)
	}
	// Reserved vector-control bits are read-only.
	r.mmio.Write(bus.Host, tbl+44, binary.LittleEndian.AppendUint32(nil, 0xfffffffe|1))
	if ctl, _ := mmio32(r.mmio, tbl+44); ctl != 1 {
		t.Fatalf("vector control %#x", ctl)
	}

	// Disabled: raising the vector only sets its pending bit.
	m.Notify(2)
	if len(r.takeMSIs()) != 0 || !m.Pending(2) {
		t.Fatal("MSI-X delivered while disabled, or not pending")
	}
	if p, _ := mmio32(r.mmio, pba); p != 1<<2 {
		t.Fatalf("PBA reads %#x", p)
	}
	r.mmio.Write(bus.Host, pba, []byte{0, 0, 0, 0}) // PBA is read-only
	// Enable with the function masked: still pending.
	changed = nil
	enableMSIX(r, 3, m, msixEnable|msixFuncMask)
	if len(changed) != 4 {
		t.Fatalf("control write told OnChange about %v", changed)
	}
	if !m.Pending(2) || len(r.takeMSIs()) != 0 {
		t.Fatal("pending lost or delivered under the function mask")
	}
	enableMSIX(r, 3, m, msixEnable)
	if !m.Pending(2) || len(r.takeMSIs()) != 0 {
		t.Fatal("delivered while the vector is masked")
	}
	// Unmask the vector: the pending message goes, once.
	r.mmio.Write(bus.Host, tbl+44, []byte{0, 0, 0, 0})
	if got := r.takeMSIs(); len(got) != 1 || got[0] != (msg{0xfee0_1000, 0x4041}) {
		t.Fatalf("on unmask sent %v", got)
	}
	if m.Pending(2) {
		t.Fatal("pending bit still set after delivery")
	}
	if p, _ := mmio32(r.mmio, pba); p != 0 {
		t.Fatalf("PBA reads %#x after delivery", p)
	}
	// Unmasked: Notify sends immediately.
	m.Notify(2)
	m.Notify(7) // out of range: ignored
	if got := r.takeMSIs(); len(got) != 1 {
		t.Fatalf("Notify sent %v", got)
	}
	// Function mask set: pending again, and delivered when cleared.
	enableMSIX(r, 3, m, msixEnable|msixFuncMask)
	m.Notify(2)
	if len(r.takeMSIs()) != 0 || !m.Pending(2) {
		t.Fatal("function mask ignored")
	}
	enableMSIX(r, 3, m, msixEnable)
	if got := r.takeMSIs(); len(got) != 1 || m.Pending(2) {
		t.Fatalf("function unmask sent %v", got)
	}
	// INTx is not driven while MSI-X is enabled.
	c.SetIRQ(true)
	if r.line(3) {
		t.Fatal("INTx asserted with MSI-X enabled")
	}
	enableMSIX(r, 3, m, 0)
	if !r.line(3) {
		t.Fatal("INTx not asserted once MSI-X is off")
	}
	c.SetIRQ(false)

	// Bus mastering off: the vector reports masked, Notify is held pending.
	enableMSIX(r, 3, m, msixEnable)
	r.cfgWrite(3, 0, RegCommand, 2, CmdMemory)
	if _, _, masked := m.Vector(2); !masked {
		t.Fatal("vector unmasked with bus mastering off")
	}
	m.Notify(2)
	r.cfgWrite(3, 0, RegCommand, 2, CmdMemory|CmdBusMaster)
	if got := r.takeMSIs(); len(got) != 1 {
		t.Fatalf("bus master enable sent %v", got)
	}

	// Reset: table masked and cleared, capability off, BAR unmapped.
	m.Notify(1) // vector 1 masked: pending
	c.Reset()
	if m.Enabled() || m.Pending(1) {
		t.Fatal("MSI-X state survived reset")
	}
	if a, _, masked := m.Vector(2); a != 0 || !masked {
		t.Fatal("table survived reset")
	}
	if _, ok := mmio32(r.mmio, tbl); ok {
		t.Fatal("BAR mapped after reset")
	}
	if v := r.cfgRead(3, 0, 0x14, 4); v != 0 {
		t.Fatalf("BAR register %#x after reset", v)
	}
}

func TestMSI(t *testing.T) {
	r := newRig(t)
	c := NewConfigSpace(0x8086, 0x100e, 0x020000, 0)
	m, err := c.AddMSI(4, true)
	must(t, err)
	must(t, r.pci.Add(2, 0, c))
	o := m.Offset()
	r.cfgWrite(2, 0, o+4, 4, 0xfee0_0003) // bits 1:0 are read-only
	r.cfgWrite(2, 0, o+8, 4, 0x1)
	r.cfgWrite(2, 0, o+0xc, 2, 0x4020)
	if v := r.cfgRead(2, 0, o+4, 4); v != 0xfee0_0000 {
		t.Fatalf("MSI address low %#x", v)
	}
	m.Notify(0)
	if len(r.takeMSIs()) != 0 {
		t.Fatal("MSI sent while disabled")
	}
	r.cfgWrite(2, 0, RegCommand, 2, CmdBusMaster)
	r.cfgWrite(2, 0, o+2, 2, msiEnable|7<<4) // asks for 128: clamped to 4
	if m.Vectors() != 4 || r.cfgRead(2, 0, o+2, 2)>>4&7 != 2 {
		t.Fatalf("enabled vectors %d", m.Vectors())
	}
	m.Notify(3)
	if got := r.takeMSIs(); len(got) != 1 || got[0] != (msg{0x1_fee0_0000, 0x4023}) {
		t.Fatalf("vector 3 sent %v", got)
	}
	r.cfgWrite(2, 0, o+0x10, 4, 0xffffffff) // mask all: only 4 bits stick
	if v := r.cfgRead(2, 0, o+0x10, 4); v != 0xf {
		t.Fatalf("mask bits %#x", v)
	}
	m.Notify(1)
	if len(r.takeMSIs()) != 0 || !m.Pending(1) || r.cfgRead(2, 0, o+0x14, 4) != 2 {
		t.Fatal("masked vector not pending")
	}
	r.cfgWrite(2, 0, o+0x14, 4, 0) // pending bits are read-only
	r.cfgWrite(2, 0, o+0x10, 4, 0xd)
	if got := r.takeMSIs(); len(got) != 1 || got[0].data != 0x4021 || m.Pending(1) {
		t.Fatalf("unmask sent %v", got)
	}
}

func TestECAMAndCF8SeeOneSpace(t *testing.T) {
	r := newRig(t)
	must(t, r.pci.Add(0, 0, NewPCIeHostBridge()))
	c, _, _ := newDev(t, 0)
	must(t, r.pci.Add(1, 0, c))
	e := NewConfigSpace(0x1b36, 0x000d, 0x0c0330, 0)
	pcie, err := e.EnableExpress(ExpressIntegrated)
	must(t, err)
	aer, err := e.AddExtCapability(0x0001, 2, make([]byte, 0x44))
	must(t, err)
	dsn, err := e.AddExtCapability(0x0003, 1, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	must(t, err)
	must(t, r.pci.Add(2, 0, e))

	if v := r.ecamRead(0, 0, 0, 4); v != 0x0008_1b36 {
		t.Fatalf("PCIe host bridge ids %#x", v)
	}
	if v := r.ecamRead(0, 0, 8, 4); v != 0x0600_0000 {
		t.Fatalf("PCIe host bridge class %#x", v)
	}
	if v := r.ecamRead(0, 0, RegSubVendor, 4); v != 0x1100_1af4 {
		t.Fatalf("PCIe host bridge subsystem %#x", v)
	}
	// Written through one mechanism, read through the other.
	r.ecamWrite(1, 0, 0x14, 4, 0xfe12_3000)
	if v := r.cfgRead(1, 0, 0x14, 4); v != 0xfe12_3000 {
		t.Fatalf("CF8 sees BAR %#x after ECAM write", v)
	}
	r.cfgWrite(1, 0, RegIntLine, 1, 0x0b)
	if v := r.ecamRead(1, 0, RegIntLine, 2); v != 0x010b {
		t.Fatalf("ECAM sees line/pin %#x after CF8 write", v)
	}
	for reg := uint32(0); reg < 0x100; reg += 4 {
		if a, b := r.ecamRead(1, 0, reg, 4), r.cfgRead(1, 0, reg, 4); a != b {
			t.Fatalf("reg %#x: ECAM %#x, CF8 %#x", reg, a, b)
		}
	}
	// Byte and word accesses in ECAM.
	if v := r.ecamRead(1, 0, 2, 2); v != 0x1041 {
		t.Fatalf("ECAM word read %#x", v)
	}
	if v := r.ecamRead(1, 0, 3, 1); v != 0x10 {
		t.Fatalf("ECAM byte read %#x", v)
	}
	// Unaligned, other bus, empty slot, conventional function's extended space.
	if v := r.ecamRead(1, 0, 1, 2); v != 0xffff {
		t.Fatalf("unaligned ECAM read %#x", v)
	}
	var d [4]byte
	r.mmio.Read(bus.Host, 0x3000_0000+1<<20, d[:])
	if binary.LittleEndian.Uint32(d[:]) != 0xffffffff {
		t.Fatal("bus 1 not all-ones")
	}
	if v := r.ecamRead(9, 0, 0, 4); v != 0xffffffff {
		t.Fatal("empty slot not all-ones")
	}
	if v := r.ecamRead(1, 0, 0x100, 4); v != 0xffffffff {
		t.Fatalf("conventional function at 0x100 reads %#x", v)
	}
	// The PCIe function: capability 0x10 in the list, extended list from 0x100.
	if got := e.Capabilities(CapExpress); len(got) != 1 || got[0] != pcie {
		t.Fatalf("PCIe capability at %v", got)
	}
	if v := r.ecamRead(2, 0, pcie+2, 2); v != 2|ExpressIntegrated<<4 {
		t.Fatalf("PCIe capabilities register %#x", v)
	}
	if aer != 0x100 {
		t.Fatalf("first extended capability at %#x", aer)
	}
	h := r.ecamRead(2, 0, 0x100, 4)
	if h&0xffff != 1 || h>>16&0xf != 2 || h>>20 != dsn {
		t.Fatalf("extended header %#x", h)
	}
	if h := r.ecamRead(2, 0, dsn, 4); h != 0x0001_0003 {
		t.Fatalf("last extended header %#x", h)
	}
	if v := r.ecamRead(2, 0, dsn+4, 4); v != 0x04030201 {
		t.Fatalf("extended capability body %#x", v)
	}
	r.ecamWrite(2, 0, dsn+4, 4, 0)
	if v := r.ecamRead(2, 0, 0xffc, 4); v != 0 {
		t.Fatalf("end of extended space %#x", v)
	}
	// An 8-byte ECAM access is two dwords.
	var q [8]byte
	r.mmio.Read(bus.Host, 0x3000_0000+2<<15, q[:])
	if binary.LittleEndian.Uint64(q[:]) != uint64(r.ecamRead(2, 0, 0, 4))|uint64(r.ecamRead(2, 0, 4, 4))<<32 || q[0] != 0x36 {
		t.Fatalf("qword ECAM read %#x", q)
	}
}

func TestINTxSwizzleAndDisable(t *testing.T) {
	r := newRig(t)
	// slot 1 INTA and slot 4 INTB and slot 5 INTA all land on line (1+0)%4 = 1 ... check.
	mk := func(pin byte) *ConfigSpace {
		c := NewConfigSpace(0x1af4, 0x1000, 0x020000, 0)
		must(t, c.SetInterruptPin(pin))
		return c
	}
	a, b, d := mk(PinA), mk(PinA), mk(PinD)
	must(t, r.pci.Add(1, 0, a)) // line 1
	must(t, r.pci.Add(5, 0, b)) // line (5+0)%4 = 1: shared with a
	must(t, r.pci.Add(2, 0, d)) // line (2+3)%4 = 1 too
	if v := r.cfgRead(2, 0, RegIntPin, 1); v != PinD {
		t.Fatalf("pin register %d", v)
	}
	a.SetIRQ(true)
	b.SetIRQ(true)
	if !r.line(1) || r.line(0) || r.line(2) || r.line(3) {
		t.Fatalf("lines %v", r.lines)
	}
	a.SetIRQ(false)
	if !r.line(1) {
		t.Fatal("shared line dropped while another function asserts it")
	}
	b.SetIRQ(false)
	if r.line(1) {
		t.Fatal("shared line stuck")
	}
	// Interrupt disable masks the line, not the status bit.
	d.SetIRQ(true)
	if !r.line(1) || r.cfgRead(2, 0, RegStatus, 2)&StatusIntx == 0 {
		t.Fatal("INTx not asserted")
	}
	r.cfgWrite(2, 0, RegCommand, 2, CmdIntxDisable)
	if r.line(1) {
		t.Fatal("line asserted with interrupt disable set")
	}
	if r.cfgRead(2, 0, RegStatus, 2)&StatusIntx == 0 {
		t.Fatal("status bit 3 cleared by interrupt disable")
	}
	r.cfgWrite(2, 0, RegStatus, 2, 0xffff) // interrupt status is read-only
	if r.cfgRead(2, 0, RegStatus, 2)&StatusIntx == 0 {
		t.Fatal("status bit 3 writable")
	}
	r.cfgWrite(2, 0, RegCommand, 2, 0)
	if !r.line(1) {
		t.Fatal("line not reasserted when interrupt disable clears")
	}
	d.Reset()
	if r.line(1) || d.IRQ() {
		t.Fatal("reset left INTx asserted")
	}
	// No pin: SetIRQ changes status only.
	n := NewConfigSpace(1, 2, 0, 0)
	must(t, r.pci.Add(7, 0, n))
	n.SetIRQ(true)
	if r.line(3) || r.line(0) || r.line(1) || r.line(2) {
		t.Fatal("pinless function drove a line")
	}
	if err := a.SetInterruptPin(PinB); err == nil {
		t.Fatal("pin changed after Add")
	}
}

// The pc swizzle is the _PRT hw/acpi builds.
func TestRotatingINTxMatchesACPI(t *testing.T) {
	var got [8]int
	lines := make([]bus.IRQ, 8)
	for i := range lines {
		lines[i] = bus.IRQFunc(func(bool) { got[i]++ })
	}
	sw := RotatingINTx(lines)
	for slot := 0; slot < 32; slot++ {
		for pin := 0; pin < 4; pin++ {
			got = [8]int{}
			sw(slot, pin).Set(true)
			gsi := acpi.PCIIntxGSI(uint8(slot), uint8(pin))
			if got[gsi-16] != 1 {
				t.Fatalf("slot %d pin %d: line %v, _PRT says GSI %d", slot, pin, got, gsi)
			}
		}
	}
	if sw(3, 1) != sw(2, 2) {
		t.Fatal("one line, two values: sharing would not be wired-OR")
	}
}

func TestMultifunctionBit(t *testing.T) {
	r := newRig(t)
	f0, f1 := NewConfigSpace(1, 2, 0, 0), NewConfigSpace(1, 3, 0, 0)
	must(t, r.pci.Add(4, 1, f1))
	must(t, r.pci.Add(4, 0, f0))
	if v := r.cfgRead(4, 0, RegHeaderType, 1); v != 0x80 {
		t.Fatalf("header type %#x", v)
	}
	if err := r.pci.Add(6, 0, f0); err == nil {
		t.Fatal("one function added twice")
	}
}

func TestResetThroughHostBridge(t *testing.T) {
	r := newRig(t)
	c, _, _ := newDev(t, 0)
	must(t, r.pci.Add(1, 0, c))
	r.cfgWrite(1, 0, 0x14, 4, 0xfe00_0000)
	r.cfgWrite(1, 0, RegCommand, 2, CmdMemory)
	if _, ok := c.BAR(1); !ok {
		t.Fatal("not mapped")
	}
	r.pio.Reset() // the machine reset walks its port bus: ConfigIO resets PCI
	if _, ok := c.BAR(1); ok || c.Command() != 0 {
		t.Fatal("port bus reset did not reset the function")
	}
}

// Hostile config writes never panic and never change read-only fields.
func TestHostileConfigWrites(t *testing.T) {
	r := newRig(t)
	c, _, _ := newDev(t, 0)
	must(t, r.pci.Add(1, 0, c))
	want := r.cfgRead(1, 0, 0, 4)
	cls := r.cfgRead(1, 0, 8, 4)
	for off := uint32(0); off < 0x1010; off++ {
		for _, n := range []int{1, 2, 3, 4, 8} {
			d := make([]byte, n)
			for i := range d {
				d[i] = 0xff
			}
			if off < 0x10 || off >= 0x28 {
				// keep BARs out of it except for the dedicated pass below
				c.ConfigWrite(off, d)
				c.ConfigRead(off, d)
			}
		}
	}
	c.ConfigWrite(0xffff_fffe, []byte{1, 2, 3, 4})
	c.ConfigRead(0xffff_fffe, make([]byte, 4))
	c.ConfigWrite(0, nil)
	if r.cfgRead(1, 0, 0, 4) != want || r.cfgRead(1, 0, 8, 4) != cls {
		t.Fatal("ids or class changed")
	}
	if v := r.cfgRead(1, 0, RegIntPin, 1); v != PinA {
		t.Fatalf("pin changed to %d", v)
	}
	if p := r.cfgRead(1, 0, RegCapPtr, 1); len(c.Capabilities(0)) != 1 || p != c.Capabilities(0)[0] {
		t.Fatal("capability list changed")
	}
	// Odd widths through ECAM and the data port.
	r.mmio.Write(bus.Host, 0x3000_0000+1<<15+3, []byte{1, 2, 3})
	r.pio.Write(bus.Host, 0xcfd, []byte{1, 2, 3})
	r.pio.Write(bus.Host, 0xcf9, []byte{1, 2})
}

func TestSaveLoadConfig(t *testing.T) {
	r := newRig(t)
	c, m, _ := newDev(t, 0x1000)
	must(t, r.pci.Add(3, 0, c))
	r.cfgWrite(3, 0, 0x14, 4, 0xfe00_0000)
	r.cfgWrite(3, 0, 0x10, 4, 0xc040)
	r.cfgWrite(3, 0, RegCommand, 2, CmdIO|CmdMemory|CmdBusMaster)
	r.mmio.Write(bus.Host, 0xfe00_0010, binary.LittleEndian.AppendUint64(nil, 0xfee0_0000))
	r.mmio.Write(bus.Host, 0xfe00_0018, binary.LittleEndian.AppendUint32(nil, 0x31))
	enableMSIX(r, 3, m, msixEnable)
	m.Notify(1) // vector 1 still masked: pending
	c.SetIRQ(true)
	saved := c.SaveConfig()

	// A second machine with the same device, restored from the state.
	r2 := newRig(t)
	c2, m2, _ := newDev(t, 0x1000)
	must(t, r2.pci.Add(3, 0, c2))
	must(t, c2.LoadConfig(saved))
	if base, ok := c2.BAR(1); !ok || base != 0xfe00_0000 {
		t.Fatal("restored BAR not mapped")
	}
	if !r2.pio.Read(bus.Host, 0xc040, make([]byte, 1)) {
		t.Fatal("restored I/O BAR not mapped")
	}
	if a, d, masked := m2.Vector(1); a != 0xfee0_0000 || d != 0x31 || !masked || !m2.Pending(1) {
		t.Fatalf("restored vector 1: %#x %#x %v pending %v", a, d, masked, m2.Pending(1))
	}
	if !c2.IRQ() || r2.line(3) { // MSI-X on: INTx not driven
		t.Fatal("INTx state not restored")
	}
	r2.mmio.Write(bus.Host, 0xfe00_001c, []byte{0, 0, 0, 0})
	if got := r2.takeMSIs(); len(got) != 1 || got[0] != (msg{0xfee0_0000, 0x31}) {
		t.Fatalf("restored pending vector sent %v on unmask", got)
	}
	if string(c2.SaveConfig()) == string(saved) {
		t.Fatal("state did not change after the unmask")
	}

	// State of another function is refused, and leaves the function alone.
	other := NewConfigSpace(0x1af4, 0x1042, 0x010000, 1)
	if err := other.LoadConfig(saved); err == nil {
		t.Fatal("state loaded into a function of another shape")
	}
	bad := append([]byte(nil), saved...)
	bad[6] ^= 1 // vendor id
	if err := c2.LoadConfig(bad); err == nil {
		t.Fatal("state with another vendor id loaded")
	}
	if err := c2.LoadConfig(saved[:len(saved)-1]); err == nil {
		t.Fatal("truncated state loaded")
	}
	if base, ok := c2.BAR(1); !ok || base != 0xfe00_0000 {
		t.Fatal("refused state changed the function")
	}
}

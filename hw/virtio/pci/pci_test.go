package pci

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"gemu/hw/bus"
	hwpci "gemu/hw/pci"
	"gemu/hw/virtio"
	"gemu/hw/virtio/rng"
	"gemu/hw/virtio/virtiotest"
)

// guest plays the part of a virtio-pci driver: it reaches configuration space through
// ECAM on an MMIO bus, programs the BARs, walks the capabilities and talks to the
// common configuration region, as Linux's virtio_pci_modern does.
type guest struct {
	t    *testing.T
	mmio *bus.Bus
	ecam uint64
	slot uint64

	mu   sync.Mutex
	msis []uint32 // MSI data values delivered
	intx bool
}

const (
	ecamBase = 0x3000_0000
	barBase  = 0x1000_0000
	msixBase = 0x1001_0000
)

func (g *guest) cfg32(off uint32) uint32 {
	var b [4]byte
	g.mmio.Read(bus.CPUAccess(0), g.ecam+g.slot<<15+uint64(off), b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (g *guest) cfg8(off uint32) byte {
	var b [1]byte
	g.mmio.Read(bus.CPUAccess(0), g.ecam+g.slot<<15+uint64(off), b[:])
	return b[0]
}

func (g *guest) setCfg32(off, v uint32) {
	g.mmio.Write(bus.CPUAccess(0), g.ecam+g.slot<<15+uint64(off), binary.LittleEndian.AppendUint32(nil, v))
}

func (g *guest) setCfg16(off uint32, v uint16) {
	g.mmio.Write(bus.CPUAccess(0), g.ecam+g.slot<<15+uint64(off), binary.LittleEndian.AppendUint16(nil, v))
}

func (g *guest) rd(addr uint64, n int) uint64 {
	b := make([]byte, 8)
	g.mmio.Read(bus.CPUAccess(0), addr, b[:n])
	return binary.LittleEndian.Uint64(b)
}

func (g *guest) wr(addr uint64, n int, v uint64) {
	b := binary.LittleEndian.AppendUint64(nil, v)
	g.mmio.Write(bus.CPUAccess(0), addr, b[:n])
}

// caps walks the vendor capabilities: cfg_type → (bar, offset, extra dword).
func (g *guest) caps() map[byte][3]uint32 {
	out := map[byte][3]uint32{}
	if g.cfg32(0x04)>>16&0x10 == 0 {
		g.t.Fatal("status register lacks the capability-list bit")
	}
	for p, n := uint32(g.cfg8(0x34)), 0; p != 0 && n < 48; p, n = uint32(g.cfg8(p+1)), n+1 {
		if g.cfg8(p) == 0x09 {
			out[g.cfg8(p+3)] = [3]uint32{uint32(g.cfg8(p + 4)), g.cfg32(p + 8), g.cfg32(p + 16)}
		}
	}
	return out
}

func newGuest(t *testing.T, dev virtio.Device, mem virtio.Memory, hooks Hooks) (*guest, *Device) {
	g := &guest{t: t, mmio: bus.New(), ecam: ecamBase, slot: 3}
	pb := hwpci.NewBus(hwpci.BusConfig{
		MMIO: g.mmio,
		MSI: hwpci.MSIFunc(func(addr uint64, data uint32) {
			g.mu.Lock()
			g.msis = append(g.msis, data)
			g.mu.Unlock()
		}),
		INTx: func(slot, pin int) bus.IRQ {
			return bus.IRQFunc(func(l bool) { g.mu.Lock(); g.intx = l; g.mu.Unlock() })
		},
	})
	if err := g.mmio.Insert(hwpci.NewECAM(pb), "ecam", ecamBase, 1<<28); err != nil {
		t.Fatal(err)
	}
	d, err := New(dev, mem, Config{Express: true, Hooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	if err := pb.Add(uint8(g.slot), 0, d.Function()); err != nil {
		t.Fatal(err)
	}
	return g, d
}

// TestVirtioPCIRng brings a virtio-rng up over virtio-pci the way Linux does and
// checks identity, capabilities, feature negotiation, MSI-X delivery of a used
// buffer, the ISR/INTx fallback, and reset.
func TestVirtioPCIRng(t *testing.T) {
	mem := virtiotest.NewMem(0x4000_0000, 16<<20)
	defer mem.Close()
	src := bytes.Repeat([]byte{0x5a}, 1<<16)
	g, _ := newGuest(t, rng.NewWithSource(bytes.NewReader(src)), mem, Hooks{})

	if id := g.cfg32(0); id != 0x1044<<16|0x1af4 {
		t.Fatalf("vendor/device %#x, want 1af4:1044 (modern virtio-rng)", id)
	}
	if sub := g.cfg32(0x2c); sub != 0x1044<<16|0x1af4 {
		t.Fatalf("subsystem %#x", sub)
	}
	// BAR sizing and programming: BAR4 is 64-bit memory of 16 KiB, BAR1 holds MSI-X.
	g.setCfg32(0x20, 0xffffffff)
	g.setCfg32(0x24, 0xffffffff)
	if lo := g.cfg32(0x20); lo&^0xf != 0xffffc000 || lo&0x6 != 0x4 {
		t.Fatalf("BAR4 sizing reads %#x", lo)
	}
	g.setCfg32(0x20, barBase)
	g.setCfg32(0x24, 0)
	g.setCfg32(0x14, msixBase)
	g.setCfg16(0x04, 0x0006) // memory decoding, bus master

	caps := g.caps()
	for _, typ := range []byte{capCommon, capNotify, capISR, capDevice, capPCICfg} {
		if _, ok := caps[typ]; !ok {
			t.Fatalf("capability type %d missing: %v", typ, caps)
		}
	}
	common := barBase + uint64(caps[capCommon][1])
	notify := barBase + uint64(caps[capNotify][1])
	mult := uint64(caps[capNotify][2])
	isr := barBase + uint64(caps[capISR][1])
	if caps[capCommon][0] != modernBAR {
		t.Fatalf("common cfg in BAR %d", caps[capCommon][0])
	}

	// Enable MSI-X with vector 0 for config, 1 for the queue.
	msix := uint32(0)
	for p, n := uint32(g.cfg8(0x34)), 0; p != 0 && n < 48; p, n = uint32(g.cfg8(p+1)), n+1 {
		if g.cfg8(p) == 0x11 {
			msix = p
		}
	}
	if msix == 0 {
		t.Fatal("no MSI-X capability")
	}
	for v := uint64(0); v < 2; v++ {
		e := msixBase + 16*v
		g.wr(e, 4, 0xfee00000)
		g.wr(e+4, 4, 0)
		g.wr(e+8, 4, 0x40+v)
		g.wr(e+12, 4, 0) // unmask
	}
	g.setCfg16(msix+2, 0x8000)

	g.wr(common+ccStatus, 1, 1|2) // ACKNOWLEDGE | DRIVER
	g.wr(common+ccDeviceFeatureSel, 4, 1)
	if f := g.rd(common+ccDeviceFeature, 4); f&1 == 0 {
		t.Fatalf("device features[32:63] %#x lack VERSION_1", f)
	}
	g.wr(common+ccDriverFeatureSel, 4, 1)
	g.wr(common+ccDriverFeature, 4, 1)
	g.wr(common+ccStatus, 1, 1|2|8)
	if s := g.rd(common+ccStatus, 1); s&8 == 0 {
		t.Fatalf("FEATURES_OK not kept: status %#x", s)
	}
	if n := g.rd(common+ccNumQueues, 2); n != 1 {
		t.Fatalf("num_queues %d", n)
	}
	g.wr(common+ccConfigMSIX, 2, 0)
	if v := g.rd(common+ccConfigMSIX, 2); v != 0 {
		t.Fatalf("config vector %#x, want 0", v)
	}
	g.wr(common+ccQueueSelect, 2, 0)
	g.wr(common+ccQueueMSIX, 2, 7) // a vector the function does not have: refused
	if v := g.rd(common+ccQueueMSIX, 2); v != NoVector {
		t.Fatalf("out-of-range queue vector reads %#x, want NO_VECTOR", v)
	}
	g.wr(common+ccQueueMSIX, 2, 1)
	ring := virtiotest.NewRing(mem, 16, 0x4000_0000, 1<<20)
	qc := ring.Config()
	g.wr(common+ccQueueSize, 2, 16)
	g.wr(common+ccQueueDesc, 4, qc.Desc&0xffffffff)
	g.wr(common+ccQueueDesc+4, 4, qc.Desc>>32)
	g.wr(common+ccQueueDriver, 8, qc.Driver)
	g.wr(common+ccQueueDevice, 8, qc.Device)
	g.wr(common+ccQueueEnable, 2, 1)
	g.wr(common+ccStatus, 1, 1|2|8|4) // DRIVER_OK

	_, addrs := ring.Add(virtiotest.Buf{Write: 64})
	off := g.rd(common+ccQueueNotifyOff, 2)
	g.wr(notify+off*mult, 2, 0)
	if _, n, ok := ring.WaitUsed(5 * time.Second); !ok || n != 64 {
		t.Fatalf("used %d bytes, ok %v", n, ok)
	}
	if got := mem.At(addrs[0], 64); !bytes.Equal(got, src[:64]) {
		t.Fatalf("buffer % x", got[:8])
	}
	waitFor(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.msis) > 0 })
	g.mu.Lock()
	if g.msis[0] != 0x41 || g.intx {
		t.Fatalf("MSIs %#x intx %v, want vector 1's data 0x41 and no INTx", g.msis, g.intx)
	}
	g.mu.Unlock()

	// MSI-X off: the same request raises INTx and ISR bit 0; reading ISR clears both.
	g.setCfg16(msix+2, 0)
	ring.Add(virtiotest.Buf{Write: 8})
	g.wr(notify+off*mult, 2, 0)
	if _, _, ok := ring.WaitUsed(5 * time.Second); !ok {
		t.Fatal("second request not used")
	}
	waitFor(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.intx })
	if v := g.rd(isr, 1); v&1 == 0 {
		t.Fatalf("ISR %#x lacks the queue bit", v)
	}
	if v := g.rd(isr, 1); v != 0 {
		t.Fatalf("ISR %#x after a read, want 0", v)
	}
	g.mu.Lock()
	if g.intx {
		t.Fatal("INTx still asserted after the ISR read")
	}
	g.mu.Unlock()

	// The PCI configuration access capability reaches the common config.
	pcfg := uint32(0)
	for p, n := uint32(g.cfg8(0x34)), 0; p != 0 && n < 48; p, n = uint32(g.cfg8(p+1)), n+1 {
		if g.cfg8(p) == 0x09 && g.cfg8(p+3) == capPCICfg {
			pcfg = p
		}
	}
	g.mmio.Write(bus.CPUAccess(0), g.ecam+g.slot<<15+uint64(pcfg+4), []byte{modernBAR})
	g.setCfg32(pcfg+8, commonOff+ccNumQueues)
	g.setCfg32(pcfg+12, 2)
	if v := g.cfg32(pcfg+16) & 0xffff; v != 1 {
		t.Fatalf("num_queues through the PCI cfg window: %d", v)
	}

	// Writing 0 to status resets: status reads 0, the queue is disabled.
	g.wr(common+ccStatus, 1, 0)
	if s := g.rd(common+ccStatus, 1); s != 0 {
		t.Fatalf("status after reset %#x", s)
	}
	if e := g.rd(common+ccQueueEnable, 2); e != 0 {
		t.Fatal("queue still enabled after reset")
	}
}

// TestVirtioPCIFastPaths: with doorbell and route hooks (KVM's ioeventfd and irqfd),
// DRIVER_OK registers one doorbell per queue at the notify address, a used buffer goes
// through the route, a masked vector falls back to MSI-X pending, and reset cancels
// the doorbells and releases the routes.
func TestVirtioPCIFastPaths(t *testing.T) {
	mem := virtiotest.NewMem(0x4000_0000, 16<<20)
	defer mem.Close()
	var (
		mu       sync.Mutex
		bells    = map[uint64]func(){}
		fired    []uint32
		released int
	)
	hooks := Hooks{
		Doorbell: func(addr uint64, size uint32, fn func()) (func(), error) {
			mu.Lock()
			defer mu.Unlock()
			if size != 2 {
				t.Errorf("doorbell size %d, want 2 (Linux writes the queue index as 16 bits)", size)
			}
			bells[addr] = fn
			return func() { mu.Lock(); delete(bells, addr); mu.Unlock() }, nil
		},
		Route: func(addr uint64, data uint32) (func(), func(uint64, uint32), func(), error) {
			cur := data
			return func() { mu.Lock(); fired = append(fired, cur); mu.Unlock() },
				func(_ uint64, d uint32) { mu.Lock(); cur = d; mu.Unlock() },
				func() { mu.Lock(); released++; mu.Unlock() }, nil
		},
	}
	g, _ := newGuest(t, rng.New(), mem, hooks)
	g.setCfg32(0x20, barBase)
	g.setCfg32(0x24, 0)
	g.setCfg32(0x14, msixBase)
	g.setCfg16(0x04, 0x0006)
	caps := g.caps()
	common := barBase + uint64(caps[capCommon][1])
	notify := barBase + uint64(caps[capNotify][1])
	var msix uint32
	for p, n := uint32(g.cfg8(0x34)), 0; p != 0 && n < 48; p, n = uint32(g.cfg8(p+1)), n+1 {
		if g.cfg8(p) == 0x11 {
			msix = p
		}
	}
	g.wr(msixBase+16, 4, 0xfee00000)
	g.wr(msixBase+24, 4, 0x51)
	g.wr(msixBase+28, 4, 0)
	g.setCfg16(msix+2, 0x8000)
	g.wr(common+ccStatus, 1, 3)
	g.wr(common+ccDriverFeatureSel, 4, 1)
	g.wr(common+ccDriverFeature, 4, 1)
	g.wr(common+ccStatus, 1, 11)
	g.wr(common+ccQueueMSIX, 2, 1)
	ring := virtiotest.NewRing(mem, 8, 0x4000_0000, 1<<20)
	qc := ring.Config()
	g.wr(common+ccQueueSize, 2, 8)
	g.wr(common+ccQueueDesc, 8, qc.Desc)
	g.wr(common+ccQueueDriver, 8, qc.Driver)
	g.wr(common+ccQueueDevice, 8, qc.Device)
	g.wr(common+ccQueueEnable, 2, 1)
	g.wr(common+ccStatus, 1, 15)
	mu.Lock()
	fn := bells[notify]
	mu.Unlock()
	if fn == nil {
		t.Fatalf("no doorbell at the notify address %#x: %v", notify, bells)
	}
	ring.Add(virtiotest.Buf{Write: 16})
	fn() // the accelerator saw the guest's write
	if _, _, ok := ring.WaitUsed(5 * time.Second); !ok {
		t.Fatal("doorbell did not kick the queue")
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(fired) > 0 })
	mu.Lock()
	if fired[0] != 0x51 {
		t.Fatalf("route fired %#x, want 0x51", fired)
	}
	mu.Unlock()
	g.mu.Lock()
	if len(g.msis) != 0 {
		t.Fatalf("the slow MSI path was used too: %#x", g.msis)
	}
	g.mu.Unlock()
	// Re-target the vector: the route follows.
	g.wr(msixBase+24, 4, 0x52)
	ring.Add(virtiotest.Buf{Write: 16})
	fn()
	ring.WaitUsed(5 * time.Second)
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(fired) > 1 })
	mu.Lock()
	if fired[1] != 0x52 {
		t.Fatalf("route after re-targeting fired %#x, want 0x52", fired[1])
	}
	mu.Unlock()
	// Moving the BAR moves the doorbell.
	const moved = barBase + 0x10_0000
	g.setCfg32(0x20, moved)
	mu.Lock()
	if len(bells) != 1 || bells[moved+uint64(caps[capNotify][1])] == nil {
		mu.Unlock()
		t.Fatalf("after a BAR move the live doorbells are %v; want exactly one at %#x", bells, moved+uint64(caps[capNotify][1]))
	}
	mu.Unlock()
	g.wr(moved+uint64(caps[capCommon][1])+ccStatus, 1, 0) // reset, through the moved BAR
	mu.Lock()
	defer mu.Unlock()
	if len(bells) != 0 || released != 1 {
		t.Fatalf("after reset: doorbells %v live, %d routes released; want none and 1", bells, released)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 5 s")
}

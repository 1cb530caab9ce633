package mmio

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

// echoDev has one queue and a worker that answers every chain by writing its length
// into it after a delay; Reset stops the worker and waits for it.
type echoDev struct {
	cfg      [8]byte
	delay    time.Duration
	inflight atomic.Int32
	stop     chan struct{}
	wg       sync.WaitGroup
	feat     uint64
}

func (e *echoDev) DeviceID() uint16   { return virtio.IDEntropy }
func (e *echoDev) Features() uint64   { return e.feat }
func (e *echoDev) QueueMax() []uint16 { return []uint16{64} }
func (e *echoDev) ReadConfig(off uint64, data []byte) {
	if off < uint64(len(e.cfg)) {
		copy(data, e.cfg[off:])
	}
}
func (e *echoDev) WriteConfig(off uint64, data []byte) {
	if off < uint64(len(e.cfg)) {
		copy(e.cfg[off:], data)
	}
}
func (e *echoDev) Activate(a virtio.Activation) error {
	q := a.Queues[0]
	e.stop = make(chan struct{})
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			for {
				c, err := q.Pop()
				if err != nil || c == nil {
					break
				}
				e.inflight.Add(1)
				select {
				case <-time.After(e.delay):
				case <-e.stop:
				}
				var b [4]byte
				binary.LittleEndian.PutUint32(b[:], uint32(c.In.Len()))
				c.In.WriteAt(b[:], 0)
				q.Push(c, 4)
				q.Signal()
				e.inflight.Add(-1)
			}
			select {
			case <-q.Kicked():
			case <-e.stop:
				return
			}
		}
	}()
	return nil
}
func (e *echoDev) Reset() {
	if e.stop != nil {
		close(e.stop)
		e.wg.Wait()
		e.stop = nil
	}
}

type line struct {
	mu    sync.Mutex
	level bool
	edges int
}

func (l *line) Set(v bool) {
	l.mu.Lock()
	if v && !l.level {
		l.edges++
	}
	l.level = v
	l.mu.Unlock()
}
func (l *line) get() (bool, int) { l.mu.Lock(); defer l.mu.Unlock(); return l.level, l.edges }

func rd(d *Device, off uint64) uint32 {
	var b [4]byte
	d.Read(bus.CPUAccess(0), off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func wr(d *Device, off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	d.Write(bus.CPUAccess(0), off, b[:])
}

const base = 0x4000_0000

// setup brings the device up the way Linux's virtio_mmio does, negotiating accept.
func setup(t *testing.T, d *Device, r *virtiotest.Ring, accept uint64) {
	t.Helper()
	wr(d, RegStatus, 0)
	wr(d, RegStatus, virtio.StatusAcknowledge)
	wr(d, RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
	var offered uint64
	for sel := uint32(0); sel < 2; sel++ {
		wr(d, RegDeviceFeaturesSel, sel)
		offered |= uint64(rd(d, RegDeviceFeatures)) << (32 * sel)
	}
	f := offered & accept
	for sel := uint32(0); sel < 2; sel++ {
		wr(d, RegDriverFeaturesSel, sel)
		wr(d, RegDriverFeatures, uint32(f>>(32*sel)))
	}
	wr(d, RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
	if rd(d, RegStatus)&virtio.StatusFeaturesOK == 0 {
		t.Fatal("FEATURES_OK refused")
	}
	wr(d, RegQueueSel, 0)
	if rd(d, RegQueueReady) != 0 {
		t.Fatal("queue ready before setup")
	}
	if max := rd(d, RegQueueNumMax); max != 64 {
		t.Fatalf("QueueNumMax = %d", max)
	}
	wr(d, RegQueueNum, uint32(r.Size))
	wr(d, RegQueueDescLow, uint32(r.Desc))
	wr(d, RegQueueDescHigh, uint32(r.Desc>>32))
	wr(d, RegQueueDriverLow, uint32(r.Avail))
	wr(d, RegQueueDriverHigh, uint32(r.Avail>>32))
	wr(d, RegQueueDeviceLow, uint32(r.Used))
	wr(d, RegQueueDeviceHigh, uint32(r.Used>>32))
	wr(d, RegQueueReady, 1)
	if rd(d, RegQueueReady) != 1 {
		t.Fatal("QueueReady did not stick")
	}
	wr(d, RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK|virtio.StatusDriverOK)
}

func TestIdentity(t *testing.T) {
	m := virtiotest.NewMem(base, 1<<20)
	d := New(&echoDev{}, m, nil)
	if rd(d, RegMagic) != 0x74726976 || rd(d, RegVersion) != 2 || rd(d, RegVendorID) != 0x554d4551 || rd(d, RegDeviceID) != virtio.IDEntropy {
		t.Fatalf("identity %#x %d %#x %d", rd(d, RegMagic), rd(d, RegVersion), rd(d, RegVendorID), rd(d, RegDeviceID))
	}
	empty := New(nil, m, nil)
	if rd(empty, RegMagic) != Magic || rd(empty, RegVersion) != 2 || rd(empty, RegDeviceID) != 0 {
		t.Fatal("empty slot identity")
	}
	wr(empty, RegStatus, 1) // ignored, no panic
	if rd(empty, RegStatus) != 0 || rd(empty, RegQueueNumMax) != 0 {
		t.Fatal("empty slot has state")
	}
	// Sub-word register reads return zero; config space is byte addressable.
	var b [2]byte
	d.Read(bus.Host, RegMagic, b[:])
	if b != [2]byte{} {
		t.Fatal("16-bit register read returned data")
	}
	d.Write(bus.Host, RegConfig+3, []byte{0x5a})
	var c [1]byte
	d.Read(bus.Host, RegConfig+3, c[:])
	if c[0] != 0x5a {
		t.Fatal("config byte access")
	}
	if rd(d, RegSHMLenLow) != 0xffffffff || rd(d, RegSHMLenHigh) != 0xffffffff {
		t.Fatal("no shared memory must read length -1")
	}
}

func TestFeatureNegotiation(t *testing.T) {
	m := virtiotest.NewMem(base, 1<<20)
	d := New(&echoDev{feat: 1 << 3}, m, nil)
	wr(d, RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
	wr(d, RegDeviceFeaturesSel, 0)
	lo := rd(d, RegDeviceFeatures)
	wr(d, RegDeviceFeaturesSel, 1)
	hi := rd(d, RegDeviceFeatures)
	wr(d, RegDeviceFeaturesSel, 2)
	if rd(d, RegDeviceFeatures) != 0 {
		t.Fatal("feature window 2 not zero")
	}
	if lo != 1<<3|1<<virtio.FIndirectDesc|1<<virtio.FEventIdx || hi != 1 {
		t.Fatalf("offered %#x %#x", hi, lo)
	}
	neg := func(lo, hi uint32) bool {
		wr(d, RegStatus, 0)
		wr(d, RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
		wr(d, RegDriverFeaturesSel, 0)
		wr(d, RegDriverFeatures, lo)
		wr(d, RegDriverFeaturesSel, 1)
		wr(d, RegDriverFeatures, hi)
		wr(d, RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
		return rd(d, RegStatus)&virtio.StatusFeaturesOK != 0
	}
	if !neg(1<<3, 1) {
		t.Fatal("offered subset refused")
	}
	// After FEATURES_OK the driver's features are frozen.
	wr(d, RegDriverFeaturesSel, 0)
	wr(d, RegDriverFeatures, 0xffffffff)
	if d.Transport().DriverFeatures() != 1<<32|1<<3 {
		t.Fatalf("features changed after FEATURES_OK: %#x", d.Transport().DriverFeatures())
	}
	if neg(1<<4, 1) {
		t.Fatal("FEATURES_OK accepted with a feature not offered")
	}
	if neg(1<<3, 1<<2) { // bit 34, RING_PACKED: never offered
		t.Fatal("FEATURES_OK accepted packed ring")
	}
	if neg(1<<3, 0) {
		t.Fatal("FEATURES_OK accepted without VERSION_1")
	}
	// DRIVER_OK without FEATURES_OK is a device error, not an activation.
	wr(d, RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusDriverOK)
	if d.Transport().Active() || rd(d, RegStatus)&virtio.StatusNeedsReset == 0 {
		t.Fatalf("status %#x", rd(d, RegStatus))
	}
	wr(d, RegStatus, 0)
	if rd(d, RegStatus) != 0 {
		t.Fatal("reset did not clear status")
	}
}

func TestQueueAndInterrupt(t *testing.T) {
	m := virtiotest.NewMem(base, 1<<20)
	l := &line{}
	e := &echoDev{}
	d := New(e, m, l)
	r := virtiotest.NewRing(m, 16, base+0x10000, 64<<10)
	setup(t, d, r, ^uint64(0))
	if !d.Transport().Active() {
		t.Fatalf("not active: %v", d.Transport().Err())
	}
	// Queue config cannot change while live.
	wr(d, RegQueueNum, 8)
	if d.Transport().Queue().Size != 16 {
		t.Fatal("QueueNum changed while DRIVER_OK")
	}
	_, gpas := r.Add(virtiotest.Buf{Write: 4}, virtiotest.Buf{Write: 60})
	wr(d, RegQueueNotify, 0)
	if _, ln, ok := r.WaitUsed(2 * time.Second); !ok || ln != 4 {
		t.Fatalf("used %d %v", ln, ok)
	}
	if binary.LittleEndian.Uint32(m.At(gpas[0], 4)) != 64 {
		t.Fatal("device reply")
	}
	if lv, edges := l.get(); !lv || edges != 1 || rd(d, RegInterruptStatus) != IntUsedBuffer {
		t.Fatalf("line %v edges %d isr %#x", lv, edges, rd(d, RegInterruptStatus))
	}
	wr(d, RegInterruptACK, IntUsedBuffer)
	if lv, _ := l.get(); lv || rd(d, RegInterruptStatus) != 0 {
		t.Fatal("ACK did not lower the line")
	}
	// Notifying a queue that does not exist is harmless.
	wr(d, RegQueueNotify, 7)
	wr(d, RegQueueNotify, 0xffffffff)
}

func TestBrokenRingNeedsReset(t *testing.T) {
	m := virtiotest.NewMem(base, 1<<20)
	l := &line{}
	d := New(&echoDev{}, m, l)
	r := virtiotest.NewRing(m, 16, base+0x10000, 64<<10)
	setup(t, d, r, ^uint64(0))
	r.SetDesc(r.Desc, 0, 0, 8, 2, 0) // buffer at GPA 0: not RAM
	r.Publish(0)
	wr(d, RegQueueNotify, 0)
	deadline := time.Now().Add(2 * time.Second)
	for rd(d, RegStatus)&virtio.StatusNeedsReset == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if rd(d, RegStatus)&virtio.StatusNeedsReset == 0 {
		t.Fatal("NEEDS_RESET not set")
	}
	if rd(d, RegInterruptStatus)&IntConfig == 0 || rd(d, RegConfigGeneration) == 0 {
		t.Fatal("no config interrupt / generation bump")
	}
	if lv, _ := l.get(); !lv {
		t.Fatal("line low")
	}
	wr(d, RegStatus, 0)
	if lv, _ := l.get(); lv || rd(d, RegInterruptStatus) != 0 || rd(d, RegStatus) != 0 {
		t.Fatal("reset left an interrupt pending")
	}
}

func TestResetStopsWorkers(t *testing.T) {
	m := virtiotest.NewMem(base, 1<<20)
	e := &echoDev{delay: time.Hour} // a worker that would hold its request for an hour
	d := New(e, m, nil)
	r := virtiotest.NewRing(m, 16, base+0x10000, 64<<10)
	setup(t, d, r, ^uint64(0))
	r.Add(virtiotest.Buf{Write: 4})
	wr(d, RegQueueNotify, 0)
	deadline := time.Now().Add(2 * time.Second)
	for e.inflight.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if e.inflight.Load() != 1 {
		t.Fatal("request never reached the worker")
	}
	done := make(chan struct{})
	go func() { wr(d, RegStatus, 0); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("reset hung")
	}
	if e.inflight.Load() != 0 || d.Transport().Active() {
		t.Fatal("worker still running after reset")
	}
	// The device comes back after a fresh bring-up.
	r2 := virtiotest.NewRing(m, 16, base+0x40000, 64<<10)
	e.delay = 0
	setup(t, d, r2, ^uint64(0))
	r2.Add(virtiotest.Buf{Write: 4})
	wr(d, RegQueueNotify, 0)
	if _, _, ok := r2.WaitUsed(2 * time.Second); !ok {
		t.Fatal("no completion after re-initialisation")
	}
	d.Reset() // machine reset
	if d.Transport().Active() || rd(d, RegStatus) != 0 {
		t.Fatal("machine reset")
	}
}

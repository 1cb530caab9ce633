package virtio_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

// testDev is a device with fixed queues that keeps its Activation for the test to drive.
type testDev struct {
	max     []uint16
	feat    uint64
	act     *virtio.Activation
	resets  int
	actErr  error
	checker func(uint64) error
}

func (d *testDev) DeviceID() uint16                   { return 0x7f }
func (d *testDev) Features() uint64                   { return d.feat }
func (d *testDev) QueueMax() []uint16                 { return d.max }
func (d *testDev) ReadConfig(off uint64, data []byte) {}
func (d *testDev) WriteConfig(uint64, []byte)         {}
func (d *testDev) Activate(a virtio.Activation) error {
	if d.actErr != nil {
		return d.actErr
	}
	d.act = &a
	return nil
}
func (d *testDev) Reset() { d.act = nil; d.resets++ }

const (
	ramBase = 0x4000_0000
	ramSize = 1 << 20
)

type rig struct {
	mem  *virtiotest.Mem
	ring *virtiotest.Ring
	dev  *testDev
	irq  *virtiotest.IRQ
	t    *virtio.Transport
	q    *virtio.Queue
}

func newRig(t *testing.T, size uint16, want uint64) *rig {
	t.Helper()
	m := virtiotest.NewMem(ramBase, ramSize)
	r := virtiotest.NewRing(m, size, ramBase, 256<<10)
	d := &testDev{max: []uint16{256}}
	irq := &virtiotest.IRQ{}
	tr := virtiotest.Bringup(d, m, irq, want, r)
	if tr.Status()&virtio.StatusNeedsReset != 0 || d.act == nil {
		t.Fatalf("bring-up failed: status %#x err %v", tr.Status(), tr.Err())
	}
	return &rig{mem: m, ring: r, dev: d, irq: irq, t: tr, q: d.act.Queues[0]}
}

func TestQueueRoundTrip(t *testing.T) {
	for _, ind := range []bool{false, true} {
		rg := newRig(t, 16, 1<<virtio.FIndirectDesc)
		bufs := []virtiotest.Buf{{Data: []byte("hello ")}, {Data: []byte("world")}, {Write: 3}, {Write: 5}}
		var head uint16
		var gpas []uint64
		if ind {
			head, gpas = rg.ring.AddIndirect(bufs...)
		} else {
			head, gpas = rg.ring.Add(bufs...)
		}
		c, err := rg.q.Pop()
		if err != nil || c == nil {
			t.Fatalf("indirect=%v: Pop = %v, %v", ind, c, err)
		}
		if c.Head() != head || len(c.Out) != 2 || len(c.In) != 2 || c.Out.Len() != 11 || c.In.Len() != 8 {
			t.Fatalf("indirect=%v: chain head %d out %d/%d in %d/%d", ind, c.Head(), len(c.Out), c.Out.Len(), len(c.In), c.In.Len())
		}
		got := make([]byte, 11)
		if n := c.Out.ReadAt(got, 0); n != 11 || string(got) != "hello world" {
			t.Fatalf("readable = %q", got[:n])
		}
		if n := c.In.WriteAt([]byte("ABCDEFGH"), 0); n != 8 {
			t.Fatalf("WriteAt = %d", n)
		}
		rg.q.Push(c, 8)
		rg.q.Signal()
		id, ln, ok := rg.ring.PopUsed()
		if !ok || id != uint32(head) || ln != 8 {
			t.Fatalf("used = %d,%d,%v", id, ln, ok)
		}
		if string(rg.mem.At(gpas[2], 3)) != "ABC" || string(rg.mem.At(gpas[3], 5)) != "DEFGH" {
			t.Fatal("device writes did not land in the writable buffers")
		}
		if !rg.mem.WasWritten(gpas[2], 3) || !rg.mem.WasWritten(gpas[3], 5) || !rg.mem.WasWritten(rg.ring.Used+2, 2) {
			t.Fatal("writes not reported to Memory.Written")
		}
		if used, _ := rg.irq.Counts(); used != 1 {
			t.Fatalf("used notifications = %d", used)
		}
		if c, err := rg.q.Pop(); c != nil || err != nil {
			t.Fatalf("empty ring Pop = %v, %v", c, err)
		}
	}
}

func TestQueueFullRingWraps(t *testing.T) {
	rg := newRig(t, 4, 0)
	for round := 0; round < 5; round++ {
		for i := 0; i < 4; i++ {
			rg.ring.Add(virtiotest.Buf{Write: 1})
		}
		for i := 0; i < 4; i++ {
			c, err := rg.q.Pop()
			if err != nil || c == nil {
				t.Fatalf("round %d pop %d: %v %v", round, i, c, err)
			}
			rg.q.Push(c, 1)
		}
		for i := 0; i < 4; i++ {
			if _, _, ok := rg.ring.PopUsed(); !ok {
				t.Fatal("missing used entry")
			}
		}
	}
}

// TestQueueHostile feeds every malformed ring the walker must refuse: each must break
// the queue, set DEVICE_NEEDS_RESET and send one configuration interrupt — no panic.
func TestQueueHostile(t *testing.T) {
	const D = 0 // write descriptors into the ring's own table
	cases := []struct {
		name  string
		want  uint64 // features beyond VERSION_1
		setup func(r *virtiotest.Ring)
	}{
		{"head out of range", 0, func(r *virtiotest.Ring) { r.Publish(16) }},
		{"two-descriptor loop", 0, func(r *virtiotest.Ring) {
			a := r.Alloc(16)
			r.SetDesc(r.Desc, 0, a, 8, 1, 1)
			r.SetDesc(r.Desc, 1, a, 8, 1, 0)
			r.Publish(0)
		}},
		{"self loop", 0, func(r *virtiotest.Ring) {
			r.SetDesc(r.Desc, 3, r.Alloc(16), 8, 1, 3)
			r.Publish(3)
		}},
		{"next out of range", 0, func(r *virtiotest.Ring) {
			r.SetDesc(r.Desc, 0, r.Alloc(16), 8, 1, 16)
			r.Publish(0)
		}},
		{"buffer outside RAM", 0, func(r *virtiotest.Ring) {
			r.SetDesc(r.Desc, 0, ramBase+ramSize-4, 8, 0, 0)
			r.Publish(0)
		}},
		{"buffer below RAM", 0, func(r *virtiotest.Ring) {
			r.SetDesc(r.Desc, 0, 0x1000, 8, 0, 0)
			r.Publish(0)
		}},
		{"address+length overflows", 0, func(r *virtiotest.Ring) {
			r.SetDesc(r.Desc, 0, ^uint64(0)-7, 0xffffffff, 2, 0)
			r.Publish(0)
		}},
		{"readable after writable", 0, func(r *virtiotest.Ring) {
			a := r.Alloc(32)
			r.SetDesc(r.Desc, 0, a, 8, 1|2, 1)
			r.SetDesc(r.Desc, 1, a+16, 8, 0, 0)
			r.Publish(0)
		}},
		{"indirect not negotiated", 0, func(r *virtiotest.Ring) {
			tbl := r.Alloc(16)
			r.SetDesc(tbl, 0, r.Alloc(16), 8, 0, 0)
			r.SetDesc(r.Desc, 0, tbl, 16, 4, 0)
			r.Publish(0)
		}},
		{"indirect length not a multiple of 16", 1 << virtio.FIndirectDesc, func(r *virtiotest.Ring) {
			tbl := r.Alloc(32)
			r.SetDesc(tbl, 0, r.Alloc(16), 8, 0, 0)
			r.SetDesc(r.Desc, 0, tbl, 24, 4, 0)
			r.Publish(0)
		}},
		{"indirect length zero", 1 << virtio.FIndirectDesc, func(r *virtiotest.Ring) {
			r.SetDesc(r.Desc, 0, r.Alloc(16), 0, 4, 0)
			r.Publish(0)
		}},
		{"indirect with NEXT", 1 << virtio.FIndirectDesc, func(r *virtiotest.Ring) {
			tbl := r.Alloc(16)
			r.SetDesc(tbl, 0, r.Alloc(16), 8, 0, 0)
			r.SetDesc(r.Desc, 0, tbl, 16, 4|1, 1)
			r.SetDesc(r.Desc, 1, r.Alloc(16), 8, 0, 0)
			r.Publish(0)
		}},
		{"nested indirect", 1 << virtio.FIndirectDesc, func(r *virtiotest.Ring) {
			inner := r.Alloc(16)
			r.SetDesc(inner, 0, r.Alloc(16), 8, 0, 0)
			tbl := r.Alloc(16)
			r.SetDesc(tbl, 0, inner, 16, 4, 0)
			r.SetDesc(r.Desc, 0, tbl, 16, 4, 0)
			r.Publish(0)
		}},
		{"indirect table outside RAM", 1 << virtio.FIndirectDesc, func(r *virtiotest.Ring) {
			r.SetDesc(r.Desc, 0, ramBase+ramSize-16, 32, 4, 0)
			r.Publish(0)
		}},
		{"loop inside indirect table", 1 << virtio.FIndirectDesc, func(r *virtiotest.Ring) {
			tbl := r.Alloc(32)
			a := r.Alloc(16)
			r.SetDesc(tbl, 0, a, 8, 1, 1)
			r.SetDesc(tbl, 1, a, 8, 1, 0)
			r.SetDesc(r.Desc, 0, tbl, 32, 4, 0)
			r.Publish(0)
		}},
		{"indirect next out of table", 1 << virtio.FIndirectDesc, func(r *virtiotest.Ring) {
			tbl := r.Alloc(32)
			a := r.Alloc(16)
			r.SetDesc(tbl, 0, a, 8, 1, 2)
			r.SetDesc(r.Desc, 0, tbl, 32, 4, 0)
			r.Publish(0)
		}},
		{"indirect table above MaxIndirect", 1 << virtio.FIndirectDesc, func(r *virtiotest.Ring) {
			n := uint16(virtio.MaxIndirect + 1)
			tbl := r.Alloc(16 * uint64(n))
			a := r.Alloc(16)
			for i := uint16(0); i < n; i++ {
				r.SetDesc(tbl, i, a, 1, 1, i+1)
			}
			r.SetDesc(tbl, n-1, a, 1, 0, 0)
			r.SetDesc(r.Desc, 0, tbl, 16*uint32(n), 4, 0)
			r.Publish(0)
		}},
		{"available index runs ahead", 0, func(r *virtiotest.Ring) {
			r.SetDesc(r.Desc, 0, r.Alloc(16), 8, 0, 0)
			r.SetAvailIdx(17)
		}},
		{"available index goes backwards", 0, func(r *virtiotest.Ring) {
			r.SetAvailIdx(0xffff)
		}},
	}
	_ = D
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rg := newRig(t, 16, tc.want)
			tc.setup(rg.ring)
			c, err := rg.q.Pop()
			if err == nil || c != nil {
				t.Fatalf("Pop = %v, %v; want an error", c, err)
			}
			if rg.t.Status()&virtio.StatusNeedsReset == 0 {
				t.Fatalf("status %#x lacks NEEDS_RESET", rg.t.Status())
			}
			if _, cfg := rg.irq.Counts(); cfg != 1 {
				t.Fatalf("config interrupts = %d, want 1", cfg)
			}
			if rg.t.ConfigGeneration() == 0 {
				t.Fatal("config generation not bumped")
			}
			if _, err := rg.q.Pop(); !errors.Is(err, virtio.ErrBroken) {
				t.Fatalf("second Pop = %v, want ErrBroken", err)
			}
			// The driver recovers by resetting.
			rg.t.SetStatus(0)
			if rg.t.Status() != 0 || rg.t.Err() != nil || rg.dev.resets == 0 {
				t.Fatalf("after reset: status %#x err %v resets %d", rg.t.Status(), rg.t.Err(), rg.dev.resets)
			}
		})
	}
}

func TestQueueChainAtLimits(t *testing.T) {
	// A chain exactly as long as the queue is fine; writable descriptors of length zero too.
	rg := newRig(t, 8, 1<<virtio.FIndirectDesc)
	a := rg.ring.Alloc(16)
	for i := uint16(0); i < 8; i++ {
		rg.ring.SetDesc(rg.ring.Desc, i, a, 0, 1|2, (i+1)%8)
	}
	rg.ring.SetDesc(rg.ring.Desc, 7, a, 4, 2, 0)
	rg.ring.Publish(0)
	c, err := rg.q.Pop()
	if err != nil || len(c.In) != 8 || c.In.Len() != 4 {
		t.Fatalf("8-descriptor chain: %v %v", c, err)
	}
	// An indirect table longer than the queue is fine (Linux sizes tables by seg_max).
	bufs := make([]virtiotest.Buf, 40)
	for i := range bufs {
		bufs[i] = virtiotest.Buf{Write: 1}
	}
	rg.ring.AddIndirect(bufs...)
	if c, err := rg.q.Pop(); err != nil || len(c.In) != 40 {
		t.Fatalf("indirect of 40: %v %v", c, err)
	}
}

func TestQueueConfigRefused(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*virtio.QueueConfig)
	}{
		{"size not a power of two", func(c *virtio.QueueConfig) { c.Size = 12 }},
		{"size zero", func(c *virtio.QueueConfig) { c.Size = 0 }},
		{"size above max", func(c *virtio.QueueConfig) { c.Size = 512 }},
		{"descriptor table misaligned", func(c *virtio.QueueConfig) { c.Desc += 8 }},
		{"used ring misaligned", func(c *virtio.QueueConfig) { c.Device += 2 }},
		{"used ring outside RAM", func(c *virtio.QueueConfig) { c.Device = ramBase + ramSize - 8 }},
		{"avail ring wraps", func(c *virtio.QueueConfig) { c.Driver = ^uint64(0) - 1 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := virtiotest.NewMem(ramBase, ramSize)
			r := virtiotest.NewRing(m, 16, ramBase, 4096)
			d := &testDev{max: []uint16{256}}
			irq := &virtiotest.IRQ{}
			tr := virtio.NewTransport(d, m, irq)
			tr.SetStatus(virtio.StatusAcknowledge | virtio.StatusDriver)
			tr.SetDriverFeatureSel(1)
			tr.SetDriverFeatureWindow(1) // VERSION_1
			tr.SetStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK)
			c := r.Config()
			tc.mod(&c)
			tr.UpdateQueue(func(q *virtio.QueueConfig) { *q = c })
			tr.SetStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK | virtio.StatusDriverOK)
			if d.act != nil || tr.Active() {
				t.Fatal("device activated with a bad queue")
			}
			if tr.Status()&virtio.StatusNeedsReset == 0 {
				t.Fatalf("status %#x", tr.Status())
			}
		})
	}
}

func TestEventIdx(t *testing.T) {
	rg := newRig(t, 16, 1<<virtio.FEventIdx)
	// Empty ring: the device asks to be notified at the next index.
	if c, err := rg.q.Pop(); c != nil || err != nil {
		t.Fatal(c, err)
	}
	if rg.ring.AvailEvent() != 0 {
		t.Fatalf("avail_event = %d", rg.ring.AvailEvent())
	}
	for i := 0; i < 3; i++ {
		rg.ring.Add(virtiotest.Buf{Write: 1})
	}
	var cs []*virtio.Chain
	for {
		c, err := rg.q.Pop()
		if err != nil {
			t.Fatal(err)
		}
		if c == nil {
			break
		}
		cs = append(cs, c)
	}
	if len(cs) != 3 || rg.ring.AvailEvent() != 3 {
		t.Fatalf("popped %d, avail_event %d", len(cs), rg.ring.AvailEvent())
	}
	// The driver wants an interrupt only once used index passes 2 (used_event = 2).
	rg.ring.SetUsedEvent(2)
	rg.q.Push(cs[0], 1)
	rg.q.Signal() // first signal always goes (no previous state)
	rg.q.Push(cs[1], 1)
	rg.q.Signal() // used 1 -> 2: event 2 not passed
	if n, _ := rg.irq.Counts(); n != 1 {
		t.Fatalf("notifications = %d, want 1", n)
	}
	rg.q.Push(cs[2], 1)
	rg.q.Signal() // used 2 -> 3 passes event 2
	if n, _ := rg.irq.Counts(); n != 2 {
		t.Fatalf("notifications = %d, want 2", n)
	}
}

func TestNoInterruptFlag(t *testing.T) {
	rg := newRig(t, 16, 0)
	rg.ring.SetAvailFlags(1)
	rg.ring.Add(virtiotest.Buf{Write: 1})
	c, _ := rg.q.Pop()
	rg.q.Push(c, 1)
	rg.q.Signal()
	if n, _ := rg.irq.Counts(); n != 0 {
		t.Fatal("notified despite VIRTQ_AVAIL_F_NO_INTERRUPT")
	}
	rg.ring.SetAvailFlags(0)
	rg.ring.Add(virtiotest.Buf{Write: 1})
	c, _ = rg.q.Pop()
	rg.q.Push(c, 1)
	rg.q.Signal()
	if n, _ := rg.irq.Counts(); n != 1 {
		t.Fatal("not notified")
	}
}

func TestPushClampsLength(t *testing.T) {
	rg := newRig(t, 16, 0)
	rg.ring.Add(virtiotest.Buf{Write: 4})
	c, _ := rg.q.Pop()
	rg.q.Push(c, 1000)
	if _, ln, _ := rg.ring.PopUsed(); ln != 4 {
		t.Fatalf("used len %d, want clamped to 4", ln)
	}
}

func TestBuffersSlice(t *testing.T) {
	m := virtiotest.NewMem(0, 64)
	for i := range m.B {
		m.B[i] = byte(i)
	}
	bs := virtio.Buffers{{GPA: 0, B: m.B[0:5]}, {GPA: 10, B: m.B[10:20]}, {GPA: 30, B: m.B[30:33]}}
	s := bs.Slice(3, 9)
	if s.Len() != 9 || len(s) != 2 || s[0].GPA != 3 || s[1].GPA != 10 {
		t.Fatalf("Slice = %+v", s)
	}
	got := make([]byte, 9)
	s.ReadAt(got, 0)
	want := []byte{3, 4, 10, 11, 12, 13, 14, 15, 16}
	if string(got) != string(want) {
		t.Fatalf("got %v", got)
	}
	if n := bs.ReadAt(make([]byte, 100), 17); n != 1 {
		t.Fatalf("tail read %d", n)
	}
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], 0xbeef)
	if n := bs.WriteAt(b[:], 4); n != 2 || m.B[4] != 0xef || m.B[10] != 0xbe {
		t.Fatal("WriteAt across segments")
	}
}

// BenchmarkQueueRoundTrip is one request's ring cost: the driver publishes a
// three-descriptor chain, the device pops, pushes and signals, the driver reaps.
func BenchmarkQueueRoundTrip(b *testing.B) {
	m := virtiotest.NewMem(ramBase, ramSize)
	defer m.Close()
	r := virtiotest.NewRing(m, 256, ramBase, 256<<10)
	d := &testDev{max: []uint16{256}}
	virtiotest.Bringup(d, m, &virtiotest.IRQ{}, 1<<virtio.FEventIdx, r)
	q := d.act.Queues[0]
	hdr, data, st := r.Alloc(16), r.Alloc(4096), r.Alloc(1)
	// Fill the table once: the benchmark measures the rings, not the test driver.
	r.SetDesc(r.Desc, 0, hdr, 16, 1, 1)
	r.SetDesc(r.Desc, 1, data, 4096, 1|2, 2)
	r.SetDesc(r.Desc, 2, st, 1, 2, 0)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r.Publish(0)
		c, err := q.Pop()
		if err != nil || c == nil {
			b.Fatal(c, err)
		}
		q.Push(c, 4097)
		q.Signal()
		if _, _, ok := r.PopUsed(); !ok {
			b.Fatal("no used")
		}
	}
}

package virtio_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

// stDev is testDev with a state section and, if hold, buffer-holding queues.
type stDev struct {
	testDev
	hold  bool
	blob  []byte
	saved int
}

func (d *stDev) HoldsBuffers(int) bool { return d.hold }
func (d *stDev) SaveState() (bus.State, error) {
	d.saved++
	return bus.State{Name: "test-dev", Version: 3, Data: d.blob}, nil
}
func (d *stDev) LoadState(s bus.State) error {
	if s.Name != "test-dev" || s.Version != 3 {
		return fmt.Errorf("test-dev: cannot load %q version %d", s.Name, s.Version)
	}
	d.blob = append([]byte(nil), s.Data...)
	return nil
}

func pop(t *testing.T, q *virtio.Queue) *virtio.Chain {
	t.Helper()
	c, err := q.Pop()
	if err != nil || c == nil {
		t.Fatalf("Pop = %v, %v", c, err)
	}
	return c
}

// TestStateRoundTripRewind: a device holding two popped buffers (a receive queue) is
// saved after completing one; the destination pops the two held buffers again, and
// the used ring, features, status, selectors and the device's section carry over.
func TestStateRoundTripRewind(t *testing.T) {
	m := virtiotest.NewMem(ramBase, ramSize)
	defer m.Close()
	r := virtiotest.NewRing(m, 8, ramBase, 256<<10)
	d := &stDev{testDev: testDev{max: []uint16{8, 4}, feat: 1 << 3}, hold: true, blob: []byte("dev state")}
	tr := virtiotest.Bringup(d, m, &virtiotest.IRQ{}, 1<<3|1<<virtio.FEventIdx, r)
	if d.act == nil {
		t.Fatalf("not active, status %#x", tr.Status())
	}
	q := d.act.Queues[0]
	var heads []uint16
	for range 3 {
		h, _ := r.Add(virtiotest.Buf{Write: 16})
		heads = append(heads, h)
	}
	c1 := pop(t, q)
	pop(t, q)
	pop(t, q)
	q.Push(c1, 4)
	q.Signal()
	tr.SetQueueSel(1)

	if _, err := tr.SaveState(); err == nil || !strings.Contains(err.Error(), "quiesced") {
		t.Fatalf("SaveState of a running device that is not quiesced: %v", err)
	}
	if err := tr.Quiesce(time.Second); err != nil {
		t.Fatal(err)
	}
	if c, err := q.Pop(); c != nil || err != nil {
		t.Fatalf("Pop on a quiesced queue = %v, %v", c, err)
	}
	data, err := tr.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	tr.Thaw()

	m2 := m.Clone()
	defer m2.Close()
	r2 := r.On(m2)
	d2 := &stDev{testDev: testDev{max: []uint16{8, 4}, feat: 1 << 3}}
	tr2 := virtio.NewTransport(d2, m2, &virtiotest.IRQ{})
	if err := tr2.LoadState(data); err != nil {
		t.Fatal(err)
	}
	if string(d2.blob) != "dev state" {
		t.Fatalf("device section %q", d2.blob)
	}
	if d2.act == nil || !tr2.Active() {
		t.Fatal("restored device not active")
	}
	if tr2.Status() != tr.Status() || tr2.DriverFeatures() != tr.DriverFeatures() || tr2.QueueSel() != 1 ||
		tr2.ConfigGeneration() != tr.ConfigGeneration() {
		t.Fatalf("status %#x features %#x sel %d, want %#x %#x 1", tr2.Status(), tr2.DriverFeatures(), tr2.QueueSel(), tr.Status(), tr.DriverFeatures())
	}
	if d2.act.Features != d.act.Features || d2.act.Queues[1] != nil {
		t.Fatalf("activation features %#x queues %v", d2.act.Features, d2.act.Queues)
	}
	tr2.SetQueueSel(0)
	if c := tr2.Queue(); c != r.Config() {
		t.Fatalf("queue config %+v, want %+v", c, r.Config())
	}
	q2 := d2.act.Queues[0]
	if id, ln, ok := r2.PopUsed(); !ok || id != uint32(heads[0]) || ln != 4 {
		t.Fatalf("used before the save: %d %d %v", id, ln, ok)
	}
	for _, h := range heads[1:] {
		c := pop(t, q2)
		if c.Head() != h {
			t.Fatalf("restored queue popped head %d, want %d", c.Head(), h)
		}
		q2.Push(c, 8)
	}
	if c, err := q2.Pop(); c != nil || err != nil {
		t.Fatalf("ring should be empty: %v %v", c, err)
	}
	for _, h := range heads[1:] {
		if id, ln, ok := r2.PopUsed(); !ok || id != uint32(h) || ln != 8 {
			t.Fatalf("used %d %d %v, want head %d", id, ln, ok, h)
		}
	}
	if r2.UsedIdx() != 3 {
		t.Fatalf("used idx %d, want 3", r2.UsedIdx())
	}
}

// TestQuiesceDrains: Quiesce waits for a popped request to be pushed, and gives up
// with a line naming the queue when it never is; Push waits while quiesced.
func TestQuiesceDrains(t *testing.T) {
	m := virtiotest.NewMem(ramBase, ramSize)
	defer m.Close()
	r := virtiotest.NewRing(m, 8, ramBase, 256<<10)
	d := &stDev{testDev: testDev{max: []uint16{8}}}
	tr := virtiotest.Bringup(d, m, &virtiotest.IRQ{}, 0, r)
	q := d.act.Queues[0]
	r.Add(virtiotest.Buf{Write: 16})
	c := pop(t, q)
	if err := tr.Quiesce(20 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "queue 0 still has 1 requests in flight") {
		t.Fatalf("Quiesce with a request never completed: %v", err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		q.Push(c, 0)
	}()
	if err := tr.Quiesce(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if r.UsedIdx() != 1 {
		t.Fatalf("Quiesce returned before the request completed (used idx %d)", r.UsedIdx())
	}
	r.Add(virtiotest.Buf{Write: 16})
	if c, _ := q.Pop(); c != nil {
		t.Fatal("Pop while quiesced")
	}
	tr.Thaw()
	c = pop(t, q)
	// A held buffer's Push waits for Thaw.
	if err := tr.Quiesce(0); err == nil {
		t.Fatal("Quiesce with a request in flight and no time")
	}
	d.hold = true
	if err := tr.Quiesce(0); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { q.Push(c, 0); close(done) }()
	select {
	case <-done:
		t.Fatal("Push completed on a quiesced queue")
	case <-time.After(20 * time.Millisecond):
	}
	if r.UsedIdx() != 1 {
		t.Fatalf("used idx %d while quiesced", r.UsedIdx())
	}
	tr.Thaw()
	<-done
	if r.UsedIdx() != 2 {
		t.Fatalf("used idx %d", r.UsedIdx())
	}
}

// TestStateRefusals: a device without state support, a stream for another device
// and damaged streams are refused with an error, never a panic.
func TestStateRefusals(t *testing.T) {
	m := virtiotest.NewMem(ramBase, ramSize)
	defer m.Close()
	plain := virtio.NewTransport(&testDev{max: []uint16{8}}, m, &virtiotest.IRQ{})
	if _, err := plain.SaveState(); err == nil || !strings.Contains(err.Error(), "does not support migration") {
		t.Fatalf("SaveState of a device without state: %v", err)
	}
	r := virtiotest.NewRing(m, 8, ramBase, 256<<10)
	d := &stDev{testDev: testDev{max: []uint16{8}}}
	tr := virtiotest.Bringup(d, m, &virtiotest.IRQ{}, 0, r)
	if err := tr.Quiesce(time.Second); err != nil {
		t.Fatal(err)
	}
	data, err := tr.SaveState()
	tr.Thaw()
	if err != nil {
		t.Fatal(err)
	}
	other := virtio.NewTransport(&stDev{testDev: testDev{max: []uint16{8, 8}}}, m, &virtiotest.IRQ{})
	if err := other.LoadState(data); err == nil || !strings.Contains(err.Error(), "queues") {
		t.Fatalf("load into a device with other queues: %v", err)
	}
	for n := 0; n < len(data); n++ {
		d2 := &stDev{testDev: testDev{max: []uint16{8}}}
		if err := virtio.NewTransport(d2, m, &virtiotest.IRQ{}).LoadState(data[:n]); err == nil {
			t.Fatalf("truncated state (%d of %d bytes) loaded", n, len(data))
		}
	}
	// Every single-byte corruption loads or fails, without a panic.
	for i := range data {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0xff
		d2 := &stDev{testDev: testDev{max: []uint16{8}}}
		tr2 := virtio.NewTransport(d2, m, &virtiotest.IRQ{})
		tr2.LoadState(bad)
		tr2.Reset()
	}
}

// FuzzTransportLoadState: any bytes given to LoadState load or fail with an error; a
// loaded device can be reset.
func FuzzTransportLoadState(f *testing.F) {
	m := virtiotest.NewMem(ramBase, ramSize)
	r := virtiotest.NewRing(m, 8, ramBase, 256<<10)
	d := &stDev{testDev: testDev{max: []uint16{8, 4}}, blob: []byte{1, 2}}
	tr := virtiotest.Bringup(d, m, &virtiotest.IRQ{}, 0, r)
	if err := tr.Quiesce(time.Second); err != nil {
		f.Fatal(err)
	}
	data, err := tr.SaveState()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Fuzz(func(t *testing.T, b []byte) {
		tr2 := virtio.NewTransport(&stDev{testDev: testDev{max: []uint16{8, 4}}}, m, &virtiotest.IRQ{})
		tr2.LoadState(b)
		tr2.Reset()
	})
}

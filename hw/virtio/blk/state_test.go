package blk

import (
	"bytes"
	"testing"
	"time"

	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

// TestStateRoundTrip: a read in flight in the backend is completed before the save
// (Quiesce drains it), the save flushes the disk, and a device over the same image on
// a copy of the guest memory serves the next requests; a disk of another size is
// refused.
func TestStateRoundTrip(t *testing.T) {
	r := newRig(t, Config{})
	payload := bytes.Repeat([]byte("migr"), 128)
	if st, _, _ := r.do(r.ring, 0, hdr(TOut, 5), payload, 0); st != SOK {
		t.Fatal("write")
	}
	block := make(chan struct{})
	r.disk.mu.Lock()
	r.disk.block = block
	r.disk.mu.Unlock()
	_, gpas := r.ring.Add(virtiotest.Buf{Data: hdr(TIn, 5)}, virtiotest.Buf{Write: 512}, virtiotest.Buf{Write: 1})
	r.tr.Notify(0)
	for r.disk.active.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	quiesced := make(chan error, 1)
	go func() { quiesced <- r.tr.Quiesce(10 * time.Second) }()
	select {
	case err := <-quiesced:
		t.Fatalf("Quiesce returned with a read in the backend: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(block)
	if err := <-quiesced; err != nil {
		t.Fatal(err)
	}
	if r.ring.UsedIdx() != 2 || r.mem.At(gpas[2], 1)[0] != SOK || !bytes.Equal(r.mem.At(gpas[1], 512), payload) {
		t.Fatalf("the drained read: used idx %d", r.ring.UsedIdx())
	}
	r.ring.PopUsed()
	before, _, _ := r.disk.stats()
	st, err := r.dev.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	data, err := r.tr.SaveState()
	r.tr.Thaw()
	if err != nil {
		t.Fatal(err)
	}
	if fl, _, _ := r.disk.stats(); fl != before+2 {
		t.Fatalf("flushes %d, want %d (SaveState flushes)", fl, before+2)
	}

	m2 := r.mem.Clone()
	defer m2.Close()
	d2, err := New(Config{Backend: r.disk})
	if err != nil {
		t.Fatal(err)
	}
	tr2 := virtio.NewTransport(d2, m2, &virtiotest.IRQ{})
	if err := tr2.LoadState(data); err != nil {
		t.Fatal(err)
	}
	defer tr2.Reset()
	r2 := &rig{t: t, mem: m2, ring: r.ring.On(m2), tr: tr2, dev: d2, disk: r.disk}
	if st, _, got := r2.do(r2.ring, 0, hdr(TIn, 5), nil, 512); st != SOK || !bytes.Equal(got, payload) {
		t.Fatalf("read after restore: status %d", st)
	}
	if r2.ring.UsedIdx() != 3 {
		t.Fatalf("used idx %d after restore, want 3", r2.ring.UsedIdx())
	}
	small, _ := New(Config{Backend: &memDisk{b: make([]byte, diskLen/2)}})
	if err := small.LoadState(st); err == nil {
		t.Fatal("state of a larger disk loaded")
	}
}

package rng

import (
	"bytes"
	"testing"
	"time"

	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

func TestEntropy(t *testing.T) {
	m := virtiotest.NewMem(0x1000_0000, 1<<20)
	defer m.Close()
	d := New()
	r := virtiotest.NewRing(m, 16, 0x1000_0000, 512<<10)
	tr := virtiotest.Bringup(d, m, &virtiotest.IRQ{}, 0, r)
	defer tr.SetStatus(0)
	if tr.Device().DeviceID() != virtio.IDEntropy || !tr.Active() {
		t.Fatal("bring-up")
	}
	_, g1 := r.Add(virtiotest.Buf{Write: 64})
	_, g2 := r.Add(virtiotest.Buf{Write: 32}, virtiotest.Buf{Write: 32})
	tr.Notify(0)
	for i := 0; i < 2; i++ {
		if _, ln, ok := r.WaitUsed(2 * time.Second); !ok || ln != 64 {
			t.Fatalf("used %d %v", ln, ok)
		}
	}
	a := m.At(g1[0], 64)
	b := append(append([]byte{}, m.At(g2[0], 32)...), m.At(g2[1], 32)...)
	if bytes.Equal(a, make([]byte, 64)) || bytes.Equal(a, b) {
		t.Fatal("buffers not filled with random bytes")
	}
	if !m.WasWritten(g1[0], 64) {
		t.Fatal("not reported written")
	}
	// A buffer larger than the per-request bound gets the bound.
	r.Add(virtiotest.Buf{Write: 100 << 10})
	tr.Notify(0)
	if _, ln, ok := r.WaitUsed(2 * time.Second); !ok || ln != maxChunk {
		t.Fatalf("big request: %d", ln)
	}
	// A request with no writable buffer completes with 0 bytes.
	r.Add(virtiotest.Buf{Data: []byte{1}})
	tr.Notify(0)
	if _, ln, ok := r.WaitUsed(2 * time.Second); !ok || ln != 0 {
		t.Fatalf("readable-only request: %d %v", ln, ok)
	}
}

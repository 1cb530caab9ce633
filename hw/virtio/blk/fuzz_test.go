package blk

import (
	"bytes"
	"context"
	"testing"

	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

// holder is a device that only hands its queue to the fuzzer.
type holder struct{ q *virtio.Queue }

func (h *holder) DeviceID() uint16                   { return virtio.IDBlock }
func (h *holder) Features() uint64                   { return 0 }
func (h *holder) QueueMax() []uint16                 { return []uint16{16} }
func (h *holder) ReadConfig(uint64, []byte)          {}
func (h *holder) WriteConfig(uint64, []byte)         {}
func (h *holder) Activate(a virtio.Activation) error { h.q = a.Queues[0]; return nil }
func (h *holder) Reset()                             {}

// FuzzBlkRequest runs arbitrary request bytes (header, payload, buffer shapes) through
// the request handler: any status is fine; a panic, an access outside the disk (the
// fake disk panics), a status outside OK/IOERR/UNSUPP, or a read-only disk changed are
// not.
// Run longer with: go test ./hw/virtio/blk -run '^$' -fuzz FuzzBlkRequest -fuzztime 10s
func FuzzBlkRequest(f *testing.F) {
	seg := func(s uint64, n, fl uint32) []byte { return dzSeg(s, n, fl) }
	f.Add(hdr(TIn, 0), uint16(512), uint8(1), false)
	f.Add(append(hdr(TOut, 7), make([]byte, 1024)...), uint16(0), uint8(2), false)
	f.Add(hdr(TFlush, 0), uint16(0), uint8(1), true)
	f.Add(hdr(TGetID, 0), uint16(20), uint8(1), false)
	f.Add(append(hdr(TDiscard, 0), seg(1, 2, 0)...), uint16(0), uint8(1), false)
	f.Add(append(hdr(TWriteZeroes, 0), append(seg(1, 2, 1), seg(9, 1, 0)...)...), uint16(0), uint8(3), true)
	f.Add(hdr(TIn, 1<<60), uint16(4096), uint8(4), false)
	f.Add([]byte{1, 2, 3}, uint16(1), uint8(1), false)
	f.Fuzz(func(t *testing.T, out []byte, inLen uint16, split uint8, ro bool) {
		if len(out) > 8192 {
			return
		}
		m := virtiotest.NewMem(ramBase, 1<<20)
		defer m.Close()
		disk := &memDisk{b: make([]byte, 64<<10), ro: ro}
		d, err := New(Config{Backend: disk, Discard: true, WriteZeroes: true, MaxDiscardSeg: 4, MaxWriteZeroesSeg: 4, MaxDiscardSectors: 64})
		if err != nil {
			t.Fatal(err)
		}
		h := &holder{}
		r := virtiotest.NewRing(m, 16, ramBase, 64<<10)
		tr := virtiotest.Bringup(h, m, &virtiotest.IRQ{}, 0, r)
		if h.q == nil {
			t.Fatal(tr.Err())
		}
		// Cut the readable part into up to split pieces; the writable part likewise.
		n := int(split%6) + 1
		var bufs []virtiotest.Buf
		for i := 0; i < n && len(out) > 0; i++ {
			k := (len(out) + n - 1 - i) / (n - i)
			bufs = append(bufs, virtiotest.Buf{Data: out[:k]})
			out = out[k:]
		}
		w := uint32(inLen % 8192)
		for i := 0; i < n && w > 0; i++ {
			k := (w + uint32(n-1-i)) / uint32(n-i)
			bufs = append(bufs, virtiotest.Buf{Write: k})
			w -= k
		}
		if len(bufs) == 0 {
			return
		}
		_, gpas := r.Add(bufs...)
		c, err := h.q.Pop()
		if err != nil || c == nil {
			t.Fatal(c, err)
		}
		ln, ok := d.handle(context.Background(), h.q, c)
		if !ok {
			if tr.Status()&virtio.StatusNeedsReset == 0 {
				t.Fatal("request dropped without NEEDS_RESET")
			}
			return
		}
		last := bufs[len(bufs)-1]
		st := m.At(gpas[len(gpas)-1]+uint64(last.Write)-1, 1)[0]
		if st > SUnsupp || uint64(ln) != c.In.Len() {
			t.Fatalf("status %d len %d", st, ln)
		}
		if ro {
			_, ds, zs := disk.stats()
			if len(ds)+len(zs) != 0 || !bytes.Equal(disk.get(0, 64<<10), make([]byte, 64<<10)) {
				t.Fatal("read-only disk written, discarded or zeroed")
			}
		}
	})
}

package vsock

import (
	"testing"
	"time"

	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

// FuzzTxPacket sends the guest's packets (raw bytes: a header and payload each, split
// over descriptors) through a running device whose backend connects every port. Any
// outcome is fine but a panic, a hang, a chain neither completed nor breaking the
// queue, or connections past MaxConns; the device must then reset cleanly.
// Run longer with: go test ./hw/virtio/vsock -run '^$' -fuzz FuzzTxPacket -fuzztime 10s
func FuzzTxPacket(f *testing.F) {
	enc := func(hs ...Header) []byte {
		var out []byte
		for _, h := range hs {
			var b [hdrSize]byte
			h.Encode(b[:])
			out = append(out, b[:]...)
			out = append(out, make([]byte, h.Len)...)
		}
		return out
	}
	base := Header{SrcCID: guestCID, DstCID: HostCID, SrcPort: 9, DstPort: 80, Type: TypeStream, BufAlloc: 4096}
	with := func(op uint16, ln uint32, flags uint32) Header {
		h := base
		h.Op, h.Len, h.Flags = op, ln, flags
		return h
	}
	f.Add(enc(with(OpRequest, 0, 0), with(OpRW, 100, 0), with(OpShutdown, 0, 3)), uint8(1))
	f.Add(enc(with(OpRequest, 0, 0), with(OpCreditRequest, 0, 0), with(OpRW, 5000, 0)), uint8(2))
	f.Add(enc(with(OpResponse, 0, 0), with(OpRst, 0, 0), with(OpRW, 1, 0)), uint8(3))
	f.Add(enc(with(OpRequest, 0, 0), with(OpRequest, 0, 0), with(9, 0, 0)), uint8(0))
	f.Add([]byte{1, 2, 3}, uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		if len(data) > 1<<20 {
			return
		}
		be := newPairBackend()
		done := make(chan struct{})
		defer close(done)
		go func() { // the host ends: read and discard
			for {
				var c interface {
					Read([]byte) (int, error)
					Close() error
				}
				select {
				case c = <-be.conns:
				case <-done:
					return
				}
				go func() {
					buf := make([]byte, 4096)
					for {
						if _, err := c.Read(buf); err != nil {
							c.Close()
							return
						}
					}
				}()
			}
		}()
		d, err := New(Config{GuestCID: guestCID, Backend: be})
		if err != nil {
			t.Fatal(err)
		}
		m := virtiotest.NewMem(ramBase, 8<<20)
		defer m.Close()
		rx := virtiotest.NewRing(m, 64, ramBase, 2<<20)
		tx := virtiotest.NewRing(m, 64, ramBase+3<<20, 4<<20)
		tr := virtiotest.Bringup(d, m, &virtiotest.IRQ{}, 0, rx, tx, nil)
		defer tr.SetStatus(0)
		for range 32 {
			rx.Add(virtiotest.Buf{Write: rxBufLen})
		}
		tr.Notify(0)
		// Cut data into packets by the header's len field where it parses, else the rest.
		for len(data) > 0 && tr.Status()&virtio.StatusNeedsReset == 0 {
			n := len(data)
			if len(data) >= hdrSize {
				if l := uint64(DecodeHeader(data).Len); l <= uint64(len(data)-hdrSize) {
					n = hdrSize + int(l)
				}
			}
			pkt := data[:n]
			data = data[n:]
			parts := int(split%4) + 1
			var bufs []virtiotest.Buf
			for i := 0; i < parts && len(pkt) > 0; i++ {
				k := (len(pkt) + parts - 1 - i) / (parts - i)
				bufs = append(bufs, virtiotest.Buf{Data: pkt[:k]})
				pkt = pkt[k:]
			}
			tx.Add(bufs...)
			tr.Notify(1)
			_, _, used := tx.PopUsed()
			for i := 0; !used && i < 40000 && tr.Status()&virtio.StatusNeedsReset == 0; i++ {
				time.Sleep(50 * time.Microsecond)
				_, _, used = tx.PopUsed()
			}
			if !used && tr.Status()&virtio.StatusNeedsReset == 0 {
				t.Fatal("tx chain neither completed nor refused")
			}
			if d.Conns() > MaxConns {
				t.Fatalf("%d connections", d.Conns())
			}
		}
	})
}

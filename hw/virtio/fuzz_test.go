package virtio_test

import (
	"math/rand"
	"testing"

	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

// Fuzz layout: guest RAM is fuzzBase.. +fuzzRAM; the ring sits at its start. The input
// is [size exponent, feature byte, guest RAM image...].
const (
	fuzzBase = 0x10000
	fuzzRAM  = 32 << 10
)

// fuzzSeeds builds well-formed rings with random chains (direct and indirect) and
// random corruptions of them, deterministically.
func fuzzSeeds(n int) [][]byte {
	rnd := rand.New(rand.NewSource(1))
	var out [][]byte
	for len(out) < n {
		exp := rnd.Intn(5) + 1 // sizes 2..32
		size := uint16(1) << exp
		m := virtiotest.NewMem(fuzzBase, fuzzRAM)
		r := virtiotest.NewRing(m, size, fuzzBase, 16<<10)
		for c := 0; c < rnd.Intn(int(size))+1; c++ {
			nb := rnd.Intn(3) + 1
			bufs := make([]virtiotest.Buf, nb)
			for i := range bufs {
				if i >= nb/2 && rnd.Intn(2) == 0 {
					bufs[i] = virtiotest.Buf{Write: uint32(rnd.Intn(64) + 1)}
				} else {
					bufs[i] = virtiotest.Buf{Data: make([]byte, rnd.Intn(64)+1)}
				}
			}
			// Writable buffers must follow readable ones.
			for i := 1; i < len(bufs); i++ {
				if bufs[i-1].Write > 0 && bufs[i].Write == 0 {
					bufs[i] = virtiotest.Buf{Write: 8}
				}
			}
			if rnd.Intn(2) == 0 {
				r.AddIndirect(bufs...)
			} else if nb <= int(size) {
				r.Add(bufs...)
			}
		}
		img := append([]byte(nil), m.B...)
		m.Close()
		// Corrupt a few bytes of the rings in most seeds.
		for k := rnd.Intn(4); k > 0; k-- {
			img[rnd.Intn(int(r.Used-fuzzBase)+64)] ^= byte(rnd.Intn(256))
		}
		out = append(out, append([]byte{byte(exp), byte(rnd.Intn(4))}, trimZeros(img)...))
	}
	return out
}

func trimZeros(b []byte) []byte {
	n := len(b)
	for n > 0 && b[n-1] == 0 {
		n--
	}
	return b[:n]
}

// FuzzQueue drives Pop/Push/Signal over arbitrary guest memory: nothing may panic or
// hang, and every chain handed to the device must respect the queue's bounds.
// Run longer with: go test ./hw/virtio -run '^$' -fuzz FuzzQueue -fuzztime 10s
func FuzzQueue(f *testing.F) {
	for _, s := range fuzzSeeds(300) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 2 {
			return
		}
		size := uint16(1) << (in[0] % 6) // 1..32
		want := uint64(0)
		if in[1]&1 != 0 {
			want |= 1 << virtio.FIndirectDesc
		}
		if in[1]&2 != 0 {
			want |= 1 << virtio.FEventIdx
		}
		m := virtiotest.NewMem(fuzzBase, fuzzRAM)
		defer m.Close()
		copy(m.B, in[2:])
		r := &virtiotest.Ring{Mem: m, Size: size, Desc: fuzzBase}
		r.Avail = fuzzBase + 16*uint64(size)
		r.Used = (r.Avail + 6 + 2*uint64(size) + 4095) &^ 4095
		d := &testDev{max: []uint16{32}}
		irq := &virtiotest.IRQ{}
		tr := virtiotest.Bringup(d, m, irq, want, r)
		if d.act == nil {
			t.Fatalf("bring-up failed: %v", tr.Err())
		}
		q := d.act.Queues[0]
		for i := 0; i < 3*int(size)+3; i++ {
			c, err := q.Pop()
			if err != nil {
				if tr.Status()&virtio.StatusNeedsReset == 0 {
					t.Fatal("error without NEEDS_RESET")
				}
				return
			}
			if c == nil {
				return
			}
			if len(c.Out)+len(c.In) > int(size)+virtio.MaxIndirect {
				t.Fatalf("chain of %d buffers in a queue of %d", len(c.Out)+len(c.In), size)
			}
			for _, s := range append(append(virtio.Buffers{}, c.Out...), c.In...) {
				if len(s.B) > 0 && (s.GPA < fuzzBase || s.GPA+uint64(len(s.B)) > fuzzBase+fuzzRAM) {
					t.Fatalf("segment %#x+%d outside RAM", s.GPA, len(s.B))
				}
			}
			c.In.WriteAt([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9}, 0)
			q.Push(c, uint32(i))
			q.Signal()
		}
	})
}

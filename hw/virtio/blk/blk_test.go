package blk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

// memDisk is a Backend over a byte slice that records what it was asked to do.
type memDisk struct {
	mu       sync.Mutex
	b        []byte
	ro       bool
	flushes  int
	discards [][2]int64
	zeroes   [][3]int64
	failN    int           // fail this many operations with errInjected
	block    chan struct{} // if set, ReadAt waits on it
	active   atomic.Int32
	peak     atomic.Int32
}

var errInjected = errors.New("injected I/O error")

func (m *memDisk) enter() func() {
	n := m.active.Add(1)
	for {
		p := m.peak.Load()
		if n <= p || m.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return func() { m.active.Add(-1) }
}

func (m *memDisk) fail() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failN > 0 {
		m.failN--
		return true
	}
	return false
}

func (m *memDisk) ReadAt(p []byte, off int64) (int, error) {
	defer m.enter()()
	if m.block != nil {
		<-m.block
	}
	if m.fail() {
		return 0, errInjected
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(p, m.b[off:]), nil
}

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	defer m.enter()()
	if m.fail() {
		return 0, errInjected
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(m.b[off:], p), nil
}

func (m *memDisk) Flush() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.flushes++
	return nil
}

func (m *memDisk) Discard(off, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.discards = append(m.discards, [2]int64{off, n})
	return nil
}

func (m *memDisk) WriteZeroes(off, n int64, unmap bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := int64(0)
	if unmap {
		u = 1
	}
	m.zeroes = append(m.zeroes, [3]int64{off, n, u})
	clear(m.b[off : off+n])
	return nil
}

// locked accessors for the test goroutine (completion is seen through guest memory,
// which gives the race detector no happens-before edge).
func (m *memDisk) get(off, n int) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.b[off:off+n]...)
}

func (m *memDisk) fill(f func(b []byte)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(m.b)
}

func (m *memDisk) setFail(n int) {
	m.mu.Lock()
	m.failN = n
	m.mu.Unlock()
}

func (m *memDisk) stats() (flushes int, discards [][2]int64, zeroes [][3]int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.flushes, append([][2]int64(nil), m.discards...), append([][3]int64(nil), m.zeroes...)
}

func (m *memDisk) Size() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.b))
}
func (m *memDisk) ReadOnly() bool { return m.ro }

const (
	ramBase = 0x8000_0000
	diskLen = 1 << 20 // 2048 sectors
)

type rig struct {
	t    *testing.T
	mem  *virtiotest.Mem
	ring *virtiotest.Ring
	tr   *virtio.Transport
	dev  *Device
	disk *memDisk
	irq  *virtiotest.IRQ
}

func newRig(t *testing.T, c Config) *rig {
	t.Helper()
	m := virtiotest.NewMem(ramBase, 4<<20)
	t.Cleanup(func() { m.Close() })
	disk, _ := c.Backend.(*memDisk)
	if c.Backend == nil {
		disk = &memDisk{b: make([]byte, diskLen)}
		c.Backend = disk
	}
	d, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	r := virtiotest.NewRing(m, 64, ramBase, 2<<20)
	rings := []*virtiotest.Ring{r}
	for i := 1; i < c.NumQueues; i++ {
		rings = append(rings, virtiotest.NewRing(m, 16, ramBase+uint64(2<<20+i*(64<<10)), 32<<10))
	}
	irq := &virtiotest.IRQ{}
	tr := virtiotest.Bringup(d, m, irq, ^uint64(0), rings...)
	if !tr.Active() {
		t.Fatalf("bring-up: status %#x %v", tr.Status(), tr.Err())
	}
	t.Cleanup(func() { tr.SetStatus(0) })
	return &rig{t: t, mem: m, ring: r, tr: tr, dev: d, disk: disk, irq: irq}
}

func hdr(typ uint32, sector uint64) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b, typ)
	binary.LittleEndian.PutUint64(b[8:], sector)
	return b
}

func dzSeg(sector uint64, num, flags uint32) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, sector)
	binary.LittleEndian.PutUint32(b[8:], num)
	binary.LittleEndian.PutUint32(b[12:], flags)
	return b
}

// do submits header + out payload with inLen data bytes and a status byte, kicks, and
// waits for completion. It returns status, used length and the data read.
func (r *rig) do(ring *virtiotest.Ring, q int, h []byte, out []byte, inLen uint32) (uint8, uint32, []byte) {
	r.t.Helper()
	bufs := []virtiotest.Buf{{Data: h}}
	if len(out) > 0 {
		bufs = append(bufs, virtiotest.Buf{Data: out})
	}
	if inLen > 0 {
		bufs = append(bufs, virtiotest.Buf{Write: inLen})
	}
	bufs = append(bufs, virtiotest.Buf{Write: 1})
	_, gpas := ring.Add(bufs...)
	r.tr.Notify(uint32(q))
	_, ln, ok := ring.WaitUsed(5 * time.Second)
	if !ok {
		r.t.Fatal("request not completed")
	}
	st := r.mem.At(gpas[len(gpas)-1], 1)[0]
	if !r.mem.WasWritten(gpas[len(gpas)-1], 1) {
		r.t.Fatal("status byte write not reported to Memory.Written")
	}
	var data []byte
	if inLen > 0 {
		data = append(data, r.mem.At(gpas[len(gpas)-2], uint64(inLen))...)
	}
	return st, ln, data
}

func TestConfigSpace(t *testing.T) {
	r := newRig(t, Config{Serial: "x", BlockSize: 4096, PhysicalBlockExp: 0, MinIOSize: 1, OptIOSize: 8, Discard: true, WriteZeroes: true, NumQueues: 2, SizeMax: 1 << 20})
	cfg := make([]byte, 64)
	r.tr.ReadConfig(0, cfg)
	le := binary.LittleEndian
	if le.Uint64(cfg) != diskLen/512 || le.Uint32(cfg[8:]) != 1<<20 || le.Uint32(cfg[12:]) != 254 || le.Uint32(cfg[20:]) != 4096 {
		t.Fatalf("capacity %d size_max %d seg_max %d blk_size %d", le.Uint64(cfg), le.Uint32(cfg[8:]), le.Uint32(cfg[12:]), le.Uint32(cfg[20:]))
	}
	if le.Uint16(cfg[26:]) != 1 || le.Uint32(cfg[28:]) != 8 || le.Uint16(cfg[34:]) != 2 {
		t.Fatal("topology / num_queues")
	}
	if le.Uint32(cfg[36:]) != 0x3fffff || le.Uint32(cfg[40:]) != 1 || le.Uint32(cfg[44:]) != 8 || le.Uint32(cfg[48:]) != 0x3fffff {
		t.Fatal("discard / write-zeroes limits")
	}
	f := r.tr.DriverFeatures()
	for _, b := range []int{FSegMax, FSizeMax, FBlkSize, FFlush, FTopology, FMQ, FDiscard, FWriteZeroes, virtio.FVersion1} {
		if f&(1<<b) == 0 {
			t.Errorf("feature %d not negotiated", b)
		}
	}
	if f&(1<<FRO) != 0 {
		t.Error("RO offered for a writable disk")
	}
	// A read at an odd offset and past the end.
	var two [2]byte
	r.tr.ReadConfig(1, two[:])
	if two[0] != cfg[1] || two[1] != cfg[2] {
		t.Fatal("unaligned config read")
	}
	r.tr.ReadConfig(200, two[:])
	if two != [2]byte{} {
		t.Fatal("config past the end not zero")
	}
}

func TestReadWriteFlush(t *testing.T) {
	r := newRig(t, Config{})
	r.disk.fill(func(b []byte) {
		for i := range b {
			b[i] = byte(i * 7)
		}
	})
	st, ln, data := r.do(r.ring, 0, hdr(TIn, 3), nil, 1024)
	if st != SOK || ln != 1025 || !bytes.Equal(data, r.disk.get(3*512, 1024)) {
		t.Fatalf("read: status %d len %d match %v", st, ln, bytes.Equal(data, r.disk.get(3*512, 1024)))
	}
	payload := bytes.Repeat([]byte("gemu"), 256)
	st, ln, _ = r.do(r.ring, 0, hdr(TOut, 10), payload, 0)
	if st != SOK || ln != 1 || !bytes.Equal(r.disk.get(10*512, 1024), payload) {
		t.Fatalf("write: status %d len %d", st, ln)
	}
	// Data split over many descriptors, the header in two.
	h := hdr(TIn, 10)
	_, gpas := r.ring.Add(virtiotest.Buf{Data: h[:5]}, virtiotest.Buf{Data: h[5:]},
		virtiotest.Buf{Write: 100}, virtiotest.Buf{Write: 412}, virtiotest.Buf{Write: 512}, virtiotest.Buf{Write: 1})
	r.tr.Notify(0)
	if _, ln, ok := r.ring.WaitUsed(5 * time.Second); !ok || ln != 1025 {
		t.Fatal("scattered read")
	}
	got := append(append(append([]byte{}, r.mem.At(gpas[2], 100)...), r.mem.At(gpas[3], 412)...), r.mem.At(gpas[4], 512)...)
	if !bytes.Equal(got, payload) || r.mem.At(gpas[5], 1)[0] != SOK {
		t.Fatal("scattered read data")
	}
	if !r.mem.WasWritten(gpas[2], 100) || !r.mem.WasWritten(gpas[4], 512) {
		t.Fatal("read data not reported written")
	}
	if st, _, _ := r.do(r.ring, 0, hdr(TFlush, 0), nil, 0); st != SOK {
		t.Fatal("flush")
	}
	if fl, _, _ := r.disk.stats(); fl != 1 {
		t.Fatal("flush")
	}
	// Indirect descriptors as Linux uses them.
	_, gpas = r.ring.AddIndirect(virtiotest.Buf{Data: hdr(TIn, 11)}, virtiotest.Buf{Write: 512}, virtiotest.Buf{Write: 1})
	r.tr.Notify(0)
	if _, _, ok := r.ring.WaitUsed(5 * time.Second); !ok || !bytes.Equal(r.mem.At(gpas[1], 512), payload[512:]) {
		t.Fatal("indirect read")
	}
}

func TestGetID(t *testing.T) {
	for _, serial := range []string{"", "disk0", "01234567890123456789"} {
		r := newRig(t, Config{Serial: serial})
		st, ln, data := r.do(r.ring, 0, hdr(TGetID, 0), nil, IDBytes)
		want := make([]byte, IDBytes)
		copy(want, serial)
		if st != SOK || ln != IDBytes+1 || !bytes.Equal(data, want) {
			t.Fatalf("serial %q: status %d len %d data %q", serial, st, ln, data)
		}
	}
	if _, err := New(Config{Backend: &memDisk{b: make([]byte, 512)}, Serial: "012345678901234567890"}); err == nil {
		t.Fatal("21-byte serial accepted")
	}
	// A shorter buffer gets the prefix.
	r := newRig(t, Config{Serial: "abcdefgh"})
	if st, _, data := r.do(r.ring, 0, hdr(TGetID, 0), nil, 4); st != SOK || string(data) != "abcd" {
		t.Fatalf("short GET_ID %d %q", st, data)
	}
}

func TestDiscardWriteZeroes(t *testing.T) {
	r := newRig(t, Config{Discard: true, WriteZeroes: true, WriteZeroesMayUnmap: true, MaxWriteZeroesSeg: 2, MaxDiscardSectors: 128})
	r.disk.fill(func(b []byte) {
		for i := range b {
			b[i] = 0xaa
		}
	})
	st, _, _ := r.do(r.ring, 0, hdr(TDiscard, 0), dzSeg(8, 16, 0), 0)
	if _, ds, _ := r.disk.stats(); st != SOK || len(ds) != 1 || ds[0] != [2]int64{8 * 512, 16 * 512} {
		t.Fatalf("discard: %d %v", st, ds)
	}
	two := append(dzSeg(100, 2, 1), dzSeg(200, 1, 0)...)
	st, _, _ = r.do(r.ring, 0, hdr(TWriteZeroes, 0), two, 0)
	if _, _, zs := r.disk.stats(); st != SOK || len(zs) != 2 || zs[0] != [3]int64{100 * 512, 1024, 1} || zs[1] != [3]int64{200 * 512, 512, 0} {
		t.Fatalf("write zeroes: %d %v", st, zs)
	}
	if r.disk.get(100*512, 1)[0] != 0 || r.disk.get(102*512, 1)[0] != 0xaa {
		t.Fatal("zeroes not applied")
	}
	cases := []struct {
		name string
		typ  uint32
		out  []byte
		want uint8
	}{
		{"discard with UNMAP", TDiscard, dzSeg(0, 1, 1), SUnsupp},
		{"unknown flag", TWriteZeroes, dzSeg(0, 1, 2), SUnsupp},
		{"discard too many sectors", TDiscard, dzSeg(0, 129, 0), SIOErr},
		{"discard two segments (max 1)", TDiscard, append(dzSeg(0, 1, 0), dzSeg(2, 1, 0)...), SIOErr},
		{"write zeroes three segments (max 2)", TWriteZeroes, bytes.Repeat(dzSeg(0, 1, 0), 3), SIOErr},
		{"past the end", TWriteZeroes, dzSeg(2047, 2, 0), SIOErr},
		{"sector overflow", TDiscard, dzSeg(1<<63, 1, 0), SIOErr},
		{"truncated segment", TDiscard, dzSeg(0, 1, 0)[:12], SIOErr},
		{"no segment", TDiscard, nil, SIOErr},
	}
	_, ds0, zs0 := r.disk.stats()
	for _, tc := range cases {
		if st, _, _ := r.do(r.ring, 0, hdr(tc.typ, 0), tc.out, 0); st != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, st, tc.want)
		}
	}
	if _, ds, zs := r.disk.stats(); len(ds) != len(ds0) || len(zs) != len(zs0) {
		t.Fatal("a refused request reached the backend")
	}
	// Not offered: UNSUPP.
	r2 := newRig(t, Config{})
	if st, _, _ := r2.do(r2.ring, 0, hdr(TDiscard, 0), dzSeg(0, 1, 0), 0); st != SUnsupp {
		t.Fatalf("discard not offered: status %d", st)
	}
}

func TestReadOnly(t *testing.T) {
	disk := &memDisk{b: make([]byte, diskLen), ro: true}
	disk.b[0] = 0x55
	r := newRig(t, Config{Backend: disk, Discard: true, WriteZeroes: true})
	f := r.tr.DriverFeatures()
	if f&(1<<FRO) == 0 || f&(1<<FDiscard|1<<FWriteZeroes) != 0 {
		t.Fatalf("features %#x", f)
	}
	if st, _, _ := r.do(r.ring, 0, hdr(TOut, 0), make([]byte, 512), 0); st != SIOErr || disk.get(0, 1)[0] != 0x55 {
		t.Fatalf("write to read-only disk: status %d", st)
	}
	st, _, _ := r.do(r.ring, 0, hdr(TWriteZeroes, 0), dzSeg(0, 1, 0), 0)
	if _, _, zs := disk.stats(); st != SIOErr || len(zs) != 0 {
		t.Fatal("write zeroes to read-only disk")
	}
	if st, _, data := r.do(r.ring, 0, hdr(TIn, 0), nil, 512); st != SOK || data[0] != 0x55 {
		t.Fatal("read from read-only disk")
	}
}

func TestBadRequests(t *testing.T) {
	r := newRig(t, Config{BlockSize: 4096})
	cases := []struct {
		name   string
		h      []byte
		out    []byte
		inLen  uint32
		status uint8
	}{
		{"read at capacity", hdr(TIn, 2048), nil, 512, SIOErr},
		{"read straddling the end", hdr(TIn, 2040), nil, 8192, SIOErr},
		{"sector overflows bytes", hdr(TIn, 1<<55), nil, 512, SIOErr},
		{"sector near 2^64", hdr(TOut, ^uint64(0)), make([]byte, 512), 0, SIOErr},
		{"length not whole sectors", hdr(TIn, 0), nil, 100, SIOErr},
		{"sector not block aligned", hdr(TIn, 1), nil, 4096, SIOErr},
		{"unknown type", hdr(99, 0), nil, 0, SUnsupp},
		{"GET_LIFETIME", hdr(TGetLifetime, 0), nil, 16, SUnsupp},
		{"SECURE_ERASE", hdr(TSecureErase, 0), dzSeg(0, 1, 0), 0, SUnsupp},
	}
	for _, tc := range cases {
		if st, _, _ := r.do(r.ring, 0, tc.h, tc.out, tc.inLen); st != tc.status {
			t.Errorf("%s: status %d, want %d", tc.name, st, tc.status)
		}
	}
	if r.tr.Status()&virtio.StatusNeedsReset != 0 {
		t.Fatal("a bad request broke the device")
	}
}

// Requests framed so that no status can be returned are protocol errors: the device
// needs reset (as QEMU's virtio_error), and nothing reaches the backend.
func TestMalformedRequests(t *testing.T) {
	cases := []struct {
		name string
		bufs []virtiotest.Buf
	}{
		{"truncated header", []virtiotest.Buf{{Data: hdr(TIn, 0)[:8]}, {Write: 513}}},
		{"status byte missing", []virtiotest.Buf{{Data: hdr(TOut, 0)}, {Data: make([]byte, 512)}}},
		{"no header at all", []virtiotest.Buf{{Write: 512}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, Config{})
			r.disk.fill(func(b []byte) { b[0] = 0x77 })
			r.ring.Add(tc.bufs...)
			r.tr.Notify(0)
			deadline := time.Now().Add(5 * time.Second)
			for r.tr.Status()&virtio.StatusNeedsReset == 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if r.tr.Status()&virtio.StatusNeedsReset == 0 {
				t.Fatal("NEEDS_RESET not set")
			}
			if r.ring.UsedIdx() != 0 || r.disk.get(0, 1)[0] != 0x77 {
				t.Fatal("malformed request completed or reached the disk")
			}
		})
	}
}

func TestErrorPolicy(t *testing.T) {
	var calls atomic.Int32
	var action atomic.Int32
	r := newRig(t, Config{OnError: func(ctx context.Context, req Request, err error) ErrorAction {
		calls.Add(1)
		if !errors.Is(err, errInjected) || req.Type != TOut || req.Offset != 512 || req.Length != 512 {
			t.Errorf("OnError(%+v, %v)", req, err)
		}
		return ErrorAction(action.Load())
	}})
	for _, tc := range []struct {
		a     ErrorAction
		fails int
		want  uint8
	}{{ErrorReport, 1, SIOErr}, {ErrorIgnore, 1, SOK}, {ErrorRetry, 3, SOK}} {
		action.Store(int32(tc.a))
		r.disk.setFail(tc.fails)
		calls.Store(0)
		if st, _, _ := r.do(r.ring, 0, hdr(TOut, 1), bytes.Repeat([]byte{9}, 512), 0); st != tc.want || int(calls.Load()) != tc.fails {
			t.Errorf("action %d: status %d calls %d", tc.a, st, calls.Load())
		}
	}
	if r.disk.get(512, 1)[0] != 9 {
		t.Fatal("retried write did not land")
	}
	// Without a policy a failure is reported.
	r2 := newRig(t, Config{})
	r2.disk.setFail(1)
	if st, _, _ := r2.do(r2.ring, 0, hdr(TIn, 0), nil, 512); st != SIOErr {
		t.Fatalf("default policy status %d", st)
	}
}

func TestConcurrencyAndReset(t *testing.T) {
	disk := &memDisk{b: make([]byte, diskLen), block: make(chan struct{})}
	r := newRig(t, Config{Backend: disk, Workers: 3})
	for i := 0; i < 8; i++ {
		r.ring.Add(virtiotest.Buf{Data: hdr(TIn, uint64(i))}, virtiotest.Buf{Write: 512}, virtiotest.Buf{Write: 1})
	}
	r.tr.Notify(0)
	deadline := time.Now().Add(5 * time.Second)
	for disk.active.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	if a := disk.active.Load(); a != 3 {
		t.Fatalf("%d requests in the backend at once, want the pool size 3", a)
	}
	// Reset while the backend holds three requests: it must wait for them.
	done := make(chan struct{})
	go func() { r.tr.SetStatus(0); close(done) }()
	select {
	case <-done:
		t.Fatal("reset returned while workers were in the backend")
	case <-time.After(50 * time.Millisecond):
	}
	close(disk.block)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("reset hung")
	}
	if disk.active.Load() != 0 || disk.peak.Load() != 3 {
		t.Fatalf("active %d peak %d", disk.active.Load(), disk.peak.Load())
	}
}

func TestMultiQueue(t *testing.T) {
	r := newRig(t, Config{NumQueues: 2})
	r.disk.fill(func(b []byte) { b[512] = 0x42 })
	m := r.mem
	r1 := virtiotest.NewRing(m, 16, ramBase+uint64(2<<20+1*(64<<10)), 32<<10)
	// newRig laid queue 1 out at the same place; use a fresh view of it.
	r1.AvailIdx, r1.LastUsed = 0, 0
	if st, _, data := r.do(r1, 1, hdr(TIn, 1), nil, 512); st != SOK || data[0] != 0x42 {
		t.Fatalf("queue 1 read: %d", st)
	}
	if r.ring.UsedIdx() != 0 {
		t.Fatal("queue 0 completed queue 1's request")
	}
}

func TestNewRefuses(t *testing.T) {
	b := &memDisk{b: make([]byte, 4096)}
	for _, c := range []Config{
		{},
		{Backend: b, QueueSize: 100},
		{Backend: b, QueueSize: 16, SegMax: 15},
		{Backend: b, BlockSize: 1000},
		{Backend: b, NumQueues: -1},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

func TestCapacityChanged(t *testing.T) {
	disk := &memDisk{b: make([]byte, diskLen)}
	r := newRig(t, Config{Backend: disk})
	gen := r.tr.ConfigGeneration()
	disk.mu.Lock()
	disk.b = make([]byte, 2*diskLen)
	disk.mu.Unlock()
	r.dev.CapacityChanged()
	if _, cfg := r.irq.Counts(); cfg != 1 || r.tr.ConfigGeneration() == gen {
		t.Fatalf("config interrupts %d, generation %d -> %d", cfg, gen, r.tr.ConfigGeneration())
	}
	var c [8]byte
	r.tr.ReadConfig(0, c[:])
	if binary.LittleEndian.Uint64(c[:]) != 2*diskLen/512 {
		t.Fatal("capacity not updated")
	}
	if st, _, _ := r.do(r.ring, 0, hdr(TIn, diskLen/512+1), nil, 512); st != SOK {
		t.Fatalf("read in the grown part: %d", st)
	}
}

// BenchmarkRead4K measures 4 KiB reads through the device, one at a time (latency:
// kick, dispatcher, worker, backend copy, used ring) and 32 in flight (throughput).
func BenchmarkRead4K(b *testing.B) {
	for _, depth := range []int{1, 32} {
		b.Run(fmt.Sprintf("depth%d", depth), func(b *testing.B) {
			m := virtiotest.NewMem(ramBase, 4<<20)
			defer m.Close()
			disk := &memDisk{b: make([]byte, 16<<20)}
			d, _ := New(Config{Backend: disk})
			r := virtiotest.NewRing(m, 128, ramBase, 2<<20) // 3 descriptors per chain
			tr := virtiotest.Bringup(d, m, &virtiotest.IRQ{}, ^uint64(0), r)
			defer tr.SetStatus(0)
			if !tr.Active() {
				b.Fatal(tr.Err())
			}
			// depth chains of header, 4 KiB, status at fixed descriptors.
			for k := 0; k < depth; k++ {
				h := r.Alloc(16)
				copy(m.At(h, 16), hdr(TIn, uint64(k*8)))
				i := uint16(3 * k)
				r.SetDesc(r.Desc, i, h, 16, 1, i+1)
				r.SetDesc(r.Desc, i+1, r.Alloc(4096), 4096, 1|2, i+2)
				r.SetDesc(r.Desc, i+2, r.Alloc(1), 1, 2, 0)
			}
			b.SetBytes(4096)
			b.ResetTimer()
			done := 0
			for done < b.N {
				n := min(depth, b.N-done)
				for k := 0; k < n; k++ {
					r.Publish(uint16(3 * k))
				}
				tr.Notify(0)
				for k := 0; k < n; k++ {
					for {
						if _, _, ok := r.PopUsed(); ok {
							break
						}
						if tr.Status()&virtio.StatusNeedsReset != 0 {
							b.Fatal(tr.Err())
						}
						runtime.Gosched()
					}
				}
				done += n
			}
		})
	}
}

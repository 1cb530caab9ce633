package balloon

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

const (
	base    = 0x1000_0000
	memSize = 2 << 20
	dataGPA = base + 1<<20 // pages the tests balloon, clear of the rings
)

type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) logf(f string, a ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(f, a...))
	l.mu.Unlock()
}

func (l *logs) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

type rig struct {
	m     *virtiotest.Mem
	d     *Device
	irq   *virtiotest.IRQ
	tr    *virtio.Transport
	rings []*virtiotest.Ring
	log   *logs
}

func newRig(t *testing.T, cfg Config, want uint64) *rig {
	t.Helper()
	r := &rig{m: virtiotest.NewMem(base, memSize), irq: &virtiotest.IRQ{}, log: &logs{}}
	cfg.Logf = r.log.logf
	if cfg.RAMSize == 0 {
		cfg.RAMSize = memSize
	}
	r.d = New(cfg)
	for i := range r.d.QueueMax() {
		r.rings = append(r.rings, virtiotest.NewRing(r.m, 16, base+uint64(i)*0x20000, 0x10000))
	}
	r.tr = virtiotest.Bringup(r.d, r.m, r.irq, want, r.rings...)
	if !r.tr.Active() {
		t.Fatalf("bring-up failed: status %#x %v", r.tr.Status(), r.tr.Err())
	}
	t.Cleanup(func() {
		r.tr.SetStatus(0)
		r.m.Close()
	})
	return r
}

func pfnBuf(pfns ...uint32) virtiotest.Buf {
	b := make([]byte, 4*len(pfns))
	for i, p := range pfns {
		binary.LittleEndian.PutUint32(b[4*i:], p)
	}
	return virtiotest.Buf{Data: b}
}

func (r *rig) wait(t *testing.T, q int) uint32 {
	t.Helper()
	r.tr.Notify(uint32(q))
	_, ln, ok := r.rings[q].WaitUsed(5 * time.Second)
	if !ok {
		t.Fatalf("queue %d: no used buffer (status %#x, %v)", q, r.tr.Status(), r.tr.Err())
	}
	return ln
}

// resident reports whether the host page behind gpa is in memory (mincore).
func (r *rig) resident(t *testing.T, gpa uint64) bool {
	t.Helper()
	v := make([]byte, 1)
	b := r.m.At(gpa, 4096)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), 4096, uintptr(unsafe.Pointer(&v[0]))); e != 0 {
		t.Fatal(e)
	}
	return v[0]&1 != 0
}

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}

func TestInflateDeflate(t *testing.T) {
	r := newRig(t, Config{}, 1<<FStatsVQ)
	if r.d.DeviceID() != DeviceID || r.tr.DriverFeatures()&(1<<FStatsVQ) == 0 {
		t.Fatal("features")
	}
	// Three touched pages, two consecutive; plus PFNs outside RAM.
	for i := uint64(0); i < 3; i++ {
		fill(r.m.At(dataGPA+i*4096, 4096), 0xa5)
	}
	fill(r.m.At(dataGPA+8*4096, 4096), 0x5a)
	p0 := uint32(dataGPA >> PageShift)
	r.rings[0].Add(pfnBuf(p0, p0+1, 0xffffffff, p0+8, 7))
	if ln := r.wait(t, 0); ln != 0 {
		t.Fatalf("inflate used len %d", ln)
	}
	for _, i := range []uint64{0, 1, 8} {
		// Residency first: reading the page maps the zero page.
		if r.resident(t, dataGPA+i*4096) {
			t.Fatalf("page %d still resident after inflate", i)
		}
		if b := r.m.At(dataGPA+i*4096, 4096); b[0] != 0 || b[4095] != 0 {
			t.Fatalf("page %d still holds data after inflate", i)
		}
	}
	if b := r.m.At(dataGPA+2*4096, 1); b[0] != 0xa5 {
		t.Fatal("a page not inflated was dropped")
	}
	if !r.m.WasWritten(dataGPA, 2*4096) {
		t.Fatal("dropped pages not reported written (translated code, dirty log)")
	}
	c := r.d.Counters()
	if c.Inflated != 3 || c.BadPFNs != 2 {
		t.Fatalf("counters %+v", c)
	}
	if l := r.log.all(); !strings.Contains(l, "PFN 0xffffffff") || !strings.Contains(l, "PFN 0x7 ") {
		t.Fatalf("bad PFNs not logged: %q", l)
	}
	r.rings[1].Add(pfnBuf(p0, p0+1, p0+8, 0xfffffff0))
	r.wait(t, 1)
	if c := r.d.Counters(); c.Deflated != 3 || c.BadPFNs != 3 {
		t.Fatalf("counters after deflate %+v", c)
	}
	// The guest may use its pages again.
	fill(r.m.At(dataGPA, 4096), 1)
	if !r.resident(t, dataGPA) {
		t.Fatal("page not back after deflate and touch")
	}
}

func TestTargetAndActual(t *testing.T) {
	r := newRig(t, Config{RAMSize: 512 << 20}, 1<<FStatsVQ)
	var mu sync.Mutex
	var events []uint64
	r.d.OnChange(func(a uint64) { mu.Lock(); events = append(events, a); mu.Unlock() })
	_, cfg0 := r.irq.Counts()
	r.d.SetTarget(256 << 20)
	if _, cfg := r.irq.Counts(); cfg != cfg0+1 {
		t.Fatal("no configuration change notification")
	}
	b := make([]byte, 16)
	r.tr.ReadConfig(0, b)
	if n := binary.LittleEndian.Uint32(b); n != 256<<20>>PageShift {
		t.Fatalf("num_pages %d", n)
	}
	if r.d.Actual() != 512<<20 {
		t.Fatalf("actual before the driver moved: %d", r.d.Actual())
	}
	binary.LittleEndian.PutUint32(b[4:], 65536)
	r.tr.WriteConfig(4, b[4:8])
	r.tr.WriteConfig(0, []byte{9, 9, 9, 9}) // num_pages is the host's
	r.tr.ReadConfig(0, b)
	if binary.LittleEndian.Uint32(b) != 65536 || binary.LittleEndian.Uint32(b[4:]) != 65536 {
		t.Fatalf("config %x", b)
	}
	r.tr.WriteConfig(4, b[4:8]) // unchanged: no event
	if r.d.Actual() != 256<<20 {
		t.Fatalf("actual %d", r.d.Actual())
	}
	mu.Lock()
	if len(events) != 1 || events[0] != 256<<20 {
		t.Fatalf("events %v", events)
	}
	mu.Unlock()
	// Targets above RAM are capped; 0 changes nothing (QEMU).
	r.d.SetTarget(1 << 40)
	if r.d.Target() != 512<<20 {
		t.Fatalf("target %d", r.d.Target())
	}
	r.d.SetTarget(0)
	if r.d.Target() != 512<<20 {
		t.Fatal("target 0 changed the target")
	}
	// A hostile actual larger than RAM reads as 0, no wrap.
	r.tr.WriteConfig(4, []byte{0xff, 0xff, 0xff, 0xff})
	if r.d.Actual() != 0 {
		t.Fatalf("actual %d", r.d.Actual())
	}
	// Reads past the end are zero.
	b = []byte{1, 1, 1, 1}
	r.tr.ReadConfig(16, b)
	if b[0]|b[1]|b[2]|b[3] != 0 {
		t.Fatal("config past the end")
	}
}

func TestStats(t *testing.T) {
	r := newRig(t, Config{}, 1<<FStatsVQ)
	stat := func(vals map[uint16]uint64) virtiotest.Buf {
		var b []byte
		for tag := uint16(0); tag < 16; tag++ {
			if v, ok := vals[tag]; ok {
				e := make([]byte, 10)
				binary.LittleEndian.PutUint16(e, tag)
				binary.LittleEndian.PutUint64(e[2:], v)
				b = append(b, e...)
			}
		}
		return virtiotest.Buf{Data: b}
	}
	r.rings[2].Add(stat(map[uint16]uint64{StatFreeMemory: 100 << 20, StatTotalMemory: 500 << 20, 13: 7}))
	r.tr.Notify(2)
	// Not polled: the buffer is held.
	deadline := time.Now().Add(5 * time.Second)
	for r.d.Stats().LastUpdate.IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("statistics not read")
		}
		time.Sleep(time.Millisecond)
	}
	if _, _, ok := r.rings[2].PopUsed(); ok {
		t.Fatal("statistics buffer returned without polling")
	}
	s := r.d.Stats()
	if !s.Valid[StatFreeMemory] || s.Value[StatFreeMemory] != 100<<20 || s.Value[StatTotalMemory] != 500<<20 || s.Valid[StatSwapIn] {
		t.Fatalf("stats %+v", s)
	}
	// Polling on: the buffer comes back, the driver refills it.
	r.d.SetStatsInterval(5 * time.Millisecond)
	if _, _, ok := r.rings[2].WaitUsed(5 * time.Second); !ok {
		t.Fatal("statistics buffer not returned at the polling interval")
	}
	r.rings[2].Add(stat(map[uint16]uint64{StatFreeMemory: 50 << 20}))
	r.tr.Notify(2)
	if _, _, ok := r.rings[2].WaitUsed(5 * time.Second); !ok {
		t.Fatal("second poll")
	}
	if v := r.d.Stats().Value[StatFreeMemory]; v != 50<<20 {
		t.Fatalf("free memory %d", v)
	}
}

func TestFreePageReporting(t *testing.T) {
	r := newRig(t, Config{FreePageReporting: true, DeflateOnOOM: true}, 1<<FStatsVQ|1<<FReporting|1<<FDeflateOnOOM)
	if len(r.d.QueueMax()) != 4 || r.tr.DriverFeatures()&(1<<FReporting|1<<FDeflateOnOOM) != 1<<FReporting|1<<FDeflateOnOOM {
		t.Fatal("reporting queue or features missing")
	}
	fill(r.m.At(dataGPA, 4*4096), 0x77)
	fill(r.m.At(dataGPA+8*4096, 4096), 0x66)
	rq := r.rings[3]
	// Two free ranges in one chain, device-writable as Linux sends them, and a range
	// that is not page aligned (only its whole page goes).
	rq.SetDesc(rq.Desc, 0, dataGPA, 2*4096, 2|1, 1)
	rq.SetDesc(rq.Desc, 1, dataGPA+8*4096, 4096, 2|1, 2)
	rq.SetDesc(rq.Desc, 2, dataGPA+2*4096+100, 4096, 2, 0)
	rq.Publish(0)
	if ln := r.wait(t, 3); ln != 0 {
		t.Fatalf("used len %d", ln)
	}
	for _, i := range []uint64{0, 1, 8} {
		if r.resident(t, dataGPA+i*4096) || r.m.At(dataGPA+i*4096, 1)[0] != 0 {
			t.Fatalf("reported page %d not dropped", i)
		}
	}
	if r.m.At(dataGPA+2*4096, 1)[0] != 0x77 || r.m.At(dataGPA+3*4096, 1)[0] != 0x77 {
		t.Fatal("partial pages of an unaligned range dropped")
	}
	if c := r.d.Counters(); c.Reported != 3*4096 {
		t.Fatalf("reported %d", c.Reported)
	}
	// Without the feature there is no reporting queue.
	if n := len(New(Config{}).QueueMax()); n != 3 {
		t.Fatalf("%d queues", n)
	}
}

// A hostile driver: huge and odd-sized PFN arrays, an empty buffer. The device bounds
// its work and keeps serving.
func TestHostile(t *testing.T) {
	r := newRig(t, Config{}, 1<<FStatsVQ)
	big := make([]uint32, 60000/4)
	for i := range big {
		big[i] = uint32(0x8000_0000 + i)
	}
	r.rings[0].Add(pfnBuf(big...))
	r.wait(t, 0)
	r.rings[0].Add(virtiotest.Buf{Data: []byte{1, 2, 3}})
	r.wait(t, 0)
	r.rings[0].Add(virtiotest.Buf{Write: 64})
	r.wait(t, 0)
	c := r.d.Counters()
	if c.BadPFNs != uint64(len(big)) || c.Inflated != 0 {
		t.Fatalf("counters %+v", c)
	}
	if n := strings.Count(r.log.all(), "\n") + 1; n > maxBadLines {
		t.Fatalf("%d log lines for bad PFNs", n)
	}
	// Garbage statistics: short and unknown tags.
	r.rings[2].Add(virtiotest.Buf{Data: []byte{0xff, 0xff, 1}})
	r.tr.Notify(2)
	fill(r.m.At(dataGPA, 4096), 3)
	r.rings[0].Add(pfnBuf(uint32(dataGPA >> PageShift)))
	r.wait(t, 0)
	if r.d.Counters().Inflated != 1 {
		t.Fatal("device stopped serving after hostile input")
	}
	if r.tr.Status()&virtio.StatusNeedsReset != 0 {
		t.Fatal("needs reset")
	}
}

// Package virtiotest is the driver side of virtio for tests: a fake guest memory and a
// split-ring builder that lays out rings and descriptor chains the way a driver does
// (and, for hostile tests, any way at all), plus a helper that brings a device up
// through virtio.Transport. It is imported only by tests.
//
// It must not know any device model.
package virtiotest

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"gemu/hw/virtio"
)

// Mem is a fake guest RAM: one slot [Base, Base+len(B)).
type Mem struct {
	Base uint64
	B    []byte

	mu      sync.Mutex
	written []Range
}

// Range is a written guest-physical range.
type Range struct{ GPA, N uint64 }

// NewMem returns size bytes of zeroed fake RAM at base. Like hw/memory's RAM it is an
// anonymous mapping outside the Go heap, so the race detector treats the driver's and
// the device's accesses to it as it treats a real guest's (the ring protocol orders
// them, not Go's memory model). Close unmaps it.
func NewMem(base, size uint64) *Mem {
	b, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		panic(err)
	}
	return &Mem{Base: base, B: b}
}

// Close unmaps the memory.
func (m *Mem) Close() error { return unix.Munmap(m.B) }

// Slice implements virtio.Memory.
func (m *Mem) Slice(gpa, n uint64) ([]byte, bool) {
	if gpa < m.Base || gpa-m.Base > uint64(len(m.B)) || n > uint64(len(m.B))-(gpa-m.Base) {
		return nil, false
	}
	o := gpa - m.Base
	return m.B[o : o+n : o+n], true
}

// Written implements virtio.Memory; it records the range.
func (m *Mem) Written(gpa, n uint64) {
	m.mu.Lock()
	m.written = append(m.written, Range{gpa, n})
	m.mu.Unlock()
}

// WasWritten reports whether every byte of [gpa, gpa+n) was reported written.
func (m *Mem) WasWritten(gpa, n uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for a := gpa; a < gpa+n; a++ {
		ok := false
		for _, r := range m.written {
			if a >= r.GPA && a < r.GPA+r.N {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// At returns n bytes of guest memory at gpa (panics outside the fake RAM: test bug).
func (m *Mem) At(gpa, n uint64) []byte {
	b, ok := m.Slice(gpa, n)
	if !ok {
		panic(fmt.Sprintf("virtiotest: [%#x,+%#x) outside fake RAM", gpa, n))
	}
	return b
}

// Buf is one buffer of a chain: Data is device-readable; Write > 0 makes a
// device-writable buffer of that many bytes.
type Buf struct {
	Data  []byte
	Write uint32
}

// Ring is the driver's side of one split virtqueue in a Mem.
type Ring struct {
	Mem                *Mem
	Size               uint16
	Desc, Avail, Used  uint64
	next               uint16 // next free descriptor (rotating)
	heap, heapEnd      uint64
	AvailIdx, LastUsed uint16
}

// NewRing lays out a ring of size entries at base (4 KiB aligned is typical) and uses
// [base+64KiB·⌈…⌉, heapEnd) as the buffer heap.
func NewRing(m *Mem, size uint16, base uint64, heapSize uint64) *Ring {
	r := &Ring{Mem: m, Size: size, Desc: base}
	r.Avail = base + 16*uint64(size)
	r.Used = (r.Avail + 6 + 2*uint64(size) + 4095) &^ 4095
	r.heap = (r.Used + 6 + 8*uint64(size) + 4095) &^ 4095
	r.heapEnd = r.heap + heapSize
	if _, ok := m.Slice(base, r.heapEnd-base); !ok {
		panic("virtiotest: ring does not fit the fake RAM")
	}
	return r
}

// Config is the QueueConfig a driver would program.
func (r *Ring) Config() virtio.QueueConfig {
	return virtio.QueueConfig{Size: r.Size, Ready: true, Desc: r.Desc, Driver: r.Avail, Device: r.Used}
}

// Alloc returns n bytes of the ring's buffer heap (16-byte aligned, wrapping).
func (r *Ring) Alloc(n uint64) uint64 {
	n = (n + 15) &^ 15
	if r.heap+n > r.heapEnd {
		panic("virtiotest: buffer heap exhausted")
	}
	a := r.heap
	r.heap += n
	return a
}

// SetDesc writes descriptor i of the table at table (r.Desc for the ring itself).
func (r *Ring) SetDesc(table uint64, i uint16, addr uint64, ln uint32, flags, next uint16) {
	d := r.Mem.At(table+16*uint64(i), 16)
	binary.LittleEndian.PutUint64(d[0:], addr)
	binary.LittleEndian.PutUint32(d[8:], ln)
	binary.LittleEndian.PutUint16(d[12:], flags)
	binary.LittleEndian.PutUint16(d[14:], next)
}

// Publish puts head in the available ring and advances the available index.
func (r *Ring) Publish(head uint16) {
	a := r.Mem.At(r.Avail, 6+2*uint64(r.Size))
	binary.LittleEndian.PutUint16(a[4+2*int(r.AvailIdx%r.Size):], head)
	r.AvailIdx++
	binary.LittleEndian.PutUint16(a[2:], r.AvailIdx)
}

// SetAvailIdx writes the available index directly (hostile tests).
func (r *Ring) SetAvailIdx(v uint16) {
	r.AvailIdx = v
	binary.LittleEndian.PutUint16(r.Mem.At(r.Avail+2, 2), v)
}

// SetAvailFlags writes avail.flags (1 = VIRTQ_AVAIL_F_NO_INTERRUPT).
func (r *Ring) SetAvailFlags(v uint16) { binary.LittleEndian.PutUint16(r.Mem.At(r.Avail, 2), v) }

// SetUsedEvent writes used_event (EVENT_IDX).
func (r *Ring) SetUsedEvent(v uint16) {
	binary.LittleEndian.PutUint16(r.Mem.At(r.Avail+4+2*uint64(r.Size), 2), v)
}

// AvailEvent reads avail_event (EVENT_IDX).
func (r *Ring) AvailEvent() uint16 {
	return binary.LittleEndian.Uint16(r.Mem.At(r.Used+4+8*uint64(r.Size), 2))
}

// Add builds a chain of direct descriptors from bufs, publishes it and returns the head
// and each buffer's guest address.
func (r *Ring) Add(bufs ...Buf) (uint16, []uint64) {
	head, gpas := r.build(r.Desc, &r.next, r.Size, bufs)
	r.Publish(head)
	return head, gpas
}

// AddIndirect builds bufs as one indirect table referenced from a single descriptor.
func (r *Ring) AddIndirect(bufs ...Buf) (uint16, []uint64) {
	table := r.Alloc(16 * uint64(len(bufs)))
	var z uint16
	first, gpas := r.build(table, &z, uint16(len(bufs)), bufs)
	if first != 0 {
		panic("virtiotest: indirect table must start at 0")
	}
	head := r.next
	r.next = (r.next + 1) % r.Size
	r.SetDesc(r.Desc, head, table, uint32(16*len(bufs)), 4, 0)
	r.Publish(head)
	return head, gpas
}

func (r *Ring) build(table uint64, next *uint16, size uint16, bufs []Buf) (uint16, []uint64) {
	head := *next
	gpas := make([]uint64, len(bufs))
	for i, b := range bufs {
		idx := *next
		*next = (*next + 1) % size
		var addr uint64
		var ln uint32
		var flags uint16
		if b.Write > 0 {
			addr, ln, flags = r.Alloc(uint64(b.Write)), b.Write, 2
		} else {
			addr, ln = r.Alloc(uint64(len(b.Data))), uint32(len(b.Data))
			copy(r.Mem.At(addr, uint64(ln)), b.Data)
		}
		gpas[i] = addr
		if i < len(bufs)-1 {
			flags |= 1
		}
		r.SetDesc(table, idx, addr, ln, flags, *next)
	}
	return head, gpas
}

// UsedIdx reads the used index.
func (r *Ring) UsedIdx() uint16 { return binary.LittleEndian.Uint16(r.Mem.At(r.Used+2, 2)) }

// PopUsed returns the next used element, if any.
func (r *Ring) PopUsed() (id uint32, ln uint32, ok bool) {
	if r.UsedIdx() == r.LastUsed {
		return 0, 0, false
	}
	e := r.Mem.At(r.Used+4+8*uint64(r.LastUsed%r.Size), 8)
	r.LastUsed++
	return binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:]), true
}

// WaitUsed waits up to d for the next used element.
func (r *Ring) WaitUsed(d time.Duration) (id uint32, ln uint32, ok bool) {
	deadline := time.Now().Add(d)
	for {
		if id, ln, ok := r.PopUsed(); ok {
			return id, ln, true
		}
		if time.Now().After(deadline) {
			return 0, 0, false
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// IRQ records notifications (it implements virtio.Interrupt).
type IRQ struct {
	mu     sync.Mutex
	Queues []int
	Config int
}

func (i *IRQ) Used(q int) { i.mu.Lock(); i.Queues = append(i.Queues, q); i.mu.Unlock() }
func (i *IRQ) ConfigChanged() {
	i.mu.Lock()
	i.Config++
	i.mu.Unlock()
}

// Counts returns the number of used notifications and config notifications so far.
func (i *IRQ) Counts() (used, config int) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return len(i.Queues), i.Config
}

// Bringup negotiates features (the device's offer masked by want, plus VERSION_1),
// programs rings (nil entries stay disabled) and sets DRIVER_OK through a Transport,
// as a driver does. It returns the transport; check Status for NEEDS_RESET.
func Bringup(dev virtio.Device, mem virtio.Memory, irq virtio.Interrupt, want uint64, rings ...*Ring) *virtio.Transport {
	t := virtio.NewTransport(dev, mem, irq)
	t.SetStatus(virtio.StatusAcknowledge)
	t.SetStatus(virtio.StatusAcknowledge | virtio.StatusDriver)
	f := t.DeviceFeatures() & (want | 1<<virtio.FVersion1)
	t.SetDriverFeatureSel(0)
	t.SetDriverFeatureWindow(uint32(f))
	t.SetDriverFeatureSel(1)
	t.SetDriverFeatureWindow(uint32(f >> 32))
	t.SetStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK)
	for i, r := range rings {
		if r == nil {
			continue
		}
		t.SetQueueSel(uint32(i))
		c := r.Config()
		t.UpdateQueue(func(q *virtio.QueueConfig) { *q = c })
	}
	t.SetStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK | virtio.StatusDriverOK)
	return t
}

// Clone returns a new fake RAM with m's base and a copy of its contents: the
// destination's memory after a migration.
func (m *Mem) Clone() *Mem {
	c := NewMem(m.Base, uint64(len(m.B)))
	copy(c.B, m.B)
	return c
}

// On returns a copy of the driver's ring state over memory m (a Clone of its memory).
func (r *Ring) On(m *Mem) *Ring {
	c := *r
	c.Mem = m
	return &c
}

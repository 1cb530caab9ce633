package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
)

// Memory is guest physical memory as a device reaches it. hw/memory's *RAM satisfies it.
type Memory interface {
	// Slice returns the host bytes of [gpa, gpa+n), aliasing guest memory, when the whole
	// range lies in one RAM slot; otherwise nil, false.
	Slice(gpa, n uint64) ([]byte, bool)
	// Written tells the memory layer that the device wrote [gpa, gpa+n) (dirty pages,
	// translated code on them dropped).
	Written(gpa, n uint64)
}

// MaxQueueSize is the largest queue size the split ring format allows.
const MaxQueueSize = 32768

// MaxIndirect bounds an indirect table's entries when the queue is smaller. A driver
// sizes its indirect tables by the device's limits (virtio-blk: seg_max + 2), not by
// the queue size it ended up with (Linux halves a ring it cannot allocate), so the
// bound is QEMU's VIRTQUEUE_MAX_SIZE rather than the queue size.
const MaxIndirect = 1024

// Descriptor flags.
const (
	descFNext     = 1
	descFWrite    = 2
	descFIndirect = 4
)

const (
	availFNoInterrupt = 1 // avail.flags: the driver does not want used-buffer notifications
	descSize          = 16
	usedElemSize      = 8
)

// QueueConfig is the driver-programmed state of one queue, as a transport holds it.
type QueueConfig struct {
	Size   uint16 // number of entries the driver chose
	Ready  bool
	Desc   uint64 // descriptor table (16-byte aligned)
	Driver uint64 // available ring (2-byte aligned)
	Device uint64 // used ring (4-byte aligned)
}

// ErrBroken is returned by Queue.Pop once the queue has been found malformed.
var ErrBroken = errors.New("virtio: queue is broken (device needs reset)")

// Queue is one activated split virtqueue. Pop and Push may be called from different
// goroutines (a dispatcher pops, workers push completions).
type Queue struct {
	index    int
	size     uint16
	mem      Memory
	desc     []byte // descriptor table, size*16 bytes
	avail    []byte // flags, idx, ring[size], used_event
	used     []byte // flags, idx, ring[size]{id,len}, avail_event
	usedGPA  uint64
	eventIdx bool
	indirect bool
	irq      Interrupt
	fail     func(error)
	kick     chan struct{}

	mu             sync.Mutex
	broken         bool
	lastAvail      uint16
	usedIdx        uint16
	signalled      uint16 // used index at the last Signal decision
	signalledValid bool

	// Quiescing for a state save (Transport.Quiesce): popFrozen makes Pop find the
	// ring empty, pushFrozen makes Push wait on thawed until the queue is thawed.
	popFrozen, pushFrozen bool
	thawed                *sync.Cond
}

// newQueue checks the driver's configuration of queue index and maps its rings.
func newQueue(index int, c QueueConfig, max uint16, features uint64, mem Memory, irq Interrupt, fail func(error)) (*Queue, error) {
	n := uint64(c.Size)
	if c.Size == 0 || c.Size&(c.Size-1) != 0 || c.Size > max || n > MaxQueueSize {
		return nil, fmt.Errorf("virtio: queue %d: size %d is not a power of two up to %d", index, c.Size, max)
	}
	if c.Desc%16 != 0 || c.Driver%2 != 0 || c.Device%4 != 0 {
		return nil, fmt.Errorf("virtio: queue %d: misaligned rings (desc %#x avail %#x used %#x)", index, c.Desc, c.Driver, c.Device)
	}
	q := &Queue{index: index, size: c.Size, mem: mem, irq: irq, fail: fail, usedGPA: c.Device,
		eventIdx: features&(1<<FEventIdx) != 0, indirect: features&(1<<FIndirectDesc) != 0,
		kick: make(chan struct{}, 1)}
	q.thawed = sync.NewCond(&q.mu)
	var ok1, ok2, ok3 bool
	q.desc, ok1 = sliceChecked(mem, c.Desc, n*descSize)
	q.avail, ok2 = sliceChecked(mem, c.Driver, 6+2*n)
	q.used, ok3 = sliceChecked(mem, c.Device, 6+usedElemSize*n)
	if !ok1 || !ok2 || !ok3 {
		return nil, fmt.Errorf("virtio: queue %d: rings outside guest RAM (desc %#x avail %#x used %#x, size %d)", index, c.Desc, c.Driver, c.Device, c.Size)
	}
	// The device starts at the indices the rings hold (zero after a driver's init).
	q.lastAvail = 0
	q.usedIdx = 0
	return q, nil
}

func sliceChecked(mem Memory, gpa, n uint64) ([]byte, bool) {
	if gpa+n < gpa {
		return nil, false
	}
	b, ok := mem.Slice(gpa, n)
	if !ok || uint64(len(b)) != n {
		return nil, false
	}
	return b, true
}

// fenceWord gives fence something to operate on.
var fenceWord atomic.Uint32

// fence is a full memory barrier between the device's accesses to the rings and the
// driver's (a locked read-modify-write on amd64, a barrier-carrying atomic on arm64).
// The 16-bit ring indices are read and written with single aligned 16-bit accesses
// (encoding/binary's 2-byte helpers compile to one load or store), which are atomic.
func fence() { fenceWord.Add(1) }

// Index is the queue's number within its device.
func (q *Queue) Index() int { return q.index }

// Size is the number of ring entries the driver configured.
func (q *Queue) Size() uint16 { return q.size }

// Kicked is signalled (non-blocking, coalesced) when the driver notifies the queue.
func (q *Queue) Kicked() <-chan struct{} { return q.kick }

// notify wakes the queue's worker without blocking the caller.
func (q *Queue) notify() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// Kick wakes the queue's worker as a driver notification does (devices use it to
// re-run a queue when host-side input arrives).
func (q *Queue) Kick() { q.notify() }

// breakLocked marks the queue broken and reports err once.
func (q *Queue) breakLocked(err error) error {
	if !q.broken {
		q.broken = true
		if q.fail != nil {
			q.fail(err)
		}
	}
	return err
}

// Pop takes the next available descriptor chain. It returns nil, nil when the ring is
// empty (having asked the driver, with EVENT_IDX, to notify the next buffer), and an
// error (the queue is then broken and the device needs reset) when the ring or the
// chain is malformed.
func (q *Queue) Pop() (*Chain, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.broken {
		return nil, ErrBroken
	}
	if q.popFrozen {
		return nil, nil
	}
	availIdx := binary.LittleEndian.Uint16(q.avail[2:])
	if availIdx == q.lastAvail {
		if !q.eventIdx {
			return nil, nil
		}
		// Ask for a notification when the next buffer is made available, then look again:
		// the driver may have added one before it could see avail_event.
		binary.LittleEndian.PutUint16(q.used[4+usedElemSize*int(q.size):], q.lastAvail)
		q.mem.Written(q.usedGPA+4+usedElemSize*uint64(q.size), 2)
		fence()
		availIdx = binary.LittleEndian.Uint16(q.avail[2:])
		if availIdx == q.lastAvail {
			return nil, nil
		}
	}
	if uint16(availIdx-q.lastAvail) > q.size {
		return nil, q.breakLocked(fmt.Errorf("virtio: queue %d: available index %d is %d entries ahead of %d (size %d)",
			q.index, availIdx, uint16(availIdx-q.lastAvail), q.lastAvail, q.size))
	}
	fence() // read the ring entry and descriptors only after the index
	head := binary.LittleEndian.Uint16(q.avail[4+2*int(q.lastAvail%q.size):])
	c, err := q.walk(head)
	if err != nil {
		return nil, q.breakLocked(err)
	}
	q.lastAvail++
	return c, nil
}

// walk validates the chain starting at head and maps its buffers.
func (q *Queue) walk(head uint16) (*Chain, error) {
	if head >= q.size {
		return nil, fmt.Errorf("virtio: queue %d: head %d out of range (size %d)", q.index, head, q.size)
	}
	c := &Chain{q: q, head: head}
	table := q.desc
	entries := uint32(q.size)
	i := uint32(head)
	indirect := false
	limit := uint32(q.size) // descriptors allowed in the chain (spec 2.7.5.3.1)
	var n uint32
	var seenWrite bool
	var inLen uint64
	for {
		if n++; n > limit {
			return nil, fmt.Errorf("virtio: queue %d: chain at head %d longer than %d descriptors (loop?)", q.index, head, limit)
		}
		d := table[i*descSize : i*descSize+descSize]
		addr := binary.LittleEndian.Uint64(d[0:])
		ln := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		next := binary.LittleEndian.Uint16(d[14:])
		if flags&descFIndirect != 0 {
			switch {
			case !q.indirect:
				return nil, fmt.Errorf("virtio: queue %d: indirect descriptor without VIRTIO_F_INDIRECT_DESC", q.index)
			case indirect:
				return nil, fmt.Errorf("virtio: queue %d: nested indirect descriptor", q.index)
			case flags&descFNext != 0:
				return nil, fmt.Errorf("virtio: queue %d: indirect descriptor with NEXT set", q.index)
			case ln == 0 || ln%descSize != 0:
				return nil, fmt.Errorf("virtio: queue %d: indirect table length %d is not a positive multiple of 16", q.index, ln)
			case ln/descSize > max(uint32(q.size), MaxIndirect):
				return nil, fmt.Errorf("virtio: queue %d: indirect table of %d entries (at most %d)", q.index, ln/descSize, max(uint32(q.size), MaxIndirect))
			}
			t, ok := sliceChecked(q.mem, addr, uint64(ln))
			if !ok {
				return nil, fmt.Errorf("virtio: queue %d: indirect table [%#x,+%#x) outside guest RAM", q.index, addr, ln)
			}
			table, entries, i, indirect = t, ln/descSize, 0, true
			limit = n + entries // the table's entries after the descriptors so far
			continue
		}
		var b []byte
		if ln != 0 {
			var ok bool
			if b, ok = sliceChecked(q.mem, addr, uint64(ln)); !ok {
				return nil, fmt.Errorf("virtio: queue %d: buffer [%#x,+%#x) outside guest RAM", q.index, addr, ln)
			}
		}
		if flags&descFWrite != 0 {
			seenWrite = true
			if inLen += uint64(ln); inLen > math.MaxUint32 {
				return nil, fmt.Errorf("virtio: queue %d: writable buffers exceed 4 GiB", q.index)
			}
			c.In = append(c.In, Segment{GPA: addr, B: b})
		} else {
			if seenWrite {
				return nil, fmt.Errorf("virtio: queue %d: device-readable descriptor after a writable one", q.index)
			}
			c.Out = append(c.Out, Segment{GPA: addr, B: b})
		}
		if flags&descFNext == 0 {
			return c, nil
		}
		if uint32(next) >= entries {
			return nil, fmt.Errorf("virtio: queue %d: next index %d out of range (%d entries)", q.index, next, entries)
		}
		i = uint32(next)
	}
}

// Push returns chain c to the driver through the used ring, reporting n bytes written
// into its writable buffers. n must cover every byte the device wrote: Push reports
// [0, n) of the writable buffers to Memory.Written. Push does not notify; call Signal
// after one or more Push calls.
func (q *Queue) Push(c *Chain, n uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.pushFrozen {
		q.thawed.Wait()
	}
	if q.broken {
		return
	}
	if w := c.In.Len(); uint64(n) > w {
		n = uint32(w)
	}
	rem := uint64(n)
	for _, s := range c.In {
		if rem == 0 {
			break
		}
		k := min(rem, uint64(len(s.B)))
		if k != 0 {
			q.mem.Written(s.GPA, k)
		}
		rem -= k
	}
	slot := 4 + usedElemSize*int(q.usedIdx%q.size)
	binary.LittleEndian.PutUint32(q.used[slot:], uint32(c.head))
	binary.LittleEndian.PutUint32(q.used[slot+4:], n)
	q.mem.Written(q.usedGPA+uint64(slot), usedElemSize)
	fence() // the element before the index
	q.usedIdx++
	binary.LittleEndian.PutUint16(q.used[2:], q.usedIdx)
	q.mem.Written(q.usedGPA+2, 2)
}

// needEvent is vring_need_event: whether moving the used index from old to new passes
// the driver's event index.
func needEvent(event, new, old uint16) bool { return uint16(new-event-1) < uint16(new-old) }

// Signal sends a used-buffer notification if the driver wants one for the buffers
// pushed since the last Signal (VIRTQ_AVAIL_F_NO_INTERRUPT, or used_event with
// EVENT_IDX).
func (q *Queue) Signal() {
	q.mu.Lock()
	if q.broken {
		q.mu.Unlock()
		return
	}
	fence() // the used index before reading the driver's suppression state
	var send bool
	if q.eventIdx {
		old, valid := q.signalled, q.signalledValid
		q.signalled, q.signalledValid = q.usedIdx, true
		event := binary.LittleEndian.Uint16(q.avail[4+2*int(q.size):])
		send = !valid || needEvent(event, q.usedIdx, old)
	} else {
		send = binary.LittleEndian.Uint16(q.avail[0:])&availFNoInterrupt == 0
	}
	q.mu.Unlock()
	if send {
		q.irq.Used(q.index)
	}
}

// Broken reports whether the queue has been found malformed.
func (q *Queue) Broken() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.broken
}

// Fail marks the queue broken for a device-detected protocol error (a request the
// driver framed wrongly): the device then needs reset.
func (q *Queue) Fail(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.breakLocked(err)
}

// Segment is one descriptor's buffer: its guest physical address and the host bytes
// aliasing it.
type Segment struct {
	GPA uint64
	B   []byte
}

// Buffers is a scatter-gather list.
type Buffers []Segment

// Len is the total length in bytes.
func (bs Buffers) Len() uint64 {
	var n uint64
	for _, s := range bs {
		n += uint64(len(s.B))
	}
	return n
}

// ReadAt copies bytes from offset off of the list into p and returns how many it copied.
func (bs Buffers) ReadAt(p []byte, off uint64) int {
	done := 0
	for _, s := range bs {
		if len(p) == 0 {
			break
		}
		if off >= uint64(len(s.B)) {
			off -= uint64(len(s.B))
			continue
		}
		k := copy(p, s.B[off:])
		p, off, done = p[k:], 0, done+k
	}
	return done
}

// WriteAt copies p into the list at offset off and returns how many bytes it copied.
// The writes are reported to Memory.Written when the chain is pushed.
func (bs Buffers) WriteAt(p []byte, off uint64) int {
	done := 0
	for _, s := range bs {
		if len(p) == 0 {
			break
		}
		if off >= uint64(len(s.B)) {
			off -= uint64(len(s.B))
			continue
		}
		k := copy(s.B[off:], p)
		p, off, done = p[k:], 0, done+k
	}
	return done
}

// Slice returns the sub-list covering [off, off+n) (shorter if the list is).
func (bs Buffers) Slice(off, n uint64) Buffers {
	var out Buffers
	for _, s := range bs {
		if n == 0 {
			break
		}
		l := uint64(len(s.B))
		if off >= l {
			off -= l
			continue
		}
		k := min(n, l-off)
		out = append(out, Segment{GPA: s.GPA + off, B: s.B[off : off+k]})
		off, n = 0, n-k
	}
	return out
}

// Chain is one descriptor chain the driver made available: device-readable buffers
// (Out, driver to device) followed by device-writable ones (In, device to driver).
type Chain struct {
	q    *Queue
	head uint16
	Out  Buffers
	In   Buffers
}

// Head is the chain's head descriptor index (the id returned in the used ring).
func (c *Chain) Head() uint16 { return c.head }

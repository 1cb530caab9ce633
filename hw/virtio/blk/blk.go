// Package blk owns the virtio-blk device model (virtio 1.2 section 5.2): request
// parsing and checking (IN, OUT, FLUSH, GET_ID, DISCARD, WRITE_ZEROES), the
// configuration space (capacity, SIZE_MAX, SEG_MAX, BLK_SIZE, TOPOLOGY, multiqueue,
// discard and write-zeroes limits), read-only disks, and the worker pool that runs
// requests against a Backend off the vCPU thread.
//
// Each enabled queue has a dispatcher goroutine that pops requests when the driver
// kicks; a pool of Config.Workers goroutines (shared by the queues) runs them
// concurrently and completes them in whatever order the backend finishes, as the spec
// allows. A request the backend fails goes through Config.OnError, the error policy
// (report, ignore, or retry after the callback has waited: werror=stop).
//
// It must not know the transport (MMIO or PCI), nor any block format: it sees only the
// Backend interface (the block layer's backend satisfies it).
package blk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"unsafe"

	"gemu/hw/virtio"
)

// Backend is the disk behind the device. Its methods may be called concurrently.
type Backend interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Flush() error
	Discard(off, n int64) error
	WriteZeroes(off, n int64, unmap bool) error
	Size() int64
	ReadOnly() bool
}

// Feature bits (spec 5.2.3).
const (
	FSizeMax     = 1
	FSegMax      = 2
	FGeometry    = 4
	FRO          = 5
	FBlkSize     = 6
	FFlush       = 9
	FTopology    = 10
	FConfigWCE   = 11
	FMQ          = 12
	FDiscard     = 13
	FWriteZeroes = 14
)

// Request types and status values (spec 5.2.6).
const (
	TIn          = 0
	TOut         = 1
	TFlush       = 4
	TGetID       = 8
	TGetLifetime = 10
	TDiscard     = 11
	TWriteZeroes = 13
	TSecureErase = 14

	SOK     = 0
	SIOErr  = 1
	SUnsupp = 2
)

// SectorSize is the unit of virtio-blk sector numbers, whatever the block size.
const SectorSize = 512

// IDBytes is the length of the GET_ID serial field.
const IDBytes = 20

const (
	hdrSize   = 16 // type u32, ioprio u32, sector u64
	segSize   = 16 // discard/write-zeroes segment: sector u64, num_sectors u32, flags u32
	flagUnmap = 1
)

// ErrorAction is what the error policy decides for a failed backend request.
type ErrorAction int

const (
	// ErrorReport completes the request with VIRTIO_BLK_S_IOERR (werror=report).
	ErrorReport ErrorAction = iota
	// ErrorIgnore completes the request as if it had succeeded (werror=ignore).
	ErrorIgnore
	// ErrorRetry runs the request again: the policy returns it after waiting (for the
	// VM to be resumed, werror=stop). The worker stops retrying when ctx is done.
	ErrorRetry
)

// Request describes a failed request to the error policy.
type Request struct {
	Type   uint32 // TIn, TOut, TFlush, TDiscard, TWriteZeroes
	Offset int64  // byte offset on the disk
	Length int64  // bytes
}

// Config configures a virtio-blk device. Zero values take the defaults noted.
type Config struct {
	Backend Backend
	Serial  string // GET_ID answer, at most IDBytes bytes

	NumQueues int    // default 1; more offers VIRTIO_BLK_F_MQ
	QueueSize uint16 // per-queue maximum, a power of two; default 256
	SegMax    uint32 // data segments per request; default QueueSize-2
	SizeMax   uint32 // largest segment in bytes; 0: not offered

	BlockSize        uint32 // logical block size, a power of two >= 512; default 512
	PhysicalBlockExp uint8  // log2(physical block / logical block)
	MinIOSize        uint16 // in logical blocks
	OptIOSize        uint32 // in logical blocks

	Discard                bool   // offer DISCARD (ignored for read-only backends)
	MaxDiscardSectors      uint32 // default 0x3fffff (QEMU's default)
	MaxDiscardSeg          uint32 // default 1
	DiscardSectorAlignment uint32 // in 512-byte sectors; default BlockSize/512
	WriteZeroes            bool   // offer WRITE_ZEROES (ignored for read-only backends)
	MaxWriteZeroesSectors  uint32 // default 0x3fffff
	MaxWriteZeroesSeg      uint32 // default 1
	WriteZeroesMayUnmap    bool

	Workers int // concurrent requests; default 4

	// OnError decides what a failed backend request does; nil reports every error.
	// It may block (werror=stop); ctx is cancelled when the device resets.
	OnError func(ctx context.Context, r Request, err error) ErrorAction
}

// Device is a virtio-blk device (virtio.Device).
type Device struct {
	c        Config
	features uint64

	mu      sync.Mutex // activation state
	irq     virtio.Interrupt
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	running bool
}

// New checks c and returns the device.
func New(c Config) (*Device, error) {
	if c.Backend == nil {
		return nil, errors.New("virtio-blk: no backend")
	}
	if c.NumQueues == 0 {
		c.NumQueues = 1
	}
	if c.NumQueues < 1 || c.NumQueues > 1024 {
		return nil, fmt.Errorf("virtio-blk: num-queues %d out of range 1..1024", c.NumQueues)
	}
	if c.QueueSize == 0 {
		c.QueueSize = 256
	}
	if c.QueueSize < 4 || c.QueueSize&(c.QueueSize-1) != 0 {
		return nil, fmt.Errorf("virtio-blk: queue-size %d is not a power of two of at least 4", c.QueueSize)
	}
	if c.SegMax == 0 {
		c.SegMax = uint32(c.QueueSize) - 2
	}
	if c.SegMax > uint32(c.QueueSize)-2 {
		return nil, fmt.Errorf("virtio-blk: seg-max %d must be at most queue-size - 2 (%d)", c.SegMax, c.QueueSize-2)
	}
	if c.BlockSize == 0 {
		c.BlockSize = SectorSize
	}
	if c.BlockSize < SectorSize || c.BlockSize&(c.BlockSize-1) != 0 || c.BlockSize > 1<<16 {
		return nil, fmt.Errorf("virtio-blk: block size %d is not a power of two in 512..65536", c.BlockSize)
	}
	if len(c.Serial) > IDBytes {
		return nil, fmt.Errorf("virtio-blk: serial %q is longer than %d bytes", c.Serial, IDBytes)
	}
	if c.MaxDiscardSectors == 0 {
		c.MaxDiscardSectors = 0x3fffff
	}
	if c.MaxDiscardSeg == 0 {
		c.MaxDiscardSeg = 1
	}
	if c.DiscardSectorAlignment == 0 {
		c.DiscardSectorAlignment = c.BlockSize / SectorSize
	}
	if c.MaxWriteZeroesSectors == 0 {
		c.MaxWriteZeroesSectors = 0x3fffff
	}
	if c.MaxWriteZeroesSeg == 0 {
		c.MaxWriteZeroesSeg = 1
	}
	// A request's segments all lie in one chain, so more than the queue holds is moot.
	c.MaxDiscardSeg = min(c.MaxDiscardSeg, uint32(c.QueueSize))
	c.MaxWriteZeroesSeg = min(c.MaxWriteZeroesSeg, uint32(c.QueueSize))
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.Workers > 256 {
		c.Workers = 256
	}
	d := &Device{c: c}
	f := uint64(1<<FSegMax | 1<<FBlkSize | 1<<FFlush | 1<<FTopology)
	if c.SizeMax != 0 {
		f |= 1 << FSizeMax
	}
	if c.NumQueues > 1 {
		f |= 1 << FMQ
	}
	if c.Backend.ReadOnly() {
		f |= 1 << FRO
	} else {
		if c.Discard {
			f |= 1 << FDiscard
		}
		if c.WriteZeroes {
			f |= 1 << FWriteZeroes
		}
	}
	d.features = f
	return d, nil
}

// DeviceID implements virtio.Device.
func (d *Device) DeviceID() uint16 { return virtio.IDBlock }

// Features implements virtio.Device.
func (d *Device) Features() uint64 { return d.features }

// QueueMax implements virtio.Device.
func (d *Device) QueueMax() []uint16 {
	m := make([]uint16, d.c.NumQueues)
	for i := range m {
		m[i] = d.c.QueueSize
	}
	return m
}

// Config space layout (spec 5.2.4).
const configSize = 60

func (d *Device) config() [configSize]byte {
	var b [configSize]byte
	le := binary.LittleEndian
	le.PutUint64(b[0:], uint64(d.c.Backend.Size())/SectorSize)
	le.PutUint32(b[8:], d.c.SizeMax)
	le.PutUint32(b[12:], d.c.SegMax)
	// 16..19 geometry: not offered
	le.PutUint32(b[20:], d.c.BlockSize)
	b[24] = d.c.PhysicalBlockExp
	b[25] = 0 // alignment_offset
	le.PutUint16(b[26:], d.c.MinIOSize)
	le.PutUint32(b[28:], d.c.OptIOSize)
	b[32] = 1 // writeback: the driver must FLUSH (FLUSH is always offered)
	le.PutUint16(b[34:], uint16(d.c.NumQueues))
	le.PutUint32(b[36:], d.c.MaxDiscardSectors)
	le.PutUint32(b[40:], d.c.MaxDiscardSeg)
	le.PutUint32(b[44:], d.c.DiscardSectorAlignment)
	le.PutUint32(b[48:], d.c.MaxWriteZeroesSectors)
	le.PutUint32(b[52:], d.c.MaxWriteZeroesSeg)
	if d.c.WriteZeroesMayUnmap {
		b[56] = 1
	}
	return b
}

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(off uint64, data []byte) {
	clear(data)
	cfg := d.config()
	if off < configSize {
		copy(data, cfg[off:])
	}
}

// WriteConfig implements virtio.Device: nothing is writable (CONFIG_WCE is not offered).
func (d *Device) WriteConfig(uint64, []byte) {}

// CapacityChanged tells the driver the backend's size changed (block_resize).
func (d *Device) CapacityChanged() {
	d.mu.Lock()
	irq := d.irq
	d.mu.Unlock()
	if irq != nil {
		irq.ConfigChanged()
	}
}

type job struct {
	q *virtio.Queue
	c *virtio.Chain
}

// Activate implements virtio.Device: it starts a dispatcher per enabled queue and the
// worker pool.
func (d *Device) Activate(a virtio.Activation) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.running {
		return errors.New("virtio-blk: already active")
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.irq, d.running = cancel, a.Interrupt, true
	jobs := make(chan job, d.c.Workers)
	for _, q := range a.Queues {
		if q == nil {
			continue
		}
		d.wg.Add(1)
		go d.dispatch(ctx, q, jobs)
	}
	for range d.c.Workers {
		d.wg.Add(1)
		go d.work(ctx, jobs)
	}
	return nil
}

// Reset implements virtio.Device: it cancels the workers and waits until none touches
// guest memory (a request in the backend finishes first).
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.running {
		return
	}
	d.cancel()
	d.wg.Wait()
	d.running, d.irq, d.cancel = false, nil, nil
}

func (d *Device) dispatch(ctx context.Context, q *virtio.Queue, jobs chan<- job) {
	defer d.wg.Done()
	for {
		for {
			c, err := q.Pop()
			if err != nil || c == nil {
				break // a broken queue waits for the reset
			}
			select {
			case jobs <- job{q, c}:
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-q.Kicked():
		case <-ctx.Done():
			return
		}
	}
}

func (d *Device) work(ctx context.Context, jobs <-chan job) {
	defer d.wg.Done()
	for {
		select {
		case j := <-jobs:
			if ctx.Err() != nil {
				return
			}
			n, ok := d.handle(ctx, j.q, j.c)
			if ok {
				j.q.Push(j.c, n)
				j.q.Signal()
			}
		case <-ctx.Done():
			return
		}
	}
}

// handle runs one request and returns the used length; ok false means the request is
// dropped (the queue is broken, or the device is resetting).
func (d *Device) handle(ctx context.Context, q *virtio.Queue, c *virtio.Chain) (uint32, bool) {
	var hdr [hdrSize]byte
	if c.Out.ReadAt(hdr[:], 0) != hdrSize {
		q.Fail(fmt.Errorf("virtio-blk: request header is %d bytes, want %d", c.Out.Len(), hdrSize))
		return 0, false
	}
	inLen := c.In.Len()
	if inLen == 0 {
		q.Fail(errors.New("virtio-blk: request has no status byte"))
		return 0, false
	}
	typ := binary.LittleEndian.Uint32(hdr[0:])
	sector := binary.LittleEndian.Uint64(hdr[8:])
	out := c.Out.Slice(hdrSize, c.Out.Len()-hdrSize)
	in := c.In.Slice(0, inLen-1)
	status, ok := d.run(ctx, typ, sector, out, in)
	if !ok {
		return 0, false
	}
	c.In.WriteAt([]byte{status}, inLen-1)
	// Every writable byte may have been written (data, then status): report them all.
	return uint32(inLen), true
}

func (d *Device) run(ctx context.Context, typ uint32, sector uint64, out, in virtio.Buffers) (uint8, bool) {
	ro := d.c.Backend.ReadOnly()
	switch typ {
	case TIn, TOut:
		data := in
		if typ == TOut {
			if ro {
				return SIOErr, true
			}
			data = out
		}
		off, ok := d.rangeOK(sector, data.Len())
		if !ok {
			return SIOErr, true
		}
		return d.io(ctx, Request{typ, off, int64(data.Len())}, func() error { return d.rw(typ, data, off) })
	case TFlush:
		return d.io(ctx, Request{Type: TFlush}, d.c.Backend.Flush)
	case TGetID:
		var id [IDBytes]byte
		copy(id[:], d.c.Serial)
		in.WriteAt(id[:], 0)
		return SOK, true
	case TDiscard, TWriteZeroes:
		if ro {
			return SIOErr, true
		}
		if (typ == TDiscard && d.features&(1<<FDiscard) == 0) || (typ == TWriteZeroes && d.features&(1<<FWriteZeroes) == 0) {
			return SUnsupp, true
		}
		return d.discardZeroes(ctx, typ, out)
	}
	return SUnsupp, true
}

// rangeOK checks a data transfer of n bytes at sector: whole sectors, aligned to the
// block size, inside the disk. It returns the byte offset.
func (d *Device) rangeOK(sector, n uint64) (int64, bool) {
	if n%SectorSize != 0 {
		return 0, false
	}
	capacity := uint64(d.c.Backend.Size()) / SectorSize
	ns := n / SectorSize
	if sector > capacity || ns > capacity-sector {
		return 0, false
	}
	if (sector*SectorSize)%uint64(d.c.BlockSize) != 0 {
		return 0, false
	}
	return int64(sector * SectorSize), true
}

// rw moves data between the guest buffers and the backend, zero-copy.
func (d *Device) rw(typ uint32, data virtio.Buffers, off int64) error {
	if len(data) == 1 {
		return d.rwOne(typ, data[0].B, off)
	}
	// A request scattered over many guest pages is one host I/O per bounce-buffer's
	// worth, not one per segment: Linux hands a 1 MiB request over as up to 256
	// separate 4 KiB pages, and a syscall each (O_DIRECT: a device round trip each) made
	// sequential I/O several times slower than QEMU's single preadv.
	bp := bouncePool.Get().(*[]byte)
	defer bouncePool.Put(bp)
	buf := *bp
	for len(data) > 0 {
		// Take segments while they fit; a segment larger than the buffer goes alone.
		n, k := 0, 0
		for k < len(data) && n+len(data[k].B) <= len(buf) {
			n += len(data[k].B)
			k++
		}
		if k == 0 {
			if err := d.rwOne(typ, data[0].B, off); err != nil {
				return err
			}
			off += int64(len(data[0].B))
			data = data[1:]
			continue
		}
		if typ == TIn {
			if err := d.rwOne(typ, buf[:n], off); err != nil {
				return err
			}
			o := 0
			for _, seg := range data[:k] {
				o += copy(seg.B, buf[o:])
			}
		} else {
			o := 0
			for _, seg := range data[:k] {
				o += copy(buf[o:], seg.B)
			}
			if err := d.rwOne(typ, buf[:n], off); err != nil {
				return err
			}
		}
		off += int64(n)
		data = data[k:]
	}
	return nil
}

// bounceSize is the largest host I/O a scattered request is gathered into.
const bounceSize = 1 << 20

// bouncePool holds page-aligned bounce buffers (page alignment lets an O_DIRECT
// backend use them without bouncing again).
var bouncePool = sync.Pool{New: func() any {
	raw := make([]byte, bounceSize+4096)
	skip := int((4096 - uintptr(unsafe.Pointer(&raw[0]))%4096) % 4096)
	b := raw[skip : skip+bounceSize : skip+bounceSize]
	return &b
}}

func (d *Device) rwOne(typ uint32, b []byte, off int64) error {
	var n int
	var err error
	if typ == TIn {
		n, err = d.c.Backend.ReadAt(b, off)
		if err == io.EOF && n == len(b) {
			err = nil
		}
	} else {
		n, err = d.c.Backend.WriteAt(b, off)
	}
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
		if typ == TIn {
			err = io.ErrUnexpectedEOF
		}
	}
	return err
}

// io runs op under the error policy.
func (d *Device) io(ctx context.Context, r Request, op func() error) (uint8, bool) {
	for {
		err := op()
		if err == nil {
			return SOK, true
		}
		action := ErrorReport
		if d.c.OnError != nil {
			action = d.c.OnError(ctx, r, err)
		}
		switch action {
		case ErrorIgnore:
			return SOK, true
		case ErrorRetry:
			if ctx.Err() != nil {
				return 0, false
			}
			continue
		}
		return SIOErr, true
	}
}

type seg struct {
	sector uint64
	num    uint32
	flags  uint32
}

func (d *Device) discardZeroes(ctx context.Context, typ uint32, out virtio.Buffers) (uint8, bool) {
	maxSeg, maxSectors := d.c.MaxDiscardSeg, d.c.MaxDiscardSectors
	if typ == TWriteZeroes {
		maxSeg, maxSectors = d.c.MaxWriteZeroesSeg, d.c.MaxWriteZeroesSectors
	}
	n := out.Len()
	if n == 0 || n%segSize != 0 || n/segSize > uint64(maxSeg) {
		return SIOErr, true
	}
	segs := make([]seg, n/segSize)
	var b [segSize]byte
	for i := range segs {
		out.ReadAt(b[:], uint64(i)*segSize)
		s := seg{binary.LittleEndian.Uint64(b[0:]), binary.LittleEndian.Uint32(b[8:]), binary.LittleEndian.Uint32(b[12:])}
		// Unknown flags, and UNMAP on a discard, are UNSUPP (spec 5.2.6.2).
		if s.flags&^flagUnmap != 0 || (typ == TDiscard && s.flags&flagUnmap != 0) {
			return SUnsupp, true
		}
		if s.num > maxSectors {
			return SIOErr, true
		}
		if _, ok := d.rangeOK(s.sector, uint64(s.num)*SectorSize); !ok {
			return SIOErr, true
		}
		segs[i] = s
	}
	for _, s := range segs {
		off, ln := int64(s.sector*SectorSize), int64(s.num)*SectorSize
		var op func() error
		if typ == TDiscard {
			op = func() error { return d.c.Backend.Discard(off, ln) }
		} else {
			unmap := s.flags&flagUnmap != 0 && d.c.WriteZeroesMayUnmap
			op = func() error { return d.c.Backend.WriteZeroes(off, ln, unmap) }
		}
		if st, ok := d.io(ctx, Request{typ, off, ln}, op); !ok || st != SOK {
			return st, ok
		}
	}
	return SOK, true
}

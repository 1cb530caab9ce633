// Package balloon owns the virtio memory balloon (virtio 1.2 section 5.5): the
// inflate and deflate queues (pages the driver hands back are dropped from the host
// process with madvise(MADV_DONTNEED) and advised back with MADV_WILLNEED on
// deflate, as QEMU does), the statistics queue (the driver's buffer is held and
// returned every polling interval, QEMU's guest-stats-polling-interval), free page
// reporting (VIRTIO_BALLOON_F_REPORTING: reported ranges are dropped too) and the
// num_pages/actual configuration behind QMP's balloon and query-balloon.
//
// Guest input is untrusted: a PFN outside guest RAM is ignored and logged (a bounded
// number of lines), and the work per request is bounded.
//
// It must not know the transport that carries it nor the monitor that drives it.
package balloon

import (
	"encoding/binary"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"gemu/hw/virtio"
)

// DeviceID is the virtio device type of the memory balloon.
const DeviceID = 5

// Feature bits (spec 5.5.3).
const (
	FMustTellHost = 0
	FStatsVQ      = 1
	FDeflateOnOOM = 2
	FFreePageHint = 3
	FPagePoison   = 4
	FReporting    = 5
)

// PageShift is the balloon's page size (VIRTIO_BALLOON_PFN_SHIFT): PFNs and
// num_pages/actual count 4 KiB pages whatever the guest's page size.
const PageShift = 12

const pageSize = 1 << PageShift

// Bounds on one request: Linux sends at most 256 PFNs per inflate/deflate buffer and
// at most 10 statistics; more is read up to these limits and the rest ignored.
const (
	maxPFNs     = 16384
	maxStats    = 64
	maxBadLines = 8 // bad PFNs logged per activation; the rest are only counted
)

// Statistic tags (spec 5.5.6.3), index into Stats.
const (
	StatSwapIn = iota
	StatSwapOut
	StatMajorFaults
	StatMinorFaults
	StatFreeMemory
	StatTotalMemory
	StatAvailableMemory
	StatDiskCaches
	StatHugetlbAllocations
	StatHugetlbFailures
	NumStats
)

// StatNames are QEMU's names for the statistics (qom-get guest-stats).
var StatNames = [NumStats]string{"stat-swap-in", "stat-swap-out", "stat-major-faults", "stat-minor-faults",
	"stat-free-memory", "stat-total-memory", "stat-available-memory", "stat-disk-caches",
	"stat-htlb-pgalloc", "stat-htlb-pgfail"}

// Config configures a Device.
type Config struct {
	// RAMSize is the guest's RAM in bytes (what query-balloon's actual counts from).
	RAMSize uint64
	// DeflateOnOOM and FreePageReporting are QEMU's deflate-on-oom and
	// free-page-reporting properties.
	DeflateOnOOM, FreePageReporting bool
	// PagePoison is QEMU's page-poison (on by default there): the driver may tell
	// the poison value its freed pages hold, and reported pages are then kept.
	PagePoison bool
	// StatsInterval is guest-stats-polling-interval (0: statistics are not polled).
	StatsInterval time.Duration
	// Logf receives one line per ignored guest request (bounded); nil: silent.
	Logf func(format string, args ...any)
}

// Stats is the driver's last statistics report; Valid[i] says whether it reported
// Value[i] (QEMU reports -1 for the others).
type Stats struct {
	Value      [NumStats]uint64
	Valid      [NumStats]bool
	LastUpdate time.Time // zero: none yet
}

// Counters are what the device did, for tests and logs.
type Counters struct {
	Inflated, Deflated uint64 // pages
	Reported           uint64 // bytes dropped through free page reporting
	BadPFNs            uint64 // PFNs outside guest RAM, ignored
}

// Device is a virtio-balloon device (virtio.Device).
type Device struct {
	cfg       Config
	queueMax  []uint16
	reportIdx int // index of the reporting queue, -1 when not offered

	mu       sync.Mutex
	numPages uint32 // target: pages the driver should give back
	actual   uint32 // pages the driver says it gave back
	poison   uint32
	irq      virtio.Interrupt
	onChange func(actual uint64)
	stats    Stats
	count    Counters
	interval time.Duration
	retune   chan struct{} // the polling interval changed
	stop     chan struct{}
	wg       sync.WaitGroup
	badLines int
}

// New returns a balloon device for a guest of cfg.RAMSize bytes.
func New(cfg Config) *Device {
	d := &Device{cfg: cfg, queueMax: []uint16{128, 128, 128}, reportIdx: -1, interval: cfg.StatsInterval,
		retune: make(chan struct{}, 1)}
	if cfg.FreePageReporting {
		d.reportIdx = len(d.queueMax)
		d.queueMax = append(d.queueMax, 32)
	}
	return d
}

func (d *Device) DeviceID() uint16 { return DeviceID }

// Features are QEMU 7.2's: the statistics queue always, deflate-on-oom, free page
// reporting and page poisoning when configured.
func (d *Device) Features() uint64 {
	f := uint64(1) << FStatsVQ
	if d.cfg.DeflateOnOOM {
		f |= 1 << FDeflateOnOOM
	}
	if d.cfg.FreePageReporting {
		f |= 1 << FReporting
	}
	if d.cfg.PagePoison {
		f |= 1 << FPagePoison
	}
	return f
}

// QueueMax is inflateq, deflateq, statsq and, with free page reporting, reporting_vq
// (the queues of features not offered do not exist, so reporting_vq is the fourth).
func (d *Device) QueueMax() []uint16 { return d.queueMax }

// config is the configuration space: num_pages, actual, free_page_hint_cmd_id,
// poison_val.
func (d *Device) configLocked() [16]byte {
	var c [16]byte
	binary.LittleEndian.PutUint32(c[0:], d.numPages)
	binary.LittleEndian.PutUint32(c[4:], d.actual)
	binary.LittleEndian.PutUint32(c[12:], d.poison)
	return c
}

func (d *Device) ReadConfig(off uint64, b []byte) {
	clear(b)
	d.mu.Lock()
	c := d.configLocked()
	d.mu.Unlock()
	if off < uint64(len(c)) {
		copy(b, c[off:])
	}
}

// WriteConfig takes the driver's actual (and poison_val); num_pages is the host's.
// A change of actual is reported to the OnChange callback (QMP's BALLOON_CHANGE).
func (d *Device) WriteConfig(off uint64, b []byte) {
	d.mu.Lock()
	c := d.configLocked()
	for i := range b {
		if o := off + uint64(i); o >= 4 && o < 8 || o >= 12 && o < 16 {
			c[o] = b[i]
		}
	}
	old := d.actual
	d.actual = binary.LittleEndian.Uint32(c[4:])
	d.poison = binary.LittleEndian.Uint32(c[12:])
	fn, now := d.onChange, d.actualBytesLocked()
	d.mu.Unlock()
	if d.actual != old && fn != nil {
		fn(now)
	}
}

func (d *Device) actualBytesLocked() uint64 {
	gone := uint64(d.actual) << PageShift
	if gone > d.cfg.RAMSize {
		return 0
	}
	return d.cfg.RAMSize - gone
}

// OnChange sets the function told the guest's new memory size (RAM less the ballooned
// pages) whenever the driver updates actual. It is called from a vCPU thread.
func (d *Device) OnChange(fn func(actual uint64)) {
	d.mu.Lock()
	d.onChange = fn
	d.mu.Unlock()
}

// SetTarget asks the driver to leave the guest target bytes (QMP balloon): the target
// is capped at the RAM size; 0 changes nothing, as QEMU's.
func (d *Device) SetTarget(target uint64) {
	if target > d.cfg.RAMSize {
		target = d.cfg.RAMSize
	}
	if target == 0 {
		return
	}
	d.mu.Lock()
	d.numPages = uint32((d.cfg.RAMSize - target) >> PageShift)
	irq := d.irq
	d.mu.Unlock()
	if irq != nil {
		irq.ConfigChanged()
	}
}

// Target is the requested guest size in bytes.
func (d *Device) Target() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg.RAMSize - uint64(d.numPages)<<PageShift
}

// Actual is the guest's memory less the pages it gave back, in bytes (query-balloon).
func (d *Device) Actual() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.actualBytesLocked()
}

// RAMSize is the guest RAM the balloon counts from.
func (d *Device) RAMSize() uint64 { return d.cfg.RAMSize }

// Stats returns the driver's last statistics.
func (d *Device) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// Counters returns what the device did so far.
func (d *Device) Counters() Counters {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.count
}

// StatsInterval is the statistics polling interval (0: off).
func (d *Device) StatsInterval() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.interval
}

// SetStatsInterval sets guest-stats-polling-interval (0 turns polling off).
func (d *Device) SetStatsInterval(iv time.Duration) {
	d.mu.Lock()
	d.interval = iv
	d.mu.Unlock()
	select {
	case d.retune <- struct{}{}:
	default:
	}
}

func (d *Device) logf(format string, args ...any) {
	if d.cfg.Logf != nil {
		d.cfg.Logf(format, args...)
	}
}

// Activate starts the worker serving every queue.
func (d *Device) Activate(a virtio.Activation) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.irq = a.Interrupt
	d.badLines = 0
	stop := make(chan struct{})
	d.stop = stop
	w := &worker{d: d, mem: a.Mem, stop: stop}
	qs := a.Queues
	get := func(i int) *virtio.Queue {
		if i >= 0 && i < len(qs) {
			return qs[i]
		}
		return nil
	}
	w.inflate, w.deflate, w.stats, w.report = get(0), get(1), get(2), get(d.reportIdx)
	if a.Features&(1<<FStatsVQ) == 0 {
		w.stats = nil
	}
	if a.Features&(1<<FReporting) == 0 {
		w.report = nil
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		w.run()
	}()
	return nil
}

// Reset stops the worker and waits for it; the target stays, actual restarts at 0
// (the guest's driver gives the pages again).
func (d *Device) Reset() {
	d.mu.Lock()
	stop := d.stop
	d.stop, d.irq = nil, nil
	d.mu.Unlock()
	if stop != nil {
		close(stop)
		d.wg.Wait()
	}
	d.mu.Lock()
	d.actual, d.poison = 0, 0
	d.mu.Unlock()
}

type worker struct {
	d                               *Device
	mem                             virtio.Memory
	stop                            chan struct{}
	inflate, deflate, stats, report *virtio.Queue
	held                            *virtio.Chain // the driver's statistics buffer
}

func kicked(q *virtio.Queue) <-chan struct{} {
	if q == nil {
		return nil
	}
	return q.Kicked()
}

func (w *worker) run() {
	var tick *time.Ticker
	var tickC <-chan time.Time
	retune := func() {
		if tick != nil {
			tick.Stop()
			tick, tickC = nil, nil
		}
		if iv := w.d.StatsInterval(); iv > 0 && w.stats != nil {
			tick = time.NewTicker(iv)
			tickC = tick.C
		}
	}
	retune()
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	for {
		w.drain(w.inflate, w.pages(true))
		w.drain(w.deflate, w.pages(false))
		w.drain(w.stats, w.takeStats)
		w.drain(w.report, w.reported)
		select {
		case <-w.stop:
			return
		case <-kicked(w.inflate):
		case <-kicked(w.deflate):
		case <-kicked(w.stats):
		case <-kicked(w.report):
		case <-w.d.retune:
			retune()
		case <-tickC:
			if w.held != nil {
				w.stats.Push(w.held, 0)
				w.stats.Signal()
				w.held = nil
			}
		}
	}
}

// drain handles every available chain of q (at most its size per call, so a driver
// refilling as fast as the device empties cannot keep the worker from stopping).
// handle returns whether the chain is to be returned now.
func (w *worker) drain(q *virtio.Queue, handle func(*virtio.Chain) bool) {
	if q == nil {
		return
	}
	pushed := false
	for i := 0; i < int(q.Size()); i++ {
		c, err := q.Pop()
		if err != nil || c == nil {
			break
		}
		if handle(c) {
			q.Push(c, 0)
			pushed = true
		}
		select {
		case <-w.stop:
			i = int(q.Size())
		default:
		}
	}
	if pushed {
		q.Signal()
	}
}

var hostPage = uint64(os.Getpagesize())

// pages handles one inflate (give) or deflate buffer: an array of little-endian
// 32-bit PFNs of 4 KiB pages.
func (w *worker) pages(give bool) func(*virtio.Chain) bool {
	return func(c *virtio.Chain) bool {
		n := min(c.Out.Len()/4, maxPFNs)
		buf := make([]byte, 4*n)
		c.Out.ReadAt(buf, 0)
		var done, bad uint64
		var runStart, runLen uint64 // coalesce consecutive PFNs into one madvise
		flush := func() {
			if runLen == 0 {
				return
			}
			done += w.advise(runStart<<PageShift, runLen<<PageShift, give)
			runLen = 0
		}
		for i := uint64(0); i < n; i++ {
			pfn := uint64(binary.LittleEndian.Uint32(buf[4*i:]))
			if _, ok := w.mem.Slice(pfn<<PageShift, pageSize); !ok {
				flush()
				bad++
				w.badPFN(pfn, give)
				continue
			}
			if runLen > 0 && pfn == runStart+runLen {
				if _, ok := w.mem.Slice(runStart<<PageShift, (runLen+1)<<PageShift); ok {
					runLen++
					continue
				}
			}
			flush()
			runStart, runLen = pfn, 1
		}
		flush()
		w.d.mu.Lock()
		if give {
			w.d.count.Inflated += done
		} else {
			w.d.count.Deflated += done
		}
		w.d.count.BadPFNs += bad
		w.d.mu.Unlock()
		return true
	}
}

func (w *worker) badPFN(pfn uint64, give bool) {
	w.d.mu.Lock()
	log := w.d.badLines < maxBadLines
	w.d.badLines++
	w.d.mu.Unlock()
	if log {
		op := "deflate"
		if give {
			op = "inflate"
		}
		w.d.logf("virtio-balloon: %s: PFN %#x (address %#x) is not guest RAM, ignored", op, pfn, pfn<<PageShift)
	}
}

// advise drops (give) or advises back the whole host pages inside [gpa, gpa+n), which
// lies in one RAM slot, and returns the number of 4 KiB balloon pages it covered.
func (w *worker) advise(gpa, n uint64, give bool) uint64 {
	start := (gpa + hostPage - 1) &^ (hostPage - 1)
	end := (gpa + n) &^ (hostPage - 1)
	if end <= start {
		return 0 // smaller than a host page: QEMU keeps such pages too
	}
	b, ok := w.mem.Slice(start, end-start)
	if !ok {
		return 0
	}
	if give {
		if err := unix.Madvise(b, unix.MADV_DONTNEED); err != nil {
			w.d.logf("virtio-balloon: madvise(DONTNEED) [%#x,+%#x): %v", start, end-start, err)
			return 0
		}
		// The pages now read as zero: translated code on them goes, and they are dirty
		// for migration.
		w.mem.Written(start, end-start)
	} else {
		unix.Madvise(b, unix.MADV_WILLNEED)
	}
	return n >> PageShift
}

// takeStats records the driver's statistics and holds the buffer until the next poll.
func (w *worker) takeStats(c *virtio.Chain) bool {
	n := min(c.Out.Len()/10, maxStats)
	buf := make([]byte, 10*n)
	c.Out.ReadAt(buf, 0)
	w.d.mu.Lock()
	for i := uint64(0); i < n; i++ {
		tag := binary.LittleEndian.Uint16(buf[10*i:])
		if tag < NumStats {
			w.d.stats.Value[tag] = binary.LittleEndian.Uint64(buf[10*i+2:])
			w.d.stats.Valid[tag] = true
		}
	}
	w.d.stats.LastUpdate = time.Now()
	w.d.mu.Unlock()
	if w.held != nil {
		// A driver following the spec has one buffer out; return the older one.
		w.stats.Push(w.held, 0)
		w.stats.Signal()
	}
	w.held = c
	return false
}

// reported drops the free pages of a reporting buffer (its device-writable ranges).
func (w *worker) reported(c *virtio.Chain) bool {
	var bytes uint64
	w.d.mu.Lock()
	poisoned := w.d.poison != 0
	w.d.mu.Unlock()
	if poisoned {
		return true // the guest expects its poison pattern back: keep the pages (QEMU's rule)
	}
	for _, s := range c.In {
		bytes += w.advise(s.GPA, uint64(len(s.B)), true) << PageShift
	}
	w.d.mu.Lock()
	w.d.count.Reported += bytes
	w.d.mu.Unlock()
	return true
}

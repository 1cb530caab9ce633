package qdev

import (
	"sync"
	"sync/atomic"

	"gemu/block/backend"
	"gemu/hw/virtio/blk"
)

// DriveStats are a drive's I/O counters (QMP query-blockstats), kept per drive for the
// life of the process, whichever device uses it.
type DriveStats struct {
	RdBytes, WrBytes, RdOps, WrOps, FlushOps       atomic.Uint64
	UnmapOps, UnmapBytes, WrHighest                atomic.Uint64
	FailedRd, FailedWr, FailedFlush, FailedDiscard atomic.Uint64
}

var driveStats sync.Map // *backend.Backend → *DriveStats

// Stats returns drive be's counters (zero until a device does I/O on it).
func Stats(be *backend.Backend) *DriveStats {
	v, _ := driveStats.LoadOrStore(be, &DriveStats{})
	return v.(*DriveStats)
}

// counted is a virtio-blk backend that counts what passes through it.
type counted struct {
	blk.Backend
	st *DriveStats
}

func countIO(be *backend.Backend) blk.Backend { return counted{be, Stats(be)} }

func (c counted) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.Backend.ReadAt(p, off)
	if err != nil {
		c.st.FailedRd.Add(1)
		return n, err
	}
	c.st.RdOps.Add(1)
	c.st.RdBytes.Add(uint64(n))
	return n, err
}

func (c counted) WriteAt(p []byte, off int64) (int, error) {
	n, err := c.Backend.WriteAt(p, off)
	if err != nil {
		c.st.FailedWr.Add(1)
		return n, err
	}
	c.st.WrOps.Add(1)
	c.st.WrBytes.Add(uint64(n))
	for end := uint64(off) + uint64(n); ; {
		old := c.st.WrHighest.Load()
		if end <= old || c.st.WrHighest.CompareAndSwap(old, end) {
			break
		}
	}
	return n, err
}

func (c counted) Flush() error {
	if err := c.Backend.Flush(); err != nil {
		c.st.FailedFlush.Add(1)
		return err
	}
	c.st.FlushOps.Add(1)
	return nil
}

func (c counted) Discard(off, n int64) error {
	if err := c.Backend.Discard(off, n); err != nil {
		c.st.FailedDiscard.Add(1)
		return err
	}
	c.st.UnmapOps.Add(1)
	c.st.UnmapBytes.Add(uint64(n))
	return nil
}

// DriveDevice is the id of the device using drive id ("" when none has an id).
func (e *Env) DriveDevice(drive string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, d := range e.hp.devices {
		if d.drive == drive {
			return id
		}
	}
	return ""
}

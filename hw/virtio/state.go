package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"gemu/hw/bus"
	"gemu/hw/vmstate"
)

// Saving and restoring a virtio device (snapshots, migration). A transport saves the
// core state here (feature windows, status, configuration generation, each queue's
// configuration and split-ring indices) with the device's own section nested in it;
// the device implements bus.Stateful for its part (a device that does not is refused
// by SaveState with a line naming it).
//
// Requests in flight are not written to the stream. Quiesce stops the queues first:
// Pop finds every ring empty, then the device's queues drain (every chain popped is
// pushed) except those a BufferHolder keeps buffers on in FIFO order (receive queues
// waiting for host input): those are saved rewound to their used index, so the
// destination pops the same buffers again. Push then waits until Thaw, so nothing
// touches the rings or guest memory while the machine's state is written.

// BufferHolder is implemented by a device that keeps popped chains on some queues
// until host input arrives and pushes them in the order it popped them (virtio-net's
// receive queues). Quiesce does not wait for those queues to drain.
type BufferHolder interface {
	HoldsBuffers(queue int) bool
}

// DrainTimeout bounds how long Quiesce waits for a device's requests in flight.
const DrainTimeout = 30 * time.Second

// transportState is the core's saved register state.
type transportState struct {
	DevFeatSel, DrvFeatSel uint32
	DriverFeatures         uint64
	QueueSel               uint32
	Status                 uint8
	ConfigGen              uint32
	Active                 bool
}

// queueState is one queue's saved configuration and, for a live queue, its ring
// position: the device resumes popping at UsedIdx (requests popped past it were
// drained or are rewound).
type queueState struct {
	Size                 uint16
	Ready                bool
	Desc, Driver, Device uint64
	UsedIdx              uint16
	Signalled            uint16
	SignalledValid       bool
	Broken               bool
}

// maxStateBlob bounds one nested blob of a saved transport.
const maxStateBlob = 1 << 24

// Quiesce stops the active device's queues for a state save (see the comment above)
// and waits, at most timeout, for the requests in flight to complete. The machine's
// vCPUs must be stopped. On error the queues run again. Thaw undoes it.
func (t *Transport) Quiesce(timeout time.Duration) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.thawLocked()
	p := t.live.Load()
	if p == nil {
		return nil
	}
	qs := *p
	t.frozen = qs
	for _, q := range qs {
		if q != nil {
			q.mu.Lock()
			q.popFrozen = true
			q.mu.Unlock()
		}
	}
	holder, _ := t.dev.(BufferHolder)
	deadline := time.Now().Add(timeout)
	for i, q := range qs {
		if q == nil || holder != nil && holder.HoldsBuffers(i) {
			continue
		}
		for {
			q.mu.Lock()
			n, broken := q.lastAvail-q.usedIdx, q.broken
			q.mu.Unlock()
			if n == 0 || broken {
				break
			}
			if time.Now().After(deadline) {
				t.thawLocked()
				return fmt.Errorf("virtio device type %d: queue %d still has %d requests in flight after %v",
					t.dev.DeviceID(), i, n, timeout)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for _, q := range qs {
		if q != nil {
			q.mu.Lock()
			q.pushFrozen = true
			q.mu.Unlock()
		}
	}
	return nil
}

// Thaw lets the queues Quiesce stopped run again.
func (t *Transport) Thaw() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.thawLocked()
}

func (t *Transport) thawLocked() {
	for _, q := range t.frozen {
		if q != nil {
			q.mu.Lock()
			q.popFrozen, q.pushFrozen = false, false
			q.thawed.Broadcast()
			q.mu.Unlock()
			q.notify() // a worker that found the ring empty looks again
		}
	}
	t.frozen = nil
}

func appendBlob(b, blob []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(blob)))
	return append(b, blob...)
}

func readBlob(b []byte) (blob, rest []byte, err error) {
	if len(b) < 4 {
		return nil, nil, errors.New("virtio state truncated")
	}
	n := binary.LittleEndian.Uint32(b)
	if n > maxStateBlob || uint64(len(b)-4) < uint64(n) {
		return nil, nil, errors.New("virtio state truncated")
	}
	return b[4 : 4+n], b[4+n:], nil
}

// SaveState encodes the core state and the device's section. An active device must
// be quiesced.
func (t *Transport) SaveState() ([]byte, error) {
	sd, ok := t.dev.(bus.Stateful)
	if !ok {
		return nil, fmt.Errorf("virtio device type %d does not support migration yet", t.dev.DeviceID())
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.active && t.frozen == nil {
		return nil, errors.New("virtio: the device must be quiesced to save its state")
	}
	ts := transportState{DevFeatSel: t.devFeatSel, DrvFeatSel: t.drvFeatSel, DriverFeatures: t.driverFeatures,
		QueueSel: t.queueSel, Status: uint8(t.status.Load()), ConfigGen: t.configGen.Load(), Active: t.active}
	blob, err := vmstate.EncodeFields(nil, &ts)
	if err != nil {
		return nil, err
	}
	b := appendBlob(nil, blob)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(t.queues)))
	var live []*Queue
	if p := t.live.Load(); p != nil {
		live = *p
	}
	for i, c := range t.queues {
		qs := queueState{Size: c.Size, Ready: c.Ready, Desc: c.Desc, Driver: c.Driver, Device: c.Device}
		if i < len(live) && live[i] != nil {
			q := live[i]
			q.mu.Lock()
			qs.UsedIdx, qs.Signalled, qs.SignalledValid, qs.Broken = q.usedIdx, q.signalled, q.signalledValid, q.broken
			q.mu.Unlock()
		}
		if blob, err = vmstate.EncodeFields(nil, &qs); err != nil {
			return nil, err
		}
		b = appendBlob(b, blob)
	}
	ds, err := sd.SaveState()
	if err != nil {
		return nil, err
	}
	b = appendBlob(b, []byte(ds.Name))
	b = binary.LittleEndian.AppendUint32(b, uint32(ds.Version))
	return appendBlob(b, ds.Data), nil
}

// LoadState replaces the transport's and the device's state with data SaveState
// wrote, for the same device: the device is reset, its section loaded and, if it was
// running, activated again on the saved queues at their saved ring positions.
func (t *Transport) LoadState(data []byte) error {
	sd, ok := t.dev.(bus.Stateful)
	if !ok {
		return fmt.Errorf("virtio device type %d does not support migration yet", t.dev.DeviceID())
	}
	blob, b, err := readBlob(data)
	if err != nil {
		return err
	}
	var ts transportState
	if err := vmstate.DecodeFields(blob, &ts); err != nil {
		return err
	}
	if len(b) < 4 {
		return errors.New("virtio state truncated")
	}
	nq := binary.LittleEndian.Uint32(b)
	b = b[4:]
	if nq != uint32(len(t.max)) {
		return fmt.Errorf("virtio device type %d: state has %d queues, the device has %d", t.dev.DeviceID(), nq, len(t.max))
	}
	qs := make([]queueState, nq)
	for i := range qs {
		if blob, b, err = readBlob(b); err != nil {
			return err
		}
		if err := vmstate.DecodeFields(blob, &qs[i]); err != nil {
			return fmt.Errorf("virtio queue %d: %v", i, err)
		}
		if qs[i].Size > t.max[i] {
			return fmt.Errorf("virtio queue %d: size %d above the device's %d", i, qs[i].Size, t.max[i])
		}
	}
	name, b, err := readBlob(b)
	if err != nil {
		return err
	}
	if len(b) < 4 {
		return errors.New("virtio state truncated")
	}
	ver := binary.LittleEndian.Uint32(b)
	dd, b, err := readBlob(b[4:])
	if err != nil {
		return err
	}
	if len(b) != 0 {
		return errors.New("virtio state has trailing bytes")
	}
	if ts.Active && (ts.Status&StatusDriverOK == 0 || ts.Status&StatusFeaturesOK == 0) {
		return errors.New("virtio state: a running device without DRIVER_OK and FEATURES_OK")
	}
	if !ts.Active && ts.Status&StatusDriverOK != 0 && ts.Status&StatusNeedsReset == 0 {
		return errors.New("virtio state: DRIVER_OK on a device that is not running")
	}
	t.Reset()
	if err := sd.LoadState(bus.State{Name: string(name), Version: int(ver), Data: dd}); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.devFeatSel, t.drvFeatSel, t.driverFeatures, t.queueSel = ts.DevFeatSel, ts.DrvFeatSel, ts.DriverFeatures, ts.QueueSel
	for i, q := range qs {
		t.queues[i] = QueueConfig{Size: q.Size, Ready: q.Ready, Desc: q.Desc, Driver: q.Driver, Device: q.Device}
	}
	t.status.Store(uint32(ts.Status))
	t.configGen.Store(ts.ConfigGen)
	if ts.Active {
		if ts.DriverFeatures&^t.DeviceFeatures() != 0 {
			return fmt.Errorf("virtio device type %d: saved features %#x include bits not offered", t.dev.DeviceID(), ts.DriverFeatures)
		}
		t.activateLocked(qs)
		if !t.active {
			return fmt.Errorf("virtio device type %d: cannot restart the device: %v", t.dev.DeviceID(), t.Err())
		}
	}
	return nil
}

package virtio

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Device status bits (spec 2.1).
const (
	StatusAcknowledge = 1
	StatusDriver      = 2
	StatusDriverOK    = 4
	StatusFeaturesOK  = 8
	StatusNeedsReset  = 64
	StatusFailed      = 128
)

// Reserved feature bits (spec 6) the core knows.
const (
	FIndirectDesc   = 28
	FEventIdx       = 29
	FVersion1       = 32
	FAccessPlatform = 33
	FRingPacked     = 34
)

// CoreFeatures are the feature bits the core offers on behalf of every device.
const CoreFeatures = 1<<FVersion1 | 1<<FIndirectDesc | 1<<FEventIdx

// Device IDs (spec 5).
const (
	IDNet     = 1
	IDBlock   = 2
	IDConsole = 3
	IDEntropy = 4
)

// Device is a virtio device model, independent of the transport that carries it.
type Device interface {
	// DeviceID is the virtio device type (2 block, 3 console, 4 entropy).
	DeviceID() uint16
	// Features are the device-type feature bits the device offers; the core adds
	// CoreFeatures.
	Features() uint64
	// QueueMax gives each queue's maximum size; its length is the number of queues.
	QueueMax() []uint16
	// ReadConfig and WriteConfig access the device-specific configuration space.
	// Bytes past its end read as zero and ignore writes. Called from vCPU threads.
	ReadConfig(off uint64, data []byte)
	WriteConfig(off uint64, data []byte)
	// Activate starts the device when the driver sets DRIVER_OK.
	Activate(a Activation) error
	// Reset stops the device's workers and forgets its queues; it returns only when no
	// worker touches guest memory any more. It may be called when not active.
	Reset()
}

// FeatureChecker is optionally implemented by a Device that refuses some feature
// combinations at FEATURES_OK.
type FeatureChecker interface {
	CheckFeatures(features uint64) error
}

// Interrupt is how a device notifies the driver; the transport implements it (MMIO:
// InterruptStatus and its SPI; PCI: an MSI-X vector, or INTx and the ISR).
type Interrupt interface {
	Used(queue int) // used-buffer notification for queue
	ConfigChanged() // configuration change notification
}

// Activation is what a device gets at DRIVER_OK.
type Activation struct {
	Features  uint64   // negotiated feature bits (core and device-type)
	Mem       Memory   // guest memory
	Queues    []*Queue // one per QueueMax entry; nil for a queue the driver did not enable
	Interrupt Interrupt
}

// Transport is the transport-independent register state of one virtio device: the
// feature select windows, device status, queue select and each queue's configuration.
// A transport (MMIO, PCI) maps its registers onto these methods and supplies the
// Interrupt. Methods are safe for concurrent use by vCPUs; device workers never take
// the lock a vCPU holds while it resets the device.
type Transport struct {
	dev Device
	mem Memory
	irq Interrupt
	max []uint16

	// Logf, if set, receives device errors (the reason for DEVICE_NEEDS_RESET).
	Logf func(format string, args ...any)

	mu             sync.Mutex
	devFeatSel     uint32
	drvFeatSel     uint32
	driverFeatures uint64
	queueSel       uint32
	queues         []QueueConfig
	active         bool
	frozen         []*Queue // the queues Quiesce stopped

	status    atomic.Uint32
	configGen atomic.Uint32
	live      atomic.Pointer[[]*Queue] // queues of the active device, for Notify

	errMu sync.Mutex
	err   error
}

// NewTransport returns the transport state for dev over guest memory mem; irq is the
// transport's interrupt.
func NewTransport(dev Device, mem Memory, irq Interrupt) *Transport {
	max := dev.QueueMax()
	return &Transport{dev: dev, mem: mem, irq: irq, max: max, queues: make([]QueueConfig, len(max))}
}

// Device returns the device model.
func (t *Transport) Device() Device { return t.dev }

// DeviceFeatures is every feature bit offered.
func (t *Transport) DeviceFeatures() uint64 { return t.dev.Features() | CoreFeatures }

// SetDeviceFeatureSel selects the 32-bit window DeviceFeatureWindow reads.
func (t *Transport) SetDeviceFeatureSel(sel uint32) {
	t.mu.Lock()
	t.devFeatSel = sel
	t.mu.Unlock()
}

// DeviceFeatureWindow reads the selected 32 bits of the offered features.
func (t *Transport) DeviceFeatureWindow() uint32 {
	t.mu.Lock()
	sel := t.devFeatSel
	t.mu.Unlock()
	if sel > 1 {
		return 0
	}
	return uint32(t.DeviceFeatures() >> (32 * sel))
}

// SetDriverFeatureSel selects the 32-bit window of the driver's features.
func (t *Transport) SetDriverFeatureSel(sel uint32) {
	t.mu.Lock()
	t.drvFeatSel = sel
	t.mu.Unlock()
}

// DriverFeatureWindow reads back the selected 32 bits of the driver's features.
func (t *Transport) DriverFeatureWindow() uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.drvFeatSel > 1 {
		return 0
	}
	return uint32(t.driverFeatures >> (32 * t.drvFeatSel))
}

// SetDriverFeatureWindow writes the selected 32 bits of the driver's features; ignored
// once FEATURES_OK is set.
func (t *Transport) SetDriverFeatureWindow(v uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.drvFeatSel > 1 || t.status.Load()&StatusFeaturesOK != 0 {
		return
	}
	sh := 32 * t.drvFeatSel
	t.driverFeatures = t.driverFeatures&^(0xffffffff<<sh) | uint64(v)<<sh
}

// DriverFeatures is the feature set the driver wrote.
func (t *Transport) DriverFeatures() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.driverFeatures
}

// NumQueues is the device's number of queues.
func (t *Transport) NumQueues() int { return len(t.max) }

// SetQueueSel selects the queue the Queue* methods address.
func (t *Transport) SetQueueSel(sel uint32) {
	t.mu.Lock()
	t.queueSel = sel
	t.mu.Unlock()
}

// QueueSel is the selected queue.
func (t *Transport) QueueSel() uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.queueSel
}

// QueueMax is the selected queue's maximum size; 0 when it does not exist.
func (t *Transport) QueueMax() uint16 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if int64(t.queueSel) >= int64(len(t.max)) {
		return 0
	}
	return t.max[t.queueSel]
}

// Queue returns the selected queue's configuration (zero when it does not exist).
func (t *Transport) Queue() QueueConfig {
	t.mu.Lock()
	defer t.mu.Unlock()
	if int64(t.queueSel) >= int64(len(t.queues)) {
		return QueueConfig{}
	}
	return t.queues[t.queueSel]
}

// UpdateQueue changes the selected queue's configuration with f. Size and addresses do
// not change while the queue is ready or the device is live (DRIVER_OK), nor does a
// queue become ready or unready then (the core has no per-queue reset).
func (t *Transport) UpdateQueue(f func(*QueueConfig)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if int64(t.queueSel) >= int64(len(t.queues)) || t.active {
		return
	}
	q := &t.queues[t.queueSel]
	c := *q
	f(&c)
	if q.Ready && c.Ready {
		return // no changes under a ready queue
	}
	*q = c
}

// Status is the device status byte.
func (t *Transport) Status() uint8 { return uint8(t.status.Load()) }

// ConfigGeneration is the configuration generation counter.
func (t *Transport) ConfigGeneration() uint32 { return t.configGen.Load() }

// ReadConfig and WriteConfig access the device-specific configuration.
func (t *Transport) ReadConfig(off uint64, data []byte)  { t.dev.ReadConfig(off, data) }
func (t *Transport) WriteConfig(off uint64, data []byte) { t.dev.WriteConfig(off, data) }

// Active reports whether the device runs (DRIVER_OK accepted).
func (t *Transport) Active() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.active
}

// Err is the last device error (why DEVICE_NEEDS_RESET is set), or nil.
func (t *Transport) Err() error {
	t.errMu.Lock()
	defer t.errMu.Unlock()
	return t.err
}

// SetStatus is the driver writing the status byte: 0 resets the device; FEATURES_OK is
// kept only if the driver's features are acceptable (a subset of those offered,
// including VERSION_1); DRIVER_OK activates the device.
func (t *Transport) SetStatus(v uint8) {
	if v == 0 {
		t.Reset()
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := uint8(t.status.Load())
	nv := v&^StatusNeedsReset | cur&StatusNeedsReset
	if nv&StatusFeaturesOK != 0 && cur&StatusFeaturesOK == 0 {
		if err := t.checkFeaturesLocked(); err != nil {
			nv &^= StatusFeaturesOK
			t.logf("virtio: FEATURES_OK refused: %v", err)
		}
	}
	t.storeStatus(nv)
	if nv&StatusDriverOK != 0 && !t.active && nv&StatusNeedsReset == 0 {
		if nv&StatusFeaturesOK == 0 {
			t.deviceError(errors.New("virtio: DRIVER_OK without FEATURES_OK"))
			return
		}
		t.activateLocked(nil)
	}
}

// storeStatus sets the status byte, keeping a DEVICE_NEEDS_RESET a worker may set
// concurrently.
func (t *Transport) storeStatus(v uint8) {
	for {
		old := t.status.Load()
		n := uint32(v) | old&StatusNeedsReset
		if t.status.CompareAndSwap(old, n) {
			return
		}
	}
}

func (t *Transport) checkFeaturesLocked() error {
	f := t.driverFeatures
	if extra := f &^ t.DeviceFeatures(); extra != 0 {
		return fmt.Errorf("driver features %#x include bits %#x not offered", f, extra)
	}
	if f&(1<<FVersion1) == 0 {
		return errors.New("driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)")
	}
	if fc, ok := t.dev.(FeatureChecker); ok {
		return fc.CheckFeatures(f)
	}
	return nil
}

func (t *Transport) activateLocked(resume []queueState) {
	qs := make([]*Queue, len(t.queues))
	for i, c := range t.queues {
		if !c.Ready {
			continue
		}
		q, err := newQueue(i, c, t.max[i], t.driverFeatures, t.mem, t.irq, t.deviceError)
		if err != nil {
			t.deviceError(err)
			return
		}
		if resume != nil {
			r := resume[i]
			q.lastAvail, q.usedIdx = r.UsedIdx, r.UsedIdx
			q.signalled, q.signalledValid, q.broken = r.Signalled, r.SignalledValid, r.Broken
		}
		qs[i] = q
	}
	if err := t.dev.Activate(Activation{Features: t.driverFeatures, Mem: t.mem, Queues: qs, Interrupt: devIRQ{t}}); err != nil {
		t.deviceError(fmt.Errorf("virtio: device %d: activate: %w", t.dev.DeviceID(), err))
		t.dev.Reset()
		return
	}
	t.active = true
	t.live.Store(&qs)
}

// deviceError sets DEVICE_NEEDS_RESET and, if the driver is running, sends a
// configuration change notification (spec 2.1.2). It takes no lock a vCPU holds while
// resetting the device, so workers may call it.
func (t *Transport) deviceError(err error) {
	t.errMu.Lock()
	t.err = err
	t.errMu.Unlock()
	t.logf("%v", err)
	for {
		old := t.status.Load()
		if old&StatusNeedsReset != 0 {
			return
		}
		if t.status.CompareAndSwap(old, old|StatusNeedsReset) {
			if old&StatusDriverOK != 0 {
				t.configGen.Add(1)
				t.irq.ConfigChanged()
			}
			return
		}
	}
}

func (t *Transport) logf(format string, args ...any) {
	if t.Logf != nil {
		t.Logf(format, args...)
	}
}

// Notify is a driver notification for queue i: it wakes the device's worker for that
// queue and never blocks.
func (t *Transport) Notify(i uint32) {
	p := t.live.Load()
	if p == nil || int64(i) >= int64(len(*p)) {
		return
	}
	if q := (*p)[i]; q != nil {
		q.notify()
	}
}

// NotifyAll wakes every queue's worker: a doorbell that cannot tell queues apart (an
// accelerator's IOEventFD on virtio-mmio's shared QueueNotify register, which has no
// data match) calls it. Workers that find nothing new simply wait again.
func (t *Transport) NotifyAll() {
	p := t.live.Load()
	if p == nil {
		return
	}
	for _, q := range *p {
		if q != nil {
			q.notify()
		}
	}
}

// Reset returns the device and the transport state to their reset values (the driver
// writing 0 to status, or a machine reset). The transport's own state (its interrupt
// status) is the caller's to clear, after Reset returns.
func (t *Transport) Reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.thawLocked() // a worker waiting in Push must be able to stop
	t.live.Store(nil)
	t.dev.Reset()
	t.active = false
	t.devFeatSel, t.drvFeatSel, t.driverFeatures, t.queueSel = 0, 0, 0, 0
	clear(t.queues)
	t.status.Store(0)
	t.errMu.Lock()
	t.err = nil
	t.errMu.Unlock()
}

// devIRQ is the Interrupt a device gets: configuration changes bump the generation.
type devIRQ struct{ t *Transport }

func (d devIRQ) Used(q int) { d.t.irq.Used(q) }
func (d devIRQ) ConfigChanged() {
	d.t.configGen.Add(1)
	d.t.irq.ConfigChanged()
}

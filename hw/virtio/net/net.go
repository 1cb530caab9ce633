// Package net owns the virtio-net device model (virtio 1.2 section 5.1): the
// configuration space (MAC, link status, queue pairs, MTU), feature negotiation
// against what the host backend can carry, the transmit path (virtio_net_hdr_v1
// checked; partial checksums finished and TSO frames segmented by the device when
// the backend cannot take them whole), the receive path (one or several rx chains
// per frame with MRG_RXBUF, the receive filter: promiscuous, all-multicast, MAC
// tables) and the control queue (CTRL_RX, CTRL_MAC, CTRL_ANNOUNCE, CTRL_MQ).
//
// A backend that can carry the virtio-net header (VnetHdrEnabler: hw/netdev's user
// and tap) gets it switched on at DRIVER_OK: the guest's offload requests then pass
// through to the backend (no segmentation or checksum work here), GUEST_TSO4/6 are
// offered, and the backend's headers reach the guest after being checked against
// what the driver negotiated. Other backends get plain frames: partial checksums
// finished when the backend needs them complete, TSO frames cut into MSS segments.
//
// Transmit runs on one worker goroutine per tx queue, woken by the driver's kick.
// Receive runs on the backend's delivery goroutine: its callback copies one frame
// into rx buffers, or returns false when the driver has not posted enough, and the
// device calls Backend.RxReady when the driver kicks the rx queue. Nothing runs on a
// vCPU thread but configuration-space accesses.
//
// Every guest value is checked: a chain framed wrongly (no header, writable buffers
// on tx, a control command without its header or ack byte) breaks the queue
// (DEVICE_NEEDS_RESET), as QEMU's virtio_error does; a frame whose header is
// inconsistent with its contents (GSO without the feature, gso_size 0, a checksum
// offset outside the frame, a TSO frame that is not TCP) is dropped, as a NIC drops a
// bad descriptor. Buffers are sized once per worker (the largest frame is 64 KiB plus
// headers); no guest value sizes an allocation.
//
// It must not know the transport (MMIO or PCI) nor any host network backend: it sees
// only the Backend interface (hw/netdev's backends satisfy it) and the Offloads the
// caller copies from the backend.
package net

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"gemu/hw/virtio"
)

// Backend is the host side of the NIC: hw/netdev.Backend satisfies it.
type Backend interface {
	// Send hands one frame to the host; the backend does not keep frame.
	Send(frame []byte) error
	// SetReceiver registers the function host frames are delivered to; it returns
	// false when the NIC has no room (the backend holds the frame until RxReady).
	SetReceiver(func(frame []byte) bool)
	// RxReady tells the backend the NIC has room again.
	RxReady()
}

// Offloads is what the backend accepts beyond plain, fully checksummed frames of at
// most 1514 bytes (hw/netdev.Offloads, copied by the caller).
type Offloads struct {
	// NoChecksum: the backend does not verify TCP/UDP checksums, so partial checksums
	// (NEEDS_CSUM) and TSO frames may pass unfinished.
	NoChecksum bool
	// MaxFrame is the largest frame Send takes whole. A TSO frame passes whole only
	// when it fits and NoChecksum is set (a host stack that segments itself);
	// otherwise the device segments it.
	MaxFrame int
	// VnetHdr: frames both ways start with a 12-byte virtio_net_hdr_v1; the device
	// then passes the guest's offload requests through instead of doing them.
	VnetHdr bool
}

// VnetHdrEnabler is optionally implemented by a backend that can carry a
// virtio_net_hdr_v1 before every frame both ways (hw/netdev.VnetHdrBackend: user,
// tap with vnet_hdr=on). The device enables it at DRIVER_OK; guestTSO says the
// driver took GUEST_CSUM, GUEST_TSO4 and GUEST_TSO6, so frames to it may be partial
// or GSO. Such a backend makes the device offer GUEST_TSO4/6.
type VnetHdrEnabler interface {
	EnableVnetHdr(guestTSO bool) error
}

// Feature bits (spec 5.1.3).
const (
	FCsum          = 0
	FGuestCsum     = 1
	FMTU           = 3
	FMAC           = 5
	FGuestTSO4     = 7
	FGuestTSO6     = 8
	FGuestECN      = 9
	FGuestUFO      = 10
	FHostTSO4      = 11
	FHostTSO6      = 12
	FHostECN       = 13
	FHostUFO       = 14
	FMrgRxbuf      = 15
	FStatus        = 16
	FCtrlVQ        = 17
	FCtrlRx        = 18
	FCtrlVLAN      = 19
	FGuestAnnounce = 21
	FMQ            = 22
	FCtrlMACAddr   = 23
)

// Status bits in the configuration space.
const (
	StatusLinkUp   = 1
	StatusAnnounce = 2
)

// virtio_net_hdr_v1 (spec 5.1.6).
const (
	HdrLen = 12 // flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers

	HdrFNeedsCsum = 1
	HdrFDataValid = 2

	GSONone  = 0
	GSOTCPv4 = 1
	GSOUDP   = 3
	GSOTCPv6 = 4
	GSOECN   = 0x80
)

// Limits.
const (
	// MaxPacket is the largest IP packet a GSO frame may describe; a frame is at most
	// that plus an Ethernet header and one VLAN tag.
	MaxPacket = 65535
	maxFrame  = MaxPacket + 14 + 4
	// MACTableEntries is the size of the CTRL_MAC filter tables (QEMU's).
	MACTableEntries = 64
	// MaxQueuePairs bounds mq.
	MaxQueuePairs = 64
	configSize    = 12 // mac, status, max_virtqueue_pairs, mtu
)

// Config configures a virtio-net device. Zero values take the defaults noted.
type Config struct {
	Backend  Backend
	Offloads Offloads // what Backend takes; zero: plain 1514-byte frames
	// OffloadsNow, if set, reads the backend's offloads as they are now (a backend
	// whose vnet header stays on once enabled, across a driver reset); else Offloads.
	OffloadsNow func() Offloads
	MAC         [6]byte
	// MTU, if non-zero, is offered to the driver (VIRTIO_NET_F_MTU, host_mtu=).
	MTU uint16
	// QueuePairs is the number of rx/tx queue pairs; default 1, more offers MQ.
	QueuePairs int
	// QueueSize is each queue's maximum size (a power of two); default 256.
	QueueSize uint16
	// Disable clears offered feature bits (QEMU's csum=off, mrg_rxbuf=off, …); the
	// features that depend on a cleared one are cleared too.
	Disable uint64
	// Logf, if set, receives one-line notes on dropped frames (rate is the caller's).
	Logf func(format string, args ...any)
}

// Device is a virtio-net device (virtio.Device).
type Device struct {
	c        Config
	features uint64

	mu      sync.Mutex // activation
	running bool
	stop    chan struct{}
	wg      sync.WaitGroup
	irq     virtio.Interrupt

	status atomic.Uint32 // configuration-space status
	link   atomic.Bool

	// rx is the receive state, used from the backend's delivery goroutine.
	rxMu sync.Mutex
	rx   *rxState

	filt filter // receive filter (CTRL_RX, CTRL_MAC); guarded by rxMu
	// restored is the filter LoadState set, kept by the next Activate; guarded by rxMu
	restored *filter

	// Counters (tests, diagnostics).
	TxFrames, TxDropped, RxFrames, RxDropped atomic.Uint64
}

// New checks c and returns the device; it registers the device's receiver with the
// backend.
func New(c Config) (*Device, error) {
	if c.Backend == nil {
		return nil, errors.New("virtio-net: no netdev")
	}
	if c.QueuePairs == 0 {
		c.QueuePairs = 1
	}
	if c.QueuePairs < 1 || c.QueuePairs > MaxQueuePairs {
		return nil, fmt.Errorf("virtio-net: %d queue pairs out of range 1..%d", c.QueuePairs, MaxQueuePairs)
	}
	if c.QueueSize == 0 {
		c.QueueSize = 256
	}
	if c.QueueSize < 2 || c.QueueSize&(c.QueueSize-1) != 0 || c.QueueSize > 1024 {
		return nil, fmt.Errorf("virtio-net: queue size %d is not a power of two in 2..1024", c.QueueSize)
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > MaxPacket) {
		return nil, fmt.Errorf("virtio-net: host_mtu %d out of range 68..%d", c.MTU, MaxPacket)
	}
	if c.MAC[0]&1 != 0 {
		return nil, fmt.Errorf("virtio-net: MAC %s is a multicast address", MACString(c.MAC))
	}
	if c.Offloads.MaxFrame < 1514 {
		c.Offloads.MaxFrame = 1514
	}
	d := &Device{c: c}
	f := uint64(1<<FCsum | 1<<FGuestCsum | 1<<FMAC | 1<<FHostTSO4 | 1<<FHostTSO6 | 1<<FHostECN |
		1<<FMrgRxbuf | 1<<FStatus | 1<<FCtrlVQ | 1<<FCtrlRx | 1<<FCtrlMACAddr | 1<<FGuestAnnounce)
	if _, ok := c.Backend.(VnetHdrEnabler); ok || c.Offloads.VnetHdr {
		f |= 1<<FGuestTSO4 | 1<<FGuestTSO6
	}
	if c.MTU != 0 {
		f |= 1 << FMTU
	}
	if c.QueuePairs > 1 {
		f |= 1 << FMQ
	}
	d.features = withDeps(f &^ c.Disable)
	d.link.Store(true)
	d.status.Store(StatusLinkUp)
	d.filt.reset(d.c.MAC)
	c.Backend.SetReceiver(d.receive)
	return d, nil
}

// withDeps clears the features whose dependencies (spec 5.1.3.1) are not offered.
func withDeps(f uint64) uint64 {
	has := func(b uint) bool { return f&(1<<b) != 0 }
	if !has(FCsum) {
		f &^= 1<<FHostTSO4 | 1<<FHostTSO6 | 1<<FHostUFO
	}
	if !has(FGuestCsum) {
		f &^= 1<<FGuestTSO4 | 1<<FGuestTSO6 | 1<<FGuestUFO
	}
	if !has(FHostTSO4) && !has(FHostTSO6) {
		f &^= 1 << FHostECN
	}
	if !has(FGuestTSO4) && !has(FGuestTSO6) {
		f &^= 1 << FGuestECN
	}
	if !has(FCtrlVQ) {
		f &^= 1<<FCtrlRx | 1<<FCtrlVLAN | 1<<FGuestAnnounce | 1<<FMQ | 1<<FCtrlMACAddr
	}
	return f
}

// MACString formats a MAC address as QEMU prints it.
func MACString(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// DeviceID implements virtio.Device.
func (d *Device) DeviceID() uint16 { return virtio.IDNet }

// Features implements virtio.Device.
func (d *Device) Features() uint64 { return d.features }

// QueueMax implements virtio.Device: rx0, tx0, rx1, tx1, …, then the control queue.
func (d *Device) QueueMax() []uint16 {
	m := make([]uint16, 2*d.c.QueuePairs+1)
	for i := range m {
		m[i] = d.c.QueueSize
	}
	m[len(m)-1] = 64
	return m
}

// CheckFeatures implements virtio.FeatureChecker: the dependencies of spec 5.1.3.1.
func (d *Device) CheckFeatures(f uint64) error {
	has := func(b uint) bool { return f&(1<<b) != 0 }
	switch {
	case (has(FGuestTSO4) || has(FGuestTSO6) || has(FGuestUFO)) && !has(FGuestCsum):
		return errors.New("virtio-net: GUEST_TSO/UFO without GUEST_CSUM")
	case (has(FHostTSO4) || has(FHostTSO6) || has(FHostUFO)) && !has(FCsum):
		return errors.New("virtio-net: HOST_TSO/UFO without CSUM")
	case has(FGuestECN) && !has(FGuestTSO4) && !has(FGuestTSO6):
		return errors.New("virtio-net: GUEST_ECN without GUEST_TSO")
	case has(FHostECN) && !has(FHostTSO4) && !has(FHostTSO6):
		return errors.New("virtio-net: HOST_ECN without HOST_TSO")
	case (has(FCtrlRx) || has(FCtrlVLAN) || has(FGuestAnnounce) || has(FMQ) || has(FCtrlMACAddr)) && !has(FCtrlVQ):
		return errors.New("virtio-net: control features without CTRL_VQ")
	}
	return nil
}

func (d *Device) config() [configSize]byte {
	var b [configSize]byte
	copy(b[:6], d.c.MAC[:])
	binary.LittleEndian.PutUint16(b[6:], uint16(d.status.Load()))
	binary.LittleEndian.PutUint16(b[8:], uint16(d.c.QueuePairs))
	binary.LittleEndian.PutUint16(b[10:], d.c.MTU)
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

// WriteConfig implements virtio.Device: a modern driver writes nothing (the MAC is set
// through CTRL_MAC_ADDR_SET).
func (d *Device) WriteConfig(uint64, []byte) {}

// MAC returns the address the driver set last (CTRL_MAC_ADDR_SET), or the configured one.
func (d *Device) MAC() [6]byte {
	d.rxMu.Lock()
	defer d.rxMu.Unlock()
	return d.filt.mac
}

// SetLink sets the link up or down (QEMU's set_link) and notifies the driver.
func (d *Device) SetLink(up bool) {
	if d.link.Swap(up) == up {
		return
	}
	for {
		old := d.status.Load()
		n := old &^ StatusLinkUp
		if up {
			n |= StatusLinkUp
		}
		if d.status.CompareAndSwap(old, n) {
			break
		}
	}
	d.configChanged()
}

// Announce asks the driver to announce its addresses (gratuitous ARP, after a
// migration), if it negotiated GUEST_ANNOUNCE; CTRL_ANNOUNCE_ACK clears the request.
func (d *Device) Announce() bool {
	d.mu.Lock()
	ok := d.running && d.rxFeatures()&(1<<FGuestAnnounce) != 0
	d.mu.Unlock()
	if !ok {
		return false
	}
	d.setStatus(StatusAnnounce, true)
	d.configChanged()
	return true
}

func (d *Device) setStatus(bit uint32, on bool) {
	for {
		old := d.status.Load()
		n := old &^ bit
		if on {
			n |= bit
		}
		if d.status.CompareAndSwap(old, n) {
			return
		}
	}
}

func (d *Device) configChanged() {
	d.mu.Lock()
	irq := d.irq
	d.mu.Unlock()
	if irq != nil {
		irq.ConfigChanged()
	}
}

func (d *Device) rxFeatures() uint64 {
	d.rxMu.Lock()
	defer d.rxMu.Unlock()
	if d.rx == nil {
		return 0
	}
	return d.rx.features
}

func (d *Device) logf(format string, args ...any) {
	if d.c.Logf != nil {
		d.c.Logf(format, args...)
	}
}

// Activate implements virtio.Device: it starts a worker per tx queue, the rx kick
// watcher and the control queue worker.
func (d *Device) Activate(a virtio.Activation) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.running {
		return errors.New("virtio-net: already active")
	}
	stop := make(chan struct{})
	d.stop, d.irq, d.running = stop, a.Interrupt, true
	n := d.c.QueuePairs
	vnet := d.enableVnet(a.Features)
	rx := &rxState{features: a.Features, q: a.Queues[0], mergeable: a.Features&(1<<FMrgRxbuf) != 0, vnet: vnet}
	d.rxMu.Lock()
	d.rx = rx
	if d.restored != nil {
		d.filt, d.restored = *d.restored, nil
	} else {
		d.filt.reset(d.c.MAC)
	}
	d.rxMu.Unlock()
	if a.Features&(1<<FStatus) == 0 {
		// Without STATUS the link is always up to the driver.
		d.setStatus(StatusLinkUp, true)
	}
	for i := 0; i < n; i++ {
		if q := a.Queues[2*i+1]; q != nil {
			t := newTxWorker(d, q, a.Features, vnet)
			d.wg.Add(1)
			go t.run(stop)
		}
	}
	if q := a.Queues[0]; q != nil {
		d.wg.Add(1)
		go d.watchRx(q, stop)
	}
	if q := a.Queues[2*n]; q != nil && a.Features&(1<<FCtrlVQ) != 0 {
		d.wg.Add(1)
		go d.ctrl(q, a.Features, stop)
	}
	d.c.Backend.RxReady()
	return nil
}

// Reset implements virtio.Device: the workers stop and no frame is copied into guest
// memory once it returns.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.running {
		return
	}
	close(d.stop)
	d.wg.Wait()
	d.rxMu.Lock()
	d.restored = nil
	d.rx = nil
	d.filt.reset(d.c.MAC)
	d.rxMu.Unlock()
	d.setStatus(StatusAnnounce, false)
	d.running, d.irq, d.stop = false, nil, nil
}

// offloads is what the backend takes now.
func (d *Device) offloads() Offloads {
	if d.c.OffloadsNow != nil {
		o := d.c.OffloadsNow()
		o.MaxFrame = max(o.MaxFrame, 1514)
		return o
	}
	return d.c.Offloads
}

// enableVnet turns the backend's vnet header on for the negotiated features and
// reports whether frames carry one. A backend that keeps it on from an earlier
// activation (and refuses a second enable) still carries it.
func (d *Device) enableVnet(features uint64) bool {
	e, ok := d.c.Backend.(VnetHdrEnabler)
	if !ok {
		return d.offloads().VnetHdr
	}
	tso := features&(1<<FGuestCsum|1<<FGuestTSO4|1<<FGuestTSO6) == 1<<FGuestCsum|1<<FGuestTSO4|1<<FGuestTSO6
	if err := e.EnableVnetHdr(tso); err != nil {
		d.logf("virtio-net: %v", err)
	}
	return d.offloads().VnetHdr
}

// watchRx turns the driver's rx kicks into Backend.RxReady, so a backend holding a
// refused frame retries at once.
func (d *Device) watchRx(q *virtio.Queue, stop <-chan struct{}) {
	defer d.wg.Done()
	for {
		select {
		case <-q.Kicked():
			d.c.Backend.RxReady()
		case <-stop:
			return
		}
	}
}

// Package netdev owns the host ends of emulated network cards, QEMU's -netdev
// backends, behind one Backend interface a NIC model (virtio-net, e1000, …) uses:
// it sends guest frames with Send and receives host frames through the function it
// registers with SetReceiver (held, bounded, when the NIC has no room).
//
//   - user: QEMU's slirp on gVisor's netstack (gvisor.dev/gvisor) with a thin slirp
//     layer of ours: network 10.0.2.0/24 (net=), gateway and host 10.0.2.2 (host=,
//     the host's 127.0.0.1 as in QEMU), DNS 10.0.2.3 (dns=) forwarding UDP and TCP
//     queries to the host's resolver from /etc/resolv.conf, a DHCP server handing
//     out 10.0.2.15 onward (dhcpstart=, hostname=, domainname=), TCP and UDP NAT to
//     host sockets through the netstack's forwarders, ICMP echo answered by the
//     gateway and sent to other hosts through unprivileged ICMP sockets when the host
//     allows them, hostfwd=tcp|udp:[hostaddr]:hostport-[guestaddr]:guestport
//     (several as hostfwd.N.str), restrict=on. Connections, flows and queues are
//     bounded. IPv4 only: ipv6= is accepted and not served.
//   - socket, stream: frames over TCP or Unix streams with QEMU's 4-byte big-endian
//     length framing (listen=/connect=/fd=; addr.type=inet|unix|fd with server=
//     and reconnect=), so gemu and QEMU guests share a wire; socket,udp= and dgram
//     send one frame per datagram.
//   - tap: /dev/net/tun with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR (ifname=, fd=,
//     vnet_hdr=, script=no and downscript=no only, vhost=off only).
//
// Optional capabilities by type assertion: Offloader (what Send accepts beyond plain
// frames) and VnetHdrBackend (user and tap: a virtio_net_hdr_v1 before every frame,
// so a virtio-net NIC passes TSO and partial checksums through both ways).
//
// A main opens a parsed -netdev with Keys (refusing other keys with its own
// "Invalid parameter") and Open or OpenWith; Help lists the types for `-netdev
// help`. Errors are one line and name the key. Differences from QEMU: tap runs no
// scripts (script= absent means no), user serves no TFTP, SMB, guestfwd or IPv6.
//
// It must not know about any NIC model, virtqueue, accelerator or board.
package netdev

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Backend carries Ethernet frames (destination MAC first, no FCS) between a NIC and
// the host.
type Backend interface {
	// Send hands one frame from the guest to the host. The backend does not keep frame
	// after returning. It may block briefly; it returns ErrClosed once closed. A frame
	// the backend cannot carry (malformed, oversized, refused by restrict=on) is
	// dropped without an error, as a wire would.
	Send(frame []byte) error
	// SetReceiver registers the function frames for the guest are delivered to, one at
	// a time from the backend's own goroutine; frame is valid only during the call. It
	// returns false when the NIC has no room: the backend holds that frame and retries
	// when the NIC calls RxReady (or after a short poll interval), queueing at most a
	// bounded number of further frames and dropping beyond that.
	SetReceiver(func(frame []byte) bool)
	// RxReady tells the backend the NIC has room again after refusing a frame.
	RxReady()
	Close() error
}

// Offloads describes what a backend accepts from the guest beyond plain, fully
// checksummed frames of at most MTU+14 bytes. A NIC may use them to skip work
// (virtio-net: not finishing partial checksums, not segmenting TSO frames). Frames
// to the guest are complete (checksummed, at most MTU+14 bytes) unless the NIC
// enabled the vnet header with guest TSO (VnetHdrBackend).
type Offloads struct {
	// NoChecksum: TCP and UDP checksums in frames from the guest are not verified, so
	// a NIC may pass a partial checksum (virtio-net's NEEDS_CSUM) unfinished.
	NoChecksum bool
	// MaxFrame is the largest frame (vnet header not counted) Send accepts whole;
	// IPv4 TCP frames up to this size need no segmentation (TSO). Equal to MTU+14
	// when the backend has no TSO.
	MaxFrame int
	// VnetHdr: frames in both directions start with a 12-byte virtio_net_hdr_v1
	// (num_buffers included): a tap opened with vnet_hdr=on, or a user or tap
	// backend after EnableVnetHdr.
	VnetHdr bool
}

// Offloader is implemented by backends that accept more than plain frames.
type Offloader interface {
	Offloads() Offloads
}

// VnetHdrBackend is implemented by backends that can carry a virtio_net_hdr_v1
// (VnetHdrLen bytes, num_buffers included) before every frame in both directions,
// so a virtio-net NIC passes checksum and segmentation offloads through instead of
// doing them. The NIC calls EnableVnetHdr once, after feature negotiation and
// before the guest's traffic: guestTSO says the guest took VIRTIO_NET_F_GUEST_CSUM
// and GUEST_TSO4, so frames to it may carry NEEDS_CSUM and gso_type TCPV4 with up
// to 64 KiB of segment; without it frames to the guest are complete and the header
// is zero. Frames from the guest may use any offload the header describes.
type VnetHdrBackend interface {
	EnableVnetHdr(guestTSO bool) error
}

// ErrClosed is returned by Send on a closed backend.
var ErrClosed = errors.New("netdev: backend closed")

// Help returns the -netdev types this package opens, one a line as QEMU's `-netdev
// help` prints them after "Available netdev backend types:".
func Help() []string {
	return []string{"socket", "stream", "dgram", "tap", "user"}
}

// typeKeys lists, per -netdev type, the keys Open reads (besides id= and type=). An
// entry ending in "." admits the dotted keys under it (QEMU's flattened addr.type,
// hostfwd.0.str, …).
var typeKeys = map[string][]string{
	"user": {"net", "host", "dhcpstart", "dns", "hostname", "domainname", "restrict",
		"hostfwd", "hostfwd.", "ipv4", "ipv6", "dnssearch", "ipv6-net", "ipv6-host", "ipv6-dns"},
	"socket": {"listen", "connect", "fd", "udp", "localaddr", "mcast"},
	"stream": {"addr.", "server", "reconnect", "reconnect-ms"},
	"dgram":  {"local.", "remote."},
	"tap":    {"ifname", "fd", "script", "downscript", "vhost", "vnet_hdr", "br", "helper", "queues", "sndbuf", "vhostforce"},
}

// Keys returns the keys Open reads for type typ, so the caller can refuse any other
// key (with QEMU's "Invalid parameter 'KEY'") before opening.
func Keys(typ string) ([]string, error) {
	k, ok := typeKeys[typ]
	if !ok {
		return nil, badType(typ)
	}
	return append([]string(nil), k...), nil
}

func badType(typ string) error {
	if typ == "" {
		return errors.New("Parameter 'type' is missing")
	}
	return fmt.Errorf("Parameter 'type' expects a netdev backend type (%s), not '%s'", strings.Join(Help(), ", "), typ)
}

// Open opens the backend of type typ from the keys of a parsed -netdev option set;
// get returns a key's value and whether it was given (qemuopts.Opts.Get). Booleans
// take QEMU's on/off/yes/no/true/false. Errors are one line and name the key.
func Open(typ string, get func(key string) (string, bool)) (Backend, error) {
	return OpenWith(typ, get, Options{})
}

// Options are settings of Open that do not come from the command line.
type Options struct {
	// ResolvConf is the host resolver configuration the user backend forwards DNS to
	// when dns= does not name it (default /etc/resolv.conf).
	ResolvConf string
	// DNSUpstream, if set, overrides the host resolver address ("127.0.0.1:5353"):
	// tests run their own resolver.
	DNSUpstream string
	// Notify, if set, receives one-line notices (a waiting stream server's address).
	Notify func(msg string)
}

// OpenWith is Open with host-side settings.
func OpenWith(typ string, get func(key string) (string, bool), o Options) (Backend, error) {
	if _, ok := typeKeys[typ]; !ok {
		return nil, badType(typ)
	}
	a := &args{typ: typ, get: get}
	switch typ {
	case "user":
		return openUser(a, o)
	case "socket":
		return openSocket(a, o)
	case "stream":
		return openStream(a, o)
	case "dgram":
		return openDgram(a, o)
	case "tap":
		return openTap(a)
	}
	return nil, badType(typ)
}

// args reads option values, keeping the first error.
type args struct {
	typ string
	get func(string) (string, bool)
	err error
}

func (a *args) fail(format string, v ...any) {
	if a.err == nil {
		a.err = fmt.Errorf(format, v...)
	}
}

func (a *args) str(key string) (string, bool) {
	if a.get == nil {
		return "", false
	}
	return a.get(key)
}

func (a *args) bool(key string, def bool) bool {
	v, ok := a.str(key)
	if !ok {
		return def
	}
	switch v {
	case "on", "yes", "true", "y":
		return true
	case "off", "no", "false", "n":
		return false
	}
	a.fail("Parameter '%s' expects 'on' or 'off'", key)
	return def
}

func (a *args) uint(key string, def, max uint64) uint64 {
	v, ok := a.str(key)
	if !ok {
		return def
	}
	n, err := strconv.ParseUint(v, 0, 64)
	if err != nil || n > max {
		a.fail("Parameter '%s' expects a number up to %d", key, max)
		return def
	}
	return n
}

// rxQueue is the bounded queue of frames for the guest, shared by every backend: one
// goroutine delivers them to the receiver, holding a refused frame until RxReady.
type rxQueue struct {
	mu      sync.Mutex
	recv    func([]byte) bool
	ch      chan []byte
	ready   chan struct{}
	done    chan struct{}
	once    sync.Once
	dropped uint64
	pool    atomic.Pointer[framePool]
	bytes   atomic.Int64 // bytes queued, bounded by rxQueueBytes
}

// framePool recycles frame buffers of one capacity.
type framePool struct {
	sync.Pool
	size int
}

func newFramePool(n int) *framePool {
	p := &framePool{size: n}
	p.New = func() any { b := make([]byte, 0, n); return &b }
	return p
}

// The receive queue holds at most rxQueueLen frames and rxQueueBytes bytes (64 KiB
// TSO frames would otherwise make 1024 entries 64 MiB).
const (
	rxQueueLen   = 1024
	rxQueueBytes = 8 << 20
)

func newRxQueue(maxLen int) *rxQueue {
	q := &rxQueue{ch: make(chan []byte, rxQueueLen), ready: make(chan struct{}, 1), done: make(chan struct{})}
	q.pool.Store(newFramePool(maxLen))
	go q.run()
	return q
}

// setMaxLen changes the frame buffer size (before frames flow).
func (q *rxQueue) setMaxLen(n int) {
	q.pool.Store(newFramePool(n))
}

func (q *rxQueue) setReceiver(f func([]byte) bool) {
	q.mu.Lock()
	q.recv = f
	q.mu.Unlock()
	q.kick()
}

func (q *rxQueue) kick() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// buf returns a buffer for one frame of up to maxLen bytes, for put.
func (q *rxQueue) buf() []byte { return (*q.pool.Load().Get().(*[]byte))[:0] }

// put queues frame (a buffer from buf or any slice the queue may keep), waiting at
// most wait when the queue is full; it reports whether the frame was queued, and
// recycles it when not.
func (q *rxQueue) put(frame []byte, wait time.Duration) bool {
	if q.putKeep(frame, wait) {
		return true
	}
	q.recycle(frame)
	return false
}

// putKeep is put leaving a frame it could not queue to the caller.
func (q *rxQueue) putKeep(frame []byte, wait time.Duration) bool {
	n := int64(len(frame))
	if q.bytes.Add(n) <= rxQueueBytes {
		select {
		case q.ch <- frame:
			return true
		case <-q.done:
			q.bytes.Add(-n)
			return false
		default:
		}
	}
	q.bytes.Add(-n)
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		tick := time.NewTicker(wait/8 + time.Microsecond)
		defer tick.Stop()
	retry:
		for {
			if q.bytes.Add(n) <= rxQueueBytes {
				select {
				case q.ch <- frame:
					return true
				case <-q.done:
					q.bytes.Add(-n)
					break retry
				case <-t.C:
					q.bytes.Add(-n)
					break retry
				}
			}
			q.bytes.Add(-n) // over the byte budget: wait for the consumer
			select {
			case <-q.done:
				break retry
			case <-t.C:
				break retry
			case <-tick.C:
			}
		}
	}
	q.mu.Lock()
	q.dropped++
	q.mu.Unlock()
	return false
}

func (q *rxQueue) recycle(b []byte) {
	if p := q.pool.Load(); cap(b) == p.size {
		b = b[:0]
		p.Put(&b)
	}
}

func (q *rxQueue) run() {
	poll := time.NewTimer(time.Hour)
	poll.Stop()
	for {
		var f []byte
		select {
		case f = <-q.ch:
		case <-q.done:
			return
		}
		q.bytes.Add(-int64(len(f)))
		for {
			q.mu.Lock()
			recv := q.recv
			q.mu.Unlock()
			if recv != nil && recv(f) {
				break
			}
			// Hold the frame: wait for the NIC (or a receiver) and retry.
			poll.Reset(5 * time.Millisecond)
			select {
			case <-q.ready:
			case <-poll.C:
			case <-q.done:
				return
			}
			if !poll.Stop() {
				select {
				case <-poll.C:
				default:
				}
			}
		}
		q.recycle(f)
	}
}

func (q *rxQueue) close() { q.once.Do(func() { close(q.done) }) }

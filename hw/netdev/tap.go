package netdev

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// VnetHdrLen is the virtio_net_hdr_v1 length (with num_buffers) a tap opened with
// vnet_hdr=on puts before each frame, both ways.
const VnetHdrLen = 12

// Tap is a /dev/net/tun TAP interface (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, as QEMU
// opens it, unless vnet_hdr=off). The kernel's vnet header is hidden from the NIC
// (zero on frames to the kernel, dropped from frames from it) until the NIC asks
// for it with EnableVnetHdr, or from the start with vnet_hdr=on. The host end is
// configured outside gemu (script=no only).
type Tap struct {
	f       *os.File
	name    string
	vnetHdr bool        // the device has IFF_VNET_HDR
	expose  atomic.Bool // the NIC sees the header
	txPool  sync.Pool
	rx      *rxQueue
	closed  atomic.Bool
	wg      sync.WaitGroup
}

const tapMaxFrame = VnetHdrLen + 65535 + 14

func openTap(a *args) (Backend, error) {
	ifname, _ := a.str("ifname")
	fdStr, hasFD := a.str("fd")
	for _, k := range []string{"script", "downscript"} {
		if v, ok := a.str(k); ok && v != "no" && v != "" {
			a.fail("Parameter '%s': running network scripts is not supported; use %s=no and configure the interface beforehand", k, k)
		}
	}
	if a.bool("vhost", false) || a.bool("vhostforce", false) {
		a.fail("Parameter 'vhost': vhost-net is not supported (vhost=off)")
	}
	for _, k := range []string{"br", "helper"} {
		if _, ok := a.str(k); ok {
			a.fail("Parameter '%s': the bridge helper is not supported", k)
		}
	}
	if q := a.uint("queues", 1, 1024); q != 1 {
		a.fail("Parameter 'queues': only one queue is supported")
	}
	a.uint("sndbuf", 0, 1<<62)
	_, vnetGiven := a.str("vnet_hdr")
	vnet := a.bool("vnet_hdr", true)
	if len(ifname) >= unix.IFNAMSIZ {
		a.fail("Parameter 'ifname': '%s' is longer than %d bytes", ifname, unix.IFNAMSIZ-1)
	}
	if a.err != nil {
		return nil, a.err
	}
	var t *Tap
	var err error
	if hasFD {
		fd, aerr := strconv.Atoi(fdStr)
		if aerr != nil || fd < 0 {
			return nil, errors.New("Parameter 'fd' expects a file descriptor number")
		}
		t, err = newTapFD(fd, vnet, vnetGiven)
	} else {
		t, err = OpenTap(ifname, vnet)
	}
	if err != nil {
		return nil, err
	}
	if vnetGiven && vnet {
		t.expose.Store(true)
	}
	return t, nil
}

// OpenTap creates (or attaches to) the TAP interface ifname ("" lets the kernel
// pick tapN). It needs CAP_NET_ADMIN unless the interface is persistent and owned by
// the caller.
func OpenTap(ifname string, vnetHdr bool) (*Tap, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("netdev tap: could not open /dev/net/tun: %v (a tap needs CAP_NET_ADMIN)", err)
		}
		return nil, fmt.Errorf("netdev tap: could not open /dev/net/tun: %v", err)
	}
	name := ifname
	if name == "" {
		name = "tap%d"
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netdev tap: bad interface name '%s': %v", ifname, err)
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if vnetHdr {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("netdev tap: could not configure /dev/net/tun (%s): %v (creating a tap needs CAP_NET_ADMIN)", name, err)
		}
		return nil, fmt.Errorf("netdev tap: could not configure /dev/net/tun (%s): %v", name, err)
	}
	return newTap(fd, ifr.Name(), vnetHdr)
}

func newTapFD(fd int, vnetHdr, given bool) (*Tap, error) {
	ifr, err := unix.NewIfreq("")
	if err == nil {
		err = unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr)
	}
	if err != nil {
		return nil, fmt.Errorf("netdev tap: fd=%d is not a tap device: %v", fd, err)
	}
	flags := ifr.Uint16()
	if flags&unix.IFF_TAP == 0 || flags&unix.IFF_NO_PI == 0 {
		return nil, fmt.Errorf("netdev tap: fd=%d is not an IFF_TAP|IFF_NO_PI device", fd)
	}
	if !given {
		vnetHdr = flags&unix.IFF_VNET_HDR != 0
	}
	if vnetHdr != (flags&unix.IFF_VNET_HDR != 0) {
		return nil, fmt.Errorf("netdev tap: fd=%d: vnet_hdr=%v does not match the device", fd, onOff(vnetHdr))
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("netdev tap: fd=%d: %v", fd, err)
	}
	return newTap(fd, ifr.Name(), vnetHdr)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func newTap(fd int, name string, vnetHdr bool) (*Tap, error) {
	if vnetHdr {
		if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, VnetHdrLen); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("netdev tap: TUNSETVNETHDRSZ: %v", err)
		}
	}
	t := &Tap{f: os.NewFile(uintptr(fd), "/dev/net/tun"), name: strings.TrimRight(name, "\x00"), vnetHdr: vnetHdr}
	t.txPool.New = func() any { b := make([]byte, 0, tapMaxFrame); return &b }
	t.rx = newRxQueue(tapMaxFrame)
	t.wg.Add(1)
	go t.readLoop()
	return t, nil
}

// Name returns the interface name (tap0, …).
func (t *Tap) Name() string { return t.name }

// SetOffload tells the kernel which offloads the guest accepts on frames it receives
// (virtio-net's negotiated GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN, GUEST_UFO), so the
// kernel may hand partial checksums and GSO frames described by the vnet header.
// Only valid on a device with the vnet header.
func (t *Tap) SetOffload(csum, tso4, tso6, ecn, ufo bool) error {
	if !t.vnetHdr {
		return errors.New("netdev tap: offloads need the vnet header (vnet_hdr=off was given)")
	}
	var fl int
	if csum {
		fl |= unix.TUN_F_CSUM
		if tso4 {
			fl |= unix.TUN_F_TSO4
		}
		if tso6 {
			fl |= unix.TUN_F_TSO6
		}
		if ecn {
			fl |= unix.TUN_F_TSO_ECN
		}
		if ufo {
			fl |= unix.TUN_F_UFO
		}
	}
	raw, err := t.f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	raw.Control(func(fd uintptr) { ierr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, fl) })
	if ierr != nil {
		return fmt.Errorf("netdev tap: TUNSETOFFLOAD: %v", ierr)
	}
	return nil
}

// EnableVnetHdr implements VnetHdrBackend: the NIC sees the kernel's header from
// now on, and the kernel may send partial checksums (and TSO frames when the guest
// takes them).
func (t *Tap) EnableVnetHdr(guestTSO bool) error {
	if !t.vnetHdr {
		return errors.New("netdev tap: vnet_hdr=off: the device has no vnet header")
	}
	if err := t.SetOffload(true, guestTSO, guestTSO, false, false); err != nil {
		return err
	}
	t.expose.Store(true)
	return nil
}

func (t *Tap) readLoop() {
	defer t.wg.Done()
	for {
		f := t.rx.buf()[:tapMaxFrame]
		n, err := t.f.Read(f)
		if err != nil {
			t.rx.recycle(f)
			if t.closed.Load() || errors.Is(err, os.ErrClosed) {
				return
			}
			if errors.Is(err, unix.EBADFD) || errors.Is(err, unix.EIO) {
				return // the interface went away
			}
			continue
		}
		if t.vnetHdr && !t.expose.Load() {
			// Offloads are off (TUNSETOFFLOAD 0), so the header says nothing.
			if n < VnetHdrLen {
				t.rx.recycle(f)
				continue
			}
			n = copy(f, f[VnetHdrLen:n])
		}
		if n == 0 {
			t.rx.recycle(f)
			continue
		}
		t.rx.put(f[:n], 10*time.Millisecond) // the kernel queue holds the rest
	}
}

// Send implements Backend: one write per frame (with its vnet header when enabled).
func (t *Tap) Send(frame []byte) error {
	if t.closed.Load() {
		return ErrClosed
	}
	if len(frame) == 0 || len(frame) > tapMaxFrame {
		return nil
	}
	if t.vnetHdr && !t.expose.Load() {
		bp := t.txPool.Get().(*[]byte)
		b := append(append((*bp)[:0], make([]byte, VnetHdrLen)...), frame...)
		_, err := t.f.Write(b)
		*bp = b[:0]
		t.txPool.Put(bp)
		if err != nil && t.closed.Load() {
			return ErrClosed
		}
		return nil
	}
	if _, err := t.f.Write(frame); err != nil {
		if t.closed.Load() {
			return ErrClosed
		}
		// EINVAL/EIO for a malformed frame: dropped, as on a wire.
	}
	return nil
}

func (t *Tap) SetReceiver(f func([]byte) bool) { t.rx.setReceiver(f) }
func (t *Tap) RxReady()                        { t.rx.kick() }

// Offloads implements Offloader.
func (t *Tap) Offloads() Offloads {
	if t.expose.Load() {
		return Offloads{NoChecksum: true, MaxFrame: tapMaxFrame - VnetHdrLen, VnetHdr: true}
	}
	return Offloads{MaxFrame: 1500 + 14}
}

func (t *Tap) Close() error {
	if t.closed.Swap(true) {
		return nil
	}
	err := t.f.Close()
	t.rx.close()
	t.wg.Wait()
	return err
}

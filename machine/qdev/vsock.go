package qdev

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"

	"gemu/hw/virtio"
	"gemu/hw/virtio/vsock"
)

// vsockProps are QEMU's vhost-vsock properties plus uds-path, gemu's (and
// Firecracker's) host side: gemu has no vhost, so the guest's connections end on Unix
// sockets (hw/virtio/vsock).
var vsockProps = []string{"guest-cid", "uds-path", "vhostfd", "seqpacket"}

func init() {
	for _, tr := range []struct {
		suffix, bus string
		props       []string
	}{{"-pci", "PCI", commonPCI}, {"-device", "virtio-bus", commonMMIO}} {
		register(devType{name: "vhost-vsock" + tr.suffix, bus: tr.bus, desc: "Virtio socket (vsock) device, Firecracker-style host side on uds-path",
			props: append(append([]string{}, tr.props...), vsockProps...), build: buildVsock})
	}
	d := types["vhost-vsock-pci"]
	d.name = "vhost-vsock-pci-non-transitional"
	register(d)
}

// VsockHosts are the process's vsock host sockets by uds-path. They outlive a guest
// reboot: the rebuilt machine's device takes its socket over (and its guest gets a
// transport reset), and host processes keep a path to connect to.
type VsockHosts struct {
	mu    sync.Mutex
	hosts map[string]*vsock.Unix
}

// NewVsockHosts returns an empty set.
func NewVsockHosts() *VsockHosts { return &VsockHosts{hosts: map[string]*vsock.Unix{}} }

// open returns the socket for path, listening on it the first time.
func (h *VsockHosts) open(path string) (*vsock.Unix, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if u := h.hosts[path]; u != nil {
		return u, nil
	}
	u, err := vsock.ListenUnix(path)
	if err != nil {
		return nil, err
	}
	h.hosts[path] = u
	return u, nil
}

// Close stops listening on every socket and removes them.
func (h *VsockHosts) Close() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for p, u := range h.hosts {
		errs = append(errs, u.Close())
		delete(h.hosts, p)
	}
	return errors.Join(errs...)
}

// vsockState is an Env's vsock bookkeeping: one device per socket and per CID.
type vsockState struct {
	paths map[string]bool
	cids  map[uint64]bool
}

func buildVsock(e *Env, p Props) (virtio.Device, error) {
	v, ok := p.Get("guest-cid")
	if !ok {
		return nil, errors.New("guest-cid property must be greater than 2")
	}
	cid, err := strconv.ParseUint(v, 0, 64)
	if err != nil {
		return nil, fmt.Errorf("Parameter 'guest-cid' expects uint64")
	}
	if cid <= 2 {
		return nil, errors.New("guest-cid property must be greater than 2")
	}
	if cid >= math.MaxUint32 {
		return nil, errors.New("guest-cid property must be a 32-bit number")
	}
	if _, ok := p.Get("vhostfd"); ok {
		return nil, errors.New("vhostfd is not supported: gemu has no vhost-vsock; give uds-path=PATH")
	}
	if on, err := boolProp(p, "seqpacket", false); err != nil {
		return nil, err
	} else if on {
		return nil, errors.New("seqpacket=on is not supported: gemu's vsock carries stream sockets")
	}
	path, _ := p.Get("uds-path")
	if path == "" {
		return nil, errors.New("uds-path property not set: gemu has no vhost-vsock; its host side is Unix sockets (uds-path=PATH: guest connections to port P go to PATH_P, host ones come through PATH)")
	}
	e.mu.Lock()
	if e.vsock.paths == nil {
		e.vsock.paths, e.vsock.cids = map[string]bool{}, map[uint64]bool{}
	}
	dupPath, dupCID := e.vsock.paths[path], e.vsock.cids[cid]
	if e.Vsock == nil {
		e.Vsock = NewVsockHosts() // a caller without a process-wide set (tests)
	}
	hosts := e.Vsock
	e.mu.Unlock()
	if dupPath {
		return nil, fmt.Errorf("uds-path %s is already used by another vsock device", path)
	}
	if dupCID {
		return nil, fmt.Errorf("unable to set guest cid: guest-cid %d is already used by another vsock device", cid)
	}
	u, err := hosts.open(path)
	if err != nil {
		return nil, err
	}
	d, err := vsock.New(vsock.Config{GuestCID: cid, Backend: u})
	if err != nil {
		return nil, err
	}
	u.Attach(d)
	e.mu.Lock()
	e.vsock.paths[path], e.vsock.cids[cid] = true, true
	e.mu.Unlock()
	return d, nil
}

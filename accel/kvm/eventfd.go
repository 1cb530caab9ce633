package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"gemu/accel"
)

// ioeventfd and irqfd: guest doorbell writes that signal an eventfd inside KVM instead
// of exiting to Go, and interrupts injected by writing an eventfd bound to a GSI whose
// routing entry is an MSI message.

type ioeventfd struct {
	Datamatch uint64
	Addr      uint64
	Len       uint32
	FD        int32
	Flags     uint32
	_         [36]byte
}

type irqfd struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	_          [16]byte
}

const (
	kvmIOEventFD = 0x79
	kvmIRQFD     = 0x76

	ioeventfdFlagPIO      = 1 << 1
	ioeventfdFlagDeassign = 1 << 2
	irqfdFlagDeassign     = 1 << 0

	irqRoutingMSI = 2
	// firstMSIGSI is the first GSI past the IOAPIC's 24 pins (see setRouting).
	firstMSIGSI = 24
	// maxMSIRoutes bounds the routes one VM may allocate (KVM's own limit is 4096 GSIs).
	maxMSIRoutes = 1024
)

var (
	kvmIOEventFDReq = iow(kvmIOEventFD, unsafe.Sizeof(ioeventfd{}))
	kvmIRQFDReq     = iow(kvmIRQFD, unsafe.Sizeof(irqfd{}))

	_ accel.IOEventFD = (*VM)(nil)
	_ accel.MSIRouter = (*VM)(nil)
)

// IOEventFD registers a doorbell: a guest write of size bytes (any value) at addr, in
// port I/O space when pio is set, signals an eventfd that a goroutine drains, calling fn
// once per drain (several writes between two drains coalesce into one call, which is
// what a queue notification needs).
func (v *VM) IOEventFD(addr uint64, size uint32, pio bool, fn func()) (func(), error) {
	switch size {
	case 1, 2, 4, 8:
	default:
		return nil, fmt.Errorf("kvm: ioeventfd of %d bytes", size)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("kvm: eventfd: %w", err)
	}
	req := ioeventfd{Addr: addr, Len: size, FD: int32(efd)}
	if pio {
		req.Flags |= ioeventfdFlagPIO
	}
	if _, err := ioctlPtr(v.vmFD, kvmIOEventFDReq, unsafe.Pointer(&req)); err != nil {
		unix.Close(efd)
		return nil, fmt.Errorf("kvm: KVM_IOEVENTFD at %#x: %w", addr, err)
	}
	done := make(chan struct{})
	var stopping atomic.Bool
	go func() {
		defer close(done)
		var b [8]byte
		for {
			n, err := unix.Read(efd, b[:])
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || n != 8 {
				return
			}
			if stopping.Load() {
				return // the cancel's wake-up
			}
			fn()
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			stopping.Store(true)
			req.Flags |= ioeventfdFlagDeassign
			ioctlPtr(v.vmFD, kvmIOEventFDReq, unsafe.Pointer(&req))
			// Wake the reader, which sees stopping and returns.
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], 1)
			unix.Write(efd, b[:])
			<-done
			unix.Close(efd)
		})
	}, nil
}

// msiRoutes is the VM's table of MSI routing entries, appended to the fixed irqchip
// routing whenever it changes (KVM_SET_GSI_ROUTING replaces the whole table).
type msiRoutes struct {
	mu     sync.Mutex
	routes map[uint32]*msiRoute // by GSI
}

type msiRoute struct {
	v         *VM
	gsi       uint32
	efd       int
	addr      uint64
	data      uint32
	closeOnce sync.Once
}

// NewMSIRoute allocates a GSI routed to the MSI message (addr, data) and an irqfd that
// injects it.
func (v *VM) NewMSIRoute(addr uint64, data uint32) (accel.MSIRoute, error) {
	v.msi.mu.Lock()
	defer v.msi.mu.Unlock()
	if v.msi.routes == nil {
		v.msi.routes = map[uint32]*msiRoute{}
	}
	if len(v.msi.routes) >= maxMSIRoutes {
		return nil, fmt.Errorf("kvm: more than %d MSI routes", maxMSIRoutes)
	}
	gsi := uint32(firstMSIGSI)
	for v.msi.routes[gsi] != nil {
		gsi++
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("kvm: eventfd: %w", err)
	}
	r := &msiRoute{v: v, gsi: gsi, efd: efd, addr: addr, data: data}
	v.msi.routes[gsi] = r
	if err := v.setRoutingLocked(); err != nil {
		delete(v.msi.routes, gsi)
		unix.Close(efd)
		return nil, err
	}
	req := irqfd{FD: uint32(efd), GSI: gsi}
	if _, err := ioctlPtr(v.vmFD, kvmIRQFDReq, unsafe.Pointer(&req)); err != nil {
		delete(v.msi.routes, gsi)
		v.setRoutingLocked()
		unix.Close(efd)
		return nil, fmt.Errorf("kvm: KVM_IRQFD gsi %d: %w", gsi, err)
	}
	return r, nil
}

// Update re-targets the route.
func (r *msiRoute) Update(addr uint64, data uint32) error {
	r.v.msi.mu.Lock()
	defer r.v.msi.mu.Unlock()
	if r.addr == addr && r.data == data {
		return nil
	}
	r.addr, r.data = addr, data
	return r.v.setRoutingLocked()
}

// Fire injects the interrupt.
func (r *msiRoute) Fire() error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 1)
	for {
		_, err := unix.Write(r.efd, b[:])
		switch {
		case err == nil, errors.Is(err, unix.EAGAIN):
			// EAGAIN: the counter is saturated, so an injection is pending anyway.
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		}
		return fmt.Errorf("kvm: irqfd gsi %d: %w", r.gsi, err)
	}
}

// Close unbinds the irqfd and frees the GSI.
func (r *msiRoute) Close() error {
	r.closeOnce.Do(func() {
		req := irqfd{FD: uint32(r.efd), GSI: r.gsi, Flags: irqfdFlagDeassign}
		ioctlPtr(r.v.vmFD, kvmIRQFDReq, unsafe.Pointer(&req))
		unix.Close(r.efd)
		r.v.msi.mu.Lock()
		delete(r.v.msi.routes, r.gsi)
		r.v.setRoutingLocked()
		r.v.msi.mu.Unlock()
	})
	return nil
}

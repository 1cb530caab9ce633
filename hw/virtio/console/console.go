// Package console owns the virtio console device (virtio 1.2 section 5.3) as QEMU's
// virtio-serial models it: with VIRTIO_CONSOLE_F_MULTIPORT, a control queue pair and
// several ports, each a console (virtconsole: the guest's hvcN) or a named serial port
// (virtserialport: /dev/virtio-ports/NAME), each bound to a host character backend.
// Without multiport (a driver that does not accept it, or Config.Multiport false) the
// device is a single console on port 0. A multiport device may be created with no
// ports and get them from AddPort until the driver first starts it (QEMU's -device
// virtio-serial followed by virtconsole and virtserialport options).
// VIRTIO_CONSOLE_F_EMERG_WRITE is offered (early output through the configuration
// space, to port 0's backend); VIRTIO_CONSOLE_F_SIZE and port hot-plug are not.
//
// The control protocol follows QEMU's and the Linux driver's: the driver sends
// DEVICE_READY, the device announces every port with DEVICE_ADD, the driver answers
// PORT_READY, and the device then sends CONSOLE_PORT for consoles, PORT_NAME for named
// ports and PORT_OPEN (the host end is connected). The driver's PORT_OPEN says when the
// guest opened the port; host input is held (bounded) until then, as QEMU holds it.
//
// It must not know the transport, nor what a backend is connected to.
package console

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"gemu/hw/chardev"
	"gemu/hw/virtio"
)

// Feature bits (spec 5.3.3).
const (
	FSize       = 0
	FMultiport  = 1
	FEmergWrite = 2
)

// Control events (spec 5.3.6.2).
const (
	EvDeviceReady  = 0
	EvDeviceAdd    = 1
	EvDeviceRemove = 2
	EvPortReady    = 3
	EvConsolePort  = 4
	EvResize       = 5
	EvPortOpen     = 6
	EvPortName     = 7
)

const (
	ctrlSize    = 8 // id u32, event u16, value u16
	dataQueue   = 128
	ctrlQueue   = 32
	inputLimit  = 64 << 10 // host input held per port before the guest takes it
	ctrlBacklog = 1024     // control messages queued for the driver
	maxName     = 255
)

// Port is one port of the device.
type Port struct {
	Console bool            // a console port (virtconsole)
	Name    string          // the port's name (virtserialport name=); may be empty for a console
	Backend chardev.Backend // host end; nil discards output and never gives input
}

// Config configures the device.
type Config struct {
	// Ports in the order given; the first console becomes port 0 (as in QEMU, port 0 is
	// reserved for a console), the others take 1, 2, ... in order.
	Ports []Port
	// Multiport offers VIRTIO_CONSOLE_F_MULTIPORT (virtio-serial). Without it the device
	// has exactly one port, a console.
	Multiport bool
	// MaxPorts is max_nr_ports; default the number of port numbers used.
	MaxPorts int
}

type port struct {
	nr  int
	cfg Port

	// under Device.mu
	guestOpen bool
	input     []byte
	dropped   uint64
	rx        *virtio.Queue
}

// Device is a virtio console device (virtio.Device).
type Device struct {
	multiport bool
	maxPorts  int
	ports     []*port // by port number; nil for unused numbers
	order     []int   // port numbers in Config.Ports order

	mu        sync.Mutex
	active    bool
	started   bool // activated once: the port set is fixed
	multi     bool // MULTIPORT negotiated
	ctrlOut   [][]byte
	ctrlRx    *virtio.Queue
	stop      chan struct{}
	wg        sync.WaitGroup
	emergency *port
	restored  *restoredState // LoadState's, applied by the next Activate
}

// New checks c and returns the device. It registers a receiver with each backend. A
// multiport device may start with no ports (QEMU's bare -device virtio-serial) and get
// them from AddPort before the driver starts it.
func New(c Config) (*Device, error) {
	d := &Device{multiport: c.Multiport}
	if !c.Multiport {
		if len(c.Ports) != 1 || !c.Ports[0].Console {
			return nil, errors.New("virtio-console: without multiport the device has exactly one console port")
		}
	}
	if c.MaxPorts == 0 {
		c.MaxPorts = max(len(c.Ports), 1)
	}
	if c.MaxPorts < 1 || c.MaxPorts > 511 {
		return nil, fmt.Errorf("virtio-console: max ports %d out of range 1..511", c.MaxPorts)
	}
	d.maxPorts = c.MaxPorts
	d.ports = make([]*port, c.MaxPorts)
	for _, p := range c.Ports {
		if _, err := d.AddPort(p); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// AddPort adds a port before the driver starts the device and returns its number: the
// first console takes port 0, every other port the lowest free number from 1 (QEMU's
// rule). It fails when no number is free (Config.MaxPorts) or the device already ran.
func (d *Device) AddPort(p Port) (int, error) {
	if len(p.Name) > maxName {
		return 0, fmt.Errorf("virtio-console: port name %q is longer than %d bytes", p.Name, maxName)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started {
		return 0, errors.New("virtio-console: ports cannot be added once the driver started the device")
	}
	if !d.multiport && len(d.order) > 0 {
		return 0, errors.New("virtio-console: without multiport the device has exactly one console port")
	}
	nr := -1
	if p.Console && d.ports[0] == nil {
		nr = 0
	} else {
		for i := 1; i < len(d.ports); i++ {
			if d.ports[i] == nil {
				nr = i
				break
			}
		}
	}
	if nr < 0 {
		return 0, fmt.Errorf("virtio-console: no free port number (max ports %d)", d.maxPorts)
	}
	pp := &port{nr: nr, cfg: p}
	d.ports[nr] = pp
	d.order = append(d.order, nr)
	if nr == 0 {
		d.emergency = pp
	}
	if p.Backend != nil {
		p.Backend.SetReceiver(func(b byte) { d.input(pp, b) })
	}
	return nr, nil
}

// PortNumber returns the port number the i-th port added (Config.Ports, then AddPort)
// got, or -1.
func (d *Device) PortNumber(i int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if i < 0 || i >= len(d.order) {
		return -1
	}
	return d.order[i]
}

func (d *Device) DeviceID() uint16 { return virtio.IDConsole }

func (d *Device) Features() uint64 {
	f := uint64(1 << FEmergWrite)
	if d.multiport {
		f |= 1 << FMultiport
	}
	return f
}

// QueueMax: port 0's pair, then (multiport) the control pair and the other ports' pairs.
func (d *Device) QueueMax() []uint16 {
	if !d.multiport {
		return []uint16{dataQueue, dataQueue}
	}
	m := make([]uint16, 2*(d.maxPorts+1))
	for i := range m {
		m[i] = dataQueue
	}
	m[2], m[3] = ctrlQueue, ctrlQueue
	return m
}

// rxQueue is the receive queue index of port nr (transmit is rxQueue+1).
func rxQueue(nr int) int {
	if nr == 0 {
		return 0
	}
	return 2*nr + 2
}

// Config space: cols u16, rows u16, max_nr_ports u32, emerg_wr u32.
func (d *Device) ReadConfig(off uint64, data []byte) {
	clear(data)
	var b [12]byte
	binary.LittleEndian.PutUint32(b[4:], uint32(d.maxPorts))
	if off < uint64(len(b)) {
		copy(data, b[off:])
	}
}

// WriteConfig: a write to emerg_wr sends its low byte to port 0's backend.
func (d *Device) WriteConfig(off uint64, data []byte) {
	d.mu.Lock()
	p := d.emergency
	d.mu.Unlock()
	if off == 8 && len(data) > 0 && p != nil && p.cfg.Backend != nil {
		p.cfg.Backend.Write(data[:1])
	}
}

// Activate starts a worker per enabled queue.
func (d *Device) Activate(a virtio.Activation) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.active {
		return errors.New("virtio-console: already active")
	}
	d.started = true
	d.multi = a.Features&(1<<FMultiport) != 0
	d.stop = make(chan struct{})
	d.ctrlOut = nil
	qs := a.Queues
	q := func(i int) *virtio.Queue {
		if i < len(qs) {
			return qs[i]
		}
		return nil
	}
	for _, p := range d.ports {
		if p == nil || (!d.multi && p.nr != 0) {
			continue
		}
		// Without multiport the console is open from the start; with it, when the
		// driver says so.
		p.guestOpen = !d.multi
		p.rx = q(rxQueue(p.nr))
		if p.rx != nil {
			d.run(p.rx, func(q *virtio.Queue) { d.fillInput(p, q) })
		}
		if tx := q(rxQueue(p.nr) + 1); tx != nil {
			d.run(tx, func(q *virtio.Queue) { d.transmit(p, q) })
		}
	}
	if r := d.restored; r != nil {
		d.restored = nil
		for i, p := range d.ports {
			if p != nil {
				p.guestOpen = r.open[i]
			}
		}
		d.ctrlOut = r.ctrlOut
	}
	if d.multi {
		d.ctrlRx = q(2)
		if d.ctrlRx != nil {
			d.run(d.ctrlRx, d.sendControl)
		}
		if c := q(3); c != nil {
			d.run(c, d.receiveControl)
		}
	}
	d.active = true
	return nil
}

// run starts a worker that calls serve whenever q is kicked (by the driver, or by Kick
// for host-side events). Called with d.mu held.
func (d *Device) run(q *virtio.Queue, serve func(*virtio.Queue)) {
	stop := d.stop
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		for {
			serve(q)
			select {
			case <-q.Kicked():
			case <-stop:
				return
			}
		}
	}()
}

// Reset stops the workers and waits for them.
func (d *Device) Reset() {
	d.mu.Lock()
	d.restored = nil
	if !d.active {
		d.mu.Unlock()
		return
	}
	close(d.stop)
	d.active = false
	d.mu.Unlock()
	// Workers take d.mu; wait without it.
	d.wg.Wait()
	d.mu.Lock()
	for _, p := range d.ports {
		if p != nil {
			p.rx, p.guestOpen = nil, false
		}
	}
	d.ctrlRx, d.ctrlOut = nil, nil
	d.mu.Unlock()
}

// input is a host byte for port p (from the backend's goroutine).
func (d *Device) input(p *port, b byte) {
	d.mu.Lock()
	if len(p.input) >= inputLimit {
		p.dropped++
		d.mu.Unlock()
		return
	}
	p.input = append(p.input, b)
	rx, open := p.rx, p.guestOpen
	d.mu.Unlock()
	if rx != nil && open {
		rx.Kick()
	}
}

// fillInput moves held host input into the port's receive buffers.
func (d *Device) fillInput(p *port, q *virtio.Queue) {
	signal := false
	for {
		d.mu.Lock()
		if !p.guestOpen || len(p.input) == 0 {
			d.mu.Unlock()
			break
		}
		c, err := q.Pop()
		if err != nil || c == nil {
			d.mu.Unlock()
			break
		}
		n := c.In.WriteAt(p.input, 0)
		p.input = p.input[n:]
		if len(p.input) == 0 {
			p.input = nil
		}
		d.mu.Unlock()
		q.Push(c, uint32(n))
		signal = true
	}
	if signal {
		q.Signal()
	}
}

// transmit sends guest output on port p to its backend.
func (d *Device) transmit(p *port, q *virtio.Queue) {
	signal := false
	for {
		c, err := q.Pop()
		if err != nil || c == nil {
			break
		}
		if be := p.cfg.Backend; be != nil {
			for _, s := range c.Out {
				if len(s.B) > 0 {
					be.Write(s.B)
				}
			}
		}
		q.Push(c, 0)
		signal = true
	}
	if signal {
		q.Signal()
	}
}

// control queues a control message for the driver. Called with d.mu held.
func (d *Device) control(id uint32, event, value uint16, extra []byte) {
	if len(d.ctrlOut) >= ctrlBacklog {
		return // a driver flooding the control queue loses answers, not host memory
	}
	m := make([]byte, ctrlSize+len(extra))
	binary.LittleEndian.PutUint32(m[0:], id)
	binary.LittleEndian.PutUint16(m[4:], event)
	binary.LittleEndian.PutUint16(m[6:], value)
	copy(m[ctrlSize:], extra)
	d.ctrlOut = append(d.ctrlOut, m)
}

// sendControl delivers queued control messages, one per receive buffer.
func (d *Device) sendControl(q *virtio.Queue) {
	signal := false
	for {
		d.mu.Lock()
		if len(d.ctrlOut) == 0 {
			d.mu.Unlock()
			break
		}
		c, err := q.Pop()
		if err != nil || c == nil {
			d.mu.Unlock()
			break
		}
		m := d.ctrlOut[0]
		d.ctrlOut = d.ctrlOut[1:]
		d.mu.Unlock()
		n := c.In.WriteAt(m, 0) // a name longer than the buffer is cut
		q.Push(c, uint32(n))
		signal = true
	}
	if signal {
		q.Signal()
	}
}

// receiveControl handles the driver's control messages.
func (d *Device) receiveControl(q *virtio.Queue) {
	signal := false
	for {
		c, err := q.Pop()
		if err != nil || c == nil {
			break
		}
		var m [ctrlSize]byte
		if c.Out.ReadAt(m[:], 0) == ctrlSize {
			d.handleControl(binary.LittleEndian.Uint32(m[0:]), binary.LittleEndian.Uint16(m[4:]), binary.LittleEndian.Uint16(m[6:]))
		}
		q.Push(c, 0)
		signal = true
	}
	if signal {
		q.Signal()
	}
}

func (d *Device) handleControl(id uint32, event, value uint16) {
	d.mu.Lock()
	var kick []*virtio.Queue
	before := len(d.ctrlOut)
	var p *port
	if int64(id) < int64(len(d.ports)) {
		p = d.ports[id]
	}
	switch event {
	case EvDeviceReady:
		if value == 1 {
			for _, pp := range d.ports {
				if pp != nil {
					d.control(uint32(pp.nr), EvDeviceAdd, 1, nil)
				}
			}
		}
	case EvPortReady:
		if p == nil || value != 1 {
			break
		}
		if p.cfg.Console {
			d.control(id, EvConsolePort, 1, nil)
		}
		if p.cfg.Name != "" {
			d.control(id, EvPortName, 1, append([]byte(p.cfg.Name), 0))
		}
		if p.cfg.Backend != nil {
			d.control(id, EvPortOpen, 1, nil)
		}
	case EvPortOpen:
		if p == nil {
			break
		}
		p.guestOpen = value != 0
		if p.guestOpen && len(p.input) > 0 && p.rx != nil {
			kick = append(kick, p.rx)
		}
	}
	// Unknown events, and events for ports that do not exist, are ignored (as QEMU does).
	if len(d.ctrlOut) > before && d.ctrlRx != nil {
		kick = append(kick, d.ctrlRx)
	}
	d.mu.Unlock()
	for _, q := range kick {
		q.Kick()
	}
}

// Dropped is the number of host input bytes port number nr lost because the guest
// did not take them (more than 64 KiB held).
func (d *Device) Dropped(nr int) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if nr < 0 || nr >= len(d.ports) || d.ports[nr] == nil {
		return 0
	}
	return d.ports[nr].dropped
}

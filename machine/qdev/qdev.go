// Package qdev owns the board-independent half of QEMU's -drive, -blockdev and -device:
// the table of device types a user can name (virtio-blk-pci, virtio-net-pci,
// virtio-rng-device, ...), their properties, `-device help` and `-device TYPE,help`,
// opening drives through block/backend, connecting NICs to the -netdev backends the
// caller opened (hw/netdev; QEMU's default MACs), and plugging the built device into whatever the board offers (a PCI
// bus, virtio-mmio slots) through the Board interface.
//
// It must not know a board's memory map or interrupt wiring (the board implements
// Board), nor how the command line is tokenised (it takes parsed Props).
package qdev

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"gemu/block/backend"
	"gemu/hw/chardev"
	"gemu/hw/netdev"
	"gemu/hw/pci"
	"gemu/hw/virtio"
	"gemu/hw/virtio/blk"
	"gemu/hw/virtio/console"
	virtiopci "gemu/hw/virtio/pci"
	"gemu/hw/virtio/rng"
)

// Props is one parsed option string (cmd/internal/qemuopts.Opts satisfies it).
type Props interface {
	Get(key string) (string, bool)
	Keys() []string
}

// Board is what a board offers devices.
type Board interface {
	// Memory is guest RAM as devices reach it by DMA.
	Memory() virtio.Memory
	// PCI is the bus PCI devices plug into, nil if the board has none.
	PCI() *pci.Bus
	// Express reports whether the PCI bus is PCI Express (virt's generic host).
	Express() bool
	// FirstPCISlot is the lowest slot a device may take when addr= is not given.
	FirstPCISlot() int
	// VirtioMMIO attaches dev to the next free virtio-mmio transport, or fails when the
	// board has none or all are taken.
	VirtioMMIO(dev virtio.Device) error
	// PCIHooks are the accelerator's fast paths for virtio-pci (zero value: none).
	PCIHooks() virtiopci.Hooks
}

// Env builds one machine's devices: the drives and chardevs are the process's (they
// outlive a guest reboot), the devices the machine's.
type Env struct {
	Board    Board
	Drives   map[string]*backend.Backend
	Chardevs map[string]chardev.Backend
	// RNGObjects are the ids of the process's -object rng-random/rng-builtin (the source
	// is always the host's getrandom, which is what /dev/urandom gives rng-random too).
	RNGObjects map[string]bool
	// Netdevs are the process's -netdev backends by id (the caller sets them).
	Netdevs map[string]netdev.Backend
	// Vsock are the process's vsock host sockets (vsock.go); nil: the Env makes its own.
	Vsock *VsockHosts
	// Warn prints a one-line warning (the main's stderr).
	Warn func(string)
	// StopOnError, if set, is werror=stop / rerror=stop: it pauses the guest and
	// blocks until the guest is resumed (true: retry the request) or ctx ends.
	StopOnError func(ctx context.Context, drive string, write bool, err error) bool

	mu       sync.Mutex
	usedPCI  map[int]bool
	serials  []*serialBus // virtio-serial buses, in creation order
	resets   []func()
	attached map[string]string // drive id → device that took it
	net      netState          // NICs (net.go)
	vsock    vsockState        // vsock devices (vsock.go)
	hp       hotplugState      // root ports and devices by id (hotplug.go)
}

// NewEnv returns an Env for board.
func NewEnv(b Board, drives map[string]*backend.Backend, chardevs map[string]chardev.Backend) *Env {
	return &Env{Board: b, Drives: drives, Chardevs: chardevs, usedPCI: map[int]bool{}, attached: map[string]string{},
		Warn: func(string) {}}
}

type devType struct {
	name, bus, desc string
	// aliasOf names the type this one is a short name for (virtio-blk → virtio-blk-pci).
	aliasOf string
	props   []string
	build   func(e *Env, p Props) (virtio.Device, error)
	// finish, if set, runs instead of plugging a virtio device (virtconsole and
	// virtserialport attach to a virtio-serial bus).
	finish func(e *Env, p Props) error
}

// commonPCI and commonMMIO are the properties every device of that transport takes.
var (
	commonPCI  = []string{"id", "bus", "addr", "multifunction", "vectors", "disable-legacy", "disable-modern", "romfile"}
	commonMMIO = []string{"id", "bus"}
	blkProps   = []string{"drive", "serial", "num-queues", "queue-size", "logical_block_size", "physical_block_size",
		"min_io_size", "opt_io_size", "discard", "write-zeroes", "seg-max-adjust", "config-wce", "share-rw", "bootindex"}
	rngProps    = []string{"rng", "max-bytes", "period"}
	serialProps = []string{"max_ports"}
)

var types = map[string]devType{}

func register(d devType) { types[d.name] = d }

func init() {
	for _, tr := range []struct {
		suffix, bus string
		props       []string
	}{{"-pci", "PCI", commonPCI}, {"-device", "virtio-bus", commonMMIO}} {
		register(devType{name: "virtio-blk" + tr.suffix, bus: tr.bus, desc: "Virtio block device",
			props: append(append([]string{}, tr.props...), blkProps...), build: buildBlk})
		register(devType{name: "virtio-rng" + tr.suffix, bus: tr.bus, desc: "Virtio entropy source",
			props: append(append([]string{}, tr.props...), rngProps...), build: buildRng})
		register(devType{name: "virtio-serial" + tr.suffix, bus: tr.bus, desc: "Virtio serial (console) bus",
			props: append(append([]string{}, tr.props...), serialProps...), build: buildSerial})
	}
	// QEMU's short aliases; and its -non-transitional names, which are exactly gemu's
	// modern-only virtio-pci devices.
	for alias, to := range map[string]string{"virtio-blk": "virtio-blk-pci", "virtio-rng": "virtio-rng-pci", "virtio-serial": "virtio-serial-pci"} {
		d := types[to]
		d.name, d.aliasOf = alias, to
		register(d)
	}
	for _, base := range []string{"virtio-blk", "virtio-rng", "virtio-serial"} {
		d := types[base+"-pci"]
		d.name = base + "-pci-non-transitional"
		register(d)
	}
	register(devType{name: "virtconsole", bus: "virtio-serial-bus", desc: "Virtio console port (hvc)",
		props: []string{"id", "bus", "chardev", "name", "nr"}, finish: addPort(true)})
	register(devType{name: "virtserialport", bus: "virtio-serial-bus", desc: "Virtio serial port",
		props: []string{"id", "bus", "chardev", "name", "nr"}, finish: addPort(false)})
}

// Help lists the device types, as `-device help` does, in QEMU's categories and
// format (an alias is named on the device it stands for).
func Help() string {
	aliases := map[string]string{}
	var names []string
	for n, d := range types {
		if d.aliasOf != "" {
			aliases[d.aliasOf] = n
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	cat := func(n string) string {
		switch {
		case strings.HasPrefix(n, "virtio-blk"):
			return "Storage devices"
		case strings.HasPrefix(n, "virtio-net"):
			return "Network devices"
		case strings.HasPrefix(n, "virtio-serial"), n == "virtconsole", n == "virtserialport":
			return "Input devices"
		}
		return "Misc devices"
	}
	var b strings.Builder
	for _, c := range []string{"Storage devices", "Network devices", "Input devices", "Misc devices"} {
		fmt.Fprintf(&b, "%s:\n", c)
		for _, n := range names {
			if cat(n) != c {
				continue
			}
			fmt.Fprintf(&b, "name \"%s\", bus %s", n, types[n].bus)
			if a := aliases[n]; a != "" {
				fmt.Fprintf(&b, ", alias \"%s\"", a)
			}
			b.WriteString("\n")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// PropHelp lists a device type's properties, as `-device TYPE,help` does.
func PropHelp(name string) (string, error) {
	d, ok := types[name]
	if !ok {
		return "", fmt.Errorf("'%s' is not a valid device model name", name)
	}
	props := append([]string{}, d.props...)
	sort.Strings(props)
	var b strings.Builder
	fmt.Fprintf(&b, "%s options:\n", name)
	for _, p := range props {
		fmt.Fprintf(&b, "  %s\n", p)
	}
	return b.String(), nil
}

// Known reports whether name is a device type (for callers that route other types,
// such as NICs, elsewhere).
func Known(name string) bool { _, ok := types[name]; return ok }

// Add creates the device p describes (driver= names the type) and plugs it in.
func (e *Env) Add(p Props) error { return e.add(p, true) }

// add is Add for the command line (cli: errors carry the -device prefix) or for
// device_add (QEMU's texts alone).
func (e *Env) add(p Props, cli bool) error {
	name, _ := p.Get("driver")
	wrap := func(err error) error {
		if cli {
			return fmt.Errorf("-device %s: %w", name, err)
		}
		return err
	}
	d, ok := types[name]
	if !ok {
		if name == "" {
			return errors.New("-device: Parameter 'driver' is missing")
		}
		return fmt.Errorf("-device %s: '%s' is not a valid device model name (see -device help)", name, name)
	}
	allowed := map[string]bool{"driver": true}
	for _, k := range d.props {
		allowed[k] = true
	}
	for _, k := range p.Keys() {
		if !allowed[k] {
			return wrap(fmt.Errorf("Property '%s.%s' not found", name, k))
		}
	}
	if d.finish != nil {
		return d.finish(e, p)
	}
	if err := e.claimID(p); err != nil {
		return wrap(err)
	}
	dev, err := d.build(e, p)
	if err != nil {
		return wrap(err)
	}
	if strings.HasSuffix(d.bus, "PCI") {
		err = e.plugPCI(p, dev)
	} else {
		err = e.Board.VirtioMMIO(dev)
	}
	if err != nil {
		e.releaseClaims(p)
		return wrap(err)
	}
	return nil
}

// plugPCI wraps dev in a virtio-pci function and adds it at addr= or the next free slot.
func (e *Env) plugPCI(p Props, dev virtio.Device) error {
	pb := e.Board.PCI()
	if pb == nil {
		return errors.New("No PCI bus on this machine (use the -device variant of the device)")
	}
	if v, ok := p.Get("disable-modern"); ok && isOn(v) {
		return errors.New("disable-modern=on is not supported: gemu's virtio-pci is modern-only")
	}
	if v, ok := p.Get("disable-legacy"); ok && !isOn(v) {
		return errors.New("disable-legacy=off is not supported: gemu's virtio-pci is modern-only")
	}
	drv, _ := p.Get("driver")
	target, port, busName, err := e.pciTarget(p, drv)
	if err != nil {
		return err
	}
	vectors := 0
	if v, ok := p.Get("vectors"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 2048 {
			return fmt.Errorf("Parameter 'vectors' expects a number from 1 to 2048")
		}
		vectors = n
	}
	slot, fn := 0, 0
	if port == nil {
		if slot, fn, err = e.pickSlot(p); err != nil {
			return err
		}
		if err := e.checkRootHotplug(slot, fn, drv); err != nil {
			e.mu.Lock()
			delete(e.usedPCI, slot)
			e.mu.Unlock()
			return err
		}
	}
	vd, err := virtiopci.New(dev, e.Board.Memory(), virtiopci.Config{Vectors: vectors, Express: port != nil || e.Board.Express(), Hooks: e.Board.PCIHooks()})
	if err != nil {
		return err
	}
	if err := target.Add(uint8(slot), uint8(fn), vd.Function()); err != nil {
		return fmt.Errorf("PCI: slot %d function %d not available for the device: %v", slot, fn, err)
	}
	e.mu.Lock()
	e.resets = append(e.resets, vd.Reset)
	e.mu.Unlock()
	if err := e.recordPCI(p, busName, port, slot, vd); err != nil {
		return err
	}
	if port != nil {
		return nil // the board records root-bus functions only (by slot and function)
	}
	if r, ok := e.Board.(VirtioPCIRecorder); ok {
		r.VirtioPCIAdded(slot, fn, vd)
	}
	return nil
}

// VirtioPCIRecorder is optionally implemented by a Board that wants the virtio-pci
// functions it gets (to save their state for migration).
type VirtioPCIRecorder interface {
	VirtioPCIAdded(slot, fn int, d *virtiopci.Device)
}

// parseAddr reads addr=SLOT[.FN] (hexadecimal, as QEMU).
func parseAddr(a string) (int, int, error) {
	s, f, hasFn := strings.Cut(a, ".")
	slot, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 8)
	if err != nil || slot > 31 {
		return 0, 0, fmt.Errorf("Property 'addr' doesn't take value '%s'", a)
	}
	fn := uint64(0)
	if hasFn {
		if fn, err = strconv.ParseUint(f, 16, 8); err != nil || fn > 7 {
			return 0, 0, fmt.Errorf("Property 'addr' doesn't take value '%s'", a)
		}
	}
	return int(slot), int(fn), nil
}

func isOn(v string) bool {
	on, err := onOff("", v)
	return err == nil && on
}

func boolProp(p Props, key string, def bool) (bool, error) {
	v, ok := p.Get(key)
	if !ok {
		return def, nil
	}
	return onOff(key, v)
}

func numProp(p Props, key string, def, max uint64) (uint64, error) {
	v, ok := p.Get(key)
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseUint(v, 0, 64)
	if err != nil || n > max {
		return 0, fmt.Errorf("Parameter '%s' expects a number up to %d", key, max)
	}
	return n, nil
}

func buildBlk(e *Env, p Props) (virtio.Device, error) {
	id, ok := p.Get("drive")
	if !ok || id == "" {
		return nil, errors.New("drive property not set")
	}
	be := e.Drives[id]
	if be == nil {
		return nil, fmt.Errorf("Property 'virtio-blk-device.drive' can't find value '%s'", id)
	}
	c := blk.Config{Backend: countIO(be), Discard: true, WriteZeroes: true, WriteZeroesMayUnmap: true}
	c.Serial, _ = p.Get("serial")
	if len(c.Serial) > blk.IDBytes {
		c.Serial = c.Serial[:blk.IDBytes]
	}
	var err error
	var n uint64
	if n, err = numProp(p, "num-queues", 1, 64); err != nil {
		return nil, err
	}
	c.NumQueues = int(max(n, 1))
	if n, err = numProp(p, "queue-size", 256, 1024); err != nil {
		return nil, err
	}
	if n&(n-1) != 0 || n < 4 {
		return nil, errors.New("queue-size property must be a power of 2 from 4 to 1024")
	}
	c.QueueSize = uint16(n)
	if n, err = numProp(p, "logical_block_size", 512, 1<<16); err != nil {
		return nil, err
	}
	if n < 512 || n&(n-1) != 0 {
		return nil, errors.New("logical_block_size must be a power of 2 of at least 512")
	}
	c.BlockSize = uint32(n)
	if c.Discard, err = boolProp(p, "discard", true); err != nil {
		return nil, err
	}
	if c.WriteZeroes, err = boolProp(p, "write-zeroes", true); err != nil {
		return nil, err
	}
	e.mu.Lock()
	other, taken := e.attached[id]
	e.mu.Unlock()
	if taken {
		return nil, fmt.Errorf("Drive '%s' is already in use by %s", id, other)
	}
	c.OnError = e.errorPolicy(id, be)
	dev, err := blk.New(c)
	if err != nil {
		return nil, err
	}
	drv, _ := p.Get("driver")
	e.mu.Lock()
	e.attached[id] = drv
	e.mu.Unlock()
	return dev, nil
}

// errorPolicy maps the drive's werror/rerror to the device's action. "stop" would
// pause the VM until the monitor's cont; without a monitor gemu reports the error to
// the guest and says so.
func (e *Env) errorPolicy(id string, be *backend.Backend) func(ctx context.Context, r blk.Request, err error) blk.ErrorAction {
	return func(ctx context.Context, r blk.Request, err error) blk.ErrorAction {
		write := r.Type == blk.TOut || r.Type == blk.TWriteZeroes || r.Type == blk.TDiscard || r.Type == blk.TFlush
		switch be.ErrorAction(err, write) {
		case backend.Ignore:
			return blk.ErrorIgnore
		case backend.Stop:
			if e.StopOnError != nil && e.StopOnError(ctx, id, write, err) {
				return blk.ErrorRetry
			}
			if e.StopOnError == nil {
				e.Warn(fmt.Sprintf("drive %s: %v (error policy stop, but nothing can resume the guest: reported to it)", id, err))
			}
		}
		return blk.ErrorReport
	}
}

func buildRng(e *Env, p Props) (virtio.Device, error) {
	if v, ok := p.Get("rng"); ok && v != "" {
		if !e.RNGObjects[v] {
			return nil, fmt.Errorf("Property 'rng' can't find value '%s'", v)
		}
	}
	return rng.New(), nil
}

// serialBus is a virtio-serial device being assembled: ports are added by later
// -device virtconsole/virtserialport options, and the device is built when the
// machine starts (Finish).
type serialBus struct {
	id       string
	pci      bool
	props    Props
	maxPorts int
	ports    []console.Port
	dev      *lazySerial
}

func buildSerial(e *Env, p Props) (virtio.Device, error) {
	n, err := numProp(p, "max_ports", 31, 31)
	if err != nil {
		return nil, err
	}
	id, _ := p.Get("id")
	sb := &serialBus{id: id, props: p, maxPorts: int(n)}
	sb.dev = &lazySerial{bus: sb}
	e.mu.Lock()
	e.serials = append(e.serials, sb)
	e.mu.Unlock()
	return sb.dev, nil
}

func addPort(isConsole bool) func(e *Env, p Props) error {
	return func(e *Env, p Props) error {
		name, _ := p.Get("driver")
		e.mu.Lock()
		defer e.mu.Unlock()
		if len(e.serials) == 0 {
			return fmt.Errorf("-device %s: No 'virtio-serial-bus' bus found for device '%s'", name, name)
		}
		sb := e.serials[len(e.serials)-1]
		if b, ok := p.Get("bus"); ok {
			sb = nil
			for _, s := range e.serials {
				if s.id != "" && strings.HasPrefix(b, s.id) {
					sb = s
				}
			}
			if sb == nil {
				return fmt.Errorf("-device %s: Bus '%s' not found", name, b)
			}
		}
		port := console.Port{Console: isConsole}
		port.Name, _ = p.Get("name")
		if cid, ok := p.Get("chardev"); ok {
			be := e.Chardevs[cid]
			if be == nil {
				return fmt.Errorf("-device %s: Property '%s.chardev' can't find value '%s'", name, name, cid)
			}
			port.Backend = be
		}
		if sb.dev.built() {
			return fmt.Errorf("-device %s: the virtio-serial bus is already running", name)
		}
		if len(sb.ports) >= sb.maxPorts {
			return fmt.Errorf("-device %s: virtio-serial bus has no free port (max_ports=%d)", name, sb.maxPorts)
		}
		sb.ports = append(sb.ports, port)
		return nil
	}
}

// Reset resets every PCI device the Env plugged (machine reset).
func (e *Env) Reset() {
	e.mu.Lock()
	rs := append([]func(){}, e.resets...)
	e.mu.Unlock()
	for _, r := range rs {
		r()
	}
}

// lazySerial is a virtio-serial device whose ports are added by -device options that
// follow it: the transport is built with a port-less device of the same shape (the
// queue count and features depend only on max_ports), and Finish swaps in the real
// one before the guest runs.
type lazySerial struct {
	bus *serialBus

	mu   sync.Mutex
	cur  *console.Device
	done bool
}

func (l *lazySerial) dev() *console.Device {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		d, err := console.New(console.Config{Multiport: true, MaxPorts: l.bus.maxPorts})
		if err != nil {
			panic(err) // maxPorts is checked by buildSerial
		}
		l.cur = d
	}
	return l.cur
}

func (l *lazySerial) built() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done
}

func (l *lazySerial) finish() error {
	d, err := console.New(console.Config{Multiport: true, MaxPorts: l.bus.maxPorts, Ports: l.bus.ports})
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.cur, l.done = d, true
	l.mu.Unlock()
	return nil
}

func (l *lazySerial) DeviceID() uint16                    { return l.dev().DeviceID() }
func (l *lazySerial) Features() uint64                    { return l.dev().Features() }
func (l *lazySerial) QueueMax() []uint16                  { return l.dev().QueueMax() }
func (l *lazySerial) ReadConfig(off uint64, data []byte)  { l.dev().ReadConfig(off, data) }
func (l *lazySerial) WriteConfig(off uint64, data []byte) { l.dev().WriteConfig(off, data) }
func (l *lazySerial) Activate(a virtio.Activation) error  { return l.dev().Activate(a) }
func (l *lazySerial) Reset()                              { l.dev().Reset() }

// Finish completes devices assembled from several options (virtio-serial buses and
// their ports). Call it once after the last Add, before the guest runs.
func (e *Env) Finish() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, sb := range e.serials {
		if !sb.dev.built() {
			if err := sb.dev.finish(); err != nil {
				return fmt.Errorf("-device virtio-serial: %w", err)
			}
		}
	}
	return nil
}

// Attached reports whether a device took drive id.
func (e *Env) Attached(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.attached[id]
	return ok
}

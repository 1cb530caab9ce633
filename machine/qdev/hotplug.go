package qdev

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"gemu/hw/pci"
	virtiopci "gemu/hw/virtio/pci"
)

// Hotplug, as QEMU's virt board does it: pcie-root-port devices on the root bus, each
// a bus of one slot named after the port's id, with native PCI Express hotplug
// (hw/pci.RootPort); device_add puts virtio-net-pci or virtio-blk-pci behind a free
// port and the port tells the guest, device_del presses the port's attention button
// and the device leaves once the guest has powered the slot off.

// ExpressHost is implemented by a Board whose PCI bus is a PCI Express root complex
// reachable through ECAM (virt), where root ports and the buses behind them work.
type ExpressHost interface {
	PCIeRoot() bool
}

// MSIController is implemented by a Board that says whether its guest can use MSIs.
// QEMU's pcie-root-port needs MSI-X and is refused where there is none (its hotplug
// interrupt would otherwise share the INTx line of the device below it).
type MSIController interface {
	MSIAvailable() bool
}

// RootHotplug is implemented by a Board whose root PCI bus itself takes hotplugged
// devices, as QEMU's pc does through ACPI PCI hotplug (the PIIX4 PM function's
// registers and the DSDT's slot devices): device_add with no bus= picks a free slot
// and the board tells the guest; device_del asks the guest to eject the slot.
type RootHotplug interface {
	// RootHotplugSlot reports whether slot of the root bus has hotplug.
	RootHotplugSlot(slot int) bool
	// PlugRootSlot tells the guest a device appeared in slot.
	PlugRootSlot(slot int)
	// RequestRootUnplug asks the guest to eject slot; done runs (from the vCPU
	// thread of the guest's eject) once it has.
	RequestRootUnplug(slot int, done func()) error
}

// VirtioPCIRemover is optionally implemented by a VirtioPCIRecorder Board that wants
// to know when a root-bus function it was given leaves (unplugged).
type VirtioPCIRemover interface {
	VirtioPCIRemoved(slot, fn int)
}

func (e *Env) rootHotplug() RootHotplug {
	rh, _ := e.Board.(RootHotplug)
	return rh
}

// ErrDeviceNotFound is wrapped by Unplug's error for an id no device has (QMP's
// DeviceNotFound class).
var ErrDeviceNotFound = errors.New("device not found")

// hotplugState is an Env's root ports and the devices it can find by id.
type hotplugState struct {
	ports    map[string]*pci.RootPort // by id, which names the port's bus
	order    []string                 // port ids in creation order
	devices  map[string]*plugged      // by id: every device given id=
	hot      bool                     // the Add in progress is a device_add
	nics     []NICInfo                // info network
	anonNICs int                      // NICs named model.N
}

// plugged is one device with an id.
type plugged struct {
	id, driver string
	busName    string
	port       *pci.RootPort // nil: not behind a root port
	slot       int           // its root-bus slot when port is nil
	vd         *virtiopci.Device
	drive      string // the drive it took, "" for none
	netdev     string // the netdev it took, "" for none
	request    time.Time
}

// unplugGrace is how long a device_del waits for the guest before a repeated
// device_del presses the button again (QEMU's pending_deleted_expires_ms).
const unplugGrace = 5 * time.Second

func (h *hotplugState) init() {
	if h.ports == nil {
		h.ports, h.devices = map[string]*pci.RootPort{}, map[string]*plugged{}
	}
}

// hotpluggable are the device types device_add plugs.
var hotpluggable = map[string]bool{
	"virtio-net-pci": true, "virtio-net": true, "virtio-net-pci-non-transitional": true,
	"virtio-blk-pci": true, "virtio-blk": true, "virtio-blk-pci-non-transitional": true,
}

func init() {
	register(devType{name: "pcie-root-port", bus: "PCI", desc: "PCI Express Root Port",
		props: []string{"id", "bus", "addr", "multifunction", "chassis", "slot", "port", "hotplug"}, finish: addRootPort})
}

// claimID checks a new device's id (QEMU: ids are unique across devices).
func (e *Env) claimID(p Props) error {
	id, ok := p.Get("id")
	if !ok {
		return nil
	}
	if id == "" {
		return errors.New("Property 'id' doesn't take value ''")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hp.init()
	if _, dup := e.hp.devices[id]; dup {
		return fmt.Errorf("Duplicate device ID '%s'", id)
	}
	if _, dup := e.hp.ports[id]; dup {
		return fmt.Errorf("Duplicate device ID '%s'", id)
	}
	return nil
}

func addRootPort(e *Env, p Props) error {
	drv, _ := p.Get("driver")
	fail := func(err error) error { return fmt.Errorf("-device %s: %w", drv, err) }
	if eh, ok := e.Board.(ExpressHost); !ok || !eh.PCIeRoot() || e.Board.PCI() == nil {
		return fail(errors.New("pcie-root-port needs a PCI Express root bus (the virt board's pcie.0)"))
	}
	if e.hotplugging() {
		return errors.New("Bus 'pcie.0' does not support hotplugging")
	}
	if mc, ok := e.Board.(MSIController); ok && !mc.MSIAvailable() {
		return fail(errors.New("MSI-X is not supported by interrupt controller"))
	}
	if err := e.claimID(p); err != nil {
		return fail(err)
	}
	if b, ok := p.Get("bus"); ok && b != "pcie.0" {
		return fail(fmt.Errorf("Bus '%s' not found", b))
	}
	var rc pci.RootPortConfig
	for _, f := range []struct {
		key string
		v   *int
		max uint64
	}{{"chassis", &rc.Chassis, 0xff}, {"slot", &rc.Slot, 0x1fff}, {"port", &rc.Port, 0xff}} {
		n, err := numProp(p, f.key, 0, f.max)
		if err != nil {
			return fail(err)
		}
		*f.v = int(n)
	}
	if on, err := boolProp(p, "hotplug", true); err != nil || !on {
		if err == nil {
			err = errors.New("hotplug=off is not supported")
		}
		return fail(err)
	}
	rp, err := pci.NewRootPort(e.Board.PCI(), rc)
	if err != nil {
		return fail(err)
	}
	slot, fn, err := e.pickSlot(p)
	if err != nil {
		return fail(err)
	}
	if err := e.Board.PCI().Add(uint8(slot), uint8(fn), rp); err != nil {
		return fail(fmt.Errorf("PCI: slot %d function %d not available for %s: %v", slot, fn, drv, err))
	}
	id, _ := p.Get("id")
	if id == "" {
		id = fmt.Sprintf("pcie.0-root-port.%d", slot) // reachable only by device_add without bus=
	}
	e.mu.Lock()
	e.hp.init()
	e.hp.ports[id] = rp
	e.hp.order = append(e.hp.order, id)
	e.mu.Unlock()
	return nil
}

// rootBusName is the root PCI bus's QEMU name: pcie.0 on a PCI Express host, pci.0
// otherwise.
func (e *Env) rootBusName() string {
	if eh, ok := e.Board.(ExpressHost); ok && eh.PCIeRoot() {
		return "pcie.0"
	}
	return "pci.0"
}

func (e *Env) hotplugging() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.hp.hot
}

// pciTarget is where a PCI device goes: the root bus (port nil) or the bus behind a
// root port named by bus= (or, for device_add without bus=, the first free one).
func (e *Env) pciTarget(p Props, drv string) (pb *pci.Bus, port *pci.RootPort, busName string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hp.init()
	b, ok := p.Get("bus")
	switch {
	case !ok && e.hp.hot:
		for _, id := range e.hp.order {
			if rp := e.hp.ports[id]; !rp.Present() && rp.Secondary().Function(0, 0) == nil {
				return rp.Secondary(), rp, id, nil
			}
		}
		if e.rootHotplug() != nil {
			return e.Board.PCI(), nil, e.rootBusName(), nil
		}
		return nil, nil, "", fmt.Errorf("Bus '%s' does not support hotplugging", e.rootBusName())
	case !ok, b == "pcie.0", b == "pci.0":
		if e.hp.hot && (e.rootHotplug() == nil || b != e.rootBusName()) {
			return nil, nil, "", fmt.Errorf("Bus '%s' does not support hotplugging", e.rootBusName())
		}
		return e.Board.PCI(), nil, e.rootBusName(), nil
	}
	rp := e.hp.ports[b]
	if rp == nil {
		return nil, nil, "", fmt.Errorf("Bus '%s' not found", b)
	}
	if a, ok := p.Get("addr"); ok {
		if s, _, err := parseAddr(a); err != nil || s != 0 {
			return nil, nil, "", fmt.Errorf("PCI: slot %d is not valid for %s, parent device only allows plugging into slot 0.", s, drv)
		}
	}
	if rp.Present() || rp.Secondary().Function(0, 0) != nil {
		return nil, nil, "", fmt.Errorf("PCI: no slot/function available for %s, all in use or reserved", drv)
	}
	return rp.Secondary(), rp, b, nil
}

// pickSlot is the root-bus slot for a device: addr= or the next free one.
func (e *Env) pickSlot(p Props) (slot, fn int, err error) {
	pb := e.Board.PCI()
	slot = -1
	if a, ok := p.Get("addr"); ok {
		if slot, fn, err = parseAddr(a); err != nil {
			return 0, 0, err
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if slot < 0 {
		for s := e.Board.FirstPCISlot(); s < 32; s++ {
			if !e.usedPCI[s] && pb.Function(uint8(s), 0) == nil {
				slot = s
				break
			}
		}
		if slot < 0 {
			return 0, 0, errors.New("PCI: no slot available for the device")
		}
	}
	e.usedPCI[slot] = true
	return slot, fn, nil
}

// recordPCI notes a virtio-pci device just added (by id, for device_del) and tells
// its root port, if it has one, that the slot is occupied.
func (e *Env) recordPCI(p Props, busName string, port *pci.RootPort, slot int, vd *virtiopci.Device) error {
	d := &plugged{busName: busName, port: port, slot: slot, vd: vd}
	d.id, _ = p.Get("id")
	d.driver, _ = p.Get("driver")
	d.drive, _ = p.Get("drive")
	d.netdev, _ = p.Get("netdev")
	e.mu.Lock()
	hot := e.hp.hot
	e.hp.init()
	if d.id != "" {
		e.hp.devices[d.id] = d
	}
	e.mu.Unlock()
	if port != nil {
		return port.Plug(hot)
	}
	if rh := e.rootHotplug(); hot && rh != nil {
		rh.PlugRootSlot(slot)
	}
	return nil
}

// checkRootHotplug refuses a device_add into a root-bus slot or function the board
// cannot announce to the guest.
func (e *Env) checkRootHotplug(slot, fn int, drv string) error {
	rh := e.rootHotplug()
	if rh == nil || !e.hotplugging() {
		return nil
	}
	if !rh.RootHotplugSlot(slot) {
		return fmt.Errorf("PCI: slot %d of bus '%s' has no hotplug for %s", slot, e.rootBusName(), drv)
	}
	if fn != 0 {
		return fmt.Errorf("PCI: hotplug of function %d is not supported (only function 0 of slot %d)", fn, slot)
	}
	return nil
}

// Hotplug is device_add: the device p describes is built and plugged behind a root
// port of the running guest, which is told. Errors are QEMU's texts, without the
// -device prefix.
func (e *Env) Hotplug(p Props) error {
	name, ok := p.Get("driver")
	if !ok || name == "" {
		return errors.New("Parameter 'driver' is missing")
	}
	d, known := types[name]
	if !known {
		return fmt.Errorf("'%s' is not a valid device model name", name)
	}
	if !hotpluggable[name] {
		switch {
		case d.bus == "virtio-bus":
			return errors.New("Bus 'virtio-mmio-bus' does not support hotplugging")
		case name == "pcie-root-port":
			return errors.New("Bus 'pcie.0' does not support hotplugging")
		}
		return fmt.Errorf("Parameter 'driver' expects a pluggable device type (gemu hotplugs virtio-net-pci and virtio-blk-pci; '%s' is not one)", name)
	}
	e.mu.Lock()
	e.hp.hot = true
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.hp.hot = false
		e.mu.Unlock()
	}()
	return e.add(p, false)
}

// Unplug is device_del: the device with the given id is asked to leave (its root
// port's attention button); deleted runs once it has (the guest powered the slot
// off, or at once when the slot had no power), after the device is reset and its
// drive and netdev are free again.
func (e *Env) Unplug(id string, deleted func()) error {
	e.mu.Lock()
	e.hp.init()
	d := e.hp.devices[id]
	_, isPort := e.hp.ports[id]
	e.mu.Unlock()
	switch {
	case isPort:
		return errors.New("Bus 'pcie.0' does not support hotplugging")
	case d == nil:
		return fmt.Errorf("Device '%s' not found: %w", id, ErrDeviceNotFound)
	case d.port == nil && (e.rootHotplug() == nil || d.busName != e.rootBusName() || !e.rootHotplug().RootHotplugSlot(d.slot)):
		return fmt.Errorf("Bus '%s' does not support hotplugging", d.busName)
	}
	e.mu.Lock()
	if !d.request.IsZero() && time.Since(d.request) < unplugGrace {
		e.mu.Unlock()
		return fmt.Errorf("Device %s is already in the process of unplug", id)
	}
	d.request = time.Now()
	e.mu.Unlock()
	done := func() {
		e.finishUnplug(d)
		if deleted != nil {
			deleted()
		}
	}
	if d.port == nil {
		return e.rootHotplug().RequestRootUnplug(d.slot, done)
	}
	return d.port.RequestUnplug(done)
}

func (e *Env) finishUnplug(d *plugged) {
	if d.port != nil {
		d.port.Secondary().Remove(0, 0)
	} else {
		e.Board.PCI().Remove(uint8(d.slot), 0)
		if r, ok := e.Board.(VirtioPCIRemover); ok {
			r.VirtioPCIRemoved(d.slot, 0)
		}
	}
	d.vd.Reset()
	e.mu.Lock()
	defer e.mu.Unlock()
	if d.port == nil {
		delete(e.usedPCI, d.slot)
	}
	if e.hp.devices[d.id] == d {
		delete(e.hp.devices, d.id)
	}
	if d.drive != "" {
		delete(e.attached, d.drive)
	}
	if d.netdev != "" {
		delete(e.net.used, d.netdev)
	}
	for i, n := range e.hp.nics {
		if n.Name == d.id {
			e.hp.nics = append(e.hp.nics[:i], e.hp.nics[i+1:]...)
			break
		}
	}
}

// DeviceIDs lists the ids of the devices that can be found (device_del, info qtree).
func (e *Env) DeviceIDs() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]string{}
	for id, d := range e.hp.devices {
		out[id] = d.driver
	}
	for id := range e.hp.ports {
		out[id] = "pcie-root-port"
	}
	return out
}

// NetdevPeer is the id of the device using netdev id ("" for none).
func (e *Env) NetdevPeer(id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	for did, d := range e.hp.devices {
		if d.netdev == id {
			return did
		}
	}
	return ""
}

// releaseClaims undoes what building a device that then failed to plug took: its
// drive and netdev, and a NIC's info network entry and default MAC (a failed
// device_add leaves no trace, as in QEMU: the next NIC gets the MAC it would have).
func (e *Env) releaseClaims(p Props) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if id, ok := p.Get("drive"); ok {
		delete(e.attached, id)
	}
	if id, ok := p.Get("netdev"); ok {
		delete(e.net.used, id)
	}
	drv, _ := p.Get("driver")
	if d, ok := types[drv]; !ok || !isNIC(d) || len(e.hp.nics) == 0 {
		return
	}
	e.hp.nics = e.hp.nics[:len(e.hp.nics)-1]
	if id, _ := p.Get("id"); id == "" {
		e.hp.anonNICs--
	}
	if _, ok := p.Get("mac"); !ok {
		e.net.nics--
	}
}

func isNIC(d devType) bool { return strings.HasPrefix(d.name, "virtio-net") }

// NICInfo is one NIC as info network lists it.
type NICInfo struct {
	Name, Model, MAC, Netdev string
}

func (e *Env) noteNIC(p Props, mac [6]byte) {
	n := NICInfo{MAC: fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5])}
	n.Model, _ = p.Get("driver")
	n.Netdev, _ = p.Get("netdev")
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hp.init()
	if id, ok := p.Get("id"); ok && id != "" {
		n.Name = id
	} else {
		n.Name = fmt.Sprintf("%s.%d", n.Model, e.hp.anonNICs)
		e.hp.anonNICs++
	}
	e.hp.nics = append(e.hp.nics, n)
}

// NICs lists the machine's NICs in creation order.
func (e *Env) NICs() []NICInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]NICInfo(nil), e.hp.nics...)
}

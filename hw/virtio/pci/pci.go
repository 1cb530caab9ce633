// Package pci owns the modern virtio-pci transport (virtio 1.x, spec 4.1): a PCI
// function (hw/pci) whose vendor capabilities point into one 64-bit memory BAR holding
// the common configuration, ISR, device configuration and notification regions, with
// an MSI-X table in a second BAR and INTx as the fallback. It is the modern-only
// ("disable-legacy=on") layout QEMU gives virtio devices behind PCI Express, with
// device IDs 0x1040 + virtio device ID.
//
// It maps registers onto virtio.Transport and implements virtio.Interrupt; it must not
// know what the device behind it does, which board it sits on, or which accelerator
// runs the guest (doorbells and interrupt routes come through optional hooks).
package pci

import (
	"encoding/binary"
	"fmt"
	"sync"

	"gemu/hw/bus"
	hwpci "gemu/hw/pci"
	"gemu/hw/virtio"
)

// BAR layout, as QEMU's virtio-pci (modern memory BAR 4, MSI-X in BAR 1).
const (
	msixBAR   = 1
	modernBAR = 4

	commonOff = 0x0000
	isrOff    = 0x1000
	deviceOff = 0x2000
	notifyOff = 0x3000
	regionLen = 0x1000
	barSize   = 0x4000

	// notifyMultiplier: queue q's doorbell is at notifyOff + 4*q.
	notifyMultiplier = 4

	msixTableOff = 0x000
	msixPBAOff   = 0x800
	msixBARSize  = 0x1000

	// NoVector is virtio's "no MSI-X vector" (VIRTIO_MSI_NO_VECTOR).
	NoVector = 0xffff
)

// Capability cfg_type values (spec 4.1.4).
const (
	capCommon = 1
	capNotify = 2
	capISR    = 3
	capDevice = 4
	capPCICfg = 5
)

// Common configuration register offsets (struct virtio_pci_common_cfg).
const (
	ccDeviceFeatureSel = 0x00
	ccDeviceFeature    = 0x04
	ccDriverFeatureSel = 0x08
	ccDriverFeature    = 0x0c
	ccConfigMSIX       = 0x10
	ccNumQueues        = 0x12
	ccStatus           = 0x14
	ccConfigGen        = 0x15
	ccQueueSelect      = 0x16
	ccQueueSize        = 0x18
	ccQueueMSIX        = 0x1a
	ccQueueEnable      = 0x1c
	ccQueueNotifyOff   = 0x1e
	ccQueueDesc        = 0x20
	ccQueueDriver      = 0x28
	ccQueueDevice      = 0x30
	ccLen              = 0x38
)

// Hooks are the accelerator's optional fast paths, supplied by the board.
type Hooks struct {
	// Doorbell registers fn to run when the guest writes size bytes at the
	// guest-physical addr, instead of the write exiting to the bus (KVM ioeventfd).
	// nil: notifications take the bus path.
	Doorbell func(addr uint64, size uint32, fn func()) (cancel func(), err error)
	// Route returns a function that delivers MSI message (addr, data) faster than the
	// bus's MSISink (KVM irqfd), and a function to release it. nil: MSISink.
	Route func(addr uint64, data uint32) (fire func(), update func(addr uint64, data uint32), release func(), err error)
}

// Device is one virtio-pci function.
type Device struct {
	cfg   *hwpci.ConfigSpace
	t     *virtio.Transport
	msix  *hwpci.MSIX
	hooks Hooks
	nq    int

	mu        sync.Mutex
	isr       uint8
	configVec uint16
	queueVec  []uint16
	devSel    uint32 // device_feature_select, driver_feature_select as written
	drvSel    uint32

	// Fast paths, set while the driver runs (DRIVER_OK) and torn down at reset.
	fastMu    sync.Mutex
	doorbells []func()
	routes    map[int]*route
}

type route struct {
	fire    func()
	update  func(uint64, uint32)
	release func()
	masked  bool
}

// Config names the device's PCI identity and interrupt budget.
type Config struct {
	// Class is the PCI class code (class<<16 | subclass<<8 | prog-if); 0 picks the
	// class QEMU uses for the device type.
	Class uint32
	// Vectors is the number of MSI-X vectors: 0 means one per queue plus one for
	// configuration changes, as QEMU's default "vectors" property.
	Vectors int
	// Express makes it a PCI Express endpoint (behind virt's PCIe host; the PC's
	// i440FX bus is conventional PCI).
	Express bool
	Hooks   Hooks
}

// New builds the function for dev over guest memory mem. Plug the returned
// ConfigSpace into a hwpci.Bus with Add.
func New(dev virtio.Device, mem virtio.Memory, c Config) (*Device, error) {
	id := dev.DeviceID()
	class := c.Class
	if class == 0 {
		class = defaultClass(id)
	}
	d := &Device{hooks: c.Hooks, configVec: NoVector}
	d.cfg = hwpci.NewConfigSpace(0x1af4, 0x1040+id, class, 1)
	le := binary.LittleEndian
	var sub [4]byte
	le.PutUint16(sub[0:], 0x1af4)
	le.PutUint16(sub[2:], 0x1040+id)
	if err := d.cfg.SetConfig(hwpci.RegSubVendor, sub[:]); err != nil {
		return nil, err
	}
	d.t = virtio.NewTransport(dev, mem, d)
	d.nq = d.t.NumQueues()
	d.queueVec = make([]uint16, d.nq)
	for i := range d.queueVec {
		d.queueVec[i] = NoVector
	}
	if err := d.cfg.AddBAR(modernBAR, hwpci.BARMem64|hwpci.BARPrefetch, barSize, regs{d}); err != nil {
		return nil, err
	}
	vectors := c.Vectors
	if vectors <= 0 {
		vectors = d.nq + 1
	}
	if err := d.cfg.AddBAR(msixBAR, hwpci.BARMem32, msixBARSize, nil); err != nil {
		return nil, err
	}
	var err error
	if d.msix, err = d.cfg.AddMSIX(vectors, msixBAR, msixTableOff, msixBAR, msixPBAOff); err != nil {
		return nil, err
	}
	d.msix.OnChange = d.vectorChanged
	// Doorbells follow the notify region: a BAR move or decode toggle while the driver
	// runs drops them, and they are registered again where the BAR now is.
	d.cfg.OnBARChange(func(i int, _ uint64, _ bool) {
		if i == modernBAR && d.t.Active() {
			d.stopDoorbells()
			d.startFast()
		}
	})
	for _, cp := range []struct {
		typ      byte
		off, len uint32
	}{{capCommon, commonOff, regionLen}, {capISR, isrOff, regionLen}, {capDevice, deviceOff, regionLen}} {
		if _, err := d.cfg.AddVendorCapability(capBody(cp.typ, modernBAR, cp.off, cp.len, nil)); err != nil {
			return nil, err
		}
	}
	mult := le.AppendUint32(nil, notifyMultiplier)
	if _, err := d.cfg.AddVendorCapability(capBody(capNotify, modernBAR, notifyOff, regionLen, mult)); err != nil {
		return nil, err
	}
	// VIRTIO_PCI_CAP_PCI_CFG: a window into the BARs through configuration space
	// (spec 4.1.4.9), which the spec requires even though Linux does not use it.
	pcfg, err := d.cfg.AddVendorCapability(capBody(capPCICfg, 0, 0, 0, make([]byte, 4)))
	if err != nil {
		return nil, err
	}
	// bar (byte), offset and length (le32) are the driver's to write.
	if err := d.cfg.SetWritable(pcfg+4, []byte{0xff}); err != nil {
		return nil, err
	}
	if err := d.cfg.SetWritable(pcfg+8, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}); err != nil {
		return nil, err
	}
	if err := d.cfg.Hook(pcfg+16, 4, d.pciCfgRead(pcfg), d.pciCfgWrite(pcfg)); err != nil {
		return nil, err
	}
	d.cfg.SetInterruptPin(hwpci.PinA)
	if c.Express {
		if _, err := d.cfg.EnableExpress(hwpci.ExpressEndpoint); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// capBody is a virtio_pci_cap after the ID, next and length bytes.
func capBody(typ byte, bar byte, off, n uint32, extra []byte) []byte {
	b := []byte{typ, bar, 0, 0, 0}
	b = binary.LittleEndian.AppendUint32(b, off)
	b = binary.LittleEndian.AppendUint32(b, n)
	return append(b, extra...)
}

func defaultClass(id uint16) uint32 {
	switch id {
	case 1:
		return 0x020000 // network controller
	case 2:
		return 0x010000 // SCSI storage controller, as QEMU's virtio-blk-pci
	case 3:
		return 0x078000 // simple communication controller
	}
	return 0x00ff00 // unclassified (virtio-rng, balloon)
}

// Function is the PCI function to plug into a bus.
func (d *Device) Function() *hwpci.ConfigSpace { return d.cfg }

// Transport is the common virtio state behind the registers.
func (d *Device) Transport() *virtio.Transport { return d.t }

// Used implements virtio.Interrupt.
func (d *Device) Used(q int) {
	vec := uint16(NoVector)
	d.mu.Lock()
	if q >= 0 && q < len(d.queueVec) {
		vec = d.queueVec[q]
	}
	d.mu.Unlock()
	d.interrupt(vec, 1)
}

// ConfigChanged implements virtio.Interrupt.
func (d *Device) ConfigChanged() {
	d.mu.Lock()
	vec := d.configVec
	d.mu.Unlock()
	d.interrupt(vec, 2)
}

// interrupt signals MSI-X vector vec when MSI-X is on (a vector of NoVector then
// means no interrupt, as the spec says), else sets ISR bit and asserts INTx.
func (d *Device) interrupt(vec uint16, isrBit uint8) {
	if d.msix.Enabled() {
		if vec == NoVector {
			return
		}
		if d.fire(int(vec)) {
			return
		}
		d.msix.Notify(int(vec))
		return
	}
	d.mu.Lock()
	d.isr |= isrBit
	d.mu.Unlock()
	d.cfg.SetIRQ(true)
}

// fire delivers vec through its fast route if it has an unmasked one.
func (d *Device) fire(vec int) bool {
	if d.hooks.Route == nil {
		return false
	}
	d.fastMu.Lock()
	r := d.routes[vec]
	if r == nil {
		addr, data, masked := d.msix.Vector(vec)
		if masked {
			d.fastMu.Unlock()
			return false
		}
		fire, update, release, err := d.hooks.Route(addr, data)
		if err != nil {
			d.fastMu.Unlock()
			return false
		}
		r = &route{fire: fire, update: update, release: release}
		if d.routes == nil {
			d.routes = map[int]*route{}
		}
		d.routes[vec] = r
	}
	masked := r.masked
	d.fastMu.Unlock()
	if masked {
		return false // Notify keeps the pending bit
	}
	r.fire()
	return true
}

// vectorChanged re-reads a vector's message for its fast route (MSIX.OnChange).
func (d *Device) vectorChanged(vec int) {
	d.fastMu.Lock()
	defer d.fastMu.Unlock()
	r := d.routes[vec]
	if r == nil {
		return
	}
	addr, data, masked := d.msix.Vector(vec)
	r.masked = masked
	if !masked {
		r.update(addr, data)
	}
}

// Reset is a machine reset (bus.Resetter through the function's owner).
func (d *Device) Reset() {
	d.stopFast()
	d.t.Reset()
	d.resetRegs()
}

func (d *Device) resetRegs() {
	d.mu.Lock()
	d.isr = 0
	d.devSel, d.drvSel = 0, 0
	d.configVec = NoVector
	for i := range d.queueVec {
		d.queueVec[i] = NoVector
	}
	d.mu.Unlock()
	d.cfg.SetIRQ(false)
}

// startFast registers doorbells for every queue at the BAR's current address.
func (d *Device) startFast() {
	if d.hooks.Doorbell == nil {
		return
	}
	base, ok := d.cfg.BAR(modernBAR)
	if !ok {
		return
	}
	d.fastMu.Lock()
	defer d.fastMu.Unlock()
	if d.doorbells != nil {
		return
	}
	d.doorbells = []func(){}
	for q := 0; q < d.nq; q++ {
		q := uint32(q)
		cancel, err := d.hooks.Doorbell(base+notifyOff+uint64(q)*notifyMultiplier, 2, func() { d.t.Notify(q) })
		if err != nil {
			break // the bus path still works
		}
		d.doorbells = append(d.doorbells, cancel)
	}
}

func (d *Device) stopFast() {
	d.stopDoorbells()
	d.fastMu.Lock()
	routes := d.routes
	d.routes = nil
	d.fastMu.Unlock()
	for _, r := range routes {
		r.release()
	}
}

func (d *Device) stopDoorbells() {
	d.fastMu.Lock()
	bells := d.doorbells
	d.doorbells = nil
	d.fastMu.Unlock()
	for _, c := range bells {
		c()
	}
}

// regs is the modern memory BAR.
type regs struct{ d *Device }

func (r regs) Read(_ bus.Access, off uint64, data []byte) {
	clear(data)
	d := r.d
	switch {
	case off < commonOff+regionLen:
		d.commonRead(off-commonOff, data)
	case off < isrOff+regionLen:
		if off == isrOff && len(data) >= 1 {
			// Reading the ISR clears it and deasserts INTx (spec 4.1.4.5.1).
			d.mu.Lock()
			data[0] = d.isr
			d.isr = 0
			d.mu.Unlock()
			d.cfg.SetIRQ(false)
		}
	case off < deviceOff+regionLen:
		d.t.ReadConfig(off-deviceOff, data)
	}
	// The notify region reads as zero.
}

func (r regs) Write(_ bus.Access, off uint64, data []byte) {
	d := r.d
	switch {
	case off < commonOff+regionLen:
		d.commonWrite(off-commonOff, data)
	case off >= deviceOff && off < deviceOff+regionLen:
		d.t.WriteConfig(off-deviceOff, data)
	case off >= notifyOff && off < notifyOff+regionLen:
		q := (off - notifyOff) / notifyMultiplier
		if q < uint64(d.nq) {
			d.t.Notify(uint32(q))
		}
	}
}

// commonRead serves struct virtio_pci_common_cfg; accesses must be of a field's
// width (or 32-bit halves of the 64-bit queue addresses), others read as zero.
func (d *Device) commonRead(off uint64, data []byte) {
	t := d.t
	le := binary.LittleEndian
	q := t.Queue()
	var v uint64
	w := uint64(len(data))
	switch {
	case off == ccDeviceFeatureSel && w == 4:
		d.mu.Lock()
		v = uint64(d.devSel)
		d.mu.Unlock()
	case off == ccDeviceFeature && w == 4:
		v = uint64(t.DeviceFeatureWindow())
	case off == ccDriverFeatureSel && w == 4:
		d.mu.Lock()
		v = uint64(d.drvSel)
		d.mu.Unlock()
	case off == ccDriverFeature && w == 4:
		v = uint64(t.DriverFeatureWindow())
	case off == ccConfigMSIX && w == 2:
		d.mu.Lock()
		v = uint64(d.configVec)
		d.mu.Unlock()
	case off == ccNumQueues && w == 2:
		v = uint64(d.nq)
	case off == ccStatus && w == 1:
		v = uint64(t.Status())
	case off == ccConfigGen && w == 1:
		v = uint64(uint8(t.ConfigGeneration()))
	case off == ccQueueSelect && w == 2:
		v = uint64(t.QueueSel())
	case off == ccQueueSize && w == 2:
		if int(t.QueueSel()) < d.nq {
			v = uint64(q.Size)
			if v == 0 {
				v = uint64(t.QueueMax())
			}
		}
	case off == ccQueueMSIX && w == 2:
		v = NoVector
		d.mu.Lock()
		if s := int(t.QueueSel()); s < d.nq {
			v = uint64(d.queueVec[s])
		}
		d.mu.Unlock()
	case off == ccQueueEnable && w == 2:
		if q.Ready {
			v = 1
		}
	case off == ccQueueNotifyOff && w == 2:
		v = uint64(t.QueueSel())
	case off >= ccQueueDesc && off < ccLen && (w == 4 || w == 8) && off%w == 0:
		field := [3]uint64{q.Desc, q.Driver, q.Device}[(off-ccQueueDesc)/8]
		v = field >> (8 * (off % 8))
	default:
		return
	}
	switch w {
	case 1:
		data[0] = byte(v)
	case 2:
		le.PutUint16(data, uint16(v))
	case 4:
		le.PutUint32(data, uint32(v))
	case 8:
		le.PutUint64(data, v)
	}
}

func (d *Device) commonWrite(off uint64, data []byte) {
	t := d.t
	w := uint64(len(data))
	var v uint64
	switch w {
	case 1:
		v = uint64(data[0])
	case 2:
		v = uint64(binary.LittleEndian.Uint16(data))
	case 4:
		v = uint64(binary.LittleEndian.Uint32(data))
	case 8:
		v = binary.LittleEndian.Uint64(data)
	default:
		return
	}
	switch {
	case off == ccDeviceFeatureSel && w == 4:
		d.mu.Lock()
		d.devSel = uint32(v)
		d.mu.Unlock()
		t.SetDeviceFeatureSel(uint32(v))
	case off == ccDriverFeatureSel && w == 4:
		d.mu.Lock()
		d.drvSel = uint32(v)
		d.mu.Unlock()
		t.SetDriverFeatureSel(uint32(v))
	case off == ccDriverFeature && w == 4:
		t.SetDriverFeatureWindow(uint32(v))
	case off == ccConfigMSIX && w == 2:
		d.mu.Lock()
		d.configVec = d.checkVector(uint16(v))
		d.mu.Unlock()
	case off == ccStatus && w == 1:
		if v == 0 {
			d.stopFast()
			t.SetStatus(0)
			d.resetRegs()
			return
		}
		t.SetStatus(uint8(v))
		if t.Active() {
			d.startFast()
		}
	case off == ccQueueSelect && w == 2:
		t.SetQueueSel(uint32(v))
	case off == ccQueueSize && w == 2:
		t.UpdateQueue(func(q *virtio.QueueConfig) { q.Size = uint16(v) })
	case off == ccQueueMSIX && w == 2:
		d.mu.Lock()
		if s := int(t.QueueSel()); s < d.nq {
			d.queueVec[s] = d.checkVector(uint16(v))
		}
		d.mu.Unlock()
	case off == ccQueueEnable && w == 2:
		if v == 1 {
			t.UpdateQueue(func(q *virtio.QueueConfig) { q.Ready = true })
		}
	case off >= ccQueueDesc && off < ccLen && (w == 4 || w == 8) && off%w == 0:
		shift := 8 * (off % 8)
		mask := uint64(1)<<(8*w) - 1
		if w == 8 {
			mask = ^uint64(0)
		}
		set := func(a *uint64) { *a = *a&^(mask<<shift) | (v&mask)<<shift }
		switch (off - ccQueueDesc) / 8 {
		case 0:
			t.UpdateQueue(func(q *virtio.QueueConfig) { set(&q.Desc) })
		case 1:
			t.UpdateQueue(func(q *virtio.QueueConfig) { set(&q.Driver) })
		case 2:
			t.UpdateQueue(func(q *virtio.QueueConfig) { set(&q.Device) })
		}
	}
}

// checkVector returns v if the function has that MSI-X vector, else NoVector: the
// driver reads the register back to learn the vector was refused (spec 4.1.5.1.2).
// d.mu is held.
func (d *Device) checkVector(v uint16) uint16 {
	if int(v) < d.msix.Len() {
		return v
	}
	return NoVector
}

// The PCI configuration access capability: the driver writes bar, offset and length,
// then reads or writes pci_cfg_data, which accesses that BAR region.
func (d *Device) pciCfgWindow(cap uint32) (bar byte, off uint32, n uint32) {
	var b [12]byte
	d.cfg.ConfigRead(cap+4, b[:1])
	d.cfg.ConfigRead(cap+8, b[4:12])
	return b[0], binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint32(b[8:])
}

func (d *Device) pciCfgRead(cap uint32) func(off uint32, data []byte) {
	return func(off uint32, data []byte) {
		bar, boff, n := d.pciCfgWindow(cap)
		clear(data)
		if bar != modernBAR || (n != 1 && n != 2 && n != 4) || uint64(boff)+uint64(n) > barSize {
			return
		}
		var buf [4]byte
		regs{d}.Read(bus.Host, uint64(boff), buf[:n])
		i := off - (cap + 16)
		copy(data, buf[i:])
	}
}

func (d *Device) pciCfgWrite(cap uint32) func(off uint32, data []byte) {
	return func(off uint32, data []byte) {
		bar, boff, n := d.pciCfgWindow(cap)
		if bar != modernBAR || (n != 1 && n != 2 && n != 4) || uint64(boff)+uint64(n) > barSize {
			return
		}
		i := off - (cap + 16)
		if i != 0 || uint32(len(data)) < n {
			return
		}
		regs{d}.Write(bus.Host, uint64(boff), data[:n])
	}
}

// String names the function for logs.
func (d *Device) String() string {
	return fmt.Sprintf("virtio-pci(device %d)", d.t.Device().DeviceID())
}

package virt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"gemu/hw/bus"
	"gemu/hw/virtio"
	virtiopci "gemu/hw/virtio/pci"
	"gemu/hw/vmstate"
)

// VirtioPCIAdded implements qdev.VirtioPCIRecorder: virtio-pci functions are saved
// as sections "virtio-pci@<slot>.<fn>".
func (m *Machine) VirtioPCIAdded(slot, fn int, d *virtiopci.Device) {
	if m.vpci == nil {
		m.vpci = map[[2]int]*virtiopci.Device{}
	}
	m.vpci[[2]int{slot, fn}] = d
}

// virtioTransports lists every virtio transport with a device: the mmio slots, then
// the virtio-pci functions in slot order.
func (m *Machine) virtioTransports() []*virtio.Transport {
	var ts []*virtio.Transport
	for _, d := range m.vmmio {
		if t := d.Transport(); t != nil {
			ts = append(ts, t)
		}
	}
	for dev := range 32 {
		for fn := range 8 {
			if d := m.vpci[[2]int{dev, fn}]; d != nil {
				ts = append(ts, d.Transport())
			}
		}
	}
	return ts
}

// Snapshots and migration of the board (hw/vmstate's stream): the configuration
// fingerprint, one section per vCPU and device, guest RAM. virtio-mmio slots with a
// device are sections "virtio-mmio@<base>", virtio-pci functions "virtio-pci@<slot>.<fn>";
// their queues are quiesced (requests in flight drained) for the save. Devices the board cannot save yet (a virtio device
// without state support, PCI functions other than the host bridge) make Save refuse
// with a line naming them, rather than write a stream a restore would silently get
// wrong.

// clockStateVersion is the "clock" section: the guest clock (the generic-timer
// counter's time base) in nanoseconds, one u64.
const clockStateVersion = 1

// pciHostStateVersion is the "pci-host" section: pci.ConfigSpace.SaveConfig of the
// host bridge.
const pciHostStateVersion = 1

// section is one saved part of the board: the stream's section name and the device.
type section struct {
	id  string
	dev bus.Stateful
}

type pciHost struct{ m *Machine }

func (p pciHost) SaveState() (bus.State, error) {
	return bus.State{Name: "pci-host", Version: pciHostStateVersion, Data: p.m.host.SaveConfig()}, nil
}

func (p pciHost) LoadState(s bus.State) error {
	if s.Name != "pci-host" || s.Version != pciHostStateVersion {
		return fmt.Errorf("pci-host: cannot load state %q version %d", s.Name, s.Version)
	}
	return p.m.host.LoadConfig(s.Data)
}

type guestClock struct{ m *Machine }

func (c guestClock) SaveState() (bus.State, error) {
	return bus.State{Name: "clock", Version: clockStateVersion,
		Data: binary.LittleEndian.AppendUint64(nil, uint64(c.m.engine.GuestTime()))}, nil
}

func (c guestClock) LoadState(s bus.State) error {
	if s.Name != "clock" || s.Version != clockStateVersion || len(s.Data) != 8 {
		return fmt.Errorf("clock: cannot load state %q version %d", s.Name, s.Version)
	}
	t := binary.LittleEndian.Uint64(s.Data)
	if t > 1<<62 || !c.m.engine.SetGuestTime(time.Duration(t)) {
		return errors.New("clock: cannot set the guest clock (the machine is not paused)")
	}
	return nil
}

func (m *Machine) sections() []section {
	s := []section{{"clock", guestClock{m}}}
	for i, c := range m.cpus {
		s = append(s, section{fmt.Sprintf("cpu%d", i), c})
	}
	s = append(s,
		section{"gic", m.gic},
		section{"pl011", m.uart},
		section{"pl031", m.plat.rtc},
		section{"pl061", m.plat.gpio},
		section{"fw_cfg", m.plat.fwcfg},
		section{"pci-host", pciHost{m}})
	for n, d := range m.vmmio {
		if d.Transport() != nil {
			s = append(s, section{fmt.Sprintf("virtio-mmio@%#x", VirtioBase+uint64(n)*VirtioStride), d})
		}
	}
	for dev := range 32 {
		for fn := range 8 {
			if d := m.vpci[[2]int{dev, fn}]; d != nil {
				s = append(s, section{fmt.Sprintf("virtio-pci@%02x.%d", dev, fn), d})
			}
		}
	}
	return s
}

// quiesceVirtio stops every virtio device's queues for a save (requests in flight
// drained); the returned function lets them run again.
func (m *Machine) quiesceVirtio() (func(), error) {
	var done []*virtio.Transport
	thaw := func() {
		for _, t := range done {
			t.Thaw()
		}
	}
	for _, t := range m.virtioTransports() {
		if err := t.Quiesce(virtio.DrainTimeout); err != nil {
			thaw()
			return nil, err
		}
		done = append(done, t)
	}
	return thaw, nil
}

// StateConfig is the board's configuration fingerprint: a stream saved from a board
// whose fingerprint differs is refused by Load with the difference named.
func (m *Machine) StateConfig() vmstate.Config {
	c := vmstate.Config{
		{Key: "machine", Value: "virt"},
		{Key: "ram", Value: fmt.Sprintf("%dM", m.cfg.RAMSize>>20)},
		{Key: "smp", Value: fmt.Sprint(m.cfg.SMP)},
		{Key: "gic-version", Value: fmt.Sprint(m.cfg.GICVersion)},
	}
	for n, d := range m.vmmio {
		if t := d.Transport(); t != nil {
			c = append(c, vmstate.KV{Key: fmt.Sprintf("virtio-mmio@%#x", VirtioBase+uint64(n)*VirtioStride),
				Value: fmt.Sprintf("virtio-device-%d", t.Device().DeviceID())})
		}
	}
	for dev := range 32 {
		for fn := range 8 {
			if f := m.pci.Function(uint8(dev), uint8(fn)); f != nil {
				var id [4]byte
				f.ConfigRead(0, id[:])
				c = append(c, vmstate.KV{Key: fmt.Sprintf("pci-%02x.%d", dev, fn),
					Value: fmt.Sprintf("%04x:%04x", binary.LittleEndian.Uint16(id[:]), binary.LittleEndian.Uint16(id[2:]))})
			}
		}
	}
	return c
}

// migratable returns why the board cannot be saved, or nil.
func (m *Machine) migratable() error {
	for n, d := range m.vmmio {
		if t := d.Transport(); t != nil {
			if _, ok := t.Device().(bus.Stateful); !ok {
				return fmt.Errorf("the virtio-mmio device at %#x (virtio device type %d) does not support migration yet",
					VirtioBase+uint64(n)*VirtioStride, t.Device().DeviceID())
			}
		}
	}
	for dev := range 32 {
		for fn := range 8 {
			f := m.pci.Function(uint8(dev), uint8(fn))
			if f == nil || dev == 0 && fn == 0 {
				continue
			}
			d := m.vpci[[2]int{dev, fn}]
			if d == nil || d.Function() != f {
				return fmt.Errorf("the PCI device at 00:%02x.%d does not support migration yet", dev, fn)
			}
			if _, ok := d.Transport().Device().(bus.Stateful); !ok {
				return fmt.Errorf("the PCI device at 00:%02x.%d (virtio device type %d) does not support migration yet",
					dev, fn, d.Transport().Device().DeviceID())
			}
		}
	}
	return nil
}

// Save writes the paused machine's complete state to w: the fingerprint, the guest
// clock, every vCPU and device, and guest RAM without its zero pages. The machine
// stays paused.
func (m *Machine) Save(w io.Writer) (vmstate.Stats, error) {
	if !m.Paused() {
		return vmstate.Stats{}, errors.New("the machine must be paused to save its state")
	}
	if err := m.migratable(); err != nil {
		return vmstate.Stats{}, err
	}
	thaw, err := m.quiesceVirtio()
	if err != nil {
		return vmstate.Stats{}, err
	}
	defer thaw()
	m.ramMu.RLock()
	defer m.ramMu.RUnlock()
	if m.ramGone {
		return vmstate.Stats{}, errors.New("the guest's memory is released")
	}
	sw, err := vmstate.NewWriter(w, m.StateConfig())
	if err != nil {
		return vmstate.Stats{}, err
	}
	for _, sl := range m.ram.Slots() {
		if err := sw.RAM(sl.GPA, sl.Mem); err != nil {
			return sw.Stats, err
		}
	}
	if err := m.saveSections(sw); err != nil {
		return sw.Stats, err
	}
	err = sw.Close()
	return sw.Stats, err
}

// saveSections writes the section of every vCPU and device (virtio quiesced).
func (m *Machine) saveSections(sw *vmstate.Writer) error {
	for _, s := range m.sections() {
		st, err := s.dev.SaveState()
		if err != nil {
			return fmt.Errorf("%s: %v", s.id, err)
		}
		st.Name = s.id
		if err := sw.Section(st); err != nil {
			return err
		}
	}
	return nil
}

// Load replaces the paused machine's state with the one read from r (a stream Save
// wrote on a board of the same configuration): guest RAM (zeroed first, then the
// stream's pages), the clock, every vCPU and device. The machine stays paused; Resume
// runs the restored guest. A stream of another configuration is refused before
// anything changes; any other error leaves the machine unusable (QEMU's incoming
// migration failing likewise ends the destination).
func (m *Machine) Load(r io.Reader) (vmstate.Stats, error) {
	return m.loadState(func(t vmstate.Target) ([]bus.State, vmstate.Stats, error) { return vmstate.Load(r, t) })
}

// LoadFile is Load from a stream in a file. With lazy set, guest RAM is mapped from the
// file (copy-on-write, hw/vmstate.LoadFile) rather than copied, so the restore costs
// neither the copy nor host memory for pages the guest does not touch; the file must
// then stay unchanged while the guest runs. Without it the pages are copied (an eager
// restore).
func (m *Machine) LoadFile(f *os.File, lazy bool) (vmstate.Stats, error) {
	return m.loadState(func(t vmstate.Target) ([]bus.State, vmstate.Stats, error) {
		if lazy {
			t.MapFrom(m.ram, f)
		}
		return vmstate.LoadFile(f, t)
	})
}

func (m *Machine) loadState(read func(vmstate.Target) ([]bus.State, vmstate.Stats, error)) (vmstate.Stats, error) {
	if !m.Paused() {
		return vmstate.Stats{}, errors.New("the machine must be paused to load a state")
	}
	if err := m.migratable(); err != nil {
		return vmstate.Stats{}, err
	}
	m.ramMu.RLock()
	defer m.ramMu.RUnlock()
	if m.ramGone {
		return vmstate.Stats{}, errors.New("the guest's memory is released")
	}
	zeroed := false
	var zerr error
	t := vmstate.Target{Config: m.StateConfig(), RAM: func(gpa, n uint64) ([]byte, bool) {
		if !zeroed {
			// The first RAM run comes after the configuration matched: drop what the
			// board loaded (kernel, device tree) so pages the stream lacks read zero.
			// Fresh anonymous pages, so RAM an earlier lazy restore mapped from a file
			// goes too.
			for _, sl := range m.ram.Slots() {
				if err := m.ram.Discard(sl.GPA, uint64(len(sl.Mem))); err != nil {
					clear(sl.Mem)
					zerr = err
				}
			}
			zeroed = true
		}
		return m.ram.Slice(gpa, n)
	}}
	secs, st, err := read(t)
	if err != nil {
		return st, err
	}
	if zerr != nil && st.Mapped > 0 {
		return st, zerr
	}
	if !zeroed { // a guest whose RAM was all zero
		t.RAM(RAMBase, 0)
	}
	// Translated code and the pages' dirty state follow the new contents.
	for _, sl := range m.ram.Slots() {
		m.ram.Written(sl.GPA, uint64(len(sl.Mem)))
	}
	byID := map[string]bus.State{}
	for _, s := range secs {
		byID[s.Name] = s
	}
	// Devices a previous run started are quiesced like for a save (their SaveState
	// below names the section), then reset by their LoadState.
	thaw, err := m.quiesceVirtio()
	if err != nil {
		return st, err
	}
	defer thaw()
	want := m.sections()
	if len(secs) != len(want) {
		for _, s := range want {
			delete(byID, s.id)
		}
		for id := range byID {
			return st, fmt.Errorf("migration stream has a section %q this machine does not have", id)
		}
	}
	for _, s := range want {
		sec, ok := byID[s.id]
		if !ok {
			return st, fmt.Errorf("migration stream lacks the section %q", s.id)
		}
		cur, err := s.dev.SaveState()
		if err != nil {
			return st, err
		}
		sec.Name = cur.Name
		if err := s.dev.LoadState(sec); err != nil {
			return st, fmt.Errorf("%s: %v", s.id, err)
		}
	}
	// A restored NIC asks its driver to announce the guest's addresses (gratuitous
	// ARP), as QEMU's self-announce after an incoming migration.
	for _, t := range m.virtioTransports() {
		if a, ok := t.Device().(interface{ Announce() bool }); ok {
			a.Announce()
		}
	}
	for i, c := range m.cpus {
		if c.PoweredOn() {
			m.launch(i)
		}
	}
	return st, nil
}

// RAMSize returns the guest's RAM size in bytes.
func (m *Machine) RAMSize() uint64 { return m.cfg.RAMSize }

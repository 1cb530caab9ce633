package pc

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

// Snapshots and migration of the PC board under accel/tcg (hw/vmstate's stream): the
// configuration fingerprint, the guest clock, one section per vCPU ("cpu<N>",
// target-x86's state) and per device — the userspace chipset (local APICs, IOAPIC,
// 8259 pair), PIT, HPET, CMOS RTC, COM1, i8042, the ACPI PM block, the PCI
// configuration mechanism's address latch, the host bridge's configuration space and
// each virtio-pci function ("virtio-pci@<slot>.<fn>", quiesced for the save) — then
// guest RAM without its zero pages. The interrupt controllers are loaded before the
// devices that drive their lines, so a device re-asserting its restored level finds
// the controller's input already at that level (no spurious edge).
//
// Under KVM the vCPUs and the chipset are the kernel's and their state is not read
// yet: Save and Load refuse with one line. The bzImage, ACPI tables and boot state
// the board wrote at build time are replaced by the stream's RAM and vCPU state.

// Section versions of the board's own small sections.
const (
	clockStateVersion   = 1 // the engine's guest clock (the TSC's time base), ns, one u64
	pciHostStateVersion = 1 // pci.ConfigSpace.SaveConfig of the host bridge
	pciAddrStateVersion = 1 // the 0xcf8 address latch, one u32
)

// VirtioPCIAdded implements qdev.VirtioPCIRecorder: virtio-pci functions are saved as
// sections "virtio-pci@<slot>.<fn>".
func (m *Machine) VirtioPCIAdded(slot, fn int, d *virtiopci.Device) {
	if m.vpci == nil {
		m.vpci = map[[2]int]*virtiopci.Device{}
	}
	m.vpci[[2]int{slot, fn}] = d
}

// eachVirtioPCI calls f for the virtio-pci functions in slot order.
func (m *Machine) eachVirtioPCI(f func(slot, fn int, d *virtiopci.Device)) {
	for dev := range 32 {
		for fn := range 8 {
			if d := m.vpci[[2]int{dev, fn}]; d != nil {
				f(dev, fn, d)
			}
		}
	}
}

// stateFunc is a section whose state is two functions.
type stateFunc struct {
	save func() (bus.State, error)
	load func(bus.State) error
}

func (s stateFunc) SaveState() (bus.State, error) { return s.save() }
func (s stateFunc) LoadState(st bus.State) error  { return s.load(st) }

// fixedState is a section of the board's own: name, version, data of a fixed length.
func fixedState(name string, version int, size int, save func() []byte, load func([]byte) error) bus.Stateful {
	return stateFunc{
		save: func() (bus.State, error) { return bus.State{Name: name, Version: version, Data: save()}, nil },
		load: func(s bus.State) error {
			if s.Name != name || s.Version != version || size >= 0 && len(s.Data) != size {
				return fmt.Errorf("%s: cannot load state %q version %d", name, s.Name, s.Version)
			}
			return load(s.Data)
		},
	}
}

type section struct {
	id  string
	dev bus.Stateful
}

func (m *Machine) sections() []section {
	tb := m.tcg
	s := []section{{"clock", fixedState("clock", clockStateVersion, 8,
		func() []byte { return binary.LittleEndian.AppendUint64(nil, uint64(tb.eng.GuestTime())) },
		func(b []byte) error {
			t := binary.LittleEndian.Uint64(b)
			if t > 1<<62 || !tb.eng.SetGuestTime(time.Duration(t)) {
				return errors.New("clock: cannot set the guest clock (the machine is not paused)")
			}
			return nil
		})}}
	for i, c := range tb.cpus {
		s = append(s, section{fmt.Sprintf("cpu%d", i), c.cpu})
	}
	s = append(s,
		section{"lapic", m.chip.APIC},
		section{"ioapic", m.chip.IOAPIC},
		section{"i8259", m.chip.PIC},
		section{"i8254", tb.pit},
		section{"hpet", m.hpet},
		section{"mc146818", m.rtc},
		section{"com1", m.COM1},
		section{"i8042", m.kbc},
		section{"acpi-pm", m.pm},
		section{"pci-addr", fixedState("pci-addr", pciAddrStateVersion, 4,
			func() []byte {
				b := make([]byte, 4)
				m.PIO.Read(bus.Host, PCIConfig, b)
				return b
			},
			func(b []byte) error {
				m.PIO.Write(bus.Host, PCIConfig, b)
				return nil
			})},
		section{"pci-host", fixedState("pci-host", pciHostStateVersion, -1, m.host.SaveConfig, m.host.LoadConfig)})
	m.eachVirtioPCI(func(slot, fn int, d *virtiopci.Device) {
		s = append(s, section{fmt.Sprintf("virtio-pci@%02x.%d", slot, fn), d})
	})
	return s
}

// StateConfig is the board's configuration fingerprint: a stream saved from a board
// whose fingerprint differs is refused by Load with the difference named.
func (m *Machine) StateConfig() vmstate.Config {
	acc := "kvm"
	if m.tcg != nil {
		acc = "tcg"
	}
	c := vmstate.Config{
		{Key: "machine", Value: "pc"},
		{Key: "accel", Value: acc},
		{Key: "ram", Value: fmt.Sprintf("%dM", (m.Layout.LowSize+m.Layout.HighSize)>>20)},
		{Key: "smp", Value: fmt.Sprint(m.VM.NumCPUs())},
	}
	for dev := range 32 {
		for fn := range 8 {
			if f := m.PCIBus.Function(uint8(dev), uint8(fn)); f != nil {
				var id [4]byte
				f.ConfigRead(0, id[:])
				c = append(c, vmstate.KV{Key: fmt.Sprintf("pci-%02x.%d", dev, fn),
					Value: fmt.Sprintf("%04x:%04x", binary.LittleEndian.Uint16(id[:]), binary.LittleEndian.Uint16(id[2:]))})
			}
		}
	}
	return c
}

// migratable returns why the board cannot be saved or loaded, or nil.
func (m *Machine) migratable() error {
	if m.tcg == nil {
		return errors.New("migration of the PC board is not supported under KVM yet (use -accel tcg)")
	}
	for dev := range 32 {
		for fn := range 8 {
			f := m.PCIBus.Function(uint8(dev), uint8(fn))
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

// quiesceVirtio stops every virtio device's queues (requests in flight drained); the
// returned function lets them run again.
func (m *Machine) quiesceVirtio() (func(), error) {
	var done []*virtio.Transport
	thaw := func() {
		for _, t := range done {
			t.Thaw()
		}
	}
	var err error
	m.eachVirtioPCI(func(_, _ int, d *virtiopci.Device) {
		if err == nil {
			if err = d.Transport().Quiesce(virtio.DrainTimeout); err == nil {
				done = append(done, d.Transport())
			}
		}
	})
	if err != nil {
		thaw()
		return nil, err
	}
	return thaw, nil
}

// ready checks what Save and Load need: the machine paused, saveable, its RAM held.
// On success the caller holds m.ramMu for reading and must release it.
func (m *Machine) ready(what string) error {
	if !m.Paused() {
		return fmt.Errorf("the machine must be paused to %s", what)
	}
	if err := m.migratable(); err != nil {
		return err
	}
	m.ramMu.RLock()
	if m.ramGone {
		m.ramMu.RUnlock()
		return errors.New("the guest's memory is released")
	}
	return nil
}

// Save writes the paused machine's complete state to w: the fingerprint, the guest
// clock, every vCPU and device, and guest RAM without its zero pages. The machine
// stays paused.
func (m *Machine) Save(w io.Writer) (vmstate.Stats, error) {
	if err := m.ready("save its state"); err != nil {
		return vmstate.Stats{}, err
	}
	defer m.ramMu.RUnlock()
	thaw, err := m.quiesceVirtio()
	if err != nil {
		return vmstate.Stats{}, err
	}
	defer thaw()
	sw, err := vmstate.NewWriter(w, m.StateConfig())
	if err != nil {
		return vmstate.Stats{}, err
	}
	for _, sl := range m.RAM.Slots() {
		if err := sw.RAM(sl.GPA, sl.Mem); err != nil {
			return sw.Stats, err
		}
	}
	for _, s := range m.sections() {
		st, err := s.dev.SaveState()
		if err != nil {
			return sw.Stats, fmt.Errorf("%s: %v", s.id, err)
		}
		st.Name = s.id
		if err := sw.Section(st); err != nil {
			return sw.Stats, err
		}
	}
	err = sw.Close()
	return sw.Stats, err
}

// Load replaces the paused machine's state with the one read from r (a stream Save
// wrote on a board of the same configuration): guest RAM (zeroed first, then the
// stream's pages), the clock, every vCPU and device. The machine stays paused; Resume
// runs the restored guest. A stream of another configuration is refused before
// anything changes; any other error leaves the machine unusable (an incoming
// migration that fails ends the destination, as QEMU's).
func (m *Machine) Load(r io.Reader) (vmstate.Stats, error) {
	return m.loadState(func(t vmstate.Target) ([]bus.State, vmstate.Stats, error) { return vmstate.Load(r, t) })
}

// LoadFile is Load from a stream in a file. With lazy set, guest RAM is mapped from the
// file copy-on-write (hw/vmstate.LoadFile) rather than copied, so the restore costs
// neither the copy nor host memory for pages the guest does not touch; the file must
// then stay unchanged while the guest runs. Without it the pages are copied.
func (m *Machine) LoadFile(f *os.File, lazy bool) (vmstate.Stats, error) {
	return m.loadState(func(t vmstate.Target) ([]bus.State, vmstate.Stats, error) {
		if lazy {
			t.MapFrom(m.RAM, f)
		}
		return vmstate.LoadFile(f, t)
	})
}

func (m *Machine) loadState(read func(vmstate.Target) ([]bus.State, vmstate.Stats, error)) (vmstate.Stats, error) {
	if err := m.ready("load a state"); err != nil {
		return vmstate.Stats{}, err
	}
	defer m.ramMu.RUnlock()
	zeroed := false
	var zerr error
	zero := func() {
		if zeroed {
			return
		}
		// The first RAM run comes after the configuration matched: drop what the
		// board loaded (kernel, ACPI tables) so pages the stream lacks read zero;
		// fresh anonymous pages, so RAM an earlier lazy restore mapped goes too.
		for _, sl := range m.RAM.Slots() {
			if err := m.RAM.Discard(sl.GPA, uint64(len(sl.Mem))); err != nil {
				clear(sl.Mem)
				zerr = err
			}
		}
		zeroed = true
	}
	t := vmstate.Target{Config: m.StateConfig(), RAM: func(gpa, n uint64) ([]byte, bool) {
		zero()
		return m.RAM.Slice(gpa, n)
	}}
	secs, st, err := read(t)
	if err != nil {
		return st, err
	}
	if zerr != nil && st.Mapped > 0 {
		return st, zerr
	}
	zero() // a guest whose RAM was all zero
	// Translated code and the pages' dirty state follow the new contents.
	for _, sl := range m.RAM.Slots() {
		m.RAM.Written(sl.GPA, uint64(len(sl.Mem)))
	}
	thaw, err := m.quiesceVirtio()
	if err != nil {
		return st, err
	}
	defer thaw()
	if err := loadSections(secs, m.sections()); err != nil {
		return st, err
	}
	m.eachVirtioPCI(func(_, _ int, d *virtiopci.Device) {
		if a, ok := d.Transport().Device().(interface{ Announce() bool }); ok {
			a.Announce() // a restored NIC announces the guest's addresses
		}
	})
	// The vCPUs' INTR lines and latched INIT/SIPI/NMI events follow the restored LAPICs.
	for _, c := range m.tcg.cpus {
		c.kick()
	}
	return st, nil
}

// loadSections gives each section of want its state from secs, which must hold
// exactly those sections (checked before any is loaded).
func loadSections(secs []bus.State, want []section) error {
	byID := map[string]bus.State{}
	for _, s := range secs {
		byID[s.Name] = s
	}
	for _, s := range want {
		if _, ok := byID[s.id]; !ok {
			return fmt.Errorf("migration stream lacks the section %q", s.id)
		}
	}
	if len(byID) != len(want) {
		have := map[string]bool{}
		for _, s := range want {
			have[s.id] = true
		}
		for _, s := range secs {
			if !have[s.Name] {
				return fmt.Errorf("migration stream has a section %q this machine does not have", s.Name)
			}
		}
	}
	for _, s := range want {
		sec := byID[s.id]
		cur, err := s.dev.SaveState()
		if err != nil {
			return err
		}
		sec.Name = cur.Name
		if err := s.dev.LoadState(sec); err != nil {
			return fmt.Errorf("%s: %v", s.id, err)
		}
	}
	return nil
}

// RAMSize returns the guest's RAM size in bytes.
func (m *Machine) RAMSize() uint64 { return m.Layout.LowSize + m.Layout.HighSize }

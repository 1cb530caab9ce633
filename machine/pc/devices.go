package pc

import (
	"errors"

	"gemu/accel"
	"gemu/hw/pci"
	"gemu/hw/virtio"
	virtiopci "gemu/hw/virtio/pci"
)

// Memory implements qdev.Board.
func (m *Machine) Memory() virtio.Memory { return m.RAM }

// PCI implements qdev.Board.
func (m *Machine) PCI() *pci.Bus { return m.PCIBus }

// Express implements qdev.Board: the PC's bus is conventional PCI.
func (m *Machine) Express() bool { return false }

// FirstPCISlot implements qdev.Board: slot 1 is where QEMU's pc has its PIIX3 ISA
// bridge, so devices without addr= start at slot 2 as they do under QEMU -vga none.
func (m *Machine) FirstPCISlot() int { return 2 }

// VirtioMMIO implements qdev.Board: QEMU's pc has no virtio-mmio transports.
func (m *Machine) VirtioMMIO(virtio.Device) error {
	return errors.New("No 'virtio-bus' bus found for device: the pc machine has no virtio-mmio transports (use the -pci variant)")
}

// PCIHooks implements qdev.Board: on an accelerator with ioeventfd and irqfd (KVM)
// virtio-pci doorbells and MSI-X vectors bypass the vCPU exit path.
func (m *Machine) PCIHooks() virtiopci.Hooks {
	var h virtiopci.Hooks
	if ev, ok := m.VM.(accel.IOEventFD); ok {
		h.Doorbell = func(addr uint64, size uint32, fn func()) (func(), error) {
			return ev.IOEventFD(addr, size, false, fn)
		}
	}
	if r, ok := m.VM.(accel.MSIRouter); ok {
		h.Route = func(addr uint64, data uint32) (func(), func(uint64, uint32), func(), error) {
			rt, err := r.NewMSIRoute(addr, data)
			if err != nil {
				return nil, nil, nil, err
			}
			return func() { rt.Fire() }, func(a uint64, d uint32) { rt.Update(a, d) }, func() { rt.Close() }, nil
		}
	}
	return h
}

// OnRelease registers f to run when the machine is closed, before guest RAM is
// released (qdev.Env.Reset stops the virtio devices' workers).
func (m *Machine) OnRelease(f func()) { m.onRelease = append(m.onRelease, f) }

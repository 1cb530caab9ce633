package pci

import (
	"encoding/binary"
	"errors"
	"fmt"

	"gemu/hw/bus"
)

// StateVersion is the "virtio-pci" section: u32 length and the function's
// configuration space (hw/pci SaveConfig: registers, INTx level, MSI-X table and
// PBA), u8 ISR, u16 config_msix_vector, u16 count and each queue's MSI-X vector, u32
// device and driver feature selects, then the transport's core state with the
// device's section nested (virtio.Transport.SaveState).
const StateVersion = 1

// SaveState implements bus.Stateful; the device must be quiesced
// (virtio.Transport.Quiesce).
func (d *Device) SaveState() (bus.State, error) {
	ts, err := d.t.SaveState()
	if err != nil {
		return bus.State{}, err
	}
	le := binary.LittleEndian
	cfg := d.cfg.SaveConfig()
	b := le.AppendUint32(nil, uint32(len(cfg)))
	b = append(b, cfg...)
	d.mu.Lock()
	b = append(b, d.isr)
	b = le.AppendUint16(b, d.configVec)
	b = le.AppendUint16(b, uint16(len(d.queueVec)))
	for _, v := range d.queueVec {
		b = le.AppendUint16(b, v)
	}
	b = le.AppendUint32(b, d.devSel)
	b = le.AppendUint32(b, d.drvSel)
	d.mu.Unlock()
	return bus.State{Name: "virtio-pci", Version: StateVersion, Data: append(b, ts...)}, nil
}

var errTruncated = errors.New("virtio-pci: state truncated")

// LoadState implements bus.Stateful, on a function built the same way.
func (d *Device) LoadState(s bus.State) error {
	if s.Name != "virtio-pci" || s.Version != StateVersion {
		return fmt.Errorf("virtio-pci: cannot load state %q version %d", s.Name, s.Version)
	}
	le := binary.LittleEndian
	b := s.Data
	if len(b) < 4 || uint64(len(b)-4) < uint64(le.Uint32(b)) {
		return errTruncated
	}
	cfg := b[4 : 4+le.Uint32(b)]
	b = b[4+le.Uint32(b):]
	if len(b) < 5 {
		return errTruncated
	}
	isr, configVec, nq := b[0], le.Uint16(b[1:]), int(le.Uint16(b[3:]))
	b = b[5:]
	if nq != len(d.queueVec) {
		return fmt.Errorf("virtio-pci: state has %d queue vectors, the device %d queues", nq, len(d.queueVec))
	}
	if len(b) < 2*nq+8 {
		return errTruncated
	}
	qv := make([]uint16, nq)
	for i := range qv {
		qv[i] = le.Uint16(b[2*i:])
	}
	b = b[2*nq:]
	devSel, drvSel := le.Uint32(b), le.Uint32(b[4:])
	b = b[8:]
	if isr&^3 != 0 {
		return fmt.Errorf("virtio-pci: ISR %#x has undefined bits", isr)
	}
	d.stopFast()
	if err := d.cfg.LoadConfig(cfg); err != nil {
		return err
	}
	if err := d.t.LoadState(b); err != nil {
		return err
	}
	d.mu.Lock()
	d.isr, d.configVec, d.devSel, d.drvSel = isr, d.checkVector(configVec), devSel, drvSel
	for i, v := range qv {
		d.queueVec[i] = d.checkVector(v)
	}
	d.mu.Unlock()
	if d.t.Active() {
		d.startFast()
	}
	return nil
}

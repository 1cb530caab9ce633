package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// PCI Express capability registers (offsets from the capability) a hotplug slot uses.
const (
	expFlags  = 0x02
	expLnkCap = 0x0c
	expLnkSta = 0x12
	expSltCap = 0x14
	expSltCtl = 0x18
	expSltSta = 0x1a
	expRtCtl  = 0x1c
)

// Slot capabilities, control and status bits (PCIe base spec 7.5.3.9-11).
const (
	SltCapABP = 1 << 0 // attention button present
	SltCapPCP = 1 << 1 // power controller present
	SltCapAIP = 1 << 3 // attention indicator present
	SltCapPIP = 1 << 4 // power indicator present
	SltCapHPS = 1 << 5 // hot-plug surprise
	SltCapHPC = 1 << 6 // hot-plug capable
	SltCapEIP = 1 << 17

	SltCtlABPE   = 1 << 0
	SltCtlPDCE   = 1 << 3
	SltCtlCCIE   = 1 << 4
	SltCtlHPIE   = 1 << 5
	SltCtlAIC    = 3 << 6
	SltCtlAICOff = 3 << 6
	SltCtlPIC    = 3 << 8
	SltCtlPICOn  = 1 << 8
	SltCtlPICOff = 3 << 8
	SltCtlPCC    = 1 << 10 // power controller control: 1 = off
	SltCtlEIC    = 1 << 11

	SltStaABP = 1 << 0
	SltStaPFD = 1 << 1
	SltStaMRL = 1 << 2
	SltStaPDC = 1 << 3
	SltStaCC  = 1 << 4
	SltStaPDS = 1 << 6
	SltStaEIS = 1 << 7

	lnkCapDLLLARC = 1 << 20
	lnkStaDLLLA   = 1 << 13

	// hpEvents are the events the port signals (QEMU's PCI_EXP_HP_EV_SUPPORTED): each
	// status bit has its enable at the same position in slot control.
	hpEvents   = SltStaABP | SltStaPDC | SltStaCC
	slotEvents = SltStaABP | SltStaPFD | SltStaMRL | SltStaPDC | SltStaCC
)

// RootPortConfig is a root port's identity, as QEMU's pcie-root-port properties.
type RootPortConfig struct {
	Chassis int // chassis=
	Slot    int // slot=: the physical slot number in the slot capabilities
	Port    int // port=: the port number in the link capabilities
}

// ErrUnplugPending is RequestUnplug's error while the guest has not yet answered an
// earlier request.
var ErrUnplugPending = errors.New("pci: unplug already in progress")

// RootPort is a PCI Express root port with a native hotplug slot, as QEMU's
// pcie-root-port (1b36:000c): a bridge whose PCI Express capability has the slot
// registers (attention button, power controller, power and attention indicators,
// presence detect, command completed), its hotplug interrupt sent through MSI-X
// vector 0 when the guest enabled MSI-X and through INTx otherwise. A device plugged
// while the guest runs raises presence-detect-changed and attention-button-pressed;
// an unplug request presses the attention button and the device leaves when the
// guest turns the slot's power and power indicator off (Linux's pciehp does so five
// seconds after the press), or at once when the slot is not powered.
type RootPort struct {
	*Bridge
	exp  uint32
	msix *MSIX

	mu       sync.Mutex
	present  bool
	notified bool   // the hotplug interrupt condition (QEMU's hpev_notified)
	unplug   func() // the pending unplug request's completion
}

// NewRootPort returns a root port for parent's bus. Add it to parent at a free slot.
func NewRootPort(parent *Bus, rc RootPortConfig) (*RootPort, error) {
	if rc.Slot < 0 || rc.Slot > 0x1fff {
		return nil, fmt.Errorf("pci: root port slot %d out of range", rc.Slot)
	}
	br := NewBridge(parent, 0x1b36, 0x000c, 0)
	br.dev0 = true
	r := &RootPort{Bridge: br}
	c := br.ConfigSpace
	if err := c.AddBAR(0, BARMem32, 0x1000, nil); err != nil {
		return nil, err
	}
	m, err := c.AddMSIX(1, 0, 0, 0, 0x800)
	if err != nil {
		return nil, err
	}
	r.msix = m
	if err := c.SetInterruptPin(PinA); err != nil {
		return nil, err
	}
	off, err := c.EnableExpress(ExpressRootPort)
	if err != nil {
		return nil, err
	}
	r.exp = off
	c.mu.Lock()
	defer c.mu.Unlock()
	le := binary.LittleEndian
	c.init16(off+expFlags, le.Uint16(c.data[off+expFlags:])|1<<8)          // slot implemented
	c.init32(off+expLnkCap, uint32(rc.Port&0xff)<<24|lnkCapDLLLARC|1<<4|1) // x1, 2.5 GT/s
	c.init16(off+expLnkSta, 1<<4|1)
	c.init32(off+expSltCap, uint32(rc.Slot)<<19|SltCapEIP|SltCapHPC|SltCapHPS|SltCapPIP|SltCapAIP|SltCapPCP|SltCapABP)
	c.init16(off+expSltCtl, SltCtlPICOff|SltCtlAICOff|SltCtlPCC)
	le.PutUint16(c.wmask[off+expSltCtl:], SltCtlPIC|SltCtlAIC|SltCtlHPIE|SltCtlCCIE|SltCtlPDCE|SltCtlABPE|SltCtlPCC|SltCtlEIC)
	le.PutUint16(c.w1c[off+expSltSta:], hpEvents)
	le.PutUint16(c.wmask[off+expRtCtl:], 0x7)
	return r, nil
}

func (r *RootPort) reg16(o uint32) uint16 {
	c := r.ConfigSpace
	c.mu.Lock()
	defer c.mu.Unlock()
	return binary.LittleEndian.Uint16(c.data[r.exp+o:])
}

// update16 sets the register at o to (v &^ clear) | set, in the live space only.
func (r *RootPort) update16(o uint32, clear, set uint16) uint16 {
	c := r.ConfigSpace
	c.mu.Lock()
	defer c.mu.Unlock()
	v := binary.LittleEndian.Uint16(c.data[r.exp+o:])&^clear | set
	binary.LittleEndian.PutUint16(c.data[r.exp+o:], v)
	return v
}

// SlotStatus and SlotControl read the slot registers (for monitors and tests).
func (r *RootPort) SlotStatus() uint16  { return r.reg16(expSltSta) }
func (r *RootPort) SlotControl() uint16 { return r.reg16(expSltCtl) }

// ExpressOffset is the PCI Express capability's offset.
func (r *RootPort) ExpressOffset() uint32 { return r.exp }

// powered reports whether the slot has power: the guest cleared power controller
// control.
func powered(ctl uint16) bool { return ctl&SltCtlPCC == 0 }

func (r *RootPort) linkLocked() {
	on := r.present && powered(r.reg16(expSltCtl))
	if on {
		r.update16(expLnkSta, 0, lnkStaDLLLA)
	} else {
		r.update16(expLnkSta, lnkStaDLLLA, 0)
	}
}

// notifyLocked recomputes the interrupt condition and signals a rising edge (MSI-X
// vector 0, the PCIe capability's interrupt message number) or follows it on INTx.
func (r *RootPort) notifyLocked() {
	prev := r.notified
	ctl, sta := r.reg16(expSltCtl), r.reg16(expSltSta)
	r.notified = ctl&SltCtlHPIE != 0 && sta&ctl&hpEvents != 0
	if prev == r.notified {
		return
	}
	if r.msix.Enabled() {
		if r.notified {
			r.msix.Notify(0)
		}
		return
	}
	r.ConfigSpace.SetIRQ(r.notified)
}

// eventLocked sets event bits in the slot status and signals them if they are new.
func (r *RootPort) eventLocked(ev uint16) {
	if r.reg16(expSltSta)&ev == ev {
		return
	}
	r.update16(expSltSta, 0, ev)
	r.notifyLocked()
}

// ConfigWrite implements Function: slot control writes are commands (power, the
// indicators, the interlock), completed at once; slot status bits clear on 1.
func (r *RootPort) ConfigWrite(off uint32, data []byte) {
	r.mu.Lock()
	oldCtl, oldSta := r.reg16(expSltCtl), r.reg16(expSltSta)
	r.ConfigSpace.ConfigWrite(off, data)
	var done func()
	if overlaps(off, len(data), r.exp+expSltSta, 2) {
		// As QEMU: a guest clearing events that were not set when it read the status
		// (Linux at probe) would lose one raised meanwhile; keep them.
		if written(off, data, r.exp+expSltSta)&^oldSta&slotEvents != 0 {
			r.update16(expSltSta, slotEvents, oldSta&slotEvents)
		}
		r.notifyLocked()
	}
	if overlaps(off, len(data), r.exp+expSltCtl, 2) {
		ctl := r.reg16(expSltCtl)
		if ctl&SltCtlEIC != 0 {
			ctl = r.update16(expSltCtl, SltCtlEIC, 0)
			r.update16(expSltSta, SltStaEIS, ^r.reg16(expSltSta)&SltStaEIS) // toggle the interlock
		}
		off := !powered(ctl) && ctl&SltCtlPIC == SltCtlPICOff
		wasOff := !powered(oldCtl) && oldCtl&SltCtlPIC == SltCtlPICOff
		if r.present && off && !wasOff {
			done = r.removeLocked()
		}
		r.linkLocked()
		r.notifyLocked()
		r.eventLocked(SltStaCC)
	}
	r.mu.Unlock()
	if done != nil {
		done()
	}
}

// written is the 16-bit value a write of data at off put at reg (bytes it did not
// cover read as 0).
func written(off uint32, data []byte, reg uint32) uint16 {
	var v uint16
	for i, b := range data {
		if o := off + uint32(i); o == reg {
			v |= uint16(b)
		} else if o == reg+1 {
			v |= uint16(b) << 8
		}
	}
	return v
}

// removeLocked empties the slot (presence gone, presence-detect-changed raised) and
// returns the pending unplug's completion, or a no-op one.
func (r *RootPort) removeLocked() func() {
	r.present = false
	r.update16(expSltSta, SltStaPDS, SltStaPDC)
	r.linkLocked()
	r.notifyLocked()
	done := r.unplug
	r.unplug = nil
	if done == nil {
		done = func() {}
	}
	return done
}

// Plug tells the port a device now sits on its secondary bus (device 0). hot: the
// guest runs, so it is told (presence detect changed and attention button pressed,
// as QEMU signals it); otherwise the device is present from power-on, the slot
// powered and its indicator on.
func (r *RootPort) Plug(hot bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.present {
		return fmt.Errorf("pci: the root port's slot is occupied")
	}
	r.present = true
	if !hot {
		c := r.ConfigSpace
		c.mu.Lock()
		le := binary.LittleEndian
		ctl := le.Uint16(c.power[r.exp+expSltCtl:])&^(SltCtlPCC|SltCtlPIC) | SltCtlPICOn
		c.init16(r.exp+expSltCtl, ctl)
		c.init16(r.exp+expSltSta, le.Uint16(c.power[r.exp+expSltSta:])|SltStaPDS)
		c.init16(r.exp+expLnkSta, le.Uint16(c.power[r.exp+expLnkSta:])|lnkStaDLLLA)
		c.mu.Unlock()
		return nil
	}
	r.update16(expSltSta, 0, SltStaPDS)
	r.linkLocked()
	r.eventLocked(SltStaPDC | SltStaABP)
	return nil
}

// RequestUnplug asks for the device behind the port to go: the attention button is
// pressed, and done runs (from the goroutine of the guest's config write, no pci lock
// held) once the guest has powered the slot off. A slot without power is emptied at
// once (done runs before RequestUnplug returns). A second request before the guest
// answered the first presses the button again (Linux cancels then).
func (r *RootPort) RequestUnplug(done func()) error {
	r.mu.Lock()
	if !r.present {
		r.mu.Unlock()
		return fmt.Errorf("pci: the root port's slot is empty")
	}
	if !powered(r.reg16(expSltCtl)) {
		r.unplug = done
		fin := r.removeLocked()
		r.mu.Unlock()
		fin()
		return nil
	}
	r.unplug = done
	r.eventLocked(SltStaABP)
	r.mu.Unlock()
	return nil
}

// Present reports whether a device sits behind the port.
func (r *RootPort) Present() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.present
}

// Reset implements bus.Resetter: the bridge, then the slot as QEMU resets it (an
// occupied slot powered with its indicator on, an empty one off; events cleared).
func (r *RootPort) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Bridge.Reset()
	r.notified = false
	ctl := uint16(SltCtlPICOff | SltCtlPCC)
	var sta uint16
	if r.present {
		ctl, sta = SltCtlPICOn, SltStaPDS
	}
	r.update16(expSltCtl, 0xffff, ctl|SltCtlAICOff)
	r.update16(expSltSta, 0xffff, sta)
	r.linkLocked()
}

package net

import (
	"fmt"

	"gemu/hw/bus"
	"gemu/hw/vmstate"
)

// StateVersion is the "virtio-net" section: the receive filter the control queue
// programmed (MAC, rx modes, MAC tables), the link state and the configuration status.
// The backend's own state is not saved: the user-mode network's NAT connections and
// host sockets stay with the source (QEMU's slirp does not migrate them either); the
// guest's TCP connections through it break and new ones work on the destination.
const StateVersion = 1

type netState struct {
	MAC                        [6]byte
	Promisc, Allmulti, Alluni  bool
	Nomulti, Nouni, Nobcast    bool
	UniOverflow, MultiOverflow bool
	NUni, NMulti               uint32
	Uni, Multi                 [MACTableEntries][6]byte
	Status                     uint32
	Link                       bool
}

// HoldsBuffers implements virtio.BufferHolder: the receive queue keeps buffers until
// frames arrive and fills them in order.
func (d *Device) HoldsBuffers(queue int) bool { return queue == 0 }

// SaveState implements bus.Stateful; the transport has quiesced the queues.
func (d *Device) SaveState() (bus.State, error) {
	d.rxMu.Lock()
	f := d.filt
	d.rxMu.Unlock()
	s := netState{MAC: f.mac, Promisc: f.promisc, Allmulti: f.allmulti, Alluni: f.alluni,
		Nomulti: f.nomulti, Nouni: f.nouni, Nobcast: f.nobcast, UniOverflow: f.uniOverflow, MultiOverflow: f.multiOverflow,
		NUni: uint32(len(f.uni)), NMulti: uint32(len(f.multi)), Status: d.status.Load(), Link: d.link.Load()}
	copy(s.Uni[:], f.uni)
	copy(s.Multi[:], f.multi)
	b, err := vmstate.EncodeFields(nil, &s)
	return bus.State{Name: "virtio-net", Version: StateVersion, Data: b}, err
}

// LoadState implements bus.Stateful, on a reset device: the filter is applied at the
// activation that follows (Activate would otherwise reset it).
func (d *Device) LoadState(st bus.State) error {
	if st.Name != "virtio-net" || st.Version != StateVersion {
		return fmt.Errorf("virtio-net: cannot load state %q version %d", st.Name, st.Version)
	}
	var s netState
	if err := vmstate.DecodeFields(st.Data, &s); err != nil {
		return fmt.Errorf("virtio-net: %v", err)
	}
	if s.NUni > MACTableEntries || s.NMulti > MACTableEntries || s.Status&^(StatusLinkUp|StatusAnnounce) != 0 {
		return fmt.Errorf("virtio-net: state out of range (tables %d/%d, status %#x)", s.NUni, s.NMulti, s.Status)
	}
	f := filter{mac: s.MAC, promisc: s.Promisc, allmulti: s.Allmulti, alluni: s.Alluni,
		nomulti: s.Nomulti, nouni: s.Nouni, nobcast: s.Nobcast, uniOverflow: s.UniOverflow, multiOverflow: s.MultiOverflow,
		uni: append([][6]byte(nil), s.Uni[:s.NUni]...), multi: append([][6]byte(nil), s.Multi[:s.NMulti]...)}
	d.rxMu.Lock()
	d.filt = f
	d.restored = &f
	d.rxMu.Unlock()
	d.link.Store(s.Link)
	d.status.Store(s.Status)
	return nil
}

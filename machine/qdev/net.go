package qdev

import (
	"fmt"
	"strconv"
	"strings"

	"gemu/hw/netdev"
	"gemu/hw/virtio"
	vnet "gemu/hw/virtio/net"
)

// NIC properties (QEMU's virtio-net names). The feature switches clear an offered
// feature (and those that depend on it).
var netProps = []string{"netdev", "mac", "mq", "host_mtu", "rx_queue_size", "tx_queue_size", "bootindex",
	"csum", "guest_csum", "gso", "host_tso4", "host_tso6", "host_ecn", "guest_tso4", "guest_tso6", "guest_ecn",
	"mrg_rxbuf", "status", "ctrl_vq", "ctrl_rx", "ctrl_mac_addr", "guest_announce", "speed", "duplex"}

// netFeatureProps maps a switch to the feature bits it clears.
var netFeatureProps = map[string]uint64{
	"csum":           1<<vnet.FCsum | 1<<vnet.FHostTSO4 | 1<<vnet.FHostTSO6 | 1<<vnet.FHostECN,
	"guest_csum":     1<<vnet.FGuestCsum | 1<<vnet.FGuestTSO4 | 1<<vnet.FGuestTSO6 | 1<<vnet.FGuestECN,
	"gso":            1<<vnet.FHostTSO4 | 1<<vnet.FHostTSO6 | 1<<vnet.FHostECN | 1<<vnet.FGuestTSO4 | 1<<vnet.FGuestTSO6 | 1<<vnet.FGuestECN,
	"host_tso4":      1 << vnet.FHostTSO4,
	"host_tso6":      1 << vnet.FHostTSO6,
	"host_ecn":       1 << vnet.FHostECN,
	"guest_tso4":     1 << vnet.FGuestTSO4,
	"guest_tso6":     1 << vnet.FGuestTSO6,
	"guest_ecn":      1 << vnet.FGuestECN,
	"mrg_rxbuf":      1 << vnet.FMrgRxbuf,
	"status":         1<<vnet.FStatus | 1<<vnet.FGuestAnnounce,
	"ctrl_vq":        1<<vnet.FCtrlVQ | 1<<vnet.FCtrlRx | 1<<vnet.FCtrlMACAddr | 1<<vnet.FGuestAnnounce | 1<<vnet.FMQ,
	"ctrl_rx":        1 << vnet.FCtrlRx,
	"ctrl_mac_addr":  1 << vnet.FCtrlMACAddr,
	"guest_announce": 1 << vnet.FGuestAnnounce,
}

// DefaultMQPairs is the queue pairs mq=on offers: gemu's backends have one queue,
// so QEMU's "queues of the netdev" is replaced by a small fixed number.
const DefaultMQPairs = 2

// netState is an Env's NIC bookkeeping.
type netState struct {
	nics int               // NICs given no mac= so far (QEMU's default MAC index)
	used map[string]string // netdev id → NIC that took it
}

func init() {
	for _, tr := range []struct {
		suffix, bus string
		props       []string
	}{{"-pci", "PCI", commonPCI}, {"-device", "virtio-bus", commonMMIO}} {
		register(devType{name: "virtio-net" + tr.suffix, bus: tr.bus, desc: "Virtio network device",
			props: append(append([]string{}, tr.props...), netProps...), build: buildNet})
	}
	d := types["virtio-net-pci"]
	d.name, d.aliasOf = "virtio-net", "virtio-net-pci"
	register(d)
	d = types["virtio-net-pci"]
	d.name = "virtio-net-pci-non-transitional"
	register(d)
}

// NICModels lists the -nic/-net model= values, as `-nic model=help` prints them.
func NICModels() []string { return []string{"virtio-net-pci", "virtio-net-device"} }

// ParseMAC reads a MAC address in QEMU's form (52:54:00:12:34:56; '-' also accepted).
func ParseMAC(s string) ([6]byte, error) {
	var m [6]byte
	parts := strings.FieldsFunc(s, func(r rune) bool { return r == ':' || r == '-' })
	if len(parts) != 6 || strings.Count(s, ":")+strings.Count(s, "-") != 5 {
		return m, fmt.Errorf("Property 'mac' doesn't take value '%s'", s)
	}
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 16, 8)
		if err != nil || len(p) > 2 {
			return m, fmt.Errorf("Property 'mac' doesn't take value '%s'", s)
		}
		m[i] = byte(v)
	}
	return m, nil
}

// DefaultMAC is QEMU's address for the i-th NIC without mac=: 52:54:00:12:34:56+i.
func DefaultMAC(i int) [6]byte {
	return [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, byte(0x56 + i)}
}

// nullNet is the backend of a NIC without netdev= (QEMU: "has no peer"): frames to
// it are dropped and none arrive.
type nullNet struct{}

func (nullNet) Send([]byte) error             { return nil }
func (nullNet) SetReceiver(func([]byte) bool) {}
func (nullNet) RxReady()                      {}

func buildNet(e *Env, p Props) (virtio.Device, error) {
	drv, _ := p.Get("driver")
	c := vnet.Config{QueueSize: 256}
	id, hasNetdev := p.Get("netdev")
	e.mu.Lock()
	if e.net.used == nil {
		e.net.used = map[string]string{}
	}
	e.mu.Unlock()
	if hasNetdev {
		be := e.Netdevs[id]
		if be == nil {
			return nil, fmt.Errorf("Property 'virtio-net-device.netdev' can't find value '%s'", id) // QEMU's words: the property is the inner device's
		}
		e.mu.Lock()
		_, taken := e.net.used[id]
		e.mu.Unlock()
		if taken {
			return nil, fmt.Errorf("Property 'virtio-net-device.netdev' can't take value '%s', it's in use", id)
		}
		c.Backend = be
		if o, ok := be.(netdev.Offloader); ok {
			c.OffloadsNow = func() vnet.Offloads {
				n := o.Offloads()
				return vnet.Offloads{NoChecksum: n.NoChecksum, MaxFrame: n.MaxFrame, VnetHdr: n.VnetHdr}
			}
			c.Offloads = c.OffloadsNow()
		}
	} else {
		c.Backend = nullNet{}
		if !e.hotplugging() { // device_add's NIC without a netdev is not warned about (QEMU's neither)
			e.Warn(fmt.Sprintf("-device %s: nic %s has no peer (add netdev=ID)", drv, drv))
		}
	}
	if v, ok := p.Get("mac"); ok {
		m, err := ParseMAC(v)
		if err != nil {
			return nil, err
		}
		if m[0]&1 != 0 {
			return nil, fmt.Errorf("Property 'mac' doesn't take value '%s' (a multicast address)", v)
		}
		c.MAC = m
	} else {
		e.mu.Lock()
		c.MAC = DefaultMAC(e.net.nics)
		e.net.nics++
		e.mu.Unlock()
	}
	mq, err := boolProp(p, "mq", false)
	if err != nil {
		return nil, err
	}
	if mq {
		c.QueuePairs = DefaultMQPairs
	}
	n, err := numProp(p, "host_mtu", 0, vnet.MaxPacket)
	if err != nil {
		return nil, err
	}
	if n != 0 && n < 68 {
		return nil, fmt.Errorf("Parameter 'host_mtu' expects a number from 68 to %d", vnet.MaxPacket)
	}
	c.MTU = uint16(n)
	for _, k := range []string{"rx_queue_size", "tx_queue_size"} {
		n, err := numProp(p, k, 256, 1024)
		if err != nil {
			return nil, err
		}
		if n < 256 || n&(n-1) != 0 {
			return nil, fmt.Errorf("Invalid %s (= %d), must be a power of 2 between 256 and 1024", strings.ReplaceAll(k, "_", "-"), n)
		}
		c.QueueSize = max(c.QueueSize, uint16(n))
	}
	var off uint64
	for k, bits := range netFeatureProps {
		on, err := boolProp(p, k, true)
		if err != nil {
			return nil, err
		}
		if !on {
			off |= bits
		}
	}
	for _, k := range []string{"speed", "duplex", "bootindex"} {
		p.Get(k) // accepted; gemu offers no SPEED_DUPLEX and boots no network ROM
	}
	c.Disable = off
	dev, err := vnet.New(c)
	if err != nil {
		return nil, err
	}
	if hasNetdev {
		e.mu.Lock()
		e.net.used[id] = drv
		e.mu.Unlock()
	}
	e.noteNIC(p, c.MAC)
	return dev, nil
}

// NetdevUsed reports whether a NIC took netdev id.
func (e *Env) NetdevUsed(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.net.used[id]
	return ok
}

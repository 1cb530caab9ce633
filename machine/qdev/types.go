package qdev

import "sort"

// TypeInfo is one -device type as the capability probes (qom-list-types,
// device-list-properties) describe it.
type TypeInfo struct {
	Name   string
	Parent string // gemu's own QOM-style parent: virtio-pci, virtio-device, ...
	Desc   string
	Props  []PropInfo // sorted; without id and bus, which QEMU does not list either
}

// PropInfo is one device property and its QOM type name.
type PropInfo struct {
	Name, Type string
}

// propTypes names the QOM types of the properties gemu's devices take (QEMU's for the
// same names); a property not listed is a string.
var propTypes = map[string]string{
	"addr": "int32", "multifunction": "bool", "vectors": "uint32", "disable-legacy": "OnOffAuto",
	"disable-modern": "bool", "num-queues": "uint16", "queue-size": "uint16",
	"logical_block_size": "size", "physical_block_size": "size", "min_io_size": "size", "opt_io_size": "size",
	"discard": "bool", "write-zeroes": "bool", "seg-max-adjust": "bool", "config-wce": "bool", "share-rw": "bool",
	"bootindex": "int32", "rng": "link<rng-backend>", "max-bytes": "uint64", "period": "uint32",
	"max_ports": "uint32", "nr": "uint32", "mq": "bool", "host_mtu": "uint16", "rx_queue_size": "uint16",
	"tx_queue_size": "uint16", "speed": "int32", "guest-cid": "uint64", "seqpacket": "OnOffAuto",
	"drive": "str", "netdev": "netdev", "chardev": "str", "mac": "macaddr",
}

// Types lists every -device type gemu builds, sorted by name.
func Types() []TypeInfo {
	out := make([]TypeInfo, 0, len(types))
	for _, d := range types {
		t := TypeInfo{Name: d.name, Desc: d.desc}
		switch {
		case d.name == "pcie-root-port":
			t.Parent = "pcie-root-port-base"
		case d.bus == "PCI":
			t.Parent = "virtio-pci"
		case d.bus == "virtio-bus":
			t.Parent = "virtio-device"
		default:
			t.Parent = "device"
		}
		for _, p := range d.props {
			if p == "id" || p == "bus" {
				continue
			}
			typ := propTypes[p]
			if typ == "" {
				typ = "str"
				if _, ok := netFeatureProps[p]; ok {
					typ = "bool"
				}
			}
			t.Props = append(t.Props, PropInfo{p, typ})
		}
		sort.Slice(t.Props, func(i, j int) bool { return t.Props[i].Name < t.Props[j].Name })
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

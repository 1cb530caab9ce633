package monitor

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// ErrNotFound is wrapped by a Hotplugger's errors for an id nothing has: the reply's
// class is then DeviceNotFound, as QEMU's.
var ErrNotFound = errors.New("not found")

// Hotplugger is the optional hotplug side of a Machine: devices, netdevs and block
// nodes added to and removed from the running guest. spec is the option as QEMU's
// command line would take it, key=value,... or a JSON object (QMP's arguments).
type Hotplugger interface {
	DeviceAdd(spec string) error
	// DeviceDel asks the guest to release the device; deleted runs once it has (maybe
	// before DeviceDel returns, when the guest never took the slot into use).
	DeviceDel(id string, deleted func()) error
	NetdevAdd(spec string) error
	NetdevDel(id string) error
	BlockdevAdd(spec string) error
	BlockdevDel(node string) error
	// Network is info network: the NICs with their netdevs, then netdevs without one.
	Network() []NIC
	// Devices lists the devices by id (info qtree): id → type.
	Devices() map[string]string
}

// NIC is one line pair of info network.
type NIC struct {
	Name, Model, MAC string // Name "" for a netdev without a NIC
	Netdev, Type     string
	Info             string // the netdev's own description (net=10.0.2.0,restrict=off, ...)
}

// BlockStater is the optional side of a Machine that counts block I/O
// (query-blockstats).
type BlockStater interface {
	BlockStats() []BlockStats
}

// BlockStats is one drive's counters.
type BlockStats struct {
	Device, NodeName, QDev          string
	RdBytes, WrBytes                uint64
	RdOps, WrOps, FlushOps          uint64
	UnmapOps, UnmapBytes            uint64
	FailedRd, FailedWr, FailedFlush uint64
	WrHighest                       uint64
}

func (s *Server) hotplugger() (Hotplugger, error) {
	if h, ok := s.m.(Hotplugger); ok {
		return h, nil
	}
	return nil, errorf(GenericError, "this machine does not support hotplug")
}

func hotplugErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrNotFound) {
		return errorf(DeviceNotFound, "%s", strings.TrimSuffix(err.Error(), ": "+ErrNotFound.Error()))
	}
	return errorf(GenericError, "%v", err)
}

// argsSpec is a command's arguments as the JSON object text a Hotplugger parses.
func argsSpec(c *call) string {
	b, _ := json.Marshal(c.args)
	return string(b)
}

// DeletedEvents are QEMU's DEVICE_DELETED events for a virtio device with the given
// id: its virtio-backend child first, then the device.
func (s *Server) emitDeleted(id string) {
	path := "/machine/peripheral/" + id
	s.Emit("DEVICE_DELETED", map[string]any{"path": path + "/virtio-backend"})
	s.Emit("DEVICE_DELETED", map[string]any{"device": id, "path": path})
}

// deviceDel runs device_del: the reply goes first, DEVICE_DELETED follows (at once
// when the guest had not powered the slot, else when it has).
func (s *Server) deviceDel(id string, c *call) error {
	h, err := s.hotplugger()
	if err != nil {
		return err
	}
	var mu sync.Mutex
	replied, early := false, false
	err = h.DeviceDel(id, func() {
		mu.Lock()
		defer mu.Unlock()
		if !replied {
			early = true
			return
		}
		s.emitDeleted(id)
	})
	mu.Lock()
	replied = true
	now := early
	mu.Unlock()
	if err != nil {
		return hotplugErr(err)
	}
	if now {
		emit := func() { s.emitDeleted(id) }
		if c != nil {
			c.then(emit)
		} else {
			emit()
		}
	}
	return nil
}

// registerHotplug adds device_add, device_del, netdev_add, netdev_del, blockdev-add,
// blockdev-del, query-hotpluggable-cpus and query-blockstats.
func (s *Server) registerHotplug() {
	do := func(f func(h Hotplugger, c *call) error) func(*call) (any, error) {
		return func(c *call) (any, error) {
			h, err := s.hotplugger()
			if err != nil {
				return nil, err
			}
			return struct{}{}, hotplugErr(f(h, c))
		}
	}
	s.add(&command{name: "device_add", args: []arg{{"driver", "string", false}, {"bus", "string", true}, {"id", "string", true}},
		open: true, ret: "empty", run: do(func(h Hotplugger, c *call) error { return h.DeviceAdd(argsSpec(c)) })})
	s.add(&command{name: "device_del", args: []arg{{"id", "string", false}}, ret: "empty", run: func(c *call) (any, error) {
		id, _ := c.str("id")
		return struct{}{}, s.deviceDel(id, c)
	}})
	s.add(&command{name: "netdev_add", args: []arg{{"type", "string", false}, {"id", "string", false}},
		open: true, ret: "empty", run: do(func(h Hotplugger, c *call) error { return h.NetdevAdd(argsSpec(c)) })})
	s.add(&command{name: "netdev_del", args: []arg{{"id", "string", false}}, ret: "empty",
		run: do(func(h Hotplugger, c *call) error { id, _ := c.str("id"); return h.NetdevDel(id) })})
	s.add(&command{name: "blockdev-add", args: []arg{{"driver", "string", false}, {"node-name", "string", true}},
		open: true, ret: "empty", run: do(func(h Hotplugger, c *call) error { return h.BlockdevAdd(argsSpec(c)) })})
	s.add(&command{name: "blockdev-del", args: []arg{{"node-name", "string", false}}, ret: "empty",
		run: do(func(h Hotplugger, c *call) error { n, _ := c.str("node-name"); return h.BlockdevDel(n) })})
	s.add(&command{name: "query-hotpluggable-cpus", ret: "any", run: func(*call) (any, error) { return s.hotpluggableCPUs() }})
	s.add(&command{name: "query-blockstats", args: []arg{{"query-nodes", "boolean", true}}, ret: "any",
		run: func(*call) (any, error) { return s.blockStats(), nil }})
}

// hotpluggableCPUs is query-hotpluggable-cpus: the vCPUs that exist, none of them
// hotpluggable. A board whose machine type says it has no hotpluggable CPUs (virt,
// as QEMU's) refuses the command as QEMU does.
func (s *Server) hotpluggableCPUs() (any, error) {
	i := s.m.Info()
	hot, typ := false, i.Target+"-cpu"
	for _, t := range i.Machines {
		if t.IsDefault {
			hot = t.HotpluggableCPUs
			if t.DefaultCPUType != "" {
				typ = t.DefaultCPUType
			}
		}
	}
	if !hot {
		return nil, errorf(GenericError, "The feature 'query-hotpluggable-cpus' is not enabled")
	}
	type cpu struct {
		Props      map[string]int `json:"props"`
		VCPUsCount int            `json:"vcpus-count"`
		QOMPath    string         `json:"qom-path,omitempty"`
		Type       string         `json:"type"`
	}
	out := []cpu{}
	cs := s.m.CPUs()
	for j := len(cs) - 1; j >= 0; j-- { // QEMU lists the highest CPU first
		c := cs[j]
		p := map[string]int{}
		for k, v := range c.Props {
			if k != "die-id" { // QEMU 7.2 leaves it out with one die per socket
				p[k] = v
			}
		}
		out = append(out, cpu{p, 1, c.QOMPath, typ})
	}
	return out, nil
}

func (s *Server) blockStats() any {
	type stats struct {
		UnmapOperations        uint64   `json:"unmap_operations"`
		UnmapMerged            uint64   `json:"unmap_merged"`
		FlushTotalTimeNS       uint64   `json:"flush_total_time_ns"`
		WrHighestOffset        uint64   `json:"wr_highest_offset"`
		WrTotalTimeNS          uint64   `json:"wr_total_time_ns"`
		FailedWrOperations     uint64   `json:"failed_wr_operations"`
		FailedRdOperations     uint64   `json:"failed_rd_operations"`
		WrMerged               uint64   `json:"wr_merged"`
		WrBytes                uint64   `json:"wr_bytes"`
		TimedStats             []string `json:"timed_stats"`
		FailedUnmapOperations  uint64   `json:"failed_unmap_operations"`
		FailedFlushOperations  uint64   `json:"failed_flush_operations"`
		AccountInvalid         bool     `json:"account_invalid"`
		RdTotalTimeNS          uint64   `json:"rd_total_time_ns"`
		InvalidUnmapOperations uint64   `json:"invalid_unmap_operations"`
		FlushOperations        uint64   `json:"flush_operations"`
		WrOperations           uint64   `json:"wr_operations"`
		UnmapBytes             uint64   `json:"unmap_bytes"`
		RdMerged               uint64   `json:"rd_merged"`
		RdBytes                uint64   `json:"rd_bytes"`
		UnmapTotalTimeNS       uint64   `json:"unmap_total_time_ns"`
		InvalidFlushOperations uint64   `json:"invalid_flush_operations"`
		AccountFailed          bool     `json:"account_failed"`
		RdOperations           uint64   `json:"rd_operations"`
		InvalidWrOperations    uint64   `json:"invalid_wr_operations"`
		InvalidRdOperations    uint64   `json:"invalid_rd_operations"`
	}
	type entry struct {
		Device   string `json:"device"`
		NodeName string `json:"node-name,omitempty"`
		QDev     string `json:"qdev,omitempty"`
		Stats    stats  `json:"stats"`
	}
	out := []entry{}
	var bs []BlockStats
	if st, ok := s.m.(BlockStater); ok {
		bs = st.BlockStats()
	} else {
		for _, b := range s.m.Blocks() {
			bs = append(bs, BlockStats{Device: b.Device, QDev: b.QDev})
		}
	}
	for _, b := range bs {
		out = append(out, entry{Device: b.Device, NodeName: b.NodeName, QDev: b.QDev, Stats: stats{
			UnmapOperations: b.UnmapOps, UnmapBytes: b.UnmapBytes, WrHighestOffset: b.WrHighest,
			FailedWrOperations: b.FailedWr, FailedRdOperations: b.FailedRd, FailedFlushOperations: b.FailedFlush,
			WrBytes: b.WrBytes, RdBytes: b.RdBytes, WrOperations: b.WrOps, RdOperations: b.RdOps,
			FlushOperations: b.FlushOps, TimedStats: []string{}, AccountInvalid: true, AccountFailed: true}})
	}
	return out
}

// hmpHotplug runs the HMP hotplug commands; false when cmd is not one.
func (s *Server) hmpHotplug(w *strings.Builder, cmd, rest string, c *call) bool {
	var err error
	switch cmd {
	case "device_add":
		var h Hotplugger
		if h, err = s.hotplugger(); err == nil {
			err = hotplugErr(h.DeviceAdd(rest))
		}
	case "device_del":
		err = s.deviceDel(rest, c)
	case "netdev_add":
		var h Hotplugger
		if h, err = s.hotplugger(); err == nil {
			err = hotplugErr(h.NetdevAdd(rest))
		}
	case "netdev_del":
		var h Hotplugger
		if h, err = s.hotplugger(); err == nil {
			err = hotplugErr(h.NetdevDel(rest))
		}
	default:
		return false
	}
	if err != nil {
		fmt.Fprintf(w, "Error: %v\n", err)
	}
	return true
}

// hmpInfoHotplug is info network and info qtree; false for other subcommands.
func (s *Server) hmpInfoHotplug(w *strings.Builder, what string) bool {
	h, ok := s.m.(Hotplugger)
	switch what {
	case "network":
		if !ok {
			return true
		}
		for _, n := range h.Network() {
			if n.Name == "" {
				fmt.Fprintf(w, "%s: index=0,type=%s,%s\n", n.Netdev, n.Type, n.Info)
				continue
			}
			fmt.Fprintf(w, "%s: index=0,type=nic,model=%s,macaddr=%s\n", n.Name, n.Model, n.MAC)
			if n.Netdev != "" {
				fmt.Fprintf(w, " \\ %s: index=0,type=%s,%s\n", n.Netdev, n.Type, n.Info)
			}
		}
	case "qtree":
		host, busName, busType := "gpex-pcihost", "pcie.0", "PCIE"
		if s.m.Info().Target == "x86_64" {
			host, busName, busType = "i440FX-pcihost", "pci.0", "PCI"
		}
		// The PCI host and the devices with an id (gemu keeps no full QOM tree).
		fmt.Fprintf(w, "bus: main-system-bus\n  type System\n  dev: %s, id \"\"\n    bus: %s\n      type %s\n", host, busName, busType)
		if !ok {
			return true
		}
		devs := h.Devices()
		ids := make([]string, 0, len(devs))
		for id := range devs {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			fmt.Fprintf(w, "      dev: %s, id \"%s\"\n", devs[id], id)
		}
	default:
		return false
	}
	return true
}

package monitor

import (
	"encoding/json"
)

// registerQMP fills the command table; the order is query-commands' and the schema's.
func (s *Server) registerQMP() {
	m := s.m
	empty := func(f func() error) func(*call) (any, error) {
		return func(*call) (any, error) { return struct{}{}, f() }
	}
	s.add(&command{name: "qmp_capabilities", args: []arg{{"enable", "array", true}}, ret: "empty",
		run: func(c *call) (any, error) {
			c.ss.mu.Lock()
			defer c.ss.mu.Unlock()
			if c.ss.ready {
				return nil, errorf(CommandNotFound, "Capabilities negotiation is already complete, command ignored")
			}
			var caps []any
			if raw, ok := c.args["enable"]; ok {
				json.Unmarshal(raw, &caps)
			}
			oob := false
			for _, v := range caps {
				name, ok := v.(string)
				if !ok {
					return nil, errorf(GenericError, "Invalid parameter type for 'enable[0]', expected: string")
				}
				if name != "oob" {
					return nil, errorf(GenericError, "Parameter 'enable' does not accept value '%s'", name)
				}
				oob = true
			}
			c.ss.ready, c.ss.oob = true, oob
			return struct{}{}, nil
		}})
	s.add(&command{name: "query-version", ret: "any", run: func(*call) (any, error) { return s.version(), nil }})
	s.add(&command{name: "query-commands", ret: "any", run: func(*call) (any, error) {
		type info struct {
			Name string `json:"name"`
		}
		out := make([]info, 0, len(s.list))
		for _, c := range s.list {
			out = append(out, info{c.name})
		}
		return out, nil
	}})
	s.add(&command{name: "query-qmp-schema", ret: "any", run: func(*call) (any, error) { return s.schema(), nil }})
	s.add(&command{name: "query-status", ret: "any", run: func(*call) (any, error) {
		st := m.Status()
		return struct {
			Status     Status `json:"status"`
			Singlestep bool   `json:"singlestep"`
			Running    bool   `json:"running"`
		}{st, false, st == Running}, nil
	}})
	s.add(&command{name: "query-name", ret: "any", run: func(*call) (any, error) {
		if n := m.Info().Name; n != "" {
			return struct {
				Name string `json:"name"`
			}{n}, nil
		}
		return struct{}{}, nil
	}})
	s.add(&command{name: "query-uuid", ret: "any", run: func(*call) (any, error) {
		u := m.Info().UUID
		if u == "" {
			u = "00000000-0000-0000-0000-000000000000"
		}
		return struct {
			UUID string `json:"UUID"`
		}{u}, nil
	}})
	s.add(&command{name: "query-kvm", ret: "any", run: func(*call) (any, error) {
		i := m.Info()
		return struct {
			Enabled bool `json:"enabled"`
			Present bool `json:"present"`
		}{i.KVMEnabled, i.KVMPresent}, nil
	}})
	s.add(&command{name: "query-machines", ret: "any", run: func(*call) (any, error) { return machines(m.Info()), nil }})
	s.add(&command{name: "query-cpus-fast", ret: "any", run: func(*call) (any, error) { return cpusFast(m.CPUs()), nil }})
	s.add(&command{name: "query-block", ret: "any", run: func(*call) (any, error) { return blocks(m.Blocks()), nil }})
	s.add(&command{name: "query-chardev", ret: "any", run: func(*call) (any, error) {
		type info struct {
			FrontendOpen bool   `json:"frontend-open"`
			Filename     string `json:"filename"`
			Label        string `json:"label"`
		}
		out := []info{}
		for _, c := range m.Chardevs() {
			out = append(out, info{c.FrontendOpen, c.Filename, c.Label})
		}
		return out, nil
	}})
	s.add(&command{name: "query-pci", ret: "any", run: func(*call) (any, error) { return pciInfo(m.PCI()), nil }})
	s.add(&command{name: "stop", ret: "empty", run: empty(m.Stop)})
	s.add(&command{name: "cont", ret: "empty", run: empty(m.Cont)})
	s.add(&command{name: "system_reset", ret: "empty", run: func(c *call) (any, error) {
		// QEMU replies first; the RESET event follows from the run loop.
		c.then(func() {
			if err := m.Reset(); err != nil {
				s.logf("monitor: system_reset: %v", err)
			}
		})
		return struct{}{}, nil
	}})
	s.add(&command{name: "system_powerdown", ret: "empty", run: func(c *call) (any, error) {
		if err := m.PowerDown(); err != nil {
			return nil, err
		}
		c.then(func() { s.Emit("POWERDOWN", nil) })
		return struct{}{}, nil
	}})
	s.add(&command{name: "quit", ret: "empty", run: func(c *call) (any, error) {
		s.Emit("SHUTDOWN", ShutdownData{Guest: false, Reason: "host-qmp-quit"})
		c.then(m.Quit)
		return struct{}{}, nil
	}})
	s.add(&command{name: "human-monitor-command", args: []arg{{"command-line", "string", false}, {"cpu-index", "integer", true}},
		ret: "any", run: func(c *call) (any, error) {
			line, _ := c.str("command-line")
			return s.hmp(line, c), nil
		}})
}

// ShutdownData is the SHUTDOWN and RESET events' data.
type ShutdownData struct {
	Guest  bool   `json:"guest"`
	Reason string `json:"reason"`
}

func machines(i Info) any {
	type mt struct {
		HotpluggableCPUs bool   `json:"hotpluggable-cpus"`
		Name             string `json:"name"`
		NUMAMemSupported bool   `json:"numa-mem-supported"`
		DefaultCPUType   string `json:"default-cpu-type,omitempty"`
		CPUMax           int    `json:"cpu-max"`
		Deprecated       bool   `json:"deprecated"`
		DefaultRAMID     string `json:"default-ram-id,omitempty"`
		Alias            string `json:"alias,omitempty"`
		IsDefault        bool   `json:"is-default,omitempty"`
	}
	out := []mt{}
	for _, t := range i.Machines {
		out = append(out, mt{t.HotpluggableCPUs, t.Name, t.NUMAMemSupported, t.DefaultCPUType, t.CPUMax, false, t.DefaultRAMID, t.Alias, t.IsDefault})
	}
	return out
}

func cpusFast(cs []CPU) any {
	type cpu struct {
		ThreadID int            `json:"thread-id"`
		Props    map[string]int `json:"props"`
		QOMPath  string         `json:"qom-path"`
		Index    int            `json:"cpu-index"`
		Target   string         `json:"target"`
	}
	out := []cpu{}
	for _, c := range cs {
		p := c.Props
		if p == nil {
			p = map[string]int{}
		}
		out = append(out, cpu{c.ThreadID, p, c.QOMPath, c.Index, c.Target})
	}
	return out
}

func blocks(bs []Block) any {
	type image struct {
		VirtualSize int64  `json:"virtual-size"`
		Filename    string `json:"filename"`
		Format      string `json:"format"`
		ActualSize  int64  `json:"actual-size"`
		DirtyFlag   bool   `json:"dirty-flag"`
	}
	type cache struct {
		NoFlush   bool `json:"no-flush"`
		Direct    bool `json:"direct"`
		Writeback bool `json:"writeback"`
	}
	type inserted struct {
		IopsRd         int64  `json:"iops_rd"`
		DetectZeroes   string `json:"detect_zeroes"`
		Image          image  `json:"image"`
		IopsWr         int64  `json:"iops_wr"`
		RO             bool   `json:"ro"`
		NodeName       string `json:"node-name"`
		BackingFile    string `json:"backing_file,omitempty"`
		BackingDepth   int    `json:"backing_file_depth"`
		Drv            string `json:"drv"`
		Iops           int64  `json:"iops"`
		BpsWr          int64  `json:"bps_wr"`
		WriteThreshold int64  `json:"write_threshold"`
		Encrypted      bool   `json:"encrypted"`
		Bps            int64  `json:"bps"`
		BpsRd          int64  `json:"bps_rd"`
		Cache          cache  `json:"cache"`
		File           string `json:"file"`
	}
	type block struct {
		IOStatus  string    `json:"io-status,omitempty"`
		Device    string    `json:"device"`
		Locked    bool      `json:"locked"`
		Removable bool      `json:"removable"`
		Inserted  *inserted `json:"inserted,omitempty"`
		QDev      string    `json:"qdev,omitempty"`
		Type      string    `json:"type"`
	}
	out := []block{}
	for _, b := range bs {
		x := block{Device: b.Device, Locked: b.Locked, Removable: b.Removable, QDev: b.QDev, Type: "unknown"}
		if in := b.Inserted; in != nil {
			x.IOStatus = "ok"
			dz := in.DetectZeroes
			if dz == "" {
				dz = "off"
			}
			x.Inserted = &inserted{DetectZeroes: dz, RO: in.ReadOnly, NodeName: in.NodeName, BackingFile: in.BackingFile,
				BackingDepth: in.BackingDepth, Drv: in.Format, Encrypted: in.Encrypted, File: in.File,
				Image: image{in.VirtualSize, in.File, in.Format, in.ActualSize, false},
				Cache: cache{in.NoFlush, in.Direct, in.Writeback}}
		}
		out = append(out, x)
	}
	return out
}

// pciClassDesc names PCI classes as QEMU's pci_class_descriptions does (the ones
// gemu's boards carry).
var pciClassDesc = map[uint16]string{
	0x0100: "SCSI controller", 0x0101: "IDE controller", 0x0106: "SATA controller", 0x0180: "Storage controller",
	0x0200: "Ethernet controller", 0x0300: "VGA controller", 0x0600: "Host bridge", 0x0601: "ISA bridge",
	0x0604: "PCI bridge", 0x0680: "Bridge", 0x0780: "Communication controller", 0x00ff: "Unclassified device",
	0x0880: "System peripheral", 0x0c03: "USB controller", 0x1000: "Encryption controller",
}

func pciInfo(ds []PCIDevice) any {
	return []struct {
		Bus     int       `json:"bus"`
		Devices []pciJSON `json:"devices"`
	}{{0, pciDevs(ds)}}
}

type pciRegionJSON struct {
	Prefetch *bool  `json:"prefetch,omitempty"`
	Mem64    *bool  `json:"mem_type_64,omitempty"`
	BAR      int    `json:"bar"`
	Size     uint64 `json:"size"`
	Address  int64  `json:"address"`
	Type     string `json:"type"`
}

type pciRange struct {
	Limit int64 `json:"limit"`
	Base  int64 `json:"base"`
}

type pciBridgeJSON struct {
	Bus struct {
		Prefetchable pciRange `json:"prefetchable_range"`
		Memory       pciRange `json:"memory_range"`
		Secondary    int      `json:"secondary"`
		IO           pciRange `json:"io_range"`
		Number       int      `json:"number"`
		Subordinate  int      `json:"subordinate"`
	} `json:"bus"`
	Devices []pciJSON `json:"devices,omitempty"`
}

type pciJSON struct {
	IRQPin    int            `json:"irq_pin"`
	Bus       int            `json:"bus"`
	Bridge    *pciBridgeJSON `json:"pci_bridge,omitempty"`
	QDevID    string         `json:"qdev_id"`
	IRQ       *int           `json:"irq,omitempty"`
	Slot      int            `json:"slot"`
	ClassInfo struct {
		Class int    `json:"class"`
		Desc  string `json:"desc,omitempty"`
	} `json:"class_info"`
	ID struct {
		Device    int  `json:"device"`
		SubVendor *int `json:"subsystem-vendor,omitempty"`
		Vendor    int  `json:"vendor"`
		Subsystem *int `json:"subsystem,omitempty"`
	} `json:"id"`
	Function int             `json:"function"`
	Regions  []pciRegionJSON `json:"regions"`
}

// pciDevs renders functions as query-pci's PciDeviceInfo, a bridge with its bus and
// the functions behind it (QEMU gives a bridge no subsystem ids).
func pciDevs(ds []PCIDevice) []pciJSON {
	devs := []pciJSON{}
	for _, d := range ds {
		x := pciJSON{IRQPin: d.IRQPin, Bus: d.Bus, QDevID: d.QDevID, Slot: d.Slot, Function: d.Function, Regions: []pciRegionJSON{}}
		x.ClassInfo.Class, x.ClassInfo.Desc = int(d.Class), pciClassDesc[d.Class]
		x.ID.Device, x.ID.Vendor = int(d.Device), int(d.Vendor)
		if d.IRQPin != 0 {
			irq := d.IRQ
			x.IRQ = &irq
		}
		if br := d.Bridge; br != nil {
			j := &pciBridgeJSON{Devices: pciDevs(br.Devices)}
			if br.Devices == nil {
				j.Devices = nil
			}
			j.Bus.Number, j.Bus.Secondary, j.Bus.Subordinate = br.Number, br.Secondary, br.Subordinate
			j.Bus.IO = pciRange{br.IOLimit, br.IOBase}
			j.Bus.Memory = pciRange{br.MemLimit, br.MemBase}
			j.Bus.Prefetchable = pciRange{br.PrefLimit, br.PrefBase}
			x.Bridge = j
		} else {
			sv, ss := int(d.SubVendor), int(d.SubID)
			x.ID.SubVendor, x.ID.Subsystem = &sv, &ss
		}
		for _, r := range d.Regions {
			rg := pciRegionJSON{BAR: r.BAR, Size: r.Size, Address: r.Address, Type: "memory"}
			if r.IO {
				rg.Type = "io"
			} else {
				p, m := r.Prefetch, r.Mem64
				rg.Prefetch, rg.Mem64 = &p, &m
			}
			x.Regions = append(x.Regions, rg)
		}
		devs = append(devs, x)
	}
	return devs
}

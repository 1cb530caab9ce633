package monitor

import (
	"encoding/json"
	"sort"
)

// Probe is the emulator's static tables that management tools probe before they
// start a guest (libvirt runs `-machine none` and asks these): the target, the -device
// types with their properties, the CPU models, the command-line options. The main
// fills it from its own tables (machine/qdev's device types); nil answers as empty.
type Probe struct {
	Devices []DeviceType
	CPUs    []CPUModel
	// Options are query-command-line-options' entries: option name → its parameters
	// (nil: the option takes any, as QEMU lists -device's).
	Options     map[string][]OptionParam
	GICVersions []int // query-gic-capabilities (aarch64 only): the emulated GIC versions
	// Accels are the accelerators the emulator has (kvm, tcg): QOM types NAME-accel.
	Accels []string
}

// DeviceType is one -device type.
type DeviceType struct {
	Name, Parent, Desc string
	Props              []DeviceProp
}

// DeviceProp is one property of a device type.
type DeviceProp struct {
	Name, Type string
}

// CPUModel is one -cpu model of query-cpu-definitions.
type CPUModel struct {
	Name, Type string // the model's name and QOM type (qemu64, qemu64-x86_64-cpu)
	Static     bool
	Migratable bool
	Default    bool
}

// OptionParam is one parameter of a command-line option.
type OptionParam struct {
	Name, Type, Help string
}

// qomType is one entry of qom-list-types.
type qomType struct {
	Name     string `json:"name"`
	Parent   string `json:"parent,omitempty"`
	Abstract bool   `json:"abstract,omitempty"`
}

type qomProp struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Description string `json:"description,omitempty"`
}

// qomTypes is the type tree gemu answers for: abstract bases, the -device types, the
// machine types and the CPU models.
func (s *Server) qomTypes() []qomType {
	i := s.m.Info()
	p := i.Probe
	if p == nil {
		p = &Probe{}
	}
	out := []qomType{{Name: "object", Abstract: true}, {Name: "device", Parent: "object", Abstract: true},
		{Name: "pci-device", Parent: "device", Abstract: true}, {Name: "virtio-pci", Parent: "pci-device", Abstract: true},
		{Name: "virtio-device", Parent: "device", Abstract: true}, {Name: "machine", Parent: "object", Abstract: true},
		{Name: "none-machine", Parent: "machine"}, {Name: "cpu", Parent: "device", Abstract: true},
		{Name: "rng-backend", Parent: "object", Abstract: true},
		{Name: "rng-random", Parent: "rng-backend"}, {Name: "rng-builtin", Parent: "rng-backend"},
		// Guest RAM is one anonymous mapping per slot, QEMU's memory-backend-ram, made
		// by the board: -object cannot create memory backends, so the classes are
		// named (management tools read their properties) but abstract.
		{Name: "memory-backend", Parent: "object", Abstract: true},
		{Name: "memory-backend-ram", Parent: "memory-backend", Abstract: true},
		{Name: "memory-backend-file", Parent: "memory-backend", Abstract: true},
		{Name: "memory-backend-memfd", Parent: "memory-backend", Abstract: true}}
	cpuBase := i.Target + "-cpu"
	if i.Target != "" {
		out = append(out, qomType{Name: cpuBase, Parent: "cpu", Abstract: true})
	}
	out = append(out, qomType{Name: "accel", Parent: "object", Abstract: true})
	for _, a := range p.Accels {
		out = append(out, qomType{Name: a + "-accel", Parent: "accel"})
	}
	for _, d := range p.Devices {
		out = append(out, qomType{Name: d.Name, Parent: d.Parent})
	}
	for _, m := range i.Machines {
		out = append(out, qomType{Name: m.Name + "-machine", Parent: "machine"})
	}
	for _, c := range p.CPUs {
		out = append(out, qomType{Name: c.Type, Parent: cpuBase})
	}
	return out
}

// implements reports whether type name is base or derives from it.
func implements(types map[string]qomType, name, base string) bool {
	for n := 0; name != "" && n < 16; n++ {
		if name == base {
			return true
		}
		name = types[name].Parent
	}
	return false
}

// registerProbe adds the capability-probing commands.
func (s *Server) registerProbe() {
	info := s.m.Info()
	s.add(&command{name: "query-target", ret: "any", run: func(*call) (any, error) {
		return struct {
			Arch string `json:"arch"`
		}{s.m.Info().Target}, nil
	}})
	s.add(&command{name: "qom-list-types", args: []arg{{"implements", "string", true}, {"abstract", "boolean", true}}, ret: "any",
		run: func(c *call) (any, error) {
			impl, hasImpl := c.str("implements")
			abstract := false
			if raw, ok := c.args["abstract"]; ok {
				json.Unmarshal(raw, &abstract)
			}
			all := s.qomTypes()
			byName := map[string]qomType{}
			for _, t := range all {
				byName[t.Name] = t
			}
			out := []qomType{}
			for _, t := range all {
				if t.Abstract && !abstract {
					continue
				}
				if hasImpl && !implements(byName, t.Name, impl) {
					continue
				}
				out = append(out, t)
			}
			return out, nil
		}})
	s.add(&command{name: "device-list-properties", args: []arg{{"typename", "string", false}}, ret: "any",
		run: func(c *call) (any, error) {
			name, _ := c.str("typename")
			for _, t := range s.qomTypes() {
				if t.Name != name {
					continue
				}
				d, ok := s.deviceType(name)
				if t.Abstract || !ok {
					return nil, errorf(GenericError, "Parameter 'typename' expects a non-abstract device type")
				}
				return deviceProps(d), nil
			}
			return nil, errorf(DeviceNotFound, "Device '%s' not found", name)
		}})
	s.add(&command{name: "qom-list-properties", args: []arg{{"typename", "string", false}}, ret: "any",
		run: func(c *call) (any, error) {
			name, _ := c.str("typename")
			if d, ok := s.deviceType(name); ok {
				return append([]qomProp{{Name: "type", Type: "string"}}, deviceProps(d)...), nil
			}
			for _, t := range s.qomTypes() {
				if t.Name == name {
					return []qomProp{{Name: "type", Type: "string"}}, nil
				}
			}
			return nil, errorf(DeviceNotFound, "Class '%s' not found", name)
		}})
	s.add(&command{name: "query-cpu-definitions", ret: "any", run: func(*call) (any, error) {
		type def struct {
			Name        string   `json:"name"`
			Typename    string   `json:"typename"`
			Unavailable []string `json:"unavailable-features"`
			Static      bool     `json:"static"`
			Migratable  bool     `json:"migration-safe"`
			Deprecated  bool     `json:"deprecated"`
		}
		out := []def{}
		if p := s.m.Info().Probe; p != nil {
			for _, c := range p.CPUs {
				out = append(out, def{c.Name, c.Type, []string{}, c.Static, c.Migratable, false})
			}
		}
		return out, nil
	}})
	s.add(&command{name: "query-tpm-models", ret: "any", run: func(*call) (any, error) { return []string{}, nil }})
	s.add(&command{name: "query-tpm-types", ret: "any", run: func(*call) (any, error) { return []string{}, nil }})
	s.add(&command{name: "query-command-line-options", args: []arg{{"option", "string", true}}, ret: "any",
		run: func(c *call) (any, error) {
			type param struct {
				Name string `json:"name"`
				Type string `json:"type"`
				Help string `json:"help,omitempty"`
			}
			type opt struct {
				Option     string  `json:"option"`
				Parameters []param `json:"parameters"`
			}
			var opts map[string][]OptionParam
			if p := s.m.Info().Probe; p != nil {
				opts = p.Options
			}
			names := make([]string, 0, len(opts))
			for n := range opts {
				names = append(names, n)
			}
			sort.Strings(names)
			want, one := c.str("option")
			out := []opt{}
			for _, n := range names {
				if one && n != want {
					continue
				}
				o := opt{Option: n, Parameters: []param{}}
				for _, p := range opts[n] {
					o.Parameters = append(o.Parameters, param{p.Name, p.Type, p.Help})
				}
				out = append(out, o)
			}
			if one && len(out) == 0 {
				return nil, errorf(GenericError, "invalid option name: %s", want)
			}
			return out, nil
		}})
	s.add(&command{name: "query-sev-capabilities", ret: "any", run: func(*call) (any, error) {
		return nil, errorf(GenericError, "SEV is not supported by gemu")
	}})
	if info.Target == "x86_64" {
		s.add(&command{name: "query-sgx-capabilities", ret: "any", run: func(*call) (any, error) {
			return nil, errorf(GenericError, "SGX is not supported by gemu")
		}})
	}
	if info.Target == "aarch64" {
		s.add(&command{name: "query-gic-capabilities", ret: "any", run: func(*call) (any, error) {
			type gic struct {
				Emulated bool `json:"emulated"`
				Version  int  `json:"version"`
				Kernel   bool `json:"kernel"`
			}
			out := []gic{}
			if p := s.m.Info().Probe; p != nil {
				for _, v := range p.GICVersions {
					out = append(out, gic{true, v, false})
				}
			}
			return out, nil
		}})
	}
}

func (s *Server) deviceType(name string) (DeviceType, bool) {
	if p := s.m.Info().Probe; p != nil {
		for _, d := range p.Devices {
			if d.Name == name {
				return d, true
			}
		}
	}
	return DeviceType{}, false
}

func deviceProps(d DeviceType) []qomProp {
	out := []qomProp{}
	for _, p := range d.Props {
		out = append(out, qomProp{Name: p.Name, Type: p.Type})
	}
	return out
}

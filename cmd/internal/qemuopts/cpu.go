package qemuopts

import (
	"fmt"
	"strings"
)

// CPUFeature is one -cpu feature or property: "+x2apic" gives {x2apic, "on"},
// "-x2apic" {x2apic, "off"}, "pmu=off" {pmu, "off"}, a bare "x2apic" {x2apic, "on"}.
type CPUFeature struct {
	Name  string
	Value string
	Plus  bool // given in the legacy +feat / -feat form
}

// On reports whether the feature's value is a boolean true (ok false when the value is
// not a boolean, e.g. a property like model-id=...).
func (f CPUFeature) On() (on, ok bool) { return ParseBool(f.Value) }

// CPU is a parsed -cpu option.
type CPU struct {
	Model    string
	Features []CPUFeature // in the order given; a later one overrides an earlier
	Help     bool         // -cpu help or -cpu ?
}

// ParseCPU parses -cpu MODEL[,+feat][,-feat][,feat=val][,feat] as QEMU's
// x86/arm cpu_parse_features split it.
func ParseCPU(spec string) (CPU, error) {
	if len(spec) > MaxSpec {
		return CPU{}, &Error{Option: "cpu", Spec: spec, Msg: "option string too long"}
	}
	parts := strings.Split(spec, ",")
	c := CPU{Model: parts[0]}
	if IsHelp(c.Model) {
		c.Help = true
		return c, nil
	}
	if c.Model == "" {
		return c, &Error{Option: "cpu", Spec: spec, Msg: "no CPU model given"}
	}
	for _, p := range parts[1:] {
		var f CPUFeature
		switch {
		case p == "":
			continue // QEMU's strtok skips empty elements
		case p[0] == '+' || p[0] == '-':
			f = CPUFeature{Name: p[1:], Value: "on", Plus: true}
			if p[0] == '-' {
				f.Value = "off"
			}
		case strings.ContainsRune(p, '='):
			k, v, _ := strings.Cut(p, "=")
			f = CPUFeature{Name: k, Value: v}
		default:
			f = CPUFeature{Name: p, Value: "on"}
		}
		if f.Name == "" {
			return c, &Error{Option: "cpu", Spec: spec, Msg: fmt.Sprintf("empty feature name in %q", p)}
		}
		c.Features = append(c.Features, f)
	}
	return c, nil
}

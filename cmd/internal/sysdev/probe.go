package sysdev

import (
	"gemu/machine/monitor"
	"gemu/machine/qdev"
)

// Probe is what the QMP capability probes (libvirt's `-machine none` run) report
// for an emulator: machine/qdev's device types, the main's accelerators, CPU models and GIC
// versions (aarch64), and the command-line options both mains take.
func Probe(accels []string, cpus []monitor.CPUModel, gicVersions []int) *monitor.Probe {
	p := &monitor.Probe{Accels: accels, CPUs: cpus, GICVersions: gicVersions, Options: map[string][]monitor.OptionParam{
		"machine": {{Name: "type", Type: "string", Help: "emulated machine"}, {Name: "accel", Type: "string", Help: "accelerator list"}},
		"accel":   {{Name: "accel", Type: "string"}},
		"smp":     {{Name: "cpus", Type: "number"}, {Name: "sockets", Type: "number"}, {Name: "cores", Type: "number"}, {Name: "threads", Type: "number"}, {Name: "maxcpus", Type: "number"}},
		"name":    {{Name: "guest", Type: "string"}, {Name: "debug-threads", Type: "boolean"}},
		"msg":     {{Name: "timestamp", Type: "boolean"}},
		"drive":   {}, "device": {}, "netdev": {}, "chardev": {}, "object": {}, "mon": {}, "global": {},
	}}
	for _, t := range qdev.Types() {
		d := monitor.DeviceType{Name: t.Name, Parent: t.Parent, Desc: t.Desc}
		for _, pr := range t.Props {
			d.Props = append(d.Props, monitor.DeviceProp{Name: pr.Name, Type: pr.Type})
		}
		p.Devices = append(p.Devices, d)
	}
	return p
}

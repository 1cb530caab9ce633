package main

import (
	"io"

	"gemu/accel/kvm"
	"gemu/cmd/internal/daemon"
	"gemu/cmd/internal/runloop"
	"gemu/cmd/internal/sysdev"
	"gemu/machine/monitor"
)

// cpuModels are the -cpu models gemu's PC takes, as query-cpu-definitions lists them.
var cpuModels = []monitor.CPUModel{{Name: "host", Type: "host-x86_64-cpu"}, {Name: "max", Type: "max-x86_64-cpu"}}

// machineInfo is the monitors' view of this emulator: its machine types (the PC, and
// none for probing) and the tables the capability probes answer from.
func machineInfo(name, uuid string, kvmEnabled bool) monitor.Info {
	return monitor.Info{Name: name, UUID: uuid, Target: "x86_64", KVMPresent: kvm.Accel.Available() == nil, KVMEnabled: kvmEnabled,
		Machines: []monitor.MachineType{{Name: "pc-i440fx-7.2", Alias: "pc", IsDefault: true, CPUMax: kvm.MaxCPUs,
			HotpluggableCPUs: true, NUMAMemSupported: false, DefaultCPUType: "qemu64-x86_64-cpu", DefaultRAMID: "pc.ram"},
			{Name: "none", CPUMax: 1}},
		Probe: sysdev.Probe([]string{"kvm", "tcg"}, cpuModels, nil)}
}

// runNone is `-machine none`: no guest, only the monitors (capability probing).
func runNone(o *options, stderr io.Writer) int {
	acc, _, err := chooseAccel(o.accels)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	monChardevs := runloop.TakeMonitorChardevs(&o.Common)
	var loop *runloop.Loop
	loop = runloop.New(runloop.Config{Prog: prog, Stderr: stderr, Package: "gemu-0.1",
		StartPaused: o.StartPaused, NoShutdown: o.NoShutdown, NoReboot: o.noReboot,
		Info: machineInfo(o.name, o.UUID, acc.Name() == "kvm"),
		BeforeRun: func() error {
			if err := loop.OpenMonitors(&o.Common, monChardevs, false); err != nil {
				return err
			}
			daemon.Ready()
			return nil
		},
		New: func() (runloop.Guest, error) { return runloop.NoneGuest(), nil },
	})
	code, err := loop.Run()
	if err != nil {
		return fail(stderr, "%v", err)
	}
	return code
}

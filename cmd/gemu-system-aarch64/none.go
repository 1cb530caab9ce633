package main

import (
	"os"

	"gemu/cmd/internal/daemon"
	"gemu/cmd/internal/runloop"
	"gemu/cmd/internal/sysdev"
	"gemu/machine/monitor"
)

// cpuModels are the -cpu models gemu's virt board takes, as query-cpu-definitions
// lists them.
var cpuModels = []monitor.CPUModel{{Name: "cortex-a57", Type: "cortex-a57-arm-cpu"},
	{Name: "cortex-a53", Type: "cortex-a53-arm-cpu"}, {Name: "max", Type: "max-arm-cpu"}}

// machineInfo is the monitors' view of this emulator: its machine types (virt, and
// none for probing) and the tables the capability probes answer from.
func machineInfo(name, uuid string) monitor.Info {
	return monitor.Info{Name: name, UUID: uuid, Target: "aarch64", Machines: []monitor.MachineType{
		{Name: "virt-7.2", Alias: "virt", CPUMax: 16, NUMAMemSupported: true, DefaultCPUType: "cortex-a15-arm-cpu", DefaultRAMID: "mach-virt.ram"},
		{Name: "none", CPUMax: 1}},
		Probe: sysdev.Probe([]string{"tcg"}, cpuModels, []int{2, 3})}
}

// startDaemon applies -daemonize and -pidfile; parent is true in the process that
// only waited for the daemon (it exits with code).
func startDaemon(o *options) (code int, parent bool, cleanup func(), err error) {
	cleanup = func() {}
	if o.Daemonize {
		if code, parent := daemon.Start(os.Stderr); parent {
			return code, true, cleanup, nil
		}
	}
	if o.Pidfile != "" {
		if cleanup, err = daemon.WritePidfile(o.Pidfile); err != nil {
			return 1, false, func() {}, err
		}
	}
	return 0, false, cleanup, nil
}

// runNone is `-machine none`: no guest, only the monitors (capability probing).
func runNone(o *options) (int, error) {
	monChardevs := runloop.TakeMonitorChardevs(&o.Common)
	var loop *runloop.Loop
	loop = runloop.New(runloop.Config{Prog: prog, Stderr: os.Stderr, Package: qmpPackage,
		StartPaused: o.StartPaused, NoShutdown: o.NoShutdown, NoReboot: o.noReboot,
		Info: machineInfo(o.Name, o.UUID),
		BeforeRun: func() error {
			if err := loop.OpenMonitors(&o.Common, monChardevs, false); err != nil {
				return err
			}
			daemon.Ready()
			return nil
		},
		New: func() (runloop.Guest, error) { return runloop.NoneGuest(), nil },
	})
	return loop.Run()
}

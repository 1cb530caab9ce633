// Command gemu-system-aarch64 emulates QEMU's aarch64 `virt` board with a Cortex-A57
// class vCPU under TCG. It accepts the subset of qemu-system-aarch64's command line
// that boots a Linux kernel directly; see usage. Parsing and wiring only: the board is
// machine/virt, see ARCHITECTURE.md.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"gemu/cmd/internal/cpuprof"
	"gemu/cmd/internal/daemon"
	"gemu/cmd/internal/qemuopts"
	"gemu/cmd/internal/runloop"
	"gemu/cmd/internal/sysdev"
	"gemu/hw/chardev"
	"gemu/hw/pci"
	"gemu/hw/vmstate"
	"gemu/machine/monitor"
	"gemu/machine/qdev"
	"gemu/machine/virt"
	arm "gemu/target-arm"
)

const prog = "gemu-system-aarch64"

const version = "gemu-system-aarch64 version 0.1 (qemu-system-aarch64 7.2 compatible command line)"

const usage = `usage: gemu-system-aarch64 [options] [disk_image]

gemu-system-aarch64 is a QEMU-compatible arm64 emulator: it takes qemu-system-aarch64's
option syntax and boots a Linux kernel directly on the virt board with Cortex-A57 class
vCPUs under gemu's own translator (TCG).

  -M, -machine virt[,gic-version=2|3|max|host][,dumpdtb=FILE][,accel=tcg]
                         the board (only virt); GIC version (default 2); -machine help
  -cpu cortex-a57        CPU model (cortex-a53, cortex-a72, neoverse-n1, max); -cpu help
  -m [size=]SIZE         RAM, MiB without a suffix; K M G T suffixes, 1.5G (default 128M)
  -smp [cpus=]N[,sockets=S][,clusters=L][,cores=C][,threads=T][,maxcpus=M]
                         CPUs (default 1); the guest sees N CPUs in one cluster
  -kernel FILE           arm64 Linux Image (or gzip-compressed), ELF, U-Boot uImage, or a
                         raw binary (entered at RAM base + 0x80000), as QEMU loads them
  -initrd FILE           initial ramdisk (raw or U-Boot ramdisk image)
  -fw_cfg [name=]opt/NAME,file=FILE|string=STR
                         add a file to the fw_cfg device's directory
  -rtc [base=utc|localtime|DATE][,clock=host|rt|vm][,driftfix=none|slew]
                         where the PL031 RTC starts (DATE: 2006-06-17T16:01:21 or 2006-06-17)
  -bios, -pflash, -drive if=pflash
                         firmware boot: not supported yet
  -append STRING         kernel command line
  -dtb FILE              use this device tree instead of the generated one
  -nographic             no display; serial console on stdio (the default here)
  -serial stdio|file:PATH|null
                         where the PL011 console goes (default stdio; the last one counts)
  -no-reboot             exit instead of rebooting when the guest resets
  -accel tcg[,thread=multi]
                         accelerator (only tcg: KVM cannot run arm64 guests on this host)
  -d in_asm,exec,int     trace translated code, executed blocks, exceptions
  -D FILE                write -d traces to FILE instead of stderr
  -qmp unix:PATH,server=on,wait=off | tcp:HOST:PORT,server=on,wait=off | stdio
                         a QMP monitor (QEMU 7.2's protocol); several may be given
  -monitor stdio|unix:...|tcp:...
                         a human monitor (stdio only with the serial elsewhere)
  -chardev socket,id=ID,... -mon chardev=ID,mode=control|readline
                         a monitor on a -chardev socket
  -S                     start stopped (cont on a monitor starts the guest)
  -incoming URI|defer    load the guest from URI (file:, exec:, unix:, tcp:) before it runs
  -loadvm NAME           start from the internal snapshot NAME of the qcow2 drives (savevm)
  -no-shutdown           on guest power-off, stop instead of exiting (system_reset restarts)
  -name [guest=]NAME, -uuid UUID
                         the guest's name and UUID, as the monitor reports them
  -display none, -vga none
                         accepted for compatibility
  -drive, -hda FILE, -blockdev, -device, -chardev, -object, -snapshot
                         block, virtio and character devices
  -netdev, -nic, -global parsed and checked, not yet connected to the board (warned)
  -nodefaults            no default devices (the PL011 console goes nowhere without -serial)
  -no-user-config        accepted (gemu reads no configuration files)
  -msg timestamp=on      prefix error and warning lines with the UTC time, as QEMU
  -daemonize, -pidfile FILE
                         detach once the monitors listen; write (and lock) the pid file
  -machine none          no guest, only the monitors (capability probing, as libvirt does)
  -h, -help, --help      this help
  -version, --version    version
On the stdio console, Ctrl-A x quits and Ctrl-A h lists the escapes.
GEMU_CPUPROFILE=FILE in the environment writes a Go CPU profile of the run.
`

// options is the parsed command line. The embedded qemuopts.Common holds everything
// both system emulators share, including the device options stored for syntax only
// (Drives, Devices, Blockdevs, Chardevs, Objects, Netdevs, NICs, Globals, Mons, QMP):
// the board does not take them yet.
type options struct {
	qemuopts.Common

	cfg       virt.Config
	topology  qemuopts.Topology // from -smp; the board flattens it to cfg.SMP (warned)
	serial    string
	noReboot  bool
	dumpDTB   string
	traceSpec string
	traceFile string
	incoming  string   // -incoming URI|defer
	loadvm    string   // -loadvm NAME
	none      bool     // -machine none: no guest, the monitors only (none.go)
	warnings  []string // one line each, printed before the guest starts
	// incomingBuilt: the first board, the one -incoming loads into, is built.
	incomingBuilt bool
}

func main() {
	// The translator allocates a block's IR, closures and tables and keeps the blocks
	// for good: with Go's default GOGC=100 the collector took ~8% of a boot. 200
	// halves that for ~20 MiB more peak RSS (still below qemu-system-aarch64's). An
	// explicit GOGC in the environment wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
	stop := cpuprof.Start()
	code, err := run(os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s%s: %v\n", msgPrefix(), prog, err)
	}
	os.Exit(code)
}

func run(args []string) (int, error) {
	o, done, err := parse(args)
	if err != nil || done {
		return exitFor(err), err
	}
	msgTimestamp = o.MsgTimestamp
	for _, w := range o.warnings {
		fmt.Fprintf(os.Stderr, "%s%s: warning: %s\n", msgPrefix(), prog, w)
	}
	code, parent, cleanup, err := startDaemon(&o) // -daemonize, -pidfile
	if err != nil || parent {
		return code, err
	}
	defer cleanup()
	if o.none {
		return runNone(&o)
	}
	if o.traceSpec != "" {
		f, err := arm.ParseTraceFlags(o.traceSpec)
		if err != nil {
			return 1, fmt.Errorf("-d: %w", err)
		}
		o.cfg.TraceFlags = f
		o.cfg.Trace = os.Stderr
		if o.traceFile != "" {
			lf, err := os.Create(o.traceFile)
			if err != nil {
				return 1, fmt.Errorf("-D: %w", err)
			}
			defer lf.Close()
			o.cfg.Trace = lf
		}
	}
	if err := o.cfg.Validate(); err != nil {
		return 1, err
	}
	if o.dumpDTB != "" {
		m, err := virt.New(o.cfg)
		if err != nil {
			return 1, err
		}
		if err := os.WriteFile(o.dumpDTB, m.DTB(), 0o644); err != nil {
			return 1, err
		}
		return 0, nil
	}
	if h, ok, err := sysdev.Help(&o.Common); ok {
		if err != nil {
			return 1, err
		}
		fmt.Print(h)
		return 0, nil
	}
	if o.cfg.Kernel == "" {
		return 1, errors.New("no -kernel given: the virt board has no firmware to boot")
	}

	// The loop quits for Ctrl-A x and signals; it is built before the devices so the
	// stdio backend can reach it.
	var loop *runloop.Loop
	quit := func() { loop.QuitHost("host-ui") }
	monChardevs := runloop.TakeMonitorChardevs(&o.Common)
	// Drives and -chardevs are opened once: they (and the image locks) outlive a reboot.
	wiring, err := sysdev.Open(&o.Common, "virtio", chardev.Options{OnQuit: quit})
	if err != nil {
		return 1, err
	}
	defer wiring.Close()
	if wiring.StdioUsed && len(o.Serials) == 0 {
		o.serial = "null" // a -chardev took stdio (QEMU would refuse the clash)
	}
	be, err := chardev.Open(o.serial, chardev.Options{OnQuit: quit})
	if err != nil {
		return 1, err
	}
	defer be.Close()
	o.cfg.Serial = be
	warn := func(msg string) { fmt.Fprintf(os.Stderr, "%s%s: warning: %s\n", msgPrefix(), prog, msg) }
	o.cfg.Warn = warn

	var envMu sync.Mutex
	var env *qdev.Env      // the current machine's devices
	var last *virt.Machine // the machine before a reset (its RTC carries over)
	attached := func(id string) bool {
		envMu.Lock()
		defer envMu.Unlock()
		return env != nil && env.Attached(id)
	}
	chardevs := []monitor.Chardev{{Label: "serial0", Filename: o.serial, FrontendOpen: true}}
	for id := range wiring.Chardevs {
		chardevs = append(chardevs, monitor.Chardev{Label: id, Filename: id, FrontendOpen: true})
	}
	loop = runloop.New(runloop.Config{
		Prog: prog, Stderr: os.Stderr, Package: qmpPackage,
		StartPaused: o.StartPaused, NoShutdown: o.NoShutdown, NoReboot: o.noReboot, Incoming: o.incoming,
		Info:     machineInfo(o.Name, o.UUID),
		Blocks:   runloop.Blocks(wiring, &o.Common, attached),
		Chardevs: chardevs,
		Hotplug:  wiring,
		Restore:  func() { be.Close() },
		BeforeRun: func() error {
			if o.loadvm != "" {
				if err := loop.LoadVMAtStart(o.loadvm); err != nil {
					return err
				}
			}
			if err := loop.OpenMonitors(&o.Common, monChardevs, o.serial == "stdio"); err != nil {
				return err
			}
			daemon.Ready()
			return nil
		},
		New: func() (runloop.Guest, error) {
			if last != nil {
				o.cfg.RTCBase = last.RTCBase() // the RTC keeps what the guest set across a reset, as QEMU's
			}
			cfg := o.cfg
			// The first board of -incoming takes its RAM from the stream (not loaded).
			cfg.Incoming, o.incomingBuilt = o.incoming != "" && !o.incomingBuilt, true
			m, err := virt.New(cfg)
			if err != nil {
				return nil, err
			}
			e, err := wiring.Plug(m, warn)
			if err != nil {
				m.Close()
				return nil, err
			}
			e.StopOnError = loop.StopForIOError // werror=stop/rerror=stop pause the guest
			m.OnRelease(e.Reset)
			envMu.Lock()
			env = e
			envMu.Unlock()
			last = m
			return virtGuest{m}, nil
		},
	})
	loop.SetDrives(wiring.Drives)
	return loop.Run()
}

// qmpPackage is the QMP greeting's package string.
const qmpPackage = "gemu-0.1"

// virtGuest adapts the virt board to the shared run loop.
type virtGuest struct{ m *virt.Machine }

func (g virtGuest) Run() (runloop.Exit, error) {
	exit, err := g.m.Run()
	switch exit {
	case virt.ExitPowerOff:
		return runloop.PowerOff, nil
	case virt.ExitReset:
		return runloop.Reset, nil
	case virt.ExitStopped:
		return runloop.Stopped, nil
	}
	return runloop.Failed, err
}

func (g virtGuest) Stop()                                { g.m.Stop() }
func (g virtGuest) Pause() error                         { return g.m.Pause() }
func (g virtGuest) Resume()                              { g.m.Resume() }
func (g virtGuest) Reset()                               { g.m.Reset() }
func (g virtGuest) PowerDown() error                     { return g.m.PowerDown() }
func (g virtGuest) ReadPhys(addr uint64, p []byte) error { return g.m.ReadPhys(addr, p) }
func (g virtGuest) PCI() *pci.Bus                        { return g.m.PCI() }
func (g virtGuest) Close()                               { g.m.Close() }

// SaveVM, LoadVM and RAMSize make the board runloop.Migratable.
func (g virtGuest) SaveVM(w io.Writer) (vmstate.Stats, error) { return g.m.Save(w) }
func (g virtGuest) LoadVM(r io.Reader) (vmstate.Stats, error) { return g.m.Load(r) }

// SaveLive makes the board runloop.LiveMigratable, LoadVMFile runloop.FileLoader.
func (g virtGuest) SaveLive(w io.Writer, p vmstate.LiveParams) (vmstate.Stats, time.Duration, error) {
	return g.m.SaveLive(w, p)
}

func (g virtGuest) LoadVMFile(f *os.File, lazy bool) (vmstate.Stats, error) {
	return g.m.LoadFile(f, lazy)
}
func (g virtGuest) RAMSize() uint64 { return g.m.RAMSize() }

// GuestTime and QuiesceDevices serve savevm/loadvm (runloop.GuestClocked, runloop.Quiescer).
func (g virtGuest) GuestTime() time.Duration        { return g.m.GuestTime() }
func (g virtGuest) QuiesceDevices() (func(), error) { return g.m.QuiesceDevices() }

// CPUs reports the vCPUs as QEMU's virt does: one cluster, thread-id the process's
// (gemu's vCPUs are goroutines, not threads of their own).
func (g virtGuest) CPUs() []monitor.CPU {
	out := make([]monitor.CPU, g.m.NumCPUs())
	for i := range out {
		out[i] = monitor.CPU{Index: i, ThreadID: os.Getpid(), Target: "aarch64", Current: i == 0,
			QOMPath: fmt.Sprintf("/machine/unattached/device[%d]", i),
			Props:   map[string]int{"core-id": i, "thread-id": 0, "socket-id": 0, "cluster-id": 0}}
	}
	return out
}

func exitFor(err error) int {
	if err != nil {
		return 1
	}
	return 0
}

// machineName is QEMU's name for the board, in messages.
const machineName = "virt-7.2"

const machineHelp = `Supported machines are:
virt                 QEMU 7.2 ARM Virtual Machine (alias of virt-7.2)
virt-7.2             QEMU 7.2 ARM Virtual Machine
none                 empty machine
`

// cpuHelp is -cpu help: the models target-arm has, sorted as QEMU lists them.
func cpuHelp() string {
	var names []string
	for _, m := range arm.Models() {
		names = append(names, m.Name)
	}
	sort.Strings(names)
	return "Available CPUs:\n  " + strings.Join(names, "\n  ") + "\n"
}

// parse reads QEMU-style options (one or two leading dashes). done reports that the
// request was fully handled (-h, -version, -machine help, -cpu help).
func parse(args []string) (o options, done bool, err error) {
	o.cfg = virt.Config{RAMSize: 128 << 20, SMP: 1, GICVersion: 2}
	o.serial = "stdio"
	o.topology = qemuopts.Topology{CPUs: 1, Sockets: 1, Dies: 1, Clusters: 1, Cores: 1, Threads: 1, MaxCPUs: 1}
	own := map[string]bool{"dtb": true, "d": true, "D": true, "fw_cfg": true, "bios": true, "pflash": true, "rtc": true, "incoming": true, "loadvm": true}
	err = o.Parse(args, own, func(name, v string) error {
		switch name {
		case "fw_cfg":
			return o.fwCfg(v)
		case "rtc":
			return o.rtc(v)
		case "bios", "pflash":
			return fmt.Errorf("-%s %s: firmware boot is not supported yet (boot a kernel directly with -kernel)", name, v)
		case "dtb":
			o.cfg.DTB = v
		case "d":
			o.traceSpec = v
		case "D":
			o.traceFile = v
		case "incoming":
			o.incoming = v
		case "loadvm":
			o.loadvm = v
		}
		return nil
	})
	if err != nil {
		return o, false, err
	}
	if o.Help {
		fmt.Print(usage)
		return o, true, nil
	}
	if o.Version {
		fmt.Println(version)
		return o, true, nil
	}
	if m := o.Machine; m != nil && m.Help {
		fmt.Print(machineHelp)
		return o, true, nil
	}
	if c := o.CPU; c != nil && c.Help {
		fmt.Print(cpuHelp())
		return o, true, nil
	}
	if err := o.machine(); err != nil {
		return o, false, err
	}
	if err := o.cpu(); err != nil {
		return o, false, err
	}
	for _, a := range o.Accels {
		if a.Help {
			fmt.Print("Accelerators supported in QEMU binary:\ntcg\n")
			return o, true, nil
		}
		switch a.ImpliedValue() {
		case "tcg":
		case "kvm":
			return o, false, errKVM
		default:
			return o, false, fmt.Errorf("-accel %s: unsupported accelerator (only tcg)", a.Spec)
		}
		if v, ok := a.Get("thread"); ok && v != "multi" {
			return o, false, fmt.Errorf("-accel %s: thread=%s is not supported (gemu runs every vCPU in its own thread: multi)", a.Spec, v)
		}
		if err := a.Check(); err != nil {
			return o, false, err
		}
	}
	if o.MemSpec != "" {
		o.cfg.RAMSize = o.Mem.Size
	}
	if o.SMP != "" {
		t, err := qemuopts.ParseSMP(o.SMP, qemuopts.SMPProps{Machine: machineName, Clusters: true})
		if err != nil {
			return o, false, err
		}
		o.topology, o.cfg.SMP = t, t.CPUs
		if !t.Flat() {
			o.warnings = append(o.warnings, fmt.Sprintf("-smp %s: the CPU topology (%s) is flattened to %d CPUs in one cluster (MPIDR Aff0 = CPU index; no CPU hotplug)", o.SMP, t, t.CPUs))
		}
	}
	o.cfg.Kernel, o.cfg.Initrd, o.cfg.Append = o.Kernel, o.Initrd, o.Append
	if n := len(o.Serials); n > 0 {
		o.serial = o.Serials[n-1] // virt has one PL011 for the console
	} else if o.NoDefaults {
		o.serial = "null" // -nodefaults: no default serial backend, as QEMU's
	}
	for _, d := range o.Drives {
		if v, _ := d.Get("if"); v == "pflash" {
			return o, false, fmt.Errorf("-drive %s: if=pflash: flash firmware boot is not supported yet (boot a kernel directly with -kernel)", d.Spec)
		}
	}
	o.noReboot = o.NoReboot
	o.warnings = append(o.warnings, o.Warnings...)
	if u := o.Unwired(); len(u) > 0 {
		o.warnings = append(o.warnings, strings.Join(u, ", ")+": accepted, but not yet connected to the board")
	}
	return o, false, nil
}

var errKVM = errors.New("KVM cannot run aarch64 guests on this x86-64 host; use -accel tcg")

// cpu checks -cpu: the models gemu runs, no properties.
func (o *options) cpu() error {
	c := o.CPU
	if c == nil {
		return nil
	}
	m, ok := arm.LookupModel(c.Model)
	if !ok {
		return fmt.Errorf("unsupported -cpu %q (supported: %s)", c.Model, strings.ReplaceAll(strings.TrimSpace(strings.TrimPrefix(cpuHelp(), "Available CPUs:")), "\n  ", ", "))
	}
	if len(c.Features) > 0 {
		return fmt.Errorf("-cpu %s: CPU properties are not supported (%s)", o.CPUSpec, c.Features[0].Name)
	}
	o.cfg.CPU = m
	return nil
}

// machine applies -M virt[,gic-version=N][,dumpdtb=FILE][,accel=tcg].
func (o *options) machine() error {
	m := o.Machine
	if m == nil {
		return nil
	}
	switch t := m.ImpliedValue(); t {
	case "", "virt", "virt-7.2":
	case "none": // no guest: capability probing (none.go)
		o.none = true
	default:
		return fmt.Errorf("-machine %s: unsupported machine type '%s' (supported: virt, virt-7.2; -machine help)", m.Spec, t)
	}
	if val, ok := m.Get("gic-version"); ok {
		switch val {
		case "2":
			o.cfg.GICVersion = 2
		case "3", "max", "host":
			o.cfg.GICVersion = 3
		default:
			return fmt.Errorf("unsupported gic-version %q (2, 3, max or host)", val)
		}
	}
	o.dumpDTB = m.String("dumpdtb", "")
	if val, ok := m.Get("accel"); ok {
		// The list is tried in order, as QEMU's: kvm fails here, so tcg must follow it.
		tcg := false
		for _, a := range strings.Split(val, ":") {
			tcg = tcg || a == "tcg"
		}
		if !tcg {
			return errKVM
		}
	}
	for _, k := range m.Unused() {
		return fmt.Errorf("-machine %s: Property '%s-machine.%s' not found (virt takes gic-version, dumpdtb, accel)", m.Spec, machineName, k)
	}
	return nil
}

package main

import (
	"fmt"
	"regexp"
	"strings"

	"gemu/cmd/internal/qemuopts"
)

// options is the parsed command line. The embedded qemuopts.Common holds everything
// both system emulators share, including the device options stored for syntax only
// (Drives, Devices, Blockdevs, Chardevs, Objects, Netdevs, NICs, Globals, Mons, QMP):
// the board does not take them yet.
type options struct {
	qemuopts.Common

	accels   []string // -accel / -enable-kvm / -machine accel=, in order of preference
	machine  string   // the -machine type as given (pc, pc-i440fx-7.2, ...)
	memSize  uint64
	memArg   string
	cpus     int
	topology qemuopts.Topology // from -smp; the board flattens it to cpus (warned)
	cpuModel string            // host or max
	cpuFlags []qemuopts.CPUFeature
	kernel   string
	initrd   string
	append   string
	serial   string // "" = default
	noGraph  bool
	noReboot bool
	name     string
	help     bool
	version  bool
	list     string   // -machine help, -cpu help, -accel help: print and exit 0
	trace    string   // -d in_asm,exec,int (TCG only)
	traceLog string   // -D FILE: the -d output (default stderr)
	incoming string   // -incoming URI|defer
	loadvm   string   // -loadvm NAME
	warnings []string // one line each, printed before the guest starts
}

const usage = `usage: gemu-system-x86_64 [options] [disk_image]

gemu-system-x86_64 is a QEMU-compatible x86-64 PC emulator: it takes qemu-system-x86_64's
option syntax and boots a Linux bzImage or a multiboot kernel directly on an i440FX-style PC (ACPI, COM1) on KVM
or on gemu's own x86-64 translator (TCG).

  -accel kvm[,kernel-irqchip=on] | -accel tcg
                        accelerator (default: hardware KVM; TCG where KVM is emulated
                        (kvm_pvm) or not usable)
  -enable-kvm           same as -accel kvm
  -machine|-M pc[,accel=kvm|tcg][,usb=off][,vmport=off]
                        board: pc or pc-i440fx-* (q35 is not supported); -machine help
  -m [size=]SIZE        RAM, MiB without a suffix; K M G T P E suffixes, 1.5G (default 128M)
  -smp [cpus=]N[,sockets=S][,dies=D][,cores=C][,threads=T][,maxcpus=M]
                        CPUs (default 1); the guest sees N cores in one socket
  -cpu host|max[,+x2apic]
                        CPU model (the host's, as KVM offers it); -cpu help
  -kernel FILE          bzImage or multiboot kernel to boot (required)
  -initrd FILE          initial ramdisk (multiboot: modules "FILE ARGS,FILE2,...")
  -append CMDLINE       kernel command line
  -nographic            no display; serial on stdio (Ctrl-A h for help, Ctrl-A x to quit)
  -display none, -vga none
                        no display
  -serial stdio|file:PATH|null|none
                        COM1 backend (default stdio)
  -no-reboot            exit instead of rebooting when the guest resets
  -name [guest=]NAME, -uuid UUID
                        the guest's name and UUID, as the monitor reports them
  -qmp unix:PATH,server=on,wait=off | tcp:HOST:PORT,server=on,wait=off | stdio
                        a QMP monitor (QEMU 7.2's protocol); several may be given
  -monitor stdio|unix:...|tcp:...
                        a human monitor (stdio only with the serial elsewhere)
  -chardev socket,id=ID,... -mon chardev=ID,mode=control|readline
                        a monitor on a -chardev socket
  -S                    start stopped (cont on a monitor starts the guest)
  -no-shutdown          on guest power-off, stop instead of exiting (system_reset restarts)
  -incoming URI|defer    load the guest from URI (file:, exec:, unix:, tcp:) before it runs
  -loadvm NAME           start from the internal snapshot NAME of the qcow2 drives (savevm)
                        (-accel tcg)
  -drive, -hda FILE, -cdrom FILE, -blockdev, -device, -netdev, -nic, -chardev, -object,
  -global, -snapshot
                        parsed and checked, not yet connected to the board (warned)
  -nodefaults, -no-user-config, -msg timestamp=on
                        accepted for QEMU compatibility
  -daemonize, -pidfile FILE
                        detach once the monitors listen; write (and lock) the pid file
  -machine none         no guest, only the monitors (capability probing, as libvirt does)
  -d in_asm,exec,int    TCG traces (to stderr, or -D FILE)
  -h, -help, --help     this help
  -version, --version   version
`

const version = "gemu-system-x86_64 version 0.1.0 (gemu), QEMU 7.2 compatible command line"

// machines are the -machine types gemu's PC answers to, as -machine help lists them.
const machineHelp = `Supported machines are:
pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)
pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)
none                 empty machine
`

// machineName is QEMU's name for the board, in messages.
const machineName = "pc-i440fx-7.2"

var i440fxVersion = regexp.MustCompile(`^pc-i440fx-[0-9]+\.[0-9]+$`)

// honouredCPUFlags are the flags gemu's -cpu host already gives the guest: KVM's
// in-kernel LAPIC always offers x2APIC, and accel/kvm sets the hypervisor bit.
var honouredCPUFlags = map[string]bool{"x2apic": true, "hypervisor": true}

// parseArgs parses QEMU-style options. Errors name the option and are one line.
func parseArgs(args []string) (*options, error) {
	o := &options{machine: "pc", memSize: 128 << 20, cpus: 1, cpuModel: "host"}
	own := map[string]bool{"d": true, "D": true, "incoming": true, "loadvm": true}
	if err := o.Parse(args, own, func(name, v string) error {
		switch name {
		case "d":
			o.trace = v
		case "D":
			o.traceLog = v
		case "incoming":
			o.incoming = v
		case "loadvm":
			o.loadvm = v
		}
		return nil
	}); err != nil {
		return nil, err
	}
	o.help, o.version = o.Help, o.Version
	if o.help || o.version {
		return o, nil
	}
	if err := o.parseMachine(); err != nil || o.list != "" {
		return o, err
	}
	if o.MemSpec != "" {
		o.memSize, o.memArg = o.Mem.Size, o.MemSpec
	}
	if o.SMP != "" {
		t, err := qemuopts.ParseSMP(o.SMP, qemuopts.SMPProps{Machine: machineName, Dies: true})
		if err != nil {
			return nil, err
		}
		o.topology, o.cpus = t, t.CPUs
		if !t.Flat() {
			o.warnings = append(o.warnings, fmt.Sprintf("-smp %s: the CPU topology (%s) is flattened to %d CPUs, each its own core in one socket (no CPU hotplug)", o.SMP, t, t.CPUs))
		}
	} else {
		o.topology = qemuopts.Topology{CPUs: 1, Sockets: 1, Dies: 1, Clusters: 1, Cores: 1, Threads: 1, MaxCPUs: 1}
	}
	if err := o.parseCPU(); err != nil || o.list != "" {
		return o, err
	}
	if err := o.parseAccels(); err != nil || o.list != "" {
		return o, err
	}
	if len(o.Serials) > 1 {
		// QEMU would give the guest COM2; gemu's PC has COM1 only.
		return nil, fmt.Errorf("-serial %s: only one serial port (COM1) is supported", o.Serials[1])
	}
	if len(o.Serials) == 1 {
		o.serial = o.Serials[0]
	}
	o.kernel, o.initrd, o.append = o.Kernel, o.Initrd, o.Append
	o.noGraph, o.noReboot, o.name = o.NoGraphic, o.NoReboot, o.Name
	o.warnings = append(o.warnings, o.Warnings...)
	if u := o.Unwired(); len(u) > 0 {
		o.warnings = append(o.warnings, strings.Join(u, ", ")+": accepted, but not yet connected to the board")
	}
	return o, nil
}

// parseMachine reads -machine pc[,accel=...][,usb=off][,vmport=off].
func (o *options) parseMachine() error {
	m := o.Machine
	if m == nil {
		return nil
	}
	if m.Help {
		o.list = machineHelp
		return nil
	}
	typ := m.ImpliedValue()
	switch {
	case typ == "":
	case typ == "none": // no guest: capability probing (none.go)
		o.machine = typ
	case typ == "pc" || i440fxVersion.MatchString(typ):
		o.machine = typ
	case typ == "q35" || strings.HasPrefix(typ, "pc-q35"):
		return fmt.Errorf("-machine %s: machine type '%s' is not supported: gemu's PC is i440FX-based (supported: pc, pc-i440fx-*; -machine help)", m.Spec, typ)
	default:
		return fmt.Errorf("-machine %s: unsupported machine type '%s' (supported: pc, pc-i440fx-*; -machine help)", m.Spec, typ)
	}
	if v, ok := m.Get("accel"); ok {
		o.accels = append(o.accels, strings.Split(v, ":")...)
	}
	for _, k := range []string{"usb", "vmport"} {
		if v, ok := m.Get(k); ok {
			if b, ok := qemuopts.ParseBool(v); !ok || b {
				return fmt.Errorf("-machine %s: %s=%s is not supported (gemu's PC has none; use %s=off)", m.Spec, k, v, k)
			}
		}
	}
	for _, k := range m.Unused() {
		return fmt.Errorf("-machine %s: Property '%s-machine.%s' not found (gemu's PC takes accel, usb=off, vmport=off)", m.Spec, machineName, k)
	}
	return nil
}

// parseCPU reads -cpu host|max[,flags]: flags the guest gets anyway are accepted,
// others are warned about (turning on) or refused (turning off, properties).
func (o *options) parseCPU() error {
	c := o.CPU
	if c == nil {
		return nil
	}
	if c.Help {
		o.list = "Available CPUs:\nx86 host                  KVM processor with all supported host features\nx86 max                   same as host\n"
		return nil
	}
	switch c.Model {
	case "host", "max":
		o.cpuModel = c.Model
	default:
		return fmt.Errorf("-cpu %s: unsupported CPU model '%s' (use host or max)", o.CPUSpec, c.Model)
	}
	var ignored []string
	for _, f := range c.Features {
		on, ok := f.On()
		switch {
		case !ok:
			return fmt.Errorf("-cpu %s: CPU property '%s' is not supported", o.CPUSpec, f.Name)
		case !on:
			return fmt.Errorf("-cpu %s: cannot turn CPU flag '%s' off: the guest sees the host's CPUID as KVM offers it", o.CPUSpec, f.Name)
		case !honouredCPUFlags[f.Name]:
			ignored = append(ignored, f.Name)
		}
		o.cpuFlags = append(o.cpuFlags, f)
	}
	if len(ignored) > 0 {
		o.warnings = append(o.warnings, fmt.Sprintf("-cpu %s: CPU flags not applied (%s): the guest sees the host's CPUID as KVM offers it", o.CPUSpec, strings.Join(ignored, ", ")))
	}
	return nil
}

// parseAccels reads every -accel (and -enable-kvm) after -machine accel=.
func (o *options) parseAccels() error {
	for _, a := range o.Accels {
		if a.Help {
			o.list = "Accelerators supported in QEMU binary:\ntcg\nkvm\n"
			return nil
		}
		name := a.ImpliedValue()
		if name == "kvm" {
			if v, ok := a.Get("kernel-irqchip"); ok {
				if b, ok := qemuopts.ParseBool(v); !ok || !b {
					return fmt.Errorf("-accel %s: kernel-irqchip=%s is not supported (gemu uses KVM's in-kernel irqchip: on)", a.Spec, v)
				}
			}
		}
		if err := a.Check(); err != nil {
			return err
		}
		o.accels = append(o.accels, name)
	}
	return nil
}

// parseMem parses a -m value (kept for the size tests): qemuopts.ParseMem.
func parseMem(val string) (uint64, error) {
	m, err := qemuopts.ParseMem(val)
	return m.Size, err
}

// parseSMP parses a -smp value for gemu's PC and returns the number of CPUs.
func parseSMP(val string) (int, error) {
	t, err := qemuopts.ParseSMP(val, qemuopts.SMPProps{Machine: machineName, Dies: true})
	return t.CPUs, err
}

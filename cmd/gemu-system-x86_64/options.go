package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// options is the parsed command line.
type options struct {
	accels   []string // -accel / -enable-kvm / -machine accel=, in order of preference
	machine  string
	memSize  uint64
	memArg   string
	cpus     int
	kernel   string
	initrd   string
	append   string
	serial   string // "" = default
	noGraph  bool
	noReboot bool
	name     string
	help     bool
	version  bool
}

// flagArgs lists the options that take an argument.
var flagArgs = map[string]bool{
	"accel": true, "machine": true, "M": true, "m": true, "smp": true, "kernel": true,
	"initrd": true, "append": true, "serial": true, "name": true, "cpu": true, "display": true,
}

const usage = `usage: gemu-system-x86_64 [options]

Boots a Linux bzImage directly on an x86-64 PC (i440FX-style board, ACPI, COM1).

  -accel kvm|tcg        accelerator (default: hardware KVM, else TCG, else emulated KVM)
  -enable-kvm           same as -accel kvm
  -machine|-M pc|q35[,accel=kvm]
                        board (both names give gemu's PC)
  -m SIZE               RAM, e.g. 512, 512M, 2G, size=2G (default 128M)
  -smp N|cpus=N         number of CPUs (default 1)
  -cpu host|max         CPU model (the host's, as KVM offers it)
  -kernel FILE          bzImage to boot (required)
  -initrd FILE          initial ramdisk
  -append CMDLINE       kernel command line
  -nographic            no display; serial on stdio (Ctrl-A h for help, Ctrl-A x to quit)
  -display none         no display
  -serial stdio|file:PATH|null|none
                        COM1 backend (default stdio)
  -no-reboot            exit instead of rebooting when the guest resets
  -name NAME            guest name
  -nodefaults, -no-user-config
                        accepted for QEMU compatibility
  -h, --help            this help
  -version              version
`

const version = "gemu-system-x86_64 version 0.1.0 (gemu)"

// parseArgs parses QEMU-style options (one or two leading dashes, value in the next
// argument). Errors name the option and are one line.
func parseArgs(args []string) (*options, error) {
	o := &options{machine: "pc", memSize: 128 << 20, cpus: 1}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			return nil, fmt.Errorf("%s: unexpected argument (disk images are not supported yet)", a)
		}
		name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		var val string
		if flagArgs[name] {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("-%s: requires an argument", name)
			}
			i++
			val = args[i]
		}
		var err error
		switch name {
		case "h", "help":
			o.help = true
		case "version":
			o.version = true
		case "accel":
			acc, _, _ := strings.Cut(val, ",")
			o.accels = append(o.accels, acc)
		case "enable-kvm":
			o.accels = append(o.accels, "kvm")
		case "machine", "M":
			err = o.parseMachine(val)
		case "m":
			o.memSize, err = parseMem(val)
			o.memArg = val
		case "smp":
			o.cpus, err = parseSMP(val)
		case "kernel":
			o.kernel = val
		case "initrd":
			o.initrd = val
		case "append":
			o.append = val
		case "serial":
			if o.serial != "" {
				// QEMU would give the guest COM2; gemu's PC has COM1 only.
				err = fmt.Errorf("only one serial port (COM1) is supported")
				break
			}
			o.serial = val
		case "nographic":
			o.noGraph = true
		case "no-reboot":
			o.noReboot = true
		case "name":
			o.name = val
		case "cpu":
			model, _, _ := strings.Cut(val, ",")
			switch model {
			case "host", "max":
			default:
				err = fmt.Errorf("unsupported CPU model %q (use host or max)", model)
			}
		case "display":
			if d, _, _ := strings.Cut(val, ","); d != "none" {
				err = fmt.Errorf("display %q is not supported (gemu has no graphical display; use none)", d)
			}
		case "nodefaults", "no-user-config":
		default:
			return nil, fmt.Errorf("%s: invalid option", a)
		}
		if err != nil {
			return nil, fmt.Errorf("-%s %s: %v", name, val, err)
		}
	}
	return o, nil
}

func (o *options) parseMachine(val string) error {
	for i, part := range strings.Split(val, ",") {
		k, v, hasEq := strings.Cut(part, "=")
		if !hasEq && i == 0 {
			k, v = "type", part
		}
		switch k {
		case "type":
			switch v {
			case "pc", "q35", "pc-i440fx", "pc-q35":
				o.machine = v
			default:
				if strings.HasPrefix(v, "pc-i440fx-") || strings.HasPrefix(v, "pc-q35-") {
					o.machine = v
					continue
				}
				return fmt.Errorf("unsupported machine type %q (use pc or q35)", v)
			}
		case "accel":
			for _, a := range strings.Split(v, ":") {
				o.accels = append(o.accels, a)
			}
		default:
			return fmt.Errorf("unsupported machine property %q", k)
		}
	}
	return nil
}

// parseMem parses a QEMU memory size: a number with an optional K/M/G/T suffix
// (default MiB), optionally as size=N.
func parseMem(val string) (uint64, error) {
	k, v, hasEq := strings.Cut(val, "=")
	if !hasEq {
		v = k
	} else if k != "size" {
		return 0, fmt.Errorf("unsupported memory property %q", k)
	}
	return parseSize(v)
}

func parseSize(s string) (uint64, error) {
	if s == "" {
		return 0, fmt.Errorf("missing size")
	}
	shift := uint(20)
	num := s
	switch s[len(s)-1] {
	case 'b', 'B':
		shift, num = 0, s[:len(s)-1]
	case 'k', 'K':
		shift, num = 10, s[:len(s)-1]
	case 'm', 'M':
		shift, num = 20, s[:len(s)-1]
	case 'g', 'G':
		shift, num = 30, s[:len(s)-1]
	case 't', 'T':
		shift, num = 40, s[:len(s)-1]
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) || strings.ContainsAny(num, "eEpPxX_") {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	v := f * float64(uint64(1)<<shift)
	if v >= 1<<63 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return uint64(v), nil
}

func parseSMP(val string) (int, error) {
	cpus := -1
	for i, part := range strings.Split(val, ",") {
		k, v, hasEq := strings.Cut(part, "=")
		if !hasEq && i == 0 {
			k, v = "cpus", part
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("invalid number %q", v)
		}
		switch k {
		case "cpus":
			cpus = n
		case "maxcpus", "sockets", "cores", "threads", "dies":
			// Topology is accepted; every CPU is its own core to the guest.
		default:
			return 0, fmt.Errorf("unsupported property %q", k)
		}
	}
	if cpus < 1 {
		return 0, fmt.Errorf("the number of CPUs must be at least 1")
	}
	return cpus, nil
}

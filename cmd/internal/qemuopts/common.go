package qemuopts

import (
	"fmt"
	"strconv"
	"strings"
)

// Common is the part of the command line both system emulators take the same way.
// Options that configure devices are stored validated for syntax only: the mains (and
// the boards behind them) decide what they mean.
type Common struct {
	Machine *Opts  // -machine / -M, implied key "type"; repeated options merge, later keys win
	Mem     Mem    // -m
	MemSpec string // the last -m as given ("" if none)
	SMP     string // the last -smp as given; ParseSMP needs the board's SMPProps
	CPU     *CPU   // -cpu (nil if none)
	CPUSpec string
	Accels  []*Opts // -accel (implied key "accel") and -enable-kvm (accel=kvm), in order

	Kernel, Initrd, Append string
	Serials                []string // every -serial, in order
	Name                   string   // -name [guest=]NAME
	NoGraphic, NoReboot    bool
	Snapshot               bool // -snapshot
	NoDefaults             bool // -nodefaults
	NoUserConfig           bool // -no-user-config
	MsgTimestamp           bool // -msg timestamp=on

	Drives    []*Opts // -drive; -hda..-hdd and -cdrom as file=,index=,media=; bare image arguments as -hda
	Devices   []*Opts // -device (implied "driver"; JSON accepted)
	Blockdevs []*Opts // -blockdev (implied "driver"; JSON accepted)
	Chardevs  []*Opts // -chardev (implied "backend")
	Objects   []*Opts // -object (implied "qom-type"; JSON accepted)
	Netdevs   []*Opts // -netdev (implied "type"; JSON accepted)
	NICs      []*Opts // -nic (implied "type")
	Globals   []*Opts // -global DRIVER.PROP=VALUE as driver=,property=,value=
	// StartPaused (-S) leaves the guest stopped until a monitor's cont; NoShutdown
	// (-no-shutdown) turns a guest power-off into a stop; UUID is -uuid as given
	// (checked: 8-4-4-4-12 hex digits).
	StartPaused, NoShutdown bool
	UUID                    string

	Mons     []*Opts  // -mon (implied "chardev")
	Monitors []string // -monitor other than none
	QMP      []string // -qmp chardev specs

	Help, Version bool
	Pidfile       string // -pidfile FILE
	Daemonize     bool   // -daemonize
	// Warnings collects one-line warnings (deprecated short-form booleans, ...) for the
	// main to print.
	Warnings []string

	hdIndex int // next index for a bare image argument
}

// commonArgs lists the common options and whether each takes an argument.
var commonArgs = map[string]bool{
	"machine": true, "M": true, "m": true, "smp": true, "cpu": true, "accel": true, "enable-kvm": false,
	"kernel": true, "initrd": true, "append": true, "serial": true, "name": true,
	"nographic": false, "no-reboot": false, "snapshot": false, "nodefaults": false, "no-user-config": false,
	"msg": true, "display": true, "vga": true,
	"drive": true, "hda": true, "hdb": true, "hdc": true, "hdd": true, "cdrom": true,
	"device": true, "blockdev": true, "chardev": true, "object": true, "netdev": true, "nic": true,
	"global": true, "mon": true, "monitor": true, "qmp": true, "S": false, "no-shutdown": false, "uuid": true,
	"h": false, "help": false, "version": false, "pidfile": true, "daemonize": false,
}

// storeSpec says, per stored option, its implied key and whether QEMU takes JSON there.
var storeSpec = map[string]struct {
	implied string
	json    bool
}{
	"drive": {"", false}, "device": {"driver", true}, "blockdev": {"driver", true},
	"chardev": {"backend", false}, "object": {"qom-type", true}, "netdev": {"type", true},
	"nic": {"type", false}, "mon": {"chardev", false},
}

// Parse scans QEMU-style arguments (one or two leading dashes; the value, if any, in
// the next argument). extra lists the main's own options and whether each takes an
// argument; handle is called for those. A non-option argument is a disk image, as
// QEMU's -hda. Errors are one line and name the option.
func (c *Common) Parse(args []string, extra map[string]bool, handle func(name, val string) error) error {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			if err := c.Handle("hda", a); err != nil {
				return err
			}
			continue
		}
		name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		takes, mine := extra[name]
		if !mine {
			var ok bool
			if takes, ok = commonArgs[name]; !ok {
				return fmt.Errorf("%s: invalid option", a)
			}
		}
		var val string
		if takes {
			if i+1 >= len(args) {
				return fmt.Errorf("-%s: requires an argument", name)
			}
			i++
			val = args[i]
		}
		var err error
		if mine {
			err = handle(name, val)
		} else {
			err = c.Handle(name, val)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Handle applies one common option.
func (c *Common) Handle(name, val string) error {
	if s, ok := storeSpec[name]; ok {
		o, err := ParseOpt(name, val, s.implied)
		if err != nil {
			return err
		}
		if o.JSON && !s.json {
			return o.errorf("-%s does not take JSON", name)
		}
		c.warnShort(o)
		switch name {
		case "drive":
			c.Drives = append(c.Drives, o)
		case "device":
			c.Devices = append(c.Devices, o)
		case "blockdev":
			c.Blockdevs = append(c.Blockdevs, o)
		case "chardev":
			if !o.Help {
				if id, _ := o.Get("id"); id == "" {
					return o.errorf("Parameter 'id' is missing")
				}
			}
			c.Chardevs = append(c.Chardevs, o)
		case "object":
			c.Objects = append(c.Objects, o)
		case "netdev":
			c.Netdevs = append(c.Netdevs, o)
		case "nic":
			c.NICs = append(c.NICs, o)
		case "mon":
			c.Mons = append(c.Mons, o)
		}
		return nil
	}
	switch name {
	case "h", "help":
		c.Help = true
	case "version":
		c.Version = true
	case "machine", "M":
		o, err := ParseOpt(name, val, "type")
		if err != nil {
			return err
		}
		if c.Machine == nil {
			c.Machine = o
			return nil
		}
		c.Machine.Help = c.Machine.Help || o.Help
		c.Machine.Spec += "," + val
		for _, k := range o.keys {
			c.Machine.Set(k, o.vals[k])
		}
	case "m":
		m, err := ParseMem(val)
		if err != nil {
			return err
		}
		c.Mem, c.MemSpec = m, val
	case "smp":
		c.SMP = val
	case "cpu":
		cpu, err := ParseCPU(val)
		if err != nil {
			return err
		}
		c.CPU, c.CPUSpec = &cpu, val
	case "accel":
		o, err := ParseOpt(name, val, "accel")
		if err != nil {
			return err
		}
		c.warnShort(o)
		c.Accels = append(c.Accels, o)
	case "enable-kvm":
		o := New("enable-kvm", "accel")
		o.Set("accel", "kvm")
		c.Accels = append(c.Accels, o)
	case "kernel":
		c.Kernel = val
	case "initrd":
		c.Initrd = val
	case "append":
		c.Append = val
	case "serial":
		c.Serials = append(c.Serials, val)
	case "name":
		o, err := ParseOpt(name, val, "guest")
		if err != nil {
			return err
		}
		c.Name = o.String("guest", "")
		if _, err := o.Bool("debug-threads", false); err != nil {
			return err
		}
		if err := o.Check("process"); err != nil {
			return err
		}
	case "S":
		c.StartPaused = true
	case "no-shutdown":
		c.NoShutdown = true
	case "uuid":
		if !validUUID(val) {
			return &Error{Option: name, Spec: val, Msg: "Fail to parse UUID string."}
		}
		c.UUID = strings.ToLower(val)
	case "pidfile":
		c.Pidfile = val
	case "daemonize":
		c.Daemonize = true
	case "nographic":
		c.NoGraphic = true
	case "no-reboot":
		c.NoReboot = true
	case "snapshot":
		c.Snapshot = true
	case "nodefaults":
		c.NoDefaults = true
	case "no-user-config":
		c.NoUserConfig = true
	case "msg":
		o, err := ParseOpt(name, val, "")
		if err != nil {
			return err
		}
		c.warnShort(o)
		if c.MsgTimestamp, err = o.Bool("timestamp", c.MsgTimestamp); err != nil {
			return err
		}
		if g, err := o.Bool("guest-name", false); err != nil {
			return err
		} else if g {
			return o.errorf("guest-name=on is not supported")
		}
		if err := o.Check(); err != nil {
			return err
		}
	case "display":
		o, err := ParseOpt(name, val, "type")
		if err != nil {
			return err
		}
		if d := o.ImpliedValue(); d != "none" {
			return o.errorf("display '%s' is not supported (gemu has no graphical display; use none)", d)
		}
		if err := o.Check(); err != nil {
			return err
		}
	case "vga":
		if val != "none" {
			return &Error{Option: name, Spec: val, Msg: "gemu has no display adapter (use -vga none)"}
		}
	case "hda", "hdb", "hdc", "hdd", "cdrom":
		if val == "" {
			return &Error{Option: name, Spec: val, Msg: "empty file name"}
		}
		idx := map[string]int{"hda": 0, "hdb": 1, "hdc": 2, "hdd": 3, "cdrom": 2}[name]
		if name == "hda" && c.hdIndex > 0 {
			idx = c.hdIndex // a second bare image argument
		}
		c.hdIndex = idx + 1
		o := New(name, "")
		o.Spec = val
		o.Set("file", val)
		o.Set("index", strconv.Itoa(idx))
		if name == "cdrom" {
			o.Set("media", "cdrom")
		} else {
			o.Set("media", "disk")
		}
		c.Drives = append(c.Drives, o)
	case "global":
		o := New(name, "")
		o.Spec = val
		if k, v, ok := strings.Cut(val, "="); ok && strings.Contains(k, ".") && !strings.Contains(k, ",") {
			drv, prop, _ := strings.Cut(k, ".")
			if drv == "" || prop == "" {
				return o.errorf("expected DRIVER.PROPERTY=VALUE")
			}
			o.Set("driver", drv)
			o.Set("property", prop)
			o.Set("value", v)
		} else {
			var err error
			if o, err = ParseOpt(name, val, ""); err != nil {
				return err
			}
			for _, k := range []string{"driver", "property", "value"} {
				if !o.Has(k) {
					return o.errorf("Parameter '%s' is missing", k)
				}
			}
			if err := o.Check("driver", "property", "value"); err != nil {
				return err
			}
		}
		c.Globals = append(c.Globals, o)
	case "monitor":
		if val != "none" {
			c.Monitors = append(c.Monitors, val)
		}
	case "qmp":
		if val == "" {
			return &Error{Option: name, Spec: val, Msg: "empty chardev spec"}
		}
		c.QMP = append(c.QMP, val)
	default:
		return fmt.Errorf("-%s: invalid option", name)
	}
	return nil
}

func (c *Common) warnShort(o *Opts) {
	for _, f := range o.ShortFlags {
		k, v := f, "on"
		if strings.HasPrefix(f, "no") && o.vals[f[2:]] == "off" {
			k, v = f[2:], "off"
		}
		c.Warnings = append(c.Warnings, fmt.Sprintf("-%s %s: short-form boolean option '%s' deprecated; please use %s=%s instead", o.Option, o.Spec, f, k, v))
	}
}

// Unwired lists the stored device options that are present (e.g. "-device", "-drive"),
// for a main whose board does not use them yet to say so in one warning line.
func (c *Common) Unwired() []string {
	var u []string
	add := func(name string, n int) {
		if n > 0 {
			u = append(u, "-"+name)
		}
	}
	add("global", len(c.Globals))
	return u
}

// MachineType returns the -machine type ("" if none given), marking it read.
func (c *Common) MachineType() string {
	if c.Machine == nil {
		return ""
	}
	return c.Machine.ImpliedValue()
}

// validUUID checks QEMU's UUID syntax: 8-4-4-4-12 hexadecimal digits.
func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

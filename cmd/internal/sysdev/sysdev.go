// Package sysdev wires the device options both system emulators share (-drive,
// -blockdev, -chardev, -netdev, -nic, -object rng-*, -device) from the parsed command
// line (cmd/internal/qemuopts) to machine/qdev: host resources (drives, chardevs,
// network backends through hw/netdev) are opened once per process and kept across
// guest reboots; devices are built per machine.
//
// It must not know a board's layout: boards implement qdev.Board.
package sysdev

import (
	"errors"
	"fmt"
	"strings"

	"gemu/block/backend"
	"gemu/cmd/internal/qemuopts"
	"gemu/hw/chardev"
	"gemu/hw/netdev"
	"gemu/machine/qdev"

	// The image formats a -drive may name or probe.
	_ "gemu/block/parallels"
	_ "gemu/block/qcow1"
	_ "gemu/block/qed"
	_ "gemu/block/vdi"
	_ "gemu/block/vhdx"
	_ "gemu/block/vmdk"
	_ "gemu/block/vpc"
	_ "gemu/qcow2"
)

// Wiring is the process's device resources.
type Wiring struct {
	c          *qemuopts.Common
	drives     []*qdev.Drive
	Drives     map[string]*backend.Backend
	Chardevs   map[string]chardev.Backend
	Netdevs    map[string]netdev.Backend
	nics       []nic
	rngObjects map[string]bool  // -object rng-* ids
	vsock      *qdev.VsockHosts // vsock host sockets, kept across reboots
	// StdioUsed reports that a -chardev took stdio (the main then leaves its serial
	// port off stdio instead of failing as QEMU does).
	StdioUsed bool
	hp        hotplug // the monitors' device_add & co. (hotplug.go)
}

// Help answers `-device help` and `-device TYPE,help`: the text and whether one was
// asked for.
func Help(c *qemuopts.Common) (string, bool, error) {
	if h, ok := netHelp(c); ok {
		return h, true, nil
	}
	for _, d := range c.Devices {
		if !d.Help {
			continue
		}
		drv, _ := d.Get("driver")
		if drv == "" || drv == "help" || drv == "?" {
			return qdev.Help(), true, nil
		}
		h, err := qdev.PropHelp(drv)
		return h, true, err
	}
	for _, o := range c.Chardevs {
		if o.Help {
			return chardevHelp(), true, nil
		}
	}
	return "", false, nil
}

// chardevHelp lists the -chardev backends gemu opens, in qemu-system's order (and
// with its header, trailing space included).
func chardevHelp() string {
	var b strings.Builder
	b.WriteString("Available chardev backend types: \n")
	for _, typ := range []string{"stdio", "vc", "serial", "pipe", "pty", "null", "ringbuf", "socket", "udp", "file"} {
		if _, err := chardev.Keys(typ); err == nil {
			fmt.Fprintf(&b, "  %s\n", typ)
		}
	}
	return b.String()
}

// Open opens every -chardev, -object, -blockdev and -drive. defIf is the board's default
// -drive interface ("virtio" on virt; "ide" on pc, which gemu refuses with advice).
func Open(c *qemuopts.Common, defIf string, co chardev.Options) (*Wiring, error) {
	w := &Wiring{c: c, Drives: map[string]*backend.Backend{}, Chardevs: map[string]chardev.Backend{}, Netdevs: map[string]netdev.Backend{},
		rngObjects: map[string]bool{}, vsock: qdev.NewVsockHosts()}
	if err := w.open(defIf, co); err != nil {
		w.Close() // what was opened before the failure
		return nil, err
	}
	return w, nil
}

func (w *Wiring) open(defIf string, co chardev.Options) error {
	c := w.c
	for _, o := range c.Chardevs {
		id, _ := o.Get("id")
		typ := o.ImpliedValue()
		if w.Chardevs[id] != nil {
			return fmt.Errorf("-chardev %s: duplicate chardev id '%s'", o.Spec, id)
		}
		keys, err := chardev.Keys(typ)
		if err != nil {
			return fmt.Errorf("-chardev %s: %v", o.Spec, err)
		}
		if err := o.Check(append(keys, "id")...); err != nil {
			return err
		}
		be, err := chardev.OpenOpts(typ, o.Get, co)
		if err != nil {
			return fmt.Errorf("-chardev %s: %v", o.Spec, err)
		}
		if typ == "stdio" {
			w.StdioUsed = true
		}
		w.Chardevs[id] = be
	}
	for _, o := range c.Objects {
		typ := o.ImpliedValue()
		id, _ := o.Get("id")
		switch typ {
		case "rng-random", "rng-builtin":
			if err := o.Check("qom-type", "id", "filename"); err != nil {
				return err
			}
			if f, ok := o.Get("filename"); ok && f != "/dev/urandom" && f != "/dev/random" {
				return fmt.Errorf("-object %s: filename=%s: only /dev/urandom and /dev/random are supported (gemu reads the host's getrandom)", o.Spec, f)
			}
			w.rngObjects[id] = true
		default:
			return fmt.Errorf("-object %s: object type '%s' is not supported", o.Spec, typ)
		}
	}
	if err := w.openNetdevs(); err != nil {
		return err
	}
	bds, err := qdev.ParseBlockdevs(props(c.Blockdevs))
	if err != nil {
		return err
	}
	for _, d := range bds {
		w.drives = append(w.drives, d)
	}
	perIf := map[string]int{}
	for _, o := range c.Drives {
		ifType, _ := o.Get("if")
		if ifType == "" {
			ifType = defIf
		}
		d, err := qdev.ParseDrive(o, perIf[ifType], defIf, c.Snapshot)
		if err != nil {
			return err
		}
		perIf[ifType]++
		w.drives = append(w.drives, d)
	}
	for _, d := range w.drives {
		if w.Drives[d.ID] != nil {
			return fmt.Errorf("-drive id=%s: Duplicate ID '%s' for drive", d.ID, d.ID)
		}
		be, err := backend.Open(d.Opts)
		if err != nil {
			return fmt.Errorf("-drive file=%s: %v", d.Opts.File, err)
		}
		w.Drives[d.ID] = be
	}
	return nil
}

// Plug builds the devices on board b: a virtio-blk-pci for every -drive if=virtio (as
// QEMU's if=virtio does), then every -device in command-line order, then the devices
// the monitors added that are still plugged; the monitors' hotplug commands reach the
// machine built last.
func (w *Wiring) Plug(b qdev.Board, warn func(string)) (*qdev.Env, error) {
	w.lockPlug()
	defer w.unlockPlug()
	env := qdev.NewEnv(b, w.Drives, w.Chardevs)
	env.RNGObjects = w.rngObjects
	env.Vsock = w.vsock
	if warn != nil {
		env.Warn = warn
	}
	for _, d := range w.drives {
		if d.If != "virtio" {
			continue
		}
		p := qemuopts.New("device", "driver")
		p.Set("driver", "virtio-blk-pci")
		p.Set("drive", d.ID)
		if d.Serial != "" {
			p.Set("serial", d.Serial)
		}
		if b.PCI() == nil {
			p.Set("driver", "virtio-blk-device")
		}
		if err := env.Add(p); err != nil {
			return nil, fmt.Errorf("-drive %s: %v", d.Opts.File, err)
		}
	}
	if err := w.plugNICs(env, b); err != nil {
		return nil, err
	}
	for _, o := range w.c.Devices {
		if err := env.Add(o); err != nil {
			return nil, err
		}
	}
	if err := w.replayHotplugged(env); err != nil {
		return nil, err
	}
	if err := env.Finish(); err != nil {
		return nil, err
	}
	w.warnUnusedNetdevs(env, warn)
	for id := range w.Drives {
		if !env.Attached(id) {
			warn(fmt.Sprintf("-drive id=%s: no device uses this drive (add -device virtio-blk-pci,drive=%s)", id, id))
		}
	}
	return env, nil
}

// Close closes the drives (flushing them), chardevs and network backends.
func (w *Wiring) Close() error {
	var errs []error
	for _, be := range w.Drives {
		errs = append(errs, be.Close())
	}
	for _, c := range w.Chardevs {
		errs = append(errs, c.Close())
	}
	errs = append(errs, w.closeNetdevs())
	errs = append(errs, w.vsock.Close())
	return errors.Join(errs...)
}

func props(os []*qemuopts.Opts) []qdev.Props {
	ps := make([]qdev.Props, len(os))
	for i, o := range os {
		ps[i] = o
	}
	return ps
}

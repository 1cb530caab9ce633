package sysdev

import (
	"errors"
	"fmt"
	"strings"

	"gemu/cmd/internal/qemuopts"
	"gemu/hw/netdev"
	"gemu/machine/qdev"
)

// DNSUpstreamEnv names the environment variable that, when set to HOST:PORT, replaces
// the host resolver the user backend forwards the guest's DNS queries to (tests run
// their own resolver on the loopback).
const DNSUpstreamEnv = "GEMU_NETDEV_DNS_UPSTREAM"

// nic is a -nic: the netdev it created and the NIC to add.
type nic struct {
	netdev string
	model  string
	mac    string
	spec   string
}

// netHelp answers `-netdev help`, `-nic help` and `-nic model=help`.
func netHelp(c *qemuopts.Common) (string, bool) {
	types := "Available netdev backend types:\n" + strings.Join(netdev.Help(), "\n") + "\n"
	for _, o := range c.Netdevs {
		if o.Help {
			return types, true
		}
	}
	for _, o := range c.NICs {
		if o.Help {
			return types, true
		}
		if m, _ := o.Get("model"); qemuopts.IsHelp(m) {
			return "Available NIC models:\n" + strings.Join(qdev.NICModels(), "\n") + "\n", true
		}
	}
	return "", false
}

// openNetdevs opens every -netdev, and the netdev of every -nic, once per process.
func (w *Wiring) openNetdevs() error {
	o := w.netdevOptions()
	open := func(opt *qemuopts.Opts, id, typ string, extra ...string) error {
		if w.Netdevs[id] != nil {
			return fmt.Errorf("-%s %s: Duplicate ID '%s' for netdev", opt.Option, opt.Spec, id)
		}
		keys, err := netdev.Keys(typ)
		if err != nil {
			return fmt.Errorf("-%s %s: %v", opt.Option, opt.Spec, err)
		}
		if err := opt.Check(append(append(keys, "id", "type"), extra...)...); err != nil {
			return err
		}
		be, err := netdev.OpenWith(typ, repeatedGet(opt, "hostfwd"), o)
		if err != nil {
			return fmt.Errorf("-%s %s: %v", opt.Option, opt.Spec, err)
		}
		w.Netdevs[id] = be
		return nil
	}
	for _, opt := range w.c.Netdevs {
		id, _ := opt.Get("id")
		if id == "" {
			return fmt.Errorf("-netdev %s: Parameter 'id' is missing", opt.Spec)
		}
		if err := open(opt, id, opt.ImpliedValue()); err != nil {
			return err
		}
	}
	for i, opt := range w.c.NICs {
		typ := opt.ImpliedValue()
		if typ == "" {
			typ = "user"
		}
		if typ == "none" {
			if err := opt.Check("type"); err != nil {
				return err
			}
			continue
		}
		// QEMU names the netdev of a -nic after the NIC when id= is not given.
		id, _ := opt.Get("id")
		if id == "" {
			id = fmt.Sprintf("__org.qemu.nic%d", i)
		}
		n := nic{netdev: id, spec: opt.Spec}
		n.model, _ = opt.Get("model")
		n.mac, _ = opt.Get("mac")
		if n.model == "" {
			n.model = "virtio-net-pci"
		}
		if n.model == "virtio" {
			n.model = "virtio-net-pci" // QEMU's -net nic,model=virtio
		}
		if !isNICModel(n.model) {
			return fmt.Errorf("-nic %s: unsupported NIC model '%s' (available: %s)", opt.Spec, n.model, strings.Join(qdev.NICModels(), ", "))
		}
		if err := open(opt, id, typ, "model", "mac"); err != nil {
			return err
		}
		w.nics = append(w.nics, n)
	}
	return nil
}

func isNICModel(m string) bool {
	for _, n := range qdev.NICModels() {
		if n == m {
			return true
		}
	}
	return false
}

// plugNICs adds the NIC of every -nic (before the -device options, as QEMU's boards
// create them at machine init). On a board without PCI virtio-net-pci becomes
// virtio-net-device.
func (w *Wiring) plugNICs(env *qdev.Env, b qdev.Board) error {
	env.Netdevs = w.Netdevs
	for _, n := range w.nics {
		p := qemuopts.New("device", "driver")
		model := n.model
		if model == "virtio-net-pci" && b.PCI() == nil {
			model = "virtio-net-device"
		}
		p.Set("driver", model)
		p.Set("netdev", n.netdev)
		if n.mac != "" {
			p.Set("mac", n.mac)
		}
		if err := env.Add(p); err != nil {
			return fmt.Errorf("-nic %s: %v", n.spec, err)
		}
	}
	return nil
}

// warnUnusedNetdevs is QEMU's "netdev ID has no peer" for -netdevs no NIC took.
func (w *Wiring) warnUnusedNetdevs(env *qdev.Env, warn func(string)) {
	for id := range w.Netdevs {
		if !env.NetdevUsed(id) && warn != nil {
			warn(fmt.Sprintf("netdev %s has no peer (add -device virtio-net-pci,netdev=%s)", id, id))
		}
	}
}

// closeNetdevs closes the backends.
func (w *Wiring) closeNetdevs() error {
	var errs []error
	for _, be := range w.Netdevs {
		errs = append(errs, be.Close())
	}
	return errors.Join(errs...)
}

// repeatedGet is opt.Get, except that a key QEMU lets repeat (hostfwd=) is handed to
// hw/netdev as its numbered form: the first value as key, the later ones as key.0,
// key.1, ... (qemuopts keeps only the last value under the plain key).
func repeatedGet(opt *qemuopts.Opts, key string) func(string) (string, bool) {
	all := opt.All(key)
	return func(k string) (string, bool) {
		if len(all) > 1 {
			if k == key {
				return all[0], true
			}
			var i int
			if n, err := fmt.Sscanf(k, key+".%d", &i); err == nil && n == 1 && k == fmt.Sprintf("%s.%d", key, i) {
				if i+1 < len(all) {
					return all[i+1], true
				}
				return "", false
			}
		}
		return opt.Get(k)
	}
}

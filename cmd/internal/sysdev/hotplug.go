package sysdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"gemu/block/backend"
	"gemu/cmd/internal/qemuopts"
	"gemu/hw/netdev"
	"gemu/machine/monitor"
	"gemu/machine/qdev"
)

// hotplug is the Wiring's monitor side: the current machine's devices, and what the
// monitors added, which outlives a reboot (a device_add'ed NIC is plugged again, cold,
// into the rebuilt machine, as it stays plugged in QEMU's).
type hotplug struct {
	mu       sync.Mutex // one hotplug operation or machine build at a time
	env      *qdev.Env
	listMu   sync.Mutex
	added    []*qemuopts.Opts // device_add'ed devices still plugged, in order
	netTypes map[string]string
	nodes    map[string]bool // blockdev-add'ed node names (the monitor owns them)
}

// Monitor-added devices are replayed by Plug; lockPlug/unlockPlug bracket a machine
// build so no hotplug command runs meanwhile.
func (w *Wiring) lockPlug()   { w.hp.mu.Lock() }
func (w *Wiring) unlockPlug() { w.hp.mu.Unlock() }

// replayHotplugged cold-plugs the device_add'ed devices into a rebuilt machine and
// makes env the one the monitors reach.
func (w *Wiring) replayHotplugged(env *qdev.Env) error {
	w.hp.listMu.Lock()
	added := append([]*qemuopts.Opts(nil), w.hp.added...)
	w.hp.listMu.Unlock()
	for _, o := range added {
		if err := env.Add(o); err != nil {
			return err
		}
	}
	w.hp.env = env
	return nil
}

func parseSpec(option, spec, implied string) (*qemuopts.Opts, error) {
	o, err := qemuopts.ParseOpt(option, strings.TrimSpace(spec), implied)
	if err != nil {
		var qe *qemuopts.Error
		if errors.As(err, &qe) {
			return nil, errors.New(strings.TrimPrefix(qe.Error(), "-"+option+" "+spec+": "))
		}
		return nil, err
	}
	return o, nil
}

// DeviceAdd implements monitor.Hotplugger.
func (w *Wiring) DeviceAdd(spec string) error {
	o, err := parseSpec("device", spec, "driver")
	if err != nil {
		return err
	}
	w.hp.mu.Lock()
	defer w.hp.mu.Unlock()
	if w.hp.env == nil {
		return errors.New("the guest is not running")
	}
	if err := w.hp.env.Hotplug(o); err != nil {
		return err
	}
	w.hp.listMu.Lock()
	w.hp.added = append(w.hp.added, o)
	w.hp.listMu.Unlock()
	return nil
}

// DeviceDel implements monitor.Hotplugger.
func (w *Wiring) DeviceDel(id string, deleted func()) error {
	w.hp.mu.Lock()
	env := w.hp.env
	w.hp.mu.Unlock()
	if env == nil {
		return fmt.Errorf("Device '%s' not found: %w", id, monitor.ErrNotFound)
	}
	err := env.Unplug(id, func() {
		w.hp.listMu.Lock()
		for i, o := range w.hp.added {
			if v, _ := o.Get("id"); v == id {
				w.hp.added = append(w.hp.added[:i], w.hp.added[i+1:]...)
				break
			}
		}
		w.hp.listMu.Unlock()
		deleted()
	})
	if errors.Is(err, qdev.ErrDeviceNotFound) {
		return fmt.Errorf("Device '%s' not found: %w", id, monitor.ErrNotFound)
	}
	return err
}

func (w *Wiring) netdevOptions() netdev.Options {
	return netdev.Options{DNSUpstream: os.Getenv(DNSUpstreamEnv), Notify: func(msg string) {
		fmt.Fprintf(os.Stderr, "%s: %s\n", filepath.Base(os.Args[0]), msg)
	}}
}

// NetdevAdd implements monitor.Hotplugger.
func (w *Wiring) NetdevAdd(spec string) error {
	o, err := parseSpec("netdev", spec, "type")
	if err != nil {
		return err
	}
	id, _ := o.Get("id")
	typ := o.ImpliedValue()
	if id == "" {
		return errors.New("Parameter 'id' is missing")
	}
	keys, err := netdev.Keys(typ)
	if err != nil {
		return fmt.Errorf("Parameter 'type' does not accept value '%s'", typ)
	}
	if err := o.Check(append(keys, "id", "type")...); err != nil {
		var qe *qemuopts.Error
		if errors.As(err, &qe) {
			return errors.New(strings.TrimPrefix(qe.Error(), "-netdev "+o.Spec+": "))
		}
		return err
	}
	w.hp.mu.Lock()
	defer w.hp.mu.Unlock()
	if w.Netdevs[id] != nil {
		return fmt.Errorf("Duplicate ID '%s'", id)
	}
	be, err := netdev.OpenWith(typ, repeatedGet(o, "hostfwd"), w.netdevOptions())
	if err != nil {
		return err
	}
	w.Netdevs[id] = be
	if w.hp.netTypes == nil {
		w.hp.netTypes = map[string]string{}
	}
	w.hp.netTypes[id] = typ
	return nil
}

// NetdevDel implements monitor.Hotplugger: the backend closes; a NIC still using it
// loses its peer, as in QEMU.
func (w *Wiring) NetdevDel(id string) error {
	w.hp.mu.Lock()
	defer w.hp.mu.Unlock()
	be := w.Netdevs[id]
	if be == nil {
		return fmt.Errorf("Device '%s' not found: %w", id, monitor.ErrNotFound)
	}
	delete(w.Netdevs, id)
	delete(w.hp.netTypes, id)
	return be.Close()
}

// BlockdevAdd implements monitor.Hotplugger: a node graph as -blockdev takes it (one
// object; file= may be a nested file node).
func (w *Wiring) BlockdevAdd(spec string) error {
	o, err := parseSpec("blockdev", spec, "driver")
	if err != nil {
		return err
	}
	ds, err := qdev.ParseBlockdevs([]qdev.Props{o})
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "-blockdev: "))
	}
	w.hp.mu.Lock()
	defer w.hp.mu.Unlock()
	names := make([]string, 0, len(ds))
	for name := range ds {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if w.Drives[name] != nil {
			return fmt.Errorf("Duplicate nodes with node-name='%s'", name)
		}
	}
	for _, name := range names {
		d := ds[name]
		if _, err := os.Stat(d.Opts.File); err != nil {
			return fmt.Errorf("Could not open '%s': %s", d.Opts.File, errText(err))
		}
		be, err := backend.Open(d.Opts)
		if err != nil {
			return fmt.Errorf("Could not open '%s': %v", d.Opts.File, err)
		}
		w.Drives[name] = be
		if w.hp.nodes == nil {
			w.hp.nodes = map[string]bool{}
		}
		w.hp.nodes[name] = true
	}
	return nil
}

// errText is an OS error as QEMU's strerror wording ("No such file or directory").
func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		s := pe.Err.Error()
		return strings.ToUpper(s[:1]) + s[1:]
	}
	return err.Error()
}

// BlockdevDel implements monitor.Hotplugger.
func (w *Wiring) BlockdevDel(node string) error {
	w.hp.mu.Lock()
	defer w.hp.mu.Unlock()
	be := w.Drives[node]
	switch {
	case be == nil:
		return fmt.Errorf("Failed to find node with node-name='%s'", node)
	case !w.hp.nodes[node]:
		return fmt.Errorf("Node %s is not owned by the monitor", node)
	case w.hp.env != nil && w.hp.env.Attached(node):
		return fmt.Errorf("Node %s is in use", node)
	}
	delete(w.Drives, node)
	delete(w.hp.nodes, node)
	return be.Close()
}

// Network implements monitor.Hotplugger (info network).
func (w *Wiring) Network() []monitor.NIC {
	w.hp.mu.Lock()
	defer w.hp.mu.Unlock()
	typ := func(id string) string {
		if t := w.hp.netTypes[id]; t != "" {
			return t
		}
		for _, o := range w.c.Netdevs {
			if v, _ := o.Get("id"); v == id {
				return o.ImpliedValue()
			}
		}
		return "user"
	}
	info := func(t string) string {
		if t == "user" {
			return "net=10.0.2.0,restrict=off"
		}
		return ""
	}
	var out []monitor.NIC
	peered := map[string]bool{}
	if w.hp.env != nil {
		for _, n := range w.hp.env.NICs() {
			nic := monitor.NIC{Name: n.Name, Model: n.Model, MAC: n.MAC, Netdev: n.Netdev}
			if n.Netdev != "" && w.Netdevs[n.Netdev] != nil {
				nic.Type = typ(n.Netdev)
				nic.Info = info(nic.Type)
				peered[n.Netdev] = true
			} else {
				nic.Netdev = ""
			}
			out = append(out, nic)
		}
	}
	ids := make([]string, 0, len(w.Netdevs))
	for id := range w.Netdevs {
		if !peered[id] {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		t := typ(id)
		out = append(out, monitor.NIC{Netdev: id, Type: t, Info: info(t)})
	}
	return out
}

// Devices implements monitor.Hotplugger (info qtree).
func (w *Wiring) Devices() map[string]string {
	w.hp.mu.Lock()
	defer w.hp.mu.Unlock()
	if w.hp.env == nil {
		return nil
	}
	return w.hp.env.DeviceIDs()
}

// BlockStats implements monitor.BlockStater: every drive's counters. A node the
// monitor added is named by node-name with an empty device, as QEMU lists it.
func (w *Wiring) BlockStats() []monitor.BlockStats {
	w.hp.mu.Lock()
	defer w.hp.mu.Unlock()
	ids := make([]string, 0, len(w.Drives))
	for id := range w.Drives {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]monitor.BlockStats, 0, len(ids))
	for _, id := range ids {
		st := qdev.Stats(w.Drives[id])
		b := monitor.BlockStats{Device: id, RdBytes: st.RdBytes.Load(), WrBytes: st.WrBytes.Load(), RdOps: st.RdOps.Load(),
			WrOps: st.WrOps.Load(), FlushOps: st.FlushOps.Load(), UnmapOps: st.UnmapOps.Load(), UnmapBytes: st.UnmapBytes.Load(),
			FailedRd: st.FailedRd.Load(), FailedWr: st.FailedWr.Load(), FailedFlush: st.FailedFlush.Load(), WrHighest: st.WrHighest.Load()}
		if w.hp.nodes[id] {
			b.Device, b.NodeName = "", id
		}
		if w.hp.env != nil {
			if dev := w.hp.env.DriveDevice(id); dev != "" {
				b.QDev = "/machine/peripheral/" + dev + "/virtio-backend"
			}
		}
		out = append(out, b)
	}
	return out
}

// DrivesNow is a copy of the drive table, safe against a concurrent blockdev-add.
func (w *Wiring) DrivesNow() map[string]*backend.Backend {
	w.hp.mu.Lock()
	defer w.hp.mu.Unlock()
	out := make(map[string]*backend.Backend, len(w.Drives))
	for id, be := range w.Drives {
		out[id] = be
	}
	return out
}

// HotNode reports whether node was blockdev-add'ed and the id of the device using it
// ("" for none), for query-block.
func (w *Wiring) HotNode(node string) (owned bool, device string) {
	w.hp.mu.Lock()
	defer w.hp.mu.Unlock()
	if w.hp.env != nil {
		device = w.hp.env.DriveDevice(node)
	}
	return w.hp.nodes[node], device
}

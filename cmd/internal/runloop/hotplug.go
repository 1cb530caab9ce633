package runloop

import (
	"errors"

	"gemu/machine/monitor"
)

// The loop is the monitors' monitor.Hotplugger through Config.Hotplug (the process's
// device wiring, which keeps what was added across machine rebuilds).

var errNoHotplug = errors.New("this machine does not support hotplug")

func (l *Loop) hp() (monitor.Hotplugger, error) {
	if l.cfg.Hotplug == nil {
		return nil, errNoHotplug
	}
	return l.cfg.Hotplug, nil
}

func (l *Loop) DeviceAdd(spec string) error {
	h, err := l.hp()
	if err != nil {
		return err
	}
	return h.DeviceAdd(spec)
}

func (l *Loop) DeviceDel(id string, deleted func()) error {
	h, err := l.hp()
	if err != nil {
		return err
	}
	return h.DeviceDel(id, deleted)
}

func (l *Loop) NetdevAdd(spec string) error {
	h, err := l.hp()
	if err != nil {
		return err
	}
	return h.NetdevAdd(spec)
}

func (l *Loop) NetdevDel(id string) error {
	h, err := l.hp()
	if err != nil {
		return err
	}
	return h.NetdevDel(id)
}

func (l *Loop) BlockdevAdd(spec string) error {
	h, err := l.hp()
	if err != nil {
		return err
	}
	return h.BlockdevAdd(spec)
}

func (l *Loop) BlockdevDel(node string) error {
	h, err := l.hp()
	if err != nil {
		return err
	}
	return h.BlockdevDel(node)
}

func (l *Loop) Network() []monitor.NIC {
	if l.cfg.Hotplug == nil {
		return nil
	}
	return l.cfg.Hotplug.Network()
}

func (l *Loop) Devices() map[string]string {
	if l.cfg.Hotplug == nil {
		return nil
	}
	return l.cfg.Hotplug.Devices()
}

// BlockStats makes the loop a monitor.BlockStater when the wiring counts block I/O.
func (l *Loop) BlockStats() []monitor.BlockStats {
	if bs, ok := l.cfg.Hotplug.(monitor.BlockStater); ok {
		return bs.BlockStats()
	}
	var out []monitor.BlockStats
	for _, b := range l.Blocks() {
		out = append(out, monitor.BlockStats{Device: b.Device, QDev: b.QDev})
	}
	return out
}

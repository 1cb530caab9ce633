package runloop

import (
	"time"

	"gemu/hw/virtio/balloon"
	"gemu/machine/monitor"
	"gemu/machine/qdev"
)

// The loop is the monitors' monitor.Ballooner over the process's balloon device
// (machine/qdev keeps it across machine rebuilds).

func (l *Loop) Balloon(target int64) error {
	if err := qdev.Balloon(uint64(target)); err != nil {
		return monitor.ErrNoBalloon
	}
	return nil
}

func (l *Loop) BalloonActual() (int64, error) {
	d := qdev.BalloonDevice()
	if d == nil {
		return 0, monitor.ErrNoBalloon
	}
	return int64(d.Actual()), nil
}

func (l *Loop) WatchBalloon(fn func(actual int64)) {
	qdev.WatchBalloon(func(a uint64) { fn(int64(a)) })
}

// BalloonQOM is the balloon's QOM path, as QEMU names a device with id= (the
// balloon's properties are reachable only then).
func (l *Loop) BalloonQOM() (path, typ string, ok bool) {
	id, typ := qdev.BalloonID()
	if id == "" || qdev.BalloonDevice() == nil {
		return "", "", false
	}
	return "/machine/peripheral/" + id, typ, true
}

// BalloonStats are the guest's statistics by QEMU's names (unreported ones are
// 2^64-1, QEMU's -1) and the time of the last report in seconds (0: none).
func (l *Loop) BalloonStats() (map[string]uint64, int64) {
	d := qdev.BalloonDevice()
	if d == nil {
		return nil, 0
	}
	st := d.Stats()
	out := make(map[string]uint64, balloon.NumStats)
	for i, n := range balloon.StatNames {
		out[n] = ^uint64(0)
		if st.Valid[i] {
			out[n] = st.Value[i]
		}
	}
	var last int64
	if !st.LastUpdate.IsZero() {
		last = st.LastUpdate.Unix()
	}
	return out, last
}

func (l *Loop) BalloonStatsInterval() int64 {
	if d := qdev.BalloonDevice(); d != nil {
		return int64(d.StatsInterval() / time.Second)
	}
	return 0
}

func (l *Loop) SetBalloonStatsInterval(sec int64) {
	if d := qdev.BalloonDevice(); d != nil {
		d.SetStatsInterval(time.Duration(sec) * time.Second)
	}
}

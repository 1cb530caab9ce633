package runloop

import (
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

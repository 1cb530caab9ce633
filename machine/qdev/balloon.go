package qdev

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"gemu/hw/memory"
	"gemu/hw/virtio"
	"gemu/hw/virtio/balloon"
)

// balloonProps are QEMU 7.2's virtio-balloon properties gemu takes.
var balloonProps = []string{"deflate-on-oom", "free-page-reporting", "free-page-hint", "page-poison",
	"guest-stats-polling-interval", "qemu-4-0-config-size", "iothread"}

func init() {
	for _, tr := range []struct {
		suffix, bus string
		props       []string
	}{{"-pci", "PCI", commonPCI}, {"-device", "virtio-bus", commonMMIO}} {
		register(devType{name: "virtio-balloon" + tr.suffix, bus: tr.bus, desc: "Virtio memory balloon",
			props: append(append([]string{}, tr.props...), balloonProps...), build: buildBalloon})
	}
	a := types["virtio-balloon-pci"]
	a.name, a.aliasOf = "virtio-balloon", "virtio-balloon-pci"
	register(a)
	d := types["virtio-balloon-pci"]
	d.name = "virtio-balloon-pci-non-transitional"
	register(d)
}

// The process's balloon, as QEMU's balloon handler: one device per machine; a
// rebuilt machine's (after a reset) takes over, keeping the target.
var balloons struct {
	mu      sync.Mutex
	owner   *Env
	dev     *balloon.Device
	id, typ string // the device's id= and type
	target  uint64 // last requested target (0: none)
	watch   []func(actual uint64)
}

// ErrNoBalloon is returned by the balloon functions when no machine has one.
var ErrNoBalloon = errors.New("No balloon device has been activated")

// Balloon asks the process's balloon for a guest of target bytes.
func Balloon(target uint64) error {
	balloons.mu.Lock()
	d := balloons.dev
	if d != nil {
		balloons.target = target
	}
	balloons.mu.Unlock()
	if d == nil {
		return ErrNoBalloon
	}
	d.SetTarget(target)
	return nil
}

// BalloonDevice is the process's balloon device, nil when there is none.
func BalloonDevice() *balloon.Device {
	balloons.mu.Lock()
	defer balloons.mu.Unlock()
	return balloons.dev
}

// BalloonID is the process's balloon device's id= and type ("" when none).
func BalloonID() (id, typ string) {
	balloons.mu.Lock()
	defer balloons.mu.Unlock()
	return balloons.id, balloons.typ
}

// WatchBalloon registers fn, told the guest's new size whenever its balloon driver
// changes actual (QMP's BALLOON_CHANGE), for this and every later balloon device.
func WatchBalloon(fn func(actual uint64)) {
	balloons.mu.Lock()
	balloons.watch = append(balloons.watch, fn)
	balloons.mu.Unlock()
}

func balloonChanged(actual uint64) {
	balloons.mu.Lock()
	ws := append([]func(uint64){}, balloons.watch...)
	balloons.mu.Unlock()
	for _, w := range ws {
		w(actual)
	}
}

// ramSize is the board's guest RAM in bytes.
func ramSize(m virtio.Memory) uint64 {
	var n uint64
	if r, ok := m.(interface{ Slots() []*memory.Slot }); ok {
		for _, s := range r.Slots() {
			n += uint64(len(s.Mem))
		}
	}
	return n
}

func buildBalloon(e *Env, p Props) (virtio.Device, error) {
	var cfg balloon.Config
	var err error
	if cfg.DeflateOnOOM, err = boolProp(p, "deflate-on-oom", false); err != nil {
		return nil, err
	}
	if cfg.FreePageReporting, err = boolProp(p, "free-page-reporting", false); err != nil {
		return nil, err
	}
	if cfg.PagePoison, err = boolProp(p, "page-poison", true); err != nil {
		return nil, err
	}
	if on, err := boolProp(p, "free-page-hint", false); err != nil {
		return nil, err
	} else if on {
		return nil, errors.New("free-page-hint=on is not supported: gemu's migration does not use free page hints (use free-page-reporting=on)")
	}
	if _, ok := p.Get("iothread"); ok {
		return nil, errors.New("iothread is not supported: gemu's balloon runs on its own goroutine")
	}
	if _, err := boolProp(p, "qemu-4-0-config-size", false); err != nil {
		return nil, err
	}
	if v, ok := p.Get("guest-stats-polling-interval"); ok {
		n, err := strconv.ParseUint(v, 0, 32)
		if err != nil {
			return nil, fmt.Errorf("Parameter 'guest-stats-polling-interval' expects int64")
		}
		cfg.StatsInterval = time.Duration(n) * time.Second
	}
	cfg.RAMSize = ramSize(e.Board.Memory())
	warn := e.Warn
	cfg.Logf = func(f string, a ...any) { warn(fmt.Sprintf(f, a...)) }
	d := balloon.New(cfg)
	d.OnChange(balloonChanged)
	balloons.mu.Lock()
	defer balloons.mu.Unlock()
	if balloons.owner == e {
		return nil, errors.New("Only one balloon device is supported")
	}
	balloons.owner, balloons.dev = e, d
	balloons.id, _ = p.Get("id")
	balloons.typ, _ = p.Get("driver")
	if balloons.target != 0 {
		d.SetTarget(balloons.target)
	}
	return d, nil
}

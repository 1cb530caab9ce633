package monitor

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DeviceNotActive is QEMU's error class for a command whose device is absent
// (balloon without a balloon device).
const DeviceNotActive = "DeviceNotActive"

// ErrNoBalloon is what a Ballooner returns when the machine has no balloon device.
var ErrNoBalloon = errors.New("No balloon device has been activated")

// Ballooner is the optional memory-balloon side of a Machine (virtio-balloon).
type Ballooner interface {
	// Balloon asks the guest to leave itself target bytes of RAM (target > 0).
	Balloon(target int64) error
	// BalloonActual is the guest's RAM less what it gave back, in bytes.
	BalloonActual() (int64, error)
	// WatchBalloon registers fn, told the new actual whenever the guest's driver
	// changes it (the BALLOON_CHANGE event). Called once, by NewServer.
	WatchBalloon(fn func(actual int64))
}

// BalloonQOM is the optional side of a Ballooner that qom-get and qom-set reach: the
// device's guest-stats and guest-stats-polling-interval properties.
type BalloonQOM interface {
	// BalloonQOM is the device's QOM path and type; ok is false when it has none.
	BalloonQOM() (path, typ string, ok bool)
	// BalloonStats are the statistics by QEMU's names and the last update (seconds).
	BalloonStats() (stats map[string]uint64, lastUpdate int64)
	BalloonStatsInterval() int64
	SetBalloonStatsInterval(seconds int64)
}

type balloonInfo struct {
	Actual int64 `json:"actual"`
}

// throttle is QEMU's event rate limit for BALLOON_CHANGE: at most one per second,
// the last value of a burst sent when the second is over.
type throttle struct {
	emit    func(int64)
	mu      sync.Mutex
	last    time.Time
	pending bool
	val     int64
}

const balloonEventRate = time.Second

func (t *throttle) event(a int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.val = a
	if t.pending {
		return
	}
	if wait := balloonEventRate - time.Since(t.last); !t.last.IsZero() && wait > 0 {
		t.pending = true
		time.AfterFunc(wait, func() {
			t.mu.Lock()
			v := t.val
			t.pending, t.last = false, time.Now()
			t.mu.Unlock()
			t.emit(v)
		})
		return
	}
	t.last = time.Now()
	t.emit(a)
}

func balloonErr(err error) error {
	if errors.Is(err, ErrNoBalloon) {
		return errorf(DeviceNotActive, "%s", ErrNoBalloon.Error())
	}
	return errorf(GenericError, "%v", err)
}

func (s *Server) ballooner() (Ballooner, error) {
	if b, ok := s.m.(Ballooner); ok {
		return b, nil
	}
	return nil, balloonErr(ErrNoBalloon)
}

// registerBalloon adds balloon and query-balloon and wires BALLOON_CHANGE.
func (s *Server) registerBalloon() {
	if b, ok := s.m.(Ballooner); ok {
		t := &throttle{emit: func(a int64) { s.Emit("BALLOON_CHANGE", balloonInfo{a}) }}
		b.WatchBalloon(t.event)
	}
	s.add(&command{name: "balloon", args: []arg{{"value", "integer", false}}, ret: "empty", run: func(c *call) (any, error) {
		var v int64
		if err := jsonInt(c, "value", &v); err != nil {
			return nil, err
		}
		return struct{}{}, s.balloon(v)
	}})
	s.registerQOM()
	s.add(&command{name: "query-balloon", ret: "any", run: func(*call) (any, error) {
		b, err := s.ballooner()
		if err != nil {
			return nil, err
		}
		a, err := b.BalloonActual()
		if err != nil {
			return nil, balloonErr(err)
		}
		return balloonInfo{a}, nil
	}})
}

// registerQOM adds qom-get and qom-set for the balloon's properties, unless the table
// has them already.
func (s *Server) registerQOM() {
	find := func(c *call) (BalloonQOM, string, error) {
		path, _ := c.str("path")
		prop, _ := c.str("property")
		bq, ok := s.m.(BalloonQOM)
		var p, typ string
		if ok {
			p, typ, ok = bq.BalloonQOM()
		}
		if !ok || p != path {
			return nil, "", errorf(DeviceNotFound, "Device '%s' not found", path)
		}
		if prop != "guest-stats" && prop != "guest-stats-polling-interval" {
			return nil, "", errorf(GenericError, "Property '%s.%s' not found", typ, prop)
		}
		return bq, prop, nil
	}
	if _, ok := s.cmds["qom-get"]; !ok {
		s.add(&command{name: "qom-get", args: []arg{{"path", "string", false}, {"property", "string", false}}, ret: "any",
			run: func(c *call) (any, error) {
				bq, prop, err := find(c)
				if err != nil {
					return nil, err
				}
				if prop == "guest-stats-polling-interval" {
					return bq.BalloonStatsInterval(), nil
				}
				st, last := bq.BalloonStats()
				return struct {
					Stats      map[string]uint64 `json:"stats"`
					LastUpdate int64             `json:"last-update"`
				}{st, last}, nil
			}})
	}
	if _, ok := s.cmds["qom-set"]; !ok {
		s.add(&command{name: "qom-set", args: []arg{{"path", "string", false}, {"property", "string", false}, {"value", "any", false}}, ret: "empty",
			run: func(c *call) (any, error) {
				bq, prop, err := find(c)
				if err != nil {
					return nil, err
				}
				if prop == "guest-stats" {
					return nil, errorf(GenericError, "Property '%s' is not writable", prop)
				}
				if jsonType(c.args["value"]) != "integer" {
					return nil, errorf(GenericError, "Invalid parameter type for '%s', expected: integer", prop)
				}
				v, err := strconv.ParseInt(strings.TrimSpace(string(c.args["value"])), 10, 64)
				switch {
				case err != nil || v > 1<<32-1:
					return nil, errorf(GenericError, "timer value is too big")
				case v < 0:
					return nil, errorf(GenericError, "timer value must be greater than zero")
				}
				bq.SetBalloonStatsInterval(v)
				return struct{}{}, nil
			}})
	}
}

// jsonInt reads integer argument name (its type was checked against the table).
func jsonInt(c *call, name string, v *int64) error {
	raw := c.args[name]
	n, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil {
		return errorf(GenericError, "Invalid parameter type for '%s', expected: integer", name)
	}
	*v = n
	return nil
}

func (s *Server) balloon(target int64) error {
	b, err := s.ballooner()
	if err != nil {
		return err
	}
	if target <= 0 {
		return errorf(GenericError, "Parameter 'target' expects a size")
	}
	if err := b.Balloon(target); err != nil {
		return balloonErr(err)
	}
	return nil
}

// hmpBalloon is HMP's balloon N (N in megabytes: QEMU's 'M' argument, an integer
// expression; gemu takes a plain integer, decimal or 0x hex, optionally negative);
// false when cmd is not balloon. Errors are QEMU's texts.
func (s *Server) hmpBalloon(w *strings.Builder, cmd, rest string) bool {
	if cmd != "balloon" {
		return false
	}
	n, perr := hmpInt(rest)
	if perr != "" {
		fmt.Fprintf(w, "%s\nTry \"help balloon\" for more information\n", perr)
		return true
	}
	if n > 1<<42 || n < -(1<<42) {
		n = 1 << 42 // past any guest's RAM: capped like a large target
	}
	if err := s.balloon(n << 20); err != nil {
		fmt.Fprintf(w, "Error: %v\n", err)
	}
	return true
}

// hmpInt parses one integer argument as QEMU's monitor expressions begin, with its
// error texts.
func hmpInt(a string) (int64, string) {
	a = strings.TrimSpace(a)
	neg := strings.HasPrefix(a, "-")
	if neg {
		a = strings.TrimSpace(a[1:])
	}
	if a == "" {
		return 0, "unexpected end of expression"
	}
	end := 0
	hex := strings.HasPrefix(a, "0x") || strings.HasPrefix(a, "0X")
	if hex {
		end = 2
	}
	for end < len(a) && (a[end] >= '0' && a[end] <= '9' || hex && strings.ContainsRune("abcdefABCDEF", rune(a[end]))) {
		end++
	}
	if end == 0 || hex && end == 2 {
		return 0, fmt.Sprintf("invalid char '%c' in expression", a[0])
	}
	if strings.TrimSpace(a[end:]) != "" {
		return 0, "balloon: extraneous characters at the end of line"
	}
	v, err := strconv.ParseInt(a[:end], 0, 64)
	if err != nil {
		return 0, "number too large"
	}
	if neg {
		v = -v
	}
	return v, ""
}

// hmpInfoBalloon is info balloon.
func (s *Server) hmpInfoBalloon(w *strings.Builder) {
	b, err := s.ballooner()
	if err == nil {
		var a int64
		if a, err = b.BalloonActual(); err == nil {
			fmt.Fprintf(w, "balloon: actual=%d\n", a>>20)
			return
		}
		err = balloonErr(err)
	}
	fmt.Fprintf(w, "Error: %v\n", err)
}

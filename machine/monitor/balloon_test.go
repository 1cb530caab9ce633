package monitor

import (
	"bufio"
	"net"
	"sync"
	"testing"
)

// fakeBalloon is a Machine with a balloon of 512 MiB: the driver follows the target
// at once, as a guest's does a little later.
type fakeBalloon struct {
	*fake
	mu     sync.Mutex
	actual int64
	watch  func(int64)
}

func (f *fakeBalloon) Balloon(target int64) error {
	f.mu.Lock()
	target = min(target, 512<<20)
	changed := f.actual != target
	f.actual = target
	w := f.watch
	f.mu.Unlock()
	if changed && w != nil {
		w(target)
	}
	return nil
}
func (f *fakeBalloon) BalloonActual() (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.actual, nil
}
func (f *fakeBalloon) WatchBalloon(fn func(int64)) { f.mu.Lock(); f.watch = fn; f.mu.Unlock() }

func qmpClient(t *testing.T, s *Server) *client {
	a, b := net.Pipe()
	go s.Handle(b, b, b, QMP)
	c := &client{t: t, c: a, r: bufio.NewReader(a)}
	c.read()
	c.do(`{"execute":"qmp_capabilities"}`)
	return c
}

func hmpOut(c *client, line string) string {
	r := c.do(`{"execute":"human-monitor-command","arguments":{"command-line":` + jsonStr(line) + `}}`)
	s, _ := r["return"].(string)
	return s
}

// The replies are QEMU 7.2's (qemu-system-aarch64 -M virt -m 512, with and without
// -device virtio-balloon-device), class and text.
func TestBalloonNoDevice(t *testing.T) {
	_, s, _ := start(t, Options{})
	c := qmpClient(t, s)
	for _, q := range []string{`{"execute":"query-balloon"}`, `{"execute":"balloon","arguments":{"value":0}}`,
		`{"execute":"balloon","arguments":{"value":268435456}}`} {
		if cl, d := errOf(c.do(q)); cl != "DeviceNotActive" || d != "No balloon device has been activated" {
			t.Fatalf("%s: %s %q", q, cl, d)
		}
	}
	if cl, d := errOf(c.do(`{"execute":"balloon","arguments":{"value":"x"}}`)); cl != GenericError || d != "Invalid parameter type for 'value', expected: integer" {
		t.Fatalf("%s %q", cl, d)
	}
	if cl, d := errOf(c.do(`{"execute":"balloon","arguments":{}}`)); cl != GenericError || d != "Parameter 'value' is missing" {
		t.Fatalf("%s %q", cl, d)
	}
	for line, want := range map[string]string{
		"info balloon": "Error: No balloon device has been activated\r\n",
		"balloon 300":  "Error: No balloon device has been activated\r\n",
		"balloon":      "unexpected end of expression\r\nTry \"help balloon\" for more information\r\n",
	} {
		if got := hmpOut(c, line); got != want {
			t.Fatalf("%s: %q, want %q", line, got, want)
		}
	}
}

func TestBalloon(t *testing.T) {
	f := &fakeBalloon{fake: &fake{status: Running}, actual: 512 << 20}
	s := NewServer(f, Options{})
	f.srv = s
	t.Cleanup(s.Close)
	c := qmpClient(t, s)
	r := c.do(`{"execute":"query-balloon"}`)
	if a, _ := r["return"].(map[string]any); a == nil || a["actual"] != float64(512<<20) || len(a) != 1 {
		t.Fatalf("query-balloon %v", r)
	}
	for _, v := range []string{"0", "-5"} {
		if cl, d := errOf(c.do(`{"execute":"balloon","arguments":{"value":` + v + `}}`)); cl != GenericError || d != "Parameter 'target' expects a size" {
			t.Fatalf("value %s: %s %q", v, cl, d)
		}
	}
	if r := c.do(`{"execute":"balloon","arguments":{"value":268435456}}`); r["return"] == nil {
		t.Fatalf("balloon %v", r)
	}
	// BALLOON_CHANGE follows, with the new actual.
	c.do(`{"execute":"query-status"}`)
	found := false
	for _, e := range c.ev {
		if e["event"] == "BALLOON_CHANGE" {
			d, _ := e["data"].(map[string]any)
			found = d["actual"] == float64(256<<20) && e["timestamp"] != nil
		}
	}
	if !found {
		t.Fatalf("no BALLOON_CHANGE with actual 256 MiB: %v", c.ev)
	}
	for _, h := range []struct{ line, want string }{
		{"info balloon", "balloon: actual=256\r\n"},
		{"balloon 0", "Error: Parameter 'target' expects a size\r\n"},
		{"balloon abc", "invalid char 'a' in expression\r\nTry \"help balloon\" for more information\r\n"},
		{"balloon 1G", "balloon: extraneous characters at the end of line\r\nTry \"help balloon\" for more information\r\n"},
		{"balloon 300", ""},
	} {
		if got := hmpOut(c, h.line); got != h.want {
			t.Fatalf("%s: %q, want %q", h.line, got, h.want)
		}
	}
	if a, _ := f.BalloonActual(); a != 300<<20 {
		t.Fatalf("HMP balloon 300: actual %d", a)
	}
	if got := hmpOut(c, "info balloon"); got != "balloon: actual=300\r\n" {
		t.Fatalf("info balloon %q", got)
	}
	// A burst of changes within QEMU's one-second event rate limit: the last value
	// comes in one delayed event.
	c.ev = nil
	f.Balloon(100 << 20)
	f.Balloon(200 << 20)
	var evs []float64
	for len(evs) == 0 || evs[len(evs)-1] != float64(200<<20) {
		m := c.read()
		if m["event"] == "BALLOON_CHANGE" {
			evs = append(evs, m["data"].(map[string]any)["actual"].(float64))
		}
	}
	if len(evs) > 2 {
		t.Fatalf("events %v: not rate limited", evs)
	}
}

type fakeQOM struct {
	*fakeBalloon
	interval int64
}

func (f *fakeQOM) BalloonQOM() (string, string, bool) {
	return "/machine/peripheral/balloon0", "virtio-balloon-pci", true
}
func (f *fakeQOM) BalloonStats() (map[string]uint64, int64) {
	return map[string]uint64{"stat-free-memory": 5, "stat-swap-in": ^uint64(0)}, 7
}
func (f *fakeQOM) BalloonStatsInterval() int64     { return f.interval }
func (f *fakeQOM) SetBalloonStatsInterval(v int64) { f.interval = v }

// Replies recorded from QEMU 7.2 with -device virtio-balloon-pci,id=balloon0.
func TestBalloonQOM(t *testing.T) {
	f := &fakeQOM{fakeBalloon: &fakeBalloon{fake: &fake{status: Running}}}
	s := NewServer(f, Options{})
	f.srv = s
	t.Cleanup(s.Close)
	c := qmpClient(t, s)
	get := `{"execute":"qom-get","arguments":{"path":"/machine/peripheral/balloon0","property":`
	set := `{"execute":"qom-set","arguments":{"path":"/machine/peripheral/balloon0","property":"guest-stats-polling-interval","value":`
	for q, want := range map[string]string{
		set + `-1}}`:         "timer value must be greater than zero",
		set + `"x"}}`:        "Invalid parameter type for 'guest-stats-polling-interval', expected: integer",
		set + `5000000000}}`: "timer value is too big",
		get + `"nosuch"}}`:   "Property 'virtio-balloon-pci.nosuch' not found",
		`{"execute":"qom-get","arguments":{"path":"/machine/peripheral/nosuch","property":"guest-stats"}}`: "Device '/machine/peripheral/nosuch' not found",
		`{"execute":"qom-get","arguments":{"path":"/machine/peripheral/balloon0"}}`:                        "Parameter 'property' is missing",
	} {
		if _, d := errOf(c.do(q)); d != want {
			t.Errorf("%s: %q, want %q", q, d, want)
		}
	}
	if r := c.do(set + `2}}`); r["return"] == nil || f.interval != 2 {
		t.Fatalf("qom-set: %v", r)
	}
	if r := c.do(get + `"guest-stats-polling-interval"}}`); r["return"] != float64(2) {
		t.Fatalf("qom-get interval: %v", r)
	}
	r := c.do(get + `"guest-stats"}}`)
	st, _ := r["return"].(map[string]any)
	ss, _ := st["stats"].(map[string]any)
	if st["last-update"] != float64(7) || ss["stat-free-memory"] != float64(5) || ss["stat-swap-in"] != float64(^uint64(0)) {
		t.Fatalf("guest-stats %v", r)
	}
}

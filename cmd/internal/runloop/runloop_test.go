package runloop

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"gemu/cmd/internal/qemuopts"
	"gemu/hw/pci"
	"gemu/machine/monitor"
)

// fakeGuest's Run ends when the test says (end), by Stop or by Reset.
type fakeGuest struct {
	mu      sync.Mutex
	paused  bool
	pauses  int
	end     chan Exit
	stopped chan struct{}
	once    sync.Once
}

func newFake() *fakeGuest { return &fakeGuest{end: make(chan Exit, 1), stopped: make(chan struct{})} }

func (g *fakeGuest) Run() (Exit, error) {
	select {
	case e := <-g.end:
		if e == Failed {
			return Failed, errors.New("vCPU 0 failed")
		}
		return e, nil
	case <-g.stopped:
		return Stopped, nil
	}
}
func (g *fakeGuest) Stop() { g.once.Do(func() { close(g.stopped) }) }
func (g *fakeGuest) Pause() error {
	g.mu.Lock()
	g.paused = true
	g.pauses++
	g.mu.Unlock()
	return nil
}
func (g *fakeGuest) Resume()                       { g.mu.Lock(); g.paused = false; g.mu.Unlock() }
func (g *fakeGuest) Reset()                        { g.end <- Reset }
func (g *fakeGuest) PowerDown() error              { return nil }
func (g *fakeGuest) ReadPhys(uint64, []byte) error { return nil }
func (g *fakeGuest) CPUs() []monitor.CPU           { return []monitor.CPU{{Index: 0}} }
func (g *fakeGuest) PCI() *pci.Bus                 { return nil }
func (g *fakeGuest) Close()                        {}
func (g *fakeGuest) isPaused() bool                { g.mu.Lock(); defer g.mu.Unlock(); return g.paused }

type harness struct {
	t      *testing.T
	loop   *Loop
	guests chan *fakeGuest
	res    chan [2]any
	c      net.Conn
	r      *bufio.Reader
	events []string
}

func run(t *testing.T, cfg Config) *harness {
	h := &harness{t: t, guests: make(chan *fakeGuest, 8), res: make(chan [2]any, 1)}
	cfg.Prog, cfg.Stderr = "gemu-test", io.Discard
	cfg.New = func() (Guest, error) {
		g := newFake()
		h.guests <- g
		return g, nil
	}
	h.loop = New(cfg)
	a, b := net.Pipe()
	go h.loop.Server().Handle(b, b, b, monitor.QMP)
	h.c, h.r = a, bufio.NewReader(a)
	h.read()
	h.do(`{"execute":"qmp_capabilities"}`)
	go func() {
		code, err := h.loop.Run()
		h.res <- [2]any{code, err}
	}()
	return h
}

func (h *harness) read() map[string]any {
	h.t.Helper()
	h.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := h.r.ReadString('\n')
	if err != nil {
		h.t.Fatalf("read: %v", err)
	}
	var m map[string]any
	json.Unmarshal([]byte(l), &m)
	return m
}

func (h *harness) do(cmd string) map[string]any {
	h.t.Helper()
	h.c.Write([]byte(cmd))
	for {
		m := h.read()
		if e, ok := m["event"].(string); ok {
			h.events = append(h.events, eventString(m, e))
			continue
		}
		return m
	}
}

func eventString(m map[string]any, e string) string {
	if d, ok := m["data"].(map[string]any); ok {
		b, _ := json.Marshal(d)
		return e + string(b)
	}
	return e
}

// wantEvents reads events until the list is complete.
func (h *harness) wantEvents(want ...string) {
	h.t.Helper()
	for len(h.events) < len(want) {
		m := h.read()
		if e, ok := m["event"].(string); ok {
			h.events = append(h.events, eventString(m, e))
		}
	}
	if got := strings.Join(h.events, " "); got != strings.Join(want, " ") {
		h.t.Fatalf("events %s, want %s", got, strings.Join(want, " "))
	}
	h.events = nil
}

func (h *harness) guest() *fakeGuest {
	select {
	case g := <-h.guests:
		return g
	case <-time.After(10 * time.Second):
		h.t.Fatal("no guest built")
		return nil
	}
}

func (h *harness) result() (int, error) {
	select {
	case r := <-h.res:
		err, _ := r[1].(error)
		return r[0].(int), err
	case <-time.After(10 * time.Second):
		h.t.Fatal("Run did not return")
		return 0, nil
	}
}

func status(m map[string]any) string {
	r, _ := m["return"].(map[string]any)
	s, _ := r["status"].(string)
	return s
}

// TestNoShutdownResetQuit: -S builds the guest paused; cont resumes it; a guest
// power-off under -no-shutdown stops in "shutdown" (SHUTDOWN, STOP), cont is refused,
// system_reset builds a new guest in prelaunch (RESET), quit ends Run with 0.
func TestNoShutdownResetQuit(t *testing.T) {
	h := run(t, Config{StartPaused: true, NoShutdown: true})
	g := h.guest()
	time.Sleep(10 * time.Millisecond)
	if !g.isPaused() {
		t.Fatal("-S: the guest was not paused before Run")
	}
	if s := status(h.do(`{"execute":"query-status"}`)); s != "prelaunch" {
		t.Fatalf("status %s", s)
	}
	h.do(`{"execute":"cont"}`)
	h.wantEvents("RESUME")
	if g.isPaused() {
		t.Fatal("cont did not resume the guest")
	}
	h.do(`{"execute":"stop"}`)
	h.wantEvents("STOP")
	h.do(`{"execute":"cont"}`)
	h.wantEvents("RESUME")
	g.end <- PowerOff
	h.wantEvents(`SHUTDOWN{"guest":true,"reason":"guest-shutdown"}`, "STOP")
	if s := status(h.do(`{"execute":"query-status"}`)); s != "shutdown" {
		t.Fatalf("status after power-off: %s", s)
	}
	if r := h.do(`{"execute":"cont"}`); r["error"] == nil {
		t.Fatalf("cont in shutdown: %v", r)
	}
	h.do(`{"execute":"system_reset"}`)
	g2 := h.guest()
	h.wantEvents(`RESET{"guest":false,"reason":"host-qmp-system-reset"}`)
	if s := status(h.do(`{"execute":"query-status"}`)); s != "prelaunch" || !g2.isPaused() {
		t.Fatalf("after reset: status %s, paused %v", s, g2.isPaused())
	}
	h.c.Write([]byte(`{"execute":"quit"}`))
	if code, err := h.result(); code != 0 || err != nil {
		t.Fatalf("quit: %d %v", code, err)
	}
}

// TestRebootAndNoReboot: a guest reset rebuilds the guest (RESET from the guest);
// with -no-reboot it ends Run (RESET, then SHUTDOWN guest-reset); a failing guest
// ends it with status 1 and the error.
func TestRebootAndNoReboot(t *testing.T) {
	h := run(t, Config{})
	g := h.guest()
	g.end <- Reset
	g = h.guest()
	h.wantEvents(`RESET{"guest":true,"reason":"guest-reset"}`)
	if g.pauses != 0 {
		t.Error("a running guest was rebuilt paused")
	}
	h.do(`{"execute":"system_reset"}`)
	h.guest()
	h.wantEvents(`RESET{"guest":false,"reason":"host-qmp-system-reset"}`)
	if s := status(h.do(`{"execute":"query-status"}`)); s != "running" {
		t.Fatalf("status after system_reset of a running guest: %s", s)
	}
	h.loop.QuitHost("host-signal")
	h.wantEvents(`SHUTDOWN{"guest":false,"reason":"host-signal"}`)
	if code, err := h.result(); code != 0 || err != nil {
		t.Fatalf("quit: %d %v", code, err)
	}

	h = run(t, Config{NoReboot: true})
	h.guest().end <- Reset
	h.wantEvents(`RESET{"guest":true,"reason":"guest-reset"}`, `SHUTDOWN{"guest":true,"reason":"guest-reset"}`)
	if code, err := h.result(); code != 0 || err != nil {
		t.Fatalf("-no-reboot: %d %v", code, err)
	}

	h = run(t, Config{})
	h.guest().end <- Failed
	if code, err := h.result(); code != 1 || err == nil || err.Error() != "vCPU 0 failed" {
		t.Fatalf("failed guest: %d %v", code, err)
	}
}

// TestEndpoints parses QEMU's -qmp/-monitor specs and -mon/-chardev pairs.
func TestEndpoints(t *testing.T) {
	for _, c := range []struct {
		spec       string
		network    string
		addr       string
		server     bool
		wait, fail bool
	}{
		{spec: "unix:/tmp/q,server=on,wait=off", network: "unix", addr: "/tmp/q", server: true},
		{spec: "unix:/tmp/q,server,nowait", network: "unix", addr: "/tmp/q", server: true},
		{spec: "unix:/tmp/q,server=on", network: "unix", addr: "/tmp/q", server: true, wait: true},
		{spec: "tcp:127.0.0.1:4444,server=on,wait=off", network: "tcp", addr: "127.0.0.1:4444", server: true},
		{spec: "tcp::4444,server=on,wait=off", network: "tcp", addr: ":4444", server: true},
		{spec: "unix:/tmp/q", network: "unix", addr: "/tmp/q"},
		{spec: "tcp:nohostport,server=on", fail: true},
		{spec: "file:/tmp/x", fail: true},
		{spec: "unix:/tmp/q,bogus=1", fail: true},
		{spec: "unix:/tmp/q,server=maybe", fail: true},
	} {
		e, err := parseLegacy("qmp", c.spec, monitor.QMP)
		if c.fail {
			if err == nil {
				t.Errorf("%s: accepted", c.spec)
			}
			continue
		}
		if err != nil || e.network != c.network || e.addr != c.addr || e.server != c.server || e.wait != c.wait {
			t.Errorf("%s: %+v %v", c.spec, e, err)
		}
	}
}

// TestOpenMonitors opens a -qmp socket, a -chardev socket with -mon mode=control and a
// -mon mode=readline at once; each answers in its protocol, and stdio is refused while
// the serial console holds it.
func TestOpenMonitors(t *testing.T) {
	dir := t.TempDir()
	var c qemuopts.Common
	err := c.Parse([]string{"-qmp", "unix:" + dir + "/q1,server=on,wait=off",
		"-chardev", "socket,id=m0,path=" + dir + "/q2,server=on,wait=off", "-mon", "chardev=m0,mode=control",
		"-chardev", "socket,id=h0,path=" + dir + "/h,server=on,wait=off", "-mon", "chardev=h0,mode=readline",
		"-chardev", "null,id=other"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mons := TakeMonitorChardevs(&c)
	if len(mons) != 2 || len(c.Chardevs) != 1 {
		t.Fatalf("monitor chardevs %v, left %d", mons, len(c.Chardevs))
	}
	l := New(Config{Prog: "gemu-test", Stderr: io.Discard})
	defer l.srv.Close()
	if err := l.OpenMonitors(&c, mons, true); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"q1", "q2"} {
		conn, err := net.Dial("unix", dir+"/"+q)
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(conn)
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		g, _ := r.ReadString('\n')
		if !strings.Contains(g, `"QMP"`) {
			t.Errorf("%s greeting %q", q, g)
		}
		conn.Close()
	}
	conn, err := net.Dial("unix", dir+"/h")
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	g, _ := bufio.NewReader(conn).ReadString('\n')
	if !strings.HasPrefix(g, "QEMU 7.2.0 monitor") {
		t.Errorf("HMP banner %q", g)
	}
	conn.Close()
	if n := len(l.Chardevs()); n != 3 {
		t.Errorf("query-chardev lists %d monitors, want 3", n)
	}

	var s qemuopts.Common
	if err := s.Parse([]string{"-monitor", "stdio"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := New(Config{Stderr: io.Discard}).OpenMonitors(&s, nil, true); err == nil || !strings.Contains(err.Error(), "stdio") {
		t.Errorf("-monitor stdio with the serial on stdio: %v", err)
	}
	var m qemuopts.Common
	if err := m.Parse([]string{"-mon", "chardev=nope,mode=control"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := New(Config{Stderr: io.Discard}).OpenMonitors(&m, TakeMonitorChardevs(&m), false); err == nil || !strings.Contains(err.Error(), `chardev "nope" not found`) {
		t.Errorf("-mon naming no chardev: %v", err)
	}
}

// TestWaitInterrupted: a signal while a wait=on monitor waits for its first client
// ends the wait and Run returns 0, as QEMU exits.
func TestWaitInterrupted(t *testing.T) {
	dir := t.TempDir()
	var c qemuopts.Common
	if err := c.Parse([]string{"-qmp", "unix:" + dir + "/q,server=on"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	var l *Loop
	l = New(Config{Prog: "gemu-test", Stderr: io.Discard,
		New:       func() (Guest, error) { return newFake(), nil },
		BeforeRun: func() error { return l.OpenMonitors(&c, nil, false) }})
	res := make(chan int, 1)
	go func() { code, _ := l.Run(); res <- code }()
	time.Sleep(100 * time.Millisecond)
	l.QuitHost("host-signal")
	select {
	case code := <-res:
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a quit did not end the wait for the first monitor client")
	}
}

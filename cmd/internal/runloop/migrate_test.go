package runloop

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gemu/hw/vmstate"
	"gemu/machine/monitor"
)

// migGuest is a fake guest with a state: SaveVM writes it, LoadVM reads it back.
type migGuest struct {
	*fakeGuest
	mu    sync.Mutex
	state []byte
}

func (g *migGuest) SaveVM(w io.Writer) (vmstate.Stats, error) {
	if !g.isPaused() {
		return vmstate.Stats{}, errors.New("not paused")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	n, err := w.Write(g.state)
	return vmstate.Stats{Bytes: uint64(n), Pages: 1, ZeroPages: 3}, err
}

func (g *migGuest) LoadVM(r io.Reader) (vmstate.Stats, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return vmstate.Stats{}, err
	}
	if !bytes.HasPrefix(b, []byte("STATE")) {
		return vmstate.Stats{}, errors.New("not a gemu migration stream (bad magic)")
	}
	g.mu.Lock()
	g.state = b
	g.mu.Unlock()
	return vmstate.Stats{Bytes: uint64(len(b))}, nil
}

func (g *migGuest) RAMSize() uint64 { return 16 << 10 }

func (g *migGuest) get() string { g.mu.Lock(); defer g.mu.Unlock(); return string(g.state) }

func runMig(t *testing.T, cfg Config, state string) (*harness, chan *migGuest) {
	h := &harness{t: t, guests: make(chan *fakeGuest, 8), res: make(chan [2]any, 1)}
	mg := make(chan *migGuest, 8)
	var stderr bytes.Buffer
	cfg.Prog, cfg.Stderr = "gemu-test", &stderr
	cfg.New = func() (Guest, error) {
		g := &migGuest{fakeGuest: newFake(), state: []byte(state)}
		mg <- g
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
	return h, mg
}

func takeGuest(t *testing.T, c chan *migGuest) *migGuest {
	select {
	case g := <-c:
		return g
	case <-time.After(10 * time.Second):
		t.Fatal("no guest built")
		return nil
	}
}

// migrated polls query-migrate until the status is final and returns the reply.
func (h *harness) migrated() map[string]any {
	h.t.Helper()
	for range 500 {
		r, _ := h.do(`{"execute":"query-migrate"}`)["return"].(map[string]any)
		switch r["status"] {
		case "completed", "failed", "cancelled":
			return r
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Fatal("migration did not end")
	return nil
}

// TestMigrateURIs: migrate to exec:, file: and unix: writes the guest's state (the
// guest paused meanwhile, STOP; postmigrate after), MIGRATION events follow the
// events capability, query-migrate has QEMU's shape; a destination that cannot be
// opened fails the migration and the guest runs on (RESUME); a bad URI is refused.
func TestMigrateURIs(t *testing.T) {
	h, gs := runMig(t, Config{}, "STATE-42")
	g := takeGuest(t, gs)
	dir := t.TempDir()
	if r := h.do(`{"execute":"query-migrate"}`); len(r["return"].(map[string]any)) != 0 {
		t.Fatalf("query-migrate before any migration: %v", r)
	}
	h.do(`{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"events","state":true}]}}`)
	if r := h.do(`{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"xbzrle","state":true}]}}`); r["error"] == nil {
		t.Fatal("xbzrle accepted")
	}
	out := filepath.Join(dir, "exec.out")
	if r := h.do(`{"execute":"migrate","arguments":{"uri":"exec:cat > ` + out + `"}}`); r["error"] != nil {
		t.Fatal(r)
	}
	info := h.migrated()
	ram, _ := info["ram"].(map[string]any)
	if info["status"] != "completed" || ram == nil || ram["total"] != float64(16<<10) || ram["normal"] != float64(1) ||
		ram["duplicate"] != float64(3) || info["downtime"] == nil || info["total-time"] == nil {
		t.Fatalf("query-migrate: %v", info)
	}
	h.wantEvents(`MIGRATION{"status":"setup"}`, `MIGRATION{"status":"active"}`, "STOP", `MIGRATION{"status":"completed"}`)
	if b, _ := os.ReadFile(out); string(b) != "STATE-42" {
		t.Fatalf("exec: wrote %q", b)
	}
	if s := status(h.do(`{"execute":"query-status"}`)); s != "postmigrate" || !g.isPaused() {
		t.Fatalf("after migration: status %s, paused %v", s, g.isPaused())
	}
	if hm := h.do(`{"execute":"human-monitor-command","arguments":{"command-line":"info migrate"}}`); !strings.Contains(hm["return"].(string), "Migration status: completed") {
		t.Fatalf("info migrate: %v", hm)
	}
	h.do(`{"execute":"cont"}`)
	h.wantEvents("RESUME")

	file := filepath.Join(dir, "vm.state")
	h.do(`{"execute":"human-monitor-command","arguments":{"command-line":"migrate -d file:` + file + `"}}`)
	h.migrated()
	h.wantEvents(`MIGRATION{"status":"setup"}`, `MIGRATION{"status":"active"}`, "STOP", `MIGRATION{"status":"completed"}`)
	if b, _ := os.ReadFile(file); string(b) != "STATE-42" {
		t.Fatalf("file: wrote %q", b)
	}
	h.do(`{"execute":"cont"}`)
	h.wantEvents("RESUME")

	sock := filepath.Join(dir, "m.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(c)
		got <- string(b)
	}()
	h.do(`{"execute":"migrate","arguments":{"uri":"unix:` + sock + `"}}`)
	h.migrated()
	if s := <-got; s != "STATE-42" {
		t.Fatalf("unix: sent %q", s)
	}
	l.Close()
	h.wantEvents(`MIGRATION{"status":"setup"}`, `MIGRATION{"status":"active"}`, "STOP", `MIGRATION{"status":"completed"}`)
	h.do(`{"execute":"cont"}`)
	h.wantEvents("RESUME")

	// A destination that cannot be opened: failed, the guest keeps running.
	h.do(`{"execute":"migrate","arguments":{"uri":"file:` + filepath.Join(dir, "no", "such", "dir") + `"}}`)
	if info := h.migrated(); info["status"] != "failed" || !strings.Contains(info["error-desc"].(string), "no such file") {
		t.Fatalf("failed migration: %v", info)
	}
	h.wantEvents(`MIGRATION{"status":"setup"}`, `MIGRATION{"status":"failed"}`)
	if s := status(h.do(`{"execute":"query-status"}`)); s != "running" || g.isPaused() {
		t.Fatalf("after a failed migration: %s", s)
	}
	// An exec: destination that fails: the guest is resumed.
	h.do(`{"execute":"migrate","arguments":{"uri":"exec:cat >/dev/null; exit 3"}}`)
	if info := h.migrated(); info["status"] != "failed" {
		t.Fatalf("exec failing: %v", info)
	}
	h.wantEvents(`MIGRATION{"status":"setup"}`, `MIGRATION{"status":"active"}`, "STOP", `MIGRATION{"status":"failed"}`, "RESUME")
	for _, uri := range []string{"foo:bar", "file:", "tcp:nohostport", "rdma:1.2.3.4:5"} {
		if r := h.do(`{"execute":"migrate","arguments":{"uri":"` + uri + `"}}`); r["error"] == nil {
			t.Fatalf("migrate %s accepted", uri)
		}
	}
	if r := h.do(`{"execute":"migrate-incoming","arguments":{"uri":"tcp:127.0.0.1:0"}}`); r["error"] == nil ||
		!strings.Contains(r["error"].(map[string]any)["desc"].(string), "'-incoming' was not specified") {
		t.Fatalf("migrate-incoming without -incoming: %v", r)
	}
	h.do(`{"execute":"quit"}`)
	h.result()
}

// TestIncoming: -incoming exec: loads the state before the guest runs (inmigrate,
// then running); -incoming defer waits for migrate-incoming (a second one is refused);
// a stream the guest refuses ends the process with one line and status 1.
func TestIncoming(t *testing.T) {
	h, gs := runMig(t, Config{Incoming: "exec:printf STATE-7"}, "")
	g := takeGuest(t, gs)
	for range 500 {
		if status(h.do(`{"execute":"query-status"}`)) == "running" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if g.get() != "STATE-7" || g.isPaused() {
		t.Fatalf("incoming: state %q, paused %v", g.get(), g.isPaused())
	}
	h.do(`{"execute":"quit"}`)
	h.result()

	h, gs = runMig(t, Config{Incoming: "defer"}, "")
	g = takeGuest(t, gs)
	if s := status(h.do(`{"execute":"query-status"}`)); s != "inmigrate" {
		t.Fatalf("-incoming defer: status %s", s)
	}
	file := filepath.Join(t.TempDir(), "s")
	os.WriteFile(file, []byte("STATE-9"), 0o644)
	if r := h.do(`{"execute":"migrate-incoming","arguments":{"uri":"file:` + file + `"}}`); r["error"] != nil {
		t.Fatal(r)
	}
	if r := h.do(`{"execute":"migrate-incoming","arguments":{"uri":"file:` + file + `"}}`); r["error"] == nil {
		t.Fatal("second migrate-incoming accepted")
	}
	for range 500 {
		if status(h.do(`{"execute":"query-status"}`)) == "running" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if g.get() != "STATE-9" {
		t.Fatalf("migrate-incoming loaded %q", g.get())
	}
	h.do(`{"execute":"quit"}`)
	h.result()

	h, _ = runMig(t, Config{Incoming: "exec:echo garbage"}, "")
	code, err := h.result()
	if code != 1 || err == nil || !strings.Contains(err.Error(), "load of migration failed: not a gemu migration stream") {
		t.Fatalf("bad incoming stream: %d %v", code, err)
	}
}

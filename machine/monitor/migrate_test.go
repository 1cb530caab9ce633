package monitor

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// migFake is the fake machine with a Migrator reporting a live migration in progress.
type migFake struct {
	*fake
	info MigrationInfo
}

func (m *migFake) Migrate(string) error         { return nil }
func (m *migFake) MigrateCancel() error         { return nil }
func (m *migFake) MigrateIncoming(string) error { return nil }
func (m *migFake) MigrationInfo() MigrationInfo { return m.info }

// TestLiveMigrationQMP: auto-converge can be set (other capabilities gemu lacks still
// cannot) and reaches MigrationParams with the parameters; query-migrate reports a live
// migration's ram stats in QEMU 7.2's keys; MIGRATION_PASS goes out with the events
// capability.
func TestLiveMigrationQMP(t *testing.T) {
	f := &migFake{fake: &fake{status: Running}, info: MigrationInfo{Status: MigActive, Live: true, RAMTotal: 256 << 20,
		Sent: 80 << 20, Normal: 20000, Duplicate: 40000, Syncs: 3, Remaining: 8 << 20, DirtyRate: 1500, Bandwidth: 64 << 20,
		ExpectedDowntime: 125 * time.Millisecond, Throttle: 30, Total: 2 * time.Second}}
	s := NewServer(f, Options{})
	f.srv = s
	t.Cleanup(s.Close)
	a, b := net.Pipe()
	go s.Handle(b, b, b, QMP)
	c := &client{t: t, c: a, r: bufio.NewReader(a)}
	c.read()
	c.do(`{"execute":"qmp_capabilities"}`)
	if r := c.do(`{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"auto-converge","state":true},{"capability":"events","state":true}]}}`); r["error"] != nil {
		t.Fatalf("auto-converge: %v", r)
	}
	if r := c.do(`{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"xbzrle","state":true}]}}`); r["error"] == nil {
		t.Fatal("xbzrle accepted")
	}
	c.do(`{"execute":"migrate-set-parameters","arguments":{"downtime-limit":50,"max-bandwidth":1048576,"cpu-throttle-initial":40}}`)
	p := s.MigrationParams()
	if !p.AutoConverge || p.DowntimeLimit != 50*time.Millisecond || p.MaxBandwidth != 1<<20 || p.ThrottleInitial != 40 || p.MaxThrottle != 99 {
		t.Fatalf("MigrationParams %+v", p)
	}
	caps := c.do(`{"execute":"query-migrate-capabilities"}`)["return"].([]any)
	on := map[string]bool{}
	for _, x := range caps {
		m := x.(map[string]any)
		on[m["capability"].(string)] = m["state"].(bool)
	}
	if !on["auto-converge"] || !on["events"] || on["xbzrle"] {
		t.Fatalf("query-migrate-capabilities: %v", caps)
	}
	r := c.do(`{"execute":"query-migrate"}`)["return"].(map[string]any)
	ram := r["ram"].(map[string]any)
	for k, want := range map[string]float64{"remaining": 8 << 20, "dirty-pages-rate": 1500, "dirty-sync-count": 3,
		"transferred": 80 << 20, "total": 256 << 20, "mbps": float64(64<<20) * 8 / 1e6} {
		if ram[k] != want {
			t.Errorf("ram.%s = %v, want %v", k, ram[k], want)
		}
	}
	if r["expected-downtime"] != float64(125) || r["cpu-throttle-percentage"] != float64(30) || r["status"] != "active" {
		t.Errorf("query-migrate %v", r)
	}
	s.EmitMigrationPass(4)
	ev := c.read()
	if ev["event"] != "MIGRATION_PASS" || ev["data"].(map[string]any)["pass"] != float64(4) {
		t.Fatalf("event %v", ev)
	}
}

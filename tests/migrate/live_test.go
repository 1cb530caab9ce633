package migrate

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/raw"

	"gemu/tests/assets"
	"gemu/tests/assets/initramfs"
)

// Live migration while the guest writes memory: tests/migrate/memwriter runs in the
// guest, rewriting 64 MiB page after page and checking before each rewrite that the
// page holds what it last wrote. A page the dirty log missed (a vCPU store that
// bypassed it, a pass that sent a stale copy) fails that check on the destination.

// memwriterInitrd builds the test initramfs with memwriter (cross-compiled for
// linux/arm64) as /bin/memwriter.
func memwriterInitrd(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "memwriter")
	cmd := exec.Command("go", "build", "-o", bin, "./memwriter")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building memwriter for arm64: %v\n%s", err, out)
	}
	im := initramfs.New()
	im.AddBusybox(filepath.Join(assets.Dir("arm64"), "busybox"))
	im.AddFile("bin/memwriter", bin, 0o755)
	p := filepath.Join(dir, "initrd-memw.gz")
	if err := im.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitLine waits for a console line containing s after line from, and returns its
// index; a MEMW BAD line fails the test at once.
func (g *guest) waitLine(t *testing.T, from int, s string, d time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		g.mu.Lock()
		for i := from; i < len(g.lines); i++ {
			if strings.Contains(g.lines[i], "MEMW BAD") {
				g.mu.Unlock()
				t.Fatalf("the guest found memory it wrote changed: %s\nconsole:\n%s", g.lines[i], g.console())
			}
			if strings.Contains(g.lines[i], s) {
				g.mu.Unlock()
				return i
			}
		}
		g.mu.Unlock()
		select {
		case err := <-g.exited:
			g.exited <- err
			t.Fatalf("the guest exited (%v) before printing %q; console:\n%s", err, s, g.console())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no %q within %v; console:\n%s", s, d, g.console())
	return 0
}

func (g *guest) nlines() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.lines)
}

// round parses the MEMW ROUND line i.
func (g *guest) round(t *testing.T, i int) int {
	t.Helper()
	n, ok := lineRound(g, i)
	if !ok {
		t.Fatalf("console line %d is not a MEMW ROUND line:\n%s", i, g.console())
	}
	return n
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// hmp runs an HMP command through human-monitor-command.
func hmp(t *testing.T, mon *qmp.SocketMonitor, cmd string) string {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"execute": "human-monitor-command", "arguments": map[string]string{"command-line": cmd}})
	out, err := mon.Run(b)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	var r struct{ Return string }
	json.Unmarshal(out, &r)
	return r.Return
}

func setParams(t *testing.T, mon *qmp.SocketMonitor, params map[string]any, caps ...string) {
	t.Helper()
	var cs []map[string]any
	for _, c := range append([]string{"events"}, caps...) {
		cs = append(cs, map[string]any{"capability": c, "state": true})
	}
	for _, cmd := range []map[string]any{
		{"execute": "migrate-set-capabilities", "arguments": map[string]any{"capabilities": cs}},
		{"execute": "migrate-set-parameters", "arguments": params},
	} {
		b, _ := json.Marshal(cmd)
		if out, err := mon.Run(b); err != nil {
			t.Fatalf("%s: %v (%s)", b, err, out)
		}
	}
}

// passEvents counts MIGRATION_PASS events until the returned function is called.
func passEvents(t *testing.T, mon *qmp.SocketMonitor) func() []int {
	ctx, cancel := context.WithCancel(context.Background())
	evs, err := mon.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan []int)
	go func() {
		var passes []int
		for {
			select {
			case ev := <-evs: // go-qemu does not close the channel when ctx ends
				if ev.Event == "MIGRATION_PASS" {
					if p, ok := ev.Data["pass"].(float64); ok {
						passes = append(passes, int(p))
					}
				}
			case <-ctx.Done():
				done <- passes
				return
			}
		}
	}()
	return func() []int { cancel(); return <-done }
}

// TestLiveMigrateTCP: the guest writes 64 MiB continuously while it migrates over
// loopback TCP between two gemu processes; after the switch it goes on on the
// destination with every page it checks intact, and the source is stopped. The
// source's query-migrate reports more than one dirty-log pass.
func TestLiveMigrateTCP(t *testing.T) {
	needAssets(t)
	dir := t.TempDir()
	initrd := memwriterInitrd(t, dir)
	addr := freeAddr(t)
	dst := startInitrd(t, binary(t), dir, "dst", "256", initrd, "", "-incoming", "defer")
	dr, _ := dial(t, dst)
	if err := dr.MigrateIncoming("tcp:" + addr); err != nil {
		t.Fatalf("migrate-incoming: %v", err)
	}
	// 40 ms after each MiB bounds the guest's dirty rate to 25 MiB/s, well under the
	// 64 MiB/s link below however fast the host runs the guest (with 2 ms a quiet host's
	// guest dirtied at the link's rate and the migration rightly did not converge).
	src := startInitrd(t, binary(t), dir, "src", "256", initrd, "memwriter -mib 64 -pause 40ms\n")
	r, mon := dial(t, src)
	i := src.waitLine(t, 0, "MEMW READY", 5*time.Minute)
	i = src.waitLine(t, i+1, "MEMW ROUND 1 ", time.Minute)
	setParams(t, mon, map[string]any{"downtime-limit": 100, "max-bandwidth": 64 << 20})
	passes := passEvents(t, mon)
	if err := r.Migrate("tcp:"+addr, nil, nil, nil); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	info := waitMigration(t, r)
	evs := passes()
	if *info.Status != raw.MigrationStatusCompleted {
		t.Fatalf("live migration: %s (%s)", *info.Status, deref(info.ErrorDesc))
	}
	last := src.round(t, src.waitLine(t, i, "MEMW ROUND", time.Second))
	for j := src.nlines() - 1; j > i; j-- { // the source's last round
		if n, ok := lineRound(src, j); ok {
			last = n
			break
		}
	}
	if info.RAM == nil || info.RAM.DirtySyncCount < 2 || len(evs) < 2 {
		t.Fatalf("query-migrate after the migration: ram %+v, MIGRATION_PASS events %v: want more than one pass", info.RAM, evs)
	}
	t.Logf("live migration: %d passes (events %v), %d MiB sent for 64 MiB of guest writes, total %d ms, downtime %d ms, source at round %d",
		info.RAM.DirtySyncCount, evs, info.RAM.Transferred>>20, *info.TotalTime, *info.Downtime, last)
	if st, err := r.QueryStatus(); err != nil || st.Status != raw.RunStatePostmigrate {
		t.Fatalf("source status: %+v %v", st, err)
	}
	// The destination runs on: two more rounds, each page checked against what the
	// source wrote last, and a round number that goes on from the source's.
	k := dst.waitLine(t, 0, "MEMW ROUND", 2*time.Minute)
	if n := dst.round(t, k); n != last+1 && n != last {
		t.Fatalf("the destination's first round is %d, the source's last %d", n, last)
	}
	k = dst.waitLine(t, k+1, "MEMW ROUND", 2*time.Minute)
	dst.waitLine(t, k+1, "MEMW ROUND", 2*time.Minute)
	if strings.Contains(dst.console(), "Booting Linux") {
		t.Fatal("the destination booted")
	}
}

func lineRound(g *guest, i int) (int, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var n int
	var sum string
	_, err := fmt.Sscanf(g.lines[i], "MEMW ROUND %d SUM %s", &n, &sum)
	return n, err == nil
}

// TestLiveMigrateConverge: a guest dirtying memory faster than the link (max-bandwidth
// 8 MiB/s, memwriter at full speed) makes a live migration without auto-converge fail
// with one line saying so; migrate_cancel in the middle of a pass cancels; the source
// keeps running through both, its memory intact. With auto-converge the vCPUs are
// throttled (query-migrate's cpu-throttle-percentage) and the migration completes.
func TestLiveMigrateConverge(t *testing.T) {
	needAssets(t)
	dir := t.TempDir()
	initrd := memwriterInitrd(t, dir)
	src := startInitrd(t, binary(t), dir, "src", "256", initrd, "memwriter -mib 16\n")
	r, mon := dial(t, src)
	src.waitLine(t, 0, "MEMW READY", 5*time.Minute)
	setParams(t, mon, map[string]any{"downtime-limit": 20, "max-bandwidth": 8 << 20})
	running := func(what string) {
		t.Helper()
		if st, err := r.QueryStatus(); err != nil || st.Status != raw.RunStateRunning {
			t.Fatalf("source status after %s: %+v %v", what, st, err)
		}
		n := src.nlines()
		k := src.waitLine(t, n, "MEMW ROUND", 2*time.Minute) // checks every page again
		src.waitLine(t, k+1, "MEMW ROUND", 2*time.Minute)
	}

	if err := r.Migrate("exec:cat > /dev/null", nil, nil, nil); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	info := waitMigration(t, r)
	if *info.Status != raw.MigrationStatusFailed || !strings.Contains(deref(info.ErrorDesc), "does not converge") {
		t.Fatalf("migration of a guest dirtying faster than the link: %s (%q)", *info.Status, deref(info.ErrorDesc))
	}
	t.Logf("without auto-converge: %s", deref(info.ErrorDesc))
	running("the failed migration")

	if err := r.Migrate("exec:cat > /dev/null", nil, nil, nil); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		info, err := r.QueryMigrate()
		if err != nil {
			t.Fatal(err)
		}
		if *info.Status == raw.MigrationStatusActive && info.RAM != nil && info.RAM.Transferred > 8<<20 {
			break
		}
		if time.Now().After(deadline) || *info.Status != raw.MigrationStatusActive && *info.Status != raw.MigrationStatusSetup {
			t.Fatalf("migration before the cancel: %+v", info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := r.MigrateCancel(); err != nil {
		t.Fatalf("migrate_cancel: %v", err)
	}
	if info := waitMigration(t, r); *info.Status != raw.MigrationStatusCancelled {
		t.Fatalf("after migrate_cancel: %s", *info.Status)
	}
	running("migrate_cancel")

	setParams(t, mon, map[string]any{"cpu-throttle-initial": 50, "cpu-throttle-increment": 20}, "auto-converge")
	if err := r.Migrate("exec:cat > /dev/null", nil, nil, nil); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	throttle := int64(0)
	deadline = time.Now().Add(3 * time.Minute)
	for {
		info, err := r.QueryMigrate()
		if err != nil {
			t.Fatal(err)
		}
		if info.CPUThrottlePercentage != nil {
			throttle = max(throttle, *info.CPUThrottlePercentage)
		}
		if *info.Status == raw.MigrationStatusCompleted {
			t.Logf("with auto-converge: completed after %d passes, throttled up to %d%%, downtime %d ms",
				info.RAM.DirtySyncCount, throttle, *info.Downtime)
			break
		}
		if *info.Status != raw.MigrationStatusActive && *info.Status != raw.MigrationStatusSetup || time.Now().After(deadline) {
			t.Fatalf("migration with auto-converge: %s (%s)", *info.Status, deref(info.ErrorDesc))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if throttle == 0 {
		t.Fatal("auto-converge never throttled the guest")
	}
}

// Package migrate holds the whole-system snapshot and migration tests: Debian's arm64
// kernel with the test initramfs runs a counter on gemu-system-aarch64 under TCG; a
// real QMP client (digitalocean/go-qemu's raw client) saves it, a new process restores
// it with -incoming, and the counter must go on from where it stopped (no reboot, no
// restart from 0). It drives the built binary as a user does.
package migrate

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/raw"

	"gemu/tests/assets"
	"gemu/tests/testbin"
)

func binary(t *testing.T) string {
	t.Helper()
	return testbin.Command(t, "gemu-system-aarch64")
}

func needAssets(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a Linux guest: skipped under -short")
	}
	if why := assets.Missing("arm64"); why != "" {
		t.Skip(why)
	}
}

// counterScript prints TICK n every 0.2 s, counting in a shell variable (in guest
// RAM and registers only: a guest restarted from 0 or rebooted prints TICK 0 again).
const counterScript = "i=0\nwhile [ $i -lt 100000 ]; do echo TICK $i; i=$((i+1)); sleep 0.2; done\n"

// guest is one gemu process.
type guest struct {
	cmd    *exec.Cmd
	sock   string
	mu     sync.Mutex
	lines  []string
	ticks  chan int
	last   int // the last TICK printed, -1 before the first
	exited chan error
	stderr strings.Builder
}

func startGuest(t *testing.T, dir, name string, mem string, extra ...string) *guest {
	t.Helper()
	return startBin(t, binary(t), dir, name, mem, extra...)
}

// startBin is startGuest with another emulator binary (the QEMU oracle of the benchmark).
func startBin(t *testing.T, bin, dir, name string, mem string, extra ...string) *guest {
	t.Helper()
	return startScript(t, bin, dir, name, mem, counterScript, extra...)
}

// startScript is startBin with the guest running script instead of the counter.
func startScript(t *testing.T, bin, dir, name string, mem string, script string, extra ...string) *guest {
	t.Helper()
	return startInitrd(t, bin, dir, name, mem, assets.Initrd("arm64"), script, extra...)
}

// startInitrd is startScript with another initramfs.
func startInitrd(t *testing.T, bin, dir, name, mem, initrd, script string, extra ...string) *guest {
	t.Helper()
	sock := filepath.Join(dir, name+".qmp")
	return launch(t, bin, sock, append([]string{"-M", "virt", "-cpu", "cortex-a57", "-m", mem, "-nographic",
		"-kernel", assets.Kernel("arm64"), "-initrd", initrd,
		"-append", "console=ttyAMA0 " + assets.CmdArg(script),
		"-qmp", "unix:" + sock + ",server=on,wait=off"}, extra...))
}

// launch starts bin with args (which give sock as a QMP server) and collects the
// console's lines and TICKs; the process is killed at the end of the test.
func launch(t *testing.T, bin, sock string, args []string) *guest {
	t.Helper()
	g := &guest{sock: sock, ticks: make(chan int, 100000), last: -1, exited: make(chan error, 1)}
	g.cmd = exec.Command(bin, args...)
	out, err := g.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	g.cmd.Stderr = &lockedWriter{g: g}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		<-g.exited
	})
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			l := strings.TrimRight(s.Text(), "\r")
			g.mu.Lock()
			g.lines = append(g.lines, l)
			g.mu.Unlock()
			var n int
			if _, err := fmt.Sscanf(l, "TICK %d", &n); err == nil {
				g.mu.Lock()
				g.last = n
				g.mu.Unlock()
				g.ticks <- n
			}
		}
		io.Copy(io.Discard, out)
		g.exited <- g.cmd.Wait()
	}()
	return g
}

type lockedWriter struct{ g *guest }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.g.mu.Lock()
	defer w.g.mu.Unlock()
	return w.g.stderr.Write(p)
}

func (g *guest) console() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return strings.Join(g.lines, "\n") + "\n--- stderr:\n" + g.stderr.String()
}

func (g *guest) errText() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stderr.String()
}

// tick waits for the next TICK the guest prints.
func (g *guest) tick(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case n := <-g.ticks:
		return n
	case <-time.After(d):
		t.Fatalf("no TICK within %v; console:\n%s", d, g.console())
	}
	return 0
}

// drain empties the TICK queue and returns the last TICK printed.
func (g *guest) drain() int {
	for {
		select {
		case <-g.ticks:
		default:
			g.mu.Lock()
			defer g.mu.Unlock()
			return g.last
		}
	}
}

func dial(t *testing.T, g *guest) (*raw.Monitor, *qmp.SocketMonitor) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mon, err := qmp.NewSocketMonitor("unix", g.sock, 5*time.Second)
		if err == nil {
			if err := mon.Connect(); err != nil {
				t.Fatalf("QMP handshake: %v", err)
			}
			t.Cleanup(func() { mon.Disconnect() })
			return raw.NewMonitor(mon), mon
		}
		if time.Now().After(deadline) {
			t.Fatalf("QMP socket %s: %v\n%s", g.sock, err, g.console())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitMigration polls query-migrate until the migration ends.
func waitMigration(t *testing.T, r *raw.Monitor) raw.MigrationInfo {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var last raw.MigrationInfo
	for time.Now().Before(deadline) {
		info, err := r.QueryMigrate()
		last = info
		if err != nil {
			t.Fatalf("query-migrate: %v", err)
		}
		if info.Status != nil && (*info.Status == raw.MigrationStatusCompleted || *info.Status == raw.MigrationStatusFailed ||
			*info.Status == raw.MigrationStatusCancelled) {
			return info
		}
		time.Sleep(50 * time.Millisecond)
	}
	ram := any(nil)
	if last.RAM != nil {
		ram = *last.RAM
	}
	t.Fatalf("migration did not finish within 2 minutes: %+v, ram %+v", last, ram)
	return raw.MigrationInfo{}
}

// runToTick boots a source guest and waits until it has printed TICK 5.
func runToTick(t *testing.T, dir string) (*guest, *raw.Monitor) {
	src := startGuest(t, dir, "src", "256")
	r, _ := dial(t, src)
	for src.tick(t, 3*time.Minute) < 5 {
	}
	return src, r
}

// checkContinues: the restored guest's first TICK follows the last one the source
// printed (no TICK 0: no reboot), and it keeps counting.
func checkContinues(t *testing.T, dst *guest, last int) {
	t.Helper()
	first := dst.tick(t, time.Minute)
	if first != last+1 && first != last {
		t.Fatalf("restored guest printed TICK %d first, the source's last was %d; console:\n%s", first, last, dst.console())
	}
	if next := dst.tick(t, 30*time.Second); next != first+1 {
		t.Fatalf("restored guest printed TICK %d after %d", next, first)
	}
	if strings.Contains(dst.console(), "Booting Linux") {
		t.Fatalf("the restored guest booted again:\n%s", dst.console())
	}
}

// TestSaveRestoreFile: migrate to file: via QMP (the source ends in postmigrate),
// kill the source, restore in a new process with -incoming file:, the counter goes on.
// A restore into other -m is refused with the line naming the difference.
func TestSaveRestoreFile(t *testing.T) {
	needAssets(t)
	dir := t.TempDir()
	src, r := runToTick(t, dir)
	state := filepath.Join(dir, "vm.state")
	if err := r.MigrateSetCapabilities([]raw.MigrationCapabilityStatus{{Capability: raw.MigrationCapabilityEvents, State: true}}); err != nil {
		t.Fatalf("migrate-set-capabilities: %v", err)
	}
	if err := r.Migrate("file:"+state, nil, nil, nil); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	info := waitMigration(t, r)
	if *info.Status != raw.MigrationStatusCompleted || info.RAM == nil || info.RAM.Total != 256<<20 || info.RAM.Normal == 0 ||
		info.RAM.Duplicate == 0 || info.TotalTime == nil || info.Downtime == nil {
		t.Fatalf("query-migrate after save: %+v (ram %+v)", info, info.RAM)
	}
	if st, err := r.QueryStatus(); err != nil || st.Status != raw.RunStatePostmigrate || st.Running {
		t.Fatalf("source status after migration: %+v %v", st, err)
	}
	time.Sleep(300 * time.Millisecond)
	last := src.drain()
	fi, err := os.Stat(state)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("saved at TICK %d: %d bytes for a 256 MiB guest (%d pages, %d zero pages)", last, fi.Size(), info.RAM.Normal, info.RAM.Duplicate)
	if fi.Size() >= 256<<20 {
		t.Fatalf("stream of %d bytes: zero pages were sent", fi.Size())
	}
	src.cmd.Process.Kill()
	<-src.exited
	src.exited <- nil

	// Other -m: refused in one line naming the difference, exit status 1.
	bad := startGuest(t, dir, "bad", "512", "-incoming", "file:"+state)
	select {
	case err := <-bad.exited:
		bad.exited <- err
		msg := bad.errText()
		if err == nil || !strings.Contains(msg, "ram=256M, this one ram=512M") || strings.Count(strings.TrimSpace(msg), "\n") != 0 {
			t.Fatalf("restore into -m 512: exit %v, stderr %q", err, msg)
		}
	case <-time.After(time.Minute):
		t.Fatal("restore into -m 512 did not exit")
	}

	dst := startGuest(t, dir, "dst", "256", "-incoming", "file:"+state)
	checkContinues(t, dst, last)
}

// TestMigrateTCP: the same between two live processes over loopback TCP, the
// destination started with -incoming defer and migrate-incoming.
func TestMigrateTCP(t *testing.T) {
	needAssets(t)
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dst := startGuest(t, dir, "dst", "256", "-incoming", "defer")
	dr, _ := dial(t, dst)
	if st, err := dr.QueryStatus(); err != nil || st.Status != raw.RunStateInmigrate {
		t.Fatalf("destination status: %+v %v", st, err)
	}
	if err := dr.MigrateIncoming("tcp:" + addr); err != nil {
		t.Fatalf("migrate-incoming: %v", err)
	}
	src, r := runToTick(t, dir)
	if err := r.Migrate("tcp:"+addr, nil, nil, nil); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	info := waitMigration(t, r)
	if *info.Status != raw.MigrationStatusCompleted {
		t.Fatalf("migration over tcp: %+v (error %v)", info, deref(info.ErrorDesc))
	}
	time.Sleep(300 * time.Millisecond)
	last := src.drain()
	time.Sleep(time.Second)
	if n := src.drain(); n != last {
		t.Fatalf("the source printed TICK %d after the migration completed at %d", n, last)
	}
	checkContinues(t, dst, last)
	if st, err := dr.QueryStatus(); err != nil || st.Status != raw.RunStateRunning {
		t.Fatalf("destination status after the migration: %+v %v", st, err)
	}
	t.Logf("migrated at TICK %d: %d bytes, total %d ms, downtime %d ms", last, info.RAM.Transferred, *info.TotalTime, *info.Downtime)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Package qmp holds the whole-system tests of gemu's monitors: a real QMP client
// (digitalocean/go-qemu) drives gemu-system-aarch64 running Debian's arm64 kernel, and
// the same QMP script runs against qemu-system-aarch64 and gemu to compare the replies'
// shapes. It drives the built binary, as a user does; it must not reach into the
// board's or the monitor's packages.
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/raw"

	"gemu/accel/kvm"
	"gemu/tests/assets"
	"gemu/tests/testbin"
)

func binary(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("GEMU_BIN"); d != "" {
		if p := filepath.Join(d, "gemu-system-aarch64"); fileExists(p) {
			return p
		}
	}
	return testbin.MustBuild(t, "gemu/cmd/gemu-system-aarch64")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func needAssets(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a Linux guest: skipped under -short")
	}
	if why := assets.Missing("arm64"); why != "" {
		t.Skip(why)
	}
}

// console collects the guest's serial output with arrival times.
type console struct {
	mu    sync.Mutex
	lines []line
	all   strings.Builder
	ch    chan string
}

type line struct {
	at   time.Time
	text string
}

func newConsole(r io.Reader) *console {
	c := &console{ch: make(chan string, 4096)}
	go func() {
		s := bufio.NewScanner(r)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for s.Scan() {
			l := strings.TrimRight(s.Text(), "\r")
			c.mu.Lock()
			c.lines = append(c.lines, line{time.Now(), l})
			c.all.WriteString(l + "\n")
			c.mu.Unlock()
			select {
			case c.ch <- l:
			default:
			}
		}
		close(c.ch)
	}()
	return c
}

func (c *console) String() string { c.mu.Lock(); defer c.mu.Unlock(); return c.all.String() }

// waitFor returns the first line containing want within d.
func (c *console) waitFor(want string, d time.Duration) (string, bool) {
	timeout := time.After(d)
	for {
		select {
		case l, ok := <-c.ch:
			if !ok {
				return "", false
			}
			if strings.Contains(l, want) {
				return l, true
			}
		case <-timeout:
			return "", false
		}
	}
}

// since returns the lines that arrived after t.
func (c *console) since(t time.Time) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, l := range c.lines {
		if l.at.After(t) {
			out = append(out, l.text)
		}
	}
	return out
}

func dialQMP(t *testing.T, sock string) *qmp.SocketMonitor {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mon, err := qmp.NewSocketMonitor("unix", sock, 5*time.Second)
		if err == nil {
			if err := mon.Connect(); err != nil {
				t.Fatalf("QMP handshake: %v", err)
			}
			return mon
		}
		if time.Now().After(deadline) {
			t.Fatalf("QMP socket %s: %v", sock, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// events collects a monitor's events.
type events struct{ ch chan qmp.Event }

func collect(t *testing.T, mon *qmp.SocketMonitor) *events {
	in, err := mon.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e := &events{ch: make(chan qmp.Event, 64)}
	go func() {
		for ev := range in {
			t.Logf("event %s %v at %d.%06d", ev.Event, ev.Data, ev.Timestamp.Seconds, ev.Timestamp.Microseconds)
			e.ch <- ev
		}
		close(e.ch)
	}()
	return e
}

func (e *events) want(t *testing.T, name string, d time.Duration) qmp.Event {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case ev, ok := <-e.ch:
			if !ok {
				t.Fatalf("event stream ended waiting for %s", name)
			}
			if ev.Event == name {
				return ev
			}
			t.Logf("event %s (waiting for %s)", ev.Event, name)
		case <-timeout:
			t.Fatalf("no %s event within %v", name, d)
		}
	}
}

// TestQMPDrivesGuest drives a booting arm64 guest through go-qemu's generated client:
// start paused (-S), cont, stop (the guest's console really stops: its 0.2 s counter
// prints nothing while stopped and continues with the next value after cont), HMP
// passthrough, query-block of a -drive, guest power-off under -no-shutdown (SHUTDOWN
// then STOP, cont refused), system_reset (RESET, the guest boots again), quit.
func TestQMPDrivesGuest(t *testing.T) {
	needAssets(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "qmp.sock")
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	script := "i=0\nwhile [ $i -lt 30 ]; do echo TICK $i; i=$((i+1)); sleep 0.2; done\n"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), "-M", "virt", "-cpu", "cortex-a57", "-m", "256", "-nographic",
		"-kernel", assets.Kernel("arm64"), "-initrd", assets.Initrd("arm64"),
		"-append", "console=ttyAMA0 "+assets.CmdArg(script),
		"-S", "-no-shutdown", "-qmp", "unix:"+sock+",server=on,wait=off",
		"-name", "guest=qmptest", "-uuid", "6d3c4e1a-27f0-4f0c-9d1e-0a1b2c3d4e5f",
		"-drive", "file="+disk+",format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = nil
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	con := newConsole(out)
	mon := dialQMP(t, sock)
	defer mon.Disconnect()
	ev := collect(t, mon)
	r := raw.NewMonitor(mon)

	st, err := r.QueryStatus()
	if err != nil || st.Status != raw.RunStatePrelaunch || st.Running {
		t.Fatalf("query-status under -S: %+v %v", st, err)
	}
	time.Sleep(500 * time.Millisecond)
	if s := con.String(); s != "" {
		t.Fatalf("the guest printed while stopped by -S:\n%s", s)
	}
	blk, err := r.QueryBlock()
	if err != nil || len(blk) != 1 || blk[0].Device != "d0" || blk[0].Inserted == nil || blk[0].Inserted.File != disk ||
		blk[0].Inserted.Drv != "raw" || blk[0].Inserted.Ro || blk[0].Qdev == nil {
		t.Fatalf("query-block: %+v %v", blk, err)
	}
	if name, err := r.QueryName(); err != nil || name.Name == nil || *name.Name != "qmptest" {
		t.Errorf("query-name: %+v %v", name, err)
	}
	if u, err := r.QueryUUID(); err != nil || u.UUID != "6d3c4e1a-27f0-4f0c-9d1e-0a1b2c3d4e5f" {
		t.Errorf("query-uuid: %+v %v", u, err)
	}

	// Before the guest runs, the arm64 Image sits 2 MiB into RAM (QEMU's placement for
	// a text_offset of 0): its header's magic "ARM\x64" is at offset 0x38.
	if x, err := r.HumanMonitorCommand("xp /1xw 0x40200038", nil); err != nil || x != "0000000040200038: 0x644d5241\r\n" {
		t.Errorf("HMP xp of the kernel header: %q %v", x, err)
	}
	if err := r.Cont(); err != nil {
		t.Fatalf("cont: %v", err)
	}
	ev.want(t, "RESUME", 5*time.Second)
	if _, ok := con.waitFor("TICK 3", 2*time.Minute); !ok {
		t.Fatalf("no TICK 3 after cont; console:\n%s", con)
	}
	if err := r.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	stopped := time.Now()
	ev.want(t, "STOP", 5*time.Second)
	if st, _ := r.QueryStatus(); st.Status != raw.RunStatePaused {
		t.Errorf("status after stop: %v", st.Status)
	}
	// Lines the guest wrote before stop may still be in the pipe: give them 300 ms.
	time.Sleep(300 * time.Millisecond)
	quiet := time.Now()
	last := -1
	for _, l := range con.since(time.Time{}) {
		var n int
		if _, err := fmt.Sscanf(l, "TICK %d", &n); err == nil {
			last = n
		}
	}
	time.Sleep(1500 * time.Millisecond)
	if late := con.since(quiet); len(late) > 0 {
		t.Fatalf("the guest printed %q while stopped (stop returned %v before)", late, time.Since(stopped))
	}
	hmp, err := r.HumanMonitorCommand("info status", nil)
	if err != nil || hmp != "VM status: paused\r\n" {
		t.Errorf("HMP info status: %q %v", hmp, err)
	}
	if err := r.Cont(); err != nil {
		t.Fatal(err)
	}
	ev.want(t, "RESUME", 5*time.Second)
	if _, ok := con.waitFor(fmt.Sprintf("TICK %d", last+1), 30*time.Second); !ok {
		t.Fatalf("no TICK %d after cont; console:\n%s", last+1, con)
	}

	// The script ends and /init powers off: with -no-shutdown the guest stops.
	sd := ev.want(t, "SHUTDOWN", 2*time.Minute)
	if sd.Data["guest"] != true || sd.Data["reason"] != "guest-shutdown" {
		t.Errorf("SHUTDOWN data %v", sd.Data)
	}
	ev.want(t, "STOP", 5*time.Second)
	if st, _ := r.QueryStatus(); st.Status != raw.RunStateShutdown {
		t.Errorf("status after guest power-off under -no-shutdown: %v", st.Status)
	}
	if err := r.Cont(); err == nil || !strings.Contains(err.Error(), "Resetting the Virtual Machine is required") {
		t.Errorf("cont in shutdown state: %v", err)
	}
	if err := r.SystemReset(); err != nil {
		t.Fatal(err)
	}
	rs := ev.want(t, "RESET", 10*time.Second)
	if rs.Data["guest"] != false || rs.Data["reason"] != "host-qmp-system-reset" {
		t.Errorf("RESET data %v", rs.Data)
	}
	if err := r.Cont(); err != nil {
		t.Fatal(err)
	}
	ev.want(t, "RESUME", 5*time.Second)
	if _, ok := con.waitFor("TICK 0", 2*time.Minute); !ok {
		t.Fatalf("the guest did not boot again after system_reset; console:\n%s", con)
	}
	if err := r.Quit(); err != nil {
		t.Fatalf("quit: %v", err)
	}
	if q := ev.want(t, "SHUTDOWN", 5*time.Second); q.Data["reason"] != "host-qmp-quit" {
		t.Errorf("quit SHUTDOWN data %v", q.Data)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after quit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("gemu did not exit after quit")
	}
	if fileExists(sock) {
		t.Error("the QMP socket was left behind")
	}
}

// rawClient is a line-level QMP client that keeps error replies.
type rawClient struct {
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, sock string) *rawClient {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			rc := &rawClient{c: c, r: bufio.NewReaderSize(c, 1<<20)}
			rc.next(t) // greeting
			return rc
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (rc *rawClient) next(t *testing.T) map[string]any {
	t.Helper()
	for {
		rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		l, err := rc.r.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		if _, ok := m["event"]; !ok {
			return m
		}
	}
}

func (rc *rawClient) do(t *testing.T, msg string) map[string]any {
	t.Helper()
	rc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := rc.c.Write([]byte(msg + "\n")); err != nil {
		t.Fatal(err)
	}
	return rc.next(t)
}

// shape describes a JSON value by keys and types only.
func shape(v any) any {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := map[string]any{}
		for _, k := range keys {
			out[k] = shape(x[k])
		}
		return out
	case []any:
		if len(x) == 0 {
			return []any{}
		}
		return []any{shape(x[0])}
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// script is the QMP session the differential test runs on both emulators; each reply
// is compared by shape (keys and JSON types, the first element of lists), and errors
// by class and text.
var script = []string{
	`{"execute":"query-status"}`, // before negotiation
	`{"execute":"qmp_capabilities"}`,
	`{"execute":"qmp_capabilities"}`,
	`{"execute":"query-status"}`,
	`{"execute":"query-version"}`,
	`{"execute":"query-name"}`,
	`{"execute":"query-uuid"}`,
	`{"execute":"query-kvm"}`,
	`{"execute":"query-cpus-fast"}`,
	`{"execute":"query-block"}`,
	`{"execute":"query-migrate"}`,
	`{"execute":"query-migrate-capabilities"}`,
	`{"execute":"query-migrate-parameters"}`,
	`{"execute":"migrate","arguments":{"uri":"bogus:x"}}`,
	`{"execute":"human-monitor-command","arguments":{"command-line":"info status"}}`,
	`{"execute":"human-monitor-command","arguments":{"command-line":"bogus"}}`,
	`{"execute":"stop"}`,
	`{"execute":"query-status","id":"s1"}`,
	`{"execute":"no-such-command","id":7}`,
	`garbage`,
	`[1]`,
	`{"foo":1}`,
	`{"execute":1}`,
	`{"execute":"query-status","arguments":[]}`,
	`{"execute":"query-status","arguments":{"a":1}}`,
	`{"execute":"human-monitor-command"}`,
	`{"execute":"human-monitor-command","arguments":{"command-line":5}}`,
	`{"execute":"query-status"}`,
	`{"execute":"query-commands"}`,
	`{"execute":"system_powerdown"}`,
	`{"execute":"cont"}`,
	`{"execute":"query-status"}`,
	`{"execute":"stop"}`,
	`{"execute":"human-monitor-command","arguments":{"command-line":"info status"}}`,
	`{"execute":"query-status"}`,
}

func runScript(t *testing.T, sock string) []map[string]any {
	rc := dialRaw(t, sock)
	defer rc.c.Close()
	var out []map[string]any
	for _, m := range script {
		out = append(out, rc.do(t, m))
	}
	return out
}

// start runs an emulator with args until the test ends.
func start(t *testing.T, bin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// TestDifferentialQEMU runs the same QMP script against qemu-system-aarch64 -M virt -S
// and gemu-system-aarch64 -S (nothing of the guest runs) and compares every reply.
func TestDifferentialQEMU(t *testing.T) {
	needAssets(t)
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Skip("qemu-system-aarch64 not installed")
	}
	dir := t.TempDir()
	common := func(name string) []string {
		disk := filepath.Join(dir, name+".raw")
		if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		return []string{"-M", "virt", "-S", "-nographic", "-nodefaults", "-m", "256", "-serial", "null",
			"-drive", "file=" + disk + ",format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0",
			"-qmp", "unix:" + filepath.Join(dir, name+".sock") + ",server=on,wait=off"}
	}
	qs, gs := filepath.Join(dir, "qemu.sock"), filepath.Join(dir, "gemu.sock")
	start(t, qemu, common("qemu")...)
	start(t, binary(t), append(common("gemu"), "-kernel", assets.Kernel("arm64"))...)
	want := runScript(t, qs)
	got := runScript(t, gs)
	for i, m := range script {
		w, g := want[i], got[i]
		if we, ok := w["error"].(map[string]any); ok {
			ge, _ := g["error"].(map[string]any)
			if ge == nil || ge["class"] != we["class"] || ge["desc"] != we["desc"] {
				t.Errorf("%s: gemu %v, QEMU %v", m, g, w)
			}
			continue
		}
		ws, _ := json.Marshal(shape(w))
		gs, _ := json.Marshal(shape(g))
		if string(ws) != string(gs) {
			t.Errorf("%s: reply shapes differ\n gemu %s\n QEMU %s", m, gs, ws)
		}
	}
}

// TestHostileClient: a gemu under -S (no guest code runs) gets a 2 MiB line, deep
// nesting, binary junk and a client that never reads; it answers each with one
// GenericError, drops the stuck client, and serves a new client afterwards.
func TestHostileClient(t *testing.T) {
	needAssets(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "q.sock")
	cmd := start(t, binary(t), "-M", "virt", "-S", "-nographic", "-serial", "null", "-kernel", assets.Kernel("arm64"),
		"-qmp", "unix:"+sock+",server=on,wait=off")
	rc := dialRaw(t, sock)
	rc.do(t, `{"execute":"qmp_capabilities"}`)
	class := func(m map[string]any) string {
		e, _ := m["error"].(map[string]any)
		c, _ := e["class"].(string)
		return c
	}
	if c := class(rc.do(t, `{"execute":"query-status","arguments":{"x":"`+strings.Repeat("A", 2<<20)+`"}}`)); c != "GenericError" {
		t.Errorf("2 MiB message: class %q", c)
	}
	if c := class(rc.do(t, strings.Repeat("{\"a\":", 5000)+"1"+strings.Repeat("}", 5000))); c != "GenericError" {
		t.Errorf("deep nesting: class %q", c)
	}
	if c := class(rc.do(t, "\x00\x01\xfe")); c != "GenericError" {
		t.Errorf("binary junk: class %q", c)
	}
	rc.next(t) // one error per stray byte
	rc.next(t)
	if c := class(rc.do(t, `{"execute":"human-monitor-command","arguments":{"command-line":["info"]}}`)); c != "GenericError" {
		t.Errorf("wrong argument type: class %q", c)
	}
	// A stuck client: writes commands, never reads.
	stuck, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	dropped := make(chan struct{})
	go func() {
		defer close(dropped)
		for {
			stuck.SetWriteDeadline(time.Now().Add(20 * time.Second))
			if _, err := stuck.Write([]byte(`{"execute":"qmp_capabilities"}{"execute":"query-qmp-schema"}`)); err != nil {
				return
			}
		}
	}()
	select {
	case <-dropped:
	case <-time.After(60 * time.Second):
		t.Fatal("a client that never reads was not dropped")
	}
	fresh := dialRaw(t, sock)
	fresh.do(t, `{"execute":"qmp_capabilities"}`)
	st := fresh.do(t, `{"execute":"query-status"}`)
	if r, _ := st["return"].(map[string]any); r == nil || r["status"] != "prelaunch" {
		t.Fatalf("query-status after the hostile clients: %v", st)
	}
	if cmd.ProcessState != nil {
		t.Fatal("gemu exited")
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(cmd, 10*time.Second); err != nil {
		t.Errorf("exit on SIGINT: %v", err)
	}
}

func waitExit(cmd *exec.Cmd, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return errors.New("timeout")
	}
}

// TestPCPowerButton: system_powerdown on gemu-system-x86_64 presses the ACPI fixed
// power button: the guest kernel counts the fixed event in
// /sys/firmware/acpi/interrupts/ff_pwr_btn (its SCI handler ran), and the POWERDOWN
// event follows the reply. Needs /dev/kvm and the amd64 assets.
func TestPCPowerButton(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a Linux guest: skipped under -short")
	}
	if why := assets.Missing("amd64"); why != "" {
		t.Skip(why)
	}
	if err := kvm.Available(); err != nil {
		t.Skipf("no usable KVM: %v", err)
	}
	if kvm.Emulated() {
		// kvm_pvm runs a Linux boot at about a microsecond per instruction: tests/pc
		// boots the PC inside the KVM-in-TCG harness instead.
		t.Skip("the host's KVM is emulated (kvm_pvm): a direct Linux boot does not finish in time here")
	}
	bin := testbin.MustBuild(t, "gemu/cmd/gemu-system-x86_64")
	dir := t.TempDir()
	sock := filepath.Join(dir, "qmp.sock")
	script := "i=0\nwhile [ $i -lt 100 ]; do echo PWR $(cat /sys/firmware/acpi/interrupts/ff_pwr_btn); i=$((i+1)); sleep 0.2; done\n"
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-m", "256", "-nographic", "-kernel", assets.Kernel("amd64"), "-initrd", assets.Initrd("amd64"),
		"-append", "console=ttyS0 "+assets.CmdArg(script), "-qmp", "unix:"+sock+",server=on,wait=off", "-no-reboot")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	con := newConsole(out)
	mon := dialQMP(t, sock)
	defer mon.Disconnect()
	ev := collect(t, mon)
	r := raw.NewMonitor(mon)
	l, ok := con.waitFor("PWR ", 2*time.Minute)
	if !ok {
		t.Fatalf("no ff_pwr_btn line; console:\n%s", con)
	}
	var before int
	if _, err := fmt.Sscanf(l, "PWR %d", &before); err != nil {
		t.Fatalf("%q: %v", l, err)
	}
	if err := r.SystemPowerdown(); err != nil {
		t.Fatalf("system_powerdown: %v", err)
	}
	ev.want(t, "POWERDOWN", 5*time.Second)
	deadline := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-con.ch:
			if !ok {
				t.Fatalf("console ended; console:\n%s", con)
			}
			var n int
			if _, err := fmt.Sscanf(l, "PWR %d", &n); err == nil && n > before {
				if err := r.Quit(); err != nil {
					t.Fatal(err)
				}
				if err := waitExit(cmd, 15*time.Second); err != nil {
					t.Errorf("exit after quit: %v", err)
				}
				return
			}
		case <-deadline:
			t.Fatalf("the guest never counted a power-button event (before: %d); console:\n%s", before, con)
		}
	}
}

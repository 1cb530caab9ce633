// Package balloon holds the whole-system test of virtio-balloon: Debian's arm64 kernel
// (its virtio_balloon module in the initramfs) booted under TCG with -m 512, driven
// over QMP as a management tool does. After the guest has touched 300 MiB (a tmpfs
// file, then removed), `balloon 256M` must make the guest's MemTotal drop by exactly
// 256 MiB, the emulator's resident set (VmRSS) drop with it, BALLOON_CHANGE events
// arrive and query-balloon answer 256 MiB; `balloon 512` (HMP) gives it all back. The
// same run against QEMU 7.2 is the oracle for the guest-visible numbers and for the
// shapes of the QMP replies and events; guest-stats (qom-get, polled every second as
// libvirt sets it) must report the guest's MemTotal. With free-page-reporting=on the freed 300 MiB
// go back to the host without any balloon command.
package balloon

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gemu/tests/assets"
	"gemu/tests/testbin"
)

var (
	buildOnce sync.Once
	emu, rd   string
	buildErr  error
)

func prepare(t *testing.T) (string, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a Linux guest under TCG: skipped under -short")
	}
	if why := assets.Missing("arm64"); why != "" {
		t.Skip(why)
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gemu-balloon-test")
		if err != nil {
			buildErr = err
			return
		}
		emu = filepath.Join(os.Getenv("GEMU_BIN"), "gemu-system-aarch64")
		if os.Getenv("GEMU_BIN") == "" || !exists(emu) {
			if emu, err = testbin.Build(dir, "gemu/cmd/gemu-system-aarch64"); err != nil {
				buildErr = err
				return
			}
		}
		rd = filepath.Join(dir, "initrd.gz")
		buildErr = assets.InitrdWith("arm64", rd, "virtio_pci", "virtio_mmio", "virtio_balloon")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return emu, rd
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// script touches 300 MiB in a tmpfs, frees it (5 s after saying so: the host reads
// the emulator's VmRSS then, before free page reporting can give the pages back), then
// prints MemTotal every half second.
const script = `loadmods virtio_pci virtio_mmio virtio_balloon
mkdir -p /t && mount -t tmpfs -o size=400m none /t
echo "BALLOON-MEM0 $(awk '/MemTotal/{print $2}' /proc/meminfo)"
dd if=/dev/zero of=/t/fill bs=1M count=300 2>/dev/null
echo BALLOON-FILLED
sleep 5
rm /t/fill
echo BALLOON-TOUCHED
i=0; while [ $i -lt 3000 ]; do echo "BALLOON-MEM $(awk '/MemTotal/{print $2}' /proc/meminfo)"; sleep 0.5; i=$((i+1)); done
`

// console collects the guest's lines.
type console struct {
	mu    sync.Mutex
	lines []string
	next  int
	ch    chan struct{}
}

func newConsole(r io.Reader) *console {
	c := &console{ch: make(chan struct{}, 1)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			c.mu.Lock()
			c.lines = append(c.lines, strings.TrimRight(sc.Text(), "\r"))
			c.mu.Unlock()
			select {
			case c.ch <- struct{}{}:
			default:
			}
		}
		close(c.ch)
	}()
	return c
}

// waitFor returns the next line (after the previous match) containing marker for
// which ok holds, or "" when the console ends or d passes.
func (c *console) waitFor(marker string, d time.Duration, ok func(string) bool) string {
	deadline := time.After(d)
	for {
		c.mu.Lock()
		for ; c.next < len(c.lines); c.next++ {
			if l := c.lines[c.next]; strings.Contains(l, marker) && (ok == nil || ok(l)) {
				c.next++
				c.mu.Unlock()
				return l
			}
		}
		c.mu.Unlock()
		select {
		case _, open := <-c.ch:
			if !open {
				return ""
			}
		case <-deadline:
			return ""
		}
	}
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.lines
	if len(s) > 60 {
		s = s[len(s)-60:]
	}
	return strings.Join(s, "\n")
}

// qmp is a minimal QMP client that keeps events.
type qmp struct {
	c       net.Conn
	r       *bufio.Reader
	mu      sync.Mutex
	events  []map[string]any
	replies chan map[string]any
}

func dialQMP(path string) (*qmp, error) {
	var c net.Conn
	var err error
	for i := 0; i < 300; i++ {
		if c, err = net.Dial("unix", path); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	q := &qmp{c: c, r: bufio.NewReader(c), replies: make(chan map[string]any, 16)}
	if _, err := q.r.ReadString('\n'); err != nil { // greeting
		return nil, err
	}
	go func() {
		for {
			l, err := q.r.ReadString('\n')
			if err != nil {
				close(q.replies)
				return
			}
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) != nil {
				continue
			}
			if _, ok := m["event"]; ok {
				q.mu.Lock()
				q.events = append(q.events, m)
				q.mu.Unlock()
				continue
			}
			q.replies <- m
		}
	}()
	if _, err := q.do(`{"execute":"qmp_capabilities"}`); err != nil {
		return nil, err
	}
	return q, nil
}

func (q *qmp) do(cmd string) (map[string]any, error) {
	if _, err := io.WriteString(q.c, cmd+"\n"); err != nil {
		return nil, err
	}
	select {
	case m, ok := <-q.replies:
		if !ok {
			return nil, io.EOF
		}
		return m, nil
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("%s: no reply", cmd)
	}
}

// balloonEvents returns the actual values of the BALLOON_CHANGE events so far.
func (q *qmp) balloonEvents() (vals []int64, shapes []string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range q.events {
		if e["event"] == "BALLOON_CHANGE" {
			d, _ := e["data"].(map[string]any)
			a, _ := d["actual"].(float64)
			vals = append(vals, int64(a))
			shapes = append(shapes, shape(e))
		}
	}
	return
}

// shape is a JSON value's structure: object keys (recursively) and value kinds.
func shape(v any) string {
	switch x := v.(type) {
	case map[string]any:
		var ks []string
		for k, e := range x {
			ks = append(ks, k+":"+shape(e))
		}
		sort.Strings(ks)
		return "{" + strings.Join(ks, ",") + "}"
	case []any:
		if len(x) == 0 {
			return "[]"
		}
		return "[" + shape(x[0]) + "]"
	case float64:
		return "number"
	case string:
		return "string"
	case bool:
		return "bool"
	case nil:
		return "null"
	}
	return "?"
}

func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			return n << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS")
}

// result is what one run observed, for the comparison with QEMU.
type result struct {
	mem0, memBallooned, memBack int64 // guest MemTotal, kB
	rssTouched, rssBallooned    int64 // emulator VmRSS, bytes
	shapes                      map[string]string
}

func memOf(l string) int64 {
	f := strings.Fields(l)
	n, _ := strconv.ParseInt(f[len(f)-1], 10, 64)
	return n
}

// boot runs the guest under bin with device and drives the balloon scenario.
func boot(t *testing.T, bin, rd, device string, reporting bool) result {
	dir, err := os.MkdirTemp("", "bl")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "q.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-M", "virt", "-cpu", "cortex-a57", "-m", "512", "-smp", "1",
		"-kernel", assets.Kernel("arm64"), "-initrd", rd, "-nographic", "-no-reboot",
		"-append", "console=ttyAMA0 quiet panic=-1 "+assets.CmdArg(script),
		"-qmp", "unix:"+sock+",server=on,wait=off", "-device", device+",id=balloon0")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-done
	}()
	con := newConsole(out)
	fail := func(format string, a ...any) {
		t.Helper()
		t.Fatalf("%s: "+format+"\nconsole:\n%s\nstderr:\n%s", append(append([]any{filepath.Base(bin)}, a...), con.String(), stderr.String())...)
	}
	q, err := dialQMP(sock)
	if err != nil {
		fail("QMP: %v", err)
	}
	defer q.c.Close()
	var r result
	r.shapes = map[string]string{}
	l := con.waitFor("BALLOON-MEM0", 10*time.Minute, nil)
	if l == "" {
		fail("guest did not start")
	}
	r.mem0 = memOf(l)
	if con.waitFor("BALLOON-FILLED", 5*time.Minute, nil) == "" {
		fail("guest did not fill its tmpfs")
	}
	rssFilled, err := vmRSS(cmd.Process.Pid)
	if err != nil {
		fail("%v", err)
	}
	if con.waitFor("BALLOON-TOUCHED", 5*time.Minute, nil) == "" {
		fail("guest did not touch its memory")
	}
	con.waitFor("BALLOON-MEM", time.Minute, nil)
	if r.rssTouched, err = vmRSS(cmd.Process.Pid); err != nil {
		fail("%v", err)
	}
	t.Logf("%s %s: MemTotal %d kB, VmRSS after the guest touched 300 MiB: %d MiB", filepath.Base(bin), device, r.mem0, r.rssTouched>>20)
	m, err := q.do(`{"execute":"query-balloon"}`)
	if err != nil {
		fail("%v", err)
	}
	r.shapes["query-balloon"] = shape(m)
	if a, _ := m["return"].(map[string]any); a == nil || a["actual"] != float64(512<<20) {
		fail("query-balloon before: %v", m)
	}
	if reporting {
		// Free page reporting: the guest's 300 MiB of free pages go back to the host
		// without a balloon command.
		deadline := time.Now().Add(3 * time.Minute)
		for {
			rss, err := vmRSS(cmd.Process.Pid)
			if err != nil {
				fail("%v", err)
			}
			if rssFilled-rss >= 128<<20 {
				t.Logf("free page reporting: VmRSS %d MiB with 300 MiB in use → %d MiB after they were freed", rssFilled>>20, rss>>20)
				break
			}
			if time.Now().After(deadline) {
				fail("free page reporting: VmRSS %d MiB → %d MiB, want a drop of at least 128 MiB", rssFilled>>20, rss>>20)
			}
			time.Sleep(time.Second)
		}
		return r
	}
	// Statistics, as libvirt polls them: guest-stats-polling-interval=1, then
	// guest-stats until the driver has reported.
	if m, err := q.do(`{"execute":"qom-set","arguments":{"path":"/machine/peripheral/balloon0","property":"guest-stats-polling-interval","value":1}}`); err != nil || m["return"] == nil {
		fail("qom-set guest-stats-polling-interval: %v %v", m, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		m, err := q.do(`{"execute":"qom-get","arguments":{"path":"/machine/peripheral/balloon0","property":"guest-stats"}}`)
		if err != nil {
			fail("%v", err)
		}
		st, _ := m["return"].(map[string]any)
		ss, _ := st["stats"].(map[string]any)
		total, _ := ss["stat-total-memory"].(float64)
		if lu, _ := st["last-update"].(float64); lu != 0 && total == float64(r.mem0<<10) {
			r.shapes["guest-stats"] = shape(m)
			t.Logf("guest-stats: total %v free %v available %v", ss["stat-total-memory"], ss["stat-free-memory"], ss["stat-available-memory"])
			break
		}
		if time.Now().After(deadline) {
			fail("guest-stats never reported the guest's MemTotal (%d kB): %v", r.mem0, m)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, c := range []string{`{"execute":"balloon","arguments":{"value":0}}`, `{"execute":"balloon","arguments":{"value":"x"}}`} {
		m, err := q.do(c)
		if err != nil {
			fail("%v", err)
		}
		r.shapes[c] = fmt.Sprint(m)
	}
	m, err = q.do(`{"execute":"balloon","arguments":{"value":268435456}}`)
	if err != nil || m["return"] == nil {
		fail("balloon 256M: %v %v", m, err)
	}
	r.shapes["balloon"] = shape(m)
	l = con.waitFor("BALLOON-MEM", 5*time.Minute, func(l string) bool { return memOf(l) <= r.mem0-262144 })
	if l == "" {
		fail("guest MemTotal did not drop by 256 MiB")
	}
	r.memBallooned = memOf(l)
	// The last BALLOON_CHANGE names the final size (events are rate limited to 1/s).
	deadline = time.Now().Add(time.Minute)
	for {
		vals, shapes := q.balloonEvents()
		if len(vals) > 0 && vals[len(vals)-1] == 256<<20 {
			r.shapes["BALLOON_CHANGE"] = shapes[0]
			t.Logf("BALLOON_CHANGE events: %d, last actual %d", len(vals), vals[len(vals)-1])
			break
		}
		if time.Now().After(deadline) {
			fail("BALLOON_CHANGE events %v, want the last at 256 MiB", vals)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if m, _ := q.do(`{"execute":"query-balloon"}`); fmt.Sprint(m) != fmt.Sprint(map[string]any{"return": map[string]any{"actual": float64(256 << 20)}}) {
		fail("query-balloon after inflating: %v", m)
	}
	m, _ = q.do(`{"execute":"human-monitor-command","arguments":{"command-line":"info balloon"}}`)
	if m["return"] != "balloon: actual=256\r\n" {
		fail("info balloon: %v", m)
	}
	if r.rssBallooned, err = vmRSS(cmd.Process.Pid); err != nil {
		fail("%v", err)
	}
	t.Logf("balloon 256M: MemTotal %d → %d kB, VmRSS %d → %d MiB", r.mem0, r.memBallooned, r.rssTouched>>20, r.rssBallooned>>20)
	if r.rssTouched-r.rssBallooned < 128<<20 {
		fail("VmRSS %d → %d MiB after the guest gave back 256 MiB, want a drop of at least 128 MiB", r.rssTouched>>20, r.rssBallooned>>20)
	}
	// Deflate: HMP balloon 512 (MB).
	m, _ = q.do(`{"execute":"human-monitor-command","arguments":{"command-line":"balloon 512"}}`)
	if m["return"] != "" {
		fail("HMP balloon 512: %v", m)
	}
	l = con.waitFor("BALLOON-MEM", 5*time.Minute, func(l string) bool { return memOf(l) == r.mem0 })
	if l == "" {
		fail("guest MemTotal did not come back to %d kB", r.mem0)
	}
	r.memBack = memOf(l)
	deadline = time.Now().Add(time.Minute)
	for {
		m, _ := q.do(`{"execute":"query-balloon"}`)
		if a, _ := m["return"].(map[string]any); a != nil && a["actual"] == float64(512<<20) {
			break
		}
		if time.Now().After(deadline) {
			fail("query-balloon after deflating: %v", m)
		}
		time.Sleep(200 * time.Millisecond)
	}
	q.do(`{"execute":"quit"}`)
	return r
}

func qemu(t *testing.T) string {
	p, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Skip("qemu-system-aarch64 (the oracle) not installed")
	}
	return p
}

// TestBalloonPCI runs the scenario on gemu and on QEMU 7.2 and compares.
func TestBalloonPCI(t *testing.T) {
	bin, rd := prepare(t)
	g := boot(t, bin, rd, "virtio-balloon-pci", false)
	o := boot(t, qemu(t), rd, "virtio-balloon-pci", false)
	// The boards reserve slightly different memory (MemTotal differs by the firmware
	// tables), so what is compared is what the balloon took and gave back.
	if g.mem0-g.memBallooned != o.mem0-o.memBallooned || g.memBack != g.mem0 || o.memBack != o.mem0 {
		t.Errorf("guest MemTotal gemu %d/%d/%d kB, QEMU %d/%d/%d kB", g.mem0, g.memBallooned, g.memBack, o.mem0, o.memBallooned, o.memBack)
	}
	if g.mem0-g.memBallooned != 262144 {
		t.Errorf("MemTotal dropped by %d kB, want 262144", g.mem0-g.memBallooned)
	}
	for k, v := range o.shapes {
		if g.shapes[k] != v {
			t.Errorf("%s: gemu %s, QEMU %s", k, g.shapes[k], v)
		}
	}
	t.Logf("VmRSS drop: gemu %d MiB, QEMU %d MiB", (g.rssTouched-g.rssBallooned)>>20, (o.rssTouched-o.rssBallooned)>>20)
}

// TestBalloonMMIO is the scenario over virtio-mmio on gemu alone.
func TestBalloonMMIO(t *testing.T) {
	bin, rd := prepare(t)
	boot(t, bin, rd, "virtio-balloon-device,deflate-on-oom=off", false)
}

// TestFreePageReporting checks that the guest's freed memory goes back to the host,
// on gemu and (the same check) on QEMU 7.2 when it is installed.
func TestFreePageReporting(t *testing.T) {
	bin, rd := prepare(t)
	boot(t, bin, rd, "virtio-balloon-pci,free-page-reporting=on", true)
	if q, err := exec.LookPath("qemu-system-aarch64"); err == nil {
		boot(t, q, rd, "virtio-balloon-pci,free-page-reporting=on", true)
	}
}

// Package snapshot holds the whole-system tests of internal snapshots: savevm,
// loadvm and delvm (HMP, through human-monitor-command and -monitor stdio), the QMP
// snapshot-save/-load/-delete jobs and -loadvm, on gemu-system-aarch64 under TCG with
// the VM state kept in a qcow2 image, checked against qemu-img and QEMU 7.2.
package snapshot

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"gemu/tests/assets"
	"gemu/tests/testbin"
)

func binary(t *testing.T) string { return binaryFor(t, "arm64") }

// binaryFor is the system emulator of a guest architecture (arm64, amd64).
func binaryFor(t *testing.T, arch string) string {
	t.Helper()
	name := map[string]string{"arm64": "gemu-system-aarch64", "amd64": "gemu-system-x86_64"}[arch]
	return testbin.Command(t, name)
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, p := range append([]string{"qemu-img"}, tools...) {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed (the oracle)", p)
		}
	}
}

func needGuest(t *testing.T, arch string) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a Linux guest: skipped under -short")
	}
	if why := assets.Missing(arch); why != "" {
		t.Skip(why)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// proc is one emulator process; its stdout lines are kept, TICK lines also queued.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []string
	last   tick // the last TICK printed (n -1 before the first)
	ticks  chan tick
	exited chan error
	stderr strings.Builder
}

// tick is one "TICK n D=d" line: the counter and what the guest read back from its disk.
type tick struct {
	n    int
	disk string
}

func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{ticks: make(chan tick, 100000), exited: make(chan error, 1), last: tick{n: -1}}
	p.cmd = exec.Command(bin, args...)
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.stderr.Write(b)
	})
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		p.exited <- nil
	})
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			l := strings.TrimRight(s.Text(), "\r")
			p.mu.Lock()
			p.lines = append(p.lines, l)
			p.mu.Unlock()
			if i := strings.Index(l, "TICK "); i >= 0 {
				var k tick
				f := strings.Fields(l[i:])
				if _, err := fmt.Sscanf(f[1], "%d", &k.n); err == nil && len(f) >= 3 && strings.HasPrefix(f[2], "D=") {
					k.disk = f[2][2:]
					p.mu.Lock()
					p.last = k
					p.mu.Unlock()
					p.ticks <- k
				}
			}
		}
		p.exited <- p.cmd.Wait()
	}()
	return p
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func (p *proc) console() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n") + "\n--- stderr:\n" + p.stderr.String()
}

func (p *proc) next(t *testing.T, d time.Duration) tick {
	t.Helper()
	select {
	case k := <-p.ticks:
		return k
	case <-time.After(d):
		t.Fatalf("no TICK within %v; console:\n%s", d, p.console())
	}
	return tick{}
}

// drain empties the queue and returns the last TICK printed.
func (p *proc) drain() tick {
	for {
		select {
		case <-p.ticks:
		default:
			p.mu.Lock()
			defer p.mu.Unlock()
			return p.last
		}
	}
}

// qmpConn is a plain QMP client: replies in order, events kept.
type qmpConn struct {
	t      *testing.T
	c      net.Conn
	r      *bufio.Reader
	events []qmpEvent
}

type qmpEvent struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

func dialQMP(t *testing.T, sock string, p *proc) *qmpConn {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			q := &qmpConn{t: t, c: c, r: bufio.NewReader(c)}
			t.Cleanup(func() { c.Close() })
			q.read() // greeting
			q.ok("qmp_capabilities", nil)
			return q
		}
		if time.Now().After(deadline) {
			t.Fatalf("QMP socket %s: %v\n%s", sock, err, p.console())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (q *qmpConn) read() map[string]json.RawMessage {
	q.t.Helper()
	q.c.SetReadDeadline(time.Now().Add(3 * time.Minute))
	line, err := q.r.ReadBytes('\n')
	if err != nil {
		q.t.Fatalf("QMP read: %v", err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(line, &m); err != nil {
		q.t.Fatalf("QMP message %q: %v", line, err)
	}
	if _, ok := m["event"]; ok {
		var e qmpEvent
		json.Unmarshal(line, &e)
		q.events = append(q.events, e)
	}
	return m
}

// call sends a command and returns its return value or error description.
func (q *qmpConn) call(name string, args any) (json.RawMessage, string) {
	q.t.Helper()
	req := map[string]any{"execute": name}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	if _, err := q.c.Write(append(b, '\n')); err != nil {
		q.t.Fatal(err)
	}
	for {
		m := q.read()
		if r, ok := m["return"]; ok {
			return r, ""
		}
		if e, ok := m["error"]; ok {
			var d struct{ Desc string }
			json.Unmarshal(e, &d)
			return nil, d.Desc
		}
	}
}

func (q *qmpConn) ok(name string, args any) json.RawMessage {
	q.t.Helper()
	r, e := q.call(name, args)
	if e != "" {
		q.t.Fatalf("%s: %s", name, e)
	}
	return r
}

// hmp runs an HMP line through human-monitor-command.
func (q *qmpConn) hmp(line string) string {
	q.t.Helper()
	var s string
	json.Unmarshal(q.ok("human-monitor-command", map[string]string{"command-line": line}), &s)
	return strings.ReplaceAll(s, "\r\n", "\n")
}

func (q *qmpConn) status() string {
	q.t.Helper()
	var st struct{ Status string }
	json.Unmarshal(q.ok("query-status", nil), &st)
	return st.Status
}

// jobStatuses returns the JOB_STATUS_CHANGE statuses seen for job id, reading until
// it concludes (or is dismissed: "null").
func (q *qmpConn) jobStatuses(id, until string) []string {
	q.t.Helper()
	var out []string
	seen := 0
	for {
		for ; seen < len(q.events); seen++ {
			e := q.events[seen]
			if e.Event != "JOB_STATUS_CHANGE" {
				continue
			}
			var d struct{ Status, ID string }
			json.Unmarshal(e.Data, &d)
			if d.ID == id {
				out = append(out, d.Status)
				if d.Status == until {
					return out
				}
			}
		}
		q.read()
	}
}

package monitor

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// fake is a Machine whose state the test inspects.
type fake struct {
	mu     sync.Mutex
	status Status
	srv    *Server
	quits  int
	resets int
	mem    []byte
}

func (f *fake) Status() Status { f.mu.Lock(); defer f.mu.Unlock(); return f.status }
func (f *fake) Stop() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.status == Running {
		f.status = Paused
		f.srv.Emit("STOP", nil)
	}
	return nil
}
func (f *fake) Cont() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.status != Running {
		f.status = Running
		f.srv.Emit("RESUME", nil)
	}
	return nil
}
func (f *fake) Reset() error {
	f.mu.Lock()
	f.resets++
	f.mu.Unlock()
	f.srv.Emit("RESET", ShutdownData{false, "host-qmp-system-reset"})
	return nil
}
func (f *fake) PowerDown() error { return errors.New("no power button") }
func (f *fake) Quit()            { f.mu.Lock(); f.quits++; f.mu.Unlock() }
func (f *fake) CPUs() []CPU {
	return []CPU{{Index: 0, ThreadID: 7, Target: "aarch64", Current: true}, {Index: 1, ThreadID: 8, Target: "aarch64"}}
}
func (f *fake) Blocks() []Block {
	return []Block{{Device: "d0", QDev: "/machine/peripheral/v0/virtio-backend", Inserted: &Inserted{File: "/x.qcow2", Format: "qcow2",
		NodeName: "#block1", ReadOnly: true, BackingFile: "/base.raw", BackingDepth: 1, Writeback: true}}}
}
func (f *fake) Chardevs() []Chardev { return []Chardev{{"serial0", "stdio", true}} }
func (f *fake) PCI() []PCIDevice {
	return []PCIDevice{{Slot: 1, Vendor: 0x1af4, Device: 0x1042, Class: 0x0100, IRQPin: 1, Regions: []PCIRegion{{BAR: 4, Address: -1, Size: 16384, Prefetch: true, Mem64: true}}}}
}
func (f *fake) ReadPhys(addr uint64, p []byte) error {
	if addr+uint64(len(p)) > uint64(len(f.mem)) {
		return errors.New("not RAM")
	}
	copy(p, f.mem[addr:])
	return nil
}
func (f *fake) Info() Info { return Info{Name: "vm1", Target: "aarch64"} }

// client is a raw QMP client on a net.Pipe.
type client struct {
	t  *testing.T
	c  net.Conn
	r  *bufio.Reader
	ev []map[string]any
}

func start(t *testing.T, o Options) (*fake, *Server, func() *client) {
	f := &fake{status: Running, mem: []byte{0x4d, 0x5a, 0x40, 0xfa, 1, 2, 3, 4}}
	s := NewServer(f, o)
	f.srv = s
	t.Cleanup(s.Close)
	return f, s, func() *client {
		a, b := net.Pipe()
		go s.Handle(b, b, b, QMP)
		c := &client{t: t, c: a, r: bufio.NewReader(a)}
		g := c.read()
		if _, ok := g["QMP"]; !ok {
			t.Fatalf("greeting %v", g)
		}
		return c
	}
}

func (c *client) read() map[string]any {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	if !strings.HasSuffix(line, "\r\n") {
		c.t.Fatalf("line %q does not end in CRLF as QEMU's", line)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		c.t.Fatalf("reply %q: %v", line, err)
	}
	return m
}

// reply reads until a non-event message, keeping events.
func (c *client) reply() map[string]any {
	c.t.Helper()
	for {
		m := c.read()
		if _, ok := m["event"]; ok {
			c.ev = append(c.ev, m)
			continue
		}
		return m
	}
}

func (c *client) do(s string) map[string]any {
	c.t.Helper()
	c.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.c.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
	return c.reply()
}

func errOf(m map[string]any) (class, desc string) {
	e, _ := m["error"].(map[string]any)
	class, _ = e["class"].(string)
	desc, _ = e["desc"].(string)
	return
}

// TestNegotiationAndErrors checks QEMU 7.2's replies (recorded from qemu-system-aarch64
// 7.2 -qmp) for the protocol's error paths, byte for byte in class and text.
func TestNegotiationAndErrors(t *testing.T) {
	_, _, dial := start(t, Options{Package: "gemu-test"})
	c := dial()
	if cl, d := errOf(c.do(`{"execute":"query-status"}`)); cl != CommandNotFound || d != "Expecting capabilities negotiation with 'qmp_capabilities'" {
		t.Errorf("before negotiation: %s %q", cl, d)
	}
	if cl, _ := errOf(c.do(`{"execute":"bogus"}`)); cl != CommandNotFound {
		t.Errorf("unknown command before negotiation: %s", cl)
	}
	r := c.do(`{"execute":"qmp_capabilities","id":1}`)
	if r["id"] != 1.0 || r["return"] == nil {
		t.Fatalf("qmp_capabilities: %v", r)
	}
	for _, tc := range []struct{ in, class, desc string }{
		{`{"execute":"qmp_capabilities"}`, CommandNotFound, "Capabilities negotiation is already complete, command ignored"},
		{`{"execute":"bogus"}`, CommandNotFound, "The command bogus has not been found"},
		{"garbage\n", GenericError, "JSON parse error, invalid keyword 'garbage'"},
		{`[1]`, GenericError, "QMP input must be a JSON object"},
		{"42\n", GenericError, "QMP input must be a JSON object"},
		{`{"foo":1}`, GenericError, "QMP input member 'foo' is unexpected"},
		{`{"execute":1}`, GenericError, "QMP input member 'execute' must be a string"},
		{`{"id":3}`, GenericError, "QMP input lacks member 'execute'"},
		{`{"execute":"query-status","arguments":[]}`, GenericError, "QMP input member 'arguments' must be an object"},
		{`{"execute":"query-status","arguments":{"a":1}}`, GenericError, "Parameter 'a' is unexpected"},
		{`{"execute":"human-monitor-command"}`, GenericError, "Parameter 'command-line' is missing"},
		{`{"execute":"human-monitor-command","arguments":{"command-line":5}}`, GenericError, "Invalid parameter type for 'command-line', expected: string"},
		{`{"execute":"human-monitor-command","arguments":{"command-line":"info status","cpu-index":"x"}}`, GenericError, "Invalid parameter type for 'cpu-index', expected: integer"},
		{`{"execute":"query-status",}`, GenericError, ""},
		{`}`, GenericError, "JSON parse error, stray '}'"},
	} {
		r := c.do(tc.in)
		cl, d := errOf(r)
		if cl != tc.class || (tc.desc != "" && d != tc.desc) || (tc.desc == "" && !strings.HasPrefix(d, "JSON parse error")) {
			t.Errorf("%s: got %s %q, want %s %q", tc.in, cl, d, tc.class, tc.desc)
		}
	}
	// The id is echoed whatever its JSON type, errors included.
	r = c.do(`{"execute":"query-status","id":[1,{"a":2}]}`)
	if id, _ := json.Marshal(r["id"]); string(id) != `[1,{"a":2}]` {
		t.Errorf("id echoed as %s", id)
	}
	r = c.do(`{"execute":"nope","id":"x"}`)
	if r["id"] != "x" {
		t.Errorf("error reply without the id: %v", r)
	}
	// Two messages in one line, and one spanning lines, as QEMU's streamer takes them.
	c.c.Write([]byte(`{"execute":"query-name"}{"execute":"query-uuid"`))
	c.c.Write([]byte("\n}\n"))
	if n := c.reply()["return"].(map[string]any)["name"]; n != "vm1" {
		t.Errorf("query-name %v", n)
	}
	if u := c.reply()["return"].(map[string]any)["UUID"]; u != "00000000-0000-0000-0000-000000000000" {
		t.Errorf("query-uuid %v", u)
	}
	// A string with braces and escapes inside does not confuse the splitter.
	r = c.do(`{"execute":"human-monitor-command","arguments":{"command-line":"info \"}{ status"}}`)
	if _, ok := r["return"]; !ok {
		t.Errorf("braces in a string: %v", r)
	}
}

// TestCommands runs every command against the fake and checks the shapes QEMU
// gives (keys as recorded from QEMU 7.2) and the events with their order.
func TestCommands(t *testing.T) {
	f, _, dial := start(t, Options{Package: "gemu-test"})
	c := dial()
	c.do(`{"execute":"qmp_capabilities"}`)
	st := c.do(`{"execute":"query-status"}`)["return"].(map[string]any)
	if st["status"] != "running" || st["running"] != true || st["singlestep"] != false {
		t.Errorf("query-status %v", st)
	}
	c.do(`{"execute":"stop"}`)
	if len(c.ev) != 1 || c.ev[0]["event"] != "STOP" {
		t.Fatalf("stop: events %v", c.ev)
	}
	ts := c.ev[0]["timestamp"].(map[string]any)
	if _, ok := ts["seconds"].(float64); !ok {
		t.Errorf("timestamp %v", ts)
	}
	if h := c.do(`{"execute":"human-monitor-command","arguments":{"command-line":"info status"}}`)["return"]; h != "VM status: paused\r\n" {
		t.Errorf("info status %q", h)
	}
	c.do(`{"execute":"cont"}`)
	if len(c.ev) != 2 || c.ev[1]["event"] != "RESUME" {
		t.Fatalf("cont: events %v", c.ev)
	}
	// system_reset: the reply comes before the RESET event, as in QEMU.
	c.c.Write([]byte(`{"execute":"system_reset"}`))
	if r := c.read(); r["return"] == nil {
		t.Fatalf("system_reset: first message %v, want the return", r)
	}
	if e := c.read(); e["event"] != "RESET" || e["data"].(map[string]any)["reason"] != "host-qmp-system-reset" {
		t.Fatalf("RESET event %v", e)
	}
	if cl, d := errOf(c.do(`{"execute":"system_powerdown"}`)); cl != GenericError || d != "no power button" {
		t.Errorf("system_powerdown refusal: %s %q", cl, d)
	}
	cpus := c.do(`{"execute":"query-cpus-fast"}`)["return"].([]any)
	if len(cpus) != 2 || cpus[1].(map[string]any)["cpu-index"] != 1.0 || cpus[0].(map[string]any)["thread-id"] != 7.0 {
		t.Errorf("query-cpus-fast %v", cpus)
	}
	blk := c.do(`{"execute":"query-block"}`)["return"].([]any)[0].(map[string]any)
	ins := blk["inserted"].(map[string]any)
	if blk["device"] != "d0" || blk["qdev"] == nil || ins["file"] != "/x.qcow2" || ins["ro"] != true || ins["backing_file"] != "/base.raw" ||
		ins["drv"] != "qcow2" || ins["image"].(map[string]any)["format"] != "qcow2" {
		t.Errorf("query-block %v", blk)
	}
	pci := c.do(`{"execute":"query-pci"}`)["return"].([]any)[0].(map[string]any)["devices"].([]any)[0].(map[string]any)
	if pci["class_info"].(map[string]any)["desc"] != "SCSI controller" || pci["regions"].([]any)[0].(map[string]any)["address"] != -1.0 {
		t.Errorf("query-pci %v", pci)
	}
	for _, h := range []struct{ cmd, want string }{
		{"xp /4xb 0", "0000000000000000: 0x4d 0x5a 0x40 0xfa\r\n"},
		{"xp /2x 0", "0000000000000000: 0xfa405a4d 0x04030201\r\n"},
		{"xp /1xg 0", "0000000000000000: 0x04030201fa405a4d\r\n"},
		{"xp /2d 0", "0000000000000000: 4198521421   67305985\r\n"},
		{"xp /8xb 0", "0000000000000000: 0x4d 0x5a 0x40 0xfa 0x01 0x02 0x03 0x04\r\n"},
		{"xp /2o 0", "0000000000000000: 037220055115  0400601001\r\n"},
		{"xp /4c 0", "0000000000000000: 'M' 'Z' '@' '\\xfa'\r\n"},
		{"xp /4x 0x1000", "Cannot access memory\r\n"},
		{"xp", "unexpected end of expression\r\nTry \"help xp\" for more information\r\n"},
		{"bogus", "unknown command: 'bogus'\r\n"},
		{"info foo", "unknown command: 'info foo'\r\n"},
		{"info cpus", "* CPU #0: thread_id=7\r\n  CPU #1: thread_id=8\r\n"},
		{"info block", "d0 (#block1): /x.qcow2 (qcow2, read-only)\r\n    Attached to:      /machine/peripheral/v0/virtio-backend\r\n    Cache mode:       writeback\r\n    Backing file:     /base.raw (chain depth: 1)\r\n"},
	} {
		r := c.do(`{"execute":"human-monitor-command","arguments":{"command-line":` + jsonStr(h.cmd) + `}}`)
		if r["return"] != h.want {
			t.Errorf("HMP %q = %q, want %q", h.cmd, r["return"], h.want)
		}
	}
	names := map[string]bool{}
	for _, x := range c.do(`{"execute":"query-commands"}`)["return"].([]any) {
		names[x.(map[string]any)["name"].(string)] = true
	}
	for _, n := range []string{"qmp_capabilities", "query-status", "stop", "cont", "quit", "human-monitor-command", "query-block", "query-qmp-schema"} {
		if !names[n] {
			t.Errorf("query-commands lacks %s", n)
		}
	}
	// The schema names every command, and every type it refers to is defined.
	schema := c.do(`{"execute":"query-qmp-schema"}`)["return"].([]any)
	defined, refs := map[string]bool{}, map[string]bool{}
	cmds := 0
	for _, x := range schema {
		e := x.(map[string]any)
		defined[e["name"].(string)] = true
		for _, k := range []string{"arg-type", "ret-type", "element-type"} {
			if v, ok := e[k].(string); ok {
				refs[v] = true
			}
		}
		if ms, ok := e["members"].([]any); ok {
			for _, m := range ms {
				refs[m.(map[string]any)["type"].(string)] = true
			}
		}
		if e["meta-type"] == "command" {
			cmds++
		}
	}
	for r := range refs {
		if !defined[r] {
			t.Errorf("schema refers to undefined type %q", r)
		}
	}
	if cmds != len(names) {
		t.Errorf("schema has %d commands, query-commands %d", cmds, len(names))
	}
	// quit: SHUTDOWN before the return, then the machine's Quit.
	c.ev = nil
	c.c.Write([]byte(`{"execute":"quit"}`))
	if e := c.read(); e["event"] != "SHUTDOWN" || e["data"].(map[string]any)["reason"] != "host-qmp-quit" {
		t.Fatalf("quit: first %v, want SHUTDOWN", e)
	}
	if r := c.read(); r["return"] == nil {
		t.Fatalf("quit reply %v", r)
	}
	time.Sleep(10 * time.Millisecond)
	f.mu.Lock()
	q := f.quits
	f.mu.Unlock()
	if q != 1 {
		t.Errorf("Quit called %d times", q)
	}
}

func jsonStr(s string) string { b, _ := json.Marshal(s); return string(b) }

// TestHostileClients: oversized and deeply nested messages, and binary garbage, get one
// error each and the session goes on; events reach only negotiated sessions; a client
// that never reads is dropped with its queue bounded, while another keeps working.
func TestHostileClients(t *testing.T) {
	f, s, dial := start(t, Options{MaxMessage: 64 << 10, MaxQueue: 256 << 10})
	c := dial()
	c.do(`{"execute":"qmp_capabilities"}`)
	huge := `{"execute":"query-status","arguments":{"x":"` + strings.Repeat("A", 1<<20) + `"}}`
	go c.c.Write([]byte(huge))
	if cl, d := errOf(c.reply()); cl != GenericError || !strings.Contains(d, "exceeds 65536 bytes") {
		t.Errorf("huge message: %s %q", cl, d)
	}
	deep := strings.Repeat("[", 2000) + strings.Repeat("]", 2000)
	if _, d := errOf(c.do(deep)); !strings.Contains(d, "nesting depth") {
		t.Errorf("deep nesting: %q", d)
	}
	if cl, _ := errOf(c.do("\x00\xff\x01")); cl != GenericError {
		t.Errorf("binary garbage: %s", cl)
	}
	c.ev = nil // three errors for three stray bytes
	for range 2 {
		c.reply()
	}
	if r := c.do(`{"execute":"query-status"}`); r["return"] == nil {
		t.Fatalf("session unusable after hostile input: %v", r)
	}

	// An unnegotiated session sees no events.
	quiet := dial()
	f.Stop()
	f.Cont()
	quiet.c.Write([]byte(`{"execute":"qmp_capabilities"}`))
	if r := quiet.read(); r["return"] == nil {
		t.Fatalf("unnegotiated session got %v before its reply", r)
	}

	// A client that sends but never reads: its queue fills and it is dropped.
	a, b := net.Pipe()
	done := make(chan struct{})
	go func() { s.Handle(b, b, b, QMP); close(done) }()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	go func() {
		for i := 0; ; i++ {
			a.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := a.Write([]byte(`{"execute":"query-qmp-schema"}`)); err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("a client that never reads was not dropped")
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grow := int64(after.HeapAlloc) - int64(before.HeapAlloc); grow > 32<<20 {
		t.Errorf("heap grew %d MiB while serving a stuck client", grow>>20)
	}
	// The well-behaved client still works.
	if r := c.do(`{"execute":"query-status"}`); r["return"] == nil {
		t.Fatalf("other client broken: %v", r)
	}
}

// TestSocketsAndHMP serves QMP and HMP on Unix sockets with several clients at once.
func TestSocketsAndHMP(t *testing.T) {
	f := &fake{status: Running}
	s := NewServer(f, Options{Package: "gemu-test"})
	f.srv = s
	defer s.Close()
	dir := t.TempDir()
	ql, err := net.Listen("unix", filepath.Join(dir, "qmp"))
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("unix", filepath.Join(dir, "hmp"))
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ql, QMP)
	go s.Serve(hl, HMP)
	var cs []*client
	for range 3 {
		conn, err := net.Dial("unix", filepath.Join(dir, "qmp"))
		if err != nil {
			t.Fatal(err)
		}
		c := &client{t: t, c: conn, r: bufio.NewReader(conn)}
		c.read()
		c.do(`{"execute":"qmp_capabilities"}`)
		cs = append(cs, c)
	}
	h, err := net.Dial("unix", filepath.Join(dir, "hmp"))
	if err != nil {
		t.Fatal(err)
	}
	hr := bufio.NewReader(h)
	h.SetDeadline(time.Now().Add(5 * time.Second))
	banner, _ := hr.ReadString('\n')
	if !strings.HasPrefix(banner, "QEMU 7.2.0 monitor") {
		t.Fatalf("HMP banner %q", banner)
	}
	h.Write([]byte("stop\ninfo status\n"))
	for _, c := range cs {
		if e := c.read(); e["event"] != "STOP" {
			t.Errorf("client did not see the HMP stop: %v", e)
		}
	}
	var out strings.Builder
	for !strings.Contains(out.String(), "VM status: paused") {
		b, err := hr.ReadByte()
		if err != nil {
			t.Fatalf("HMP output %q: %v", out.String(), err)
		}
		out.WriteByte(b)
	}
	if f.Status() != Paused {
		t.Error("HMP stop did not stop")
	}
}

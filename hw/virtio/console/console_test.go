package console

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

// fakeChar is a chardev.Backend whose output the test reads and whose input it sends.
type fakeChar struct {
	mu   sync.Mutex
	out  bytes.Buffer
	recv func(byte)
}

func (f *fakeChar) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.out.Write(p)
}
func (f *fakeChar) SetReceiver(r func(byte)) { f.mu.Lock(); f.recv = r; f.mu.Unlock() }
func (f *fakeChar) Close() error             { return nil }
func (f *fakeChar) send(s string) {
	f.mu.Lock()
	r := f.recv
	f.mu.Unlock()
	for i := 0; i < len(s); i++ {
		r(s[i])
	}
}
func (f *fakeChar) output() string { f.mu.Lock(); defer f.mu.Unlock(); return f.out.String() }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// driver is the guest side: rings per queue and the buffers it posted.
type driver struct {
	t     *testing.T
	mem   *virtiotest.Mem
	rings []*virtiotest.Ring
	tr    *virtio.Transport
	bufs  map[[2]int]uint64 // (queue, head) -> buffer GPA
}

func newDriver(t *testing.T, d *Device, multiport bool) *driver {
	m := virtiotest.NewMem(0x4000_0000, 16<<20)
	t.Cleanup(func() { m.Close() })
	n := len(d.QueueMax())
	dr := &driver{t: t, mem: m, bufs: map[[2]int]uint64{}}
	for i := 0; i < n; i++ {
		dr.rings = append(dr.rings, virtiotest.NewRing(m, 16, 0x4000_0000+uint64(i)*(128<<10), 96<<10))
	}
	want := uint64(1 << FEmergWrite)
	if multiport {
		want |= 1 << FMultiport
	}
	dr.tr = virtiotest.Bringup(d, m, &virtiotest.IRQ{}, want, dr.rings...)
	if !dr.tr.Active() {
		t.Fatalf("bring-up: %v", dr.tr.Err())
	}
	t.Cleanup(func() { dr.tr.SetStatus(0) })
	return dr
}

func (dr *driver) post(q int, n uint32) {
	head, gpas := dr.rings[q].Add(virtiotest.Buf{Write: n})
	dr.bufs[[2]int{q, int(head)}] = gpas[0]
	dr.tr.Notify(uint32(q))
}

func (dr *driver) send(q int, data []byte) {
	dr.rings[q].Add(virtiotest.Buf{Data: data})
	dr.tr.Notify(uint32(q))
	if _, _, ok := dr.rings[q].WaitUsed(5 * time.Second); !ok {
		dr.t.Fatalf("queue %d: buffer not consumed", q)
	}
}

// recv waits for the next used buffer of queue q and returns its contents.
func (dr *driver) recv(q int) []byte {
	dr.t.Helper()
	id, ln, ok := dr.rings[q].WaitUsed(5 * time.Second)
	if !ok {
		dr.t.Fatalf("queue %d: nothing received", q)
	}
	return append([]byte(nil), dr.mem.At(dr.bufs[[2]int{q, int(id)}], uint64(ln))...)
}

func ctrl(id uint32, ev, val uint16) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b, id)
	binary.LittleEndian.PutUint16(b[4:], ev)
	binary.LittleEndian.PutUint16(b[6:], val)
	return b
}

func parse(b []byte) string {
	if len(b) < 8 {
		return fmt.Sprintf("short(%d)", len(b))
	}
	s := fmt.Sprintf("%d:%d:%d", binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint16(b[4:]), binary.LittleEndian.Uint16(b[6:]))
	if len(b) > 8 {
		s += fmt.Sprintf(":%q", b[8:])
	}
	return s
}

func TestMultiportHandshake(t *testing.T) {
	con, agent := &fakeChar{}, &fakeChar{}
	// The serial port comes first in the list but the console still gets port 0.
	d, err := New(Config{Multiport: true, Ports: []Port{{Name: "org.gemu.agent", Backend: agent}, {Console: true, Backend: con}}})
	if err != nil {
		t.Fatal(err)
	}
	if d.PortNumber(0) != 1 || d.PortNumber(1) != 0 {
		t.Fatalf("port numbers %d %d", d.PortNumber(0), d.PortNumber(1))
	}
	if n := len(d.QueueMax()); n != 6 {
		t.Fatalf("%d queues, want 6 (two ports + control)", n)
	}
	var cfg [8]byte
	d.ReadConfig(0, cfg[:])
	if binary.LittleEndian.Uint32(cfg[4:]) != 2 {
		t.Fatal("max_nr_ports")
	}
	dr := newDriver(t, d, true)
	if dr.tr.DriverFeatures()&(1<<FMultiport) == 0 {
		t.Fatal("multiport not negotiated")
	}
	for i := 0; i < 8; i++ {
		dr.post(2, 64)
	}
	// Host input typed before the guest opens the console is held.
	con.send("early ")
	dr.post(0, 64)
	dr.post(4, 64)

	dr.send(3, ctrl(0xffffffff, EvDeviceReady, 1))
	if got := []string{parse(dr.recv(2)), parse(dr.recv(2))}; got[0] != "0:1:1" || got[1] != "1:1:1" {
		t.Fatalf("DEVICE_ADD messages %v", got)
	}
	dr.send(3, ctrl(0, EvPortReady, 1))
	if got := []string{parse(dr.recv(2)), parse(dr.recv(2))}; got[0] != "0:4:1" || got[1] != "0:6:1" {
		t.Fatalf("console port messages %v", got)
	}
	dr.send(3, ctrl(1, EvPortReady, 1))
	if got := []string{parse(dr.recv(2)), parse(dr.recv(2))}; got[0] != `1:7:1:"org.gemu.agent\x00"` || got[1] != "1:6:1" {
		t.Fatalf("serial port messages %v", got)
	}
	if dr.rings[0].UsedIdx() != 0 {
		t.Fatal("input delivered before the guest opened the port")
	}
	// Linux's init_port_console opens the console.
	dr.send(3, ctrl(0, EvPortOpen, 1))
	if got := string(dr.recv(0)); got != "early " {
		t.Fatalf("console input %q", got)
	}
	// Guest output on each port reaches its own backend.
	dr.send(1, []byte("Linux version 6.x"))
	dr.send(5, []byte("agent hello"))
	waitFor(t, "console output", func() bool { return con.output() == "Linux version 6.x" })
	waitFor(t, "agent output", func() bool { return agent.output() == "agent hello" })
	// Input to the serial port waits for its PORT_OPEN.
	agent.send("ping")
	time.Sleep(10 * time.Millisecond)
	if dr.rings[4].UsedIdx() != 0 {
		t.Fatal("serial port input before open")
	}
	dr.send(3, ctrl(1, EvPortOpen, 1))
	if got := string(dr.recv(4)); got != "ping" {
		t.Fatalf("agent input %q", got)
	}
	// Input that arrives with buffers posted goes straight in.
	dr.post(0, 4)
	con.send("abcdef")
	if got := string(dr.recv(0)); got != "abcd" {
		t.Fatalf("input chunk %q", got)
	}
	dr.post(0, 64)
	if got := string(dr.recv(0)); got != "ef" {
		t.Fatalf("input rest %q", got)
	}
	// Emergency write goes to port 0's backend.
	var w [4]byte
	w[0] = '!'
	dr.tr.WriteConfig(8, w[:])
	waitFor(t, "emergency write", func() bool { return con.output() == "Linux version 6.x!" })
}

func TestHostileControl(t *testing.T) {
	con := &fakeChar{}
	d, _ := New(Config{Multiport: true, Ports: []Port{{Console: true, Backend: con}}})
	dr := newDriver(t, d, true)
	// Short, unknown and out-of-range messages are consumed and ignored.
	dr.send(3, []byte{1, 2, 3})
	dr.send(3, ctrl(0, 99, 1))
	dr.send(3, ctrl(7, EvPortReady, 1))
	dr.send(3, ctrl(0xffffffff, EvPortOpen, 1))
	// A flood of DEVICE_READY with no receive buffers is held to the backlog bound.
	for i := 0; i < 2*ctrlBacklog; i += 16 {
		for k := 0; k < 16; k++ {
			dr.rings[3].Add(virtiotest.Buf{Data: ctrl(0, EvDeviceReady, 1)})
		}
		dr.tr.Notify(3)
		for k := 0; k < 16; k++ {
			if _, _, ok := dr.rings[3].WaitUsed(5 * time.Second); !ok {
				t.Fatal("control message not consumed")
			}
		}
	}
	d.mu.Lock()
	n := len(d.ctrlOut)
	d.mu.Unlock()
	if n != ctrlBacklog {
		t.Fatalf("backlog %d, want %d", n, ctrlBacklog)
	}
	if dr.tr.Status()&virtio.StatusNeedsReset != 0 {
		t.Fatal("ignored messages broke the device")
	}
	// Host input beyond the bound is counted, not held.
	con.send(string(make([]byte, inputLimit+10)))
	if d.Dropped(0) != 10 {
		t.Fatalf("dropped %d", d.Dropped(0))
	}
}

func TestSingleConsole(t *testing.T) {
	con := &fakeChar{}
	d, err := New(Config{Ports: []Port{{Console: true, Backend: con}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.QueueMax()) != 2 || d.Features()&(1<<FMultiport) != 0 {
		t.Fatal("single console layout")
	}
	dr := newDriver(t, d, false)
	dr.post(0, 64)
	con.send("root\n")
	if got := string(dr.recv(0)); got != "root\n" {
		t.Fatalf("input %q", got)
	}
	dr.send(1, []byte("login: "))
	waitFor(t, "output", func() bool { return con.output() == "login: " })
	if _, err := New(Config{Ports: []Port{{Name: "x"}}}); err == nil {
		t.Fatal("non-console single port accepted")
	}
	if _, err := New(Config{Ports: []Port{{Console: true}, {Console: true}}}); err == nil {
		t.Fatal("two ports without multiport accepted")
	}
	if _, err := d.AddPort(Port{Console: true}); err == nil {
		t.Fatal("AddPort on a single-console device accepted")
	}
	if _, err := New(Config{}); err == nil {
		t.Fatal("single-console device without a port accepted")
	}
}

// A multiport device whose driver declines MULTIPORT works as a single console.
func TestMultiportDeclined(t *testing.T) {
	con := &fakeChar{}
	d, _ := New(Config{Multiport: true, Ports: []Port{{Console: true, Backend: con}, {Name: "p"}}})
	dr := newDriver(t, d, false)
	dr.post(0, 16)
	con.send("x")
	if got := string(dr.recv(0)); got != "x" {
		t.Fatalf("input %q", got)
	}
}

func TestResetAndReinit(t *testing.T) {
	con := &fakeChar{}
	d, _ := New(Config{Multiport: true, Ports: []Port{{Console: true, Backend: con}}})
	dr := newDriver(t, d, true)
	dr.post(2, 64)
	dr.send(3, ctrl(0, EvDeviceReady, 1))
	dr.recv(2)
	dr.tr.SetStatus(0)
	if dr.tr.Active() {
		t.Fatal("active after reset")
	}
	// After reset the port is closed again: input is held.
	con.send("z")
	dr2 := newDriver(t, d, true)
	dr2.post(0, 16)
	time.Sleep(10 * time.Millisecond)
	if dr2.rings[0].UsedIdx() != 0 {
		t.Fatal("input delivered to a port the new driver has not opened")
	}
	dr2.send(3, ctrl(0, EvPortOpen, 1))
	if got := string(dr2.recv(0)); got != "z" {
		t.Fatalf("held input %q", got)
	}
}

// A bare virtio-serial (no ports yet) gets its ports from AddPort, numbered as QEMU
// numbers them, and a console added after serial ports still becomes port 0.
func TestAddPort(t *testing.T) {
	d, err := New(Config{Multiport: true, MaxPorts: 4})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(d.QueueMax()); n != 10 {
		t.Fatalf("%d queues for max_ports 4", n)
	}
	con := &fakeChar{}
	for i, want := range []struct {
		p  Port
		nr int
	}{{Port{Name: "a"}, 1}, {Port{Name: "b"}, 2}, {Port{Console: true, Backend: con}, 0}, {Port{Console: true}, 3}} {
		nr, err := d.AddPort(want.p)
		if err != nil || nr != want.nr || d.PortNumber(i) != want.nr {
			t.Fatalf("port %d: nr %d err %v, want %d", i, nr, err, want.nr)
		}
	}
	if _, err := d.AddPort(Port{Name: "e"}); err == nil {
		t.Fatal("fifth port in max_ports 4 accepted")
	}
	dr := newDriver(t, d, true)
	dr.post(2, 64)
	dr.send(3, ctrl(0xffffffff, EvDeviceReady, 1))
	if got := parse(dr.recv(2)); got != "0:1:1" {
		t.Fatalf("first DEVICE_ADD %s", got)
	}
	if _, err := d.AddPort(Port{Name: "late"}); err == nil {
		t.Fatal("AddPort after activation accepted")
	}
	// A device with no ports at all runs and answers DEVICE_READY with nothing.
	empty, err := New(Config{Multiport: true, MaxPorts: 31})
	if err != nil {
		t.Fatal(err)
	}
	dr2 := newDriver(t, empty, true)
	dr2.post(2, 64)
	dr2.send(3, ctrl(0xffffffff, EvDeviceReady, 1))
	time.Sleep(10 * time.Millisecond)
	if dr2.rings[2].UsedIdx() != 0 || dr2.tr.Status()&virtio.StatusNeedsReset != 0 {
		t.Fatal("empty virtio-serial misbehaved")
	}
	var w [4]byte
	dr2.tr.WriteConfig(8, w[:]) // emergency write without port 0: dropped
}

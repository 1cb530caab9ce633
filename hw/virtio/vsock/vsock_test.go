package vsock

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

const (
	ramBase  = 0x4000_0000
	guestCID = 3
	rxBufLen = hdrSize + 4096
)

// guest plays the Linux driver over virtiotest rings.
type guest struct {
	t          *testing.T
	m          *virtiotest.Mem
	tr         *virtio.Transport
	rx, tx, ev *virtiotest.Ring
	rxGPA      map[uint32]uint64 // rx head → buffer
	evGPA      map[uint32]uint64
}

func newGuest(t *testing.T, d *Device) *guest {
	t.Helper()
	m := virtiotest.NewMem(ramBase, 128<<20)
	g := &guest{t: t, m: m, rxGPA: map[uint32]uint64{}, evGPA: map[uint32]uint64{}}
	g.rx = virtiotest.NewRing(m, 256, ramBase, 48<<20)
	g.tx = virtiotest.NewRing(m, 256, ramBase+50<<20, 48<<20)
	g.ev = virtiotest.NewRing(m, 16, ramBase+100<<20, 1<<20)
	g.tr = virtiotest.Bringup(d, m, &virtiotest.IRQ{}, 0, g.rx, g.tx, g.ev)
	t.Cleanup(func() { g.tr.SetStatus(0); m.Close() })
	if !g.tr.Active() {
		t.Fatal("device did not start")
	}
	g.post(64)
	h, gp := g.ev.Add(virtiotest.Buf{Write: 4})
	g.evGPA[uint32(h)] = gp[0]
	g.tr.Notify(2)
	return g
}

// post makes n more rx buffers available.
func (g *guest) post(n int) {
	for range n {
		h, gp := g.rx.Add(virtiotest.Buf{Write: rxBufLen})
		g.rxGPA[uint32(h)] = gp[0]
	}
	g.tr.Notify(0)
}

func (g *guest) hdr(op uint16, guestPort, hostPort uint32) Header {
	return Header{SrcCID: guestCID, DstCID: HostCID, SrcPort: guestPort, DstPort: hostPort, Type: TypeStream, Op: op, BufAlloc: 1 << 20}
}

// send puts one packet on the tx queue and waits for the device to complete it.
func (g *guest) send(h Header, payload []byte) {
	g.t.Helper()
	h.Len = uint32(len(payload))
	var hb [hdrSize]byte
	h.Encode(hb[:])
	bufs := []virtiotest.Buf{{Data: hb[:]}}
	if len(payload) > 0 {
		bufs = append(bufs, virtiotest.Buf{Data: payload})
	}
	g.tx.Add(bufs...)
	g.tr.Notify(1)
	if _, _, ok := g.tx.WaitUsed(5 * time.Second); !ok {
		g.t.Fatal("tx packet not completed")
	}
}

// recv waits for the device's next packet, reposting its buffer.
func (g *guest) recv(d time.Duration) (Header, []byte, bool) {
	id, ln, ok := g.rx.WaitUsed(d)
	if !ok {
		return Header{}, nil, false
	}
	gpa := g.rxGPA[id]
	delete(g.rxGPA, id)
	b := append([]byte(nil), g.m.At(gpa, uint64(ln))...)
	g.post(1)
	if len(b) < hdrSize {
		g.t.Fatalf("rx packet of %d bytes", len(b))
	}
	h := DecodeHeader(b)
	if int(h.Len) != len(b)-hdrSize {
		g.t.Fatalf("rx header len %d, used length %d", h.Len, len(b))
	}
	return h, b[hdrSize:], true
}

func (g *guest) expect(op uint16) (Header, []byte) {
	g.t.Helper()
	h, p, ok := g.recv(5 * time.Second)
	if !ok {
		g.t.Fatalf("no packet (wanted op %d)", op)
	}
	if h.Op != op {
		g.t.Fatalf("got op %d (%+v), want %d", h.Op, h, op)
	}
	if h.SrcCID != HostCID || h.DstCID != guestCID || h.Type != TypeStream {
		g.t.Fatalf("header addressing %+v", h)
	}
	return h, p
}

func (g *guest) needsReset() bool { return g.tr.Status()&virtio.StatusNeedsReset != 0 }

// pairBackend dials one end of a fresh socketpair per guest connection and hands the
// other end to the test.
type pairBackend struct {
	mu      sync.Mutex
	refuse  map[uint32]bool
	conns   chan *net.UnixConn
	dialled []uint32
}

func newPairBackend() *pairBackend {
	return &pairBackend{refuse: map[uint32]bool{}, conns: make(chan *net.UnixConn, 512)}
}

func socketpair() (*net.UnixConn, *net.UnixConn) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		panic(err)
	}
	mk := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "sp")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			panic(err)
		}
		return c.(*net.UnixConn)
	}
	return mk(fds[0]), mk(fds[1])
}

func (b *pairBackend) Dial(port uint32) (Conn, error) {
	b.mu.Lock()
	b.dialled = append(b.dialled, port)
	refuse := b.refuse[port]
	b.mu.Unlock()
	if refuse {
		return nil, errors.New("connection refused")
	}
	a, c := socketpair()
	b.conns <- c
	return a, nil
}

func newDevice(t *testing.T, be Backend) *Device {
	t.Helper()
	d, err := New(Config{GuestCID: guestCID, Backend: be, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestConfig(t *testing.T) {
	for _, cid := range []uint64{0, 1, 2, 1<<32 - 1, 1 << 40} {
		if _, err := New(Config{GuestCID: cid, Backend: newPairBackend()}); err == nil {
			t.Errorf("guest-cid %d accepted", cid)
		}
	}
	d := newDevice(t, newPairBackend())
	if d.DeviceID() != 19 || len(d.QueueMax()) != 3 || d.Features() != 0 {
		t.Fatalf("id %d queues %d features %#x", d.DeviceID(), len(d.QueueMax()), d.Features())
	}
	b := make([]byte, 12)
	d.ReadConfig(0, b)
	if binary.LittleEndian.Uint64(b) != guestCID || !bytes.Equal(b[8:], make([]byte, 4)) {
		t.Fatalf("config % x", b)
	}
	d.ReadConfig(4, b[:4])
	if !bytes.Equal(b[:4], make([]byte, 4)) {
		t.Fatalf("config high half % x", b[:4])
	}
}

// TestGuestConnect: REQUEST → the backend dials the port → RESPONSE; data both ways;
// a half-close each way; SHUTDOWN of both directions → the host end closes and the
// guest gets its RST.
func TestGuestConnect(t *testing.T) {
	be := newPairBackend()
	d := newDevice(t, be)
	g := newGuest(t, d)
	g.send(g.hdr(OpRequest, 40000, 1234), nil)
	h, _ := g.expect(OpResponse)
	if h.SrcPort != 1234 || h.DstPort != 40000 || h.BufAlloc != BufAlloc || h.FwdCnt != 0 {
		t.Fatalf("response %+v", h)
	}
	host := <-be.conns
	g.send(g.hdr(OpRW, 40000, 1234), []byte("hello host"))
	buf := make([]byte, 64)
	host.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := host.Read(buf)
	if err != nil || string(buf[:n]) != "hello host" {
		t.Fatalf("host read %q %v", buf[:n], err)
	}
	host.Write([]byte("hello guest"))
	h, p := g.expect(OpRW)
	if string(p) != "hello guest" || h.SrcPort != 1234 || h.DstPort != 40000 {
		t.Fatalf("guest got %q %+v", p, h)
	}
	// The guest stops sending: the host sees EOF but can still send.
	g.send(Header{SrcCID: guestCID, DstCID: HostCID, SrcPort: 40000, DstPort: 1234, Type: TypeStream, Op: OpShutdown, Flags: ShutSend, BufAlloc: 1 << 20, FwdCnt: 11}, nil)
	if n, err := host.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("host read after guest SHUT_WR: %d %v", n, err)
	}
	host.Write([]byte("more"))
	if _, p := g.expect(OpRW); string(p) != "more" {
		t.Fatalf("after half-close: %q", p)
	}
	// The host stops sending: SHUTDOWN(SEND) to the guest.
	host.CloseWrite()
	if h, _ := g.expect(OpShutdown); h.Flags != ShutSend {
		t.Fatalf("shutdown flags %d", h.Flags)
	}
	g.send(Header{SrcCID: guestCID, DstCID: HostCID, SrcPort: 40000, DstPort: 1234, Type: TypeStream, Op: OpShutdown, Flags: ShutSend | ShutRcv, BufAlloc: 1 << 20}, nil)
	g.expect(OpRst)
	if d.Conns() != 0 {
		t.Fatalf("%d connections left", d.Conns())
	}
}

// TestGuestConnectRefused: nobody listens on the host port → RST (the guest's
// connect fails with ECONNRESET); a packet on no connection gets RST; an RST on none
// gets nothing.
func TestGuestConnectRefused(t *testing.T) {
	be := newPairBackend()
	be.refuse[99] = true
	d := newDevice(t, be)
	g := newGuest(t, d)
	g.send(g.hdr(OpRequest, 5000, 99), nil)
	if h, _ := g.expect(OpRst); h.SrcPort != 99 || h.DstPort != 5000 {
		t.Fatalf("rst %+v", h)
	}
	g.send(g.hdr(OpRW, 5001, 98), []byte("x"))
	g.expect(OpRst)
	g.send(g.hdr(OpRst, 5002, 97), nil)
	g.send(g.hdr(OpRequest, 5003, 96), nil) // a good one after: the RST above got no reply
	g.expect(OpResponse)
	// Wrong addressing is dropped, wrong type refused.
	h := g.hdr(OpRequest, 5004, 96)
	h.SrcCID = 7
	g.send(h, nil)
	h = g.hdr(OpRequest, 5005, 96)
	h.Type = TypeSeqpacket
	g.send(h, nil)
	if h, _ := g.expect(OpRst); h.DstPort != 5005 {
		t.Fatalf("seqpacket request answered %+v", h)
	}
	if d.Conns() != 1 {
		t.Fatalf("%d connections, want 1", d.Conns())
	}
}

// TestHostConnect: Firecracker's handshake on the Unix socket: CONNECT → REQUEST to the
// guest's port → RESPONSE → "OK <hostport>\n", then the stream; and the refusals: the
// guest answers RST, or does not answer at all, or the line is malformed → the host
// connection is closed.
func TestHostConnect(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	u, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	d := newDevice(t, u)
	u.Attach(d)
	g := newGuest(t, d)

	hc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	hc.Write([]byte("CONNECT 5000\nearly bytes"))
	req, _ := g.expect(OpRequest)
	if req.DstPort != 5000 || req.SrcPort != firstHostPort || req.BufAlloc != BufAlloc {
		t.Fatalf("request %+v", req)
	}
	rsp := g.hdr(OpResponse, 5000, req.SrcPort)
	g.send(rsp, nil)
	hc.SetReadDeadline(time.Now().Add(5 * time.Second))
	want := fmt.Sprintf("OK %d\n", firstHostPort)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(hc, got); err != nil || string(got) != want {
		t.Fatalf("greeting %q %v", got, err)
	}
	if _, p := g.expect(OpRW); string(p) != "early bytes" {
		t.Fatalf("stream after CONNECT line: %q", p)
	}
	g.send(g.hdr(OpRW, 5000, req.SrcPort), []byte("from guest"))
	got = make([]byte, 10)
	if _, err := io.ReadFull(hc, got); err != nil || string(got) != "from guest" {
		t.Fatalf("host got %q %v", got, err)
	}

	// Refused by the guest (no listener: its RST).
	h2 := dialConnect(t, path, "CONNECT 6000\n")
	req, _ = g.expect(OpRequest)
	if req.DstPort != 6000 || req.SrcPort != firstHostPort+1 {
		t.Fatalf("second request %+v", req)
	}
	g.send(g.hdr(OpRst, 6000, req.SrcPort), nil)
	expectClosed(t, h2)
	// No answer: closed after the request timeout, with an RST to the guest.
	h3 := dialConnect(t, path, "CONNECT 6001\n")
	req, _ = g.expect(OpRequest)
	expectClosed(t, h3)
	if h, _ := g.expect(OpRst); h.SrcPort != req.SrcPort {
		t.Fatalf("rst %+v after timeout", h)
	}
	for _, bad := range []string{"CONNECT\n", "CONNECT x\n", "connect 5\n", "CONNECT 99999999999\n", "CONNECT 1 2\n", "CONNECT 00000000000000000000000000000001\n"} {
		expectClosed(t, dialConnect(t, path, bad))
	}
	if d.Conns() != 1 {
		t.Fatalf("%d connections, want 1", d.Conns())
	}
}

func dialConnect(t *testing.T, path, line string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.Write([]byte(line))
	return c
}

func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [16]byte
	n, err := c.Read(b[:])
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("host connection not closed: read %q %v", b[:n], err)
	}
}

// TestFlowControl: the device sends no more than the guest's credit, asks for credit
// when it has data and none left, resumes on CREDIT_UPDATE; it announces its own
// credit as the host drains, and resets a guest that overruns it.
func TestFlowControl(t *testing.T) {
	be := newPairBackend()
	d := newDevice(t, be)
	g := newGuest(t, d)
	req := g.hdr(OpRequest, 1, 80)
	req.BufAlloc = 10000
	g.send(req, nil)
	g.expect(OpResponse)
	host := <-be.conns
	data := make([]byte, 50000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	go host.Write(data)
	var got []byte
	fwd := uint32(0)
	for len(got) < len(data) {
		h, p, ok := g.recv(5 * time.Second)
		if !ok {
			t.Fatalf("stalled at %d bytes", len(got))
		}
		switch h.Op {
		case OpRW:
			got = append(got, p...)
			if uint32(len(got))-fwd > 10000 {
				t.Fatalf("device sent %d bytes beyond the guest's fwd_cnt %d (buf_alloc 10000)", uint32(len(got))-fwd, fwd)
			}
		case OpCreditRequest:
			if uint32(len(got))-fwd != 10000 {
				t.Fatalf("credit request with %d bytes in flight", uint32(len(got))-fwd)
			}
			fwd = uint32(len(got))
			u := g.hdr(OpCreditUpdate, 1, 80)
			u.BufAlloc, u.FwdCnt = 10000, fwd
			g.send(u, nil)
		default:
			t.Fatalf("op %d during transfer", h.Op)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("data corrupted")
	}
	// Guest → host: the device announces credit as the host reads.
	chunk := make([]byte, 32<<10)
	sent := 0
	readDone := make(chan int)
	go func() {
		n, _ := io.ReadFull(host, make([]byte, BufAlloc))
		readDone <- n
	}()
	for sent < BufAlloc {
		w := g.hdr(OpRW, 1, 80)
		w.BufAlloc, w.FwdCnt = 10000, fwd
		g.send(w, chunk)
		sent += len(chunk)
	}
	if n := <-readDone; n != BufAlloc {
		t.Fatalf("host read %d", n)
	}
	h, _ := g.expect(OpCreditUpdate)
	if h.FwdCnt < BufAlloc/2 || h.BufAlloc != BufAlloc {
		t.Fatalf("credit update %+v", h)
	}
	// Overrun: more than buf_alloc beyond the announced fwd_cnt. Stop the host reading
	// first so the device's buffer fills.
	for i := 0; i < BufAlloc/len(chunk)+1 && d.Conns() == 1; i++ {
		w := g.hdr(OpRW, 1, 80)
		w.BufAlloc, w.FwdCnt = 10000, fwd
		host.SetReadDeadline(time.Now()) // the host stops reading
		g.send(w, append(chunk, chunk...))
	}
	for {
		h, _, ok := g.recv(5 * time.Second)
		if !ok {
			t.Fatal("no RST for the overrun")
		}
		if h.Op == OpRst {
			break
		}
	}
	if d.Conns() != 0 {
		t.Fatal("overrunning connection kept")
	}
}

// TestBulk moves 4 MiB each way at once, with the guest honouring and granting credit
// as Linux does, and checks both by sha256.
func TestBulk(t *testing.T) {
	be := newPairBackend()
	d := newDevice(t, be)
	g := newGuest(t, d)
	g.send(g.hdr(OpRequest, 7, 7), nil)
	g.expect(OpResponse)
	host := <-be.conns
	const size = 4 << 20
	up := make([]byte, size)
	down := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range up {
		up[i], down[i] = byte(r.Uint32()), byte(r.Uint32())
	}
	hostGot := make(chan [32]byte)
	go func() {
		h := sha256.New()
		io.Copy(h, host)
		var s [32]byte
		copy(s[:], h.Sum(nil))
		hostGot <- s
	}()
	go func() {
		host.Write(down)
		host.CloseWrite()
	}()
	// The guest alternates: send while the device's credit allows, drain what arrived.
	var devFwd, devAlloc uint32 = 0, BufAlloc
	sent, rcvd, guestFwd := 0, 0, uint32(0)
	gh := sha256.New()
	eof := false
	for !eof || sent < size {
		for sent < size {
			credit := int(devAlloc - (uint32(sent) - devFwd))
			n := min(credit, 4096, size-sent)
			if n <= 0 {
				break
			}
			w := g.hdr(OpRW, 7, 7)
			w.FwdCnt = guestFwd
			g.send(w, up[sent:sent+n])
			sent += n
		}
		h, p, ok := g.recv(10 * time.Second)
		if !ok {
			t.Fatalf("stalled: sent %d received %d", sent, rcvd)
		}
		devFwd, devAlloc = h.FwdCnt, h.BufAlloc
		switch h.Op {
		case OpRW:
			gh.Write(p)
			rcvd += len(p)
			guestFwd += uint32(len(p))
			if guestFwd%(256<<10) < 4096 { // Linux grants credit as it reads
				u := g.hdr(OpCreditUpdate, 7, 7)
				u.FwdCnt = guestFwd
				g.send(u, nil)
			}
		case OpShutdown:
			eof = true
		case OpCreditUpdate:
		case OpCreditRequest:
			u := g.hdr(OpCreditUpdate, 7, 7)
			u.FwdCnt = guestFwd
			g.send(u, nil)
		default:
			t.Fatalf("op %d", h.Op)
		}
	}
	if rcvd != size || !bytes.Equal(gh.Sum(nil), sha(down)) {
		t.Fatalf("guest received %d bytes, hash mismatch %v", rcvd, rcvd == size)
	}
	g.send(g.hdr(OpShutdown, 7, 7), nil) // flags 0: nothing
	s := g.hdr(OpShutdown, 7, 7)
	s.Flags = ShutSend | ShutRcv
	g.send(s, nil)
	if got := <-hostGot; !bytes.Equal(got[:], sha(up)) {
		t.Fatal("host received data with the wrong hash")
	}
	for {
		h, _, ok := g.recv(5 * time.Second)
		if !ok {
			t.Fatal("no RST after SHUTDOWN")
		}
		if h.Op == OpRst {
			break
		}
	}
}

func sha(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// TestMaxConns: requests past MaxConns are refused, the connections kept bounded.
func TestMaxConns(t *testing.T) {
	be := newPairBackend()
	d := newDevice(t, be)
	g := newGuest(t, d)
	g.post(192)
	for i := range MaxConns + 8 {
		g.send(g.hdr(OpRequest, uint32(1000+i), 80), nil)
	}
	resp, rst := 0, 0
	for resp+rst < MaxConns+8 {
		h, _, ok := g.recv(5 * time.Second)
		if !ok {
			t.Fatalf("%d responses %d resets", resp, rst)
		}
		switch h.Op {
		case OpResponse:
			resp++
		case OpRst:
			rst++
		}
	}
	if resp != MaxConns || rst != 8 || d.Conns() != MaxConns {
		t.Fatalf("%d responses, %d resets, %d connections", resp, rst, d.Conns())
	}
	g.tr.SetStatus(0) // reset closes every host end
	for range MaxConns {
		c := <-be.conns
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("host end after reset: %v", err)
		}
	}
	if d.Conns() != 0 {
		t.Fatal("connections after reset")
	}
}

// TestHostileChains: chains the device cannot parse set DEVICE_NEEDS_RESET.
func TestHostileChains(t *testing.T) {
	var hb [hdrSize]byte
	long := Header{SrcCID: guestCID, DstCID: HostCID, Type: TypeStream, Op: OpRW, Len: 100}
	long.Encode(hb[:])
	for name, bufs := range map[string][]virtiotest.Buf{
		"short header":        {{Data: make([]byte, 20)}},
		"len beyond chain":    {{Data: hb[:]}, {Data: make([]byte, 10)}},
		"writable only":       {{Write: 64}},
		"header across descs": nil,
	} {
		t.Run(name, func(t *testing.T) {
			d := newDevice(t, newPairBackend())
			g := newGuest(t, d)
			if bufs == nil {
				// Not hostile: a header split over two descriptors works.
				h := g.hdr(OpRequest, 1, 2)
				var b [hdrSize]byte
				h.Encode(b[:])
				g.tx.Add(virtiotest.Buf{Data: b[:10]}, virtiotest.Buf{Data: b[10:]})
				g.tr.Notify(1)
				g.expect(OpResponse)
				return
			}
			g.tx.Add(bufs...)
			g.tr.Notify(1)
			for i := 0; i < 500 && !g.needsReset(); i++ {
				time.Sleep(10 * time.Millisecond)
			}
			if !g.needsReset() {
				t.Fatal("no DEVICE_NEEDS_RESET")
			}
		})
	}
	// An rx buffer too small for a header.
	d := newDevice(t, newPairBackend())
	m := virtiotest.NewMem(ramBase, 8<<20)
	defer m.Close()
	rx := virtiotest.NewRing(m, 16, ramBase, 1<<20)
	tx := virtiotest.NewRing(m, 16, ramBase+2<<20, 1<<20)
	tr := virtiotest.Bringup(d, m, &virtiotest.IRQ{}, 0, rx, tx, nil)
	defer tr.SetStatus(0)
	rx.Add(virtiotest.Buf{Write: 16})
	tr.Notify(0)
	var b [hdrSize]byte
	h := Header{SrcCID: guestCID, DstCID: HostCID, SrcPort: 1, DstPort: 2, Type: TypeStream, Op: OpRW}
	h.Encode(b[:])
	tx.Add(virtiotest.Buf{Data: b[:]}) // RW on no connection → an RST to send
	tr.Notify(1)
	for i := 0; i < 500 && tr.Status()&virtio.StatusNeedsReset == 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if tr.Status()&virtio.StatusNeedsReset == 0 {
		t.Fatal("tiny rx buffer accepted")
	}
}

// TestTransportReset: a device taking over the Unix backend (a rebooted machine's)
// sends TRANSPORT_RESET to its driver; TransportReset on a running device closes every
// connection.
func TestTransportReset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	u, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	first := newDevice(t, u)
	u.Attach(first)
	second := newDevice(t, u)
	u.Attach(second) // the machine was rebuilt
	g := newGuest(t, second)
	if _, ln, ok := g.ev.WaitUsed(5 * time.Second); !ok || ln != 4 {
		t.Fatalf("no transport reset event (%d)", ln)
	}
	for id, gpa := range g.evGPA {
		if v := binary.LittleEndian.Uint32(g.m.At(gpa, 4)); v != EventTransportReset {
			t.Fatalf("event %d id %d", id, v)
		}
	}
	// A connection, then a transport reset: the host end closes, the guest gets the event.
	be := newPairBackend()
	d := newDevice(t, be)
	g = newGuest(t, d)
	g.send(g.hdr(OpRequest, 1, 2), nil)
	g.expect(OpResponse)
	host := <-be.conns
	if _, _, ok := g.ev.PopUsed(); ok {
		t.Fatal("event before the reset")
	}
	d.TransportReset()
	if _, _, ok := g.ev.WaitUsed(5 * time.Second); !ok {
		t.Fatal("no event")
	}
	host.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := host.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("host end after transport reset: %v", err)
	}
	if d.Conns() != 0 {
		t.Fatal("connections kept")
	}
}

// TestStaleSocket: a socket file left by a dead process is replaced; a live one refused.
func TestStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	u, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(path); err == nil {
		t.Fatal("second listener on a live socket")
	}
	u.ln.SetUnlinkOnClose(false)
	u.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatal("stale socket gone already")
	}
	u2, err := ListenUnix(path)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	u2.Close()
	if _, err := ListenUnix(filepath.Join(t.TempDir(), "no", "such", "dir")); err == nil {
		t.Fatal("listen in a missing directory")
	}
}

func TestRing(t *testing.T) {
	q := ring{size: 10}
	var out []byte
	in := []byte("abcdefghijklmnopqrstuvwxyz")
	for len(in) > 0 || q.n > 0 {
		for q.n < q.size && len(in) > 0 {
			k := copy(q.space(), in[:min(len(in), 3)])
			in = in[k:]
			q.commit(k)
		}
		b := q.data()
		k := min(len(b), 4)
		out = append(out, b[:k]...)
		q.consume(k)
	}
	if string(out) != "abcdefghijklmnopqrstuvwxyz" {
		t.Fatalf("%q", out)
	}
}

// TestHandshakeBound: host connections that never send their CONNECT line hold at
// most maxHandshakes slots; the ones past it are closed at once.
func TestHandshakeBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	u, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	var conns []net.Conn
	for range maxHandshakes + 8 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	var closed atomic.Int32
	var wg sync.WaitGroup
	deadline := time.Now().Add(time.Second) // well before handshakeTimeout
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(deadline)
			if _, err := c.Read(make([]byte, 1)); err == io.EOF {
				closed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := closed.Load(); n != 8 {
		t.Fatalf("%d idle connections closed, want 8", n)
	}
}

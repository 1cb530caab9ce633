package netdev

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestQEMUWire uses QEMU as the oracle for the stream wire format: QEMU joins a
// -netdev stream server (which our client backend dials) and a -netdev socket
// client (to our listening backend) on one hub, so every frame one of our backends
// sends crosses QEMU's own framing code on its way to the other.
func TestQEMUWire(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	dir := t.TempDir()
	upath := filepath.Join(dir, "qemu.sock")
	port := freePort(t, "tcp")
	ours, err := Open("socket", getter("listen", fmt.Sprintf("127.0.0.1:%d", port)))
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	cmd := exec.Command(qemu, "-M", "none", "-nographic", "-nodefaults", "-monitor", "none",
		"-netdev", "stream,id=s0,server=on,addr.type=unix,addr.path="+upath,
		"-netdev", fmt.Sprintf("socket,id=s1,connect=127.0.0.1:%d", port),
		"-netdev", "hubport,id=h0,hubid=0,netdev=s0",
		"-netdev", "hubport,id=h1,hubid=0,netdev=s1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var peer Backend
	for i := 0; i < 100; i++ {
		if peer, err = Open("stream", getter("addr.type", "unix", "addr.path", upath)); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("QEMU's stream server never came up: %v; %s", err, stderr.String())
	}
	defer peer.Close()
	waitPeer(t, ours)
	sa, sb := make(frameSink, 16), make(frameSink, 16)
	ours.SetReceiver(sa.recv)
	peer.SetReceiver(sb.recv)
	// QEMU drops frames until its main loop has seen both connections: send a
	// hello each way until one arrives, then drain.
	for _, dir := range []struct {
		from Backend
		to   frameSink
	}{{ours, sb}, {peer, sa}} {
		hello := pattern(64, 77)
		arrived := false
		for i := 0; i < 100 && !arrived; i++ {
			dir.from.Send(hello)
			select {
			case <-dir.to:
				arrived = true
			case <-time.After(100 * time.Millisecond):
			}
		}
		if !arrived {
			t.Fatalf("no frame crossed QEMU; %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
		for len(dir.to) > 0 {
			<-dir.to
		}
	}
	for i, n := range []int{60, 1514, 9014, 65000} {
		f := pattern(n, int64(i))
		ours.Send(f)
		if got := sb.wait(t); !bytes.Equal(got, f) {
			t.Fatalf("socket→QEMU→stream: %d bytes arrived as %d", n, len(got))
		}
		peer.Send(f)
		if got := sa.wait(t); !bytes.Equal(got, f) {
			t.Fatalf("stream→QEMU→socket: %d bytes arrived as %d", n, len(got))
		}
	}
}

// Package vsock holds the whole-system test of virtio-vsock with Firecracker's hybrid
// host side: Debian's arm64 kernel (its vsock and vmw_vsock_virtio_transport modules)
// booted by gemu-system-aarch64 under TCG, with tests/vsock/guestvsock (a static Go
// program, cross-built by the test) in the initramfs. Over -device vhost-vsock-pci and
// -device vhost-vsock-device it checks, against the guest's own AF_VSOCK sockets: a
// guest connection to host port P arriving on the Unix socket PATH_P, a host
// connection through PATH with "CONNECT <port>\n" / "OK <hostport>\n", several MiB each
// way at once on both (sha256 on both ends), and the refusals: a guest connection to a
// port no host process listens on fails with ECONNRESET, a host CONNECT to a guest port
// nobody listens on has its connection closed; and (on MMIO) that after a guest reboot
// the rebuilt machine's device serves the same Unix socket. It drives the built binary, as a user
// does; everything it opens is a Unix socket in its temporary directory.
package vsock

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gemu/tests/assets"
	"gemu/tests/assets/initramfs"
	"gemu/tests/testbin"
)

const (
	size        = 4 << 20 // bytes each way per connection
	guestPort   = 6000    // the guest's listener
	hostPort    = 5000    // the host's listener (PATH_5000)
	refusedPort = 7000    // no PATH_7000
	deadPort    = 6001    // nobody listens in the guest
	askPort     = 5100    // tells the guest which boot it is
	smallSize   = 64 << 10
)

// pattern is what guestvsock sends for seed (and what the host sends the guest for its
// own seeds): PCG(seed, seed)'s Uint64s, little-endian; n is a multiple of 8.
func pattern(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

var (
	buildOnce sync.Once
	emu       string
	initrd    string
	buildErr  error
)

// prepare builds the emulator (or takes $GEMU_BIN's), guestvsock for arm64 and the
// initramfs holding it and the vsock modules, once for the package.
func prepare(t *testing.T) (string, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a Linux guest under TCG: skipped under -short")
	}
	if why := assets.Missing("arm64"); why != "" {
		t.Skip(why)
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gemu-vsock-test")
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
		helper := filepath.Join(dir, "guestvsock")
		cmd := exec.Command("go", "build", "-o", helper, "gemu/tests/vsock/guestvsock")
		cmd.Env = append(os.Environ(), "GOARCH=arm64", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building guestvsock: %v\n%s", err, out)
			return
		}
		kver, err := assets.KernelRelease("arm64")
		if err != nil {
			buildErr = err
			return
		}
		im := initramfs.New()
		im.AddBusybox(filepath.Join(assets.Dir("arm64"), "busybox"))
		moddir := filepath.Join(assets.Dir("arm64"), "root", "lib", "modules", kver)
		if err := im.AddModules(moddir, kver, "virtio_pci", "virtio_mmio", "vmw_vsock_virtio_transport"); err != nil {
			buildErr = err
			return
		}
		im.AddFile("guestvsock", helper, 0o755)
		initrd = filepath.Join(dir, "initrd.gz")
		buildErr = im.WriteFile(initrd)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return emu, initrd
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func TestVsockPCI(t *testing.T) { run(t, "vhost-vsock-pci", "virtio_pci", false) }

// TestVsockMMIO also reboots the guest: the rebuilt machine's device takes the Unix
// socket over, and a host connection through it reaches the second boot's listener.
func TestVsockMMIO(t *testing.T) { run(t, "vhost-vsock-device", "virtio_mmio", true) }

func run(t *testing.T, device, transport string, reboot bool) {
	bin, rd := prepare(t)
	dir, err := os.MkdirTemp("", "vs") // short: a Unix socket path has 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "v.sock")

	// The host's listener for the guest's connection: it sends PCG(3) while reading.
	ln, err := net.Listen("unix", fmt.Sprintf("%s_%d", path, hostPort))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	guestConnSum := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			guestConnSum <- "accept: " + err.Error()
			return
		}
		start := time.Now()
		s := exchange(c.(*net.UnixConn), pattern(3, size))
		t.Logf("guest-initiated: %d bytes each way in %v", size, time.Since(start).Round(time.Millisecond))
		guestConnSum <- s
	}()

	// The host tells each boot which one it is ("only", or "first" then "second").
	aln, err := net.Listen("unix", fmt.Sprintf("%s_%d", path, askPort))
	if err != nil {
		t.Fatal(err)
	}
	defer aln.Close()
	go func() {
		boots := []string{"only"}
		if reboot {
			boots = []string{"first", "second"}
		}
		for _, b := range boots {
			c, err := aln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, b)
			c.Close()
		}
	}()
	script := fmt.Sprintf("loadmods %s vmw_vsock_virtio_transport\na=$(/guestvsock -ask %d)\necho VSOCK-BOOT $a\n"+
		"if [ \"$a\" = second ]; then /guestvsock -listen %d -size %d; else /guestvsock -refuse %d -connect %d -listen %d -size %d; fi\n"+
		"if [ \"$a\" = first ]; then reboot -f; fi\n",
		transport, askPort, guestPort, smallSize, refusedPort, hostPort, guestPort, size)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	args := []string{"-M", "virt", "-cpu", "cortex-a57", "-m", "512", "-smp", "2",
		"-kernel", assets.Kernel("arm64"), "-initrd", rd, "-nographic",
		"-append", "console=ttyAMA0 quiet panic=-1 " + assets.CmdArg(script),
		"-device", fmt.Sprintf("%s,guest-cid=3,uds-path=%s", device, path)}
	if !reboot {
		args = append(args, "-no-reboot")
	}
	cmd := exec.CommandContext(ctx, bin, args...)
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
		t.Fatalf(format+"\nconsole:\n%s\nstderr:\n%s", append(a, con.String(), stderr.String())...)
	}

	if l := con.waitFor("VSOCK-REFUSED"); !strings.Contains(l, "connection reset by peer") {
		fail("guest connection to a port nobody listens on: %q, want ECONNRESET", l)
	}
	l := con.waitFor("VSOCK-GUESTCONN")
	if l == "" {
		fail("no guest connection result")
	}
	if want := fmt.Sprintf("VSOCK-GUESTCONN sent=%d rcvd=%d sha=%s", size, size, sum(pattern(3, size))); !strings.HasSuffix(l, want) {
		fail("guest connection: %q, want %q", l, want)
	}
	if got, want := <-guestConnSum, sum(pattern(1, size)); got != want {
		fail("host received from the guest: sha %s, want %s", got, want)
	}

	if con.waitFor("VSOCK-LISTENING") == "" {
		fail("guest listener not up")
	}
	// CONNECT to a port nobody listens on: the connection is closed, no OK.
	if c, err := net.Dial("unix", path); err != nil {
		fail("dial %s: %v", path, err)
	} else {
		fmt.Fprintf(c, "CONNECT %d\n", deadPort)
		c.SetReadDeadline(time.Now().Add(time.Minute))
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || len(b) != 0 {
			fail("CONNECT to a dead port: read %q, %v; want the connection closed", b, err)
		}
	}
	// CONNECT to the guest's listener.
	c, err := net.Dial("unix", path)
	if err != nil {
		fail("dial %s: %v", path, err)
	}
	fmt.Fprintf(c, "CONNECT %d\n", guestPort)
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(time.Minute))
	ok, err := br.ReadString('\n')
	var hp uint32
	if _, e := fmt.Sscanf(ok, "OK %d\n", &hp); err != nil || e != nil || hp < 1024 {
		fail("CONNECT answer %q, %v", ok, err)
	}
	c.SetReadDeadline(time.Time{})
	start := time.Now()
	got := exchangeBuffered(c.(*net.UnixConn), br, pattern(4, size))
	t.Logf("host-initiated: %d bytes each way in %v", size, time.Since(start).Round(time.Millisecond))
	if want := sum(pattern(2, size)); got != want {
		fail("host received from the guest's listener: sha %s, want %s", got, want)
	}
	l = con.waitFor("VSOCK-HOSTCONN")
	if want := fmt.Sprintf("VSOCK-HOSTCONN sent=%d rcvd=%d sha=%s", size, size, sum(pattern(4, size))); !strings.HasSuffix(l, want) {
		fail("host connection, guest side: %q, want %q", l, want)
	}
	if reboot {
		if l := con.waitFor("VSOCK-BOOT"); !strings.HasSuffix(l, "VSOCK-BOOT second") {
			fail("second boot: %q", l)
		}
		if con.waitFor("VSOCK-LISTENING") == "" {
			fail("second boot's listener not up")
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			fail("dial %s after the reboot: %v", path, err)
		}
		fmt.Fprintf(c, "CONNECT %d\n", guestPort)
		br := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(time.Minute))
		if ok, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(ok, "OK ") {
			fail("CONNECT after the reboot: %q, %v", ok, err)
		}
		c.SetReadDeadline(time.Time{})
		if got, want := exchangeBuffered(c.(*net.UnixConn), br, pattern(5, smallSize)), sum(pattern(2, smallSize)); got != want {
			fail("after the reboot the host received sha %s, want %s", got, want)
		}
		l = con.waitFor("VSOCK-HOSTCONN")
		if want := fmt.Sprintf("VSOCK-HOSTCONN sent=%d rcvd=%d sha=%s", smallSize, smallSize, sum(pattern(5, smallSize))); !strings.HasSuffix(l, want) {
			fail("after the reboot, guest side: %q, want %q", l, want)
		}
	}
	if l := con.waitFor("GEMU-CMD-EXIT"); l != "GEMU-CMD-EXIT 0" {
		fail("script: %q", l)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil {
			fail("emulator exit: %v", err)
		}
	case <-time.After(time.Minute):
		fail("emulator did not exit after poweroff")
	}
}

// exchange writes data (then half-closes) while reading until EOF; it returns the
// sha256 of what it read.
func exchange(c *net.UnixConn, data []byte) string {
	return exchangeBuffered(c, c, data)
}

func exchangeBuffered(c *net.UnixConn, r io.Reader, data []byte) string {
	defer c.Close()
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		c.CloseWrite()
		wrote <- err
	}()
	h := sha256.New()
	_, err := io.Copy(h, r)
	if werr := <-wrote; werr != nil { // all sent before the close
		return "write: " + werr.Error()
	}
	if err != nil {
		return "read: " + err.Error()
	}
	return hex.EncodeToString(h.Sum(nil))
}

// console collects the guest's serial output and lets the test wait for a line.
type console struct {
	mu    sync.Mutex
	buf   strings.Builder
	lines chan string
}

func newConsole(r io.Reader) *console {
	c := &console{lines: make(chan string, 1024)}
	go func() {
		s := bufio.NewScanner(r)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for s.Scan() {
			c.mu.Lock()
			c.buf.WriteString(s.Text() + "\n")
			c.mu.Unlock()
			select {
			case c.lines <- s.Text():
			default:
			}
		}
		close(c.lines)
	}()
	return c
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// waitFor returns the first line containing want, or "" when the output ends.
func (c *console) waitFor(want string) string {
	for l := range c.lines {
		if strings.Contains(l, want) {
			return l
		}
	}
	return ""
}

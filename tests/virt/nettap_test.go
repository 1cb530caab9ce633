package virt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// tapChildEnv marks the re-run of a test inside its own network namespace; its value is
// the emulator the parent resolved.
const tapChildEnv = "GEMU_VIRT_NETNS_EMULATOR"

// inNetns re-runs the named test under `unshare -n` and reports true in that child
// (whose emulator it returns), false in the parent once the child finished (its
// failure fails the parent, its skip skips it). Where the sandbox forbids a namespace
// it skips with the reason.
func inNetns(t *testing.T) (string, bool) {
	t.Helper()
	if e := os.Getenv(tapChildEnv); e != "" {
		return e, true
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare(1) not installed: no network namespace for the tap test")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip(8) not installed: cannot configure the tap's host end")
	}
	if out, err := exec.Command(unshare, "-n", "true").CombinedOutput(); err != nil {
		t.Skipf("no network namespace here (unshare -n: %v %s)", err, strings.TrimSpace(string(out)))
	}
	emu := emulator(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, unshare, "-n", os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), tapChildEnv+"="+emu)
	out, err := cmd.CombinedOutput()
	t.Logf("in a new network namespace:\n%s", out)
	if err != nil {
		t.Fatalf("namespace run: %v", err)
	}
	if strings.Contains(string(out), "--- SKIP") {
		t.Skip("skipped in the namespace (reason above)")
	}
	return "", false
}

// TestNetTapGuest: inside a network namespace the test makes, a tap whose host end the
// test configures (192.168.78.1/24); the arm64 guest on -netdev tap,ifname=,script=no,
// downscript=no (virtio-net-pci) at .2 pings the host end, downloads 4 MiB from an HTTP
// server on the host end and checks its hash, and serves a file it made back to the
// host, which checks the hash the guest printed.
func TestNetTapGuest(t *testing.T) {
	needAssets(t)
	emu, child := inNetns(t)
	if !child {
		return
	}
	const tap, hostIP, guestIP = "gtap0", "192.168.78.1", "192.168.78.2"
	for _, a := range [][]string{{"link", "set", "lo", "up"}, {"tuntap", "add", "dev", tap, "mode", "tap"},
		{"addr", "add", hostIP + "/24", "dev", tap}, {"link", "set", tap, "up"}} {
		if out, err := exec.Command("ip", a...).CombinedOutput(); err != nil {
			t.Skipf("cannot make the tap in the namespace (ip %s: %v %s)", strings.Join(a, " "), err, strings.TrimSpace(string(out)))
		}
	}
	data := make([]byte, 4<<20)
	r := rand.New(rand.NewPCG(7, 8))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	sum := sha256.Sum256(data)
	l, err := net.Listen("tcp", hostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.Write(data)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(l.Addr().String())
	script := "up virtio_pci virtio_net\nip addr add " + guestIP + "/24 dev eth0\n" +
		"i=0;until ping -c 1 -W 1 " + hostIP + " >/dev/null;do i=$((i+1));[ $i -gt 30 ]&&break;done;echo PINGS $i\n" +
		"ping -c 3 -W 5 " + hostIP + " >/dev/null&&echo PING-OK\n" +
		"echo SHA $(wget -q -O - http://" + hostIP + ":" + port + "/blob|sha256sum)\n" +
		"mkdir /www;head -c 3000000 /dev/urandom >/www/f;echo GSHA $(sha256sum </www/f)\n" +
		"httpd -p 80 -h /www;echo HTTPD-UP;read -t 120 x;echo GOT-$x\n"
	vm := netStart(t, "guest", emu, script, nil, "-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0")
	if l := vm.expect("PINGS "); lineField(l, 1) == "31" {
		t.Fatalf("the guest never reached the tap's host end: %q", l)
	}
	vm.expect("PING-OK")
	if l := vm.expect("SHA "); lineField(l, 1) != hex.EncodeToString(sum[:]) {
		t.Fatalf("download over tap: sha256 %q, want %x", l, sum)
	}
	gsha := lineField(vm.expect("GSHA "), 1)
	vm.expect("HTTPD-UP")
	c := &http.Client{Timeout: 60 * time.Second}
	resp, err := c.Get("http://" + guestIP + "/f")
	if err != nil {
		t.Fatalf("host → guest over tap: %v", err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || n != 3000000 || hex.EncodeToString(h.Sum(nil)) != gsha {
		t.Errorf("host fetched %d bytes (err %v) with sha256 %x, guest has %s", n, err, h.Sum(nil), gsha)
	}
	io.WriteString(vm.in, "done\n")
	vm.expect("GOT-done")
	vm.finish()
}

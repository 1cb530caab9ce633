// Command netbench is `make bench-net`: virtio-net throughput and request rate of
// gemu-system-aarch64 against qemu-system-aarch64 7.2 (TCG, -M virt -cpu cortex-a57),
// the same Debian arm64 kernel, busybox initramfs and -m for both, the NIC
// `-device virtio-net-pci,netdev=n0` on
//
//   - user: `-netdev user,id=n0,hostfwd=...` (QEMU: its slirp; gemu: its netstack NAT);
//   - tap (where a network namespace and /dev/net/tun work): the program re-runs itself
//     under `unshare -n`, makes a tap there with the host end 192.168.77.1/24 and runs
//     `-netdev tap,id=n0,ifname=nbtap0,script=no,downscript=no` with the guest at .2.
//
// Each guest boot measures, one after the other:
//
//   - up: TCP guest→host, `dd if=/dev/zero bs=64k | nc HOST PORT` in the guest into a Go
//     sink on the host (through 10.0.2.2 to the loopback for user); MB/s from the
//     accept to the sink's EOF, the byte count checked;
//   - down: TCP host→guest, the host connects (through a hostfwd for user) to
//     `nc -l -p 5001 -e 'wc -c'` in the guest, writes -size MiB and half-closes; MB/s
//     from the connect to the guest's count coming back (checked) and its close;
//   - http: small requests, -conc Go clients on the host GET a 14-byte page from busybox
//     httpd in the guest (through a hostfwd for user), one connection per request (httpd
//     closes), -reqs in all; requests per second, every body checked.
//
// Runs alternate between the emulators (the order swapped every run). It prints every
// run, then medians and gemu/QEMU ratios, and the host's load average. It exits non-zero
// only when something fails to run, never on a ratio. -profile FILE adds one gemu user
// run with GEMU_CPUPROFILE=FILE and prints the top of `go tool pprof -top`.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gemu/tests/assets"
)

type config struct {
	runs    int
	sizeMiB int
	reqs    int
	conc    int
	mem     int
	modes   []string
	profile string
	verbose bool
	timeout time.Duration
	inNetns bool
}

// sample is one guest boot's figures.
type sample struct {
	Up, Down, HTTP float64 // MB/s, MB/s, requests/s
}

// key names one cell: mode/vmm.
type key struct{ mode, vmm string }

const (
	tapName   = "nbtap0"
	tapHost   = "192.168.77.1"
	tapGuest  = "192.168.77.2"
	page      = "netbench-page\n"
	guestDown = 5001
)

var failures []string

func failed(msg string) {
	fmt.Println("FAILED:", msg)
	failures = append(failures, msg)
}

func main() {
	var c config
	modes := flag.String("mode", "user,tap", "backends to run: user, tap (tap inside unshare -n, skipped where that fails)")
	flag.IntVar(&c.runs, "runs", 3, "guest boots per emulator and backend (medians are reported)")
	flag.IntVar(&c.sizeMiB, "size", 16, "MiB moved each way per boot")
	flag.IntVar(&c.reqs, "reqs", 400, "small HTTP requests per boot")
	flag.IntVar(&c.conc, "conc", 4, "concurrent HTTP clients")
	flag.IntVar(&c.mem, "m", 512, "guest MiB")
	flag.StringVar(&c.profile, "profile", "", "write a gemu CPU profile of one extra user-networking boot to FILE")
	flag.BoolVar(&c.verbose, "v", false, "copy guest consoles to stderr")
	flag.DurationVar(&c.timeout, "timeout", 6*time.Minute, "bound on one guest boot")
	flag.BoolVar(&c.inNetns, "in-netns", false, "internal: run the tap runs in this (new) network namespace and print them as JSON")
	flag.Parse()
	if c.runs < 1 || c.sizeMiB < 1 || c.reqs < 1 || c.conc < 1 {
		fail("-runs, -size, -reqs and -conc must be positive")
	}
	c.modes = strings.Split(*modes, ",")
	if c.inNetns {
		res, err := tapRuns(c)
		if err != nil {
			fail(err.Error())
		}
		b, _ := json.Marshal(struct {
			Res      map[string][]sample
			Failures []string
		}{res, failures})
		fmt.Printf("NETBENCH-JSON %s\n", b)
		return
	}
	if err := run(c); err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bench-net:", msg)
	os.Exit(1)
}

func bins() (gemu, qemu string, err error) {
	dir := os.Getenv("GEMU_BIN")
	if dir == "" {
		dir = "bin"
	}
	gemu = filepath.Join(dir, "gemu-system-aarch64")
	if _, err := os.Stat(gemu); err != nil {
		return "", "", fmt.Errorf("%v: run `make build`", err)
	}
	if gemu, err = filepath.Abs(gemu); err != nil {
		return "", "", err
	}
	if qemu, err = exec.LookPath("qemu-system-aarch64"); err != nil {
		return "", "", fmt.Errorf("qemu-system-aarch64 not installed: %v", err)
	}
	return gemu, qemu, nil
}

func run(c config) error {
	if m := assets.Missing("arm64"); m != "" {
		return errors.New(m)
	}
	gemu, qemu, err := bins()
	if err != nil {
		return err
	}
	fmt.Printf("bench-net: load average at start %s; %d MiB each way, %d requests (%d clients) per boot, %d boots per cell\n",
		loadavg(), c.sizeMiB, c.reqs, c.conc, c.runs)
	start := time.Now()
	res := map[key][]sample{}
	var order []string
	for _, m := range c.modes {
		switch m {
		case "user":
			order = append(order, m)
			vmms := [2][2]string{{"gemu", gemu}, {"qemu", qemu}}
			for i := 0; i < c.runs; i++ {
				for j := 0; j < 2; j++ {
					v := vmms[(i+j)%2]
					s, err := bootOnce(c, v[1], userNet(), nil)
					if err != nil {
						failed(fmt.Sprintf("user %s run %d: %v", v[0], i+1, err))
						continue
					}
					fmt.Printf("user %-4s run %d: up %7.2f MB/s  down %7.2f MB/s  http %7.1f req/s\n", v[0], i+1, s.Up, s.Down, s.HTTP)
					res[key{m, v[0]}] = append(res[key{m, v[0]}], s)
				}
			}
		case "tap":
			tr, skip, err := tapInNetns(c)
			if skip != "" {
				fmt.Printf("tap: skipped: %s\n", skip)
				continue
			}
			if err != nil {
				failed("tap: " + err.Error())
				continue
			}
			order = append(order, m)
			for v, ss := range tr {
				res[key{m, v}] = ss
			}
		default:
			return fmt.Errorf("unknown -mode %q", m)
		}
	}
	printTable(order, res)
	fmt.Printf("bench-net: %.0f s; load average at end %s (%d host CPUs, shared)\n",
		time.Since(start).Seconds(), loadavg(), runtime.NumCPU())
	if c.profile != "" {
		if err := profile(c, gemu); err != nil {
			failed(err.Error())
		}
	}
	if len(failures) > 0 {
		return fmt.Errorf("%d runs failed:\n%s", len(failures), strings.Join(failures, "\n"))
	}
	return nil
}

// network is how one backend is reached: the emulator's -netdev, the guest's address
// setup, the address the guest's upload dials and the host's sink listens on, and how
// the host reaches the guest's ports.
type network struct {
	netdev     string // with ",id=n0"
	guestCfg   string // guest shell
	sinkListen string
	sinkDial   string // host part the guest dials
	downAddr   string // host → guest nc listener
	httpAddr   string // host → guest httpd
}

func userNet() network {
	down, web := freePort(), freePort()
	return network{
		netdev:     fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:%d,hostfwd=tcp:127.0.0.1:%d-:80", down, guestDown, web),
		guestCfg:   `printf '#!/bin/sh\n[ "$1" = bound ]&&{ ip addr add $ip/${mask:-24} dev $interface;ip route add default via $router;}\nexit 0\n'>/tmp/dh;chmod +x /tmp/dh;udhcpc -i eth0 -s /tmp/dh -q -n -t 10 -T 2 >/dev/null||echo NB-NO-DHCP`,
		sinkListen: "127.0.0.1",
		sinkDial:   "10.0.2.2",
		downAddr:   fmt.Sprintf("127.0.0.1:%d", down),
		httpAddr:   fmt.Sprintf("127.0.0.1:%d", web),
	}
}

func tapNet() network {
	return network{
		netdev:     "tap,id=n0,ifname=" + tapName + ",script=no,downscript=no",
		guestCfg:   "ip addr add " + tapGuest + "/24 dev eth0",
		sinkListen: tapHost,
		sinkDial:   tapHost,
		downAddr:   fmt.Sprintf("%s:%d", tapGuest, guestDown),
		httpAddr:   tapGuest + ":80",
	}
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err.Error())
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// guestScript is the guest's /init script: set up, then one step per line the host
// writes to the console.
func guestScript(c config, n network, sinkPort int) string {
	return "loadmods virtio_pci virtio_net\n" +
		"i=0;while [ ! -e /sys/class/net/eth0 ]&&[ $i -lt 100 ];do sleep .1;i=$((i+1));done;ip link set lo up;ip link set eth0 up\n" +
		n.guestCfg + "\n" +
		"printf '#!/bin/sh\\nexec wc -c\\n'>/tmp/sink;chmod +x /tmp/sink\n" +
		"mkdir -p /www;printf '" + strings.TrimSuffix(page, "\n") + "\\n'>/www/index.html;httpd -p 80 -h /www\n" +
		fmt.Sprintf("nc -l -p %d -e /tmp/sink &\n", guestDown) +
		"echo NB-READY\nread x\n" +
		fmt.Sprintf("dd if=/dev/zero bs=65536 count=%d 2>/dev/null|nc %s %d;echo NB-UP $?\n", c.sizeMiB*16, n.sinkDial, sinkPort) +
		"read x\necho NB-END\n"
}

// console reads an emulator's output line by line.
type console struct {
	lines chan string
	mu    sync.Mutex
	all   strings.Builder
}

func newConsole(r io.Reader, verbose bool) *console {
	c := &console{lines: make(chan string, 1024)}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l := strings.TrimRight(sc.Text(), "\r")
			c.mu.Lock()
			c.all.WriteString(l + "\n")
			c.mu.Unlock()
			if verbose {
				fmt.Fprintln(os.Stderr, "  |", l)
			}
			select {
			case c.lines <- l:
			default: // nobody waits for the flood
			}
		}
		close(c.lines)
	}()
	return c
}

// waitFor returns the first line containing want, or an error at EOF or deadline.
func (c *console) waitFor(ctx context.Context, want string) (string, error) {
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				return "", fmt.Errorf("emulator exited before %q", want)
			}
			if strings.Contains(l, want) {
				return l, nil
			}
		case <-ctx.Done():
			return "", fmt.Errorf("no %q before the deadline", want)
		}
	}
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.all.String()
	if len(s) > 4000 {
		s = "..." + s[len(s)-4000:]
	}
	return s
}

// bootOnce boots one guest on bin with network n and measures it.
func bootOnce(c config, bin string, n network, env []string) (sample, error) {
	var s sample
	sink, err := net.Listen("tcp", net.JoinHostPort(n.sinkListen, "0"))
	if err != nil {
		return s, err
	}
	defer sink.Close()
	sinkPort := sink.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	args := []string{"-M", "virt", "-cpu", "cortex-a57", "-m", fmt.Sprint(c.mem),
		"-kernel", assets.Kernel("arm64"), "-initrd", assets.Initrd("arm64"),
		"-append", "console=ttyAMA0 quiet panic=-1 " + assets.CmdArg(guestScript(c, n, sinkPort)),
		"-nographic", "-no-reboot", "-netdev", n.netdev, "-device", "virtio-net-pci,netdev=n0"}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	in, err := cmd.StdinPipe()
	if err != nil {
		return s, err
	}
	pr, pw := io.Pipe()
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = pw, &stderr
	if err := cmd.Start(); err != nil {
		return s, err
	}
	con := newConsole(pr, c.verbose)
	done := make(chan error, 1)
	go func() { err := cmd.Wait(); pw.Close(); done <- err }()
	defer func() { cmd.Process.Kill(); in.Close() }()
	fault := func(err error) (sample, error) {
		return s, fmt.Errorf("%v\nconsole:\n%s\nstderr:\n%s", err, con, stderr.String())
	}
	if _, err := con.waitFor(ctx, "NB-READY"); err != nil {
		return fault(err)
	}
	if strings.Contains(con.String(), "NB-NO-DHCP") {
		return fault(errors.New("the guest got no DHCP lease"))
	}
	want := int64(c.sizeMiB) << 20

	// up
	type upRes struct {
		n    int64
		secs float64
		err  error
	}
	upc := make(chan upRes, 1)
	go func() {
		conn, err := sink.Accept()
		if err != nil {
			upc <- upRes{err: err}
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(c.timeout))
		t0 := time.Now()
		nb, err := io.Copy(io.Discard, conn)
		upc <- upRes{nb, time.Since(t0).Seconds(), err}
	}()
	io.WriteString(in, "up\n")
	var up upRes
	select {
	case up = <-upc:
	case <-ctx.Done():
		return fault(errors.New("upload: no connection to the sink"))
	}
	if up.err != nil || up.n != want {
		return fault(fmt.Errorf("upload: %d of %d bytes: %v", up.n, want, up.err))
	}
	if l, err := con.waitFor(ctx, "NB-UP"); err != nil || l != "NB-UP 0" {
		return fault(fmt.Errorf("upload: guest says %q %v", l, err))
	}
	s.Up = float64(want) / 1e6 / up.secs

	// down
	secs, err := download(ctx, n.downAddr, want)
	if err != nil {
		return fault(fmt.Errorf("download: %v", err))
	}
	s.Down = float64(want) / 1e6 / secs

	// http
	if s.HTTP, err = httpRate(n.httpAddr, c.reqs, c.conc); err != nil {
		return fault(fmt.Errorf("http: %v", err))
	}

	io.WriteString(in, "end\n")
	if l, err := con.waitFor(ctx, "GEMU-CMD-EXIT"); err != nil || l != "GEMU-CMD-EXIT 0" {
		return fault(fmt.Errorf("guest script: %q %v", l, err))
	}
	select {
	case err := <-done:
		if err != nil {
			return fault(fmt.Errorf("emulator exit: %v", err))
		}
	case <-time.After(time.Minute):
		return fault(errors.New("emulator did not exit after poweroff"))
	}
	return s, nil
}

var zeros = make([]byte, 256<<10)

// download sends size bytes to the guest's counting listener at addr and returns the
// seconds from connect to the guest's close, checking the count it sends back. A
// connection the guest resets before it listens is retried.
func download(ctx context.Context, addr string, size int64) (float64, error) {
	var last error
	for try := 0; try < 20; try++ {
		if try > 0 {
			time.Sleep(250 * time.Millisecond)
		}
		t0 := time.Now()
		d := net.Dialer{Timeout: 10 * time.Second}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			last = err
			continue
		}
		dl, _ := ctx.Deadline()
		conn.SetDeadline(dl)
		var sent int64
		for sent < size && err == nil {
			var k int
			k, err = conn.Write(zeros[:min(int64(len(zeros)), size-sent)])
			sent += int64(k)
		}
		if err != nil {
			conn.Close()
			last = fmt.Errorf("after %d bytes: %v", sent, err)
			if sent == 0 {
				continue
			}
			return 0, last
		}
		conn.(*net.TCPConn).CloseWrite()
		reply, err := io.ReadAll(conn)
		secs := time.Since(t0).Seconds()
		conn.Close()
		if err != nil {
			return 0, err
		}
		got, perr := strconv.ParseInt(strings.TrimSpace(string(reply)), 10, 64)
		if perr != nil || got != size {
			return 0, fmt.Errorf("guest counted %q, want %d", reply, size)
		}
		return secs, nil
	}
	return 0, last
}

// httpRate runs reqs GETs of the guest's page over conc clients and returns requests
// per second; any failed request or wrong body fails the run.
func httpRate(addr string, reqs, conc int) (float64, error) {
	tr := &http.Transport{DisableKeepAlives: true, MaxIdleConns: 0}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 15 * time.Second}
	url := "http://" + addr + "/index.html"
	get := func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 || string(b) != page {
			return fmt.Errorf("status %d body %q", resp.StatusCode, b)
		}
		return nil
	}
	var err error
	for i := 0; i < 20; i++ { // the first request waits for the forward and httpd
		if err = get(); err == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		return 0, err
	}
	var next atomic.Int64
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(reqs) {
				if err := get(); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	return float64(reqs) / time.Since(t0).Seconds(), nil
}

// tapInNetns re-runs this program under unshare -n for the tap runs.
func tapInNetns(c config) (map[string][]sample, string, error) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return nil, "unshare(1) not installed", nil
	}
	if out, err := exec.Command(unshare, "-n", "true").CombinedOutput(); err != nil {
		return nil, fmt.Sprintf("no network namespace here (unshare -n: %v %s)", err, strings.TrimSpace(string(out))), nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	args := []string{"-n", self, "-in-netns", "-mode", "tap", "-runs", fmt.Sprint(c.runs), "-size", fmt.Sprint(c.sizeMiB),
		"-reqs", fmt.Sprint(c.reqs), "-conc", fmt.Sprint(c.conc), "-m", fmt.Sprint(c.mem), "-timeout", c.timeout.String()}
	if c.verbose {
		args = append(args, "-v")
	}
	cmd := exec.Command(unshare, args...)
	cmd.Stderr = os.Stderr
	pr, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	var js string
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if rest, ok := strings.CutPrefix(l, "NETBENCH-JSON "); ok {
			js = rest
			continue
		}
		fmt.Println(l)
	}
	werr := cmd.Wait()
	if js == "" {
		return nil, "", fmt.Errorf("the namespace run printed no results: %v", werr)
	}
	var out struct {
		Res      map[string][]sample
		Failures []string
	}
	if err := json.Unmarshal([]byte(js), &out); err != nil {
		return nil, "", err
	}
	failures = append(failures, out.Failures...)
	return out.Res, "", nil
}

// tapRuns runs in the new namespace: make the tap, configure its host end, run.
func tapRuns(c config) (map[string][]sample, error) {
	gemu, qemu, err := bins()
	if err != nil {
		return nil, err
	}
	for _, a := range [][]string{{"link", "set", "lo", "up"}, {"tuntap", "add", "dev", tapName, "mode", "tap"},
		{"addr", "add", tapHost + "/24", "dev", tapName}, {"link", "set", tapName, "up"}} {
		if out, err := exec.Command("ip", a...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip %s: %v %s", strings.Join(a, " "), err, strings.TrimSpace(string(out)))
		}
	}
	res := map[string][]sample{}
	vmms := [2][2]string{{"gemu", gemu}, {"qemu", qemu}}
	for i := 0; i < c.runs; i++ {
		for j := 0; j < 2; j++ {
			v := vmms[(i+j)%2]
			s, err := bootOnce(c, v[1], tapNet(), nil)
			if err != nil {
				failed(fmt.Sprintf("tap %s run %d: %v", v[0], i+1, err))
				continue
			}
			fmt.Printf("tap  %-4s run %d: up %7.2f MB/s  down %7.2f MB/s  http %7.1f req/s\n", v[0], i+1, s.Up, s.Down, s.HTTP)
			res[v[0]] = append(res[v[0]], s)
		}
	}
	return res, nil
}

func median(ss []sample, f func(sample) float64) float64 {
	if len(ss) == 0 {
		return 0
	}
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func printTable(order []string, res map[key][]sample) {
	fmt.Printf("\nmedians (runs)              gemu        QEMU   gemu/QEMU\n")
	cols := []struct {
		name, unit string
		f          func(sample) float64
	}{
		{"up (guest→host)", "MB/s", func(s sample) float64 { return s.Up }},
		{"down (host→guest)", "MB/s", func(s sample) float64 { return s.Down }},
		{"http small requests", "req/s", func(s sample) float64 { return s.HTTP }},
	}
	for _, m := range order {
		g, q := res[key{m, "gemu"}], res[key{m, "qemu"}]
		for _, col := range cols {
			gm, qm := median(g, col.f), median(q, col.f)
			ratio := "-"
			if gm > 0 && qm > 0 {
				ratio = fmt.Sprintf("%.2fx", gm/qm)
			}
			fmt.Printf("%-4s %-19s %8.2f %-5s %8.2f %-5s %6s  (%d/%d)\n", m, col.name, gm, col.unit, qm, col.unit, ratio, len(g), len(q))
		}
	}
}

func profile(c config, gemu string) error {
	prof, err := filepath.Abs(c.profile)
	if err != nil {
		return err
	}
	s, err := bootOnce(c, gemu, userNet(), []string{"GEMU_CPUPROFILE=" + prof})
	if err != nil {
		return fmt.Errorf("profile run: %v", err)
	}
	fmt.Printf("\nprofile: gemu user up %.2f MB/s down %.2f MB/s http %.1f req/s; CPU profile in %s\n", s.Up, s.Down, s.HTTP, prof)
	top, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=25", gemu, prof).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go tool pprof: %v\n%s", err, top)
	}
	fmt.Print(string(top))
	return nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

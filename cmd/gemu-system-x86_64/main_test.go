package main

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gemu/accel/kvm"
	"gemu/cmd/internal/qemuopts"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gemu-cli-test-")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "gemu-system-x86_64")
	cmd := exec.Command("go", "build", "-o", binPath, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestParseSizes(t *testing.T) {
	for in, want := range map[string]uint64{
		"512": 512 << 20, "512M": 512 << 20, "512m": 512 << 20, "2G": 2 << 30, "1.5G": 3 << 29,
		"size=2G": 2 << 30, "65536K": 64 << 20, "1T": 1 << 40, "4096B": 4096,
	} {
		got, err := parseMem(in)
		if err != nil || got != want {
			t.Errorf("parseMem(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"size=", "abc", "-1", "1X", "0x10", "1e3", "slots=2", "99999999999T", "NaN", "inf"} {
		if _, err := parseMem(bad); err == nil {
			t.Errorf("parseMem(%q) accepted", bad)
		}
	}
	for in, want := range map[string]int{"4": 4, "cpus=2": 2, "2,sockets=1,cores=2": 2} {
		if got, err := parseSMP(in); err != nil || got != want {
			t.Errorf("parseSMP(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"0", "cpus=0", "x", "-2", "2,foo=1", "sockets=2,maxcpus=3"} {
		if _, err := parseSMP(bad); err == nil {
			t.Errorf("parseSMP(%q) accepted", bad)
		}
	}
}

func TestParseArgs(t *testing.T) {
	o, err := parseArgs(strings.Fields("-M pc,accel=kvm -cpu host -display none --nographic -name vm1 -m size=1G -smp cpus=3 -no-reboot -serial null -enable-kvm -nodefaults"))
	if err != nil {
		t.Fatal(err)
	}
	if o.machine != "pc" || o.memSize != 1<<30 || o.cpus != 3 || !o.noReboot || !o.noGraph || o.serial != "null" ||
		len(o.accels) != 2 || o.accels[0] != "kvm" || o.name != "vm1" || len(o.warnings) != 0 {
		t.Fatalf("parsed %+v", o)
	}
	for bad, want := range map[string]string{
		"-M isapc":                        "unsupported machine type 'isapc'",
		"-M q35":                          "machine type 'q35' is not supported",
		"-machine pc-q35-7.2":             "machine type 'pc-q35-7.2' is not supported",
		"-cpu 486":                        "unsupported CPU model '486'",
		"-cpu host,-x2apic":               "cannot turn CPU flag 'x2apic' off",
		"-cpu host,model-id=x":            "CPU property 'model-id' is not supported",
		"-display gtk":                    "display 'gtk' is not supported",
		"-machine pc,usb=on":              "usb=on is not supported",
		"-machine pc,foo=bar":             "-machine pc,foo=bar: Property 'pc-i440fx-7.2-machine.foo' not found",
		"-M pc -M nvdimm=on":              "Property 'pc-i440fx-7.2-machine.nvdimm' not found",
		"-kernel":                         "-kernel: requires an argument",
		"-smp 4,sockets=3":                "product of the hierarchy must match maxcpus: sockets (3) * dies (1) * cores (1) * threads (1) != maxcpus (4)",
		"-smp 2,clusters=2":               "clusters not supported",
		"-smp 2,books=2":                  "Parameter 'smp.books' is unexpected",
		"-m 2G,slots=4,maxmem=8G":         "memory hotplug (slots=) is not supported",
		"-m 1.5":                          "-m 1.5: Parameter 'size' expects a non-negative number below 2^64",
		"-accel kvm,kernel-irqchip=split": "kernel-irqchip=split is not supported",
		"-accel kvm,thread=multi":         "-accel kvm,thread=multi: Invalid parameter 'thread'",
		"-device e1000,=x":                "-device e1000,=x: Invalid parameter ''",
		"-chardev socket,path=/x":         "Parameter 'id' is missing",
		"-vga std":                        "-vga std: gemu has no display adapter",
		"-msg timestamp=maybe":            "Parameter 'timestamp' expects 'on' or 'off'",
	} {
		_, err := parseArgs(strings.Fields(bad))
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v; want %q", bad, err, want)
		}
	}

	// -smp keeps the topology and says it is flattened; -cpu flags gemu does not
	// apply are named in one warning.
	o, err = parseArgs([]string{"-smp", "4,sockets=1,cores=2,threads=2", "-cpu", "host,+x2apic,+avx512f,pmu=on", "-M", "pc-i440fx-7.2"})
	if err != nil {
		t.Fatal(err)
	}
	want := qemuopts.Topology{CPUs: 4, Sockets: 1, Dies: 1, Clusters: 1, Cores: 2, Threads: 2, MaxCPUs: 4}
	if o.topology != want || o.cpus != 4 || o.machine != "pc-i440fx-7.2" || len(o.warnings) != 2 ||
		!strings.Contains(o.warnings[0], "flattened to 4 CPUs") || !strings.Contains(o.warnings[1], "CPU flags not applied (avx512f, pmu)") {
		t.Fatalf("topology %+v cpus %d warnings %q", o.topology, o.cpus, o.warnings)
	}
	if o, _ := parseArgs([]string{"-smp", "4,cores=4", "-cpu", "max,+x2apic"}); len(o.warnings) != 0 || o.cpuModel != "max" {
		t.Errorf("flat topology or honoured flag warned: %q", o.warnings)
	}

	// Device options are stored and checked for syntax; those no board takes yet are named in one warning.
	o, err = parseArgs([]string{"-drive", "file=a,,b.qcow2,if=none,id=d0,format=qcow2", "-device", `{"driver":"virtio-blk-pci","drive":"d0"}`,
		"-blockdev", `{"driver":"qcow2","node-name":"n","file":{"driver":"file","filename":"x"}}`, "-netdev", "user,id=n0",
		"-nic", "user", "-chardev", "socket,id=c0,path=/tmp/s,server=on,wait=off", "-mon", "chardev=c0,mode=control",
		"-qmp", "unix:/tmp/q,server=on,wait=off", "-object", "rng-random,id=r0,filename=/dev/urandom", "-global", "kvm-pit.lost_tick_policy=delay",
		"-hda", "disk.img", "-snapshot", "-no-user-config", "-msg", "timestamp=on", "-vga", "none", "other.img"})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Drives) != 3 || o.Drives[0].String("file", "") != "a,b.qcow2" || o.Drives[2].String("file", "") != "other.img" ||
		len(o.Devices) != 1 || o.Devices[0].String("drive", "") != "d0" || o.Blockdevs[0].String("file.filename", "") != "x" ||
		len(o.Netdevs) != 1 || len(o.NICs) != 1 || len(o.Chardevs) != 1 || len(o.Mons) != 1 || len(o.QMP) != 1 || len(o.Objects) != 1 ||
		len(o.Globals) != 1 || !o.Snapshot || !o.MsgTimestamp || len(o.warnings) != 1 ||
		!strings.HasPrefix(o.warnings[0], "-global: accepted, but not yet connected") {
		t.Fatalf("stored %+v warnings %q", o.Common, o.warnings)
	}
	for _, a := range [][]string{{"-machine", "help"}, {"-M", "?"}, {"-cpu", "help"}, {"-accel", "help"}} {
		if o, err := parseArgs(a); err != nil || o.list == "" {
			t.Errorf("%q: list %q, %v", a, o.list, err)
		}
	}
}

// gemu runs the built binary and returns its exit status and output.
func gemu(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("gemu %v did not finish; output %q %q", args, out.String(), errb.String())
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// checkOneLineError asserts QEMU's failure convention: exit 1, one line on stderr
// naming the program, no panic.
func checkOneLineError(t *testing.T, code int, stderr, want string) {
	t.Helper()
	if code != 1 {
		t.Errorf("exit %d, want 1 (stderr %q)", code, stderr)
	}
	if !strings.HasPrefix(stderr, "gemu-system-x86_64: ") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("stderr is not one gemu-system-x86_64: line: %q", stderr)
	}
	if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine") {
		t.Errorf("panicked: %q", stderr)
	}
	if !strings.Contains(stderr, want) {
		t.Errorf("stderr %q lacks %q", stderr, want)
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	elf, err := os.ReadFile("/proc/self/exe")
	if err != nil || len(elf) < 4096 {
		elf = append([]byte("\x7fELF\x02\x01\x01"), make([]byte, 8192)...)
	}
	elf = elf[:4096]
	random := make([]byte, 1<<16)
	for i := range random {
		random[i] = byte(i*7919 + i>>3)
	}
	arm := make([]byte, 1<<16)
	copy(arm[0x38:], "ARM\x64")
	good := write("guest.bzImage", guestImage(haltLoop))
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing kernel", []string{"-kernel", filepath.Join(dir, "nope")}, "no such file"},
		{"no kernel", []string{"-m", "64"}, "no -kernel"},
		{"directory", []string{"-kernel", dir}, "not a regular file"},
		{"elf", []string{"-kernel", write("vmlinux", elf)}, "could not load kernel '" + filepath.Join(dir, "vmlinux") + "': "},
		{"random", []string{"-kernel", write("random", random)}, "not a bzImage"},
		{"arm64", []string{"-kernel", write("Image", arm)}, "arm64"},
		{"empty", []string{"-kernel", write("empty", nil)}, "not a bzImage"},
		{"mem 0", []string{"-m", "0", "-kernel", good}, "-m 0"},
		{"mem huge", []string{"-m", "64T", "-kernel", good}, "more than the host"},
		{"mem garbage", []string{"-m", "lots", "-kernel", good}, "-m lots: Parameter 'size' expects a non-negative number"},
		{"q35", []string{"-M", "q35", "-kernel", good}, "machine type 'q35' is not supported"},
		{"smp topology", []string{"-smp", "4,sockets=3", "-kernel", good}, "Invalid CPU topology"},
		{"smp 0", []string{"-smp", "0", "-kernel", good}, "-smp 0"},
		{"smp many", []string{"-smp", "100000", "-kernel", good}, "at most"},
		{"unknown flag", []string{"-frobnicate", "-kernel", good}, "-frobnicate: invalid option"},
		{"missing value", []string{"-kernel", good, "-m"}, "requires an argument"},
		{"bad accel", []string{"-accel", "hvf", "-kernel", good}, "unknown accelerator"},
		{"missing initrd", []string{"-kernel", good, "-initrd", filepath.Join(dir, "nope")}, "-initrd"},
		{"bad serial", []string{"-kernel", good, "-serial", "tcp:1.2.3.4:5"}, "-serial"},
		{"long cmdline", []string{"-kernel", good, "-append", strings.Repeat("x", 3000)}, "at most 2047"},
		{"two serials", []string{"-kernel", good, "-serial", "null", "-serial", "stdio"}, "only one serial port"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := gemu(t, "", c.args...)
			checkOneLineError(t, code, stderr, c.want)
		})
	}
}

func TestHelpVersion(t *testing.T) {
	for _, a := range []string{"-h", "-help", "--help"} {
		code, out, _ := gemu(t, "", a)
		if code != 0 || !strings.Contains(out, "-kernel FILE") || !strings.Contains(out, "gemu-system-x86_64") || !strings.Contains(out, "QEMU-compatible") {
			t.Errorf("%s: exit %d output %q", a, code, out)
		}
	}
	for _, a := range []string{"-version", "--version"} {
		if code, out, _ := gemu(t, "", a); code != 0 || !strings.HasPrefix(out, "gemu-system-x86_64 version") {
			t.Errorf("%s: %d %q", a, code, out)
		}
	}
	code, out, stderr := gemu(t, "", "-machine", "help")
	if code != 0 || !strings.HasPrefix(out, "Supported machines are:\npc ") || stderr != "" {
		t.Errorf("-machine help: %d %q %q", code, out, stderr)
	}
}

// Tiny 64-bit guests wrapped as bzImages, run through the CLI under /dev/kvm.

func guestImage(code []byte) []byte {
	payload := make([]byte, 0x200+len(code)+16)
	copy(payload[0x200:], code)
	f := make([]byte, 2*512+len(payload))
	le := binary.LittleEndian
	f[0x1f1] = 1
	le.PutUint32(f[0x1f4:], uint32(len(payload)/16))
	le.PutUint16(f[0x1fe:], 0xaa55)
	f[0x200], f[0x201] = 0xeb, 0x6a
	copy(f[0x202:], "HdrS")
	le.PutUint16(f[0x206:], 0x020f)
	f[0x211] = 0x01
	le.PutUint32(f[0x214:], 0x100000)
	le.PutUint32(f[0x22c:], 0x7fffffff)
	le.PutUint32(f[0x230:], 0x200000)
	f[0x234] = 1
	le.PutUint16(f[0x236:], 1) // XLF_KERNEL_64
	le.PutUint32(f[0x238:], 2047)
	le.PutUint64(f[0x258:], 0x1000000)
	le.PutUint32(f[0x260:], 0x200000)
	copy(f[1024:], payload)
	return f
}

var (
	comOut   = []byte{0x66, 0xba, 0xf8, 0x03} // mov dx, 0x3f8
	haltLoop = []byte{0xfa, 0xf4, 0xeb, 0xfd} // cli; hlt; jmp hlt
	poweroff = []byte{0x66, 0xba, 0x04, 0x06, 0x66, 0xb8, 0x01, 0x34, 0x66, 0xef}
	reset    = []byte{0xb0, 0xfe, 0xe6, 0x64} // i8042 pulse reset
)

func putc(c byte) []byte { return []byte{0xb0, c, 0xee} }

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func needKVM(t *testing.T) {
	if err := kvm.Available(); err != nil {
		t.Skipf("no usable /dev/kvm: %v", err)
	}
}

func TestGuestExits(t *testing.T) {
	needKVM(t)
	dir := t.TempDir()
	img := func(code []byte) string {
		p := filepath.Join(dir, "g"+time.Now().Format("150405.000000000"))
		os.WriteFile(p, guestImage(code), 0o644)
		return p
	}
	base := []string{"-accel", "kvm", "-m", "64", "-smp", "2", "-nographic"}

	code, out, stderr := gemu(t, "", append(base, "-kernel", img(cat(comOut, putc('O'), putc('K'), putc('\n'), poweroff, haltLoop)))...)
	if code != 0 || out != "OK\n" {
		t.Errorf("poweroff guest: exit %d stdout %q stderr %q", code, out, stderr)
	}

	log := filepath.Join(dir, "serial.log")
	code, out, _ = gemu(t, "", append(base, "-serial", "file:"+log, "-no-reboot", "-kernel", img(cat(comOut, putc('R'), reset, haltLoop)))...)
	if b, _ := os.ReadFile(log); code != 0 || string(b) != "R" || out != "" {
		t.Errorf("reset with -no-reboot: exit %d serial %q stdout %q", code, b, out)
	}

	// ud2 with the empty IDT the boot protocol leaves: #UD → #GP → #DF → shutdown.
	code, _, stderr = gemu(t, "", append(base, "-kernel", img(cat([]byte{0x0f, 0x0b}, haltLoop)))...)
	checkOneLineError(t, code, stderr, "guest triple fault (CPU shutdown) at vCPU 0 at CS:RIP 0x10:0x1000200")

	// Ctrl-A x on stdio quits a running guest with status 0.
	code, out, _ = gemu(t, "\x01x", append(base, "-kernel", img(cat(comOut, putc('W'), haltLoop)))...)
	if code != 0 || !strings.Contains(out, "gemu: terminated") {
		t.Errorf("Ctrl-A x: exit %d stdout %q", code, out)
	}
}

// TestTCGGuest runs the tiny guests on gemu's translator: -accel tcg and
// -machine accel=tcg power off with the guest's output; a triple fault is reported; a
// run with no -accel on an emulated KVM says in one line that it chose TCG.
func TestTCGGuest(t *testing.T) {
	dir := t.TempDir()
	img := func(code []byte) string {
		p := filepath.Join(dir, "g"+time.Now().Format("150405.000000000"))
		os.WriteFile(p, guestImage(code), 0o644)
		return p
	}
	ok := img(cat(comOut, putc('O'), putc('K'), putc('\n'), poweroff, haltLoop))
	for _, a := range [][]string{{"-accel", "tcg"}, {"-machine", "pc,accel=tcg"}, {"-accel", "hvf", "-accel", "tcg"}} {
		code, out, stderr := gemu(t, "", append(a, "-m", "64", "-smp", "2", "-nographic", "-kernel", ok)...)
		if code != 0 || out != "OK\n" || stderr != "" {
			t.Errorf("%q: exit %d stdout %q stderr %q", a, code, out, stderr)
		}
	}
	code, _, stderr := gemu(t, "", "-accel", "tcg", "-m", "64", "-nographic", "-kernel", img(cat([]byte{0x0f, 0x0b}, haltLoop)))
	checkOneLineError(t, code, stderr, "guest triple fault (CPU shutdown)")

	if kvm.Available() == nil && kvm.Emulated() {
		code, out, stderr := gemu(t, "", "-m", "64", "-nographic", "-kernel", ok)
		if code != 0 || out != "OK\n" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "using TCG") {
			t.Errorf("default accel on kvm_pvm: exit %d stdout %q stderr %q", code, out, stderr)
		}
	}
}

// TestRebootRestartsGuest checks QEMU's default on a guest reset: the machine starts
// over (the kernel runs again) until something stops it; SIGTERM then ends gemu with
// status 0.
func TestRebootRestartsGuest(t *testing.T) {
	needKVM(t)
	p := filepath.Join(t.TempDir(), "reboot")
	os.WriteFile(p, guestImage(cat(comOut, putc('B'), reset, haltLoop)), 0o644)
	cmd := exec.Command(binPath, "-accel", "kvm", "-m", "64", "-nographic", "-kernel", p)
	stdout, _ := cmd.StdoutPipe()
	var errb bytes.Buffer
	cmd.Stderr = &errb
	cmd.Stdin = strings.NewReader("")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3)
	done := make(chan error, 1)
	go func() { _, err := io.ReadFull(stdout, got); done <- err }()
	select {
	case err := <-done:
		if err != nil || string(got) != "BBB" {
			t.Errorf("read %q, %v: guest did not boot three times", got, err)
		}
	case <-time.After(60 * time.Second):
		t.Error("guest did not reboot")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	go io.Copy(io.Discard, stdout)
	err := cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(errb.String(), "terminating on signal 15") {
		t.Errorf("after SIGTERM: exit %d (%v) stderr %q", code, err, errb.String())
	}
}

package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gemu/cmd/internal/qemuopts"
	"gemu/tests/assets"
	"gemu/tests/testbin"
)

// buildBinary compiles the command once per test binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	return testbin.MustBuild(t, "gemu/cmd/gemu-system-aarch64")
}

// TestBadInput runs the real binary on bad input: each must fail with exit status 1 and
// exactly one line on stderr starting with the program name (no panic, no usage dump).
func TestBadInput(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A synthetic x86 bzImage: boot sector signature and the "HdrS" setup header.
	bz := make([]byte, 8192)
	bz[0x1fe], bz[0x1ff] = 0x55, 0xaa
	copy(bz[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(bz[0x206:], 0x020f)
	bzImage := write("bzImage", bz)
	rawKernel := write("raw", make([]byte, 4096)) // loads (as a raw binary) without a warning
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"corrupt gzip", []string{"-kernel", write("gz", []byte("\x1f\x8b\x08\x00junk"))}, "could not load kernel '" + filepath.Join(dir, "gz") + "': corrupt gzip"},
		{"missing kernel", []string{"-kernel", filepath.Join(dir, "nope")}, "could not load kernel '" + filepath.Join(dir, "nope") + "': no such file"},
		{"x86 ELF", []string{"-kernel", "/bin/true"}, "could not load kernel '/bin/true': ELF file for EM_X86_64"},
		{"missing initrd", []string{"-kernel", rawKernel, "-initrd", filepath.Join(dir, "nope")}, "could not load initrd '" + filepath.Join(dir, "nope") + "'"},
		{"big initrd", []string{"-m", "64", "-kernel", rawKernel, "-initrd", write("big", make([]byte, 40<<20))}, "too big to fit into RAM after the kernel"},
		{"-bios", []string{"-bios", bzImage}, "-bios " + bzImage + ": firmware boot is not supported yet"},
		{"-pflash", []string{"-pflash", bzImage}, "-pflash " + bzImage + ": firmware boot is not supported yet"},
		{"pflash drive", []string{"-drive", "if=pflash,format=raw,file=" + bzImage}, "if=pflash: flash firmware boot is not supported yet"},
		{"fw_cfg both", []string{"-fw_cfg", "name=opt/x,string=a,file=b"}, "-fw_cfg name=opt/x,string=a,file=b: name, plus exactly one of file, string and gen_id, are needed"},
		{"fw_cfg long", []string{"-fw_cfg", "opt/" + strings.Repeat("x", 52) + ",string=a"}, "name too long (max. 55 char)"},
		{"fw_cfg dup", []string{"-fw_cfg", "opt/x,string=a", "-fw_cfg", "name=opt/x,string=b"}, "duplicate fw_cfg file name: opt/x"},
		{"fw_cfg file", []string{"-fw_cfg", "name=opt/x,file=" + filepath.Join(dir, "nope")}, "can't load " + filepath.Join(dir, "nope") + ": no such file"},
		{"no kernel", []string{"-m", "64"}, "no -kernel"},
		{"-m 0", []string{"-m", "0", "-kernel", bzImage}, "RAM size 0"},
		{"-m junk", []string{"-m", "lots"}, "-m lots: Parameter 'size' expects a non-negative number below 2^64"},
		{"-m fraction", []string{"-m", "1.5"}, "-m 1.5: Parameter 'size'"},
		{"-m hotplug", []string{"-m", "1G,maxmem=2G"}, "memory hotplug (maxmem=) is not supported"},
		{"-smp key", []string{"-smp", "2,foo=1"}, "Parameter 'smp.foo' is unexpected"},
		{"-smp product", []string{"-smp", "4,clusters=3"}, "sockets (1) * clusters (3) * cores (1) * threads (1) != maxcpus (4)"},
		{"-smp dies", []string{"-smp", "4,dies=2"}, "dies not supported by this machine's CPU topology"},
		{"cpu props", []string{"-cpu", "max,pauth=off"}, "CPU properties are not supported (pauth)"},
		{"machine prop", []string{"-M", "virt,its=off"}, "Property 'virt-7.2-machine.its' not found"},
		{"accel thread", []string{"-accel", "tcg,thread=single"}, "thread=single is not supported"},
		{"accel key", []string{"-accel", "tcg,tb-size=64"}, "Invalid parameter 'tb-size'"},
		{"device syntax", []string{"-device", `{"driver":`}, "-device"},
		{"-smp 0", []string{"-smp", "0", "-kernel", bzImage}, "-smp"},
		{"-smp 9 gicv2", []string{"-smp", "9", "-kernel", bzImage}, "GICv2"},
		{"cpu", []string{"-cpu", "cortex-a76"}, "unsupported -cpu \"cortex-a76\" (supported: cortex-a53, cortex-a57, cortex-a72, max, neoverse-n1)"},
		{"kvm", []string{"-accel", "kvm"}, "KVM"},
		{"enable-kvm", []string{"-enable-kvm"}, "KVM"},
		{"machine", []string{"-M", "pc"}, "unsupported machine"},
		{"gic", []string{"-M", "virt,gic-version=4"}, "gic-version"},
		{"option", []string{"-bogus"}, "-bogus: invalid option"},
		{"missing value", []string{"-kernel"}, "-kernel: requires an argument"},
		{"trace", []string{"-d", "everything"}, "-d"},
		{"serial", []string{"-serial", "tcp:1234", "-kernel", bzImage}, "chardev"},
		{"dtb", []string{"-dtb", bzImage, "-kernel", bzImage}, "device tree"},
	}
	if assets.Missing("arm64") == "" {
		img, err := os.ReadFile(assets.Kernel("arm64"))
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, struct {
			name string
			args []string
			want string
		}{"truncated Debian Image", []string{"-kernel", write("trunc", img[:len(img)/3])}, "truncated arm64 Image"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A later -serial (the "serial" case) overrides this one, as in QEMU.
			cmd := exec.Command(bin, append([]string{"-nographic", "-serial", "null"}, c.args...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("exit: %v (stderr %q)", err, stderr.String())
			}
			msg := stderr.String()
			if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "gemu-system-aarch64: ") {
				t.Fatalf("want one line starting with the program name, got %q", msg)
			}
			if !strings.Contains(msg, c.want) {
				t.Fatalf("message %q lacks %q", msg, c.want)
			}
		})
	}
}

// TestParse checks the QEMU spellings of the options.
func TestParse(t *testing.T) {
	o, done, err := parse([]string{"-machine", "type=virt,gic-version=max", "--m", "1G", "-smp", "cpus=4,sockets=1",
		"-cpu", "max", "-append", "console=ttyAMA0 quiet", "-no-reboot", "-accel", "tcg", "-display", "none"})
	if err != nil || done {
		t.Fatal(err)
	}
	if o.cfg.GICVersion != 3 || o.cfg.RAMSize != 1<<30 || o.cfg.SMP != 4 || !o.noReboot || o.cfg.Append != "console=ttyAMA0 quiet" {
		t.Fatalf("%+v", o)
	}
	o, _, _ = parse([]string{"-m", "size=512"})
	if o.cfg.RAMSize != 512<<20 || o.cfg.GICVersion != 2 || o.cfg.SMP != 1 || o.serial != "stdio" {
		t.Fatalf("defaults: %+v", o)
	}
}

// TestTopologyAndStoredOptions: -smp keeps the whole topology (and warns it is
// flattened), -m takes fractions, device options are stored and named in a warning.
func TestTopologyAndStoredOptions(t *testing.T) {
	o, _, err := parse([]string{"-smp", "8,sockets=2,clusters=2,threads=2", "-m", "1.5G", "-M", "virt", "-M", "gic-version=3",
		"-device", `{"driver":"virtio-blk-device","drive":"d0"}`, "-drive", "file=x.img,if=none,id=d0", "-qmp", "unix:/tmp/q,server=on,wait=off",
		"-nodefaults", "-no-user-config", "-vga", "none", "-msg", "timestamp=on", "-name", "vm", "-snapshot"})
	if err != nil {
		t.Fatal(err)
	}
	want := qemuopts.Topology{CPUs: 8, Sockets: 2, Dies: 1, Clusters: 2, Cores: 1, Threads: 2, MaxCPUs: 8}
	if o.topology != want || o.cfg.SMP != 8 || o.cfg.RAMSize != 3<<29 || o.cfg.GICVersion != 3 || len(o.Devices) != 1 ||
		len(o.Drives) != 1 || len(o.QMP) != 1 || !o.Snapshot || len(o.warnings) != 1 ||
		!strings.Contains(o.warnings[0], "flattened to 8 CPUs") {
		t.Fatalf("%+v %q", o.topology, o.warnings)
	}
	if o, _, _ := parse([]string{"-smp", "cpus=4,cores=4"}); len(o.warnings) != 0 || o.cfg.SMP != 4 {
		t.Errorf("flat topology warned: %q", o.warnings)
	}
}

// TestHelp runs the binary's help and listing options: exit 0 and the text scripts
// look for.
func TestHelp(t *testing.T) {
	bin := buildBinary(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-h"}, "QEMU-compatible"}, {[]string{"--help"}, "gemu-system-aarch64 [options]"}, {[]string{"-help"}, "QEMU-compatible"},
		{[]string{"-version"}, "gemu-system-aarch64 version"}, {[]string{"--version"}, "gemu-system-aarch64 version"},
		{[]string{"-machine", "help"}, "Supported machines are:\nvirt "}, {[]string{"-cpu", "help"}, "cortex-a57"},
		{[]string{"-accel", "help"}, "tcg"}, {[]string{"-M", "virt", "-chardev", "help"}, "\n  stdio\n"},
		{[]string{"-device", "help"}, `name "virtio-blk-pci"`},
	} {
		out, err := exec.Command(bin, c.args...).Output()
		if err != nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%q: %v %q", c.args, err, out)
		}
	}
}

// TestListingsAsQEMU runs the listing options under both programs: the same exit
// status, the same first line (the header scripts match), and every entry gemu lists
// is one qemu-system-aarch64 lists too.
func TestListingsAsQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Skip("qemu-system-aarch64 not installed")
	}
	bin := buildBinary(t)
	run := func(prog string, args []string) (int, []string) {
		cmd := exec.Command(prog, args...)
		out, err := cmd.Output()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	}
	for _, args := range [][]string{
		{"-machine", "help"}, {"-machine", "?"}, {"-M", "help"}, {"-cpu", "help"}, {"-cpu", "?"},
		{"-accel", "help"}, {"-accel", "?"}, {"-M", "virt", "-chardev", "help"},
		{"-display", "none", "-vga", "none", "-no-user-config", "-msg", "timestamp=on", "-nodefaults", "-machine", "help"},
		{"-device", "help"},
	} {
		gc, gl := run(bin, args)
		qc, ql := run(qemu, args)
		if gc != qc {
			t.Errorf("%q: exit %d, QEMU %d", args, gc, qc)
			continue
		}
		if args[0] == "-device" {
			// Categories differ (QEMU has many more); every device gemu names (as
			// `name "X", bus B`) QEMU names on the same bus.
			for _, l := range gl {
				if l == "" || strings.HasSuffix(l, "devices:") || strings.Contains(l, "alias of") {
					continue
				}
				nameBus, _, _ := strings.Cut(l, ", desc")
				if !slices.ContainsFunc(ql, func(q string) bool { return q == nameBus || strings.HasPrefix(q, nameBus+",") }) {
					t.Errorf("-device help: %q: QEMU lists no such device on that bus", l)
				}
			}
			continue
		}
		if gl[0] != ql[0] {
			t.Errorf("%q: first line %q, QEMU %q", args, gl[0], ql[0])
		}
		for _, l := range gl[1:] {
			name := strings.Fields(l)
			if len(name) == 0 || !slices.ContainsFunc(ql, func(q string) bool { f := strings.Fields(q); return len(f) > 0 && f[0] == name[0] }) {
				t.Errorf("%q: gemu lists %q, QEMU does not", args, l)
			}
		}
	}
}

// TestDumpDTB: -M virt,dumpdtb=FILE writes the blob and exits 0, as QEMU does.
func TestDumpDTB(t *testing.T) {
	f := filepath.Join(t.TempDir(), "x.dtb")
	if code, err := run([]string{"-M", "virt,dumpdtb=" + f, "-smp", "2", "-m", "512"}); code != 0 || err != nil {
		t.Fatal(code, err)
	}
	b, err := os.ReadFile(f)
	if err != nil || len(b) < 40 || binary.BigEndian.Uint32(b) != 0xd00dfeed {
		t.Fatalf("dtb: %v", err)
	}
}

// TestNoDefaults: -nodefaults leaves the PL011 without a backend unless -serial gives one.
func TestNoDefaults(t *testing.T) {
	if o, _, err := parse([]string{"-nodefaults"}); err != nil || o.serial != "null" {
		t.Fatalf("-nodefaults: serial %q, %v", o.serial, err)
	}
	if o, _, err := parse([]string{"-nodefaults", "-serial", "stdio"}); err != nil || o.serial != "stdio" {
		t.Fatalf("-nodefaults -serial stdio: serial %q, %v", o.serial, err)
	}
}

// TestMessagesAsQEMU: a kernel that cannot be loaded fails as in QEMU (exit 1, the
// "could not load kernel" line), with -msg timestamp=on's UTC prefix.
func TestMessagesAsQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Skip("qemu-system-aarch64 not installed")
	}
	bin := buildBinary(t)
	missing := filepath.Join(t.TempDir(), "nope")
	re := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (qemu|gemu)-system-aarch64: could not load kernel '` + regexp.QuoteMeta(missing) + `'`)
	for _, prog := range []string{qemu, bin} {
		var stderr bytes.Buffer
		cmd := exec.Command(prog, "-M", "virt", "-display", "none", "-msg", "timestamp=on", "-kernel", missing)
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !re.MatchString(stderr.String()) {
			t.Errorf("%s: %v, stderr %q", filepath.Base(prog), err, stderr.String())
		}
	}
}

// TestRTC: -rtc as QEMU takes it (libvirt always passes base=utc).
func TestRTC(t *testing.T) {
	for _, c := range []struct {
		spec string
		want time.Duration // expected base, within a few seconds
		err  string
	}{
		{"base=utc", 0, ""},
		{"base=utc,clock=host,driftfix=slew", 0, ""},
		{"base=2006-06-17T16:01:21", time.Until(time.Date(2006, 6, 17, 16, 1, 21, 0, time.UTC)), ""},
		{"base=2006-06-17", time.Until(time.Date(2006, 6, 17, 0, 0, 0, 0, time.UTC)), ""},
		{"clock=foo", 0, "invalid option value 'foo'"},
		{"driftfix=foo", 0, "invalid option value 'foo'"},
		{"foo=1", 0, "Invalid parameter 'foo'"},
		{"base=yesterday", 0, "invalid datetime format"},
	} {
		o, _, err := parse([]string{"-rtc", c.spec})
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("-rtc %s: %v, want %q", c.spec, err, c.err)
			}
			continue
		}
		if err != nil || (o.cfg.RTCBase-c.want).Abs() > 5*time.Second {
			t.Errorf("-rtc %s: base %v, want %v (%v)", c.spec, o.cfg.RTCBase, c.want, err)
		}
	}
	if o, _, err := parse([]string{"-rtc", "base=localtime"}); err != nil {
		t.Fatal(err)
	} else if _, off := time.Now().Zone(); o.cfg.RTCBase != time.Duration(off)*time.Second {
		t.Errorf("localtime: %v", o.cfg.RTCBase)
	}
}

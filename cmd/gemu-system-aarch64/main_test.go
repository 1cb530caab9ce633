package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

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
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"x86 bzImage", []string{"-kernel", bzImage}, "not an arm64 Image"},
		{"short file", []string{"-kernel", write("short", []byte("ARMd"))}, "truncated arm64 Image"},
		{"missing kernel", []string{"-kernel", filepath.Join(dir, "nope")}, "no such file"},
		{"missing initrd", []string{"-kernel", bzImage, "-initrd", filepath.Join(dir, "nope")}, "not an arm64 Image"},
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
		{"cpu", []string{"-cpu", "cortex-a72"}, "unsupported -cpu"},
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
	if assets.Missing("amd64") == "" {
		cases = append(cases, struct {
			name string
			args []string
			want string
		}{"Debian x86 kernel", []string{"-kernel", assets.Kernel("amd64")}, "x86 bzImage"})
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

// TestHelp runs the binary's help and listing options.
func TestHelp(t *testing.T) {
	bin := buildBinary(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-h"}, "QEMU-compatible"}, {[]string{"--help"}, "gemu-system-aarch64 [options]"}, {[]string{"-help"}, "QEMU-compatible"},
		{[]string{"-version"}, "gemu-system-aarch64 version"}, {[]string{"--version"}, "gemu-system-aarch64 version"},
		{[]string{"-machine", "help"}, "Supported machines are:\nvirt "}, {[]string{"-cpu", "help"}, "cortex-a57"},
		{[]string{"-accel", "help"}, "tcg"},
	} {
		out, err := exec.Command(bin, c.args...).Output()
		if err != nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%q: %v %q", c.args, err, out)
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

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
		{"-m junk", []string{"-m", "lots"}, "invalid -m"},
		{"-smp 0", []string{"-smp", "0", "-kernel", bzImage}, "-smp"},
		{"-smp 9 gicv2", []string{"-smp", "9", "-kernel", bzImage}, "GICv2"},
		{"cpu", []string{"-cpu", "cortex-a72"}, "unsupported -cpu"},
		{"kvm", []string{"-accel", "kvm"}, "KVM"},
		{"enable-kvm", []string{"-enable-kvm"}, "KVM"},
		{"machine", []string{"-M", "pc"}, "unsupported machine"},
		{"gic", []string{"-M", "virt,gic-version=4"}, "gic-version"},
		{"option", []string{"-bogus"}, "unknown option"},
		{"missing value", []string{"-kernel"}, "needs an argument"},
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

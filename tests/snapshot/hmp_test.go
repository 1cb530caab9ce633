package snapshot

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gemu/tests/assets"
)

// hmpSession feeds lines to an emulator's -monitor stdio (the guest stopped with -S)
// and returns what the monitor printed, one line each: the banner, prompts and
// QEMU's readline echo removed.
func hmpSession(t *testing.T, bin string, args []string, lines []string) []string {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-M", "virt", "-S", "-display", "none", "-serial", "null", "-monitor", "stdio"}, args...)...)
	// stdin stays open until quit ends the process: the session must not see an end
	// of input first.
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	in.Write([]byte(strings.Join(append(lines, "quit"), "\n") + "\n"))
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not quit", bin)
	}
	if err != nil {
		t.Fatalf("%s: %v\n%s", bin, err, out)
	}
	echo := regexp.MustCompile(`^.*\x1b\[K`)
	var got []string
	for _, l := range strings.Split(strings.ReplaceAll(string(out), "\r", ""), "\n") {
		l = echo.ReplaceAllString(l, "")
		for strings.HasPrefix(l, "(qemu) ") {
			l = strings.TrimPrefix(l, "(qemu) ")
		}
		if l == "" || l == "(qemu)" || strings.HasPrefix(l, "QEMU 7.2") {
			continue
		}
		// The clock and date of a row differ between the runs.
		l = regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \d\d:\d\d:\d\d\.\d{3}`).ReplaceAllString(l, "DATE CLOCK")
		got = append(got, l)
	}
	return got
}

// TestHMPErrorsLikeQEMU runs the same monitor sessions on QEMU 7.2 and gemu and
// compares what they print: savevm/loadvm/delvm with a raw disk, a read-only disk,
// no disk, a missing tag, a disk-only snapshot (qemu-img snapshot -c), wrong argument
// counts, info snapshots.
func TestHMPErrorsLikeQEMU(t *testing.T) {
	need(t, "qemu-system-aarch64")
	if why := assets.Missing("arm64"); why != "" {
		t.Skip(why)
	}
	gemu := binary(t)
	cases := []struct {
		name  string
		disks func(dir string) []string
		lines []string
	}{
		{"raw", func(dir string) []string {
			p := filepath.Join(dir, "r.img")
			run(t, "qemu-img", "create", "-q", "-f", "raw", p, "16M")
			return []string{"-drive", "file=" + p + ",format=raw,if=none,id=d0", "-device", "virtio-blk-device,drive=d0"}
		}, []string{"savevm a", "loadvm nope", "delvm nope", "info snapshots"}},
		{"read-only", func(dir string) []string {
			p := filepath.Join(dir, "ro.qcow2")
			run(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "16M")
			return []string{"-drive", "file=" + p + ",format=qcow2,if=none,id=d0,readonly=on", "-device", "virtio-blk-device,drive=d0"}
		}, []string{"savevm", "info snapshots", "loadvm x"}},
		{"none", func(string) []string { return nil }, []string{"savevm", "info snapshots", "loadvm x", "delvm x"}},
		{"qcow2", func(dir string) []string {
			p := filepath.Join(dir, "q.qcow2")
			run(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "16M")
			run(t, "qemu-img", "snapshot", "-c", "disk", p)
			return []string{"-drive", "file=" + p + ",format=qcow2,if=none,id=d0", "-device", "virtio-blk-device,drive=d0"}
		}, []string{"loadvm", "delvm", "savevm a b", "loadvm nope", "delvm nope", "loadvm disk", "delvm disk",
			"info snapshots", "savevm s1", "savevm s1", "delvm 1", "info snapshots"}},
		{"two", func(dir string) []string {
			a, b := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2")
			run(t, "qemu-img", "create", "-q", "-f", "qcow2", a, "16M")
			run(t, "qemu-img", "create", "-q", "-f", "qcow2", b, "8M")
			run(t, "qemu-img", "snapshot", "-c", "only-b", b)
			return []string{"-drive", "file=" + a + ",format=qcow2,if=none,id=d0", "-device", "virtio-blk-device,drive=d0",
				"-drive", "file=" + b + ",format=qcow2,if=none,id=d1", "-device", "virtio-blk-device,drive=d1"}
		}, []string{"info snapshots", "savevm s1", "info snapshots", "loadvm only-b", "delvm s1", "info snapshots"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dq, dg := t.TempDir(), t.TempDir()
			want := hmpSession(t, "qemu-system-aarch64", c.disks(dq), c.lines)
			got := hmpSession(t, gemu, append([]string{"-kernel", assets.Kernel("arm64")}, c.disks(dg)...), c.lines)
			// VM sizes differ (the streams are each emulator's own): compare the rest.
			size := regexp.MustCompile(`\s+\d[\d.]* [KMG]?i?B DATE`)
			norm := func(l []string) string { return size.ReplaceAllString(strings.Join(l, "\n"), " SIZE DATE") }
			if norm(got) != norm(want) {
				t.Fatalf("monitor output differs for %q\ngemu:\n%s\nQEMU 7.2:\n%s", c.lines, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// TestLoadVMOptionLikeQEMU: -loadvm of a missing tag and of a disk-only snapshot end
// the process with status 1 and QEMU 7.2's one line.
func TestLoadVMOptionLikeQEMU(t *testing.T) {
	need(t, "qemu-system-aarch64")
	if why := assets.Missing("arm64"); why != "" {
		t.Skip(why)
	}
	img := filepath.Join(t.TempDir(), "l.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "16M")
	run(t, "qemu-img", "snapshot", "-c", "disk", img)
	for _, tag := range []string{"nope", "disk"} {
		line := func(bin string, extra ...string) string {
			cmd := exec.Command(bin, append(append([]string{"-M", "virt", "-display", "none", "-serial", "null",
				"-drive", "file=" + img + ",format=qcow2,if=none,id=d0", "-device", "virtio-blk-device,drive=d0"}, extra...),
				"-loadvm", tag)...)
			out, err := cmd.CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			_, msg, _ := strings.Cut(string(out), ": ")
			return fmt.Sprintf("exit %d: %s", code, msg)
		}
		want := line("qemu-system-aarch64")
		if got := line(binary(t), "-kernel", assets.Kernel("arm64")); got != want {
			t.Fatalf("-loadvm %s: gemu %q, QEMU 7.2 %q", tag, got, want)
		}
	}
}

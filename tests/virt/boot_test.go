// Package virt holds the whole-system tests and the benchmark of the aarch64 virt
// board: Debian's arm64 kernel booted by gemu-system-aarch64 with the busybox test
// initramfs of `make assets`. It drives the built binary, as a user does; it must not
// reach into the board's packages.
package virt

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gemu/tests/assets"
	"gemu/tests/testbin"
)

// binary returns $GEMU_BIN/gemu-system-aarch64 if `make build` made it, else builds it.
func binary(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("GEMU_BIN"); d != "" {
		if p := filepath.Join(d, "gemu-system-aarch64"); fileExists(p) {
			return p
		}
	}
	return testbin.MustBuild(t, "gemu/cmd/gemu-system-aarch64")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func needAssets(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a Linux guest (tens of seconds): skipped under -short")
	}
	if why := assets.Missing("arm64"); why != "" {
		t.Skip(why)
	}
}

// console collects a guest's serial output and lets a test wait for a line.
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

// boot starts the guest; limit bounds a hung guest (a safety net, not an assertion on
// speed).
func boot(t *testing.T, gic string, smp int, extra ...string) (*exec.Cmd, *console, io.WriteCloser) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	args := []string{"-M", "virt,gic-version=" + gic, "-cpu", "cortex-a57", "-m", "512", "-smp", fmt.Sprint(smp),
		"-kernel", assets.Kernel("arm64"), "-initrd", assets.Initrd("arm64"), "-nographic"}
	cmd := exec.CommandContext(ctx, binary(t), append(args, extra...)...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, newConsole(out), in
}

// TestBootSMP2 boots Debian's arm64 kernel with two CPUs on each GIC version and checks
// that /init runs (the marker), that both CPUs are online, that CPU 1 can be taken
// offline and back, and that guest poweroff makes the emulator exit 0.
func TestBootSMP2(t *testing.T) {
	needAssets(t)
	for _, gic := range []string{"2", "3"} {
		t.Run("gic-version="+gic, func(t *testing.T) {
			// Hot-unplugging CPU 1 goes through PSCI CPU_OFF (and AFFINITY_INFO polling),
			// plugging it back through CPU_ON.
			script := "echo online:$(cat /sys/devices/system/cpu/online)\n" +
				"echo 0 > /sys/devices/system/cpu/cpu1/online\necho off:$(cat /sys/devices/system/cpu/online)\n" +
				"echo 1 > /sys/devices/system/cpu/cpu1/online\necho on:$(cat /sys/devices/system/cpu/online)\n"
			cmd, con, in := boot(t, gic, 2, "-no-reboot", "-append", "console=ttyAMA0 "+assets.CmdArg(script))
			in.Close()
			marker := con.waitFor(assets.Marker)
			online := con.waitFor("online:0-1")
			off := con.waitFor("off:0")
			on := con.waitFor("on:0-1")
			exitLine := con.waitFor("GEMU-CMD-EXIT")
			err := cmd.Wait()
			if marker == "" {
				t.Fatalf("no %s line; console:\n%s", assets.Marker, con)
			}
			if !strings.Contains(marker, "cpus=2") || online == "" {
				t.Fatalf("two CPUs not online: %q; console:\n%s", marker, con)
			}
			if off == "" || on == "" {
				t.Fatalf("CPU 1 hot-unplug/replug via PSCI failed; console:\n%s", con)
			}
			if exitLine != "GEMU-CMD-EXIT 0" {
				t.Fatalf("script status %q", exitLine)
			}
			if err != nil {
				t.Fatalf("emulator exit after guest poweroff: %v", err)
			}
		})
	}
}

// TestInteractiveShell types into the busybox shell on the PL011 console, then quits
// with Ctrl-A x (exit status 0, as QEMU).
func TestInteractiveShell(t *testing.T) {
	needAssets(t)
	cmd, con, in := boot(t, "3", 1, "-no-reboot", "-append", "console=ttyAMA0 quiet")
	if con.waitFor("busybox shell") == "" {
		t.Fatalf("no shell prompt; console:\n%s", con)
	}
	time.Sleep(time.Second) // let the shell open the console
	io.WriteString(in, "echo gemu-$((6*7))-ok\n")
	if con.waitFor("gemu-42-ok") == "" {
		t.Fatalf("shell did not evaluate input; console:\n%s", con)
	}
	io.WriteString(in, "\x01x") // QEMU's Ctrl-A x: quit
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after Ctrl-A x: %v", err)
	}
}

// TestReboot: a guest reset (PSCI SYSTEM_RESET) boots the board again, or ends the
// emulator with status 0 under -no-reboot, as QEMU does.
func TestReboot(t *testing.T) {
	needAssets(t)
	app := "console=ttyAMA0 quiet " + assets.CmdArg("reboot -f\n")
	cmd, con, in := boot(t, "2", 1, "-no-reboot", "-append", app)
	in.Close()
	if con.waitFor(assets.Marker) == "" {
		t.Fatalf("no marker; console:\n%s", con)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("-no-reboot: exit after guest reset: %v", err)
	}

	cmd, con, in = boot(t, "2", 1, "-append", app)
	defer in.Close()
	for i := range 2 {
		if con.waitFor(assets.Marker) == "" {
			t.Fatalf("boot %d: no marker; console:\n%s", i+1, con)
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
}

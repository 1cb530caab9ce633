package pc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
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

// console collects a guest's serial output and lets a test wait for a line.
type console struct {
	mu    sync.Mutex
	buf   strings.Builder
	lines chan string
}

func newConsole(r io.Reader) *console {
	c := &console{lines: make(chan string, 4096)}
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

// hostBusybox runs the guest's own static busybox on this (x86-64) host: the oracle
// for the guest's CPU-bound jobs.
func hostBusybox(t *testing.T, script string) string {
	t.Helper()
	bb := filepath.Join(assets.Dir("amd64"), "busybox")
	cmd := exec.Command(bb, "sh", "-c", script)
	cmd.Env = append(os.Environ(), "BB="+bb)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("host busybox: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestTCGBootShell boots Debian's amd64 kernel under gemu's own x86-64 translator
// (-accel tcg -smp 2, no KVM) to the busybox shell, checks both CPUs are online, runs
// CPU-bound busybox jobs typed at the shell (sha256sum, gzip | md5sum of the busybox
// binary) whose output must equal the same busybox's on the host CPU, then types
// poweroff, which must power the machine off (emulator exit status 0).
func TestTCGBootShell(t *testing.T) {
	if testing.Short() {
		t.Skip("boots Linux under the x86 translator (minutes): skipped with -short")
	}
	if m := assets.Missing("amd64"); m != "" {
		t.Skip(m)
	}
	// The image is built from the current /init, whatever the cached one holds.
	initrd := filepath.Join(t.TempDir(), "initrd.gz")
	if err := assets.InitrdWith("amd64", initrd); err != nil {
		t.Fatal(err)
	}
	gemu := testbin.MustBuild(t, "gemu/cmd/gemu-system-x86_64")
	// A safety net for a hung guest, not an assertion on speed.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gemu, "-accel", "tcg", "-nographic", "-no-reboot", "-m", "256", "-smp", "2",
		"-kernel", assets.Kernel("amd64"), "-initrd", initrd, "-append", "console=ttyS0 quiet panic=-1")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	con := newConsole(out)
	fail := func(format string, a ...any) {
		t.Helper()
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("%s\nconsole:\n%s\nstderr:\n%s", fmt.Sprintf(format, a...), con, &stderr)
	}
	marker := con.waitFor(assets.Marker)
	if marker == "" {
		fail("no %s line", assets.Marker)
	}
	if !strings.Contains(marker, "arch=x86_64 cpus=2") {
		fail("marker %q: want arch=x86_64 cpus=2", marker)
	}
	if con.waitFor("busybox shell") == "" {
		fail("no shell banner")
	}
	time.Sleep(2 * time.Second) // let the shell open the console
	bb, err := os.ReadFile(filepath.Join(assets.Dir("amd64"), "busybox"))
	if err != nil {
		t.Fatal(err)
	}
	wantSHA := fmt.Sprintf("%x", sha256.Sum256(bb))
	// gzip from stdin (no name, mtime 0), so the stream depends only on the bytes.
	wantGZ := hostBusybox(t, `"$BB" gzip -c < "$BB" | "$BB" md5sum | "$BB" cut -d' ' -f1`)
	wantCount := hostBusybox(t, `"$BB" awk 'BEGIN{s=0; for(i=1;i<=300000;i++) s=(s*31+i)%1000003; print s}'`)
	steps := []struct{ cmd, tag, want string }{
		{"echo ONLINE=$(cat /sys/devices/system/cpu/online)", "ONLINE=", "ONLINE=0-1"},
		{"echo SHA=$(sha256sum /bin/busybox | cut -d' ' -f1)", "SHA=", "SHA=" + wantSHA},
		{"echo GZ=$(gzip -c < /bin/busybox | md5sum | cut -d' ' -f1)", "GZ=", "GZ=" + wantGZ},
		{"echo AWK=$(awk 'BEGIN{s=0; for(i=1;i<=300000;i++) s=(s*31+i)%1000003; print s}')", "AWK=", "AWK=" + wantCount},
	}
	for _, s := range steps {
		io.WriteString(in, s.cmd+"\n")
		// The shell echoes the command line first; the result is the line starting with the tag.
		var got string
		for {
			l := con.waitFor(s.tag)
			if l == "" {
				fail("no %s line after %q", s.tag, s.cmd)
			}
			if l = strings.TrimSpace(l); strings.HasPrefix(l, s.tag) {
				got = l
				break
			}
		}
		if got != s.want {
			fail("%q: guest printed %q, host says %q", s.cmd, got, s.want)
		}
	}
	io.WriteString(in, "poweroff\n")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("emulator exit after poweroff at the shell: %v\nconsole:\n%s\nstderr:\n%s", err, con, &stderr)
		}
	case <-time.After(5 * time.Minute):
		fail("poweroff typed at the shell did not power the machine off")
	}
}

package virt

import (
	"bytes"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gemu/tests/assets"
)

// capture is a serial backend that keeps the guest's output.
type capture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}
func (c *capture) SetReceiver(func(byte)) {}
func (c *capture) Close() error           { return nil }
func (c *capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// TestPowerButtonGuest boots Debian's arm64 kernel and presses the board's power button
// (the gpio-key on PL061 line 3, as QEMU's system_powerdown without ACPI): Linux's
// gpio-keys driver must deliver KEY_POWER (EV_KEY 116, value 1) on its input device.
func TestPowerButtonGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a Linux guest: skipped under -short")
	}
	if why := assets.Missing("arm64"); why != "" {
		t.Skip(why)
	}
	const keyDown = "01 00 74 00 01 00 00 00" // EV_KEY, KEY_POWER, pressed
	initrd := filepath.Join(t.TempDir(), "initrd.gz")
	if err := assets.InitrdWith("arm64", initrd, "gpio_keys", "evdev"); err != nil {
		t.Skip(err)
	}
	// 24-byte input_events of the gpio-keys device (timeval, type, code, value), each read
	// in one piece (evdev refuses reads shorter than an event, as od's would be), until a
	// key press: a press that lands before dd has the device open is lost while its
	// release, a moment later, is read (seen in make test), so the guest reads again and
	// the host keeps pressing.
	script := "loadmods gpio_keys evdev\necho READY\n" +
		"while :; do e=$(dd if=/dev/input/event0 bs=24 count=1 2>/dev/null | od -A n -t x1 | tr -d '\\n')\n" +
		"case \"$e\" in *'" + keyDown + "') echo \"$e END\"; break;; esac; done\n"
	out := &capture{}
	m, err := New(Config{RAMSize: 512 << 20, SMP: 1, GICVersion: 2, Kernel: assets.Kernel("arm64"), Initrd: initrd,
		Append: "console=ttyAMA0 " + assets.CmdArg(script), Serial: out})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		exit Exit
		err  error
	}
	done := make(chan result, 1)
	go func() { e, err := m.Run(); done <- result{e, err} }()
	deadline := time.After(5 * time.Minute)
	pressed := 0
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case r := <-done:
			o := out.String()
			if !strings.Contains(o, keyDown+" END") {
				t.Fatalf("no KEY_POWER event after %d presses (exit %v, %v); console:\n%s", pressed, r.exit, r.err, o)
			}
			if r.err != nil || r.exit != ExitPowerOff {
				t.Fatalf("exit %v, %v", r.exit, r.err)
			}
			return
		case <-deadline:
			m.Stop()
			<-done
			t.Fatalf("guest did not finish; console:\n%s", out.String())
		case <-tick.C:
			// Press until od has the device open (a press before that is not queued).
			if strings.Contains(out.String(), "READY") && !strings.Contains(out.String(), " END") {
				m.PowerButton()
				pressed++
			}
		}
	}
}

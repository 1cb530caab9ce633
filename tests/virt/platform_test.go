package virt

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gemu/tests/assets"
)

// TestPlatformDevices boots Debian's arm64 kernel and checks the virt board's platform
// devices through the guest's own drivers: the PL031 sets the guest's clock (rtc-pl031
// with RTC_HCTOSYS; `date +%s` within 2 s of the host's, where without the RTC it is
// 1970), fw_cfg probes (qemu_fw_cfg: the interface revision with the DMA bit, a
// -fw_cfg string item read back through sysfs, which Linux reads by DMA), the PL061
// registers and gpio-keys binds to the power-button node.
func TestPlatformDevices(t *testing.T) {
	needAssets(t)
	initrd := filepath.Join(t.TempDir(), "initrd.gz")
	if err := assets.InitrdWith("arm64", initrd, "qemu_fw_cfg", "gpio_keys"); err != nil {
		t.Skip(err)
	}
	const item = "gemu fw_cfg item, 32 bytes long!"
	script := "loadmods qemu_fw_cfg gpio_keys\n" +
		"echo GUEST-DATE $(date +%s)\n" +
		"echo FWCFG-REV $(cat /sys/firmware/qemu_fw_cfg/rev)\n" +
		"echo FWCFG-ITEM $(cat /sys/firmware/qemu_fw_cfg/by_name/opt/gemu/test/raw)\n" +
		"echo FWCFG-SIZE $(cat /sys/firmware/qemu_fw_cfg/by_name/opt/gemu/test/size)\n" +
		"dmesg | grep -E 'pl061|rtc-pl031|gpio-keys' | sed 's/^/DMESG /'\n"
	cmd, con, in := bootWith(t, initrd, "-no-reboot", "-fw_cfg", "name=opt/gemu/test,string="+strings.ReplaceAll(item, ",", ",,"),
		"-append", "console=ttyAMA0 "+assets.CmdArg(script))
	in.Close()
	dateLine := con.waitFor("GUEST-DATE ")
	host := time.Now().Unix()
	rev := con.waitFor("FWCFG-REV")
	got := con.waitFor("FWCFG-ITEM")
	size := con.waitFor("FWCFG-SIZE")
	exitLine := con.waitFor("GEMU-CMD-EXIT")
	if err := cmd.Wait(); err != nil {
		t.Errorf("emulator exit after guest poweroff: %v", err)
	}
	out := con.String()
	if dateLine == "" {
		t.Fatalf("no date from the guest; console:\n%s", out)
	}
	guest, err := strconv.ParseInt(strings.TrimSpace(dateLine[strings.Index(dateLine, "GUEST-DATE ")+11:]), 10, 64)
	if err != nil {
		t.Fatalf("date line %q: %v", dateLine, err)
	}
	if d := guest - host; d < -2 || d > 2 {
		t.Errorf("guest date %d, host %d: %d s apart", guest, host, d)
	}
	if !strings.HasSuffix(rev, "FWCFG-REV 3") {
		t.Errorf("fw_cfg revision line %q, want 3 (traditional + DMA); console:\n%s", rev, out)
	}
	if !strings.HasSuffix(got, "FWCFG-ITEM "+item) || !strings.HasSuffix(size, "FWCFG-SIZE 32") {
		t.Errorf("fw_cfg item read back as %q (%q)", got, size)
	}
	for _, want := range []string{"PL061 GPIO chip registered", "rtc-pl031 9010000.pl031: setting system clock", "input: gpio-keys as"} {
		if !strings.Contains(out, want) {
			t.Errorf("dmesg lacks %q", want)
		}
	}
	if strings.Contains(out, "GEMU-MODPROBE-FAIL") || exitLine != "GEMU-CMD-EXIT 0" {
		t.Errorf("script: %q; console:\n%s", exitLine, out)
	}
}

// bootWith starts the guest as boot does, with another initramfs.
func bootWith(t *testing.T, initrd string, extra ...string) (*exec.Cmd, *console, io.WriteCloser) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	args := []string{"-M", "virt", "-cpu", "cortex-a57", "-m", "512", "-kernel", assets.Kernel("arm64"), "-initrd", initrd, "-nographic"}
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

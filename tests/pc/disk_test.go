package pc

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gemu/accel/kvm"
	"gemu/tests/assets"
	"gemu/tests/diskimg"
	"gemu/tests/harness"
	"gemu/tests/testbin"
)

// TestExt4QcowOverlayPC: ext4 on a qcow2 overlay over a qcow2 base (both made by
// qemu-img) on the PC board's virtio-blk-pci (-drive if=virtio). The guest reads a file
// through the overlay from the base and writes a new one; afterwards `qemu-img check`
// passes on the overlay, the base is byte-identical and the new file is in the overlay.
//
// Where the host's KVM cannot boot Linux the images travel into the KVM-in-TCG
// harness's outer guest in its initramfs, with the host's qemu-img and debugfs (and
// their libraries), which check the images there after gemu exits.
//
// GEMU_PC_EMULATOR=qemu runs the inner guest on QEMU instead, to check the test itself.
func TestExt4QcowOverlayPC(t *testing.T) {
	if testing.Short() {
		t.Skip("boots Linux (minutes inside the harness): skipped with -short")
	}
	if m := assets.Missing("amd64"); m != "" {
		t.Skip(m)
	}
	diskimg.Need(t)
	dir := t.TempDir()
	big := diskimg.Pseudo(2, 16<<20)
	raw, base, top := filepath.Join(dir, "fs.raw"), filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	diskimg.Ext4(t, raw, 48, map[string][]byte{"big": big})
	diskimg.Convert(t, raw, "raw", base, "qcow2")
	// A relative backing name, so that the pair can move into the harness together.
	diskimg.Overlay(t, "base.qcow2", "qcow2", top)
	baseSum := diskimg.FileSHA256(t, base)
	const newLine, newSize = "gemu-pc-line", 1000000
	want := diskimg.Repeat(newLine, newSize)
	inner := "loadmods virtio_pci virtio_blk crc32c_generic ext4\n" +
		"i=0;while [ ! -b /dev/vda ]&&[ $i -lt 300 ];do sleep .2;i=$((i+1));done\n" +
		"mkdir -p /mnt; mount -t ext4 /dev/vda /mnt || echo MOUNT-FAILED\n" +
		"echo BIG=$(sha256sum </mnt/big)\n" +
		fmt.Sprintf("yes %s | head -c %d >/mnt/newfile\n", newLine, newSize) +
		"sync; umount /mnt && echo UMOUNT=ok\n"
	emu, qemu := "", os.Getenv("GEMU_PC_EMULATOR") == "qemu"
	var gemu string
	if qemu {
		emu = "qemu-system-x86_64 -nic none" // no NIC option ROM in the harness
	} else {
		gemu = testbin.MustBuild(t, "gemu/cmd/gemu-system-x86_64")
		emu = gemu
	}
	common := "-accel kvm -nographic -no-reboot " + harness.InnerArgs(512, 1, inner)
	var out string
	if kvm.Available() == nil && !kvm.Emulated() {
		host := strings.NewReplacer(harness.InnerKernel, assets.Kernel("amd64"), harness.InnerInitrd, assets.Initrd("amd64"))
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		b, err := exec.CommandContext(ctx, "sh", "-c", emu+" "+host.Replace(common)+" -drive file="+top+",if=virtio,format=qcow2").CombinedOutput()
		out = string(b)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		out += "\nGEMU-EXIT=0\n"
		if c := diskimg.Check(t, top, "qcow2"); c.Clean() {
			out += "CHECK=0\n"
		} else {
			t.Logf("qemu-img check:\n%s", c.Text)
		}
		out += "BASE-SUM=" + diskimg.FileSHA256(t, base) + "\n"
		out += "NEWFILE=" + diskimg.SHA256(diskimg.Ext4Cat(t, top, "qcow2", "/newfile")) + "\n"
		out += "BIGFILE=" + diskimg.SHA256(diskimg.Ext4Cat(t, top, "qcow2", "/big")) + "\n"
	} else {
		if m := harness.Missing(); m != "" {
			t.Skipf("no hardware KVM here and the KVM-in-TCG harness cannot run: %s", m)
		}
		if !qemu {
			emu = harness.InnerGemu
		}
		files := map[string]string{"/disk/base.qcow2": base, "/disk/top.qcow2": top}
		for _, bin := range []string{"qemu-img", "debugfs"} {
			if err := addHostBinary(files, bin); err != nil {
				t.Skipf("cannot bundle %s into the harness: %v", bin, err)
			}
		}
		script := emu + " " + common + " -drive file=/disk/top.qcow2,if=virtio,format=qcow2\n" +
			"echo GEMU-EXIT=$?\n" +
			"echo BASE-SUM=$(sha256sum </disk/base.qcow2)\n" +
			"qemu-img check /disk/top.qcow2; echo CHECK=$?\n" +
			"qemu-img convert -O raw /disk/top.qcow2 /disk/top.raw\n" +
			"echo NEWFILE=$(debugfs -R 'cat /newfile' /disk/top.raw 2>/dev/null | sha256sum)\n" +
			"echo BIGFILE=$(debugfs -R 'cat /big' /disk/top.raw 2>/dev/null | sha256sum)\n"
		var err error
		out, err = harness.Run(context.Background(), harness.Options{Script: script, Gemu: gemu, QEMU: qemu,
			Files: files, Timeout: 12 * time.Minute})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	field := func(key string) string {
		m := regexp.MustCompile(`(?m)`+regexp.QuoteMeta(key)+`=(\S*)`).FindAllStringSubmatch(out, -1)
		if m == nil {
			return ""
		}
		return m[len(m)-1][1]
	}
	if field("GEMU-EXIT") != "0" {
		t.Errorf("emulator exit status %q after guest poweroff", field("GEMU-EXIT"))
	}
	if got := field("BIG"); got != diskimg.SHA256(big) {
		t.Errorf("guest's sha256 of /big through the overlay = %q, want %s", got, diskimg.SHA256(big))
	}
	if field("UMOUNT") != "ok" {
		t.Errorf("guest's umount failed")
	}
	if field("CHECK") != "0" {
		t.Errorf("qemu-img check of the overlay: status %q", field("CHECK"))
	}
	if field("BASE-SUM") != baseSum {
		t.Errorf("base.qcow2 changed under its overlay")
	}
	if got := field("NEWFILE"); got != diskimg.SHA256(want) {
		t.Errorf("/newfile in the overlay: sha256 %q, want %s", got, diskimg.SHA256(want))
	}
	if got := field("BIGFILE"); got != diskimg.SHA256(big) {
		t.Errorf("/big read back from the overlay: sha256 %q", got)
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// addHostBinary adds a host program and the shared libraries ldd lists to files (for
// the harness's initramfs), at their host paths.
func addHostBinary(files map[string]string, name string) error {
	bin, err := exec.LookPath(name)
	if err != nil {
		return err
	}
	files["/usr/bin/"+name] = bin
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return fmt.Errorf("ldd %s: %w", bin, err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		for _, f := range strings.Fields(sc.Text()) {
			if strings.HasPrefix(f, "/") {
				files[f] = f
			}
		}
	}
	return nil
}

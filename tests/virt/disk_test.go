package virt

// Whole-system tests of the virtio devices on the virt board: virtio-blk over both
// transports (virtio-pci on the PCIe host for if=virtio and -device virtio-blk-pci,
// virtio-mmio for -device virtio-blk-device) with qcow2 overlays, VMDK and raw images,
// -snapshot, snapshot=on, readonly=on, image locking and a SIGKILL mid-write;
// virtio-rng; virtconsole. Images are made and checked with the host's qemu-img,
// mkfs.ext4, debugfs and e2fsck (package diskimg); the guest is Debian's kernel with
// the test initramfs, which ships ext4 and the virtio drivers as modules.
//
// GEMU_VIRT_EMULATOR=qemu-system-aarch64 runs the same tests on QEMU, to check the
// tests themselves.

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gemu/tests/assets"
	"gemu/tests/diskimg"
	"gemu/tests/testbin"
)

// emulator is the system emulator under test.
// It is built once per test process (a build takes tens of seconds on a loaded
// machine) unless GEMU_BIN has it.
func emulator(t *testing.T) string {
	t.Helper()
	if e := os.Getenv("GEMU_VIRT_EMULATOR"); e != "" {
		p, err := exec.LookPath(e)
		if err != nil {
			t.Fatalf("GEMU_VIRT_EMULATOR: %v", err)
		}
		return p
	}
	if d := os.Getenv("GEMU_BIN"); d != "" && fileExists(filepath.Join(d, "gemu-system-aarch64")) {
		return filepath.Join(d, "gemu-system-aarch64")
	}
	built.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "gemu-virt-")
		if built.err == nil {
			built.path, built.err = testbin.Build(built.dir, "gemu/cmd/gemu-system-aarch64")
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

var built struct {
	sync.Once
	dir, path string
	err       error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

func needDisk(t *testing.T) {
	t.Helper()
	needAssets(t)
	diskimg.Need(t)
}

// guestLib is shell the test scripts share (kept short: the script travels base64 on
// the kernel command line, which arm64 limits to 2 KiB):
//
//	w PATH      waits (at most 60 s: virtio probing is asynchronous) for PATH to exist
//	ser SERIAL  waits for the virtio disk with that serial and prints its /dev path
const guestLib = `w(){ i=0;while [ ! -e $1 ]&&[ $i -lt 300 ];do sleep .2;i=$((i+1));done;[ -e $1 ]||echo NODEV=$1;}
ser(){ i=0;while [ $i -lt 300 ];do for d in /sys/block/vd*;do [ "$(cat $d/serial 2>/dev/null)" = $1 ]&&{ echo /dev/${d##*/};return;};done;sleep .2;i=$((i+1));done;echo NOSER=$1 >&2;}
mkdir -p /mnt
`

// guest is a running emulator.
type guest struct {
	cmd    *exec.Cmd
	con    *console
	in     io.WriteCloser
	stderr *bytes.Buffer
	exited chan struct{} // closed when the emulator has exited and err is set
	err    error
}

// wait waits for the emulator to exit and for the console to have read all output.
func (g *guest) wait() error {
	<-g.exited
	for range g.con.lines {
	}
	return g.err
}

// kill ends the emulator with SIGKILL.
func (g *guest) kill() {
	g.cmd.Process.Signal(syscall.SIGKILL)
	g.wait()
}

// start boots the guest with script run by /init (console ttyAMA0 unless appendExtra
// says otherwise) and extra emulator arguments.
func start(t *testing.T, script, appendExtra string, extra ...string) *guest {
	t.Helper()
	arg := assets.CmdArg(guestLib + script)
	if len(arg) > 1900 {
		t.Fatalf("script too long for the kernel command line (%d bytes encoded)", len(arg))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	args := append([]string{"-M", "virt", "-cpu", "cortex-a57", "-m", "512",
		"-kernel", assets.Kernel("arm64"), "-initrd", assets.Initrd("arm64"),
		"-append", "console=ttyAMA0 quiet panic=-1 " + appendExtra + arg,
		"-nographic", "-no-reboot"}, extra...)
	cmd := exec.CommandContext(ctx, emulator(t), args...)
	cmd.WaitDelay = 5 * time.Second
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	// stdout through an io.Pipe, not StdoutPipe: Wait then returns only after all of
	// the output was copied, and the console sees EOF when it is closed below.
	pr, pw := io.Pipe()
	g := &guest{cmd: cmd, in: in, stderr: new(bytes.Buffer), exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = pw, g.stderr
	t.Logf("%s %s", filepath.Base(cmd.Path), strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g.con = newConsole(pr)
	t.Cleanup(func() {
		select {
		case <-g.exited:
		default:
			g.kill()
		}
	})
	go func() {
		g.err = cmd.Wait()
		pw.Close()
		close(g.exited)
	}()
	return g
}

// finish waits for the guest to power off and returns the console output; the
// emulator must exit 0 and the script report status 0.
func (g *guest) finish(t *testing.T) string {
	t.Helper()
	g.in.Close()
	err := g.wait()
	out := g.con.String()
	if err != nil {
		t.Fatalf("emulator: %v\nstderr:\n%s\nconsole:\n%s", err, g.stderr, out)
	}
	if !strings.Contains(out, "GEMU-CMD-EXIT 0") {
		t.Fatalf("guest script did not finish with status 0; stderr:\n%s\nconsole:\n%s", g.stderr, out)
	}
	return out
}

// field returns the value the guest printed as KEY=value (the last one), or "".
func field(out, key string) string {
	m := regexp.MustCompile(`(?m)`+regexp.QuoteMeta(key)+`=(\S*)`).FindAllStringSubmatch(out, -1)
	if m == nil {
		return ""
	}
	return m[len(m)-1][1]
}

// TestExt4QcowOverlay: ext4 on a qcow2 overlay over a qcow2 base, both made by qemu-img,
// on virtio-blk-pci (if=virtio). The guest reads a 48 MiB file through the overlay from
// the base and writes a new file; afterwards the overlay passes `qemu-img check`, the
// base is byte-identical, and the new file is in the overlay with the right content.
func TestExt4QcowOverlay(t *testing.T) {
	needDisk(t)
	dir := t.TempDir()
	big := diskimg.Pseudo(1, 48<<20)
	raw, base, top := filepath.Join(dir, "fs.raw"), filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	diskimg.Ext4(t, raw, 96, map[string][]byte{"big": big})
	diskimg.Convert(t, raw, "raw", base, "qcow2")
	diskimg.Overlay(t, base, "qcow2", top)
	baseSum := diskimg.FileSHA256(t, base)
	const newLine, newSize = "gemu-guest-line", 3000000
	script := `loadmods virtio_pci virtio_blk crc32c_generic ext4
w /dev/vda
echo SYS=$(readlink -f /sys/block/vda)
mount -t ext4 /dev/vda /mnt || echo MOUNT-FAILED
echo BIG=$(sha256sum </mnt/big)
yes ` + newLine + ` | head -c ` + fmt.Sprint(newSize) + ` >/mnt/newfile
echo NEW=$(sha256sum </mnt/newfile)
sync
umount /mnt && echo UMOUNT=ok
`
	g := start(t, script, "", "-drive", "file="+top+",if=virtio,format=qcow2")
	out := g.finish(t)
	want := diskimg.Repeat(newLine, newSize)
	if got := field(out, "BIG"); got != diskimg.SHA256(big) {
		t.Errorf("guest's sha256 of /big through the overlay = %q, want %s", got, diskimg.SHA256(big))
	}
	if got := field(out, "NEW"); got != diskimg.SHA256(want) {
		t.Errorf("guest's sha256 of its own /newfile = %q, want %s", got, diskimg.SHA256(want))
	}
	if field(out, "UMOUNT") != "ok" {
		t.Errorf("umount failed")
	}
	// On virt, if=virtio is virtio-blk-pci on the PCIe host, as in QEMU.
	if sys := field(out, "SYS"); !strings.Contains(sys, "pci0000:00") {
		t.Errorf("vda is not on PCI: %s", sys)
	}
	if c := diskimg.Check(t, top, "qcow2"); !c.Clean() {
		t.Errorf("qemu-img check top.qcow2 not clean:\n%s", c.Text)
	}
	if got := diskimg.FileSHA256(t, base); got != baseSum {
		t.Errorf("base.qcow2 changed under its overlay (sha256 %s, was %s)", got, baseSum)
	}
	if got := diskimg.Ext4Cat(t, top, "qcow2", "/newfile"); !bytes.Equal(got, want) {
		t.Errorf("/newfile in the overlay: %d bytes, want %d (sha256 %s)", len(got), len(want), diskimg.SHA256(got))
	}
	if got := diskimg.Ext4Cat(t, top, "qcow2", "/big"); !bytes.Equal(got, big) {
		t.Errorf("/big read back through the overlay differs")
	}
	if fsck, ok := diskimg.Fsck(t, top, "qcow2"); !ok {
		t.Errorf("e2fsck -fn on the overlay's filesystem:\n%s", fsck)
	}
	if t.Failed() {
		t.Logf("console:\n%s", out)
	}
}

// TestVirtioMMIODisks: the same read-and-write through virtio-mmio (-device
// virtio-blk-device), one disk a VMDK made by qemu-img, the other raw, both in one guest
// and found by their serial=.
func TestVirtioMMIODisks(t *testing.T) {
	needDisk(t)
	dir := t.TempDir()
	type disk struct {
		serial, format, path string
		big                  []byte
	}
	disks := []*disk{{serial: "vmdk0", format: "vmdk"}, {serial: "raw0", format: "raw"}}
	var args []string
	script := "loadmods virtio_mmio virtio_blk crc32c_generic ext4\n"
	for i, d := range disks {
		d.big = diskimg.Pseudo(uint64(10+i), 16<<20)
		raw := filepath.Join(dir, d.serial+".raw")
		diskimg.Ext4(t, raw, 48, map[string][]byte{"big": d.big})
		d.path = raw
		if d.format != "raw" {
			d.path = filepath.Join(dir, d.serial+"."+d.format)
			diskimg.Convert(t, raw, "raw", d.path, d.format)
		}
		id := fmt.Sprintf("d%d", i)
		args = append(args, "-drive", "file="+d.path+",if=none,id="+id+",format="+d.format,
			"-device", "virtio-blk-device,drive="+id+",serial="+d.serial)
		script += fmt.Sprintf("d=$(ser %[1]s); echo SYS-%[1]s=$(readlink -f /sys/block/${d#/dev/}); mount -t ext4 $d /mnt || echo MOUNT-FAILED=%[1]s\n"+
			"echo BIG-%[1]s=$(sha256sum </mnt/big)\nyes gemu-%[1]s | head -c 1000000 >/mnt/newfile\n"+
			"sync; umount /mnt && echo UMOUNT-%[1]s=ok\n", d.serial)
	}
	out := start(t, script, "", args...).finish(t)
	for _, d := range disks {
		if got := field(out, "BIG-"+d.serial); got != diskimg.SHA256(d.big) {
			t.Errorf("%s: guest's sha256 of /big = %q, want %s", d.serial, got, diskimg.SHA256(d.big))
		}
		if field(out, "UMOUNT-"+d.serial) != "ok" {
			t.Errorf("%s: umount failed", d.serial)
		}
		if sys := field(out, "SYS-"+d.serial); !strings.Contains(sys, "virtio_mmio") {
			t.Errorf("%s is not on virtio-mmio: %s", d.serial, sys)
		}
		if d.format != "raw" {
			if c := diskimg.Check(t, d.path, d.format); !c.Clean() {
				t.Errorf("qemu-img check %s:\n%s", d.path, c.Text)
			}
		}
		want := diskimg.Repeat("gemu-"+d.serial, 1000000)
		if got := diskimg.Ext4Cat(t, d.path, d.format, "/newfile"); !bytes.Equal(got, want) {
			t.Errorf("%s: /newfile: %d bytes, want %d", d.serial, len(got), len(want))
		}
		if fsck, ok := diskimg.Fsck(t, d.path, d.format); !ok {
			t.Errorf("%s: e2fsck -fn:\n%s", d.serial, fsck)
		}
	}
	if t.Failed() {
		t.Logf("console:\n%s", out)
	}
}

// writeAndReadBack is guest shell that writes 1 MiB of "yes TAG" at offset 1 MiB of
// disk $d with O_SYNC semantics (conv=fsync), drops the page cache and prints the
// sha256 of what reads back as RB-TAG=.
func writeAndReadBack(dev, tag string) string {
	return fmt.Sprintf("yes %[2]s | head -c 1048576 | dd of=%[1]s bs=65536 seek=16 conv=fsync 2>/dev/null || echo WRITE-FAILED=%[2]s\n"+
		"echo 3 >/proc/sys/vm/drop_caches; echo RB-%[2]s=$(dd if=%[1]s bs=65536 skip=16 count=16 2>/dev/null | sha256sum)\n", dev, tag)
}

// TestSnapshot: with -snapshot, and with snapshot=on on one drive, the guest's writes
// are visible to the guest but never reach the image; a drive without snapshot=on in
// the same guest does take the writes (the control).
func TestSnapshot(t *testing.T) {
	needDisk(t)
	written := diskimg.SHA256(diskimg.Repeat("snap", 1<<20)) // tag "snap" below
	t.Run("-snapshot", func(t *testing.T) {
		dir := t.TempDir()
		img := filepath.Join(dir, "a.qcow2")
		raw := filepath.Join(dir, "b.raw")
		diskimg.Convert(t, writeRawFile(t, dir, "a.src", diskimg.Pseudo(20, 8<<20)), "raw", img, "qcow2")
		diskimg.WriteRaw(t, raw, diskimg.Pseudo(21, 8<<20))
		sumA, sumB := diskimg.FileSHA256(t, img), diskimg.FileSHA256(t, raw)
		script := "loadmods virtio_pci virtio_blk\nw /dev/vda; w /dev/vdb\n" +
			writeAndReadBack("/dev/vda", "snap") + strings.ReplaceAll(writeAndReadBack("/dev/vdb", "snap"), "RB-snap", "RB2-snap")
		out := start(t, script, "", "-snapshot", "-drive", "file="+img+",if=virtio,format=qcow2",
			"-drive", "file="+raw+",if=virtio,format=raw").finish(t)
		if field(out, "RB-snap") != written || field(out, "RB2-snap") != written {
			t.Errorf("guest did not read back its writes (%q, %q, want %s)", field(out, "RB-snap"), field(out, "RB2-snap"), written)
		}
		if diskimg.FileSHA256(t, img) != sumA {
			t.Errorf("-snapshot: the qcow2 image changed")
		}
		if diskimg.FileSHA256(t, raw) != sumB {
			t.Errorf("-snapshot: the raw image changed")
		}
		if t.Failed() {
			t.Logf("console:\n%s", out)
		}
	})
	t.Run("snapshot=on", func(t *testing.T) {
		dir := t.TempDir()
		snap, ctl := filepath.Join(dir, "snap.qcow2"), filepath.Join(dir, "ctl.raw")
		diskimg.Convert(t, writeRawFile(t, dir, "s.src", diskimg.Pseudo(22, 8<<20)), "raw", snap, "qcow2")
		ctlData := diskimg.Pseudo(23, 8<<20)
		diskimg.WriteRaw(t, ctl, ctlData)
		sum := diskimg.FileSHA256(t, snap)
		script := "loadmods virtio_pci virtio_blk\n" +
			"d=$(ser snap); " + writeAndReadBack("$d", "snap") + "d=$(ser ctl); " + writeAndReadBack("$d", "ctl")
		out := start(t, script, "",
			"-drive", "file="+snap+",if=none,id=d0,format=qcow2,snapshot=on", "-device", "virtio-blk-pci,drive=d0,serial=snap",
			"-drive", "file="+ctl+",if=none,id=d1,format=raw", "-device", "virtio-blk-pci,drive=d1,serial=ctl").finish(t)
		if field(out, "RB-snap") != written {
			t.Errorf("guest did not read back its write to the snapshot=on disk (%q)", field(out, "RB-snap"))
		}
		if diskimg.FileSHA256(t, snap) != sum {
			t.Errorf("snapshot=on: the image changed")
		}
		want := append(append(ctlData[:1<<20:1<<20], diskimg.Repeat("ctl", 1<<20)...), ctlData[2<<20:]...)
		if got, _ := os.ReadFile(ctl); !bytes.Equal(got, want) {
			t.Errorf("the drive without snapshot=on does not hold the guest's write")
		}
		if t.Failed() {
			t.Logf("console:\n%s", out)
		}
	})
}

func writeRawFile(t *testing.T, dir, name string, data []byte) string {
	p := filepath.Join(dir, name)
	diskimg.WriteRaw(t, p, data)
	return p
}

// TestReadOnly: readonly=on. The guest mounts the filesystem read-only and reads it;
// a write to the block device fails; the image is unchanged.
func TestReadOnly(t *testing.T) {
	needDisk(t)
	dir := t.TempDir()
	big := diskimg.Pseudo(30, 8<<20)
	raw, img := filepath.Join(dir, "fs.raw"), filepath.Join(dir, "ro.qcow2")
	diskimg.Ext4(t, raw, 32, map[string][]byte{"big": big})
	diskimg.Convert(t, raw, "raw", img, "qcow2")
	sum := diskimg.FileSHA256(t, img)
	script := `loadmods virtio_pci virtio_blk crc32c_generic ext4
w /dev/vda
echo RO=$(blockdev --getro /dev/vda)
mount -t ext4 -o ro /dev/vda /mnt && echo BIG=$(sha256sum </mnt/big); umount /mnt
dd if=/dev/zero of=/dev/vda bs=4096 count=16 conv=fsync; echo DD=$?
`
	out := start(t, script, "", "-drive", "file="+img+",if=virtio,format=qcow2,readonly=on").finish(t)
	if got := field(out, "BIG"); got != diskimg.SHA256(big) {
		t.Errorf("read-only mount: sha256 of /big = %q, want %s", got, diskimg.SHA256(big))
	}
	if dd := field(out, "DD"); dd == "0" || dd == "" {
		t.Errorf("dd to the read-only disk: status %q, want a failure", dd)
	}
	t.Logf("guest: blockdev --getro = %s, dd status %s", field(out, "RO"), field(out, "DD"))
	if diskimg.FileSHA256(t, img) != sum {
		t.Errorf("readonly=on: the image changed")
	}
	if t.Failed() {
		t.Logf("console:\n%s", out)
	}
}

// TestTwoDisks: two if=virtio drives of different formats, sizes and contents become
// vda and vdb in command-line order, and each reads back whole.
func TestTwoDisks(t *testing.T) {
	needDisk(t)
	dir := t.TempDir()
	a, b := diskimg.Pseudo(40, 8<<20), diskimg.Pseudo(41, 12<<20)
	imgA, imgB := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.raw")
	diskimg.Convert(t, writeRawFile(t, dir, "a.src", a), "raw", imgA, "qcow2")
	diskimg.WriteRaw(t, imgB, b)
	script := "loadmods virtio_pci virtio_blk\nw /dev/vda; w /dev/vdb\n" +
		"for d in vda vdb; do echo SIZE-$d=$(cat /sys/block/$d/size); echo SUM-$d=$(sha256sum </dev/$d); done\n"
	out := start(t, script, "", "-drive", "file="+imgA+",if=virtio,format=qcow2",
		"-drive", "file="+imgB+",if=virtio,format=raw").finish(t)
	for _, c := range []struct {
		dev  string
		data []byte
	}{{"vda", a}, {"vdb", b}} {
		if got := field(out, "SIZE-"+c.dev); got != fmt.Sprint(len(c.data)/512) {
			t.Errorf("%s: %q sectors, want %d", c.dev, got, len(c.data)/512)
		}
		if got := field(out, "SUM-"+c.dev); got != diskimg.SHA256(c.data) {
			t.Errorf("%s: sha256 %q, want %s", c.dev, got, diskimg.SHA256(c.data))
		}
	}
	if t.Failed() {
		t.Logf("console:\n%s", out)
	}
}

// TestImageLock: an image another process holds open for writing (QEMU, paused) cannot
// be opened by gemu: it exits non-zero with QEMU's message, for a read-write drive and
// for readonly=on (which needs the holder to share "write").
func TestImageLock(t *testing.T) {
	needAssets(t)
	diskimg.Need(t)
	if _, err := exec.LookPath("qemu-system-aarch64"); err != nil {
		t.Skip("qemu-system-aarch64 (the lock holder) not installed")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "img.qcow2")
	diskimg.Create(t, img, "qcow2", 16<<20)
	holder := exec.Command("qemu-system-aarch64", "-M", "virt", "-S", "-nographic",
		"-drive", "file="+img+",if=none,format=qcow2")
	var hout bytes.Buffer
	holder.Stdout, holder.Stderr = &hout, &hout
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	hdone := make(chan error, 1)
	go func() { hdone <- holder.Wait() }()
	t.Cleanup(func() { holder.Process.Kill(); <-hdone })
	// Wait until the holder has the lock: qemu-img info then fails to get it.
	locked := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if b, err := exec.Command("qemu-img", "info", img).CombinedOutput(); err != nil && bytes.Contains(b, []byte("lock")) {
			locked = true
			break
		}
	}
	if !locked {
		t.Fatalf("the QEMU holder did not take the image lock; its output:\n%s", hout.String())
	}
	for _, c := range []struct{ name, drive, want string }{
		{"read-write", "file=" + img + ",if=virtio,format=qcow2", `Failed to get "write" lock`},
		{"readonly=on", "file=" + img + ",if=virtio,format=qcow2,readonly=on", `Failed to get shared "write" lock`},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, emulator(t), "-M", "virt", "-cpu", "cortex-a57", "-m", "512",
				"-kernel", assets.Kernel("arm64"), "-initrd", assets.Initrd("arm64"),
				"-append", "console=ttyAMA0 quiet "+assets.CmdArg("echo BOOTED-ANYWAY\n"),
				"-nographic", "-no-reboot", "-drive", c.drive)
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("emulator still running after 60 s with a locked image; output:\n%s", out)
			}
			if err == nil {
				t.Fatalf("emulator exited 0 with an image another process holds; output:\n%s", out)
			}
			if !strings.Contains(string(out), c.want) {
				t.Errorf("error output lacks QEMU's %q:\n%s", c.want, out)
			}
			if strings.Contains(string(out), "BOOTED-ANYWAY") {
				t.Errorf("guest booted with the locked image")
			}
		})
	}
	select {
	case err := <-hdone:
		hdone <- err
		t.Errorf("the lock holder exited early: %v\n%s", err, hout.String())
	default:
	}
}

// TestVirtconsole: with console=hvc0 and a virtconsole on -chardev stdio, on a
// virtio-serial bus over either transport, the guest's shell on /dev/hvc0 is reached
// through the emulator's stdin and stdout (the PL011 goes to a file), and kernel
// messages reach hvc0. (The first write is retried: under load the device node can
// appear before the console port is ready and the write fails with ENODEV.)
func TestVirtconsole(t *testing.T) {
	needAssets(t)
	for _, c := range []struct{ bus, mod string }{{"virtio-serial-device", "virtio_mmio"}, {"virtio-serial-pci", "virtio_pci"}} {
		t.Run(c.bus, func(t *testing.T) {
			serial := filepath.Join(t.TempDir(), "serial.log")
			script := "loadmods " + c.mod + ` virtio_console
w /dev/hvc0
# The node can appear before the port is ready (ENODEV): retry, bounded.
i=0; until echo HVC-UP >/dev/hvc0 2>/dev/null || [ $i -ge 300 ]; do sleep .2; i=$((i+1)); done
echo "<3>GEMU-KMSG-HVC" >/dev/kmsg
sh </dev/hvc0 >/dev/hvc0 2>&1
echo SHELL-DONE
`
			g := start(t, script, "console=hvc0 ", "-serial", "file:"+serial, "-monitor", "none",
				"-chardev", "stdio,id=c0", "-device", c.bus, "-device", "virtconsole,chardev=c0")
			serialLog := func() string { b, _ := os.ReadFile(serial); return string(b) }
			if g.con.waitFor("HVC-UP") == "" {
				g.kill()
				t.Fatalf("no HVC-UP on the virtio console (stdout):\n%s\nstderr:\n%s\nserial:\n%s", g.con, g.stderr, serialLog())
			}
			// console=hvc0 made hvc0 a kernel console too: printk reaches it.
			if g.con.waitFor("GEMU-KMSG-HVC") == "" {
				g.kill()
				t.Fatalf("a kernel message did not reach hvc0 (console=hvc0):\n%s\nserial:\n%s", g.con, serialLog())
			}
			io.WriteString(g.in, "echo hvc-$((6*7))-ok\n")
			if g.con.waitFor("hvc-42-ok") == "" {
				g.kill()
				t.Fatalf("the shell on hvc0 did not answer:\n%s\nserial:\n%s", g.con, serialLog())
			}
			io.WriteString(g.in, "exit\n")
			if err := g.wait(); err != nil {
				t.Fatalf("emulator: %v\nstderr:\n%s", err, g.stderr)
			}
			if s := serialLog(); !strings.Contains(s, "SHELL-DONE") || !strings.Contains(s, "GEMU-CMD-EXIT 0") {
				t.Errorf("serial log (ttyAMA0) lacks the script's end:\n%s", s)
			}
		})
	}
}

// TestHWRNG: virtio-rng on either transport feeds /dev/hwrng: it is the current
// hw_random source and gives non-constant bytes, different on each read.
func TestHWRNG(t *testing.T) {
	needAssets(t)
	for _, c := range []struct{ dev, mod string }{{"virtio-rng-pci", "virtio_pci"}, {"virtio-rng-device", "virtio_mmio"}} {
		t.Run(c.dev, func(t *testing.T) {
			script := "loadmods " + c.mod + " virtio_rng\nw /dev/hwrng\n" +
				"i=0; while [ \"$(cat /sys/class/misc/hw_random/rng_current)\" = none ]&&[ $i -lt 300 ];do sleep .2;i=$((i+1));done\n" +
				"echo CUR=$(cat /sys/class/misc/hw_random/rng_current)\n" +
				"for i in 1 2; do echo R$i=$(dd if=/dev/hwrng bs=64 count=1 2>/dev/null | od -An -tx1 | tr -d ' \\n'); done\n"
			out := start(t, script, "", "-device", c.dev).finish(t)
			if cur := field(out, "CUR"); !strings.HasPrefix(cur, "virtio_rng") {
				t.Errorf("rng_current = %q, want virtio_rng.N", cur)
			}
			r1, r2 := field(out, "R1"), field(out, "R2")
			for _, r := range []string{r1, r2} {
				b, err := hex.DecodeString(r)
				if err != nil || len(b) != 64 {
					t.Fatalf("/dev/hwrng read %q: want 64 bytes (%v)\n%s", r, err, out)
				}
				distinct := map[byte]bool{}
				for _, x := range b {
					distinct[x] = true
				}
				if len(distinct) < 16 { // 64 random bytes have ~57 distinct values
					t.Errorf("/dev/hwrng gave %d distinct byte values in 64: %s", len(distinct), r)
				}
			}
			if r1 == r2 {
				t.Errorf("two reads of /dev/hwrng gave the same 64 bytes: %s", r1)
			}
		})
	}
}

// TestKillMidWrite: a guest killed with SIGKILL in the middle of writing and syncing
// numbered 64 KiB blocks to a qcow2 disk leaves an image `qemu-img check` accepts
// (leaked clusters allowed, nothing corrupt), holding every block the guest reported
// synced.
func TestKillMidWrite(t *testing.T) {
	needDisk(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "crash.qcow2")
	diskimg.Create(t, img, "qcow2", 64<<20)
	const blocks, killAfter = 900, 40
	script := fmt.Sprintf("loadmods virtio_pci virtio_blk\nw /dev/vda\n"+
		"i=1; while [ $i -le %d ]; do yes gemu-block-$i | head -c 65536 | dd of=/dev/vda bs=65536 seek=$i conv=fsync 2>/dev/null && sync && echo BLK=$i; i=$((i+1)); done\n", blocks)
	g := start(t, script, "", "-drive", "file="+img+",if=virtio,format=qcow2")
	if g.con.waitFor(fmt.Sprintf("BLK=%d", killAfter)) == "" {
		t.Fatalf("guest did not write %d blocks:\n%s\nstderr:\n%s", killAfter, g.con, g.stderr)
	}
	// While the guest runs, the emulator holds the image's write lock, as QEMU does.
	if b, err := exec.Command("qemu-img", "info", img).CombinedOutput(); err == nil || !bytes.Contains(b, []byte(`Failed to get shared "write" lock`)) {
		t.Errorf("qemu-img info on the running guest's image: %v\n%s\n(want QEMU's lock refusal)", err, b)
	}
	time.Sleep(300 * time.Millisecond) // land the kill inside a later write
	g.kill()
	out := g.con.String()
	last := 0
	for _, m := range regexp.MustCompile(`BLK=(\d+)`).FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		if n != last+1 {
			t.Fatalf("block numbers out of order (%d after %d):\n%s", n, last, out)
		}
		last = n
	}
	if last >= blocks {
		t.Fatalf("the guest finished all %d blocks before the kill", blocks)
	}
	t.Logf("killed after block %d was reported synced", last)
	c := diskimg.Check(t, img, "qcow2")
	if !c.Consistent() {
		t.Fatalf("qemu-img check after SIGKILL:\n%s", c.Text)
	}
	if c.Leaks > 0 {
		t.Logf("qemu-img check: %d leaked clusters (allowed after a crash)", c.Leaks)
	}
	data := diskimg.ReadRaw(t, img, "qcow2")
	for i := 1; i <= last; i++ {
		if got := data[i<<16 : (i+1)<<16]; !bytes.Equal(got, diskimg.Repeat(fmt.Sprintf("gemu-block-%d", i), 1<<16)) {
			t.Errorf("block %d (reported synced) not in the image: starts %q", i, got[:32])
		}
	}
}

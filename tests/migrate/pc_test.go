package migrate

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp/raw"

	"gemu/tests/assets"
	"gemu/tests/diskimg"
	"gemu/tests/testbin"
)

// The PC board under -accel tcg: Debian's amd64 kernel with the test initramfs on
// gemu-system-x86_64's own translator, counting on ttyS0; saved and restored in a new
// process, and migrated between two processes over loopback TCP.

func pcBinary(t *testing.T) string {
	t.Helper()
	return testbin.Command(t, "gemu-system-x86_64")
}

func needPCAssets(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a Linux guest: skipped under -short")
	}
	if why := assets.Missing("amd64"); why != "" {
		t.Skip(why)
	}
}

// startPC starts gemu-system-x86_64 -accel tcg running script on the test initramfs.
func startPC(t *testing.T, dir, name, mem, script string, extra ...string) *guest {
	t.Helper()
	sock := filepath.Join(dir, name+".qmp")
	return launch(t, pcBinary(t), sock, append([]string{"-accel", "tcg", "-m", mem, "-nographic",
		"-kernel", assets.Kernel("amd64"), "-initrd", assets.Initrd("amd64"),
		"-append", "console=ttyS0 quiet " + assets.CmdArg(script),
		"-qmp", "unix:" + sock + ",server=on,wait=off"}, extra...))
}

// pcDiskScript reads the virtio-blk-pci disk (its sha256), counts to 30, then drops
// the page cache and reads the whole disk again from the device, writes a marker at
// 2 MiB and reads it back: after a restore in the middle of the count, both reads go
// through the restored virtqueues.
const pcDiskScript = `loadmods virtio_pci virtio_blk
i=0;while [ ! -e /dev/vda ]&&[ $i -lt 300 ];do sleep .2;i=$((i+1));done
echo DISK $(sha256sum </dev/vda)
i=0;while [ $i -lt 30 ];do echo TICK $i;i=$((i+1));sleep .2;done
echo 3 >/proc/sys/vm/drop_caches
echo DISK2 $(sha256sum </dev/vda)
echo written-after-restore|dd of=/dev/vda bs=512 seek=4096 conv=notrunc,fsync 2>/dev/null
echo 3 >/proc/sys/vm/drop_caches
echo MARK $(dd if=/dev/vda bs=512 skip=4096 count=1 2>/dev/null|head -c 21)
`

// TestPCSaveRestoreFile: an x86-64 guest with a virtio-blk-pci disk is saved with QMP
// migrate file: while it counts; a restore into -m 512 is refused in one line naming
// the difference; a new process with -incoming file: goes on counting from where the
// source stopped (no reboot) and reads its disk again through the device after the
// restore, the same bytes, and a write after the restore lands in the image.
func TestPCSaveRestoreFile(t *testing.T) {
	needPCAssets(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.raw")
	data := diskimg.Pseudo(11, 4<<20)
	if err := os.WriteFile(disk, data, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-drive", "file=" + disk + ",if=none,id=d0,format=raw", "-device", "virtio-blk-pci,drive=d0"}
	src := startPC(t, dir, "src", "256", pcDiskScript, args...)
	r, _ := dial(t, src)
	if got := src.field(t, "DISK", 5*time.Minute); got != diskimg.SHA256(data) {
		t.Fatalf("the guest's sha256 of its disk %q, want %s\n%s", got, diskimg.SHA256(data), src.console())
	}
	for src.tick(t, 2*time.Minute) < 3 {
	}
	state := filepath.Join(dir, "vm.state")
	if err := r.Migrate("file:"+state, nil, nil, nil); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	info := waitMigration(t, r)
	if *info.Status != raw.MigrationStatusCompleted || info.RAM == nil || info.RAM.Total != 256<<20 || info.RAM.Normal == 0 ||
		info.RAM.Duplicate == 0 {
		t.Fatalf("query-migrate after save: %+v (ram %+v, error %v)\n%s", info, info.RAM, deref(info.ErrorDesc), src.errText())
	}
	if st, err := r.QueryStatus(); err != nil || st.Status != raw.RunStatePostmigrate || st.Running {
		t.Fatalf("source status after migration: %+v %v", st, err)
	}
	time.Sleep(300 * time.Millisecond)
	last := src.drain()
	if last >= 25 {
		t.Skipf("the source reached TICK %d before the save ended (host too loaded for this test)", last)
	}
	src.cmd.Process.Kill()
	<-src.exited
	src.exited <- nil
	fi, err := os.Stat(state)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("saved at TICK %d: %d bytes for a 256 MiB guest (%d pages, %d zero pages)", last, fi.Size(), info.RAM.Normal, info.RAM.Duplicate)

	bad := startPC(t, dir, "bad", "512", pcDiskScript, append(args, "-incoming", "file:"+state)...)
	select {
	case err := <-bad.exited:
		bad.exited <- err
		msg := bad.errText()
		if err == nil || !strings.Contains(msg, "ram=256M, this one ram=512M") || strings.Count(strings.TrimSpace(msg), "\n") != 0 {
			t.Fatalf("restore into -m 512: exit %v, stderr %q", err, msg)
		}
	case <-time.After(time.Minute):
		t.Fatal("restore into -m 512 did not exit")
	}

	dst := startPC(t, dir, "dst", "256", pcDiskScript, append(args, "-incoming", "file:"+state)...)
	checkContinues(t, dst, last)
	if got := dst.field(t, "DISK2", 2*time.Minute); got != diskimg.SHA256(data) {
		t.Fatalf("the disk read after the restore %q, want %s\n%s", got, diskimg.SHA256(data), dst.console())
	}
	if got := dst.field(t, "MARK", time.Minute); got != "written-after-restore" {
		t.Fatalf("marker read back as %q\n%s", got, dst.console())
	}
	img, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(img[4096*512 : 4096*512+21]); got != "written-after-restore" {
		t.Fatalf("the image holds %q at 2 MiB", got)
	}
	if strings.Contains(dst.console(), "DISK ") {
		t.Fatalf("the restored guest ran its script from the start:\n%s", dst.console())
	}
}

// TestPCMigrateTCP: the counting x86-64 guest on two vCPUs (-smp 2: both LAPICs, the
// AP's state) migrates between two live processes over loopback TCP, the destination
// started with -incoming defer and migrate-incoming; the source stops counting, the
// destination goes on with both CPUs online.
func TestPCMigrateTCP(t *testing.T) {
	needPCAssets(t)
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	script := strings.Replace(counterScript, "echo TICK $i;", "echo TICK $i CPUS $(cat /sys/devices/system/cpu/online);", 1)
	dst := startPC(t, dir, "dst", "256", script, "-smp", "2", "-incoming", "defer")
	dr, _ := dial(t, dst)
	if st, err := dr.QueryStatus(); err != nil || st.Status != raw.RunStateInmigrate {
		t.Fatalf("destination status: %+v %v", st, err)
	}
	if err := dr.MigrateIncoming("tcp:" + addr); err != nil {
		t.Fatalf("migrate-incoming: %v", err)
	}
	src := startPC(t, dir, "src", "256", script, "-smp", "2")
	r, _ := dial(t, src)
	for src.tick(t, 10*time.Minute) < 5 {
	}
	if err := r.Migrate("tcp:"+addr, nil, nil, nil); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	info := waitMigration(t, r)
	if *info.Status != raw.MigrationStatusCompleted {
		t.Fatalf("migration over tcp: %+v (error %v)", info, deref(info.ErrorDesc))
	}
	time.Sleep(300 * time.Millisecond)
	last := src.drain()
	time.Sleep(time.Second)
	if n := src.drain(); n != last {
		t.Fatalf("the source printed TICK %d after the migration completed at %d", n, last)
	}
	checkContinues(t, dst, last)
	if st, err := dr.QueryStatus(); err != nil || st.Status != raw.RunStateRunning {
		t.Fatalf("destination status after the migration: %+v %v", st, err)
	}
	if n := dst.drain(); !dst.hasLine(fmt.Sprintf("TICK %d CPUS 0-1", n)) {
		t.Fatalf("the destination's TICK %d does not report CPUs 0-1 online:\n%s", n, dst.console())
	}
	t.Logf("migrated at TICK %d: %d bytes, total %d ms, downtime %d ms", last, info.RAM.Transferred, *info.TotalTime, *info.Downtime)
}

// hasLine reports whether the guest printed line.
func (g *guest) hasLine(line string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, l := range g.lines {
		if l == line {
			return true
		}
	}
	return false
}

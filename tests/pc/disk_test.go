package pc

import (
	"bufio"
	"context"
	"encoding/hex"
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

// innerLib is shell the inner guests' scripts share: w PATH waits (at most 60 s:
// virtio probing is asynchronous) for PATH to exist.
const innerLib = "w(){ i=0;while [ ! -e $1 ]&&[ $i -lt 300 ];do sleep .2;i=$((i+1));done;[ -e $1 ]||echo NODEV=$1;}\n"

// TestVirtioDisksPC runs the PC board's virtio-blk-pci (-drive if=virtio) and
// virtio-rng-pci under Linux on KVM, one inner guest per case, all in one run of the
// KVM-in-TCG harness where the host's KVM cannot boot Linux (the images travel into the
// outer guest in its initramfs, with the host's qemu-img and debugfs and their
// libraries, which check the images there after each inner guest). The same script runs
// on the host where KVM is hardware-backed.
//
//   - overlay: ext4 on a qcow2 overlay over a qcow2 base (both made by qemu-img); the
//     guest reads a file from the base through the overlay and writes a new one; then
//     `qemu-img check` is clean, the base byte-identical, the new file in the overlay.
//   - readonly: a readonly=on disk refuses a write and keeps its bytes, a second disk
//     (vdb, raw) reads back whole, and /dev/hwrng gives random bytes.
//   - snapshot: with -snapshot the guest reads back its write; the image is unchanged.
//   - sigkill: the emulator, killed with SIGKILL while the guest writes and syncs
//     numbered blocks, leaves an image `qemu-img check` accepts (leaks allowed) holding
//     every block reported synced; while it ran it held the image's write lock.
//
// GEMU_PC_EMULATOR=qemu runs the inner guests on QEMU instead, to check the test itself.
func TestVirtioDisksPC(t *testing.T) {
	if testing.Short() {
		t.Skip("boots Linux four times (minutes inside the harness): skipped with -short")
	}
	if m := assets.Missing("amd64"); m != "" {
		t.Skip(m)
	}
	diskimg.Need(t)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }

	// overlay
	big := diskimg.Pseudo(2, 16<<20)
	diskimg.Ext4(t, p("fs.raw"), 48, map[string][]byte{"big": big})
	diskimg.Convert(t, p("fs.raw"), "raw", p("base.qcow2"), "qcow2")
	os.Remove(p("fs.raw"))
	// A relative backing name, so that the pair can move into the harness together.
	diskimg.Overlay(t, "base.qcow2", "qcow2", p("top.qcow2"))
	const newLine, newSize = "gemu-pc-line", 1000000
	newFile := diskimg.Repeat(newLine, newSize)
	overlay := "loadmods virtio_pci virtio_blk crc32c_generic ext4\nw /dev/vda\n" +
		"echo SYS=$(readlink -f /sys/block/vda)\n" +
		"mkdir -p /mnt; mount -t ext4 /dev/vda /mnt || echo MOUNT-FAILED\n" +
		"echo BIG=$(sha256sum </mnt/big)\n" +
		fmt.Sprintf("yes %s | head -c %d >/mnt/newfile\n", newLine, newSize) +
		"sync; umount /mnt && echo UMOUNT=ok\n"

	// readonly
	roData, bData := diskimg.Pseudo(3, 8<<20), diskimg.Pseudo(4, 4<<20)
	diskimg.WriteRaw(t, p("ro.src"), roData)
	diskimg.Convert(t, p("ro.src"), "raw", p("ro.qcow2"), "qcow2")
	os.Remove(p("ro.src"))
	diskimg.WriteRaw(t, p("b.raw"), bData)
	readonly := "loadmods virtio_pci virtio_blk virtio_rng\nw /dev/vda; w /dev/vdb\n" +
		"echo RO=$(blockdev --getro /dev/vda)\n" +
		"dd if=/dev/zero of=/dev/vda bs=4096 count=16 conv=fsync; echo DD=$?\n" +
		"echo 3 >/proc/sys/vm/drop_caches; for d in vda vdb; do echo SUM-$d=$(sha256sum </dev/$d); done\n" +
		"i=0; while [ \"$(cat /sys/class/misc/hw_random/rng_current)\" = none ]&&[ $i -lt 300 ];do sleep .2;i=$((i+1));done\n" +
		"echo CUR=$(cat /sys/class/misc/hw_random/rng_current)\n" +
		"for i in 1 2; do echo R$i=$(dd if=/dev/hwrng bs=64 count=1 2>/dev/null | od -An -tx1 | tr -d ' \\n'); done\n"

	// snapshot
	diskimg.WriteRaw(t, p("s.src"), diskimg.Pseudo(5, 4<<20))
	diskimg.Convert(t, p("s.src"), "raw", p("s.qcow2"), "qcow2")
	os.Remove(p("s.src"))
	snapshot := "loadmods virtio_pci virtio_blk\nw /dev/vda\n" +
		"yes snap | head -c 1048576 | dd of=/dev/vda bs=65536 seek=16 conv=fsync 2>/dev/null || echo WRITE-FAILED\n" +
		"echo 3 >/proc/sys/vm/drop_caches; echo RB=$(dd if=/dev/vda bs=65536 skip=16 count=16 2>/dev/null | sha256sum)\n"

	// sigkill
	diskimg.Create(t, p("crash.qcow2"), "qcow2", 64<<20)
	const blocks, killAfter = 900, 30
	sigkill := fmt.Sprintf("loadmods virtio_pci virtio_blk\nw /dev/vda\n"+
		"i=1; while [ $i -le %d ]; do yes gemu-block-$i | head -c 65536 | dd of=/dev/vda bs=65536 seek=$i conv=fsync 2>/dev/null && sync && echo BLK=$i; i=$((i+1)); done\n", blocks)

	sums := map[string]string{}
	for _, n := range []string{"base.qcow2", "ro.qcow2", "s.qcow2"} {
		sums[n] = diskimg.FileSHA256(t, p(n))
	}

	qemu := os.Getenv("GEMU_PC_EMULATOR") == "qemu"
	inner := func(script string) string {
		return "-accel kvm -nographic -no-reboot " + harness.InnerArgs(512, 1, innerLib+script)
	}
	// The script runs in the outer guest (D=/disk) or on the host (D=dir); $E is the
	// emulator.
	script := `mkdir -p /var/tmp
echo GEMU-CASE overlay
$E ` + inner(overlay) + ` -drive file=$D/top.qcow2,if=virtio,format=qcow2; echo EXIT=$?
echo BASE-SUM=$(sha256sum <$D/base.qcow2)
qemu-img check $D/top.qcow2; echo CHECK=$?
qemu-img convert -O raw $D/top.qcow2 $D/top.raw
echo NEWFILE=$(debugfs -R 'cat /newfile' $D/top.raw 2>/dev/null | sha256sum)
echo BIGFILE=$(debugfs -R 'cat /big' $D/top.raw 2>/dev/null | sha256sum)
rm -f $D/top.raw
echo GEMU-CASE readonly
$E ` + inner(readonly) + ` -drive file=$D/ro.qcow2,if=virtio,format=qcow2,readonly=on -drive file=$D/b.raw,if=virtio,format=raw -device virtio-rng-pci; echo EXIT=$?
echo RO-SUM=$(sha256sum <$D/ro.qcow2)
echo GEMU-CASE snapshot
$E ` + inner(snapshot) + ` -snapshot -drive file=$D/s.qcow2,if=virtio,format=qcow2; echo EXIT=$?
echo S-SUM=$(sha256sum <$D/s.qcow2)
echo GEMU-CASE sigkill
$E ` + inner(sigkill) + ` -drive file=$D/crash.qcow2,if=virtio,format=qcow2 </dev/null >$D/kill.log 2>&1 &
pid=$!; i=0
while ! grep -q BLK=` + fmt.Sprint(killAfter) + ` $D/kill.log && [ $i -lt 900 ]; do sleep .2; i=$((i+1)); done
qemu-img info $D/crash.qcow2 2>&1 | grep -q 'Failed to get shared "write" lock' && echo LOCKED=yes
sleep .3; kill -9 $pid; wait $pid; echo KILLED=$?
cat $D/kill.log
qemu-img check $D/crash.qcow2; echo KCHECK=$?
qemu-img convert -O raw $D/crash.qcow2 $D/crash.raw
last=$(grep -o 'BLK=[0-9]*' $D/kill.log | tail -n 1 | cut -d= -f2); echo LAST=$last
bad=0; i=1
while [ $i -le "${last:-0}" ]; do
  [ "$(dd if=$D/crash.raw bs=65536 skip=$i count=1 2>/dev/null | sha256sum)" = "$(yes gemu-block-$i | head -c 65536 | sha256sum)" ] || { bad=$((bad+1)); echo BADBLOCK=$i; }
  i=$((i+1))
done
echo BAD=$bad
rm -f $D/crash.raw
echo GEMU-CASE end
`
	var out string
	if kvm.Available() == nil && !kvm.Emulated() {
		emu := "qemu-system-x86_64 -nic none"
		if !qemu {
			emu = testbin.MustBuild(t, "gemu/cmd/gemu-system-x86_64")
		}
		host := strings.NewReplacer(harness.InnerKernel, assets.Kernel("amd64"), harness.InnerInitrd, assets.Initrd("amd64"))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "sh", "-c", host.Replace(script))
		cmd.Env = append(os.Environ(), "E="+emu, "D="+dir)
		b, err := cmd.CombinedOutput()
		out = string(b)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	} else {
		if m := harness.Missing(); m != "" {
			t.Skipf("no hardware KVM here and the KVM-in-TCG harness cannot run: %s", m)
		}
		files := map[string]string{}
		for _, n := range []string{"base.qcow2", "top.qcow2", "ro.qcow2", "b.raw", "s.qcow2", "crash.qcow2"} {
			files["/disk/"+n] = p(n)
		}
		for _, bin := range []string{"qemu-img", "debugfs"} {
			if err := addHostBinary(files, bin); err != nil {
				t.Skipf("cannot bundle %s into the harness: %v", bin, err)
			}
		}
		var gemu string
		env := "D=/disk E='qemu-system-x86_64 -nic none'\n" // no NIC option ROM in the harness
		if !qemu {
			gemu = testbin.MustBuild(t, "gemu/cmd/gemu-system-x86_64")
			env = "D=/disk E=" + harness.InnerGemu + "\n"
		}
		var err error
		out, err = harness.Run(context.Background(), harness.Options{Script: env + script, Gemu: gemu, QEMU: qemu,
			Files: files, Timeout: 15 * time.Minute})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	section := func(name string) string {
		_, s, ok := strings.Cut(out, "GEMU-CASE "+name+"\n")
		if !ok {
			return ""
		}
		s, _, _ = strings.Cut(s, "GEMU-CASE ")
		return s
	}
	out = strings.ReplaceAll(out, "\r\n", "\n") // the outer serial console's line ends
	if os.Getenv("GEMU_PC_LOG") != "" {
		os.WriteFile(os.Getenv("GEMU_PC_LOG"), []byte(out), 0o644)
	}
	if !strings.Contains(out, "GEMU-CASE end") {
		t.Fatalf("the script did not finish:\n%s", out)
	}
	sub := func(name string, f func(t *testing.T, field func(string) string)) {
		s := section(name)
		t.Run(name, func(t *testing.T) {
			field := func(key string) string {
				m := regexp.MustCompile(`(?m)`+regexp.QuoteMeta(key)+`=(\S*)`).FindAllStringSubmatch(s, -1)
				if m == nil {
					return ""
				}
				return m[len(m)-1][1]
			}
			f(t, field)
			if t.Failed() {
				t.Logf("output:\n%s", s)
			}
		})
	}
	sub("overlay", func(t *testing.T, field func(string) string) {
		if field("EXIT") != "0" {
			t.Errorf("emulator exit status %q after guest poweroff", field("EXIT"))
		}
		if !strings.Contains(field("SYS"), "/pci0000:00/") {
			t.Errorf("vda not on PCI: %s", field("SYS"))
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
		if field("BASE-SUM") != sums["base.qcow2"] {
			t.Errorf("base.qcow2 changed under its overlay")
		}
		if got := field("NEWFILE"); got != diskimg.SHA256(newFile) {
			t.Errorf("/newfile in the overlay: sha256 %q, want %s", got, diskimg.SHA256(newFile))
		}
		if got := field("BIGFILE"); got != diskimg.SHA256(big) {
			t.Errorf("/big read back from the overlay: sha256 %q", got)
		}
	})
	sub("readonly", func(t *testing.T, field func(string) string) {
		if field("EXIT") != "0" {
			t.Errorf("emulator exit status %q", field("EXIT"))
		}
		if dd := field("DD"); dd == "0" || dd == "" {
			t.Errorf("dd to the readonly=on disk: status %q, want a failure", dd)
		}
		t.Logf("guest: blockdev --getro = %s, dd status %s", field("RO"), field("DD"))
		if field("RO-SUM") != sums["ro.qcow2"] {
			t.Errorf("readonly=on: the image changed")
		}
		if got := field("SUM-vda"); got != diskimg.SHA256(roData) {
			t.Errorf("vda (readonly=on qcow2) reads %q, want %s", got, diskimg.SHA256(roData))
		}
		if got := field("SUM-vdb"); got != diskimg.SHA256(bData) {
			t.Errorf("vdb (raw) reads %q, want %s", got, diskimg.SHA256(bData))
		}
		if cur := field("CUR"); !strings.HasPrefix(cur, "virtio_rng") {
			t.Errorf("rng_current = %q, want virtio_rng.N", cur)
		}
		r1, r2 := field("R1"), field("R2")
		for _, r := range []string{r1, r2} {
			b, err := hex.DecodeString(r)
			distinct := map[byte]bool{}
			for _, x := range b {
				distinct[x] = true
			}
			if err != nil || len(b) != 64 || len(distinct) < 16 {
				t.Errorf("/dev/hwrng read %q: want 64 random bytes", r)
			}
		}
		if r1 == r2 {
			t.Errorf("two reads of /dev/hwrng gave the same bytes")
		}
	})
	sub("snapshot", func(t *testing.T, field func(string) string) {
		if field("EXIT") != "0" {
			t.Errorf("emulator exit status %q", field("EXIT"))
		}
		if got, want := field("RB"), diskimg.SHA256(diskimg.Repeat("snap", 1<<20)); got != want {
			t.Errorf("guest read back %q after its write, want %s", got, want)
		}
		if field("S-SUM") != sums["s.qcow2"] {
			t.Errorf("-snapshot: the image changed")
		}
	})
	sub("sigkill", func(t *testing.T, field func(string) string) {
		last := field("LAST")
		if last == "" || last == "0" {
			t.Fatalf("the guest reported no synced block before the kill")
		}
		if last == fmt.Sprint(blocks) {
			t.Fatalf("the guest finished all %d blocks before the kill", blocks)
		}
		t.Logf("killed after block %s was reported synced", last)
		if field("LOCKED") != "yes" {
			t.Errorf("qemu-img info on the running guest's image did not fail with QEMU's lock refusal")
		}
		if k := field("KCHECK"); k != "0" && k != "3" { // 3: leaked clusters only
			t.Errorf("qemu-img check after SIGKILL: status %s", k)
		}
		if field("BAD") != "0" {
			t.Errorf("%s of the %s blocks reported synced are not in the image", field("BAD"), last)
		}
	})
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
